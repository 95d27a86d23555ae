"""L2Config: the seed's defaults, TOML round trips, and errors naming the key path."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import l2fast
from l2fast.cli.main import main
from l2fast.config import (
    EngineConfig,
    L2Config,
    ModelConfig,
    RiskConfig,
    TechnicalConfig,
    VoteConfig,
    default_models_dir,
)
from l2fast.data import shipped_config
from l2fast.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

SEED_MODEL = {
    "weights": {"trend_agent": 0.4, "mean_revert_agent": 0.35, "volatility_agent": 0.25},
    "voting": "weighted",
    "consensus_threshold": 0.6,
    "confidence_threshold": 0.7,
    "alignment_threshold": 0.7,
}
SEED_RISK = {
    "kelly_fraction": 0.25,
    "volatility_target": 0.15,
    "max_position_size": 0.10,
    "atr_multiplier": 2.0,
    "max_loss_per_trade": 0.02,
    "take_profit_r": 2.0,
    "breakeven_threshold": 1.5,
    "trailing_atr_multiplier": 2.0,
    "max_daily_trades": 10,
    "daily_loss_limit": 0.05,
    "max_concurrent_positions": 3,
    "exposure_limit": 0.8,
    "lot_step": 0.00001,
    "min_notional": 10.0,
    "min_trades_for_live_stats": 30,
    "risk_appetite_multipliers": {"conservative": 0.5, "moderate": 1.0, "aggressive": 1.5},
}


def test_defaults_are_the_seeds_values():
    cfg = L2Config()
    for key, value in SEED_MODEL.items():
        assert getattr(cfg.model, key) == value, key
    for key, value in SEED_RISK.items():
        assert getattr(cfg.risk, key) == value, key
    assert cfg.technical == TechnicalConfig()
    assert cfg.technical.timeframes == ("1m", "5m", "15m", "1h")
    assert cfg.model.models_dir == ""
    assert cfg.risk.symbols == {}


def test_default_regime_multipliers_favour_each_regimes_specialist():
    mult = ModelConfig().regime_multipliers
    assert set(mult) == {"trending", "ranging", "volatile"}
    for regime, specialist in (("trending", "trend_agent"), ("ranging", "mean_revert_agent"),
                               ("volatile", "volatility_agent")):
        assert max(mult[regime], key=mult[regime].get) == specialist


def test_effective_weights_are_weight_times_multiplier_normalised():
    w = ModelConfig().effective_weights("trending")
    raw = {"trend_agent": 0.4 * 1.5, "mean_revert_agent": 0.35 * 0.5, "volatility_agent": 0.25 * 1.0}
    total = 0.6 + 0.175 + 0.25
    assert w == pytest.approx({k: v / total for k, v in raw.items()}, rel=1e-15)
    assert sum(w.values()) == pytest.approx(1.0, rel=1e-15)
    with pytest.raises(ConfigError, match=r"regime='sideways'"):
        ModelConfig().effective_weights("sideways")


def test_shipped_l2fast_toml_loads_and_equals_the_defaults():
    assert L2Config.from_toml(shipped_config("defaults")) == L2Config()


def test_shipped_l2fast_toml_sets_every_key_explicitly():
    data = tomllib.loads(shipped_config("defaults").read_text())
    expected = L2Config().to_dict()
    # Keys whose default is "not set" (None) are documented there as comments.
    expected["risk"] = {k: v for k, v in expected["risk"].items() if v is not None}
    assert data == expected


def test_fixed_kelly_inputs_must_be_given_together():
    with pytest.raises(ConfigError, match=r"risk.kelly_win_rate=0.55: set kelly_win_rate and kelly_payoff_ratio"):
        L2Config.from_dict({"risk": {"kelly_win_rate": 0.55}})
    with pytest.raises(ConfigError, match=r"risk.kelly_win_rate=1.5"):
        L2Config.from_dict({"risk": {"kelly_win_rate": 1.5, "kelly_payoff_ratio": 1.0}})
    cfg = L2Config.from_dict({"risk": {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.5}})
    assert L2Config.from_dict(tomllib.loads(cfg.to_toml())) == cfg


def test_flags_must_be_booleans():
    with pytest.raises(ConfigError, match=r"risk.allow_short=1: must be true or false"):
        L2Config.from_dict({"risk": {"allow_short": 1}})


def test_toml_round_trip_of_the_defaults_is_exact():
    cfg = L2Config()
    assert L2Config.from_dict(tomllib.loads(cfg.to_toml())) == cfg
    assert L2Config.from_dict(cfg.to_dict()) == cfg


def test_toml_round_trip_of_a_changed_config_is_exact(tmp_path):
    cfg = L2Config.from_dict({
        "technical": {"timeframes": ["1m", "3m", "4h"], "rsi_periods": [7], "levels": {"merge_tol": 0.01}},
        "model": {"weights": {"a.v2": 1.0, "b-agent": 3.0}, "voting": "majority",
                  "regime_multipliers": {"volatile": {"a.v2": 0.0}}, "models_dir": "/opt/models \"x\""},
        "risk": {"kelly_fraction": 0.1 + 0.2, "symbols": {"ETH/USDT": {"lot_step": 0.0001},
                                                         "1000SHIB/USDT": {"min_notional": 5}}},
        "engine": {"initial_equity": 2500, "max_decision_age_ms": 0},
    })
    path = tmp_path / "cfg.toml"
    path.write_text(cfg.to_toml())
    back = L2Config.from_toml(path)
    assert back == cfg
    assert back.risk.kelly_fraction == 0.1 + 0.2
    assert back.to_toml() == cfg.to_toml()


@settings(max_examples=50, deadline=None)
@given(kelly=st.floats(min_value=1e-300, max_value=1.0), equity=st.floats(min_value=1e-3, max_value=1e15),
       trades=st.integers(1, 10_000))
def test_toml_round_trip_keeps_every_float_bit(kelly, equity, trades):
    cfg = L2Config.from_dict({"risk": {"kelly_fraction": kelly, "max_position_size": min(kelly, 0.8)},
                              "engine": {"initial_equity": equity, "live_stats_window": 30 + trades}})
    assert L2Config.from_dict(tomllib.loads(cfg.to_toml())) == cfg


def test_missing_keys_keep_defaults_and_tables_merge_over_them():
    cfg = L2Config.from_dict({"model": {"regime_multipliers": {"trending": {"trend_agent": 2.0}}},
                              "risk": {"risk_appetite_multipliers": {"aggressive": 2.0}},
                              "technical": {"levels": {"pivot_bars": 3}}})
    default = L2Config()
    trending = default.model.regime_multipliers["trending"]
    assert cfg.model.regime_multipliers["trending"] == {**trending, "trend_agent": 2.0}
    assert cfg.model.regime_multipliers["ranging"] == default.model.regime_multipliers["ranging"]
    assert cfg.risk.risk_appetite_multipliers == {"conservative": 0.5, "moderate": 1.0, "aggressive": 2.0}
    assert cfg.technical.levels == {**default.technical.levels, "pivot_bars": 3}
    appetites = default.risk.risk_appetite_multipliers
    assert dataclasses.replace(cfg.risk, risk_appetite_multipliers=appetites) == default.risk
    assert cfg.engine == default.engine


def test_given_weights_replace_the_ensemble_and_unlisted_multipliers_are_one():
    cfg = ModelConfig.from_dict({"weights": {"a": 1, "b": 3}, "regime_multipliers": {"ranging": {"b": 0.5}}})
    assert cfg.weights == {"a": 1.0, "b": 3.0}
    assert cfg.regime_multipliers == {"trending": {"a": 1.0, "b": 1.0}, "ranging": {"a": 1.0, "b": 0.5},
                                      "volatile": {"a": 1.0, "b": 1.0}}
    assert cfg.effective_weights("ranging") == {"a": 1.0 / 2.5, "b": 1.5 / 2.5}


def test_trailing_stop_multiple_follows_atr_multiplier_unless_given():
    assert RiskConfig.from_dict({"atr_multiplier": 3}).trailing_atr_multiplier == 3.0
    assert RiskConfig.from_dict({"atr_multiplier": 3, "trailing_atr_multiplier": 1.5}).trailing_atr_multiplier == 1.5
    assert RiskConfig() == RiskConfig(trailing_atr_multiplier=2.0)


def test_per_symbol_lot_step_and_min_notional_override_the_defaults():
    risk = RiskConfig.from_dict({"symbols": {"ETH/USDT": {"lot_step": 0.0001}, "BTC/USDT": {"min_notional": 5}}})
    assert risk.lot_step_for("ETH/USDT") == 0.0001 and risk.min_notional_for("ETH/USDT") == 10.0
    assert risk.lot_step_for("BTC/USDT") == 0.00001 and risk.min_notional_for("BTC/USDT") == 5.0
    assert risk.lot_step_for("SOL/USDT") == 0.00001 and risk.min_notional_for("SOL/USDT") == 10.0


def test_values_are_stored_as_plain_python_numbers():
    risk = RiskConfig.from_dict({"atr_multiplier": 3, "min_notional": np.int64(5), "max_daily_trades": np.int32(4),
                                 "kelly_fraction": np.float32(0.5)})
    assert type(risk.atr_multiplier) is float and type(risk.min_notional) is float
    assert type(risk.max_daily_trades) is int and type(risk.kelly_fraction) is float
    assert type(EngineConfig(live_stats_window=np.int64(50)).live_stats_window) is int
    assert RiskConfig.from_dict(tomllib.loads(L2Config(risk=risk).to_toml())["risk"]) == risk


BAD = [
    ({"riskk": {}}, "riskk: unknown section"),
    ({"risk": 5}, "risk=5: must be a table"),
    ({"risk": {"kelly": 0.2}}, "risk.kelly: unknown key"),
    ({"risk": {"kelly_fraction": 1.5}}, "risk.kelly_fraction=1.5: must be in (0, 1]"),
    ({"risk": {"kelly_fraction": 0.0}}, "risk.kelly_fraction=0.0: must be in (0, 1]"),
    ({"risk": {"volatility_target": float("nan")}}, "risk.volatility_target=nan: must be > 0"),
    ({"risk": {"atr_multiplier": float("inf")}}, "risk.atr_multiplier=inf: must be > 0"),
    ({"risk": {"atr_multiplier": "2"}}, "risk.atr_multiplier='2': must be a number"),
    ({"risk": {"max_daily_trades": 10.5}}, "risk.max_daily_trades=10.5: must be an integer >= 1"),
    ({"risk": {"max_concurrent_positions": True}}, "risk.max_concurrent_positions=True: must be an integer >= 1"),
    ({"risk": {"max_daily_trades": 0}}, "risk.max_daily_trades=0: must be an integer >= 1"),
    ({"risk": {"min_notional": -1}}, "risk.min_notional=-1: must be >= 0"),
    ({"risk": {"max_position_size": 0.9}}, "risk.max_position_size=0.9: must be <= risk.exposure_limit (0.8)"),
    ({"risk": {"trailing_atr_multiplier": 0}}, "risk.trailing_atr_multiplier=0: must be > 0"),
    ({"risk": {"symbols": {"BTC/USDT": {"lot_step": 0}}}}, 'risk.symbols."BTC/USDT".lot_step=0: must be > 0'),
    ({"risk": {"symbols": {"BTC/USDT": {"tick": 0.1}}}}, 'risk.symbols."BTC/USDT".tick: unknown key'),
    ({"risk": {"symbols": {"btcusdt": {}}}}, "risk.symbols.btcusdt: symbol must look like 'BTC/USDT'"),
    ({"risk": {"risk_appetite_multipliers": {"reckless": 3}}},
     "risk.risk_appetite_multipliers.reckless: unknown risk appetite"),
    ({"risk": {"risk_appetite_multipliers": {"moderate": -1}}},
     "risk.risk_appetite_multipliers.moderate=-1: must be >= 0"),
    ({"risk": {"correlation_window": 1}}, "risk.correlation_window=1: must be an integer >= 2"),
    ({"model": {"weights": {"trend_agent": -0.1}}}, "model.weights.trend_agent=-0.1: must be >= 0"),
    ({"model": {"weights": {"a": 0, "b": 0.0}}}, "model.weights={'a': 0.0, 'b': 0.0}: weights must not all be zero"),
    ({"model": {"weights": {}}}, "model.weights={}: name at least one ensemble member"),
    ({"model": {"weights": {"bad name": 1}}}, "model.weights: member name 'bad name' must match"),
    ({"model": {"regime_multipliers": {"sideways": {}}}}, "model.regime_multipliers.sideways: unknown regime"),
    ({"model": {"regime_multipliers": {"trending": {"foo_agent": 1}}}},
     "model.regime_multipliers.trending.foo_agent: unknown member (not in model.weights)"),
    ({"model": {"regime_multipliers": {"ranging": {"trend_agent": -2}}}},
     "model.regime_multipliers.ranging.trend_agent=-2: must be >= 0"),
    ({"model": {"regime_multipliers": {"volatile": {"trend_agent": 0, "mean_revert_agent": 0, "volatility_agent": 0}}}},
     ("model.regime_multipliers.volatile={'trend_agent': 0.0, 'mean_revert_agent': 0.0, 'volatility_agent': 0.0}: "
      "every member's weight is zero in this regime")),
    ({"model": {"voting": "plurality"}}, "model.voting='plurality': must be one of 'weighted', 'majority'"),
    ({"model": {"consensus_threshold": 1.2}}, "model.consensus_threshold=1.2: must be in [0, 1]"),
    ({"model": {"confidence_threshold": -0.1}}, "model.confidence_threshold=-0.1: must be in [0, 1]"),
    ({"model": {"alignment_threshold": float("nan")}}, "model.alignment_threshold=nan: must be in [0, 1]"),
    ({"model": {"technical_weight": 2}}, "model.technical_weight=2: must be in [0, 1]"),
    ({"model": {"confidence_weights": {"modle": 1.0}}}, "model.confidence_weights.modle: unknown key"),
    ({"model": {"confidence_weights": {"technical": -0.5}}}, "model.confidence_weights.technical=-0.5: must be >= 0"),
    ({"model": {"confidence_weights": {"model": 0, "technical": 0, "alignment": 0}}},
     "model.confidence_weights={'model': 0.0, 'technical': 0.0, 'alignment': 0.0}: must not all be zero"),
    ({"model": {"models_dir": 5}}, "model.models_dir=5: must be a path string"),
    ({"model": {"vote": {"deadband": 0.1}}}, "model.vote.deadband: unknown key"),
    ({"model": {"vote": 0.1}}, "model.vote=0.1: must be a table"),
    ({"model": {"vote": {"dead_band": 1.0}}}, "model.vote.dead_band=1.0: must be in [0, 1)"),
    ({"model": {"vote": {"rsi_index": 2}}},
     "model.vote.rsi_index=2: must be < the number of technical.rsi_periods (2)"),
    ({"model": {"vote": {"timeframe_weights": {"4h": 1.0}}}},
     "model.vote.timeframe_weights.4h: unknown timeframe (technical.timeframes: 1m, 5m, 15m, 1h)"),
    ({"model": {"vote": {"timeframe_weights": {"1h": -1}}}}, "model.vote.timeframe_weights.1h=-1: must be >= 0"),
    ({"model": {"vote": {"component_weights": {"rsi": 1.0}}}}, "model.vote.component_weights.rsi: unknown key"),
    ({"model": {"vote": {"pattern_weights": {"CDLHAMMER": -1}}}},
     "model.vote.pattern_weights.CDLHAMMER=-1: must be >= 0"),
    ({"model": {"vote": {"pattern_scale": 0}}}, "model.vote.pattern_scale=0: must be > 0"),
    ({"model": {"vote": {"rsi_oversold": 70}}},
     "model.vote.rsi_oversold=70.0: must be < model.vote.rsi_overbought (70.0)"),
    ({"model": {"vote": {"rsi_overbought": 101}}}, "model.vote.rsi_overbought=101: must be in [0, 100]"),
    ({"model": {"vote": {"pctb_low": 1.5}}}, "model.vote.pctb_low=1.5: must be <= model.vote.pctb_high (1.0)"),
    ({"model": {"vote": {"divergence_window": 128}}},
     "model.vote.divergence_window=128: must be an integer in [1, 127]"),
    ({"model": {"vote": {"divergence_min_gap": 30}}},
     "model.vote.divergence_min_gap=30: must be an integer in [1, 20]"),
    ({"model": {"vote": {"squeeze_window": 1}}}, "model.vote.squeeze_window=1: must be an integer in [2, 127]"),
    ({"model": {"vote": {"squeeze_tolerance": -0.1}}}, "model.vote.squeeze_tolerance=-0.1: must be >= 0"),
    ({"model": {"vote": {"squeeze_memory": 0}}}, "model.vote.squeeze_memory=0: must be an integer in [1, 1000000]"),
    ({"model": {"vote": {"q_temperature": 0}}}, "model.vote.q_temperature=0: must be > 0"),
    ({"engine": {"initial_equity": 0}}, "engine.initial_equity=0: must be > 0"),
    ({"engine": {"max_decision_age_ms": -1}}, "engine.max_decision_age_ms=-1: must be an integer >= 0"),
    ({"engine": {"live_stats_window": 10}},
     "engine.live_stats_window=10: must be >= risk.min_trades_for_live_stats (30)"),
    ({"engine": {"verbose": True}}, "engine.verbose: unknown key"),
    ({"technical": {"rsi_period": 14}}, "technical.rsi_period: unknown key"),
    ({"technical": {"bb_period": 1}}, "technical.bb_period=1: must be an integer >= 2"),
    ({"technical": {"bb_std": 0}}, "technical.bb_std=0: must be in (0, 10]"),
    ({"technical": {"macd": 5}}, "technical.macd=5: must be a list of 3 integers"),
    ({"technical": {"macd": [26, 12, 9]}}, "technical.macd=(26, 12, 9): fast must be shorter than slow"),
    ({"technical": {"timeframes": ["1m", 5]}}, "technical.timeframes=('1m', 5): timeframes are strings"),
    ({"technical": {"levels": {"merge_tol": 1.5}}}, "technical.levels.merge_tol=1.5: must be in [0, 1)"),
    ({"technical": {"levels": {"max_levels": 64}}}, "technical.levels.max_levels=64: must be an integer in [1, 32]"),
    ({"technical": {"levels": {"merge_tolerance": 0.1}}}, "technical.levels.merge_tolerance: unknown key"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_keys_and_values_raise_config_error_naming_the_key_path(data, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        L2Config.from_dict(data)


def test_sections_built_directly_also_name_their_path():
    with pytest.raises(ConfigError, match=re.escape("risk.kelly_fraction=1.5: must be in (0, 1]")):
        RiskConfig(kelly_fraction=1.5)
    with pytest.raises(ConfigError, match=re.escape("model.voting='x'")):
        ModelConfig(voting="x")
    with pytest.raises(ConfigError, match=re.escape("engine.live_stats_window=0")):
        EngineConfig(live_stats_window=0)
    with pytest.raises(ConfigError, match=re.escape("risk=None: must be a RiskConfig")):
        L2Config(risk=None)


def test_a_bad_toml_file_is_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nkelly_fraction = 1.5\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: risk.kelly_fraction=1.5: must be in (0, 1]")):
        L2Config.from_toml(bad)
    bad.write_text("[risk\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: not valid TOML")):
        L2Config.from_toml(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        L2Config.from_toml(tmp_path / "missing.toml")


def test_models_dir_resolution_config_then_environment_then_shipped(tmp_path, monkeypatch):
    monkeypatch.delenv("L2FAST_MODELS_DIR", raising=False)
    # The shipped agents are package data of the imported l2fast, wherever it is installed.
    shipped = Path(l2fast.__file__).resolve().parent / "data" / "onnx_models"
    assert default_models_dir() == shipped
    assert ModelConfig().resolve_models_dir() == shipped
    assert sorted(p.name for p in shipped.glob("*.json")) == [
        "mean_revert_agent.json", "trend_agent.json", "volatility_agent.json"]
    monkeypatch.setenv("L2FAST_MODELS_DIR", str(tmp_path / "env"))
    assert ModelConfig().resolve_models_dir() == tmp_path / "env"
    assert ModelConfig() == ModelConfig(models_dir="")  # the environment never changes the value
    assert ModelConfig(models_dir=str(tmp_path / "cfg")).resolve_models_dir() == tmp_path / "cfg"


def test_relative_models_dir_in_a_toml_file_is_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "l2.toml"
    path.write_text('[model]\nmodels_dir = "../models"\n')
    monkeypatch.chdir(REPO)
    assert L2Config.from_toml(path).model.resolve_models_dir() == (tmp_path / "models").resolve()


def test_configs_are_immutable_and_pickle_equal():
    cfg = L2Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.risk.kelly_fraction = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        cfg.model.weights["trend_agent"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        cfg.model.regime_multipliers["trending"].update(trend_agent=9.0)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg
    assert dataclasses.replace(cfg.model, voting="majority").weights == cfg.model.weights


def test_caller_tables_are_copied_not_aliased():
    weights = {"a": 1.0}
    cfg = ModelConfig(weights=weights, regime_multipliers={})
    weights["a"] = 0.0
    assert cfg.weights == {"a": 1.0}


def test_the_technical_section_drives_the_technical_core():
    from l2fast.technical.state import TechnicalState

    cfg = L2Config.from_dict({"technical": {"timeframes": ["1m", "15m"], "rsi_periods": [9]}})
    state = TechnicalState(cfg.technical)
    assert "rsi_9_15m" in state.names and "rsi_14_1m" not in state.names


def test_cli_config_show_prints_a_toml_that_loads_back_equal(capsys):
    assert main(["config", "--show"]) == 0
    out = capsys.readouterr().out
    assert L2Config.from_dict(tomllib.loads(out)) == L2Config()
    assert "[model.vote]" in out and "[model.vote.pattern_weights]" in out


def test_vote_section_merges_over_its_defaults_and_reaches_the_voter():
    from l2fast.decision.voting import VotingParams
    from l2fast.engine.generator import TacticalSignalGenerator

    config = L2Config.from_dict({"model": {"vote": {
        "dead_band": 0.1, "squeeze_window": 50, "timeframe_weights": {"1h": 2.0},
        "component_weights": {"patterns": 0.0}, "pattern_weights": {"CDLDOJI": 0.5}, "q_temperature": 0.5}}})
    vote = config.model.vote
    assert vote.component_weights["patterns"] == 0.0 and vote.component_weights["rsi_level"] == 1.0
    assert vote.pattern_weights["CDLDOJI"] == 0.5 and vote.pattern_weights["CDLENGULFING"] == 1.0
    assert L2Config.from_dict(config.to_dict()) == config
    params = VotingParams.from_config(config.model, TacticalSignalGenerator(config=config).manifests,
                                      config.technical)
    for field in dataclasses.fields(VoteConfig):
        if field.name not in ("timeframe_weights", "q_temperature"):
            assert getattr(params, field.name) == getattr(vote, field.name), field.name
    assert dict(params.timeframe_weights) == {"1m": 1.0, "5m": 1.0, "15m": 1.0, "1h": 2.0}
    assert {m.temperature for m in params.members} == {0.5}


def test_voting_params_defaults_are_the_configs():
    from l2fast.decision.voting import MemberSpec, VotingParams

    params = VotingParams((MemberSpec("m", "continuous", 1.0),))
    model, technical = ModelConfig(), TechnicalConfig()
    for field in dataclasses.fields(VoteConfig):
        if field.name not in ("timeframe_weights", "q_temperature"):
            assert getattr(params, field.name) == getattr(model.vote, field.name), field.name
    assert params.members[0].temperature == model.vote.q_temperature
    for name in ("voting", "consensus_threshold", "confidence_threshold", "alignment_threshold",
                 "technical_weight", "confidence_weights"):
        assert getattr(params, name) == getattr(model, name), name
    assert params.timeframes == technical.timeframes and params.n_rsi == len(technical.rsi_periods)
    assert set(params.timeframe_weights.values()) == {1.0}


def test_cli_config_show_with_a_file_prints_its_effective_config(tmp_path, capsys):
    path = tmp_path / "my.toml"
    path.write_text('[risk]\nkelly_fraction = 0.5\n[model]\nvoting = "majority"\n')
    assert main(["config", "--show", "--config", str(path)]) == 0
    shown = L2Config.from_dict(tomllib.loads(capsys.readouterr().out))
    assert shown == L2Config.from_toml(path)
    assert shown.risk.kelly_fraction == 0.5 and shown.model.voting == "majority"
    assert shown.technical == TechnicalConfig()


def test_cli_config_with_a_bad_file_fails_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nconsensus_threshold = 1.2\n")
    assert main(["config", "--show", "--config", str(path)]) == 2
    assert "model.consensus_threshold=1.2: must be in [0, 1]" in capsys.readouterr().err


def test_cli_config_without_show_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config"])
    assert exc.value.code == 2
    assert "--show" in capsys.readouterr().err


def test_confidence_weights_merge_over_the_defaults_and_reach_the_voter():
    from l2fast.decision.voting import VotingParams
    from l2fast.engine.generator import TacticalSignalGenerator

    config = L2Config.from_dict({"model": {"confidence_weights": {"model": 1.0, "alignment": 0.0}}})
    assert dict(config.model.confidence_weights) == {"model": 1.0, "technical": 0.25, "alignment": 0.0}
    assert L2Config.from_dict(config.to_dict()) == config
    params = VotingParams.from_config(config.model, TacticalSignalGenerator(config=config).manifests,
                                      config.technical)
    assert dict(params.confidence_weights) == {"model": 1.0, "technical": 0.25, "alignment": 0.0}


@pytest.mark.parametrize("data, message", [
    ({"risk": {"turbulence_threshold": 30.0}}, "risk.turbulence_threshold=30.0: needs technical.turbulence_symbols"),
    ({"technical": {"turbulence_symbols": ["BTC/USDT", "btc"]}}, "turbulence_symbols=('BTC/USDT', 'btc')"),
    ({"technical": {"turbulence_symbols": ["BTC/USDT"], "turbulence_timeframe": "4h"}}, "turbulence_timeframe='4h'"),
    ({"technical": {"turbulence_symbols": ["BTC/USDT"], "turbulence_window": 2}}, "turbulence_window"),
    ({"technical": {"turbulence_symbols": ["BTC/USDT", "SOL/USDT"]}, "engine": {"symbols": ["BTC/USDT"]}},
     "technical.turbulence_symbols: SOL/USDT not in engine.symbols"),
])
def test_the_turbulence_settings_are_checked_together(data, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        L2Config.from_dict(data)

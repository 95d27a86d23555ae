"""``python -m l2fast.export --finrl stocktrading``: FinRL agents exported in one command, run in the engine.

The agents are tiny SB3 PPO and SAC trained on a gymnasium env shaped as FinRL's
``StockTradingEnv`` (observation ``1 + 2N + len(indicators) * N``, action ``Box(-1, 1, (N,))``;
FinRL itself is not imported here, tests/finrl/ records it in its own venv). One ticker: the
export must run in the engine end to end, observing ``[cash, close_1h, holdings, the eight
ss:*_1h features]`` of the engine's own state and acting on hour closes only. Several
tickers: the manifest's layout is written; the engine's ``@SYMBOL`` names land with issue
13's item 5.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("onnx")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402
from stable_baselines3 import PPO, SAC  # noqa: E402
from test_engine import _rows  # noqa: E402

from l2fast.config import L2Config  # noqa: E402
from l2fast.engine.generator import TacticalSignalGenerator  # noqa: E402
from l2fast.errors import ExportError  # noqa: E402
from l2fast.export import FinRLEnv, export_many, export_model, finrl_stocktrading_layout  # noqa: E402
from l2fast.export.__main__ import main  # noqa: E402
from l2fast.export.finrl import FINRL_INDICATORS, resolve_finrl  # noqa: E402
from l2fast.models.loading import load_model, validate_models  # noqa: E402
from l2fast.signals import StrategicDecision  # noqa: E402

BTC, ETH = "BTC/USDT", "ETH/USDT"
HOUR = 3_600_000
SAMPLES = "400"
ONE = 1 + 2 + len(FINRL_INDICATORS)  # 11
TWO = 1 + 2 * 2 + len(FINRL_INDICATORS) * 2  # 21
FINRL_ONE = ["--finrl", "stocktrading", "--tickers", BTC, "--timeframe", "1h"]
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate", universe=[BTC])


# SB3 trains and predicts on one torch thread (the machine's other core runs the suite's
# other work): tests/conftest.py's one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _StockTradingShaped(gym.Env):
    """FinRL's StockTradingEnv's spaces, with observations on its scales (cash, prices, shares)."""

    def __init__(self, n_obs: int, action_space: spaces.Space) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
        self.action_space = action_space
        self._rng = np.random.default_rng(0)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return (self._rng.standard_normal(self.observation_space.shape) * 100.0).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        obs = self._obs()
        return obs, float(obs[1] * 1e-3), self._t >= 32, False, {}


def _box(n: int) -> spaces.Box:
    return spaces.Box(-1.0, 1.0, (n,), np.float32)


@pytest.fixture(scope="module")
def agents(tmp_path_factory) -> dict:
    """Saved ``.zip`` agents (FinRL users' ``model.save``) and the SB3 models behind them."""
    folder = tmp_path_factory.mktemp("agents")
    made = {
        "ppo": PPO("MlpPolicy", _StockTradingShaped(ONE, _box(1)), n_steps=64, batch_size=64, n_epochs=1, seed=1,
                   device="cpu").learn(64),
        "sac": SAC("MlpPolicy", _StockTradingShaped(ONE, _box(1)), learning_starts=32, buffer_size=500,
                   batch_size=16, seed=0, device="cpu").learn(64),
        "ppo_two": PPO("MlpPolicy", _StockTradingShaped(TWO, _box(2)), n_steps=64, batch_size=64, n_epochs=1,
                       seed=2, device="cpu").learn(64),
        "ppo_discrete": PPO("MlpPolicy", _StockTradingShaped(ONE, spaces.Discrete(7)), n_steps=64, batch_size=64,
                            n_epochs=1, seed=3, device="cpu").learn(64),
    }
    paths = {}
    for name, model in made.items():
        paths[name] = folder / f"finrl_{name}.zip"
        model.save(paths[name])
    return {"models": made, "paths": paths}


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, out_dir, *argv) -> str:
    code, _, err = _run(capsys, *argv, "--out", out_dir, "--samples", SAMPLES)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    return lines[-1]


def _manifest(folder, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


# --- one ticker: the command, the manifest, the engine -----------------------------------------


@pytest.fixture(scope="module")
def exported(agents, tmp_path_factory) -> dict:
    """The PPO and the SAC exported with the one command (defaults: FinRL's), each in its own folder."""
    out = {}
    for name in ("ppo", "sac"):
        folder = tmp_path_factory.mktemp(f"onnx_{name}")
        code = main([str(agents["paths"][name]), "--out", str(folder), *FINRL_ONE, "--samples", SAMPLES])
        assert code == 0
        out[name] = folder
    return out


def test_one_command_writes_finrls_layout_cadence_and_env(exported) -> None:
    manifest = _manifest(exported["ppo"], "finrl_ppo")
    assert manifest["feature_names"] == ["cash", "close", "holdings", *FINRL_INDICATORS]
    assert manifest["feature_namespace"] == "stockstats" and manifest["feature_timeframe"] == "1h"
    assert manifest["decision_timeframe"] == "1h" and "feature_scales" not in manifest  # raw, as the env
    assert manifest["finrl"] == {"env": "stocktrading", "tickers": [BTC], "hmax": 100, "buy_cost_pct": [0.001],
                                 "sell_cost_pct": [0.001], "initial_amount": 1e6,
                                 "indicators": list(FINRL_INDICATORS), "state_space": ONE}
    assert manifest["action_space"]["shape"] == [1] and manifest["parity"]["passed"]
    assert manifest["parity"]["samples"] == int(SAMPLES) and manifest["parity"]["max_abs_diff"] <= 1e-5
    model = load_model(exported["ppo"] / "finrl_ppo.json")
    assert model.vector_names == ("cash", "close_1h", "holdings", *(f"ss:{i}_1h" for i in FINRL_INDICATORS))
    for name, folder in exported.items():
        assert validate_models(folder) == {"passed": 1, "total": 1, "failures": []}, name


def test_flags_set_every_parameter_and_costs_follow_the_tickers(agents, tmp_path, capsys) -> None:
    code, stdout, err = _run(capsys, agents["paths"]["ppo"], "--out", tmp_path, "--finrl", "stocktrading",
                             "--tickers", BTC, "--timeframe", "15m", "--indicators", "macd,rsi_14,cci_30,dx_30,"
                             "close_30_sma,close_10_ema,boll_lb,atr_14", "--hmax", "25", "--initial-amount", "5e5",
                             "--buy-cost", "0.002", "--sell-cost", "0.0005", "--reward-scaling", "1e-4",
                             "--turbulence-threshold", "120", "--samples", SAMPLES)
    assert code == 0, err
    assert "finrl_ppo" in stdout
    manifest = _manifest(tmp_path, "finrl_ppo")
    assert manifest["feature_names"][3:] == ["macd", "rsi_14", "cci_30", "dx_30", "close_30_sma", "close_10_ema",
                                             "boll_lb", "atr_14"]
    assert manifest["feature_timeframe"] == manifest["decision_timeframe"] == "15m"
    assert manifest["finrl"] == {"env": "stocktrading", "tickers": [BTC], "hmax": 25, "buy_cost_pct": [0.002],
                                 "sell_cost_pct": [0.0005], "initial_amount": 5e5,
                                 "indicators": manifest["feature_names"][3:], "state_space": ONE,
                                 "reward_scaling": 1e-4, "turbulence_threshold": 120.0}
    # Per-ticker costs are given in --tickers' order and land in FinRL's (sorted) one.
    env = resolve_finrl(FinRLEnv(tickers=[ETH, BTC], timeframe="1h", buy_cost_pct=[0.002, 0.001],
                                 sell_cost_pct=(0.004, 0.003)))
    assert env.tickers == (BTC, ETH) and env.buy_cost_pct == [0.001, 0.002] and env.sell_cost_pct == [0.003, 0.004]


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_the_exported_agent_runs_in_the_engine_on_hour_closes_observing_the_engines_state(
        algo, agents, exported, btc_1m) -> None:
    name = f"finrl_{algo}"
    config = L2Config.from_dict({"model": {"models_dir": str(exported[algo]), "weights": {name: 1.0}},
                                 "technical": {"timeframes": ["1m", "5m", "15m", "1h"]},
                                 "engine": {"initial_equity": 1e6},
                                 "risk": {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.2}})
    gen = TacticalSignalGenerator(config)
    gen.on_strategic_decision(DECISION)
    loaded = load_model(exported[algo] / f"{name}.json")
    columns = [gen.feature_names.index("close_1h"), *(gen.feature_names.index(f"ss:{i}_1h") for i in FINRL_INDICATORS)]
    observations, last_target, acted, qty = [], None, 0, 0.0
    for k, row in enumerate(_rows(btc_1m, 0, 9_000)):
        ts, close = row[0], row[4]
        closes_hour = (ts + 60_000) % HOUR == 0
        gen.ensemble.input_row[:] = np.nan  # a bar on which the member does not act leaves it so
        signal = gen.on_bar(BTC, *row)
        if signal.reasoning["code"] != "WARM_UP":
            target = signal.reasoning["vote"]["members"][name]["target"]
            if closes_hour or last_target is None:
                obs = gen.observation(name)
                features = gen.features(BTC)
                want = np.array([gen.cash, features[columns[0]], qty, *features[columns[1:]]], dtype=np.float32)
                np.testing.assert_array_equal(obs, want)
                assert np.isfinite(obs).all()
                action = float(loaded.predict(obs[None, :])[0, 0])
                assert target == pytest.approx(float(np.clip(action, -1.0, 1.0)), abs=1e-6)
                observations.append(obs)
                acted += 1
            else:
                assert np.isnan(gen.ensemble.input_row).all(), f"bar {k}: the member ran off its hour"
                assert target == last_target
            last_target = target
        if k % 211 == 0 and k >= 4_000:
            # Fills move the cash and the holdings the member observes (long only, as FinRL).
            side = "sell" if (k // 211) % 3 == 0 and qty > 0 else "buy"
            fill = 0.05 if side == "buy" else min(0.03, qty)
            gen.on_fill(BTC, side, fill, close, ts + 60_000, fee=fill * close * 0.001)
            qty += fill if side == "buy" else -fill
    assert acted > 40 and qty > 0
    assert len({float(o[2]) for o in observations}) > 3  # the holdings moved between decisions
    # The ONNX graph acts as SB3's predict on the engine's observations (its parity check did too).
    sb3 = agents["models"][algo]
    picks = np.stack(observations[:: max(1, len(observations) // 8)])
    want = np.stack([sb3.predict(o, deterministic=True)[0] for o in picks])
    np.testing.assert_allclose(loaded.predict(picks), want, atol=1e-5)


def test_the_python_api_writes_the_same_manifest(agents, exported, tmp_path) -> None:
    report = export_model(agents["paths"]["ppo"], tmp_path / "a", samples=int(SAMPLES),
                          finrl=FinRLEnv(tickers=[BTC], timeframe="1h"))
    assert report.parity["passed"]
    cli, api = _manifest(exported["ppo"], "finrl_ppo"), _manifest(tmp_path / "a", "finrl_ppo")
    for key in ("feature_names", "feature_namespace", "feature_timeframe", "decision_timeframe", "finrl",
                "onnx_sha256"):
        assert api[key] == cli[key], key
    reports = export_many([agents["paths"]["ppo"], agents["paths"]["sac"]], tmp_path / "b", samples=int(SAMPLES),
                          progress=False, finrl=FinRLEnv(tickers=[BTC], timeframe="1h", hmax=10))
    assert [r.name for r in reports] == ["finrl_ppo", "finrl_sac"]
    assert all(_manifest(tmp_path / "b", r.name)["finrl"]["hmax"] == 10 for r in reports)


# --- a bundle carrying FinRL's env parameters ----------------------------------------------------


def _finrl_params(**changes) -> dict:
    params = {"tickers": [BTC], "timeframe": "1h", "hmax": 50, "initial_amount": 250_000.0,
              "tech_indicator_list": list(FINRL_INDICATORS), "buy_cost_pct": [0.002], "sell_cost_pct": [0.003],
              "stock_dim": 1, "state_space": ONE, "action_space": 1, "num_stock_shares": [0]}
    params.update(changes)
    return params


def _bundle(path, model_part, finrl: dict) -> None:
    path.write_bytes(pickle.dumps({"model": model_part, "scaler": None, "specialization": "finrl",
                                   "performance_metrics": {}, "training_config": {"finrl": finrl}}))


def test_a_bundles_finrl_parameters_are_copied_and_flags_override_them(agents, tmp_path, capsys) -> None:
    buf = io.BytesIO()
    agents["models"]["ppo"].save(buf)
    src = tmp_path / "finrl_bundle.pkl"
    _bundle(src, buf.getvalue(), _finrl_params())
    code, _, err = _run(capsys, src, "--out", tmp_path / "a", "--samples", SAMPLES)  # no flag at all
    assert code == 0, err
    manifest = _manifest(tmp_path / "a", "finrl_bundle")
    assert manifest["feature_names"] == ["cash", "close", "holdings", *FINRL_INDICATORS]
    assert manifest["decision_timeframe"] == "1h"
    assert manifest["finrl"] == {"env": "stocktrading", "tickers": [BTC], "hmax": 50, "buy_cost_pct": [0.002],
                                 "sell_cost_pct": [0.003], "initial_amount": 250_000.0,
                                 "indicators": list(FINRL_INDICATORS), "state_space": ONE}
    code, _, err = _run(capsys, src, "--out", tmp_path / "b", "--finrl", "stocktrading", "--hmax", "7",
                        "--sell-cost", "0", "--samples", SAMPLES)
    assert code == 0, err
    finrl = _manifest(tmp_path / "b", "finrl_bundle")["finrl"]
    assert (finrl["hmax"], finrl["sell_cost_pct"], finrl["buy_cost_pct"]) == (7, [0.0], [0.002])
    # FinRL's own size parameters are checked against the layout.
    _bundle(src, buf.getvalue(), _finrl_params(state_space=12))
    assert "training_config['finrl']['state_space'] is 12" in _refused(capsys, tmp_path / "c", src)


def test_a_trusted_pickle_bundle_carries_its_finrl_parameters_too(agents, tmp_path, capsys) -> None:
    src = tmp_path / "finrl_pickled.pkl"
    _bundle(src, agents["models"]["sac"], _finrl_params(hmax=30))  # the model pickled as an SB3 object
    assert "pickled SB3" in _refused(capsys, tmp_path / "a", src)
    code, _, err = _run(capsys, src, "--out", tmp_path / "b", "--trust-pickle", "--samples", SAMPLES)
    assert code == 0, err
    manifest = _manifest(tmp_path / "b", "finrl_pickled")
    assert manifest["source"]["trust_pickle"] and manifest["finrl"]["hmax"] == 30
    assert manifest["feature_names"][:3] == ["cash", "close", "holdings"]


# --- refusals ------------------------------------------------------------------------------------


def test_agents_that_do_not_fit_the_env_are_refused_naming_the_numbers(agents, tmp_path, capsys) -> None:
    paths = agents["paths"]
    err = _refused(capsys, tmp_path / "a", paths["ppo"], "--finrl", "stocktrading", "--tickers", f"{BTC},{ETH}",
                   "--timeframe", "1h")
    assert "observes 11 features" in err and "state_space 1 + 2*2 + 8*2 = 21" in err
    err = _refused(capsys, tmp_path / "b", paths["ppo"], *FINRL_ONE, "--indicators", "macd")
    assert "observes 11 features" in err and "= 4" in err
    err = _refused(capsys, tmp_path / "c", paths["ppo_discrete"], *FINRL_ONE)
    assert "action space is Discrete(7)" in err and "Box(-1, 1, (1,))" in err
    eighteen = ",".join(f"rsi_{n}" for n in range(2, 20))  # 1 + 2 + 18 = 21 features, but one ticker
    err = _refused(capsys, tmp_path / "d", paths["ppo_two"], *FINRL_ONE, "--indicators", eighteen)
    assert "Box of shape (2,)" in err and "Box(-1, 1, (1,))" in err


@pytest.mark.parametrize("argv, message", [
    (["--finrl", "stocktrading", "--timeframe", "1h"], "needs the tickers"),
    (["--finrl", "stocktrading", "--tickers", "BTCUSDT", "--timeframe", "1h"], "['BTCUSDT'] are not trading pairs"),
    (["--finrl", "stocktrading", "--tickers", "btc/usdt", "--timeframe", "1h"], "are not trading pairs"),
    (["--finrl", "stocktrading", "--tickers", BTC], "needs the agent's bar interval"),
    (["--finrl", "stocktrading", "--tickers", BTC, "--timeframe", "7x"], "timeframe '7x'"),
    ([*FINRL_ONE, "--indicators", "macd,kdjk,rsi_30,cci_30,dx_30,boll_ub,boll_lb,close_30_sma"],
     "FinRL indicator 'kdjk': feature 'kdjk': not a stockstats name"),
    ([*FINRL_ONE, "--indicators", "macd,macd,rsi_30,cci_30,dx_30,boll_ub,boll_lb,close_30_sma"], "repeat"),
    ([*FINRL_ONE, "--hmax", "0"], "hmax must be an integer >= 1"),
    ([*FINRL_ONE, "--buy-cost", "1.5"], "buy_cost_pct must be fractions in [0, 1)"),
    ([*FINRL_ONE, "--sell-cost", "0.001,0.002"], "sell_cost_pct gives 2 values for 1 tickers"),
])
def test_bad_finrl_parameters_are_one_error_line(agents, tmp_path, capsys, argv, message) -> None:
    assert message in _refused(capsys, tmp_path / "out", agents["paths"]["ppo"], *argv)


@pytest.mark.parametrize("argv, message", [
    (["--finrl", "crypto", "--tickers", BTC], "invalid choice: 'crypto'"),
    ([*FINRL_ONE, "--feature-names", "a,b"], "--finrl lays out the observation itself: drop --feature-names"),
    ([*FINRL_ONE, "--feature-namespace", "stockstats"], "drop --feature-namespace"),
    (["--tickers", BTC, "--hmax", "5"], "--tickers, --hmax: only with --finrl ENV"),
])
def test_usage_conflicts_exit_2(agents, tmp_path, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(agents["paths"]["ppo"]), "--out", str(tmp_path / "out"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_python_api_refuses_an_unknown_env_and_a_conflict(agents, tmp_path) -> None:
    with pytest.raises(ExportError, match="unknown FinRL env 'crypto'"):
        resolve_finrl(FinRLEnv(env="crypto", tickers=[BTC], timeframe="1h"))
    with pytest.raises(ExportError, match="give no feature_names"):
        export_model(agents["paths"]["ppo"], tmp_path, feature_names=[f"f{i}" for i in range(ONE)],
                     finrl=FinRLEnv(tickers=[BTC], timeframe="1h"))


# --- several tickers ------------------------------------------------------------------------------


def test_several_tickers_lay_out_indicator_major_in_finrls_order() -> None:
    env = resolve_finrl(FinRLEnv(tickers=[ETH, BTC], timeframe="1h"))
    assert env.tickers == (BTC, ETH) and env.state_space == TWO
    names = env.feature_names
    assert names[:5] == ["cash", f"close@{BTC}", f"close@{ETH}", f"holdings@{BTC}", f"holdings@{ETH}"]
    assert names[5:9] == [f"macd@{BTC}", f"macd@{ETH}", f"boll_ub@{BTC}", f"boll_ub@{ETH}"]
    assert names[-1] == f"close_60_sma@{ETH}" and len(names) == TWO
    assert finrl_stocktrading_layout([BTC], ["rsi_30"]) == ["cash", "close", "holdings", "rsi_30"]


def test_several_tickers_export_and_load_in_the_engine(agents, tmp_path, capsys) -> None:
    code, _, err = _run(capsys, agents["paths"]["ppo_two"], "--out", tmp_path, "--finrl", "stocktrading",
                        "--tickers", f"{ETH},{BTC}", "--timeframe", "1h", "--samples", SAMPLES)
    assert code == 0, err
    manifest = _manifest(tmp_path, "finrl_ppo_two")
    assert manifest["feature_names"] == resolve_finrl(FinRLEnv(tickers=[BTC, ETH], timeframe="1h")).feature_names
    assert manifest["finrl"]["tickers"] == [BTC, ETH] and manifest["finrl"]["state_space"] == TWO
    assert manifest["action_space"]["shape"] == [2]
    assert validate_models(tmp_path) == {"passed": 1, "total": 1, "failures": []}

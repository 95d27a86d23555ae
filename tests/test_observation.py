"""Members that observe the account state, scale features, and act on their own timeframe.

The account state a member reads (cash, holdings, position fraction, unrealized PnL of the
bar's symbol) is checked against a ledger kept here from the fills alone; scaled columns
against the scale applied to those numbers; the cadence against the hour closes pandas finds
in the same bars: a member with ``decision_timeframe = "1h"`` runs on the bar that closes an
hour and nowhere else, its vote standing in between.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_engine import _aligned, _rows
from test_ensemble import _toy_member

from l2fast.config import L2Config, TechnicalConfig
from l2fast.data import models_dir
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import InvalidInputError, ModelLoadError
from l2fast.models.loading import load_model
from l2fast.models.manifest import validate_manifest
from l2fast.models.observation import row_layout, scaled_name, split_scaled
from l2fast.signals import StrategicDecision
from l2fast.technical.state import feature_warmups

BTC = "BTC/USDT"
HOUR = 3_600_000
FEATURES = ["cash", "close", "holdings", "position_fraction", "unrealized_pnl", "rsi_30"]
SCALES = {"cash": 2.0 ** -12, "holdings": 2.0 ** -3, "close": 0.001}
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate", universe=[BTC])


def _member(models_copy: Path, name: str = "acct_agent", **manifest: object) -> None:
    _toy_member(models_copy, name, FEATURES, seed=5)
    path = models_copy / f"{name}.json"
    data = json.loads(path.read_text())
    data.update(feature_namespace="stockstats", feature_timeframe="1h", lookback=None, feature_scales=SCALES,
                **manifest)
    path.write_text(json.dumps(data))


def _engine(models_copy: Path, alone: bool = False, **engine: object) -> TacticalSignalGenerator:
    weights = {"acct_agent": 1.0} if alone else {**L2Config().model.weights, "acct_agent": 1.0}
    config = L2Config.from_dict({"model": {"models_dir": str(models_copy), "weights": weights}, "engine": engine})
    gen = TacticalSignalGenerator(config)
    gen.on_strategic_decision(DECISION)
    return gen


class _Ledger:
    """Cash, position and average entry from the fills alone (long only)."""

    def __init__(self, cash: float) -> None:
        self.cash, self.qty, self.entry = cash, 0.0, 0.0

    def fill(self, side: str, qty: float, price: float, fee: float) -> None:
        sign = 1.0 if side == "buy" else -1.0
        if sign > 0:
            self.entry = (self.entry * self.qty + qty * price) / (self.qty + qty)
        self.qty += sign * qty
        self.cash -= sign * qty * price + fee

    def row(self, mark: float, hour_close: float, rsi: float) -> np.ndarray:
        equity = self.cash + self.qty * mark
        upnl = self.qty * (mark - self.entry) if self.qty else 0.0
        values = [self.cash * SCALES["cash"], hour_close * SCALES["close"], self.qty * SCALES["holdings"],
                  self.qty * mark / equity, upnl, rsi]
        return np.array(values, dtype=np.float32)


def test_names_resolve_to_account_and_scaled_row_columns(models_copy) -> None:
    _member(models_copy)
    model = load_model(models_copy / "acct_agent.json")
    assert model.vector_names == ("cash*0.000244140625", "close_1h*0.001", "holdings*0.125", "position_fraction",
                                  "unrealized_pnl", "ss:rsi_30_1h")
    assert split_scaled("holdings*0.125") == ("holdings", 0.125) and scaled_name("cash", 1.0) == "cash"
    layout = row_layout(("close_1h", "ss:rsi_30_1h"), [model.vector_names])
    assert layout.n_technical == 2 and layout.names[:2] == ("close_1h", "ss:rsi_30_1h")
    assert layout.program == ((1, 0, 2.0 ** -12, None), (0, 0, 0.001, None), (1, 1, 0.125, None), (1, 2, 1.0, None),
                              (1, 3, 1.0, None))
    # Account features need no warm-up: the lookback is the slowest technical one, rsi_30 on 1h.
    warmups = feature_warmups(TechnicalConfig(), model.extras)
    assert model.lookback == max(warmups["ss:rsi_30_1h"], warmups["close_1h"]) > 0


def test_account_features_follow_the_fills_and_the_marks(models_copy, btc_1m) -> None:
    _member(models_copy)
    gen = _engine(models_copy)
    ledger = _Ledger(gen.config.engine.initial_equity)
    rsi = gen.feature_names.index("ss:rsi_30_1h")
    compared = 0
    for k, row in enumerate(_rows(btc_1m, 0, 5_000)):
        signal = gen.on_bar(BTC, *row)
        ts, close = row[0], row[4]
        if (ts + 60_000) % HOUR == 0:
            hour_close = close  # close_1h: the last closed hour's (these bars have no gap)
        if signal.reasoning["code"] != "WARM_UP":
            # The member acts on every bar: its observation is this bar's, after the fills so
            # far, marked at this bar's close.
            got = gen.observation("acct_agent")
            want = ledger.row(close, hour_close, gen.features(BTC)[rsi])
            np.testing.assert_allclose(got[:5], want[:5], rtol=2e-7, atol=1e-12)
            assert got[5] == want[5]
            compared += 1
        if k % 97 == 0 and k >= 3_000:
            # Buys, and a partial sell every third time: position, cash and entry move.
            side = "sell" if (k // 97) % 3 == 0 and ledger.qty > 0 else "buy"
            qty = 0.05 if side == "buy" else min(0.03, ledger.qty)
            fee = qty * close * 0.001
            gen.on_fill(BTC, side, qty, close, ts + 60_000, fee=fee)
            ledger.fill(side, qty, close, fee)
    assert compared > 1_000 and ledger.qty > 0


def test_a_cadenced_member_runs_only_when_its_hour_closes_and_its_vote_stands(models_copy, btc_1m) -> None:
    _member(models_copy, decision_timeframe="1h")
    gen = _engine(models_copy, alone=True)
    model = next(m for m in gen.ensemble.members if m.name == "acct_agent")
    last_target = None
    acted = 0
    for k, row in enumerate(_rows(btc_1m, 0, 6_000)):
        closes_hour = (row[0] + 60_000) % HOUR == 0
        # Poison the row: a bar on which the member does not act must not rewrite it.
        gen.ensemble.input_row[:] = np.nan
        signal = gen.on_bar(BTC, *row)
        if signal.reasoning["code"] == "WARM_UP":
            continue
        target = signal.reasoning["vote"]["members"]["acct_agent"]["target"]
        if closes_hour or last_target is None:
            obs = gen.observation("acct_agent")
            assert np.isfinite(obs).all()
            assert target == model.action_targets[int(model.run(obs[None, :])["action"][0])]
            acted += 1
        else:
            assert np.isnan(gen.ensemble.input_row).all(), f"bar {k}: the member ran off its cadence"
            assert target == last_target
        last_target = target
    assert acted > 20


def test_a_cadenced_engine_continues_bit_for_bit_from_its_snapshot(models_copy, btc_1m, tmp_path) -> None:
    _member(models_copy, decision_timeframe="1h")
    gen = _engine(models_copy)
    rows = _rows(btc_1m, 0, 6_000)
    for row in rows[:4_530]:  # mid-hour: the standing votes must survive the restore
        gen.on_bar(BTC, *row)
    restored = TacticalSignalGenerator.restore(gen.snapshot(tmp_path / "s.l2snap"))
    for row in rows[4_530:]:
        assert gen.on_bar(BTC, *row).to_dict() == restored.on_bar(BTC, *row).to_dict()


def test_a_decision_timeframe_the_engine_lacks_is_refused_naming_it(models_copy) -> None:
    _member(models_copy, decision_timeframe="4h")
    with pytest.raises(ModelLoadError, match="decision_timeframe '4h' is not in technical.timeframes"):
        _engine(models_copy)


@pytest.mark.parametrize("changes, problem", [
    ({"feature_scales": {"cash": 0}}, "feature_scales['cash']=0: must be a finite number > 0"),
    ({"feature_scales": {"equity": 2.0}}, "feature_scales names 'equity', which is not in feature_names"),
    ({"feature_scales": [1.0]}, "feature_scales must be an object"),
    ({"decision_timeframe": "7x"}, "decision_timeframe must be a timeframe string"),
    ({"finrl": {"env": "stocktrading", "tickers": [BTC], "hmax": 0, "buy_cost_pct": [0.001],
                "sell_cost_pct": [0.001], "initial_amount": 1e6}}, "finrl.hmax must be an integer in [1, 16777216]"),
    ({"finrl": {"env": "stocktrading", "tickers": [BTC], "hmax": 100, "buy_cost_pct": [0.001],
                "sell_cost_pct": [0.001], "initial_amount": 1e6}}, "finrl needs a box action space"),
    ({"finrl": {"env": "stocktrading", "tickers": [BTC], "hmax": 2 ** 40, "buy_cost_pct": [0.001],
                "sell_cost_pct": [0.001], "initial_amount": 1e6}}, "finrl.hmax must be an integer in [1, 16777216]"),
    ({"finrl": {"env": "stocktrading", "tickers": ["btc"], "hmax": 100, "buy_cost_pct": [0.001],
                "sell_cost_pct": [0.001], "initial_amount": 1e6}}, "finrl.tickers must be a non-empty list"),
    ({"finrl": {"env": "stocktrading", "tickers": [BTC, "ETH/USDT"], "hmax": 100, "buy_cost_pct": [0.001] * 2,
                "sell_cost_pct": [0.001] * 2, "initial_amount": 1e6}}, "no feature names its symbol"),
])
def test_bad_observation_keys_are_named_by_manifest_validation(models_copy, changes, problem) -> None:
    _member(models_copy)
    manifest = json.loads((models_copy / "acct_agent.json").read_text())
    manifest.update(changes)
    assert any(problem in p for p in validate_manifest(manifest)), validate_manifest(manifest)


def test_observation_of_an_unknown_member_is_a_typed_error(models_copy) -> None:
    _member(models_copy)
    with pytest.raises(InvalidInputError, match="member='nope'"):
        _engine(models_copy).observation("nope")


def test_compiled_members_on_different_cadences_each_run_on_their_own_closes(models_copy, btc_1m) -> None:
    cadence = {"trend_agent": ("15m", 900_000), "mean_revert_agent": ("5m", 300_000)}
    for name, (tf, _) in cadence.items():
        path = models_copy / f"{name}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "decision_timeframe": tf}))
    config = L2Config.from_dict({"model": {"models_dir": str(models_copy)}})
    gen = TacticalSignalGenerator(config)
    assert gen.ensemble.inference == "compiled"
    gen.on_strategic_decision(DECISION)
    models = {m.name: m for m in gen.ensemble.members}
    last: dict[str, float] = {}
    runs = dict.fromkeys(models, 0)
    for row in _rows(btc_1m, 0, 4_000):
        signal = gen.on_bar(BTC, *row)
        if signal.reasoning["code"] == "WARM_UP":
            continue
        votes = signal.reasoning["vote"]["members"]
        for name, model in models.items():
            target = votes[name]["target"]
            period = cadence.get(name, ("1m", 60_000))[1]
            if (row[0] + 60_000) % period == 0 or name not in last:
                # It acted: on this bar's row, as its own onnxruntime session would.
                action = int(model.run(gen.observation(name)[None, :])["action"][0])
                assert target == model.action_targets[action], name
                runs[name] += 1
            else:
                assert target == last[name], name
            last[name] = target
    assert runs["volatility_agent"] > 4 * runs["mean_revert_agent"] > 0
    assert abs(runs["mean_revert_agent"] - 3 * runs["trend_agent"]) <= 3 and runs["trend_agent"] > 100


ETH = "ETH/USDT"
MULTI = ["cash", "close@BTC/USDT", "close@ETH/USDT", "holdings@BTC/USDT", "holdings@ETH/USDT",
         "rsi_30@BTC/USDT", "rsi_30@ETH/USDT"]


def _box_member(models_copy: Path, name: str, features: list[str], dims: int, seed: int,
                weights: np.ndarray | None = None, bias: np.ndarray | None = None, **manifest: object) -> None:
    """A one-layer tanh Box member (SAC-like outputs) with ``dims`` action dimensions."""
    import hashlib

    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    # Small weights on O(1e4) inputs keep tanh away from saturation for these prices.
    w = (rng.normal(size=(dims, len(features))) * 1e-5 if weights is None else weights).astype(np.float32)
    b = (np.zeros(dims) if bias is None else bias).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["obs", "W", "B"], ["pre"], transB=1),
             helper.make_node("Tanh", ["pre"], ["action"])]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", len(features)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["N", dims])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    base = json.loads((models_dir() / "trend_agent.json").read_text())
    base.update(name=name, algorithm="SAC", feature_names=features, observation_size=len(features),
                action_space={"type": "box", "low": [-1.0] * dims, "high": [1.0] * dims, "shape": [dims]},
                action_targets=None, outputs=["action"], onnx_sha256=hashlib.sha256(data).hexdigest(),
                parity={"samples": 1, "kind": "box", "max_abs_diff": 0.0, "passed": True},
                feature_namespace="stockstats", feature_timeframe="1h", lookback=None, **manifest)
    (models_copy / f"{name}.onnx").write_bytes(data)
    (models_copy / f"{name}.json").write_text(json.dumps(base))


def test_a_multi_asset_member_acts_once_all_its_symbols_closed_the_hour_and_votes_per_symbol(
        models_copy, btc_1m, eth_1m) -> None:
    _box_member(models_copy, "pair_agent", MULTI, 2, seed=7, decision_timeframe="1h")
    config = L2Config.from_dict({"model": {"models_dir": str(models_copy), "weights": {"pair_agent": 1.0}}})
    gen = TacticalSignalGenerator(config)
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate",
                                                universe=[BTC, ETH]))
    model = gen.ensemble.members[0]
    index = {n: k for k, n in enumerate(gen.feature_names)}
    btc_rows, eth_rows = _aligned(btc_1m, eth_1m, 6_000)
    pending: np.ndarray | None = None  # the action ETH's hour-closing bar decided, BTC reads it next
    decisions = 0
    for brow, erow in zip(btc_rows, eth_rows, strict=True):
        closes_hour = (brow[0] + 60_000) % HOUR == 0
        gen.ensemble.input_row[:] = np.nan
        btc = gen.on_bar(BTC, *brow)
        if btc.reasoning["code"] != "WARM_UP":
            # ETH has not reached this minute yet: the member does not run on BTC's bar.
            assert np.isnan(gen.ensemble.input_row).all()
            if pending is not None:
                assert btc.reasoning["vote"]["members"]["pair_agent"]["target"] == pytest.approx(
                    float(pending[0]), abs=0)
        eth = gen.on_bar(ETH, *erow)
        if eth.reasoning["code"] == "WARM_UP":
            continue
        if closes_hour or pending is None:
            obs = gen.observation("pair_agent")
            b, e = gen.features(BTC), gen.features(ETH)
            want = [gen.cash, b[index["close_1h"]], e[index["close_1h"]], 0.0, 0.0,
                    b[index["ss:rsi_30_1h"]], e[index["ss:rsi_30_1h"]]]
            np.testing.assert_array_equal(obs, np.array(want, dtype=np.float32))
            pending = model.run(obs[None, :])["action"][0].copy()
            decisions += 1
        else:
            assert np.isnan(gen.ensemble.input_row).all()
        assert eth.reasoning["vote"]["members"]["pair_agent"]["target"] == float(pending[1])
    assert decisions > 20


def test_a_multi_asset_member_sits_out_a_symbol_it_does_not_trade(models_copy, btc_1m) -> None:
    _box_member(models_copy, "pair_agent", MULTI, 2, seed=7)
    weights = {**L2Config().model.weights, "pair_agent": 1.0}
    gen = TacticalSignalGenerator(L2Config.from_dict({"model": {"models_dir": str(models_copy), "weights": weights}}))
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate",
                                                universe=["SOL/USDT"]))
    for row in _rows(btc_1m, 0, 2_500):
        signal = gen.on_bar("SOL/USDT", *row)
    vote = signal.reasoning["vote"]["members"]["pair_agent"]
    assert vote["status"] != "ok" and vote["weight"] == 0.0


@pytest.mark.parametrize("features, changes, problem", [
    (["cash@BTC/USDT", "close@BTC/USDT"], {}, "cash is not a symbol's"),
    (["cash", "close", "close@ETH/USDT"], {}, "every feature but cash and turbulence names its symbol"),
    (["cash", "close@btc"], {}, "is not a symbol like"),
    (MULTI, {"action_space": {"type": "discrete", "n": 3}}, "needs a box action with one dimension per symbol"),
    (MULTI, {"finrl": {"env": "stocktrading", "tickers": [BTC], "hmax": 100, "buy_cost_pct": [0.001],
                       "sell_cost_pct": [0.001], "initial_amount": 1e6}}, "outside finrl.tickers: ETH/USDT"),
])
def test_bad_multi_asset_names_are_named_by_manifest_validation(models_copy, features, changes, problem) -> None:
    _box_member(models_copy, "pair_agent", MULTI, 2, seed=7)
    manifest = json.loads((models_copy / "pair_agent.json").read_text())
    manifest.update(feature_names=features, observation_size=len(features), **changes)
    assert any(problem in p for p in validate_manifest(manifest)), validate_manifest(manifest)


LAGGED = ["close", "close[-1]", "close[-3]", "rsi_30[-2]", "holdings"]


def test_past_values_are_the_closed_bars_k_back(models_copy, btc_1m, tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    _box_member(models_copy, "lag_agent", LAGGED, 1, seed=3, decision_timeframe="1h")
    config = L2Config.from_dict({"model": {"models_dir": str(models_copy), "weights": {"lag_agent": 1.0}}})
    gen = TacticalSignalGenerator(config)
    gen.on_strategic_decision(DECISION)
    model = gen.ensemble.members[0]
    warmups = feature_warmups(TechnicalConfig(), model.extras)
    assert model.vector_names[:4] == ("close_1h", "close_1h[-1]", "close_1h[-3]", "ss:rsi_30_1h[-2]")
    # A past value k hours back needs k more hours of warm-up.
    assert model.lookback == max(warmups["close_1h"] + 3 * 60, warmups["ss:rsi_30_1h"] + 2 * 60)
    n = 9_000
    frame = pd.DataFrame({"close": btc_1m["close"][:n]}, index=pd.to_datetime(btc_1m["ts"][:n], unit="ms"))
    hourly = frame.resample("1h", closed="left", label="left")["close"].last().to_numpy()
    rsi = gen.feature_names.index("ss:rsi_30_1h")
    rsi_at_close: list[float] = []
    compared = 0
    restored = None
    for k, row in enumerate(_rows(btc_1m, 0, n)):
        gen.ensemble.input_row[:] = np.nan
        signal = gen.on_bar(BTC, *row)
        if restored is not None:
            # A restored engine continues the rings bit for bit.
            assert restored.on_bar(BTC, *row).to_dict() == signal.to_dict()
        elif k == 6_010:  # mid-hour
            restored = TacticalSignalGenerator.restore(gen.snapshot(tmp_path / "lag.l2snap"))
        if (row[0] + 60_000) % HOUR:
            continue
        rsi_at_close.append(gen.features(BTC)[rsi])
        h = (row[0] - int(btc_1m["ts"][0])) // HOUR  # the hour this bar closed
        obs = gen.observation("lag_agent")
        if k >= gen.warmup_bars:
            want = [hourly[h], hourly[h - 1], hourly[h - 3], rsi_at_close[-3], 0.0]
            np.testing.assert_array_equal(obs, np.array(want, dtype=np.float32))
            compared += 1
    assert compared > 50 and restored is not None
    np.testing.assert_array_equal(restored.observation("lag_agent"), gen.observation("lag_agent"))


@pytest.mark.parametrize("name, problem", [
    ("cash[-1]", "only a technical feature has past values"),
    ("close[-0]", "a past value is <feature>[-k] with 1 <= k <="),
    ("close[1]", "a past value is <feature>[-k]"),
])
def test_bad_past_values_are_named_by_manifest_validation(models_copy, name, problem) -> None:
    _box_member(models_copy, "lag_agent", ["close", name], 1, seed=3)
    manifest = json.loads((models_copy / "lag_agent.json").read_text())
    assert any(problem in p for p in validate_manifest(manifest)), validate_manifest(manifest)

"""The tactical engine end to end: signals against a pure-Python twin, the L3/L1 API,
warm-up and decision gates, errors that leave the state untouched, model failures."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from l2fast import L2Config, StrategicDecision, TacticalSignal, TacticalSignalGenerator
from l2fast.data import models_dir
from l2fast.engine._engine import SignalReasoning
from l2fast.errors import ConfigError, InvalidBarError, InvalidDecisionError, InvalidInputError, ModelLoadError
from l2fast.evaluation.synthetic import generate_bars
from l2fast.signals import make_signal_id

from reference.engine import EngineRef

REPO = Path(__file__).resolve().parents[1]
MODELS = models_dir()
BTC, ETH = "BTC/USDT", "ETH/USDT"
# Gates at zero so that every directional vote reaches sizing and the risk gate.
OPEN_GATES = {"consensus_threshold": 0.0, "alignment_threshold": 0.0, "confidence_threshold": 0.0}
FIXED_KELLY = {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.5}


def _config(model: dict | None = None, risk: dict | None = None, engine: dict | None = None) -> L2Config:
    return L2Config.from_dict({"model": {**OPEN_GATES, **(model or {})},
                               "risk": {**FIXED_KELLY, **(risk or {})}, "engine": engine or {}})


def _decision(universe=(BTC,), regime: str = "trending", **kw) -> StrategicDecision:
    return StrategicDecision(regime=regime, target_exposure=kw.pop("target_exposure", 0.7),
                             risk_appetite=kw.pop("risk_appetite", "aggressive"), universe=list(universe), **kw)


def _rows(bars: dict[str, np.ndarray], start: int = 0, n: int | None = None) -> list[tuple]:
    end = len(bars["ts"]) if n is None else start + n
    cols = [bars[k][start:end].tolist() for k in ("ts", "open", "high", "low", "close", "volume")]
    return list(zip(*cols))


def _aligned(a: dict[str, np.ndarray], b: dict[str, np.ndarray], n: int) -> tuple[list, list]:
    ts = np.intersect1d(a["ts"], b["ts"])[-n:]
    pick = lambda x: {k: v[np.isin(x["ts"], ts)] for k, v in x.items()}  # noqa: E731
    return _rows(pick(a)), _rows(pick(b))


@pytest.fixture(scope="module")
def engine() -> TacticalSignalGenerator:
    """A default engine, only for read-only checks (construction costs ~0.1 s)."""
    return TacticalSignalGenerator()


# ---------------------------------------------------------------------------------------
# against the pure-Python twin


def _view(sig: TacticalSignal) -> dict:
    r = sig.reasoning
    return {"side": sig.side.value, "qty": sig.qty, "code": r["code"], "confidence": sig.confidence,
            "consensus": sig.consensus, "stop_loss": sig.stop_loss, "take_profit": sig.take_profit,
            "sizing": r.get("sizing"), "risk": r.get("risk")}


class _Fills:
    """A minimal L1 for the twin run: next-open fills with a fee; stops and take-profits
    filled at their price when the bar's range touches them (the stop first)."""

    def __init__(self, fee: float = 0.001) -> None:
        self.fee = fee
        self.pending: dict[str, dict] = {}
        self.stops: dict[str, tuple[str, float, float | None, float | None]] = {}

    def before_bar(self, symbol: str, bar: tuple, targets: list) -> None:
        ts, o, h, lo = bar[:4]
        order = self.pending.pop(symbol, None)
        if order is not None:
            for t in targets:
                t.on_fill(symbol, order["side"], order["qty"], o, ts, order["qty"] * o * self.fee)
            if order["code"] == "ENTRY":
                self.stops[symbol] = (order["side"], order["qty"], order["stop_loss"], order["take_profit"])
            else:
                self.stops.pop(symbol, None)
        held = self.stops.get(symbol)
        if held is None:
            return
        side, qty, stop, tp = held
        long = side == "buy"
        hit = None
        if stop is not None and (lo <= stop if long else h >= stop):
            hit = stop
        elif tp is not None and (h >= tp if long else lo <= tp):
            hit = tp
        if hit is not None:
            for t in targets:
                t.on_fill(symbol, "sell" if long else "buy", qty, hit, ts, qty * hit * self.fee)
            del self.stops[symbol]

    def after_signal(self, symbol: str, out: dict) -> None:
        if out["qty"] > 0:
            self.pending[symbol] = out
        elif symbol in self.stops and out["stop_loss"] is not None:
            side, qty, _, _ = self.stops[symbol]
            self.stops[symbol] = (side, qty, out["stop_loss"], out["take_profit"])


class _RefAdapter:
    def __init__(self, ref: EngineRef) -> None:
        self.ref = ref

    def on_fill(self, symbol, side, qty, price, ts, fee) -> None:
        self.ref.on_fill(symbol, side, qty, price, ts, fee)


# The twin runs each member's own onnxruntime session. On the fused graph the engine's
# numbers are the twin's to the last bits (1e-9); on the compiled forward (the default) the
# members' probabilities differ from onnxruntime's by up to about 1e-6 (tests/test_mlp.py),
# so confidence, consensus and the sizing numbers made from confidence are compared within
# 1e-6, while sides, codes, quantities, stops and take-profits stay exact. One exception:
# a sizing whose unrounded quantity lies within that 1e-6 of a lot boundary rounds to the
# neighbouring lot, so the reasoning's sizing qty and notional may differ by one lot step
# (``lot``; seen once on these bars, on a signal the risk gate then denied).
_EXACT, _PROBS = 1e-9, 1e-6


def _assert_same(got: dict, exp: dict, where: str, tol: float = _EXACT, lot: float = 0.0) -> None:
    assert (got["side"], got["code"]) == (exp["side"], exp["code"]), where
    for key in ("qty", "confidence", "consensus", "stop_loss", "take_profit"):
        a, b = got[key], exp[key]
        assert (a is None) == (b is None), f"{where}: {key} {a} != {b}"
        if a is not None:
            if key in ("confidence", "consensus"):
                assert abs(a - b) <= tol, f"{where}: {key} {a} != {b}"
            else:
                assert math.isclose(a, b, rel_tol=_EXACT, abs_tol=1e-12), f"{where}: {key} {a} != {b}"
    for part in ("sizing", "risk"):
        if exp.get(part) is not None:
            for key, value in exp[part].items():
                mine = got[part][key]
                if isinstance(value, float) and isinstance(mine, float):
                    slack = 0.0
                    if lot and key in ("qty", "qty_requested"):
                        slack = lot * (1 + 1e-9)
                    elif lot and key == "notional" and exp[part].get("qty"):
                        slack = lot * (1 + 1e-9) * exp[part]["notional"] / exp[part]["qty"]  # one lot's price
                    assert abs(mine - value) <= slack or math.isclose(mine, value, rel_tol=tol, abs_tol=1e-12), \
                        f"{where}: {part}.{key} {mine!r} != {value!r}"
                else:
                    assert mine == value, f"{where}: {part}.{key} {mine!r} != {value!r}"


@pytest.mark.parametrize("inference, tol", [("compiled", _PROBS), ("onnxruntime", _EXACT)])
@pytest.mark.parametrize("risk, exercised", [
    ({"allow_short": True, "max_daily_trades": 4, "atr_multiplier": 8.0, "min_trades_for_live_stats": 5},
     {"ENTRY", "EXIT", "MAX_DAILY_TRADES", "POSITION_OPEN", "kelly:config", "kelly:live"}),
    ({"allow_short": False, "max_daily_trades": 50, "daily_loss_limit": 0.001, "max_concurrent_positions": 1,
      "breakeven_threshold": 0.5, "take_profit_r": 3.0, "kelly_fraction": 1.0, "volatility_target": 0.6},
     {"ENTRY", "DAILY_LOSS_LIMIT", "SHORT_NOT_ALLOWED"}),
], ids=["short-wide-stops-daily-trades-live-kelly", "spot-daily-loss-one-position"])
def test_signals_equal_the_pure_python_twin_on_real_btc_and_eth(btc_1m, eth_1m, risk, exercised, inference,
                                                                 tol) -> None:
    cfg = _config(risk=risk, model={"inference": inference})
    gen = TacticalSignalGenerator(cfg)
    assert gen.ensemble.inference == inference
    ref = EngineRef(cfg, list(gen.ensemble.members), gen.voting_params, gen.warmup_bars, [BTC, ETH])
    decision = _decision((BTC, ETH))
    gen.on_strategic_decision(decision)
    ref.on_decision(decision)
    streams = dict(zip((BTC, ETH), _aligned(btc_1m, eth_1m, 7000)))
    fills_gen, fills_ref = _Fills(), _Fills()
    codes: set[str] = set()
    for k in range(len(streams[BTC])):
        for symbol, rows in streams.items():
            bar = rows[k]
            fills_gen.before_bar(symbol, bar, [gen])
            fills_ref.before_bar(symbol, bar, [_RefAdapter(ref)])
            got = _view(gen.on_bar(symbol, *bar))
            exp = ref.on_bar(symbol, *bar)
            lot = cfg.risk.lot_step_for(symbol) if inference == "compiled" else 0.0
            _assert_same(got, exp, f"{symbol} bar {k}", tol, lot)
            fills_gen.after_signal(symbol, got)
            fills_ref.after_signal(symbol, exp)
            codes.add(exp["code"])
            if exp.get("sizing"):
                codes.add(f"kelly:{exp['sizing']['kelly_source']}")
    assert math.isclose(gen.equity, ref.risk.equity, rel_tol=1e-12)
    # The run exercises the rules its parameters set up, and closes trades.
    assert exercised <= codes
    assert gen.trade_stats["trades"] > 0


# ---------------------------------------------------------------------------------------
# API


def test_public_names_come_from_the_package() -> None:
    import l2fast

    assert {"TacticalSignalGenerator", "TacticalSignal", "StrategicDecision", "L2Config"} <= set(l2fast.__all__)
    assert l2fast.TacticalSignalGenerator is TacticalSignalGenerator


def test_default_engine_loads_the_three_shipped_agents(engine) -> None:
    assert engine.members == ("trend_agent", "mean_revert_agent", "volatility_agent")
    lookbacks = [json.loads((MODELS / f"{m}.json").read_text())["lookback"] for m in engine.members]
    assert engine.warmup_bars == max(lookbacks)


def test_every_bar_gets_a_signal_and_warm_up_holds_until_the_lookback() -> None:
    gen = TacticalSignalGenerator(_config())
    gen.on_strategic_decision(_decision())
    rows = _rows(generate_bars(gen.warmup_bars + 50, seed=3))
    signals = [gen.on_bar(BTC, *bar) for bar in rows]
    assert all(isinstance(s, TacticalSignal) and s.ts_ms == bar[0] for s, bar in zip(signals, rows))
    warm = [s.reasoning for s in signals[: gen.warmup_bars - 1]]
    assert all(r == {"code": "WARM_UP", "bars": i + 1, "needed": gen.warmup_bars} for i, r in enumerate(warm))
    assert all(s.side == "hold" and s.qty == 0.0 for s in signals[: gen.warmup_bars - 1])
    assert all(s.reasoning["code"] != "WARM_UP" for s in signals[gen.warmup_bars - 1:])
    for s in signals:
        assert json.loads(json.dumps(s.to_dict(), allow_nan=False))["signal_id"] == s.signal_id


def test_without_a_decision_the_engine_holds() -> None:
    gen = TacticalSignalGenerator(_config())
    rows = _rows(generate_bars(gen.warmup_bars + 5, seed=4))
    codes = {gen.on_bar(BTC, *bar).reasoning["code"] for bar in rows}
    assert codes == {"NO_DECISION"}


def test_a_decision_older_than_the_limit_is_stale() -> None:
    gen = TacticalSignalGenerator(_config(engine={"max_decision_age_ms": 60_000 * 5}))
    rows = _rows(generate_bars(20, seed=5))
    gen.on_strategic_decision(_decision(ts_ms=rows[0][0]))
    reasons = [gen.on_bar(BTC, *bar).reasoning for bar in rows]
    # Age = bar time - decision time; stale once it exceeds 5 minutes.
    assert [r["code"] for r in reasons[:6]] == ["WARM_UP"] * 6
    assert reasons[6] == {"code": "STALE_DECISION", "age_ms": 360_000, "limit_ms": 300_000}


def test_regime_multipliers_set_the_member_weights() -> None:
    cfg = _config()
    gen = TacticalSignalGenerator(cfg)
    rows = _rows(generate_bars(gen.warmup_bars + 3, seed=6))
    for bar in rows[:-3]:
        gen.on_bar(BTC, *bar)
    for regime, bar in zip(("trending", "ranging", "volatile"), rows[-3:]):
        gen.on_strategic_decision(_decision(regime=regime))
        members = gen.on_bar(BTC, *bar).reasoning["vote"]["members"]
        raw = {m: cfg.model.weights[m] * cfg.model.regime_multipliers[regime][m] for m in cfg.model.weights}
        total = sum(raw.values())
        assert all(members[m]["status"] == "ok" for m in raw)
        assert {m: members[m]["weight"] for m in raw} == pytest.approx({m: w / total for m, w in raw.items()})


def test_process_strategic_decision_answers_for_the_first_universe_symbol() -> None:
    gen = TacticalSignalGenerator(_config())
    sig = asyncio.run(gen.process_strategic_decision(
        {"regime": "ranging", "target_exposure": 0.5, "risk_appetite": "moderate", "universe": [ETH, BTC]}))
    assert (sig.symbol, sig.side, sig.reasoning) == (ETH, "hold", {"code": "NO_DATA"})
    rows = _rows(generate_bars(gen.warmup_bars + 1, seed=7))
    for bar in rows:
        last = gen.on_bar(ETH, *bar)
    again = asyncio.run(gen.process_strategic_decision(_decision((ETH,), regime="ranging")))
    assert again.symbol == ETH and again.ts_ms == rows[-1][0]
    assert again.reasoning["vote"] == last.reasoning["vote"]
    assert gen.decision.universe == (ETH,)


def test_symbols_outside_the_universe_never_enter() -> None:
    gen = TacticalSignalGenerator(_config())
    gen.on_strategic_decision(_decision((ETH,)))
    rows = _rows(generate_bars(gen.warmup_bars + 400, seed=8))
    signals = [gen.on_bar(BTC, *bar) for bar in rows]
    assert all(s.side == "hold" for s in signals)
    assert "NOT_IN_UNIVERSE" in {s.reasoning["code"] for s in signals}


# ---------------------------------------------------------------------------------------
# errors leave the state untouched


def _bad_bars(ts: int, good: tuple) -> list[tuple[tuple, str]]:
    _, o, h, lo, c, v = good
    return [
        ((ts, o, h, lo, float("nan"), v), "close"),
        ((ts, o, lo * 0.99, lo, c, v), "high"),
        ((ts, o, h, lo, c, -1.0), "volume"),
        ((ts, -o, h, lo, c, v), "open"),
        ((ts - 60_000, o, h, lo, c, v), "ts"),
        ((ts + 30_000, o, h, lo, c, v), "ts"),
        ((ts, "1.0", h, lo, c, v), "open"),
        ((ts, o, h, lo, True, v), "close"),
        ((-5, o, h, lo, c, v), "ts"),
    ]


def test_bad_bars_raise_and_leave_every_later_signal_unchanged() -> None:
    cfg = _config(risk={"allow_short": True})
    clean, dirty = TacticalSignalGenerator(cfg), TacticalSignalGenerator(cfg)
    for gen in (clean, dirty):
        gen.on_strategic_decision(_decision())
    rows = _rows(generate_bars(clean.warmup_bars + 300, seed=9))
    for k, bar in enumerate(rows):
        if k % 97 == 0 and k:
            for bad, field in _bad_bars(bar[0], bar):
                with pytest.raises(InvalidBarError) as err:
                    dirty.on_bar(BTC, *bad)
                assert err.value.field == field
            with pytest.raises(InvalidBarError):
                dirty.on_bar(BTC, *rows[k - 1])  # duplicate timestamp
        assert dirty.on_bar(BTC, *bar).to_dict() == clean.on_bar(BTC, *bar).to_dict()
    assert dirty.features(BTC).tolist() == pytest.approx(clean.features(BTC).tolist(), nan_ok=True)


def test_a_bad_first_bar_does_not_register_the_symbol() -> None:
    gen = TacticalSignalGenerator(_config())
    with pytest.raises(InvalidBarError):
        gen.on_bar(ETH, 0, 1.0, 0.5, 0.9, 1.0, 1.0)
    with pytest.raises(InvalidInputError, match="BASE/QUOTE"):
        gen.on_bar("btcusdt", 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(InvalidInputError, match="must be a string"):
        gen.on_bar(None, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert gen.symbols == ()


@pytest.mark.parametrize("bad, field", [
    ({"regime": "sideways"}, "regime"),
    ({"target_exposure": 1.5}, "target_exposure"),
    ({"risk_appetite": "yolo"}, "risk_appetite"),
    ({"universe": []}, "universe"),
    ({"universe": ["BTC-USDT"]}, "universe"),
    ({"leverage": 3}, "leverage"),
])
def test_a_bad_decision_raises_and_keeps_the_previous_one(bad, field) -> None:
    gen = TacticalSignalGenerator(_config())
    good = _decision()
    gen.on_strategic_decision(good)
    with pytest.raises(InvalidDecisionError, match=field):
        gen.on_strategic_decision({**good.to_dict(), **bad})
    assert gen.decision is good


def test_a_universe_beyond_capacity_is_refused_whole() -> None:
    from l2fast.engine.generator import MAX_SYMBOLS

    gen = TacticalSignalGenerator(_config())
    too_many = [f"C{i}/USDT" for i in range(MAX_SYMBOLS + 1)]
    with pytest.raises(InvalidDecisionError, match=f"at most {MAX_SYMBOLS}"):
        gen.on_strategic_decision(_decision(too_many))
    assert gen.symbols == () and gen.decision is None


@pytest.mark.parametrize("args, match", [
    (("DOGE/USDT", "buy", 1.0, 100.0, 0), "unknown"),
    ((BTC, "long", 1.0, 100.0, 0), "side"),
    ((BTC, "buy", 0.0, 100.0, 0), "qty"),
    ((BTC, "buy", float("nan"), 100.0, 0), "qty"),
    ((BTC, "buy", 1.0, -100.0, 0), "price"),
    ((BTC, "buy", 1.0, 100.0, -1), "ts_ms"),
])
def test_a_bad_fill_raises_and_changes_nothing(args, match) -> None:
    gen = TacticalSignalGenerator(_config())
    gen.on_strategic_decision(_decision())
    before = (gen.equity, gen.cash, gen.position(BTC))
    with pytest.raises(InvalidInputError, match=match):
        gen.on_fill(*args)
    assert (gen.equity, gen.cash, gen.position(BTC)) == before


def test_fills_book_positions_cash_and_closed_trades() -> None:
    gen = TacticalSignalGenerator(_config())
    gen.on_strategic_decision(_decision())
    opened = gen.on_fill(BTC, "buy", 0.1, 40_000.0, np.int64(0), fee=4.0)
    assert opened["opened"] and gen.position(BTC)["qty"] == 0.1
    assert gen.cash == 10_000.0 - 4_000.0 - 4.0
    closed = gen.on_fill(BTC, "sell", 0.1, 41_000.0, 60_000, fee=4.1)
    assert closed["closed"] and gen.position(BTC) is None
    assert closed["trade_return"] == pytest.approx((100.0 - 4.0 - 4.1) / 4_000.0)
    assert gen.trade_stats == {"trades": 1, "wins": 1, "losses": 0}


# ---------------------------------------------------------------------------------------
# models


def _copy_models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder)
    return folder


def test_a_member_without_an_exported_model_is_a_model_load_error(tmp_path) -> None:
    folder = _copy_models(tmp_path)
    (folder / "trend_agent.json").unlink()
    with pytest.raises(ModelLoadError, match=r"trend_agent"):
        TacticalSignalGenerator(models_dir=folder)


def test_an_unknown_feature_name_lists_the_known_ones(tmp_path) -> None:
    folder = _copy_models(tmp_path)
    path = folder / "volatility_agent.json"
    manifest = json.loads(path.read_text())
    manifest["feature_names"][0] = "atr_pct_2m"
    path.write_text(json.dumps(manifest))
    known = r"Known names \(228\): close_1m.*cdl_3blackcrows_1h"
    with pytest.raises(ModelLoadError, match=r"atr_pct_2m \(did you mean .*atr_pct_1m.*" + known):
        TacticalSignalGenerator(models_dir=folder)


def test_manifests_without_lookback_warm_up_for_their_slowest_feature(tmp_path) -> None:
    # A plain SB3 .zip export writes "lookback": null; a hand-made manifest may omit it.
    folder = _copy_models(tmp_path)
    for name in ("trend_agent", "mean_revert_agent", "volatility_agent"):
        path = folder / f"{name}.json"
        manifest = json.loads(path.read_text())
        if name == "trend_agent":
            del manifest["lookback"]
        else:
            manifest["lookback"] = None
        path.write_text(json.dumps(manifest))
    gen = TacticalSignalGenerator(models_dir=folder)
    # Slowest features: macd_hist_pct_1h (34 bars: (34 + 1) * 60 - 1), rsi_21_5m (22 bars),
    # rvol_60_15m (61 bars). The shipped lookbacks, measured on data plus one bar of the
    # slowest timeframe, are one more: 2100, 115, 930.
    assert {m.name: m.lookback for m in gen.ensemble.members} == {
        "mean_revert_agent": 114, "trend_agent": 2099, "volatility_agent": 929}
    assert gen.warmup_bars == 2099


def test_a_tampered_onnx_file_is_refused(tmp_path) -> None:
    folder = _copy_models(tmp_path)
    data = bytearray((folder / "mean_revert_agent.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "mean_revert_agent.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="mean_revert_agent"):
        TacticalSignalGenerator(models_dir=folder)


def test_a_missing_models_folder_is_a_model_load_error_naming_it(tmp_path) -> None:
    folder = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match="model.models_dir: not a directory") as exc:
        TacticalSignalGenerator(models_dir=folder)
    assert exc.value.path == folder and str(exc.value).startswith(f"{folder}: ")


def test_a_manifest_without_kelly_metrics_is_a_model_load_error_naming_its_file(tmp_path) -> None:
    folder = _copy_models(tmp_path)
    path = folder / "trend_agent.json"
    manifest = json.loads(path.read_text())
    del manifest["performance_metrics"]["win_rate"]
    path.write_text(json.dumps(manifest))
    gen = TacticalSignalGenerator(models_dir=folder)
    with pytest.raises(ModelLoadError, match="lacks a finite win_rate and payoff_ratio") as exc:
        gen.on_strategic_decision(_decision())
    assert exc.value.path == gen.models_dir / "trend_agent.json"


def test_config_must_be_an_l2config() -> None:
    with pytest.raises(ConfigError, match="L2Config"):
        TacticalSignalGenerator(config={"risk": {}})


def _nan_model(folder: Path, name: str) -> None:
    """A discrete member whose probabilities are always NaN (0 * inf in its weights)."""
    import hashlib

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    template = json.loads((MODELS / "volatility_agent.json").read_text())
    n_in, n_out = len(template["feature_names"]), template["action_space"]["n"]
    w = np.full((n_out, n_in), np.inf, np.float32)
    nodes = [helper.make_node("Mul", ["obs", "zero"], ["z"]),
             helper.make_node("Gemm", ["z", "W"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
             helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_out])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    (folder / f"{name}.onnx").write_bytes(data)
    manifest = {**template, "name": name, "onnx_sha256": hashlib.sha256(data).hexdigest(), "lookback": 1}
    (folder / f"{name}.json").write_text(json.dumps(manifest))


def test_a_member_with_non_finite_output_is_left_out_and_counted(tmp_path) -> None:
    folder = _copy_models(tmp_path)
    _nan_model(folder, "broken_agent")
    weights = {"trend_agent": 0.4, "mean_revert_agent": 0.35, "volatility_agent": 0.25, "broken_agent": 1.0}
    gen = TacticalSignalGenerator(L2Config.from_dict({"model": {"weights": weights, "models_dir": str(folder)}}))
    gen.on_strategic_decision(_decision(regime="volatile"))
    rows = _rows(generate_bars(gen.warmup_bars + 10, seed=10))
    for bar in rows:
        sig = gen.on_bar(BTC, *bar)
    members = sig.reasoning["vote"]["members"]
    assert members["broken_agent"] == {"status": "non_finite", "side": 0, "target": 0.0, "confidence": 0.0,
                                       "weight": 0.0}
    live = {m: v["weight"] for m, v in members.items() if m != "broken_agent"}
    assert sum(live.values()) == pytest.approx(1.0)
    failures = gen.member_failures(BTC)
    assert failures["broken_agent"] == {"bars": 11, "last_reason": "non_finite"}
    assert failures["trend_agent"] == {"bars": 0, "last_reason": None}


def test_all_members_failing_gives_a_hold_without_model_vote(tmp_path) -> None:
    folder = _copy_models(tmp_path)
    _nan_model(folder, "broken_agent")
    gen = TacticalSignalGenerator(L2Config.from_dict({"model": {"weights": {"broken_agent": 1.0},
                                                                "models_dir": str(folder)}}))
    gen.on_strategic_decision(_decision())
    for bar in _rows(generate_bars(5, seed=11)):
        sig = gen.on_bar(BTC, *bar)
    assert sig.side == "hold" and sig.reasoning["code"] == "NO_MODEL_VOTE"


# ---------------------------------------------------------------------------------------
# determinism


def test_same_input_gives_bit_identical_signals() -> None:
    cfg = _config(risk={"allow_short": True})
    runs = []
    for _ in range(2):
        gen = TacticalSignalGenerator(cfg)
        gen.on_strategic_decision(_decision((BTC, ETH)))
        fills = _Fills()
        out = []
        btc = _rows(generate_bars(gen.warmup_bars + 1500, seed=12))
        eth = _rows(generate_bars(gen.warmup_bars + 1500, seed=13, start_price=2000.0))
        for b, e in zip(btc, eth):
            for symbol, bar in ((BTC, b), (ETH, e)):
                fills.before_bar(symbol, bar, [gen])
                sig = gen.on_bar(symbol, *bar)
                fills.after_signal(symbol, _view(sig))
                out.append(json.dumps(sig.to_dict(), allow_nan=False, sort_keys=True))
        runs.append(out)
    assert runs[0] == runs[1]
    assert any('"side": "buy"' in line or '"side": "sell"' in line for line in runs[0])


# ---------------------------------------------------------------------------------------
# the one dict form of a vote


VOTE_KEYS = ["direction", "score", "model_score", "technical_score", "consensus", "confidence", "model_confidence",
             "technical_agreement", "alignment", "target", "gates", "members", "timeframes"]


def test_reasoning_vote_is_the_voters_dict_of_the_same_vote() -> None:
    # The engine and the Python front end (Voter) turn a vote into a dict with ONE kernel
    # function: fed the same bars and outputs, their dicts are equal, key order included.
    from l2fast.decision.voting import Voter
    from l2fast.technical.state import TechnicalState

    cfg = _config()
    gen = TacticalSignalGenerator(cfg)
    gen.on_strategic_decision(_decision(regime="ranging"))
    voter, state = Voter(gen.voting_params), TechnicalState(cfg.technical)
    for bar in _rows(generate_bars(gen.warmup_bars + 5, seed=12)):
        sig = gen.on_bar(BTC, *bar)
        voter.update_technical(state.values, state.update(*bar))
    out = gen.ensemble.run(gen.features(BTC))
    outputs = {m.name: {"action": out[f"{m.name}/action"], m.kind: out[f"{m.name}/{m.kind}"]}
               for m in gen.voting_params.members}
    mine = voter.vote(outputs, regime_multipliers=cfg.model.regime_multipliers["ranging"]).reasoning()
    vote = sig.reasoning["vote"]
    assert mine == vote
    assert list(vote) == list(mine) == VOTE_KEYS
    assert list(vote["members"]) == list(gen.members)
    assert list(vote["timeframes"]) == list(cfg.technical.timeframes)
    assert all(list(m) == ["status", "side", "target", "confidence", "weight"] for m in vote["members"].values())


def test_the_ensemble_holds_the_members_in_vote_order() -> None:
    gen = TacticalSignalGenerator()
    assert gen.ensemble.names == gen.members == tuple(gen.config.model.weights)
    assert tuple(b.name for b in gen.ensemble.member_buffers) == gen.members


# ---------------------------------------------------------------------------------------
# lazy signals


def _unbuilt(sig: TacticalSignal, name: str) -> bool:
    """Whether a lazy signal has not built ``name`` yet (its slot is still unset)."""
    try:
        getattr(TacticalSignal, name).__get__(sig, TacticalSignal)
    except AttributeError:
        return True
    return False


def test_lazy_signals_read_late_equal_what_their_bar_gave_and_eager_ones_on_real_btc_and_eth(btc_1m, eth_1m) -> None:
    # Two engines on the same bars and fills: one's signals are read at their bar, the
    # other's only after the last bar. The late reasoning must still describe its own bar
    # (a copy, not the engine's structs of the latest bar), and equal an eager signal made
    # by the public constructor from the same fields, field by field.
    cfg = _config(risk={"allow_short": True, "max_daily_trades": 4, "atr_multiplier": 8.0,
                        "min_trades_for_live_stats": 5})
    now, late = TacticalSignalGenerator(cfg), TacticalSignalGenerator(cfg)
    streams = dict(zip((BTC, ETH), _aligned(btc_1m, eth_1m, 4000)))
    fills_now, fills_late = _Fills(), _Fills()
    at_bar: list[tuple] = []
    kept: list[TacticalSignal] = []
    for k in range(len(streams[BTC])):
        if k == 3:  # the first bars hold with NO_DECISION
            for gen in (now, late):
                gen.on_strategic_decision(_decision((BTC, ETH)))
        for symbol, rows in streams.items():
            bar = rows[k]
            fills_now.before_bar(symbol, bar, [now])
            fills_late.before_bar(symbol, bar, [late])
            sig = now.on_bar(symbol, *bar)
            at_bar.append((copy.deepcopy(sig.reasoning), sig.to_dict(), sig.signal_id, repr(sig)))
            fills_now.after_signal(symbol, _view(sig))
            kept.append(sig := late.on_bar(symbol, *bar))
            assert _unbuilt(sig, "reasoning") and _unbuilt(sig, "signal_id")
            code, _, _ = sig._brief()
            fills_late.after_signal(symbol, {"side": sig.side.value, "qty": sig.qty, "code": code,
                                             "stop_loss": sig.stop_loss, "take_profit": sig.take_profit})
    assert all(_unbuilt(s, "reasoning") for s in kept)  # nothing above built them
    codes, position_holds = set(), 0
    for (reasoning, as_dict, signal_id, text), sig in zip(at_bar, kept, strict=True):
        assert sig._brief() == (reasoning["code"], "vote" in reasoning,
                                reasoning["denial"]["code"] if "denial" in reasoning else None)
        assert sig.reasoning == reasoning
        assert sig.reasoning is sig.reasoning  # built once
        assert sig.signal_id == signal_id == make_signal_id(sig.symbol, sig.ts_ms, sig.side, sig.qty,
                                                           sig.stop_loss, sig.take_profit)
        assert json.dumps(sig.to_dict()) == json.dumps(as_dict)  # key order too
        assert repr(sig) == text
        eager = TacticalSignal(sig.symbol, sig.side.value, sig.qty, sig.confidence, sig.consensus, sig.stop_loss,
                               sig.take_profit, copy.deepcopy(reasoning), sig.ts_ms)
        assert eager == sig and sig == eager
        assert (eager.signal_id, eager.to_dict(), repr(eager)) == (sig.signal_id, as_dict, text)
        codes.add(reasoning["code"])
        position_holds += sig.side == "hold" and "position" in reasoning
    assert {"NO_DECISION", "WARM_UP", "ENTRY", "EXIT", "MAX_DAILY_TRADES", "POSITION_OPEN"} <= codes
    assert position_holds > 0


def test_a_lazy_signal_copies_pickles_and_travels_the_bus_as_an_eager_one() -> None:
    from l2fast.bus.schema import decode, encode

    gen = TacticalSignalGenerator(_config())
    gen.on_strategic_decision(_decision())
    rows = _rows(generate_bars(gen.warmup_bars + 20, seed=5))
    signals = [gen.on_bar(BTC, *bar) for bar in rows]
    for sig in (signals[0], signals[-1]):
        assert decode(encode(sig)).message == sig
        for other in (copy.copy(sig), copy.deepcopy(sig), pickle.loads(pickle.dumps(sig))):
            assert other == sig and other.signal_id == sig.signal_id and other.to_dict() == sig.to_dict()
        assert dataclasses.replace(sig) == sig
    with pytest.raises(TypeError):
        SignalReasoning()
    stale = TacticalSignalGenerator(_config(engine={"max_decision_age_ms": 60_000}))
    stale.on_strategic_decision(_decision(ts_ms=rows[0][0]))
    sig = [stale.on_bar(BTC, *bar) for bar in rows[:5]][-1]
    assert sig._brief() == ("STALE_DECISION", False, None)
    assert sig.reasoning == {"code": "STALE_DECISION", "age_ms": rows[4][0] - rows[0][0], "limit_ms": 60_000}

"""StrategicDecision validation, TacticalSignal's JSON-safe form and deterministic ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2fast.errors import InvalidDecisionError, InvalidInputError
from l2fast.signals import Side, StrategicDecision, TacticalSignal, make_signal_id

DECISION = {"regime": "trending", "target_exposure": 0.7, "risk_appetite": "aggressive", "universe": ["BTC/USDT"]}
TS = 1_700_000_040_000


def _signal(**kw):
    args = dict(symbol="BTC/USDT", side="buy", qty=0.012, confidence=0.8, consensus=0.75,
                stop_loss=41_500.0, take_profit=44_000.0, reasoning={"why": "test"}, ts_ms=TS)
    args.update(kw)
    return TacticalSignal(**args)


# ---------------------------------------------------------------------------------------
# StrategicDecision


def test_a_valid_decision_is_built_directly_or_from_l3s_dict():
    direct = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive",
                               universe=["BTC/USDT"])
    assert direct == StrategicDecision.from_dict(DECISION)
    assert direct.universe == ("BTC/USDT",) and direct.ts_ms is None
    assert StrategicDecision.from_dict({**DECISION, "ts_ms": TS}).ts_ms == TS


def test_decision_numbers_are_normalised_to_python_types():
    d = StrategicDecision.from_dict({**DECISION, "target_exposure": np.float32(0.5), "ts_ms": np.int64(TS),
                                     "universe": ("BTC/USDT", "ETH/USDT", "1000SHIB/USDT")})
    assert type(d.target_exposure) is float and type(d.ts_ms) is int
    assert StrategicDecision.from_dict({**DECISION, "target_exposure": 1}).target_exposure == 1.0


def test_decision_to_dict_round_trips_and_is_json():
    d = StrategicDecision.from_dict({**DECISION, "ts_ms": TS})
    assert StrategicDecision.from_dict(json.loads(json.dumps(d.to_dict(), allow_nan=False))) == d


BAD_DECISIONS = [
    ({"regime": "sideways"}, "regime='sideways': must be one of 'trending', 'ranging', 'volatile'"),
    ({"regime": None}, "regime=None"),
    ({"target_exposure": 1.2}, "target_exposure=1.2: must be a number in [0, 1]"),
    ({"target_exposure": -0.1}, "target_exposure=-0.1"),
    ({"target_exposure": float("nan")}, "target_exposure=nan"),
    ({"target_exposure": float("inf")}, "target_exposure=inf"),
    ({"target_exposure": "0.7"}, "target_exposure='0.7'"),
    ({"target_exposure": True}, "target_exposure=True"),
    ({"risk_appetite": "reckless"},
     "risk_appetite='reckless': must be one of 'conservative', 'moderate', 'aggressive'"),
    ({"universe": []}, "universe=[]: must be a non-empty list of symbols"),
    ({"universe": "BTC/USDT"}, "universe='BTC/USDT': must be a non-empty list of symbols"),
    ({"universe": None}, "universe=None"),
    ({"universe": ["btc/usdt"]}, "universe='btc/usdt': symbols look like 'BTC/USDT'"),
    ({"universe": ["BTCUSDT"]}, "universe='BTCUSDT'"),
    ({"universe": ["BTC-USDT"]}, "universe='BTC-USDT'"),
    ({"universe": ["BTC/USDT", 5]}, "universe=5"),
    ({"universe": ["BTC/USDT", "BTC/USDT"]}, "universe=['BTC/USDT', 'BTC/USDT']: symbols must be distinct"),
    ({"ts_ms": -1}, "ts_ms=-1: must be epoch milliseconds"),
    ({"ts_ms": 1.5e12}, "ts_ms=1500000000000.0"),
    ({"ts_ms": 2 ** 63}, f"ts_ms={2 ** 63}: must be epoch milliseconds"),
    ({"ts_ms": 10 ** 400}, "ts_ms=<an integer of 401 digits>: must be epoch milliseconds"),
    ({"ts_ms": 253_402_300_800_000}, "ts_ms=253402300800000: must be epoch milliseconds"),
    ({"ts_ms": True}, "ts_ms=True"),
    ({"target_exposure": 10 ** 400}, "target_exposure=<an integer of 401 digits>: must be a number in [0, 1]"),
    ({"target_exposure": -10 ** 400}, "target_exposure=<an integer of 401 digits>"),
    ({"confidence": 0.9},
     "confidence=0.9: unknown field (known: regime, target_exposure, risk_appetite, universe, ts_ms)"),
]


@pytest.mark.parametrize(("change", "message"), BAD_DECISIONS, ids=[m.split(":")[0] for _, m in BAD_DECISIONS])
def test_bad_decisions_raise_naming_the_field_and_value(change, message):
    with pytest.raises(InvalidDecisionError, match="^" + re.escape("invalid decision: " + message)):
        StrategicDecision.from_dict({**DECISION, **change})


@pytest.mark.parametrize("key", ["regime", "target_exposure", "risk_appetite", "universe"])
def test_a_decision_missing_a_field_is_rejected_naming_it(key):
    data = {k: v for k, v in DECISION.items() if k != key}
    with pytest.raises(InvalidDecisionError, match=f"^invalid decision: {key}: missing"):
        StrategicDecision.from_dict(data)


def test_decision_errors_are_value_errors_and_non_mappings_are_rejected():
    with pytest.raises(ValueError, match="expected a mapping, got list"):
        StrategicDecision.from_dict([("regime", "trending")])  # type: ignore[arg-type]
    with pytest.raises(InvalidDecisionError, match="target_exposure=1.5"):
        StrategicDecision("ranging", 1.5, "moderate", ("ETH/USDT",))


def test_decisions_are_immutable():
    d = StrategicDecision.from_dict(DECISION)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.regime = "ranging"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# TacticalSignal


def test_side_is_a_string_enum():
    assert Side.BUY == "buy" and Side("sell") is Side.SELL
    assert _signal().side is Side.BUY
    assert json.dumps(Side.HOLD) == '"hold"'


def test_to_dict_is_json_safe_even_with_non_finite_and_numpy_values_in_the_reasoning():
    reasoning = {
        "warmup": False,
        "votes": {"trend_agent": np.float64("nan"), "mean_revert_agent": np.float32(0.25), "n": np.int64(3)},
        "rsi": float("inf"),
        "levels": (1.0, float("-inf"), None),
        "targets": np.array([0.5, np.nan]),
        "flag": np.bool_(True),
        "denials": [{"code": "DAILY_LOSS_LIMIT", "loss": 0.052, "limit": 0.05}],
        7: "int key",
        "side": Side.SELL,
    }
    sig = _signal(stop_loss=float("nan"), take_profit=float("inf"), reasoning=reasoning)
    d = sig.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    assert d["stop_loss"] is None and d["take_profit"] is None
    assert d["reasoning"]["votes"] == {"trend_agent": None, "mean_revert_agent": 0.25, "n": 3}
    assert d["reasoning"]["rsi"] is None
    assert d["reasoning"]["levels"] == [1.0, None, None]
    assert d["reasoning"]["targets"] == [0.5, None]
    assert d["reasoning"]["flag"] is True and d["reasoning"]["7"] == "int key"
    assert type(d["reasoning"]["side"]) is str and type(d["side"]) is str
    assert sig.reasoning is reasoning  # held as given; only to_dict converts


def test_to_dict_rejects_reasoning_objects_without_a_json_form():
    with pytest.raises(TypeError, match=r"reasoning\.obj="):
        _signal(reasoning={"obj": object()}).to_dict()


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
), st.floats(), st.floats())
def test_to_dict_always_dumps_with_allow_nan_false(reasoning, stop, tp):
    stop = stop if (not math.isfinite(stop) or stop > 0) else None
    tp = tp if (not math.isfinite(tp) or tp > 0) else None
    json.dumps(_signal(reasoning={"r": reasoning}, stop_loss=stop, take_profit=tp).to_dict(), allow_nan=False)


def test_signals_round_trip_through_json():
    sig = _signal(reasoning={"sizing": {"kelly": 0.1, "vol_target": 0.5}, "denials": []})
    back = TacticalSignal.from_dict(json.loads(json.dumps(sig.to_dict(), allow_nan=False)))
    assert back == sig and back.signal_id == sig.signal_id


@pytest.mark.parametrize(("field", "value", "message"), [
    ("qty", float("nan"), "qty=nan: must be a finite number >= 0"),
    ("qty", float("inf"), "qty=inf"),
    ("qty", -1.0, "qty=-1.0"),
    ("qty", None, "qty=None"),
    ("confidence", float("nan"), "confidence=nan: must be a finite number in [0, 1]"),
    ("confidence", 1.5, "confidence=1.5"),
    ("consensus", float("-inf"), "consensus=-inf"),
    ("side", "long", "side='long': must be 'buy', 'sell' or 'hold'"),
    ("side", ["buy"], "side=['buy']"),
    ("symbol", "btcusdt", "symbol='btcusdt'"),
    ("stop_loss", 0.0, "stop_loss=0.0: must be > 0"),
    ("take_profit", -5.0, "take_profit=-5.0"),
    ("take_profit", "44000", "take_profit='44000': must be a price or None"),
    ("reasoning", None, "reasoning=None: must be a dict"),
    ("ts_ms", -60_000, "ts_ms=-60000"),
    ("ts_ms", 1.7e12, "ts_ms=1700000000000.0"),
    ("ts_ms", 1 << 63, f"ts_ms={1 << 63}: must be epoch milliseconds (an integer in [0, 2**63))"),
    ("ts_ms", True, "ts_ms=True"),
    ("signal_id", 5, "signal_id=5"),
])
def test_bad_signal_fields_raise_naming_the_field_and_value(field, value, message):
    with pytest.raises(InvalidInputError, match="^" + re.escape("invalid signal: " + message)):
        _signal(**{field: value})


def test_hold_means_zero_quantity_and_a_trade_a_positive_one():
    with pytest.raises(InvalidInputError, match="qty=0.5: must be 0 for a hold"):
        _signal(side="hold", qty=0.5)
    with pytest.raises(InvalidInputError, match="qty=0.0: must be 0 for a hold and > 0"):
        _signal(side="sell", qty=0.0)
    hold = TacticalSignal.hold("ETH/USDT", TS, {"reason": "warmup"})
    assert (hold.side, hold.qty, hold.stop_loss, hold.confidence) == (Side.HOLD, 0.0, None, 0.0)
    assert hold.to_dict()["reasoning"] == {"reason": "warmup"}


def test_signal_numbers_are_normalised_to_python_types():
    sig = _signal(qty=np.float64(0.5), confidence=np.float32(0.5), ts_ms=np.int64(TS), stop_loss=np.float64(1.0))
    assert type(sig.qty) is float and type(sig.confidence) is float and type(sig.ts_ms) is int
    assert type(sig.stop_loss) is float
    assert json.dumps(sig.to_dict(), allow_nan=False)


def test_signals_are_immutable_and_pickle():
    sig = _signal()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.qty = 1.0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(sig)) == sig


# ---------------------------------------------------------------------------------------
# signal ids


def test_signal_id_is_the_documented_blake2b_digest():
    data = b"l2fast-signal-v1|BTC/USDT|buy|" + struct.pack("<qddd", TS, 0.012, 41_500.0, 44_000.0)
    expected = hashlib.blake2b(data, digest_size=8).hexdigest()
    assert make_signal_id("BTC/USDT", TS, "buy", 0.012, 41_500.0, 44_000.0) == expected
    assert _signal().signal_id == expected
    assert re.fullmatch(r"[0-9a-f]{16}", expected)
    hold = b"l2fast-signal-v1|ETH/USDT|hold|" + struct.pack("<qddd", TS, 0.0, math.nan, math.nan)
    assert make_signal_id("ETH/USDT", TS, "hold", 0.0) == hashlib.blake2b(hold, digest_size=8).hexdigest()


def test_signal_ids_are_deterministic_across_calls_and_processes():
    import subprocess
    import sys

    code = ("from l2fast.signals import make_signal_id;"
            f"print(make_signal_id('ETH/USDT', {TS}, 'sell', 1.5, 2000.0, None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == make_signal_id("ETH/USDT", TS, "sell", 1.5, 2000.0, None)
    assert _signal().signal_id == _signal().signal_id
    assert make_signal_id("BTC/USDT", TS, Side.HOLD, -0.0) == make_signal_id("BTC/USDT", TS, "hold", 0.0)
    no_stop = make_signal_id("BTC/USDT", TS, "hold", 0.0)
    assert make_signal_id("BTC/USDT", TS, "hold", 0.0, float("nan"), -math.inf) == no_stop
    assert TacticalSignal.hold("BTC/USDT", TS, {}, stop_loss=math.nan).signal_id == no_stop


def test_signal_ids_differ_when_any_identifying_field_differs():
    base = dict(symbol="BTC/USDT", ts_ms=TS, side="buy", qty=0.012, stop_loss=41_500.0, take_profit=44_000.0)
    variants = [
        {}, {"symbol": "ETH/USDT"}, {"ts_ms": TS + 60_000}, {"side": "sell"}, {"qty": 0.013},
        {"qty": math.nextafter(0.012, 1.0)}, {"stop_loss": None}, {"stop_loss": 41_400.0},
        {"take_profit": None}, {"take_profit": 44_100.0}, {"stop_loss": 44_000.0, "take_profit": 41_500.0},
    ]
    ids = {make_signal_id(**{**base, **v}) for v in variants}
    assert len(ids) == len(variants)


def test_signal_ids_are_distinct_over_a_day_of_bars_and_symbols():
    ids = {make_signal_id(sym, TS + i * 60_000, "hold", 0.0)
           for sym in ("BTC/USDT", "ETH/USDT") for i in range(1440)}
    assert len(ids) == 2 * 1440


def test_an_explicit_signal_id_is_kept():
    assert _signal(signal_id="l1-replay-42").signal_id == "l1-replay-42"


def test_content_id_is_the_id_the_content_gives_whatever_signal_id_says():
    signal = _signal(signal_id="l1-replay-42")
    assert signal.content_id() == make_signal_id(signal.symbol, signal.ts_ms, signal.side.value, signal.qty,
                                                 signal.stop_loss, signal.take_profit)
    assert signal.content_id() == _signal().signal_id != signal.signal_id

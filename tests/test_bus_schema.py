"""The bus's wire schema: round trips, and every malformed envelope refused with its field."""

from __future__ import annotations

import json
import math
from enum import IntEnum
from fractions import Fraction
from types import MappingProxyType

import numpy as np
import pytest

from l2fast.bus.schema import (
    NO_META,
    SCHEMA_VERSION,
    Bar,
    Envelope,
    Fill,
    MessageError,
    MessageType,
    decode,
    encode,
    message_type,
)
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import InvalidBarError, InvalidInputError
from l2fast.signals import StrategicDecision, TacticalSignal, make_signal_id

BTC = "BTC/USDT"
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, on the minute grid

DECISION = StrategicDecision(regime="volatile", target_exposure=0.35, risk_appetite="conservative",
                             universe=("BTC/USDT", "ETH/USDT"), ts_ms=T0)
BAR = Bar(BTC, T0, 42_000.5, 42_100.25, 41_900.125, 42_050.0, 12.345678901234567)
FILL = Fill(BTC, "sell", 0.015, 42_049.99, T0 + 60_000, fee=0.6307498500000001)
ENTRY = TacticalSignal(BTC, "buy", 0.0123, 0.71, 0.66, 41_500.1, 43_000.7,
                       {"code": "ENTRY", "vote": {"scores": [0.1, 0.2], "members": {"ppo": "buy"}}}, T0)
HOLD = TacticalSignal.hold(BTC, T0, {"code": "WARM_UP", "bars": 12})


def strict_json(data: bytes) -> dict:
    """``data`` parsed by a parser that refuses NaN and Infinity (standard JSON)."""
    def refuse(literal: str) -> None:
        raise AssertionError(f"non-standard JSON literal {literal}")
    return json.loads(data, parse_constant=refuse)


def envelope(type_: str, payload: object, **extra: object) -> bytes:
    return json.dumps({"v": 1, "type": type_, "payload": payload, **extra}).encode()


def bar_payload(**changes: object) -> dict:
    payload = {"symbol": BTC, "ts_ms": T0, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5,
               "volume": 3.0}
    payload.update(changes)
    return payload


def fill_payload(**changes: object) -> dict:
    payload = {"symbol": BTC, "side": "buy", "qty": 0.5, "price": 100.0, "ts_ms": T0, "fee": 0.05}
    payload.update(changes)
    return payload


def decision_payload(**changes: object) -> dict:
    payload = {"regime": "trending", "target_exposure": 0.5, "risk_appetite": "moderate", "universe": [BTC]}
    payload.update(changes)
    return payload


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("message", [DECISION, BAR, FILL, ENTRY, HOLD],
                         ids=["decision", "bar", "fill", "entry", "hold"])
def test_every_message_type_round_trips_to_an_equal_message(message):
    decoded = decode(encode(message))
    assert decoded.message == message
    assert decoded.message.to_dict() == message.to_dict()
    assert decoded.meta == {}


@pytest.mark.parametrize(("message", "type_"), [(DECISION, "decision"), (BAR, "bar"), (FILL, "fill"),
                                                (ENTRY, "signal")])
def test_the_envelope_is_standard_json_with_version_type_and_payload(message, type_):
    data = strict_json(encode(message))
    assert data == {"v": 1, "type": type_, "payload": message.to_dict()}
    assert SCHEMA_VERSION == 1 and message_type(message) is MessageType(type_)


def test_floats_round_trip_bit_for_bit():
    awkward = [0.1 + 0.2, 1e-300, 123456.78901234567, math.nextafter(42_000.0, math.inf)]
    for x in awkward:
        bar = Bar(BTC, T0, x, x * 2, x / 2, x, x)
        back = decode(encode(bar)).message
        assert [v.hex() for v in (back.open, back.high, back.low, back.close, back.volume)] == \
               [v.hex() for v in (x, x * 2, x / 2, x, x)]


def test_meta_travels_with_the_message():
    decoded = decode(encode(ENTRY, {"age_ms": 12, "stale": True}))
    assert decoded.message == ENTRY and decoded.meta == {"age_ms": 12, "stale": True}


def test_an_engine_signal_round_trips(btc_1m_head):
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(DECISION)
    bars = {k: v[:50].tolist() for k, v in btc_1m_head.items()}
    for row in zip(bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"]):
        signal = gen.on_bar(BTC, *row)
        assert decode(encode(signal)).message.to_dict() == signal.to_dict()


class _Level(IntEnum):
    HIGH = 2


def test_a_reasoning_is_written_as_to_dict_converts_it():
    # The encoder converts the reasoning itself (not through to_dict): every kind of value
    # to_dict converts must come out as to_dict writes it.
    reasoning = {
        "nan": math.nan, "inf": -math.inf, "tuple": (1, 2.5, (math.inf,)), 7: "int key",
        "np": {"f64": np.float64(0.25), "f32": np.float32(1.5), "i64": np.int64(-3), "bool": np.bool_(True),
               "array": np.array([1.0, np.nan, 3.0]), "nan64": np.float64("nan")},
        "proxy": MappingProxyType({"a": 1}), "enum": _Level.HIGH, "fraction": Fraction(1, 4),
        "nested": [{"deep": [None, True, "x"]}],
    }
    signal = TacticalSignal.hold(BTC, T0, reasoning)
    payload = strict_json(encode(signal))["payload"]
    assert payload == signal.to_dict()
    assert payload["reasoning"]["np"]["array"] == [1.0, None, 3.0]
    assert payload["reasoning"]["7"] == "int key"


def test_a_reasoning_value_with_no_json_form_is_refused():
    with pytest.raises(TypeError, match="object"):
        encode(TacticalSignal.hold(BTC, T0, {"bad": object()}))


def test_decoding_accepts_text_as_well_as_bytes():
    assert decode(encode(BAR).decode()).message == BAR


# ------------------------------------------------------------------ construction


def test_bar_and_fill_store_plain_python_numbers():
    bar = Bar(BTC, np.int64(T0), np.float64(1.0), 2, np.float32(0.5), 1.5, 0)
    fill = Fill(BTC, "buy", np.float64(1.0), 2, np.int64(T0))
    assert [type(x) for x in (bar.ts_ms, bar.open, bar.high, bar.low, bar.volume)] == [int, float, float, float, float]
    assert [type(x) for x in (fill.qty, fill.price, fill.ts_ms, fill.fee)] == [float, float, int, float]


# Every bar the engine must refuse on its own, with the field it names ("ts" there is
# "ts_ms" here).
BAD_BARS = [
    ("ts_ms", dict(ts_ms=T0 + 1)),
    ("ts_ms", dict(ts_ms=-60_000)),
    ("ts_ms", dict(ts_ms=float(T0))),
    ("open", dict(open=float("nan"))),
    ("high", dict(high=float("inf"))),
    ("low", dict(low=0.0)),
    ("close", dict(close=-1.0)),
    ("volume", dict(volume=-0.5)),
    ("volume", dict(volume=float("nan"))),
    ("high", dict(high=100.2)),
    ("low", dict(low=100.1)),
    ("open", dict(open="100.0")),
    ("close", dict(close=True)),
]


@pytest.mark.parametrize(("field", "changes"), BAD_BARS)
def test_a_bar_is_refused_where_the_engine_refuses_it(field, changes):
    fields = bar_payload(**changes)
    with pytest.raises(InvalidBarError) as ours:
        Bar(**fields)
    assert ours.value.field == field
    gen = TacticalSignalGenerator()
    with pytest.raises(InvalidBarError) as engine:
        gen.on_bar(fields["symbol"], fields["ts_ms"], fields["open"], fields["high"], fields["low"],
                   fields["close"], fields["volume"])
    assert {"ts": "ts_ms"}.get(engine.value.field, engine.value.field) == field


@pytest.mark.parametrize(("field", "changes"), [
    ("side", dict(side="long")), ("side", dict(side=1)), ("qty", dict(qty=0.0)), ("qty", dict(qty=float("inf"))),
    ("price", dict(price=-1.0)), ("price", dict(price="100")), ("fee", dict(fee=-0.01)),
    ("ts_ms", dict(ts_ms=-1)), ("ts_ms", dict(ts_ms=1.5)), ("symbol", dict(symbol="btc/usdt")),
])
def test_a_fill_is_refused_naming_its_field(field, changes):
    with pytest.raises(MessageError) as exc:
        Fill(**fill_payload(**changes))
    assert exc.value.field == field
    assert isinstance(exc.value, InvalidInputError) and isinstance(exc.value, ValueError)


def test_encode_refuses_what_is_not_a_message_and_meta_it_would_not_read():
    with pytest.raises(TypeError, match="not a bus message"):
        encode({"symbol": BTC})
    with pytest.raises(MessageError) as exc:
        encode(BAR, {"colour": "red"})
    assert exc.value.field == "meta.colour"


# ------------------------------------------------------------------ malformed envelopes


MALFORMED = [
    # envelope
    ("envelope", b"{not json"),
    ("envelope", b"\xff\xfe\x00garbage"),
    ("envelope", b"[1, 2]"),
    ("envelope", b""),
    ("v", json.dumps({"type": "bar", "payload": bar_payload()}).encode()),
    ("v", envelope("bar", bar_payload()).replace(b'"v": 1', b'"v": "1"')),
    ("v", envelope("bar", bar_payload()).replace(b'"v": 1', b'"v": true')),
    ("v", envelope("bar", bar_payload()).replace(b'"v": 1', b'"v": 2')),
    ("type", envelope("candle", bar_payload())),
    ("type", json.dumps({"v": 1, "payload": bar_payload()}).encode()),
    ("payload", envelope("bar", [1, 2])),
    ("payload", json.dumps({"v": 1, "type": "bar"}).encode()),
    ("extra", envelope("bar", bar_payload(), extra=1)),
    ("meta", envelope("bar", bar_payload(), meta=[1])),
    ("meta.colour", envelope("bar", bar_payload(), meta={"colour": "red"})),
    ("meta.stale", envelope("bar", bar_payload(), meta={"stale": "yes"})),
    ("meta.age_ms", envelope("bar", bar_payload(), meta={"age_ms": -1})),
    # bar
    ("payload.volume", envelope("bar", {k: v for k, v in bar_payload().items() if k != "volume"})),
    ("payload.vwap", envelope("bar", bar_payload(vwap=100.0))),
    ("payload.open", envelope("bar", bar_payload(open=float("nan")))),
    ("payload.close", envelope("bar", bar_payload(close=float("inf")))),
    ("payload.high", envelope("bar", bar_payload(high=100.0))),
    ("payload.low", envelope("bar", bar_payload(low=100.2))),
    ("payload.ts_ms", envelope("bar", bar_payload(ts_ms=T0 + 30_000))),
    ("payload.ts_ms", envelope("bar", bar_payload(ts_ms=None))),
    ("payload.symbol", envelope("bar", bar_payload(symbol="BTCUSDT"))),
    ("payload.open", envelope("bar", bar_payload(open="100"))),
    # fill
    ("payload.side", envelope("fill", fill_payload(side="long"))),
    ("payload.qty", envelope("fill", fill_payload(qty=0))),
    ("payload.price", envelope("fill", {k: v for k, v in fill_payload().items() if k != "price"})),
    ("payload.fee", envelope("fill", fill_payload(fee=float("-inf")))),
    ("payload.ts_ms", envelope("fill", fill_payload(ts_ms=-5))),
    ("payload.order_id", envelope("fill", fill_payload(order_id="x"))),
    # decision
    ("payload.regime", envelope("decision", decision_payload(regime="bullish"))),
    ("payload.target_exposure", envelope("decision", decision_payload(target_exposure=1.5))),
    ("payload.risk_appetite", envelope("decision", {k: v for k, v in decision_payload().items()
                                                    if k != "risk_appetite"})),
    ("payload.universe", envelope("decision", decision_payload(universe=BTC))),
    ("payload.universe", envelope("decision", decision_payload(universe=[BTC, BTC]))),
    ("payload.leverage", envelope("decision", decision_payload(leverage=3))),
    # signal
    ("payload.signal_id", envelope("signal", {**ENTRY.to_dict(), "qty": 0.0124})),
    ("payload.signal_id", envelope("signal", {**ENTRY.to_dict(), "signal_id": "0" * 16})),
    ("payload.signal_id", envelope("signal", {k: v for k, v in ENTRY.to_dict().items() if k != "signal_id"})),
    ("payload.qty", envelope("signal", {**HOLD.to_dict(), "qty": 1.0})),
    ("payload.confidence", envelope("signal", {**ENTRY.to_dict(), "confidence": 1.5})),
    ("payload.side", envelope("signal", {**ENTRY.to_dict(), "side": "short"})),
    ("payload.urgency", envelope("signal", {**ENTRY.to_dict(), "urgency": 1})),
    ("payload.reasoning.vote.scores[1]",
     envelope("signal", {**ENTRY.to_dict(), "reasoning": {"vote": {"scores": [0.1, float("nan")]}}})),
]


@pytest.mark.parametrize(("field", "data"), MALFORMED, ids=[f"{k}-{f}" for k, (f, _) in enumerate(MALFORMED)])
def test_a_malformed_envelope_is_refused_naming_the_field(field, data):
    with pytest.raises(MessageError) as exc:
        decode(data)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"invalid message: {field}=")


def test_the_valid_envelopes_the_malformed_ones_were_made_from_decode():
    # Guards the table above: each case fails for its own change, not for a broken base.
    assert decode(envelope("bar", bar_payload())).message == Bar(**bar_payload())
    assert decode(envelope("fill", fill_payload())).message == Fill(**fill_payload())
    assert decode(envelope("decision", decision_payload())).message == StrategicDecision(**decision_payload())
    assert decode(envelope("signal", ENTRY.to_dict(), meta={"stale": False, "age_ms": 0})) == \
        Envelope(ENTRY, {"stale": False, "age_ms": 0})


def test_a_huge_malformed_value_is_shortened_in_the_message():
    with pytest.raises(MessageError) as exc:
        decode(b"x" * 100_000)
    assert len(str(exc.value)) < 400 and len(exc.value.value) == 100_000


def test_the_signal_id_check_is_the_documented_hash():
    # The id decode expects is make_signal_id over the documented fields, so a signal
    # built by anyone from those fields passes.
    sid = make_signal_id(BTC, T0, "sell", 0.5, 40_000.0, None)
    data = {"symbol": BTC, "side": "sell", "qty": 0.5, "confidence": 0.8, "consensus": 0.7,
            "stop_loss": 40_000.0, "take_profit": None, "reasoning": {}, "ts_ms": T0, "signal_id": sid}
    assert decode(envelope("signal", data)).message.signal_id == sid


def test_an_envelope_without_meta_has_the_shared_empty_meta():
    assert decode(encode(BAR)).meta is NO_META


# ------------------------------------------------------------------ numbers out of range

HUGE = 10 ** 400
NUMERIC_FIELDS = ([("bar", bar_payload, f) for f in ("ts_ms", "open", "high", "low", "close", "volume")]
                  + [("fill", fill_payload, f) for f in ("qty", "price", "ts_ms", "fee")]
                  + [("decision", decision_payload, f) for f in ("target_exposure", "ts_ms")])


# A price or quantity of 2**63 is a finite float, in range for the schema; a time or an
# exposure is not.
VALUES = {"10**400": HUGE, "-10**400": -HUGE, "2**63": 1 << 63, "2**64": 1 << 64}
OUT_OF_RANGE = [(f"{t}-{f}-{name}", t, p, f, v) for t, p, f in NUMERIC_FIELDS for name, v in VALUES.items()
                if f in ("ts_ms", "target_exposure") or abs(v) == HUGE]


@pytest.mark.parametrize(("type_", "payload", "field", "value"), [case[1:] for case in OUT_OF_RANGE],
                         ids=[case[0] for case in OUT_OF_RANGE])
def test_an_integer_out_of_range_in_any_numeric_field_is_a_message_error(type_, payload, field, value):
    with pytest.raises(MessageError) as exc:
        decode(envelope(type_, payload(**{field: value})))
    assert exc.value.field == f"payload.{field}"


@pytest.mark.parametrize("field", ["open", "high", "low", "close", "volume"])
def test_a_bar_built_with_a_huge_integer_is_refused_naming_it(field):
    with pytest.raises(InvalidBarError) as exc:
        Bar(**bar_payload(**{field: HUGE}))
    assert exc.value.field == field


@pytest.mark.parametrize("field", ["qty", "price", "fee"])
def test_a_fill_built_with_a_huge_number_is_refused_naming_it(field):
    for value in (HUGE, Fraction(HUGE, 3)):
        with pytest.raises(MessageError) as exc:
            Fill(**fill_payload(**{field: value}))
        assert exc.value.field == field


def test_an_integer_too_long_to_print_is_refused_without_printing_it():
    # Python refuses to convert integers of more than 4,300 digits to text: the error
    # must not try to.
    with pytest.raises(InvalidBarError):
        Bar(**bar_payload(ts_ms=10 ** 5000))
    with pytest.raises(MessageError, match="digits"):
        Fill(**fill_payload(qty=10 ** 5000))


def test_deep_nesting_is_a_message_error():
    deep = b'{"v": 1, "type": "bar", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MessageError):
        decode(deep)
    with pytest.raises(MessageError):
        decode(b'{"v": 1, "type": "bar", "payload": {"open": ' + b"[" * 2_000 + b"NaN" + b"]" * 2_000 + b"}}")

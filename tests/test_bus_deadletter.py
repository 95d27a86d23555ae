"""Poison messages: whatever one message does, the worker records it as a dead letter and goes on.

Every message the adapter skips (malformed, refused by the engine, or raising an error of
any other type while handled) is written to the transport's dead-letter record with the
original data, the error and where it came from, acknowledged and counted; the next
message is handled as if nothing happened. Run on both transports (Redis: a real
``redis-server``, skipped when it is not installed).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REDIS_SERVER, drive, in_process

from l2fast.bus import Bar, InProcessTransport, L2BusAdapter, Topic, decode
from l2fast.bus.bus import DEFAULT_POLICIES
from l2fast.bus.transport import DEAD_LETTERS
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import InvalidDecisionError
from l2fast.signals import StrategicDecision

BTC, ETH = "BTC/USDT", "ETH/USDT"
T0 = 1_704_067_200_000
MINUTE = 60_000
DECISION = StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate", universe=(BTC,))
HUGE = 10 ** 400


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def bar(k: int, symbol: str = BTC) -> Bar:
    price = 100.0 + k
    return Bar(symbol, T0 + k * MINUTE, price, price + 1.0, price - 1.0, price + 0.5, 1.0 + k)


def envelope(kind: str, payload: dict[str, Any]) -> bytes:
    # The standard library writes any integer, however long (orjson refuses past 64 bits).
    return json.dumps({"v": 1, "type": kind, "payload": payload}).encode()


def poisoned(kind: str, field: str, value: Any) -> bytes:
    payload: dict[str, Any]
    if kind == "bar":
        payload = bar(0).to_dict()
    elif kind == "fill":
        payload = {"symbol": BTC, "side": "buy", "qty": 0.1, "price": 100.0, "ts_ms": T0, "fee": 0.0}
    else:
        payload = DECISION.to_dict()
    payload[field] = value
    return envelope(kind, payload)


TOPIC_OF = {"bar": Topic.BARS, "fill": Topic.FILLS, "decision": Topic.DECISIONS}
NUMERIC_FIELDS = [("bar", f) for f in ("ts_ms", "open", "high", "low", "close", "volume")] + [
    ("fill", f) for f in ("qty", "price", "ts_ms", "fee")] + [("decision", f) for f in ("target_exposure", "ts_ms")]


# ------------------------------------------------------------------ in-process


@pytest.mark.parametrize(("kind", "field"), NUMERIC_FIELDS)
def test_a_400_digit_integer_in_any_numeric_field_is_a_dead_letter_and_the_worker_goes_on(kind, field):
    poison = poisoned(kind, field, HUGE)
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (TOPIC_OF[kind], poison), (Topic.BARS, bar(1))]
    got, adapter, dead = run(drive(in_process(), inputs, expected_signals=2))
    assert [r.message.ts_ms for r in got] == [T0, T0 + MINUTE]
    assert adapter.stats.bars == 2 and adapter.stats.malformed == 1
    [record] = dead
    assert record["topic"] == TOPIC_OF[kind] and record["kind"] == "malformed"
    assert record["error_type"] == "MessageError" and f"payload.{field}" in record["error"]
    assert record["d"].encode("utf-8", "surrogateescape") == poison
    assert record["group"] == "l2" and record["consumer"] == "w1" and record["id"]


def test_a_decision_at_2_to_the_63_is_refused_whole_and_the_next_bar_is_handled():
    poison = poisoned("decision", "ts_ms", 2 ** 63).replace(b'["BTC/USDT"]', b'["BTC/USDT", "ETH/USDT"]')
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (Topic.DECISIONS, poison), (Topic.BARS, bar(1))]
    gen = TacticalSignalGenerator()
    got, adapter, dead = run(drive(in_process(), inputs, expected_signals=2, generator=gen))
    assert len(got) == 2 and adapter.stats.decisions == 1
    assert gen.symbols == (BTC,) and gen.decision == DECISION
    [record] = dead
    assert record["kind"] == "malformed" and "payload.ts_ms" in record["error"]


class Flaky:
    """An engine whose ``on_bar`` raises an unexpected error once, on the bar at ``ts_ms``."""

    def __init__(self, ts_ms: int) -> None:
        self.gen = TacticalSignalGenerator()
        self.ts_ms = ts_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gen, name)

    def on_bar(self, symbol: str, ts_ms: int, *args: float) -> Any:
        if ts_ms == self.ts_ms:
            self.ts_ms = -1
            raise RuntimeError("boom: a bug while handling this bar")
        return self.gen.on_bar(symbol, ts_ms, *args)


def test_an_error_of_an_unexpected_type_is_a_dead_letter_and_the_worker_goes_on():
    flaky = Flaky(T0 + MINUTE)
    inputs = [(Topic.DECISIONS, DECISION)] + [(Topic.BARS, bar(k)) for k in range(4)]
    got, adapter, dead = run(drive(in_process(), inputs, expected_signals=3, generator=flaky))
    assert [r.message.ts_ms for r in got] == [T0, T0 + 2 * MINUTE, T0 + 3 * MINUTE]
    stats = adapter.stats
    assert (stats.bars, stats.dead, stats.malformed, stats.refused) == (3, 1, 0, 0)
    assert "boom" in stats.last_rejection
    [record] = dead
    assert record["kind"] == "dead" and record["error_type"] == "RuntimeError" and "boom" in record["error"]
    assert record["topic"] == Topic.BARS and decode(record["d"]).message == bar(1)


def test_refused_and_malformed_messages_are_dead_letters_too():
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (Topic.BARS, b"\x00garbage\xff"),
              (Topic.BARS, bar(0)), (Topic.BARS, bar(1))]
    got, adapter, dead = run(drive(in_process(), inputs, expected_signals=2))
    assert [r["kind"] for r in dead] == ["malformed", "refused"]
    assert dead[0]["d"].encode("utf-8", "surrogateescape") == b"\x00garbage\xff"
    assert "duplicate" in dead[1]["error"] and decode(dead[1]["d"]).message == bar(0)
    assert adapter.stats.malformed == adapter.stats.refused == 1


def test_the_in_process_dead_letters_are_bounded():
    transport = InProcessTransport(DEFAULT_POLICIES, dead_letter_maxlen=3)
    inputs = [(Topic.BARS, f"bad {k}".encode()) for k in range(5)] + [(Topic.BARS, bar(0))]
    _, _, dead = run(drive(transport, inputs, expected_signals=1))
    assert [r["d"] for r in dead] == ["bad 2", "bad 3", "bad 4"]


# ------------------------------------------------------------------ the engine never half-applies


def test_a_decision_with_an_overflowing_ts_ms_leaves_the_engine_as_it_was():
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(DECISION)
    gen.on_bar(BTC, T0, 100.0, 101.0, 99.0, 100.5, 1.0)
    before = (gen.symbols, gen.decision, gen.export_state().core)
    for ts_ms in (2 ** 63, 2 ** 64, HUGE):
        with pytest.raises(InvalidDecisionError, match="ts_ms"):
            gen.on_strategic_decision({**DECISION.to_dict(), "universe": [BTC, ETH], "ts_ms": ts_ms,
                                       "target_exposure": 1.0})
    assert (gen.symbols, gen.decision, gen.export_state().core) == before


# ------------------------------------------------------------------ fuzz

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 600), max_value=10 ** 600)
    | st.floats() | st.text(max_size=12) | st.sampled_from([BTC, "buy", "sell", "trending", "moderate"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)

TEMPLATES = {"bar": bar(0).to_dict(), "decision": DECISION.to_dict(),
             "fill": {"symbol": BTC, "side": "buy", "qty": 0.1, "price": 100.0, "ts_ms": T0, "fee": 0.0}}


@st.composite
def envelopes(draw: st.DrawFn) -> bytes | str:
    kind = draw(st.sampled_from(sorted(TEMPLATES)))
    payload: Any = dict(TEMPLATES[kind])
    for key in draw(st.lists(st.sampled_from([*payload, "extra"]), max_size=3)):
        payload[key] = draw(JSONISH)
    if draw(st.booleans()):
        payload = draw(JSONISH)
    obj: Any = {"v": draw(st.sampled_from([1, 1, 1, 2, True, 1.0])), "type": draw(
        st.sampled_from([kind, kind, "signal", "bar", 7])), "payload": payload}
    if draw(st.booleans()):
        obj["meta"] = draw(JSONISH)
    if draw(st.integers(0, 9)) == 0:
        obj = draw(JSONISH)
    text = json.dumps(obj, allow_nan=True)  # NaN/Infinity literals too
    return text if draw(st.booleans()) else text.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(st.sampled_from([Topic.DECISIONS, Topic.BARS, Topic.FILLS]), envelopes()),
                      min_size=1, max_size=4))
def test_no_envelope_makes_the_worker_raise(items):
    # Whatever came before, a bar of a symbol the envelopes never name is answered.
    last = Bar("ZZZ/USDT", T0, 100.0, 101.0, 99.0, 100.5, 1.0)
    inputs = [*items, (Topic.BARS, last)]
    got, adapter, dead = run(drive(in_process(), inputs, until=last.symbol))
    assert got[-1].message.ts_ms == last.ts_ms
    stats = adapter.stats
    handled = stats.decisions + stats.fills + stats.bars + stats.malformed + stats.refused + stats.dead
    assert handled == len(inputs) and len(dead) == stats.malformed + stats.refused + stats.dead


# ------------------------------------------------------------------ Redis

needs_redis = pytest.mark.skipif(REDIS_SERVER is None,
                                 reason="redis-server is not installed (Debian: apt-get install redis-server)")


def redis_transport(url: str, **kwargs: Any) -> Any:
    from l2fast.bus.redis import RedisTransport

    return RedisTransport(url, prefix=f"t{uuid.uuid4().hex[:8]}:", **kwargs)


@needs_redis
@pytest.mark.parametrize(("kind", "field"), [("bar", "open"), ("fill", "qty"), ("decision", "ts_ms"),
                                             ("decision", "target_exposure")])
def test_redis_a_poison_entry_is_a_dead_letter_acknowledged_and_the_worker_goes_on(redis_url, kind, field):
    t = redis_transport(redis_url)
    poison = poisoned(kind, field, 2 ** 63 if field == "ts_ms" else HUGE)
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (TOPIC_OF[kind], poison), (Topic.BARS, bar(1))]

    async def main() -> tuple[list, L2BusAdapter, list, int, list]:
        got, adapter, dead = await drive(t, inputs, expected_signals=2)
        t2 = redis_transport(redis_url)
        t2.prefix = t.prefix
        pending = (await t2.client.xpending(t2.key(TOPIC_OF[kind]), "l2"))["pending"]
        raw = await t2.client.xrange(t2.prefix + DEAD_LETTERS)
        await t2.close()
        return got, adapter, dead, pending, raw

    got, adapter, dead, pending, raw = run(main())
    assert [r.message.ts_ms for r in got] == [T0, T0 + MINUTE]
    assert adapter.stats.malformed == 1 and pending == 0
    [record] = dead
    assert record["kind"] == "malformed" and f"payload.{field}" in record["error"]
    assert record["topic"] == TOPIC_OF[kind] and record["stream"] == t.key(TOPIC_OF[kind])
    [(_, fields)] = raw
    assert fields[b"d"] == poison  # the original entry's data, byte for byte


@needs_redis
def test_redis_an_error_of_an_unexpected_type_is_a_dead_letter_and_the_worker_goes_on(redis_url):
    t = redis_transport(redis_url)
    inputs = [(Topic.DECISIONS, DECISION)] + [(Topic.BARS, bar(k)) for k in range(4)]
    got, adapter, dead = run(drive(t, inputs, expected_signals=3, generator=Flaky(T0 + MINUTE)))
    assert [r.message.ts_ms for r in got] == [T0, T0 + 2 * MINUTE, T0 + 3 * MINUTE]
    assert adapter.stats.dead == 1
    [record] = dead
    assert record["kind"] == "dead" and record["error_type"] == "RuntimeError"
    assert decode(record["d"].encode("utf-8", "surrogateescape")).message == bar(1)


@needs_redis
def test_redis_dead_letters_are_bounded(redis_url):
    t = redis_transport(redis_url, dead_letter_maxlen=3)
    inputs = [(Topic.BARS, f"bad {k}".encode()) for k in range(5)] + [(Topic.BARS, bar(0))]
    _, _, dead = run(drive(t, inputs, expected_signals=1))
    assert [r["d"] for r in dead] == ["bad 2", "bad 3", "bad 4"]


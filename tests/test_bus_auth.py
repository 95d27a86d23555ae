"""Bus message authentication (issue 16 item 1): a bus with a key signs every message it
publishes and refuses whatever is not signed with it for its topic.

Before, anyone who could write to Redis could install a decision, feed a bar, book a fill
or hand L1 a signal with a valid (unkeyed) ``signal_id``. With a key, each forgery (not
signed, signed with another key, the tag of another message, a tag made for another
topic, a signed message of another topic, a truncated tag, one byte altered) is refused
before it is decoded: counted as ``unauthenticated``, written to the dead letters and
acknowledged, and the next genuine message is handled as if nothing happened. Genuine
signed traffic gives the signals of a bus without a key. In-process and on a real
``redis-server`` (skipped when it is not installed).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import fields, replace
from typing import Any

import pytest
import support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REDIS_SERVER, bus_key_file, bus_signer, exit_code, in_process

from l2fast.bus import AdapterStats, Bar, Fill, L2BusAdapter, MessageBus, Topic, decode, encode
from l2fast.bus.schema import SIGNED_PREFIX, UnauthenticatedError, open_signed, sign
from l2fast.bus.tools import ReaderStats, collect_signals
from l2fast.bus.transport import QueuePolicy, Transport
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.evaluation.replay import demo_config
from l2fast.keys import TAG_CHARS, Purpose, Signer
from l2fast.ops.monitoring import ADAPTER_KINDS
from l2fast.signals import StrategicDecision, TacticalSignal

BTC, ETH = "BTC/USDT", "ETH/USDT"
T0 = 1_704_067_200_000
MINUTE = 60_000
KEY = bus_signer()
OTHER = Signer(b"another key, just as long as it!", Purpose.BUS)
HEAD = len(SIGNED_PREFIX) + TAG_CHARS + 1  # "sig1:" + tag + ":"
DECISION = StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate", universe=(BTC,))


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def bar(k: int, symbol: str = BTC, volume: float | None = None) -> Bar:
    price = 100.0 + k
    volume = 1.0 + k if volume is None else volume
    return Bar(symbol, T0 + k * MINUTE, price, price + 1.0, price - 1.0, price + 0.5, volume)


def signal(qty: float = 0.01, confidence: float = 0.8, ts_ms: int = T0 + MINUTE) -> TacticalSignal:
    return TacticalSignal(BTC, "buy", qty, confidence, 0.9, 95.0, 110.0, {"code": "ENTRY"}, ts_ms)


class Case:
    """What forgeries of one topic start from.

    Attributes:
        topic: Where they are published.
        genuine: A genuine message of the topic, whose signed form lends its tag.
        altered: ``genuine`` with one byte of its envelope changed (still a valid message).
        forged: What an attacker wants applied (a valid message of the topic).
        elsewhere: A genuine message of another topic, signed for that topic.
    """

    def __init__(self, topic: Topic, genuine: Any, altered: Any, forged: Any, elsewhere: tuple[Topic, Any]) -> None:
        self.topic, self.genuine, self.altered, self.forged, self.elsewhere = topic, genuine, altered, forged, elsewhere


CASES = {
    "decision": Case(Topic.DECISIONS, DECISION, replace(DECISION, target_exposure=0.9),
                     StrategicDecision(regime="trending", target_exposure=1.0, risk_appetite="aggressive",
                                       universe=(BTC, ETH)),
                     (Topic.BARS, bar(1))),
    "bar": Case(Topic.BARS, bar(1), bar(1, volume=9.0), Bar(BTC, T0 + MINUTE, 500.0, 501.0, 499.0, 500.5, 1.0),
                (Topic.DECISIONS, DECISION)),
    "fill": Case(Topic.FILLS, Fill(BTC, "buy", 0.1, 100.0, T0 + MINUTE), Fill(BTC, "buy", 0.9, 100.0, T0 + MINUTE),
                 Fill(BTC, "buy", 50.0, 100.0, T0 + MINUTE), (Topic.BARS, bar(1))),
    "signal": Case(Topic.SIGNALS, signal(), signal(confidence=0.9), signal(qty=1000.0), (Topic.FILLS,
                   Fill(BTC, "buy", 0.1, 100.0, T0 + MINUTE))),
}
VARIANTS = ("not signed", "another key", "the tag of another message", "a tag made for another topic",
            "a signed message of another topic", "a truncated tag", "one byte altered")


def forgery(case: Case, variant: str) -> bytes:
    """The bytes an attacker writes to ``case.topic``'s stream."""
    genuine = sign(KEY, case.topic, encode(case.genuine))
    forged = encode(case.forged)
    other_topic = case.elsewhere[0]
    if variant == "not signed":
        return forged
    if variant == "another key":
        return sign(OTHER, case.topic, forged)
    if variant == "the tag of another message":
        return genuine[:HEAD] + forged
    if variant == "a tag made for another topic":
        return sign(KEY, other_topic, forged)
    if variant == "a signed message of another topic":
        return sign(KEY, other_topic, encode(case.elsewhere[1]))
    if variant == "a truncated tag":
        return genuine[:HEAD - 3] + b":" + genuine[HEAD:]
    assert variant == "one byte altered"
    altered = encode(case.altered)
    assert len(altered) == len(genuine) - HEAD and sum(a != b for a, b in zip(altered, genuine[HEAD:])) == 1
    return genuine[:HEAD] + altered


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_forgery_would_be_a_valid_message_to_a_bus_without_a_key(kind):
    # So that the refusals below are the key's doing, not the schema's.
    case = CASES[kind]
    for variant in VARIANTS:
        data = forgery(case, variant)
        if variant == "a signed message of another topic":
            assert decode(open_signed(data, case.elsewhere[0], KEY)).message == case.elsewhere[1]
        elif variant != "a truncated tag":
            assert type(decode(open_signed(data, case.topic, None)).message) is type(case.genuine), variant
        with pytest.raises(UnauthenticatedError):
            open_signed(data, case.topic, KEY)
    genuine = sign(KEY, case.topic, encode(case.genuine))
    assert decode(open_signed(genuine, case.topic, KEY)).message == case.genuine


def drive(transport: Transport, inputs: Sequence[tuple[str, Any]], *, signer: Signer | None = KEY,
          **options: Any) -> Coroutine[Any, Any, tuple[list[Any], L2BusAdapter, list[dict[str, str]]]]:
    """:func:`support.drive` on a bus with the key unless told otherwise."""
    return support.drive(transport, inputs, signer=signer, **options)


def reference(messages: Sequence[Any]) -> tuple[list[dict[str, Any]], TacticalSignalGenerator]:
    """The signals and engine of ``messages`` fed to an engine directly."""
    gen = TacticalSignalGenerator()
    out = []
    for m in messages:
        if isinstance(m, StrategicDecision):
            gen.on_strategic_decision(m)
        else:
            out.append(gen.on_bar(m.symbol, m.ts_ms, m.open, m.high, m.low, m.close, m.volume).to_dict())
    return out, gen


# ------------------------------------------------------------------ the worker's inputs, in-process


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["decision", "bar", "fill"])
def test_a_forged_input_is_refused_counted_dead_lettered_and_the_next_genuine_message_is_handled(kind, variant):
    case = CASES[kind]
    data = forgery(case, variant)
    gen = TacticalSignalGenerator()
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (case.topic, data), (Topic.BARS, bar(1))]
    got, adapter, dead = run(drive(in_process(), inputs, expected_signals=2, generator=gen))
    expected, ref = reference([DECISION, bar(0), bar(1)])
    assert [r.message.to_dict() for r in got] == expected
    assert gen.decision == DECISION and gen.symbols == (BTC,)
    assert gen.export_state().core == ref.export_state().core  # nothing of the forgery was applied
    stats = adapter.stats
    assert (stats.unauthenticated, stats.malformed, stats.refused, stats.dead) == (1, 0, 0, 0)
    assert (stats.decisions, stats.fills, stats.bars) == (1, 0, 2)
    assert stats.rejected_by_topic == {case.topic: 1}
    [record] = dead
    assert record["kind"] == "unauthenticated" and record["error_type"] == "UnauthenticatedError"
    assert record["topic"] == case.topic and record["consumer"] == "w1"
    assert record["d"].encode("utf-8", "surrogateescape") == data


def test_without_a_key_the_worker_applies_what_it_is_given():
    # The finding: a forged decision is installed by a bus that authenticates nothing.
    data = forgery(CASES["decision"], "not signed")
    gen = TacticalSignalGenerator()
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (Topic.DECISIONS, data), (Topic.BARS, bar(1))]
    run(drive(in_process(), inputs, signer=None, expected_signals=2, generator=gen))
    assert gen.decision == CASES["decision"].forged


def test_a_signed_bus_publishes_the_signed_form_on_every_transport():
    async def main() -> list[Any]:
        transport = in_process()
        bus = MessageBus(transport, signer=KEY)
        sub = await transport.subscribe([Topic.BARS, Topic.DECISIONS], group="g", consumer="c")
        await bus.publish(Topic.DECISIONS, DECISION)
        await bus.publish_many(Topic.BARS, [bar(0), bar(1)])
        items = [(await sub.get()).data for _ in range(3)]
        await bus.close()
        return items

    items = run(main())
    topics = [Topic.DECISIONS, Topic.BARS, Topic.BARS]
    assert [decode(open_signed(d, t, KEY)).message for d, t in zip(items, topics)] == [DECISION, bar(0), bar(1)]
    assert all(d.startswith(SIGNED_PREFIX) for d in items)


# ------------------------------------------------------------------ the signals reader


async def read_signals(transport: Transport, genuine: Sequence[TacticalSignal], raw: Sequence[bytes], *,
                       signer: Signer | None = KEY) -> tuple[list[dict[str, Any]], ReaderStats, list[dict[str, str]]]:
    """Publish the raw bytes between the genuine signals; collect_signals on a bus with ``signer``."""
    bus = MessageBus(transport, signer=signer)
    subscription = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="l1-0")
    await subscription.close()  # the group exists: it gets everything published from now on
    await bus.publish(Topic.SIGNALS, genuine[0])
    for data in raw:
        await bus.publish_raw(Topic.SIGNALS, data)
    for s in genuine[1:]:
        await bus.publish(Topic.SIGNALS, s)
    stats = ReaderStats()
    got, duplicates = await collect_signals(bus, count=len(genuine), stats=stats)
    assert duplicates == 0
    dead = await transport.dead_letters()
    await bus.close()
    return got, stats, dead


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_signals_reader_drops_a_forged_signal_counts_it_and_dead_letters_it(variant):
    data = forgery(CASES["signal"], variant)
    genuine = [signal(ts_ms=T0), signal(ts_ms=T0 + 2 * MINUTE)]
    got, stats, dead = run(read_signals(in_process(), genuine, [data]))
    assert got == [s.to_dict() for s in genuine]
    assert (stats.unauthenticated, stats.malformed) == (1, 0)
    [record] = dead
    assert record["kind"] == "unauthenticated" and record["group"] == "l1" and record["topic"] == Topic.SIGNALS
    assert record["d"].encode("utf-8", "surrogateescape") == data


def test_without_a_key_the_signals_reader_passes_a_forged_signal_on():
    # The finding: "buy 1000 BTC" with a valid signal_id reached L1.
    data = forgery(CASES["signal"], "not signed")
    got, stats, _ = run(read_signals(in_process(), [signal(ts_ms=T0), signal(ts_ms=T0 + 2 * MINUTE)], [data],
                                     signer=None))
    assert CASES["signal"].forged.to_dict() in got


# ------------------------------------------------------------------ genuine traffic


@pytest.fixture(scope="module")
def real_bars(btc_1m: dict[str, Any]) -> list[Bar]:
    # The last 3,000 minutes: the demo config trades in them.
    cols = [btc_1m[k][-3_000:].tolist() for k in ("ts", "open", "high", "low", "close", "volume")]
    return [Bar(BTC, int(ts), o, h, lo, c, v) for ts, o, h, lo, c, v in zip(*cols)]


def _signals(transport: Transport, bars: Sequence[Bar], signer: Signer | None) -> list[dict[str, Any]]:
    decision = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive",
                                 universe=(BTC,))
    gen = TacticalSignalGenerator(config=demo_config())
    inputs = [(Topic.DECISIONS, decision), *((Topic.BARS, b) for b in bars)]
    got, adapter, dead = run(drive(transport, inputs, signer=signer, expected_signals=len(bars), generator=gen),
                             timeout=300)
    assert adapter.stats.unauthenticated == adapter.stats.malformed == 0 and not dead
    return [r.message.to_dict() for r in got]


def test_genuine_signed_traffic_gives_the_signals_of_a_bus_without_a_key(real_bars):
    unsigned = _signals(in_process(), real_bars, None)
    assert sum(s["side"] != "hold" for s in unsigned) >= 2  # the demo config trades here
    assert _signals(in_process(), real_bars, KEY) == unsigned


# ------------------------------------------------------------------ fuzz


@st.composite
def mangled(draw: st.DrawFn) -> tuple[Topic, bytes]:
    """A genuine signed message changed somewhere (tag, separator or envelope), or bytes
    that merely look signed, on any input topic."""
    kind = draw(st.sampled_from(["decision", "bar", "fill"]))
    case = CASES[kind]
    original = sign(KEY, case.topic, encode(draw(st.sampled_from([case.genuine, case.altered, case.forged]))))
    how = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "random tag", "random"]))
    data = bytearray(original)
    if how == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    elif how == "delete":
        del data[draw(st.integers(0, len(data) - 1))]
    elif how == "insert":
        data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
    elif how == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "random tag":
        data[len(SIGNED_PREFIX):HEAD - 1] = draw(st.text("0123456789abcdef", min_size=TAG_CHARS,
                                                         max_size=TAG_CHARS)).encode()
    else:
        data = bytearray(draw(st.binary(max_size=200)))
        if draw(st.booleans()):
            data = bytearray(original[:HEAD]) + data
    topic = draw(st.sampled_from([Topic.DECISIONS, Topic.BARS, Topic.FILLS]))
    return topic, bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(mangled(), min_size=1, max_size=4))
def test_no_mangled_envelope_escapes_the_adapter_or_is_applied(items):
    genuine = {sign(KEY, c.topic, encode(m)) for c in CASES.values() for m in (c.genuine, c.altered, c.forged)}
    items = [(t, d) for t, d in items if d not in genuine]  # a flip of 0 bits is no forgery
    last = Bar("ZZZ/USDT", T0, 100.0, 101.0, 99.0, 100.5, 1.0)
    gen = TacticalSignalGenerator()
    got, adapter, dead = run(drive(in_process(), [*items, (Topic.BARS, last)], until=last.symbol, generator=gen))
    assert [r.message.ts_ms for r in got] == [last.ts_ms]
    stats = adapter.stats
    assert (stats.unauthenticated, stats.decisions, stats.fills, stats.bars) == (len(items), 0, 0, 1)
    assert [r["kind"] for r in dead] == ["unauthenticated"] * len(items)
    _, ref = reference([last])
    assert gen.decision is None and gen.export_state().core == ref.export_state().core


# ------------------------------------------------------------------ counters


def test_unauthenticated_is_an_adapter_counter_and_a_prometheus_kind():
    counters = tuple(f.name for f in fields(AdapterStats) if f.type == "int" and f.name != "snapshots")
    assert ADAPTER_KINDS == counters and "unauthenticated" in ADAPTER_KINDS


# ------------------------------------------------------------------ Redis

needs_redis = pytest.mark.skipif(REDIS_SERVER is None,
                                 reason="redis-server is not installed (Debian: apt-get install redis-server)")


def redis_transport(url: str, prefix: str | None = None, **kwargs: Any) -> Any:
    from l2fast.bus.redis import RedisTransport

    return RedisTransport(url, prefix=prefix or f"a{uuid.uuid4().hex[:8]}:", **kwargs)


@needs_redis
@pytest.mark.parametrize(("kind", "variant"), [("decision", "not signed"), ("bar", "another key"),
                                               ("fill", "one byte altered"), ("decision", "a truncated tag")])
def test_redis_a_forged_entry_is_refused_acknowledged_and_the_worker_goes_on(redis_url, kind, variant):
    case = CASES[kind]
    data = forgery(case, variant)
    t = redis_transport(redis_url)
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (case.topic, data), (Topic.BARS, bar(1))]

    async def main() -> tuple[list, L2BusAdapter, list, int, list]:
        got, adapter, dead = await drive(t, inputs, expected_signals=2)
        t2 = redis_transport(redis_url, t.prefix)
        pending = (await t2.client.xpending(t2.key(case.topic), "l2"))["pending"]
        signals = await t2.client.xrange(t2.key(Topic.SIGNALS))
        await t2.close()
        return got, adapter, dead, pending, signals

    got, adapter, dead, pending, signals = run(main())
    assert [r.message.to_dict() for r in got] == reference([DECISION, bar(0), bar(1)])[0]
    assert adapter.stats.unauthenticated == 1 and adapter.stats.malformed == 0 and pending == 0
    [record] = dead
    assert record["kind"] == "unauthenticated" and record["stream"] == t.key(case.topic)
    assert record["d"].encode("utf-8", "surrogateescape") == data
    # What the worker wrote is in the signed form, its tag beside the envelope it covers.
    assert [decode(open_signed(f[b"d"], Topic.SIGNALS, KEY)).message.to_dict() for _, f in signals] == [
        r.message.to_dict() for r in got]


@needs_redis
def test_redis_a_genuine_entry_copied_into_another_stream_is_refused(redis_url):
    # A signed bar's exact bytes, as stored in Redis, written to l3.decisions.
    t = redis_transport(redis_url)

    async def main() -> tuple[list, L2BusAdapter, list]:
        bus = MessageBus(redis_transport(redis_url, t.prefix), signer=KEY)
        await bus.publish(Topic.BARS, bar(5, ETH))
        [(_, entry)] = await bus.transport.client.xrange(bus.transport.key(Topic.BARS))
        await bus.close()
        assert entry[b"d"].startswith(SIGNED_PREFIX)
        return await drive(t, [(Topic.DECISIONS, entry[b"d"]), (Topic.DECISIONS, DECISION), (Topic.BARS, bar(0))],
                           until=BTC)

    got, adapter, dead = run(main())
    assert [r.message.symbol for r in got] == [ETH, BTC]  # the genuine bar once, in its own stream
    assert adapter.stats.unauthenticated == 1 and adapter.stats.decisions == 1
    assert [r["kind"] for r in dead] == ["unauthenticated"]


@needs_redis
@pytest.mark.parametrize("kind", ["bar", "fill"])
def test_redis_a_genuine_entry_copied_into_another_symbols_stream_is_refused(redis_url, kind):
    # The tag binds the topic, not the partition: a signed ETH bar or fill copied into
    # market.bars|BTC/USDT (or l1.fills|BTC/USDT) reaches the BTC worker, which must not
    # start following ETH (the ETH owner's symbol: two engines would signal it).
    partitioned = (Topic.BARS, Topic.FILLS)
    t = redis_transport(redis_url, partitioned=partitioned)
    topic = Topic.BARS if kind == "bar" else Topic.FILLS
    foreign = bar(0, ETH) if kind == "bar" else Fill(ETH, "buy", 0.1, 100.0, T0, 0.0)
    decision = replace(DECISION, universe=(BTC, ETH))

    async def main() -> tuple[AdapterStats, list, list]:
        bus = MessageBus(redis_transport(redis_url, t.prefix, partitioned=partitioned), signer=KEY)
        await bus.publish(Topic.DECISIONS, decision)
        await bus.publish(topic, foreign)
        client = bus.transport.client
        [(_, entry)] = await client.xrange(bus.transport.key(topic, ETH))
        await client.xadd(bus.transport.key(topic, BTC), {"d": entry[b"d"]})
        await bus.publish(Topic.BARS, bar(1))
        adapter = L2BusAdapter(MessageBus(t, signer=KEY), TacticalSignalGenerator(), signals="all", consumer="w1",
                               group="l2:BTC/USDT", symbols=[BTC])
        worker = asyncio.create_task(adapter.start_processing())
        signals = []
        while not any(s[1][b"d"].find(BTC.encode()) > 0 for s in signals):
            await asyncio.sleep(0.05)
            signals = await client.xrange(t.key(Topic.SIGNALS))
        await adapter.stop()
        await worker
        dead = await t.dead_letters()
        await bus.close()
        await t.close()
        return adapter.stats, signals, dead

    stats, signals, dead = run(main())
    # Neither applied nor answered: no ETH signal, no ETH fill booked.
    assert [decode(open_signed(f[b"d"], Topic.SIGNALS, KEY)).message.symbol for _, f in signals] == [BTC]
    assert (stats.refused, stats.bars, stats.fills) == (1, 1, 0)
    [record] = dead
    assert record["kind"] == "refused" and record["stream"] == t.key(topic, BTC) and ETH in record["error"]


@needs_redis
def test_redis_the_signals_reader_drops_forged_entries(redis_url):
    raw = [forgery(CASES["signal"], v) for v in VARIANTS]
    genuine = [signal(ts_ms=T0), signal(ts_ms=T0 + 2 * MINUTE), signal(ts_ms=T0 + 3 * MINUTE)]
    got, stats, dead = run(read_signals(redis_transport(redis_url), genuine, raw))
    assert got == [s.to_dict() for s in genuine]
    assert (stats.unauthenticated, stats.malformed) == (len(raw), 0)
    assert [r["kind"] for r in dead] == ["unauthenticated"] * len(raw)


@needs_redis
def test_redis_genuine_signed_traffic_gives_the_signals_of_an_in_process_bus_without_a_key(redis_url, real_bars):
    # Room for every signal: drive() publishes all the bars before it reads.
    roomy = redis_transport(redis_url, default=QueuePolicy(4096))
    assert _signals(roomy, real_bars, KEY) == _signals(in_process(), real_bars, None)


@needs_redis
def test_the_dashboard_skips_signals_not_signed_with_the_bus_key(redis_url):
    pytest.importorskip("rich")
    from redis.asyncio import Redis

    from l2fast.ops.dashboard import RedisFeed

    class Board:
        window_ms = 3_600_000  # the entries were published just now
        signals: list[dict[str, Any]] = []

        def update(self, metrics: Any, signals: Sequence[dict[str, Any]]) -> None:
            self.signals = list(signals)

    raw = [forgery(CASES["signal"], v) for v in VARIANTS]

    async def main() -> tuple[list[dict[str, Any]], RedisFeed]:
        t = redis_transport(redis_url)
        bus = MessageBus(t, signer=KEY)
        await bus.publish(Topic.SIGNALS, signal(ts_ms=T0))
        for data in raw:
            await bus.publish_raw(Topic.SIGNALS, data)
        await bus.close()
        client = Redis.from_url(redis_url)
        feed = RedisFeed(client, t.prefix, KEY)
        board = Board()
        try:
            await feed.poll(board)  # type: ignore[arg-type]
        finally:
            await client.aclose()
        return board.signals, feed

    shown, feed = run(main())
    assert shown == [signal(ts_ms=T0).to_dict()]
    assert feed.unauthenticated == len(raw) and feed.malformed == 0


# ------------------------------------------------------------------ the command line

BUS_COMMANDS = {
    "worker": ["worker"],
    "publish": ["publish", "--data", "missing.csv"],
    "signals": ["signals"],
    "dashboard": ["dashboard", "--once"],
}


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L2FAST_BUS_KEY_FILE", raising=False)
    monkeypatch.delenv("L2FAST_BUS_KEY", raising=False)


@pytest.mark.parametrize("command", sorted(BUS_COMMANDS))
def test_a_bus_command_without_a_key_or_no_auth_exits_2_saying_how_to_make_one(command, no_key_in_env, capsys):
    if command == "dashboard":
        pytest.importorskip("rich")
    assert exit_code([*BUS_COMMANDS[command], "--redis", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert "error: no bus key: give --bus-key-file FILE" in err and "openssl rand -hex 32" in err
    assert "--no-auth" in err


@pytest.mark.parametrize("command", sorted(BUS_COMMANDS))
def test_a_bus_command_refuses_a_short_key(command, no_key_in_env, tmp_path, capsys):
    if command == "dashboard":
        pytest.importorskip("rich")
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    assert exit_code([*BUS_COMMANDS[command], "--redis", "redis://127.0.0.1:1/0", "--bus-key-file", str(short)]) == 2
    assert "needs at least 32 bytes" in capsys.readouterr().err


def test_a_bus_key_and_no_auth_together_are_refused(tmp_path, capsys):
    argv = ["signals", "--redis", "redis://127.0.0.1:1/0", "--bus-key-file", str(bus_key_file(tmp_path)),
            "--no-auth"]
    assert exit_code(argv) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_auth_runs_unauthenticated_with_one_warning(no_key_in_env, caplog):
    # It goes on to Redis (here unreachable: exit 3), having said what it gives up.
    assert exit_code(["signals", "--redis", "redis://127.0.0.1:1/0", "--redis-timeout", "0.2", "--no-auth"]) == 3
    warnings = [r for r in caplog.records if "not authenticated" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


@needs_redis
def test_publish_and_signals_commands_sign_and_check_with_the_key_from_the_file_or_the_environment(
        redis_url, tmp_path, monkeypatch, capsys):
    pytest.importorskip("redis")
    from support import write_csv

    from l2fast.evaluation.synthetic import generate_bars

    key = bus_key_file(tmp_path)
    data = write_csv(tmp_path / "btcusdt_1m.csv.gz", generate_bars(30))
    prefix = f"c{uuid.uuid4().hex[:8]}:"
    common = ["--redis", redis_url, "--prefix", prefix]
    assert exit_code(["publish", *common, "--data", str(data), "--bus-key-file", str(key)]) == 0

    async def entries() -> list[bytes]:
        t = redis_transport(redis_url, prefix)
        found = [f[b"d"] for _, f in await t.client.xrange(t.key(Topic.BARS))]
        bus = MessageBus(t, signer=KEY)
        # Signals as a worker would publish them, and one forged by hand.
        await bus.publish(Topic.SIGNALS, signal(ts_ms=T0))
        await bus.publish_raw(Topic.SIGNALS, forgery(CASES["signal"], "not signed"))
        await bus.close()
        return found

    bars = run(entries())
    assert len(bars) == 30 and all(decode(open_signed(d, Topic.BARS, KEY)).message.symbol == BTC for d in bars)
    out = tmp_path / "signals.jsonl"
    monkeypatch.setenv("L2FAST_BUS_KEY_FILE", str(key))
    capsys.readouterr()
    assert exit_code(["signals", *common, "--out", str(out), "--idle-exit", "0.5"]) == 0
    assert [json.loads(line)["signal_id"] for line in out.read_text().splitlines()] == [signal(ts_ms=T0).signal_id]
    assert "1 signals, 0 duplicates dropped, 1 unauthenticated and 0 malformed refused" in capsys.readouterr().err


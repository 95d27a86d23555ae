"""The Redis Streams transport against a real ``redis-server`` (skipped when it is not installed).

Each test module run starts its own server on a free loopback port, in a temporary
directory, with append-only persistence (``appendfsync always``), and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest

pytest.importorskip("redis")

from support import REDIS_SERVER, merged_bars

from l2fast.bus import (
    Bar,
    Fill,
    L2BusAdapter,
    MessageBus,
    Overflow,
    QueuePolicy,
    Topic,
    decode,
    encode,
)
from l2fast.bus.redis import RedisTransport
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.evaluation.replay import BarStream, demo_config
from l2fast.signals import StrategicDecision

BTC, ETH = "BTC/USDT", "ETH/USDT"
T0 = 1_704_067_200_000
MINUTE = 60_000
INPUTS = (Topic.DECISIONS, Topic.FILLS, Topic.BARS)
DECISION = StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate", universe=(BTC,))
FILL = Fill(BTC, "buy", 0.01, 100.5, T0, fee=0.001)

pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server is not installed (Debian: apt-get install redis-server)")


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def transport(url: str, **kwargs: Any) -> RedisTransport:
    """A transport on keys of its own (a fresh prefix per test)."""
    kwargs.setdefault("prefix", f"t{uuid.uuid4().hex[:8]}:")
    return RedisTransport(url, **kwargs)


def bar(k: int, symbol: str = BTC) -> Bar:
    price = 100.0 + k
    return Bar(symbol, T0 + k * MINUTE, price, price + 1.0, price - 1.0, price + 0.5, 1.0 + k)


def fill(k: int) -> Fill:
    return Fill(BTC, "buy", 0.1 + k, 100.0, T0 + k * MINUTE)


def mixed(n: int) -> list[tuple[str, Any]]:
    messages: list[tuple[str, Any]] = []
    for k in range(n):
        messages.append((Topic.BARS, bar(k)))
        if k % 3 == 0:
            messages.append((Topic.FILLS, fill(k)))
        if k % 7 == 0:
            messages.append((Topic.DECISIONS, DECISION))
    return messages


async def publish_all(bus: MessageBus, messages: Sequence[tuple[str, Any]], pause: float = 0.0) -> None:
    for topic, message in messages:
        await bus.publish(topic, message)
        if pause:
            await asyncio.sleep(pause)


# ------------------------------------------------------------------ order, groups


@pytest.mark.parametrize("count", [3, 256])
def test_topics_are_read_in_publication_order_whatever_the_batch_size(redis_url, count):
    messages = mixed(60)

    async def main() -> list:
        bus = MessageBus(transport(redis_url, count=count))
        sub = await bus.subscribe(INPUTS, group="l2", consumer="w1")
        await publish_all(bus, messages)
        got = [await sub.get() for _ in messages]
        await bus.close()
        return got

    got = run(main())
    assert [(r.topic, r.message) for r in got] == messages
    assert all(r.error is None for r in got)


def test_a_group_created_late_reads_from_the_first_entry_and_groups_fan_out(redis_url):
    messages = mixed(10)

    async def main() -> tuple[list, list]:
        bus = MessageBus(transport(redis_url))
        await publish_all(bus, messages)
        l2 = await bus.subscribe(INPUTS, group="l2", consumer="w1")
        l1 = await bus.subscribe([Topic.BARS], group="l1", consumer="c1")
        got_l2 = [(await l2.get()).message for _ in messages]
        got_l1 = [(await l1.get()).message for _ in range(10)]
        await bus.close()
        return got_l2, got_l1

    got_l2, got_l1 = run(main())
    assert got_l2 == [m for _, m in messages]
    assert got_l1 == [bar(k) for k in range(10)]


def test_signals_round_trip_with_their_meta_and_the_publication_time(redis_url):
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(DECISION)
    signal = gen.on_bar(BTC, T0, 100.0, 101.0, 99.0, 100.5, 3.0)

    async def main() -> Any:
        bus = MessageBus(transport(redis_url))
        sub = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="c1")
        before = time.time_ns() // 1_000_000
        await bus.publish(Topic.SIGNALS, signal, {"age_ms": 3, "stale": False})
        received = await sub.get()
        after = time.time_ns() // 1_000_000
        await bus.close()
        return received, before, after

    received, before, after = run(main())
    assert received.message.to_dict() == signal.to_dict()
    assert received.meta == {"age_ms": 3, "stale": False}
    # The Redis server's clock, on the same machine.
    assert before - 1000 <= received.published_ms <= after + 1000


# ------------------------------------------------------------------ at-least-once


def test_a_closed_consumer_leaves_only_its_unacknowledged_entries_to_read_again(redis_url):
    async def main() -> tuple[list, list, int]:
        t = transport(redis_url)
        bus = MessageBus(t)
        sub = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        await publish_all(bus, [(Topic.BARS, bar(k)) for k in range(5)])
        first = [await sub.get() for _ in range(5)]
        for received in first[:3]:
            await sub.ack(received)
        await sub.close()
        await publish_all(bus, [(Topic.BARS, bar(k)) for k in range(5, 8)])
        again = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        second = [await again.get() for _ in range(5)]
        for received in second:
            await again.ack(received)
        await again.close()
        pending = (await t.client.xpending(t.key(Topic.BARS), "l2"))["pending"]
        await bus.close()
        return [r.message for r in first], [r.message for r in second], pending

    first, second, pending = run(main())
    assert first == [bar(k) for k in range(5)]
    assert second == [bar(3), bar(4), bar(5), bar(6), bar(7)]
    assert pending == 0


def test_a_dead_consumers_pending_entries_are_taken_over_by_another(redis_url):
    async def main() -> tuple[list, list]:
        t = transport(redis_url, claim_idle_ms=50, claim_interval_s=0.05)
        bus = MessageBus(t)
        dead = await bus.subscribe([Topic.BARS], group="l2", consumer="dead")
        await publish_all(bus, [(Topic.BARS, bar(k)) for k in range(6)])
        taken = [(await dead.get()).message for _ in range(4)]  # fetched 6, handled 4, then "dies"
        await asyncio.sleep(0.1)
        standby = await bus.subscribe([Topic.BARS], group="l2", consumer="standby")
        await publish_all(bus, [(Topic.BARS, bar(k)) for k in range(6, 9)])
        got = [(await standby.get()).message for _ in range(9)]
        await bus.close()
        return taken, got

    taken, got = run(main())
    assert taken == [bar(k) for k in range(4)]
    assert got == [bar(k) for k in range(9)]


def test_claimed_entries_wait_for_older_entries_of_other_streams(redis_url):
    # The dead consumer read only the bars: their entries are pending, but the fill
    # published between two of them was never delivered. A consumer of both streams that
    # claims the bars must still hand the fill out in its place, not after them.
    async def main() -> list:
        t = transport(redis_url, claim_idle_ms=1, claim_interval_s=86_400.0)
        bus = MessageBus(t)
        await bus.subscribe([Topic.FILLS], group="l2", consumer="setup")  # the group on the fills too
        dead = await bus.subscribe([Topic.BARS], group="l2", consumer="dead")
        await publish_all(bus, [(Topic.BARS, bar(0)), (Topic.FILLS, FILL), (Topic.BARS, bar(1)),
                                (Topic.BARS, bar(2))])
        assert [(await dead.get()).message for _ in range(3)] == [bar(0), bar(1), bar(2)]
        await asyncio.sleep(0.01)
        heir = await bus.subscribe([Topic.BARS, Topic.FILLS], group="l2", consumer="heir")
        got = [(await heir.get()).message for _ in range(4)]
        await bus.close()
        return got

    assert run(main()) == [bar(0), FILL, bar(1), bar(2)]


def test_the_adapter_acknowledges_a_bar_only_after_its_signal_is_published(redis_url):
    # Signals may hold 2 entries, so the adapter blocks publishing bar 2's signal. Reading
    # one entry at a time, it has sent the acknowledgements of bars 0 and 1 (before its
    # next read) and holds bar 2 unacknowledged.
    t = transport(redis_url, count=1, policies={Topic.SIGNALS: QueuePolicy(2)})

    async def main() -> tuple[int, list, int, int]:
        bus = MessageBus(t)
        signals = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="c1")
        adapter = L2BusAdapter(bus, TacticalSignalGenerator(), signals="all", consumer="w1")
        worker = asyncio.create_task(adapter.start_processing())
        ids = [await bus.publish(Topic.BARS, bar(k)) for k in range(6)]
        await asyncio.sleep(0.5)
        published_while_blocked = await t.client.xlen(t.key(Topic.SIGNALS))
        pending = await t.client.xpending_range(t.key(Topic.BARS), "l2", "-", "+", 10)
        pending_while_blocked = [p["message_id"].decode() for p in pending]
        got = [await signals.get() for _ in range(6)]
        await asyncio.sleep(0.3)
        await adapter.stop()
        await worker
        pending_after = (await t.client.xpending(t.key(Topic.BARS), "l2"))["pending"]
        await bus.close()
        return published_while_blocked, pending_while_blocked == [ids[2]], len(got), pending_after

    published, only_bar_2_pending, got, pending_after = run(main())
    assert published == 2 and only_bar_2_pending
    assert got == 6 and pending_after == 0


# ------------------------------------------------------------------ bounds


def test_a_full_topic_blocks_the_publisher_until_the_group_reads(redis_url):
    t = transport(redis_url, policies={Topic.BARS: QueuePolicy(16)})

    async def main() -> tuple[bool, int, list]:
        bus = MessageBus(t)
        sub = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        publisher = asyncio.create_task(publish_all(bus, [(Topic.BARS, bar(k)) for k in range(100)]))
        await asyncio.sleep(0.5)
        blocked = not publisher.done()
        length = await t.client.xlen(t.key(Topic.BARS))
        got = [(await sub.get()).message for _ in range(100)]
        await publisher
        await bus.close()
        return blocked, length, got

    blocked, length, got = run(main())
    assert blocked
    assert 16 <= length <= 16 + 16 // 8  # the bound, passed by at most the check interval
    assert got == [bar(k) for k in range(100)]


def test_a_full_topic_blocks_even_when_redis_cannot_say_the_lag(redis_url):
    # After an XDEL in the middle of the stream Redis reports no lag for the group: the
    # bound must still hold.
    t = transport(redis_url, policies={Topic.BARS: QueuePolicy(8)})

    async def main() -> tuple[object, bool, int, list]:
        bus = MessageBus(t)
        sub = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        ids = [await bus.publish(Topic.BARS, bar(k)) for k in range(4)]
        await t.client.xdel(t.key(Topic.BARS), ids[1])
        (group,) = await t.client.xinfo_groups(t.key(Topic.BARS))
        publisher = asyncio.create_task(publish_all(bus, [(Topic.BARS, bar(k)) for k in range(4, 40)]))
        await asyncio.sleep(0.5)
        blocked = not publisher.done()
        length = await t.client.xlen(t.key(Topic.BARS))
        got = [(await sub.get()).message for _ in range(39)]
        await publisher
        await bus.close()
        return group["lag"], blocked, length, got

    lag, blocked, length, got = run(main())
    assert lag is None  # what the fallback is for
    assert blocked and length <= 8 + 1 + 1  # the bound, the check interval, the deleted entry's place
    assert got == [bar(k) for k in range(40) if k != 1]


def test_drop_oldest_bars_keeps_the_newest_entries(redis_url):
    t = transport(redis_url, policies={Topic.BARS: QueuePolicy(10, Overflow.DROP_OLDEST)})

    async def main() -> list:
        bus = MessageBus(t)
        sub = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        await publish_all(bus, [(Topic.BARS, bar(k)) for k in range(50)])
        got = [(await sub.get()).message for _ in range(10)]
        await bus.close()
        return got

    assert run(main()) == [bar(k) for k in range(40, 50)]


# ------------------------------------------------------------------ the adapter over Redis


def test_malformed_entries_are_skipped_counted_and_acknowledged(redis_url):
    t = transport(redis_url)
    gen_bars = [bar(k) for k in range(8)]

    async def main() -> tuple[list, L2BusAdapter, int]:
        bus = MessageBus(t)
        signals = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="c1")
        adapter = L2BusAdapter(bus, TacticalSignalGenerator(), signals="all", consumer="w1")
        worker = asyncio.create_task(adapter.start_processing())
        await bus.publish(Topic.DECISIONS, DECISION)
        for k, b in enumerate(gen_bars):
            await bus.publish(Topic.BARS, b)
            if k == 2:
                await bus.publish_raw(Topic.BARS, b"\x00garbage")
            if k == 4:
                await bus.publish_raw(Topic.FILLS, encode(DECISION))
            if k == 5:  # an entry some other producer wrote, without the bus's fields
                await t.client.xadd(t.key(Topic.BARS), {"x": "1"})
        got = [await signals.get() for _ in gen_bars]
        await asyncio.sleep(0.3)
        await adapter.stop()
        await worker
        pending = (await t.client.xpending(t.key(Topic.BARS), "l2"))["pending"]
        await bus.close()
        return got, adapter, pending

    got, adapter, pending = run(main())
    reference = TacticalSignalGenerator()
    reference.on_strategic_decision(DECISION)
    expected = [reference.on_bar(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close, b.volume).to_dict()
                for b in gen_bars]
    assert [r.message.to_dict() for r in got] == expected
    assert adapter.stats.malformed == 3 and adapter.stats.rejected_by_topic == {Topic.BARS: 2, Topic.FILLS: 1}
    assert pending == 0


N_BARS = 3_000  # per symbol: 6,000 bars, past the 2,100-bar warm-up on both


def test_a_redis_worker_gives_the_signals_of_a_direct_run_on_real_bars(redis_url, btc_1m, eth_1m):
    bars = merged_bars([BarStream(BTC, {k: v[:N_BARS] for k, v in btc_1m.items()}),
                        BarStream(ETH, {k: v[:N_BARS] for k, v in eth_1m.items()})])
    decision = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive",
                                 universe=(BTC, ETH))
    ref = TacticalSignalGenerator(config=demo_config())
    ref.on_strategic_decision(decision)
    expected = [ref.on_bar(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close, b.volume).to_dict() for b in bars]
    assert sum(d["side"] != "hold" for d in expected) >= 10

    t = transport(redis_url)

    async def main() -> tuple[list, L2BusAdapter]:
        bus = MessageBus(t)
        signals = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="c1")
        adapter = L2BusAdapter(bus, TacticalSignalGenerator(config=demo_config()), signals="all", consumer="w1")
        worker = asyncio.create_task(adapter.start_processing())
        await bus.publish(Topic.DECISIONS, decision)
        publisher = asyncio.create_task(publish_all(bus, [(Topic.BARS, b) for b in bars]))
        got = [(await signals.get()).message.to_dict() for _ in bars]
        await publisher
        await adapter.stop()
        await worker
        await bus.close()
        return got, adapter

    got, adapter = run(main(), timeout=120)
    assert got == expected
    assert adapter.stats.bars == len(bars) and adapter.stats.malformed == adapter.stats.refused == 0


# ------------------------------------------------------------------ Redis going away


def test_publisher_and_consumer_ride_out_a_redis_restart(server):
    messages = mixed(120)

    async def main() -> tuple[list, int, int]:
        t = transport(server.url, backoff_min_s=0.02, backoff_max_s=0.2)
        bus = MessageBus(t)
        sub = await bus.subscribe(INPUTS, group="l2", consumer="w1")
        publisher = asyncio.create_task(publish_all(bus, messages, pause=0.002))
        got = []
        while len(got) < len(messages):
            received = await sub.get()
            got.append(received)
            await sub.ack(received)
            if len(got) == len(messages) // 3:
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(0.2)
                await asyncio.to_thread(server.start)
        await publisher
        await sub.close()
        pending = sum([(await t.client.xpending(t.key(topic), "l2"))["pending"] for topic in INPUTS])
        reconnects = t.reconnects
        await bus.close()
        return got, reconnects, pending

    got, reconnects, pending = run(main(), timeout=90)
    assert reconnects > 0
    assert [(r.topic, r.message) for r in got] == messages  # nothing lost, nothing twice, in order
    assert pending == 0


def test_decoding_what_redis_stored_gives_the_published_envelope(redis_url):
    async def main() -> bytes:
        t = transport(redis_url)
        await MessageBus(t).publish(Topic.FILLS, fill(3))
        entries = await t.client.xrange(t.key(Topic.FILLS))
        await t.close()
        return entries[0][1][b"d"]

    assert decode(run(main())).message == fill(3)


def test_publish_many_keeps_the_order_across_topics_and_batches(redis_url):
    from l2fast.bus.redis import PUBLISH_BATCH

    many = [bar(k) for k in range(PUBLISH_BATCH + 88)]  # two publication scripts

    async def main() -> tuple[list, list[str]]:
        bus = MessageBus(transport(redis_url, count=100))
        sub = await bus.subscribe(INPUTS, group="l2", consumer="w1")
        await bus.publish(Topic.DECISIONS, DECISION)
        ids = await bus.publish_many(Topic.BARS, many)
        await bus.publish(Topic.FILLS, fill(1))
        got = [await sub.get() for _ in range(len(many) + 2)]
        await bus.close()
        return got, ids

    got, ids = run(main())
    assert [r.message for r in got] == [DECISION, *many, fill(1)]
    assert [r.id for r in got[1:-1]] == ids
    assert len(set(ids)) == len(ids)


def test_publish_many_refuses_a_message_of_another_topic_before_sending_any(redis_url):
    async def main() -> int:
        t = transport(redis_url)
        bus = MessageBus(t)
        with pytest.raises(TypeError, match="carries bar messages"):
            await bus.publish_many(Topic.BARS, [bar(0), fill(0)])
        length = await t.client.xlen(t.key(Topic.BARS))
        await bus.close()
        return length

    assert run(main()) == 0


def test_acknowledged_bars_are_trimmed_and_pending_ones_kept(redis_url):
    policy = {Topic.BARS: QueuePolicy(maxsize=64)}  # a room check (and trim) every 8 bars

    async def main() -> tuple[int, int, int, list]:
        t = transport(redis_url, policies=policy)
        bus = MessageBus(t)
        key = t.key(Topic.BARS)
        for k in range(20):  # no group yet: nothing is trimmed
            await bus.publish(Topic.BARS, bar(k))
        untrimmed = await t.client.xlen(key)
        sub = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        got = [await sub.get() for _ in range(20)]
        for received in got[:15]:
            await sub.ack(received)
        await sub.close()  # sends the acknowledgements; 15-19 stay pending
        for k in range(20, 40):
            await bus.publish(Topic.BARS, bar(k))
        kept = await t.client.xlen(key)
        first = (await t.client.xrange(key, count=1))[0][0].decode()
        again = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        rest = [(await again.get()).message for _ in range(25)]
        await bus.close()
        return untrimmed, kept, t.trimmed, [first == got[15].id, rest == [bar(k) for k in range(15, 40)]]

    untrimmed, kept, trimmed, checks = run(main())
    assert untrimmed == 20
    assert trimmed == 15 and kept == 25  # bars 0-14 acknowledged; 15-19 pending, 20-39 new
    assert checks == [True, True]


def test_xreadgroup_replies_keep_redis_shape_in_both_protocols():
    from l2fast.bus.redis import _data_field, _stream_entries

    entries = [[b"1-0", [b"d", b"x"]], [b"1-1", [b"other", b"y", b"d", b"z"]], [b"1-2", None]]
    resp3 = {b"bars": entries}
    resp2 = [[b"bars", entries]]
    assert _stream_entries(resp3) == [(b"bars", entries)]
    assert _stream_entries(resp2) == resp2
    assert _stream_entries(None) == []
    assert [_data_field(f) for _, f in entries[:2]] == [b"x", b"z"]
    assert _data_field([b"other", b"y"]) == b""
    assert _data_field({b"d": b"w"}) == b"w"  # redis-py's dict (XAUTOCLAIM, a caller's client)


def test_a_late_copy_of_an_older_publication_adds_nothing(redis_url):
    # A publication sent on a connection taken for dead can reach Redis after its retry
    # and the next publications: the script drops it by its counter.
    from l2fast.bus.redis import _PUBLISHER_TTL_S, FAR_AHEAD_MS

    async def main() -> tuple[list, int]:
        t = transport(redis_url)
        ids = [await t.publish("t", b"first"), await t.publish("t", b"second")]
        keys = [t.key("t"), t.prefix + "l2fast:clock", f"{t.prefix}l2fast:publisher:{t._token}",
                t.prefix + "l2fast:dead"]
        # The script's reply: what vanished, far-ahead ids and what was done with them, the ids.
        common = [FAR_AHEAD_MS, 100, ids[0], ids[0]]
        retried = await t._script(keys=keys, args=[0, t._counter, _PUBLISHER_TTL_S, *common, b"second"])
        late = await t._script(keys=keys, args=[0, t._counter - 1, _PUBLISHER_TTL_S, *common, b"first"])
        length = await t.client.xlen(keys[0])
        await t.close()
        return [[i.decode() for i in retried[3:]] == ids[1:], late[3:]], length

    (same_ids, late), length = run(main())
    assert same_ids and late == [] and length == 2

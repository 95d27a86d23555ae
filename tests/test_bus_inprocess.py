"""The in-process bus: ordering, bounded queues, the adapter, and equality with a replay."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
from support import merged_bars

from l2fast.bus import (
    Bar,
    BusClosed,
    Fill,
    InProcessTransport,
    L2BusAdapter,
    MessageBus,
    Overflow,
    QueuePolicy,
    SignalFilter,
    Topic,
    encode,
)
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import ConfigError
from l2fast.evaluation.paper import PaperBroker
from l2fast.evaluation.replay import BarStream, demo_config, replay
from l2fast.evaluation.synthetic import generate_bars
from l2fast.signals import Side, StrategicDecision, TacticalSignal

BTC, ETH = "BTC/USDT", "ETH/USDT"
T0 = 1_704_067_200_000
MINUTE = 60_000
ALL_TOPICS = (Topic.DECISIONS, Topic.FILLS, Topic.BARS)
DECISION = StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate", universe=(BTC,))


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    """Run ``coro`` on a fresh event loop, failing instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def bar(k: int, symbol: str = BTC) -> Bar:
    price = 100.0 + k
    return Bar(symbol, T0 + k * MINUTE, price, price + 1.0, price - 1.0, price + 0.5, 1.0 + k)


def fill(k: int) -> Fill:
    return Fill(BTC, "buy", 0.1 + k, 100.0, T0 + k * MINUTE)


async def settle() -> None:
    """Let every ready task run until all of them wait."""
    for _ in range(20):
        await asyncio.sleep(0)


# ------------------------------------------------------------------ ordering and fan-out


def test_one_publisher_mixing_topics_is_read_in_its_order():
    messages = []
    for k in range(30):
        messages.append((Topic.BARS, bar(k)))
        if k % 4 == 0:
            messages.append((Topic.FILLS, fill(k)))
        if k % 7 == 0:
            messages.append((Topic.DECISIONS, DECISION))

    async def main() -> list:
        bus = MessageBus()
        sub = await bus.subscribe(ALL_TOPICS, group="l2")
        for topic, message in messages:
            await bus.publish(topic, message)
        got = [await sub.get() for _ in messages]
        await bus.close()
        return got

    got = run(main())
    assert [(r.topic, r.message) for r in got] == messages
    assert [int(r.id) for r in got] == sorted(int(r.id) for r in got)


def test_every_group_gets_every_message_of_its_topics():
    async def main() -> tuple[list, list]:
        bus = MessageBus()
        l2 = await bus.subscribe(ALL_TOPICS, group="l2")
        l1 = await bus.subscribe([Topic.BARS], group="l1")
        await bus.publish(Topic.FILLS, fill(0))
        for k in range(5):
            await bus.publish(Topic.BARS, bar(k))
        got_l2 = [(await l2.get()).message for _ in range(6)]
        got_l1 = [(await l1.get()).message for _ in range(5)]
        await bus.close()
        return got_l2, got_l1

    got_l2, got_l1 = run(main())
    assert got_l2 == [fill(0)] + [bar(k) for k in range(5)]
    assert got_l1 == [bar(k) for k in range(5)]


def test_messages_published_before_anyone_reads_wait_for_the_first_group():
    # Bars beyond the bound block the publisher until the group arrives; then it goes on.
    transport = InProcessTransport({Topic.BARS: QueuePolicy(3)})

    async def main() -> tuple[list, bool]:
        bus = MessageBus(transport)
        await bus.publish(Topic.DECISIONS, DECISION)
        publisher = asyncio.create_task(_publish_all(bus, [(Topic.BARS, bar(k)) for k in range(6)]))
        await settle()
        blocked = not publisher.done()
        sub = await bus.subscribe(ALL_TOPICS, group="l2")
        got = [(await sub.get()).message for _ in range(7)]
        await publisher
        await bus.close()
        return got, blocked

    got, blocked = run(main())
    assert blocked
    assert got == [DECISION] + [bar(k) for k in range(6)]


async def _publish_all(bus: MessageBus, messages: Sequence[tuple[str, Any]]) -> None:
    for topic, message in messages:
        await bus.publish(topic, message)


# ------------------------------------------------------------------ bounded queues


def test_a_full_queue_blocks_its_publisher_until_the_consumer_takes_one():
    transport = InProcessTransport({Topic.BARS: QueuePolicy(2)})

    async def main() -> list:
        bus = MessageBus(transport)
        sub = await bus.subscribe([Topic.BARS], group="l2")
        publisher = asyncio.create_task(_publish_all(bus, [(Topic.BARS, bar(k)) for k in range(4)]))
        states = []
        got = []
        for _ in range(4):
            await settle()
            states.append((publisher.done(), len(got)))
            got.append((await sub.get()).message)
        await settle()
        states.append((publisher.done(), len(got)))
        await bus.close()
        assert got == [bar(k) for k in range(4)]
        return states

    # Two fit; the third waits for the first get, the fourth for the second.
    assert run(main()) == [(False, 0), (False, 1), (True, 2), (True, 3), (True, 4)]


def test_the_bound_is_per_topic_so_a_full_bar_queue_does_not_hold_fills_back():
    transport = InProcessTransport({Topic.BARS: QueuePolicy(1), Topic.FILLS: QueuePolicy(8)})

    async def main() -> tuple[bool, list]:
        bus = MessageBus(transport)
        sub = await bus.subscribe(ALL_TOPICS, group="l2")
        await bus.publish(Topic.BARS, bar(0))
        blocked_bar = asyncio.create_task(bus.publish(Topic.BARS, bar(1)))
        for k in range(5):
            await asyncio.wait_for(bus.publish(Topic.FILLS, fill(k)), 1.0)
        await settle()
        waiting = not blocked_bar.done()
        got = [(await sub.get()).message for _ in range(7)]
        await bus.close()
        return waiting, got

    waiting, got = run(main())
    assert waiting
    assert got == [bar(0)] + [fill(k) for k in range(5)] + [bar(1)]


def test_drop_oldest_bars_keeps_the_newest_in_order_and_counts_the_dropped():
    transport = InProcessTransport({Topic.BARS: QueuePolicy(2, Overflow.DROP_OLDEST)})

    async def main() -> tuple[list, dict]:
        bus = MessageBus(transport)
        sub = await bus.subscribe(ALL_TOPICS, group="l2")
        await bus.publish(Topic.BARS, bar(0))
        await bus.publish(Topic.FILLS, fill(0))
        for k in range(1, 5):
            await bus.publish(Topic.BARS, bar(k))
        got = [(await sub.get()).message for _ in range(3)]
        dropped = transport.dropped("l2")
        await bus.close()
        return got, dropped

    got, dropped = run(main())
    assert got == [fill(0), bar(3), bar(4)]
    assert dropped == {Topic.BARS: 3}


@pytest.mark.parametrize("topic", [Topic.DECISIONS, Topic.FILLS, Topic.SIGNALS])
def test_the_bus_refuses_a_transport_that_may_drop_decisions_fills_or_signals(topic):
    with pytest.raises(ConfigError, match="never dropped"):
        MessageBus(InProcessTransport({topic: QueuePolicy(8, Overflow.DROP_OLDEST)}))


@pytest.mark.parametrize(("kwargs", "match"), [({"maxsize": 0}, "maxsize"), ({"maxsize": 2.0}, "maxsize"),
                                               ({"overflow": "drop_newest"}, "overflow")])
def test_a_bad_queue_policy_is_a_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QueuePolicy(**kwargs)


def test_publishing_to_an_unknown_topic_or_the_wrong_type_is_refused():
    async def main() -> None:
        bus = MessageBus()
        with pytest.raises(ValueError, match="not a bus topic"):
            await bus.publish("market.trades", bar(0))
        with pytest.raises(TypeError, match="carries bar messages, got a fill"):
            await bus.publish(Topic.BARS, fill(0))
        with pytest.raises(ValueError, match="not a bus topic"):
            await bus.subscribe(["l2.orders"], group="x")
        await bus.close()

    run(main())


def test_closing_wakes_readers_and_waiting_publishers():
    transport = InProcessTransport({Topic.BARS: QueuePolicy(1)})

    async def main() -> tuple[BaseException | None, BaseException | None, list]:
        bus = MessageBus(transport)
        idle = await bus.subscribe([Topic.FILLS], group="idle")
        sub = await bus.subscribe([Topic.BARS], group="l2")
        await bus.publish(Topic.BARS, bar(0))
        reader = asyncio.create_task(idle.get())
        writer = asyncio.create_task(bus.publish(Topic.BARS, bar(1)))
        await settle()
        await bus.close()
        await asyncio.wait([reader, writer])
        after = []
        async for received in sub:  # ends at once: the subscription is closed
            after.append(received)
        return reader.exception(), writer.exception(), after

    reader_exc, writer_exc, after = run(main())
    assert isinstance(reader_exc, BusClosed) and isinstance(writer_exc, BusClosed)
    assert after == []


# ------------------------------------------------------------------ the adapter


class ScriptedGenerator:
    """A stand-in engine that answers bar k with the k-th scripted signal, and records calls."""

    def __init__(self, answers: Sequence[TacticalSignal]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple] = []

    def on_strategic_decision(self, decision: StrategicDecision) -> None:
        self.calls.append(("decision", decision))

    def on_fill(self, symbol: str, side: str, qty: float, price: float, ts_ms: int, fee: float = 0.0) -> dict:
        self.calls.append(("fill", symbol, side, qty, price, ts_ms, fee))
        return {}

    def on_bar(self, symbol: str, ts_ms: int, *ohlcv: float) -> TacticalSignal:
        self.calls.append(("bar", symbol, ts_ms))
        return self.answers.pop(0)


SCRIPT = [
    TacticalSignal.hold(BTC, T0, {"code": "WARM_UP"}),
    TacticalSignal(BTC, "buy", 0.5, 0.8, 0.7, 95.0, 110.0, {"code": "ENTRY"}, T0 + MINUTE),
    TacticalSignal.hold(BTC, T0 + 2 * MINUTE, {"code": "POSITION_OPEN"}, stop_loss=96.0, take_profit=110.0),
    TacticalSignal.hold(BTC, T0 + 3 * MINUTE, {"code": "LOW_CONSENSUS"}, take_profit=111.0),
    TacticalSignal(BTC, "sell", 0.5, 0.9, 0.8, None, None, {"code": "EXIT"}, T0 + 4 * MINUTE),
    TacticalSignal.hold(BTC, T0 + 5 * MINUTE, {"code": "LOW_CONFIDENCE"}),
]


async def run_adapter(generator: Any, inputs: Sequence[tuple[str, Any]], *, expected_signals: int,
                      transport: InProcessTransport | None = None, **adapter_kwargs: Any) -> tuple[list, L2BusAdapter]:
    """Publish ``inputs`` (messages, or raw bytes sent as they are) through an adapter and
    collect ``expected_signals`` signals; returns them (as Received) and the adapter."""
    bus = MessageBus(transport)
    signals = await bus.subscribe([Topic.SIGNALS], group="l1")
    adapter = L2BusAdapter(bus, generator, **adapter_kwargs)
    worker = asyncio.create_task(adapter.start_processing())
    for topic, message in inputs:
        if isinstance(message, (bytes, str)):
            await bus.publish_raw(topic, message)
        else:
            await bus.publish(topic, message)
    got = [await signals.get() for _ in range(expected_signals)]
    await settle()
    await adapter.stop()
    await worker
    await bus.close()
    return got, adapter


@pytest.mark.parametrize(("mode", "published"), [
    (SignalFilter.ALL, [0, 1, 2, 3, 4, 5]),
    (SignalFilter.ACTIONABLE, [1, 2, 3, 4]),  # orders, and holds carrying a stop or take-profit
    (SignalFilter.ORDERS, [1, 4]),
])
def test_the_signal_filter_decides_what_reaches_l1(mode, published):
    inputs = [(Topic.BARS, bar(k)) for k in range(len(SCRIPT))]
    got, adapter = run(run_adapter(ScriptedGenerator(SCRIPT), inputs, expected_signals=len(published),
                                   signals=mode))
    assert [r.message for r in got] == [SCRIPT[k] for k in published]
    assert adapter.stats.bars == len(SCRIPT) and adapter.stats.signals == len(published)


def test_decisions_fills_and_bars_reach_the_engine_in_publication_order():
    inputs = [(Topic.DECISIONS, DECISION), (Topic.BARS, bar(0)), (Topic.FILLS, fill(1)), (Topic.BARS, bar(1)),
              (Topic.FILLS, fill(2)), (Topic.DECISIONS, DECISION), (Topic.BARS, bar(2))]
    gen = ScriptedGenerator(SCRIPT)
    run(run_adapter(gen, inputs, expected_signals=3, signals="all"))
    f1, f2 = fill(1), fill(2)
    assert gen.calls == [
        ("decision", DECISION), ("bar", BTC, T0),
        ("fill", BTC, "buy", f1.qty, 100.0, f1.ts_ms, 0.0), ("bar", BTC, T0 + MINUTE),
        ("fill", BTC, "buy", f2.qty, 100.0, f2.ts_ms, 0.0), ("decision", DECISION), ("bar", BTC, T0 + 2 * MINUTE),
    ]


def test_a_signal_older_than_the_limit_is_flagged_stale_not_dropped():
    # The transport stamps bar k at 1000 * k ms; the adapter publishes its signal 250 ms
    # later, except bar 2's and bar 4's: 5000 ms later.
    now = {"ms": 0}
    transport = InProcessTransport(clock=lambda: now["ms"])
    delays = iter([250, 250, 5000, 250, 5000, 250])

    def adapter_clock() -> int:
        return now["ms"] + next(delays)

    async def main() -> tuple[list, L2BusAdapter]:
        bus = MessageBus(transport)
        signals = await bus.subscribe([Topic.SIGNALS], group="l1")
        adapter = L2BusAdapter(bus, ScriptedGenerator(SCRIPT), signals="all", stale_after_ms=1000,
                               clock=adapter_clock)
        worker = asyncio.create_task(adapter.start_processing())
        got = []
        for k in range(len(SCRIPT)):
            now["ms"] = 1000 * k
            await bus.publish(Topic.BARS, bar(k))
            got.append(await signals.get())
        await adapter.stop()
        await worker
        await bus.close()
        return got, adapter

    got, adapter = run(main())
    assert [r.meta["age_ms"] for r in got] == [250, 250, 5000, 250, 5000, 250]
    assert [r.meta["stale"] for r in got] == [False, False, True, False, True, False]
    assert [r.message for r in got] == SCRIPT
    assert adapter.stats.stale == 2


def test_malformed_and_refused_messages_are_logged_counted_and_skipped(caplog):
    bars = generate_bars(40, seed=3)
    rows = [Bar(BTC, *row) for row in zip(*(bars[k].tolist() for k in ("ts", "open", "high", "low", "close",
                                                                          "volume")))]
    good = [(Topic.DECISIONS, DECISION)] + [(Topic.BARS, b) for b in rows]
    bad = {  # position in `good` before which it is injected -> (topic, message, kind)
        1: (Topic.DECISIONS, b"{oops", "malformed"),
        3: (Topic.BARS, b'{"v": 9, "type": "bar", "payload": {}}', "malformed"),
        5: (Topic.FILLS, encode(bar(0)), "malformed"),  # a bar on the fills topic
        8: (Topic.BARS, rows[3], "refused"),  # a bar again: out of order for the engine
        9: (Topic.FILLS, Fill("SOL/USDT", "buy", 1.0, 20.0, T0), "refused"),  # a symbol the engine never saw
        12: (Topic.BARS, encode(rows[11])[:-1], "malformed"),  # cut short
        20: (Topic.DECISIONS, json.dumps({"v": 1, "type": "decision", "payload": {
            **DECISION.to_dict(), "target_exposure": -0.1}}), "malformed"),
    }
    inputs = []
    for k, item in enumerate(good):
        if k in bad:
            inputs.append(bad[k][:2])
        inputs.append(item)
    reference = TacticalSignalGenerator()
    reference.on_strategic_decision(DECISION)
    expected = [reference.on_bar(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close, b.volume).to_dict() for b in rows]

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"):
        got, adapter = run(run_adapter(TacticalSignalGenerator(), inputs, expected_signals=len(rows), signals="all"))

    assert [r.message.to_dict() for r in got] == expected
    kinds = [kind for _, _, kind in bad.values()]
    stats = adapter.stats
    assert (stats.malformed, stats.refused) == (kinds.count("malformed"), kinds.count("refused"))
    assert stats.rejected_by_topic == {Topic.DECISIONS: 2, Topic.BARS: 3, Topic.FILLS: 2}
    assert (stats.decisions, stats.bars, stats.fills) == (1, len(rows), 0)
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == len(bad)
    assert "target_exposure" in stats.last_rejection
    assert any("out of order" in r.getMessage() for r in skipped)


def test_stopping_before_the_worker_ran_ends_it_without_reading():
    async def main() -> None:
        bus = MessageBus()
        adapter = L2BusAdapter(bus, ScriptedGenerator([]))
        worker = asyncio.create_task(adapter.start_processing())
        await adapter.stop()
        await asyncio.wait_for(worker, 1.0)
        await bus.close()

    run(main())


def test_the_adapter_rejects_a_negative_staleness_limit():
    with pytest.raises(ValueError, match="stale_after_ms"):
        L2BusAdapter(MessageBus(), ScriptedGenerator([]), stale_after_ms=-1)


# ------------------------------------------------------------------ real data: equal to a replay

N_BARS = 3_000  # per symbol: 6,000 bars, past the 2,100-bar warm-up on both


@pytest.fixture(scope="module")
def streams(btc_1m, eth_1m) -> list[BarStream]:
    return [BarStream(BTC, {k: v[:N_BARS] for k, v in btc_1m.items()}),
            BarStream(ETH, {k: v[:N_BARS] for k, v in eth_1m.items()})]


@pytest.fixture(scope="module")
def decisions(streams) -> list[StrategicDecision]:
    ts = streams[0].bars["ts"]
    return [
        StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive", universe=(BTC, ETH)),
        StrategicDecision(regime="volatile", target_exposure=0.4, risk_appetite="moderate", universe=(ETH,),
                          ts_ms=int(ts[2_400])),
        StrategicDecision(regime="ranging", target_exposure=0.9, risk_appetite="aggressive", universe=(BTC, ETH),
                          ts_ms=int(ts[2_700])),
    ]


def test_the_bus_with_a_paper_l1_gives_exactly_the_signals_and_fills_of_a_replay(streams, decisions):
    # Reference: the replay loop, one process, no bus.
    ref_gen = TacticalSignalGenerator(config=demo_config())
    ref_broker = PaperBroker(ref_gen.config.engine.initial_equity)
    out = io.StringIO()
    summary = replay(ref_gen, streams, decisions, ref_broker, out=out, all_signals=True)
    expected = [json.loads(line) for line in out.getvalue().splitlines()]
    # The run must exercise what the bus has to get right: fills before their bar and
    # decisions mid-stream.
    assert summary.fills["entry"] >= 5 and summary.decisions_applied == len(decisions)

    # Over the bus: one task plays L3, the market and a paper L1 (it waits for each bar's
    # signal before the next bar, as the paper broker needs it to place the next fills).
    broker = PaperBroker(ref_broker.initial_equity)

    async def main() -> tuple[list, L2BusAdapter]:
        bus = MessageBus()
        signals = await bus.subscribe([Topic.SIGNALS], group="l1")
        adapter = L2BusAdapter(bus, TacticalSignalGenerator(config=demo_config()), signals="all")
        worker = asyncio.create_task(adapter.start_processing())
        pending = sorted(decisions, key=lambda d: -1 if d.ts_ms is None else d.ts_ms)
        got = []
        for b in merged_bars(streams):
            while pending and (pending[0].ts_ms is None or pending[0].ts_ms <= b.ts_ms):
                await bus.publish(Topic.DECISIONS, pending.pop(0))
            for f in broker.on_bar(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close):
                await bus.publish(Topic.FILLS, Fill(f.symbol, f.side, f.qty, f.price, f.ts_ms, f.fee))
            await bus.publish(Topic.BARS, b)
            received = await signals.get()
            broker.on_signal(received.message)
            got.append(received.message.to_dict())
        await adapter.stop()
        await worker
        await bus.close()
        return got, adapter

    got, adapter = run(main())
    assert [d["signal_id"] for d in got] == [d["signal_id"] for d in expected]
    assert got == expected
    assert broker.fills == ref_broker.fills
    stats = adapter.stats
    assert (stats.bars, stats.fills, stats.decisions) == (2 * N_BARS, len(ref_broker.fills), len(decisions))
    assert stats.malformed == stats.refused == 0


@pytest.mark.parametrize("mode", [SignalFilter.ALL, SignalFilter.ORDERS])
def test_tiny_queues_slow_the_publisher_down_but_change_no_signal(streams, decisions, mode):
    # No L1 here (no fills): the publisher sends everything as fast as the queues take it.
    bars = merged_bars(streams)
    ref = TacticalSignalGenerator(config=demo_config())
    pending = sorted(decisions, key=lambda d: -1 if d.ts_ms is None else d.ts_ms)
    schedule: list[tuple[str, Any]] = []
    expected = []
    for b in bars:
        while pending and (pending[0].ts_ms is None or pending[0].ts_ms <= b.ts_ms):
            ref.on_strategic_decision(pending[0])
            schedule.append((Topic.DECISIONS, pending.pop(0)))
        schedule.append((Topic.BARS, b))
        signal = ref.on_bar(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close, b.volume)
        if mode is SignalFilter.ALL or signal.side is not Side.HOLD:
            expected.append(signal.to_dict())
    assert len(expected) >= 10

    transport = InProcessTransport({topic: QueuePolicy(4) for topic in Topic})
    consumer_blocked = []

    async def main() -> list:
        bus = MessageBus(transport)
        signals = await bus.subscribe([Topic.SIGNALS], group="l1")
        adapter = L2BusAdapter(bus, TacticalSignalGenerator(config=demo_config()), signals=mode)
        worker = asyncio.create_task(adapter.start_processing())
        publisher = asyncio.create_task(_publish_all(bus, schedule))
        got = []
        while len(got) < len(expected):
            got.append((await signals.get()).message.to_dict())
            if len(got) % 500 == 0:
                consumer_blocked.append(not publisher.done())
        await publisher
        await adapter.stop()
        await worker
        await bus.close()
        return got

    got = run(main())
    assert got == expected
    if mode is SignalFilter.ALL:
        # The publisher was still waiting on its bounded queues while signals came out.
        assert consumer_blocked and all(consumer_blocked[:-1])

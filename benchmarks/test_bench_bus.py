"""In-process bus overhead per message: MessageBus vs a bare asyncio.Queue.

One round streams ``MESSAGES`` bars from a publisher task to a consumer task and reports
the time per message. Ours is :class:`~l2fast.bus.MessageBus` on the in-process
transport: type check against the topic, envelope, per-topic bounded queue (1,024),
delivery stamped with an id and a time, validation on receipt. The alternative is the
least a Python user could write for the same hand-over: ``asyncio.Queue(maxsize=1024)``
with ``put``/``get`` of the same bar objects, with no topic, id, time or check, so the
ratio measures what the bus's guarantees cost (it is below 1 by construction). Bars are
built outside the timing.

Gate (alternative median / ours median) sits at about half the ratio measured on the
2-core development machine; the absolute target is the issue's 5 us per message.
"""

from __future__ import annotations

import asyncio

import pytest

from l2fast.bus import Bar, MessageBus, Topic

GROUP = "in-process bus, one message publisher -> consumer"
MESSAGES = 10_000
ROUNDS = 30
# Measured 0.29x (1.6 us per message for ours vs 0.47 us for the bare queue) on the
# 2-core development machine.
GATE = 0.15
TARGET = 0.5
OURS_TARGET_S = 5e-6
T0 = 1_704_067_200_000


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    return [Bar("BTC/USDT", T0 + 60_000 * k, 100.0, 101.0, 99.0, 100.5, 1.0) for k in range(MESSAGES)]


async def _through_bus(bars: list[Bar]) -> None:
    bus = MessageBus()
    sub = await bus.subscribe([Topic.BARS], group="bench")

    async def publish() -> None:
        for b in bars:
            await bus.publish(Topic.BARS, b)

    publisher = asyncio.create_task(publish())
    for _ in range(len(bars)):
        await sub.get()
    await publisher
    await bus.close()


async def _through_queue(bars: list[Bar]) -> None:
    queue: asyncio.Queue[Bar] = asyncio.Queue(maxsize=1024)

    async def publish() -> None:
        for b in bars:
            await queue.put(b)

    publisher = asyncio.create_task(publish())
    for _ in range(len(bars)):
        await queue.get()
    await publisher


@pytest.mark.parametrize("impl", ["l2fast.MessageBus (in-process)", "asyncio.Queue"])
def test_bus_message_overhead(bench, bars, impl: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        if impl.startswith("l2fast"):
            b = bench(GROUP, impl, calls=MESSAGES, ours_target_s=OURS_TARGET_S)
            b.pedantic(lambda: loop.run_until_complete(_through_bus(bars)), rounds=ROUNDS, warmup_rounds=2)
        else:
            b = bench(GROUP, impl, gate=GATE, target=TARGET, calls=MESSAGES)
            b.pedantic(lambda: loop.run_until_complete(_through_queue(bars)), rounds=ROUNDS, warmup_rounds=2)
    finally:
        loop.close()

"""The processes around an L2 worker: a market/L3 publisher and an L1 signal reader.

``python -m l2fast publish`` (:func:`feed`, :func:`publish_feed`) puts L3 decisions,
bars and, optionally, L1 fills recorded earlier on the bus in the order an engine must
see them: a decision when the bar time reaches its ``ts_ms`` (before the first bar when
it has none), and each fill right before the bar of its symbol that opens at the fill's
``ts_ms`` (L1 reports an execution before L2's next bar of that symbol).

``python -m l2fast signals`` (:func:`collect_signals`) is a minimal L1: it reads
``l2.signals``, drops duplicates by ``signal_id`` (a restarted worker publishes the
signals since its last snapshot again) and writes one JSON line per signal. On a bus
with a key it takes only signals signed with it (:mod:`l2fast.bus.bus`): anything else,
and anything malformed, is logged, counted (:class:`ReaderStats`), written to the dead
letters and acknowledged, never passed on. Time while
Redis is unreachable is not idle time: an outage ends in
:class:`~l2fast.errors.BusUnavailableError` (``--redis-timeout``), never in a quiet stop.
A Redis that lost its state (restarted without persistence, flushed) costs the reader its
group: the subscription creates it again, logs what may be lost and reads on
(:mod:`l2fast.bus.redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from l2fast.bus.adapter import dead_letter_record
from l2fast.bus.bus import MessageBus, Received, Topic
from l2fast.bus.inprocess import wall_clock_ms
from l2fast.bus.schema import Bar, Fill, Message, MessageError, UnauthenticatedError
from l2fast.errors import InvalidInputError
from l2fast.evaluation.replay import BarStream, iter_jsonl, merge_streams
from l2fast.signals import StrategicDecision

if TYPE_CHECKING:
    from l2fast.bus.redis import RedisRetry

__all__ = ["L1_CONSUMER", "L1_GROUP", "ReaderStats", "collect_signals", "feed", "load_fills", "publish_feed"]

logger = logging.getLogger("l2fast.bus")

#: Default consumer group of the minimal L1 (:func:`collect_signals`, ``python -m l2fast signals``)
#: and this reader's name in it.
L1_GROUP = "l1"
L1_CONSUMER = "l1-0"

_COLUMNS = ("ts", "open", "high", "low", "close", "volume")

T = TypeVar("T")


def load_fills(path: str | os.PathLike[str]) -> list[Fill]:
    """Fills from a JSONL file (one :meth:`Fill.to_dict` per line; blank lines skipped).

    Raises:
        OSError: The file cannot be read.
        InvalidInputError: A line is not JSON or not a valid fill (file and line named).
    """
    fills = []
    for lineno, data in iter_jsonl(path):
        try:
            fills.append(Fill.from_dict(data))
        except MessageError as exc:
            raise InvalidInputError(f"{path}:{lineno}: {exc}") from None
    return fills


def feed(streams: Sequence[BarStream], decisions: Sequence[StrategicDecision] = (),
         fills: Iterable[Fill] = ()) -> list[tuple[Topic, Message]]:
    """Every message to publish, in the order the engine must read them (module docstring).

    Args:
        streams: One bar stream per symbol (merged by open time, then stream order).
        decisions: L3 decisions, in time order.
        fills: Fills, each keyed to the bar of its symbol opening at its ``ts_ms``.

    Raises:
        InvalidInputError: A fill matches no bar of its symbol.
    """
    which, columns = merge_streams(streams)
    waiting: dict[tuple[str, int], list[Fill]] = {}
    for f in fills:
        waiting.setdefault((f.symbol, f.ts_ms), []).append(f)
    pending = list(decisions)
    out: list[tuple[Topic, Message]] = []
    rows = zip(which.tolist(), *(columns[c].tolist() for c in _COLUMNS))
    for k, ts, o, h, lo, c, v in rows:
        while pending and (pending[0].ts_ms is None or pending[0].ts_ms <= ts):
            out.append((Topic.DECISIONS, pending.pop(0)))
        symbol = streams[k].symbol
        out.extend((Topic.FILLS, f) for f in waiting.pop((symbol, ts), ()))
        out.append((Topic.BARS, Bar(symbol, ts, o, h, lo, c, v)))
    if waiting:
        symbol, ts = next(iter(waiting))
        raise InvalidInputError(f"fills: no {symbol} bar opens at ts_ms={ts} (a fill is reported before the bar "
                                "of its symbol that opens at its ts_ms)")
    return out


async def publish_feed(bus: MessageBus, messages: Sequence[tuple[Topic, Message]], *,
                       rate: float | None = None, batch: int = 256) -> int:
    """Publish ``messages`` in order: runs of one topic together, up to ``batch`` per call
    (:meth:`MessageBus.publish_many`), or one by one at most ``rate`` per second.

    Returns:
        The number published.
    """
    if rate:
        start = time.monotonic()
        for n, (topic, message) in enumerate(messages, 1):
            await bus.publish(topic, message)
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        return len(messages)
    k = 0
    while k < len(messages):
        topic = messages[k][0]
        end = k + 1
        while end < len(messages) and end - k < batch and messages[end][0] == topic:
            end += 1
        await bus.publish_many(topic, [m for _, m in messages[k:end]])
        k = end
    return len(messages)


# Signals taken from the subscription per call.
_READ_BATCH = 256


@dataclass(slots=True)
class ReaderStats:
    """The deliveries :func:`collect_signals` refused (each also a dead letter).

    Attributes:
        unauthenticated: Not signed with the bus's key (on a bus with a key).
        malformed: Refused by the schema.
    """

    unauthenticated: int = 0
    malformed: int = 0


async def collect_signals(bus: MessageBus, *, group: str = L1_GROUP, consumer: str = L1_CONSUMER,
                          count: int | None = None,
                          idle_exit_s: float | None = None, on_signal: Callable[[dict[str, Any]], None] | None = None,
                          stats: ReaderStats | None = None) -> tuple[list[dict[str, Any]], int]:
    """Read signals until ``count`` distinct ones or ``idle_exit_s`` seconds without any.

    Args:
        bus: The bus.
        group: L1's consumer group.
        consumer: This reader's name in the group.
        count: Stop after this many distinct signals (None: no limit).
        idle_exit_s: Stop after this long without a new message (None: wait for ever),
            not counting the time the bus's Redis, if any, was unreachable.
        on_signal: Called with each distinct signal's dict (its ``meta`` under ``"meta"``).
        stats: Counts the deliveries refused (unauthenticated or malformed: logged, written
            to the dead letters and acknowledged, never passed on).

    Returns:
        The distinct signals (``TacticalSignal.to_dict()``) in arrival order, and the
        number of duplicates dropped.

    Raises:
        BusUnavailableError: The bus's Redis stayed unreachable past its time limit.
    """
    # Only the Redis transport has retries (an in-process bus is never unreachable).
    retry: RedisRetry | None = getattr(bus.transport, "retry", None)
    subscription = await bus.subscribe([Topic.SIGNALS], group=group, consumer=consumer)
    seen: set[str] = set()
    signals: list[dict[str, Any]] = []
    duplicates = 0
    if stats is None:
        stats = ReaderStats()
    try:
        while count is None or len(signals) < count:
            # No more than could still be wanted: what is taken is acknowledged.
            limit = _READ_BATCH if count is None else min(_READ_BATCH, count - len(signals))
            batch = await _unless_idle(subscription.get_many(limit), idle_exit_s, retry)
            if batch is None:
                break
            for received in batch:
                if received.message is None:
                    # Before the acknowledgement: a reader killed between the two writes it again.
                    await _refuse(bus, received, group, consumer, stats)
            await subscription.ack_many(batch)
            for received in batch:
                if received.message is None:
                    continue
                data = received.message.to_dict()
                if data["signal_id"] in seen:
                    duplicates += 1
                    continue
                seen.add(data["signal_id"])
                signals.append(data)
                if on_signal is not None:
                    on_signal({**data, "meta": dict(received.meta)})
    finally:
        await subscription.close()
    return signals, duplicates


async def _refuse(bus: MessageBus, received: Received, group: str, consumer: str, stats: ReaderStats) -> None:
    """Count, log and dead-letter a delivery the bus refused."""
    error = received.error
    if type(error) is UnauthenticatedError:
        kind = "unauthenticated"
        stats.unauthenticated += 1
    else:
        kind = "malformed"
        stats.malformed += 1
    logger.warning("%s: %s message %s skipped: %s: %s", consumer, received.topic, received.id, kind, error)
    await bus.transport.dead_letter(dead_letter_record(received, group=group, consumer=consumer, kind=kind,
                                                       error_type=type(error).__name__, reason=str(error),
                                                       dead_ms=wall_clock_ms()))


async def _unless_idle(read: Awaitable[T], idle_s: float | None, retry: RedisRetry | None) -> T | None:
    """``read``'s result, or None once it has waited ``idle_s`` while Redis answered (cancelled).

    Idle time counts from the later of the call and the end of the last outage; during an
    outage ``read`` keeps retrying, until it gets messages or gives up.
    """
    if idle_s is None:
        return await read
    task = asyncio.ensure_future(read)
    idle_from = time.monotonic()
    while not task.done():
        if retry is not None and retry.unreachable:
            left = idle_s
        else:
            if retry is not None and retry.recovered_at is not None:
                idle_from = max(idle_from, retry.recovered_at)
            left = idle_from + idle_s - time.monotonic()
            if left <= 0:
                # Entries the cancelled read took stay pending (never acknowledged): a
                # later reader of this consumer gets them again.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None
        await asyncio.wait({task}, timeout=left)
    return task.result()

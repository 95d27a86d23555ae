"""L2 on the bus: decisions, bars and fills in, the engine's signals out.

:class:`L2BusAdapter` is the seed's ``L2BusAdapter(bus, signal_generator)``: its
:meth:`~L2BusAdapter.start_processing` reads ``l3.decisions``, ``l1.fills`` and
``market.bars`` through ONE subscription, in the order the transport delivers them (both
transports: publication order across the three topics), and per message:

- decision: ``generator.on_strategic_decision``;
- fill: ``generator.on_fill`` (so a fill published before its bar is booked before it,
  as the engine requires);
- bar: ``generator.on_bar``, then the signal is published to ``l2.signals`` when the
  adapter's :class:`SignalFilter` lets it through, with ``meta`` ``{"age_ms": ...,
  "stale": ...}``;

and acknowledges the message only after that (at-least-once on a transport that
redelivers).

Batching: while the transport has messages ready (:meth:`BusSubscription.ready`), the
adapter handles up to ``batch`` of them before it publishes their signals together
(:meth:`MessageBus.publish_many`: one round trip on Redis) and then acknowledges them;
it flushes as soon as nothing is ready, so a quiet feed gets each signal at once.

Crash safety (``snapshot=PATH``): acknowledging a message after its signal is published
is not enough when the engine's state dies with the process: a restarted engine would
miss what was acknowledged. With a snapshot path, the adapter acknowledges only the
messages that a snapshot covers: it writes ``generator.snapshot(PATH)`` every
``snapshot_every`` messages or ``snapshot_interval_s`` seconds (whichever comes first),
and on :meth:`~L2BusAdapter.stop`, and acknowledges everything handled before it. A
worker killed between two snapshots restarts from the last one
(``TacticalSignalGenerator.restore``), the transport delivers the unacknowledged messages
again, and the engine, deterministic, publishes the same signals again: duplicates with
the same ``signal_id``, which L1 drops. No decision, bar or fill is lost or applied twice.

Staleness: a signal's age is the time from its bar's publication on the bus
(:attr:`~l2fast.bus.transport.Delivery.published_ms`) to the signal's publication, by the
adapter's clock: the delay the bus and the engine added, queueing under backpressure
included. The time since the bar closed is already known to L1 from the signal's
``ts_ms``. A signal older than ``stale_after_ms`` is still published, with ``"stale":
true``: dropping it could lose an entry the engine has reserved; L1 decides.

Poison messages: a delivery that is unauthenticated (on a bus with a key: not signed, or
not signed with the bus's key for its topic; refused before it is decoded, see
:mod:`l2fast.bus.bus`), that is malformed (it fails the schema, or is of the wrong type
for its topic), that the engine refuses (a bar out of order or duplicated, a fill
for a symbol it does not follow, a universe too large...), or whose handling raises an
error of any other type (a bug, or an input no check foresaw: counted as ``dead`` and
logged with its traceback) is logged with the reason on the ``l2fast.bus`` logger,
counted in :attr:`L2BusAdapter.stats`, written to the transport's dead letters
(:meth:`~l2fast.bus.transport.Transport.dead_letter`: the message's data as read, its
topic, stream and id, the group and consumer, the kind, the error's type and text),
acknowledged (it would fail again) and skipped: the worker goes on, and no message can
stop it for good. A dead letter is written before its message is acknowledged; a worker
killed between the two writes it again on redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from l2fast.bus.bus import BusSubscription, MessageBus, Received, Topic
from l2fast.bus.inprocess import wall_clock_ms
from l2fast.bus.schema import Bar, Envelope, Fill, UnauthenticatedError, encode
from l2fast.bus.transport import BusClosed
from l2fast.errors import L2FastError
from l2fast.signals import Side, StrategicDecision, TacticalSignal

if TYPE_CHECKING:
    from l2fast.engine.generator import TacticalSignalGenerator

__all__ = [
    "DEFAULT_CONSUMER",
    "DEFAULT_GROUP",
    "DEFAULT_SIGNALS",
    "INPUT_TOPICS",
    "SNAPSHOT_EVERY",
    "SNAPSHOT_INTERVAL_S",
    "AdapterStats",
    "L2BusAdapter",
    "SignalFilter",
    "dead_letter_record",
]

logger = logging.getLogger("l2fast.bus")

#: What the adapter reads, in one subscription.
INPUT_TOPICS: tuple[Topic, ...] = (Topic.DECISIONS, Topic.FILLS, Topic.BARS)


class SignalFilter(StrEnum):
    """Which signals the adapter publishes."""

    #: Buy and sell signals only.
    ORDERS = "orders"
    #: Buy and sell signals, and holds that carry an open position's stop-loss or
    #: take-profit (moved by trailing and breakeven: L1 must adopt them).
    ACTIONABLE = "actionable"
    #: Every signal, one per bar.
    ALL = "all"


# The adapter's defaults, which the worker (WorkerOptions) and the CLI take from here.
#: Which signals are published.
DEFAULT_SIGNALS = SignalFilter.ACTIONABLE
#: Consumer group of the L2 workers, and this reader's name in it.
DEFAULT_GROUP = "l2"
DEFAULT_CONSUMER = "l2-0"
#: Messages handled between two snapshots (with a snapshot path).
SNAPSHOT_EVERY = 10_000
#: Longest time between two snapshots while messages come, seconds.
SNAPSHOT_INTERVAL_S = 5.0


@dataclass(slots=True)
class AdapterStats:
    """What an adapter has done so far.

    Attributes:
        decisions: Decisions installed.
        fills: Fills booked.
        bars: Bars the engine answered.
        signals: Signals published.
        stale: Published signals flagged stale.
        unauthenticated: Deliveries refused as not signed with the bus's key (on a bus
            with a key), before they were decoded.
        malformed: Deliveries refused by the schema (or on the wrong topic).
        refused: Valid messages the engine refused.
        dead: Messages whose handling raised an error of another type (module docstring).
        rejected_by_topic: ``unauthenticated + malformed + refused + dead`` per topic.
        last_rejection: The reason of the latest rejection, or None.
        snapshots: Engine snapshots written (with a snapshot path).
    """

    decisions: int = 0
    fills: int = 0
    bars: int = 0
    signals: int = 0
    stale: int = 0
    unauthenticated: int = 0
    malformed: int = 0
    refused: int = 0
    dead: int = 0
    rejected_by_topic: dict[str, int] = field(default_factory=dict)
    last_rejection: str | None = None
    snapshots: int = 0


class L2BusAdapter:
    """Drives a :class:`~l2fast.engine.generator.TacticalSignalGenerator` from a :class:`MessageBus`.

    Args:
        bus: The bus to read from and publish to.
        generator: The engine (anything with ``on_strategic_decision``, ``on_fill`` and
            ``on_bar`` like :class:`~l2fast.engine.generator.TacticalSignalGenerator`).
        signals: Which signals to publish (:class:`SignalFilter`).
        stale_after_ms: Age above which a signal is flagged stale (module docstring);
            None never flags.
        group: Consumer group of the subscription.
        consumer: Consumer name within the group.
        clock: Epoch milliseconds, the clock of the transport's ``published_ms``.
        snapshot: Snapshot file; acknowledgements then wait for the snapshot that covers
            them (module docstring). None acknowledges after each message.
        snapshot_every: Messages handled between two snapshots, >= 1.
        snapshot_interval_s: Longest time between two snapshots while messages come, > 0.
        batch: Most messages handled before their signals are published together (and
            the messages acknowledged); fewer when the transport has nothing ready.
        symbols: The symbols this adapter reads, on a transport that partitions bars and
            fills by symbol (several workers sharing the symbols); a bar or fill of any
            other symbol that reaches it anyway is refused. None reads them all.

    Raises:
        ValueError: ``signals`` is unknown, ``stale_after_ms`` is negative, or a
            snapshot setting is out of range.
    """

    def __init__(self, bus: MessageBus, generator: TacticalSignalGenerator, *,
                 signals: SignalFilter | str = DEFAULT_SIGNALS, stale_after_ms: int | None = None,
                 group: str = DEFAULT_GROUP, consumer: str = DEFAULT_CONSUMER, clock: Callable[[], int] = wall_clock_ms,
                 snapshot: str | os.PathLike[str] | None = None, snapshot_every: int = SNAPSHOT_EVERY,
                 snapshot_interval_s: float = SNAPSHOT_INTERVAL_S, batch: int = 256,
                 symbols: Sequence[str] | None = None) -> None:
        if stale_after_ms is not None and (type(stale_after_ms) is not int or stale_after_ms < 0):
            raise ValueError(f"stale_after_ms={stale_after_ms!r}: must be an integer >= 0 or None")
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch={batch!r}: must be an integer >= 1")
        if type(snapshot_every) is not int or snapshot_every < 1:
            raise ValueError(f"snapshot_every={snapshot_every!r}: must be an integer >= 1")
        if not (isinstance(snapshot_interval_s, (int, float)) and snapshot_interval_s > 0):
            raise ValueError(f"snapshot_interval_s={snapshot_interval_s!r}: must be a number > 0")
        self.bus = bus
        self.generator = generator
        self.signals = SignalFilter(signals)
        self.stale_after_ms = stale_after_ms
        self.group = group
        self.consumer = consumer
        self.stats = AdapterStats()
        #: Set once the adapter reads its topics (messages published before are kept).
        self.subscribed = asyncio.Event()
        self.snapshot = Path(snapshot) if snapshot is not None else None
        self.snapshot_every = snapshot_every
        self.snapshot_interval_s = float(snapshot_interval_s)
        self.batch = batch
        self.symbols = tuple(symbols) if symbols is not None else None
        self._owned = frozenset(self.symbols) if self.symbols is not None else None
        self._clock = clock
        self._subscription: BusSubscription | None = None
        self._stopping = False
        # Signals not published yet, with their bar's publication time; the messages
        # handled since the last flush; those flushed since the last snapshot.
        self._outbox: list[tuple[TacticalSignal, int]] = []
        # Dead letters of the messages handled since the last flush, written before their
        # messages are acknowledged.
        self._dead: list[dict[str, str | bytes]] = []
        self._handled: list[Received] = []
        self._unacked: list[Received] = []
        self._last_snapshot = time.monotonic()

    async def start_processing(self) -> None:
        """Read and handle messages until :meth:`stop` or the bus closes (module docstring).

        Raises:
            RuntimeError: The adapter is already processing.
        """
        if self._subscription is not None:
            raise RuntimeError("the adapter is already processing")
        if self._stopping:
            return
        clean = False
        subscription = await self.bus.subscribe(INPUT_TOPICS, group=self.group, consumer=self.consumer,
                                                partitions=self.symbols)
        self._subscription = subscription
        self.subscribed.set()
        try:
            while not self._stopping:
                # What is at hand, up to a batch: handled, then its signals published and
                # the messages acknowledged before the next wait.
                for received in await subscription.get_many(self.batch):
                    self._handle(received)
                    self._handled.append(received)
                await self._flush(subscription)
            clean = True
        except BusClosed:
            clean = True
        finally:
            self._subscription = None
            # After any other exception (no message raises one: the transport, a snapshot
            # that cannot be written, Redis given up) the state is not trusted: nothing more
            # is published or snapshotted; the unacknowledged messages come again.
            if clean:
                with contextlib.suppress(BusClosed):
                    await self._flush(subscription)
                # A snapshot must not cover messages whose signals were not published.
                if self.snapshot is not None and not self._handled:
                    await self._checkpoint(subscription, self.snapshot)
            await subscription.close()

    async def _flush(self, subscription: BusSubscription) -> None:
        # Signals first, then the acknowledgements of the messages that made them.
        if self._outbox:
            now = self._clock()
            signals, metas = [], []
            for signal, bar_published_ms in self._outbox:
                age = max(now - bar_published_ms, 0)
                stale = self.stale_after_ms is not None and age > self.stale_after_ms
                signals.append(signal)
                metas.append({"age_ms": age, "stale": stale})
                self.stats.stale += stale
            await self.bus.publish_many(Topic.SIGNALS, signals, metas)
            self.stats.signals += len(signals)
            self._outbox = []
        if self._dead:
            for record in self._dead:
                await self.bus.transport.dead_letter(record)
            self._dead = []
        handled, self._handled = self._handled, []
        if self.snapshot is None:
            await subscription.ack_many(handled)
            return
        self._unacked.extend(handled)
        if (len(self._unacked) >= self.snapshot_every
                or time.monotonic() - self._last_snapshot >= self.snapshot_interval_s):
            await self._checkpoint(subscription, self.snapshot)

    async def _checkpoint(self, subscription: BusSubscription, path: Path) -> None:
        # The snapshot first: an acknowledgement must never run ahead of the state.
        self.generator.snapshot(path)
        self._last_snapshot = time.monotonic()
        self.stats.snapshots += 1
        handled, self._unacked = self._unacked, []
        try:
            await subscription.ack_many(handled)
        except BusClosed:
            pass  # the transport is gone: they come again, and the snapshot makes them duplicates

    async def stop(self) -> None:
        """Make :meth:`start_processing` return once the messages in hand are handled and acked.

        Final: a stopped adapter does not start again (:meth:`start_processing` returns at
        once), so calling it before the processing task first ran is safe.
        """
        self._stopping = True
        if self._subscription is not None:
            await self._subscription.close()

    def _handle(self, received: Received) -> None:
        message = received.message
        if message is None:
            kind = "unauthenticated" if type(received.error) is UnauthenticatedError else "malformed"
            self._reject(received, kind, str(received.error), type(received.error).__name__)
            return
        owned = self._owned
        if owned is not None and isinstance(message, (Bar, Fill)) and message.symbol not in owned:
            # A tag binds the topic, not the partition: a genuine entry of another symbol
            # copied into one of this adapter's streams must not give it a symbol that
            # another worker owns (two engines would signal it).
            self._reject(received, "refused", f"a {message.symbol} {type(message).__name__.lower()} in the stream "
                         f"{received.delivery.stream}: this adapter reads only {', '.join(self.symbols or ())}",
                         "InvalidInputError")
            return
        gen = self.generator
        try:
            if type(message) is Bar:
                signal = gen.on_bar(message.symbol, message.ts_ms, message.open, message.high, message.low,
                                    message.close, message.volume)
            elif type(message) is Fill:
                gen.on_fill(message.symbol, message.side, message.qty, message.price, message.ts_ms,
                            fee=message.fee)
                self.stats.fills += 1
                return
            elif type(message) is StrategicDecision:
                gen.on_strategic_decision(message)
                self.stats.decisions += 1
                return
            else:  # a signal: the bus refuses one on an input topic (its type is checked against the topic)
                self._reject(received, "refused", f"not an input message: {type(message).__name__}", "TypeError")
                return
        except L2FastError as exc:
            self._reject(received, "refused", str(exc), type(exc).__name__)
            return
        except Exception as exc:
            # Not an error the engine raises on purpose: a bug, or an input its checks
            # missed. Stopping would only crash-loop on this message once restarted.
            self._reject(received, "dead", f"{type(exc).__name__}: {exc}", type(exc).__name__, exc)
            return
        self.stats.bars += 1
        if self._wanted(signal):
            self._outbox.append((signal, received.published_ms))

    def _wanted(self, signal: TacticalSignal) -> bool:
        if signal.side is not Side.HOLD or self.signals is SignalFilter.ALL:
            return True
        return self.signals is SignalFilter.ACTIONABLE and (
            signal.stop_loss is not None or signal.take_profit is not None)

    def _reject(self, received: Received, kind: str, reason: str, error_type: str,
                error: BaseException | None = None) -> None:
        stats = self.stats
        if kind == "unauthenticated":
            stats.unauthenticated += 1
        elif kind == "malformed":
            stats.malformed += 1
        elif kind == "refused":
            stats.refused += 1
        else:
            stats.dead += 1
        stats.rejected_by_topic[received.topic] = stats.rejected_by_topic.get(received.topic, 0) + 1
        stats.last_rejection = reason
        if error is None:
            logger.warning("%s: %s message %s skipped: %s", self.consumer, received.topic, received.id,
                           f"{kind}: {reason}")
        else:
            logger.error("%s: %s message %s skipped: %s", self.consumer, received.topic, received.id,
                         f"{kind}: {reason}", exc_info=error)
        self._dead.append(dead_letter_record(received, group=self.group, consumer=self.consumer, kind=kind,
                                             error_type=error_type, reason=reason, dead_ms=self._clock()))


def dead_letter_record(received: Received, *, group: str, consumer: str, kind: str, error_type: str, reason: str,
                       dead_ms: int) -> dict[str, str | bytes]:
    """The dead letter of a delivery a consumer skips (module docstring: the fields).

    Args:
        received: The delivery.
        group: The consumer's group.
        consumer: The consumer's name.
        kind: Why it is skipped (``unauthenticated``, ``malformed``, ``refused``, ``dead``).
        error_type: The error's type name.
        reason: The error's text (cut to its first 2,000 characters).
        dead_ms: When it was skipped, epoch ms.
    """
    delivery = received.delivery
    return {
        "d": _original(delivery.data), "topic": received.topic, "stream": delivery.stream, "id": received.id,
        "published_ms": str(received.published_ms), "group": group, "consumer": consumer,
        "kind": kind, "error_type": error_type, "error": reason[:_ERROR_LIMIT], "dead_ms": str(dead_ms),
    }


# Longest error text kept in a dead letter (a refused value can be large).
_ERROR_LIMIT = 2_000


def _original(data: object) -> str | bytes:
    """A delivery's data as a dead letter keeps it: what a transport between processes
    read, as it was; an in-process envelope encoded as it would have travelled."""
    if isinstance(data, (bytes, str)):
        return data
    if type(data) is Envelope:
        try:
            return encode(data.message, data.meta)
        except Exception:  # a signal whose reasoning has no JSON form: its repr says enough
            return repr(data)
    return repr(data)

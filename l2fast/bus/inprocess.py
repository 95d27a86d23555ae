"""The in-process transport: asyncio, no server, objects delivered as they are.

:class:`InProcessTransport` keeps, per group, ONE queue of deliveries in the order they
were enqueued, with a count per topic bounded by the topic's
:class:`~l2fast.bus.transport.QueuePolicy`. Consequences:

- Order: a group reads its topics in the order their messages entered its queue. In
  particular, what ONE task publishes, in any mix of topics, every group reads in that
  task's order (each publish returns only once the message is queued everywhere): a
  fill published before a bar is read before that bar.
- Fan-out: each group gets every message of its topics; a group has one consumer (one
  process, one reader: competing consumers are the Redis transport's business).
- Messages published to a topic no group reads yet wait, under the same bound, in a
  backlog that the first group subscribing to the topic takes over; nothing published
  before the consumers are wired is lost.
- Backpressure: a full :attr:`~l2fast.bus.transport.Overflow.BLOCK` topic suspends the
  publisher until the consumer takes a message of that topic; a full
  :attr:`~l2fast.bus.transport.Overflow.DROP_OLDEST` topic drops its oldest queued
  message (counted per group in :meth:`InProcessTransport.dropped`).
- Nothing is persisted: a closed subscription's queued messages are discarded, and
  :meth:`~InProcessSubscription.ack` has nothing to do (a message is delivered once).
- Dead letters (:meth:`InProcessTransport.dead_letter`) are kept in memory, the latest
  ``dead_letter_maxlen``; they die with the process.
- Messages are shared, not copied: consumers must not mutate them (every message class
  is frozen; a signal's ``reasoning`` dict is the one exception to respect).

Not thread-safe: one event loop drives the transport and every task using it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from l2fast.bus.transport import (
    DEAD_LETTER_MAXLEN,
    BusClosed,
    Delivery,
    Overflow,
    QueuePolicy,
    Subscription,
    Transport,
    dead_letter_text,
)

__all__ = ["InProcessSubscription", "InProcessTransport", "wall_clock_ms"]


def wall_clock_ms() -> int:
    """Epoch milliseconds UTC now."""
    return time.time_ns() // 1_000_000


def _wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


def _wake_all(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        _wake_first(waiters)


class _Queue:
    """The queue of one group (or of the backlog): deliveries in order, counted per topic."""

    __slots__ = ("closed", "counts", "dropped", "getter", "items", "policies", "putters")

    def __init__(self, policies: Mapping[str, QueuePolicy]) -> None:
        self.items: deque[Delivery] = deque()
        self.policies = policies
        self.counts: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.putters: dict[str, deque[asyncio.Future[None]]] = {}
        self.getter: asyncio.Future[None] | None = None
        self.closed = False

    def offer(self, delivery: Delivery) -> bool:
        """Queue ``delivery`` if its topic has room (or may drop); False when it must wait."""
        topic = delivery.topic
        count = self.counts.get(topic, 0)
        policy = self.policies[topic]
        if count >= policy.maxsize:
            if policy.overflow is Overflow.BLOCK:
                return False
            self._drop_oldest(topic)
            count -= 1
        self.counts[topic] = count + 1
        self.items.append(delivery)
        getter = self.getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        return True

    def _drop_oldest(self, topic: str) -> None:
        # Scans from the front: the oldest message of the topic is usually close to it.
        for k, delivery in enumerate(self.items):
            if delivery.topic == topic:
                del self.items[k]
                break
        self.dropped[topic] = self.dropped.get(topic, 0) + 1

    def take(self) -> Delivery | None:
        if not self.items:
            return None
        delivery = self.items.popleft()
        self.counts[delivery.topic] -= 1
        putters = self.putters.get(delivery.topic)
        if putters:
            _wake_first(putters)
        return delivery

    async def wait_room(self, topic: str) -> None:
        waiter = asyncio.get_running_loop().create_future()
        putters = self.putters.setdefault(topic, deque())
        putters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done():  # woken, then cancelled: pass the room on
                _wake_first(putters)
            else:
                putters.remove(waiter)
            raise

    def close(self) -> None:
        self.closed = True
        self.items.clear()
        self.counts.clear()
        if self.getter is not None and not self.getter.done():
            self.getter.set_result(None)
        for putters in self.putters.values():
            _wake_all(putters)


class InProcessSubscription(Subscription):
    """One group's reader of :class:`InProcessTransport` (module docstring)."""

    def __init__(self, transport: InProcessTransport, group: str, topics: tuple[str, ...], queue: _Queue) -> None:
        self.topics = topics
        self.group = group
        self._transport = transport
        self._queue = queue

    async def get(self) -> Delivery:
        """The next delivery in queue order (module docstring).

        Raises:
            BusClosed: The subscription or the transport was closed.
            RuntimeError: Another task is already waiting in :meth:`get`.
        """
        queue = self._queue
        while True:
            if queue.closed:
                raise BusClosed(f"subscription of group {self.group!r} is closed")
            delivery = queue.take()
            if delivery is not None:
                return delivery
            if queue.getter is not None:
                raise RuntimeError(f"group {self.group!r}: one reader at a time")
            queue.getter = asyncio.get_running_loop().create_future()
            try:
                await queue.getter
            finally:
                queue.getter = None

    def ready(self) -> bool:
        """True when a delivery is queued for the group."""
        return bool(self._queue.items)

    async def ack(self, delivery: Delivery) -> None:
        """Nothing to do: an in-process message is delivered exactly once."""

    async def close(self) -> None:
        """Leave the group's topics; queued messages are discarded (module docstring)."""
        self._transport._detach(self.group)


class InProcessTransport(Transport):
    """In-process asyncio transport with bounded queues (module docstring).

    Args:
        policies: Queue policy per topic; topics not named get ``default``.
        default: The policy of every other topic.
        clock: Epoch milliseconds for :attr:`~l2fast.bus.transport.Delivery.published_ms`.
        dead_letter_maxlen: Dead letters kept (the latest), >= 1.

    Raises:
        ValueError: ``dead_letter_maxlen`` is not an integer >= 1.
    """

    needs_bytes = False

    def __init__(self, policies: Mapping[str, QueuePolicy] | None = None, *,
                 default: QueuePolicy = QueuePolicy(), clock: Callable[[], int] = wall_clock_ms,
                 dead_letter_maxlen: int = DEAD_LETTER_MAXLEN) -> None:
        if type(dead_letter_maxlen) is not int or dead_letter_maxlen < 1:
            raise ValueError(f"dead_letter_maxlen={dead_letter_maxlen!r}: must be an integer >= 1")
        self._dead: deque[dict[str, str]] = deque(maxlen=dead_letter_maxlen)
        self._policies = _Policies(dict(policies or {}), default)
        self._clock = clock
        self._groups: dict[str, _Queue] = {}
        self._routes: dict[str, list[_Queue]] = {}
        self._backlog = _Queue(self._policies)
        self._next_id = 0
        self._closed = False

    def policy(self, topic: str) -> QueuePolicy:
        """The queue policy of ``topic``."""
        return self._policies[topic]

    def dropped(self, group: str) -> dict[str, int]:
        """Messages dropped per topic from ``group``'s queue (``DROP_OLDEST`` topics only)."""
        queue = self._groups.get(group)
        return dict(queue.dropped) if queue is not None else {}

    async def publish(self, topic: str, data: object, *, partition: str | None = None) -> str:
        """Queue ``data`` for every group reading ``topic`` (or the backlog if none does);
        ``partition`` is ignored (one process: no topic is partitioned).

        Returns:
            The message id (a decimal counter, unique within this transport).

        Raises:
            BusClosed: The transport was closed, also while waiting for room.
        """
        if self._closed:
            raise BusClosed("transport is closed")
        self._next_id += 1
        delivery = Delivery(topic, str(self._next_id), self._clock(), data)
        queues = self._routes.get(topic)
        if queues is None:
            if not self._backlog.offer(delivery):
                await self._put_waiting(self._backlog, delivery)
        elif len(queues) == 1:
            if not queues[0].offer(delivery):
                await self._put_waiting(queues[0], delivery)
        else:
            for queue in tuple(queues):
                if not queue.offer(delivery):
                    await self._put_waiting(queue, delivery)
        return delivery.id

    async def _put_waiting(self, queue: _Queue, delivery: Delivery) -> None:
        topic = delivery.topic
        while True:
            await queue.wait_room(topic)
            if self._closed:
                raise BusClosed("transport closed while a publisher waited for room")
            if queue.closed:
                return  # that group left: nothing to deliver to
            if queue is self._backlog and topic in self._routes:
                # A group took the topic over while we waited: deliver to it instead.
                for target in tuple(self._routes[topic]):
                    if not target.offer(delivery):
                        await self._put_waiting(target, delivery)
                return
            if queue.offer(delivery):
                return

    async def subscribe(self, topics: Sequence[str], *, group: str, consumer: str = "",
                        partitions: Sequence[str] | None = None) -> InProcessSubscription:
        """Read ``topics`` for ``group`` (``consumer`` is only a label, ``partitions`` ignored).

        The first group to read a topic takes over its backlog.

        Raises:
            BusClosed: The transport was closed.
            ValueError: ``topics`` is empty or repeats a topic, or ``group`` already reads.
        """
        if self._closed:
            raise BusClosed("transport is closed")
        names = tuple(topics)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"topics={list(names)!r}: must be a non-empty list of distinct topics")
        if group in self._groups:
            raise ValueError(f"group {group!r} already has a reader (one per group in process)")
        queue = _Queue(self._policies)
        unclaimed = {t for t in names if t not in self._routes}
        self._take_backlog(queue, unclaimed)
        self._groups[group] = queue
        for topic in names:
            self._routes.setdefault(topic, []).append(queue)
        return InProcessSubscription(self, group, names, queue)

    def _take_backlog(self, queue: _Queue, topics: set[str]) -> None:
        backlog = self._backlog
        if not topics or not backlog.items:
            return
        kept: deque[Delivery] = deque()
        for delivery in backlog.items:
            (queue.items if delivery.topic in topics else kept).append(delivery)
        backlog.items = kept
        for topic in topics:
            queue.counts[topic] = backlog.counts.pop(topic, 0)
            # Waiting publishers re-route to the new group (see _put_waiting).
            _wake_all(backlog.putters.get(topic, deque()))

    def _detach(self, group: str) -> None:
        queue = self._groups.pop(group, None)
        if queue is None:
            return
        for topic, queues in list(self._routes.items()):
            if queue in queues:
                queues.remove(queue)
                if not queues:
                    del self._routes[topic]
        queue.close()

    async def dead_letter(self, record: Mapping[str, str | bytes]) -> None:
        """Keep ``record`` in memory among the latest ``dead_letter_maxlen`` dead letters.

        Raises:
            BusClosed: The transport was closed.
        """
        if self._closed:
            raise BusClosed("transport is closed")
        self._dead.append({name: dead_letter_text(value) for name, value in record.items()})

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The latest ``count`` dead letters, oldest first (readable after close too: they
        are only in memory)."""
        kept = list(self._dead)
        return [dict(record) for record in kept[max(len(kept) - count, 0):]]

    async def close(self) -> None:
        """Close every subscription and wake waiting publishers (they raise BusClosed)."""
        if self._closed:
            return
        self._closed = True
        for group in list(self._groups):
            self._detach(group)
        self._backlog.close()


class _Policies(dict):
    """Policies by topic, ``default`` for a topic not named (looked up on every publish)."""

    def __init__(self, named: dict[str, QueuePolicy], default: QueuePolicy) -> None:
        super().__init__(named)
        self.default = default

    def __missing__(self, topic: str) -> QueuePolicy:
        return self.default

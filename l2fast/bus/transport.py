"""What a transport is: topics, bounded per-topic queues, subscriptions by consumer group.

A :class:`Transport` moves opaque data between tasks or processes by topic. It knows
nothing of the schema: :class:`~l2fast.bus.bus.MessageBus` hands it either an
:class:`~l2fast.bus.schema.Envelope` (transports whose :attr:`Transport.needs_bytes` is
False, which deliver Python objects as they are) or the envelope's encoded bytes, and
decodes what comes out.

A consumer reads through a :class:`Subscription` to one or more topics on behalf of a
*group*: every group receives every message published to its topics (fan-out); a
transport says how the consumers of one group share them.

Queues are bounded by a :class:`QueuePolicy` per topic: when one is full, a publisher
either waits for room (:attr:`Overflow.BLOCK`, lossless) or makes room by dropping the
oldest queued message of that topic (:attr:`Overflow.DROP_OLDEST`, counted).

Dead letters: a consumer that skips a message (malformed, refused, or failing in any
other way) hands it to :meth:`Transport.dead_letter` as a record of text fields (the
message's data, where it came from, the error) before acknowledging it, so that nothing
is dropped unseen and nothing poisons the consumer for good. The transport keeps the
latest :data:`DEAD_LETTER_MAXLEN` records (its ``dead_letter_maxlen``), readable with
:meth:`Transport.dead_letters`; the Redis transport in the stream ``prefix +``
:data:`DEAD_LETTERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from l2fast.errors import ConfigError, L2FastError

__all__ = ["DEAD_LETTERS", "DEAD_LETTER_MAXLEN", "REDIS_TIMEOUT_S", "BusClosed", "Delivery", "Overflow", "QueuePolicy",
           "Subscription", "Transport", "dead_letter_text"]

#: Default longest outage of a networked transport (Redis) before its commands give up:
#: the worker's, the dashboard's and the CLI's ``--redis-timeout``.
REDIS_TIMEOUT_S = 30.0

#: Name of the dead-letter record (the Redis stream's key after the transport's prefix).
DEAD_LETTERS = "l2fast:dead"
#: Dead letters a transport keeps by default (the oldest go first).
DEAD_LETTER_MAXLEN = 10_000


def dead_letter_text(value: str | bytes) -> str:
    """A dead-letter field as text: bytes that are not UTF-8 are kept as surrogate escapes,
    so ``text.encode("utf-8", "surrogateescape")`` gives the original bytes back."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class BusClosed(L2FastError):
    """The transport or the subscription was closed: nothing more can be published or read."""


class Overflow(StrEnum):
    """What a publisher does when a topic's queue is full."""

    #: Wait until the consumer makes room: nothing is lost, the publisher slows down.
    BLOCK = "block"
    #: Drop the oldest queued message of the topic (counted): the consumer sees the newest.
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """The bound of one topic's queue and what happens when it is full.

    Attributes:
        maxsize: Messages of the topic a group may have waiting, >= 1.
        overflow: :class:`Overflow` when the queue is full.

    Raises:
        ConfigError: ``maxsize`` is not an integer >= 1 or ``overflow`` is unknown.
    """

    maxsize: int = 1024
    overflow: Overflow = Overflow.BLOCK

    def __post_init__(self) -> None:
        if type(self.maxsize) is not int or self.maxsize < 1:
            raise ConfigError(f"maxsize={self.maxsize!r}: must be an integer >= 1")
        try:
            object.__setattr__(self, "overflow", Overflow(self.overflow))
        except ValueError:
            raise ConfigError(f"overflow={self.overflow!r}: must be one of "
                              f"{', '.join(o.value for o in Overflow)}") from None


class Delivery:
    """One message as a transport delivers it.

    Attributes:
        topic: The topic it was published to.
        id: The transport's id of the message (unique per transport).
        published_ms: When it was published, epoch ms UTC, by the transport's clock.
        data: What was published: an :class:`~l2fast.bus.schema.Envelope`, or encoded bytes.
        stream: Where the transport keeps it (the topic, or one partition's stream of it).
    """

    __slots__ = ("data", "id", "published_ms", "stream", "topic")

    def __init__(self, topic: str, id: str, published_ms: int, data: object, stream: str | None = None) -> None:
        self.topic = topic
        self.id = id
        self.published_ms = published_ms
        self.data = data
        self.stream = topic if stream is None else stream

    def __repr__(self) -> str:
        return f"Delivery(topic={self.topic!r}, id={self.id!r}, published_ms={self.published_ms})"


class Subscription(ABC):
    """A consumer's view of one or more topics for its group (one reader at a time)."""

    topics: tuple[str, ...]

    @abstractmethod
    async def get(self) -> Delivery:
        """The next message, waiting for one if needed.

        Raises:
            BusClosed: The subscription or its transport was closed.
        """

    @abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``: it has been fully handled and must not come again."""

    async def get_many(self, limit: int) -> list[Delivery]:
        """The next messages, at least one (waiting for it) and at most ``limit``.

        Returns what :meth:`get` would return one call after another while :meth:`ready`
        holds: the messages at hand, without waiting for more. Transports override it to
        hand out a fetched batch in one call.

        Raises:
            BusClosed: The subscription or its transport was closed.
        """
        items = [await self.get()]
        while len(items) < limit and self.ready():
            items.append(await self.get())
        return items

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge every delivery of ``deliveries`` (as :meth:`ack` each, in order)."""
        for delivery in deliveries:
            await self.ack(delivery)

    def ready(self) -> bool:
        """True when :meth:`get` can return at once, without reading from the transport.

        A consumer that batches its own output (the adapter's signals) flushes it when
        this turns False, before it would wait. The default, False, flushes per message.
        """
        return False

    @abstractmethod
    async def close(self) -> None:
        """Stop reading: a pending and every later :meth:`get` raises :class:`BusClosed`.

        :meth:`ack` stays allowed, so that the message in hand can still be acknowledged.
        """


class Transport(ABC):
    """Topics with bounded queues and group subscriptions (module docstring)."""

    #: True when :meth:`publish` takes encoded bytes only (a transport between processes).
    needs_bytes: bool

    @abstractmethod
    def policy(self, topic: str) -> QueuePolicy:
        """The queue policy of ``topic``."""

    @abstractmethod
    async def publish(self, topic: str, data: object, *, partition: str | None = None) -> str:
        """Publish ``data`` to ``topic``, waiting for room when the policy says so.

        ``partition`` (the message's symbol) selects the stream of a topic that the
        transport partitions; other topics and transports ignore it.

        Returns:
            The message id.

        Raises:
            BusClosed: The transport was closed.
        """

    async def publish_many(self, topic: str, items: Sequence[object], *, partition: str | None = None) -> list[str]:
        """Publish ``items`` to ``topic`` in order, as :meth:`publish` would one by one.

        Transports between processes override it to send a batch per round trip.

        Returns:
            The message ids, in order.
        """
        return [await self.publish(topic, data, partition=partition) for data in items]

    @abstractmethod
    async def subscribe(self, topics: Sequence[str], *, group: str, consumer: str,
                        partitions: Sequence[str] | None = None) -> Subscription:
        """Read ``topics`` as ``consumer`` of ``group`` (only ``partitions`` of a topic the
        transport partitions).

        Raises:
            BusClosed: The transport was closed.
        """

    @abstractmethod
    async def dead_letter(self, record: Mapping[str, str | bytes]) -> None:
        """Keep ``record``, a message a consumer skipped (module docstring), among the
        latest dead letters.

        Raises:
            BusClosed: The transport was closed.
        """

    @abstractmethod
    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The latest ``count`` dead letters, oldest first, their fields as text
        (:func:`dead_letter_text`).

        Raises:
            BusClosed: The transport was closed.
        """

    @abstractmethod
    async def close(self) -> None:
        """Close the transport and every subscription; idempotent."""

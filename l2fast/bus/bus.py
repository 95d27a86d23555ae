"""The message bus: the four topics of L3 <-> L2 <-> L1, typed, over any transport.

:class:`MessageBus` publishes :mod:`~l2fast.bus.schema` messages to their topic
(:class:`Topic`; a message of the wrong type for a topic is refused at publication) and
reads them back through :class:`BusSubscription`, which validates every delivery on
receipt: encoded bytes are decoded, and a message that does not parse or does not belong
to its topic is returned as a :class:`Received` whose ``error`` says why, so that the
consumer counts it and goes on instead of stopping.

Decisions, fills and signals are never dropped: the bus refuses a transport whose policy
for them is not :attr:`~l2fast.bus.transport.Overflow.BLOCK`. Bars may be configured to
drop their oldest queued message (for a live feed where the newest bar matters more than
every bar), which breaks the equality with a replay.

Authentication: a bus given a ``signer`` (:func:`l2fast.keys.load_key` of
:attr:`~l2fast.keys.Purpose.BUS`; every process of the bus holds the same key) publishes
every message in the signed form (:mod:`l2fast.bus.schema`: an HMAC over the topic and
the envelope's exact bytes), on every transport, and refuses on receipt whatever is not
signed with its key for the topic it came on, before decoding it: the delivery comes
back with an :class:`~l2fast.bus.schema.UnauthenticatedError` as its ``error``. A bus
without a signer publishes plain envelopes and reads both forms without checking (one
process, or a deployment that chose not to authenticate). :meth:`MessageBus.publish_raw`
publishes what it is given, signed or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from enum import StrEnum
from itertools import groupby
from typing import Any, NamedTuple

from l2fast.bus.inprocess import InProcessTransport
from l2fast.bus.schema import (
    NO_META,
    Envelope,
    Message,
    MessageError,
    MessageType,
    check_meta,
    decode,
    encode,
    message_type,
    open_signed,
    sign,
)
from l2fast.bus.transport import (
    BusClosed,
    Delivery,
    Overflow,
    QueuePolicy,
    Subscription,
    Transport,
)
from l2fast.errors import ConfigError
from l2fast.keys import Signer

__all__ = ["DEFAULT_POLICIES", "LOSSLESS_TOPICS", "TOPIC_TYPES", "BusSubscription", "MessageBus", "Received",
           "Topic"]


class Topic(StrEnum):
    """The bus's topics."""

    #: L3 -> L2: :class:`~l2fast.signals.StrategicDecision`.
    DECISIONS = "l3.decisions"
    #: Market data -> L2 (and L1): :class:`~l2fast.bus.schema.Bar`.
    BARS = "market.bars"
    #: L1 -> L2: :class:`~l2fast.bus.schema.Fill`.
    FILLS = "l1.fills"
    #: L2 -> L1: :class:`~l2fast.signals.TacticalSignal`.
    SIGNALS = "l2.signals"


#: The message type each topic carries.
TOPIC_TYPES: dict[str, MessageType] = {Topic.DECISIONS: MessageType.DECISION, Topic.BARS: MessageType.BAR,
                                       Topic.FILLS: MessageType.FILL, Topic.SIGNALS: MessageType.SIGNAL}
#: Topics whose messages must never be dropped: losing a decision, a fill or an entry
#: signal would leave the engine and L1 disagreeing about positions.
LOSSLESS_TOPICS: tuple[Topic, ...] = (Topic.DECISIONS, Topic.FILLS, Topic.SIGNALS)
#: The in-process default: every queue blocks its publisher when full.
DEFAULT_POLICIES: dict[str, QueuePolicy] = {
    Topic.DECISIONS: QueuePolicy(1024), Topic.FILLS: QueuePolicy(1024),
    Topic.BARS: QueuePolicy(4096), Topic.SIGNALS: QueuePolicy(4096),
}

def _topic_type(topic: str) -> MessageType:
    expected = TOPIC_TYPES.get(topic)
    if expected is None:
        raise ValueError(f"topic={topic!r}: not a bus topic (known: {', '.join(TOPIC_TYPES)})")
    return expected


def _partition(message: Message) -> str | None:
    # Bars, fills and signals are partitioned by symbol; decisions are not.
    return getattr(message, "symbol", None)


class Received(NamedTuple):
    """A delivery, validated: either ``message`` or ``error`` is set (a tuple: cheap to build).

    Attributes:
        topic: The topic it came from.
        id: The transport's message id.
        published_ms: When it was published (epoch ms, transport clock).
        message: The message, or None when it was malformed.
        meta: The envelope's ``meta`` (empty if none or malformed).
        error: Why the delivery was refused, or None.
        delivery: The transport's delivery (what :meth:`BusSubscription.ack` acknowledges).
    """

    topic: str
    id: str
    published_ms: int
    message: Message | None
    meta: Mapping[str, Any]
    error: MessageError | None
    delivery: Delivery


class BusSubscription:
    """Validated reading of a transport subscription (module docstring).

    ``async for received in subscription`` reads until the subscription or the bus closes.
    """

    def __init__(self, subscription: Subscription, signer: Signer | None = None) -> None:
        self._sub = subscription
        self._signer = signer
        self.topics = subscription.topics

    async def get(self) -> Received:
        """The next delivery, validated; malformed ones come back with ``error`` set.

        Raises:
            BusClosed: The subscription or the bus was closed.
        """
        return _received(await self._sub.get(), self._signer)

    async def get_many(self, limit: int) -> list[Received]:
        """The next deliveries, validated: at least one (waiting for it), at most ``limit``,
        without waiting for more than are at hand.

        Raises:
            BusClosed: The subscription or the bus was closed.
        """
        signer = self._signer
        return [_received(delivery, signer) for delivery in await self._sub.get_many(limit)]

    def ready(self) -> bool:
        """True when :meth:`get` can return without waiting on the transport."""
        return self._sub.ready()

    async def ack(self, received: Received) -> None:
        """Acknowledge ``received`` once fully handled (malformed ones included)."""
        await self._sub.ack(received.delivery)

    async def ack_many(self, received: Sequence[Received]) -> None:
        """Acknowledge each of ``received`` once fully handled, in order."""
        await self._sub.ack_many([r.delivery for r in received])

    async def close(self) -> None:
        """Stop reading (a pending :meth:`get` raises :class:`BusClosed`)."""
        await self._sub.close()

    async def __aiter__(self) -> AsyncIterator[Received]:
        while True:
            try:
                received = await self.get()
            except BusClosed:
                return
            yield received


def _received(delivery: Delivery, signer: Signer | None) -> Received:
    """A delivery authenticated (with a signer), decoded and checked against its topic
    (refused: ``error`` set)."""
    data = delivery.data
    if type(data) is Envelope and signer is None:
        envelope = data
    else:
        try:
            envelope = decode(open_signed(data, delivery.topic, signer))
        except MessageError as exc:  # UnauthenticatedError included
            return Received(delivery.topic, delivery.id, delivery.published_ms, None, NO_META, exc, delivery)
    message = envelope.message
    expected = TOPIC_TYPES.get(delivery.topic)
    if expected is not None and message_type(message) is not expected:
        error = MessageError("type", message_type(message).value,
                             f"topic {delivery.topic} carries {expected.value} messages")
        return Received(delivery.topic, delivery.id, delivery.published_ms, None, NO_META, error, delivery)
    return Received(delivery.topic, delivery.id, delivery.published_ms, message, envelope.meta, None, delivery)


class MessageBus:
    """Typed publish/subscribe over a :class:`~l2fast.bus.transport.Transport` (module docstring).

    Args:
        transport: Where messages travel; an :class:`~l2fast.bus.inprocess.InProcessTransport`
            with :data:`DEFAULT_POLICIES` when None.
        signer: The bus key: messages are published signed and only those signed with it
            are read (module docstring); None: neither.

    Raises:
        ConfigError: The transport may drop decisions, fills or signals.
    """

    def __init__(self, transport: Transport | None = None, *, signer: Signer | None = None) -> None:
        self.transport = transport if transport is not None else InProcessTransport(DEFAULT_POLICIES)
        for topic in LOSSLESS_TOPICS:
            policy = self.transport.policy(topic)
            if policy.overflow is not Overflow.BLOCK:
                raise ConfigError(f"topic {topic.value}: overflow={policy.overflow.value!r}: "
                                  "decisions, fills and signals are never dropped (use 'block')")
        self.signer = signer
        # A signature covers bytes: a signing bus encodes on every transport.
        self._encode = self.transport.needs_bytes or signer is not None

    async def publish(self, topic: str, message: Message, meta: Mapping[str, Any] | None = None) -> str:
        """Publish ``message`` to ``topic`` (waiting for room if the queue blocks).

        Args:
            topic: A :class:`Topic`.
            message: A message of the topic's type (:data:`TOPIC_TYPES`).
            meta: The envelope's ``meta`` (:data:`~l2fast.bus.schema.META_FIELDS`).

        Returns:
            The transport's message id.

        Raises:
            ValueError: ``topic`` is not a bus topic.
            TypeError: ``message`` is not of the topic's type.
            MessageError: ``meta`` holds an unknown key or a bad value.
            BusClosed: The bus was closed.
        """
        item = self._item(_topic_type(topic), topic, message, meta)
        return await self.transport.publish(topic, item, partition=_partition(message))

    def _item(self, expected: MessageType, topic: str, message: Message, meta: Mapping[str, Any] | None) -> object:
        # What the transport carries: the encoded envelope, or the envelope itself.
        kind = message_type(message)
        if kind is not expected:
            raise TypeError(f"topic {topic} carries {expected.value} messages, got a {kind.value}")
        if self._encode:
            data = encode(message, meta)
            return data if self.signer is None else sign(self.signer, topic, data)
        return Envelope(message, check_meta(meta) if meta else NO_META)

    async def publish_many(self, topic: str, messages: Sequence[Message],
                           metas: Sequence[Mapping[str, Any] | None] | None = None) -> list[str]:
        """Publish ``messages`` to ``topic`` in order, in as few round trips as the transport can.

        Args:
            topic: A :class:`Topic`.
            messages: Messages of the topic's type.
            metas: One ``meta`` per message (or None for none).

        Returns:
            The transport's message ids, in order.

        Raises:
            ValueError: ``topic`` is not a bus topic, or ``metas`` has another length.
            TypeError: A message is not of the topic's type.
            MessageError: A ``meta`` holds an unknown key or a bad value.
            BusClosed: The bus was closed.
        """
        expected = _topic_type(topic)
        if metas is None:
            metas = [None] * len(messages)
        elif len(metas) != len(messages):
            raise ValueError(f"metas: {len(metas)} for {len(messages)} messages")
        items = [(message, self._item(expected, topic, message, meta)) for message, meta in zip(messages, metas)]
        # Runs of one partition each go together (ids stay in publication order).
        ids: list[str] = []
        for partition, run in groupby(items, key=lambda pair: _partition(pair[0])):
            ids.extend(await self.transport.publish_many(topic, [item for _, item in run], partition=partition))
        return ids

    async def publish_raw(self, topic: str, data: bytes | str) -> str:
        """Publish an already encoded envelope as it is: it is validated on receipt only.

        For bridges from other systems, and to test how consumers treat malformed or
        unauthenticated input: ``data`` is not signed here (a bus with a key refuses it on
        receipt unless it is already in the signed form).

        Raises:
            ValueError: ``topic`` is not a bus topic.
            BusClosed: The bus was closed.
        """
        _topic_type(topic)
        return await self.transport.publish(topic, data)

    async def subscribe(self, topics: Sequence[str], *, group: str, consumer: str = "",
                        partitions: Sequence[str] | None = None) -> BusSubscription:
        """Read ``topics`` as ``consumer`` of ``group`` (transport rules for groups and order).

        ``partitions``: the symbols to read of the topics the transport partitions (bars
        and fills split by symbol, so that each L2 worker reads only the symbols it owns).

        Raises:
            ValueError: A topic is not a bus topic (or the transport refuses the group).
            BusClosed: The bus was closed.
        """
        for topic in topics:
            _topic_type(topic)
        return BusSubscription(await self.transport.subscribe(topics, group=group, consumer=consumer,
                                                              partitions=partitions), self.signer)

    async def close(self) -> None:
        """Close the transport; idempotent."""
        await self.transport.close()

    async def __aenter__(self) -> MessageBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

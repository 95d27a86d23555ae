"""L3 <-> L2 <-> L1 over a message bus.

- :mod:`l2fast.bus.schema`: the versioned JSON envelope of the four messages
  (:class:`~l2fast.signals.StrategicDecision`, :class:`Bar`, :class:`Fill`,
  :class:`~l2fast.signals.TacticalSignal`), validated on receipt (:class:`MessageError`
  names the field).
- :mod:`l2fast.bus.transport`: what a transport is (topics, bounded queues, groups);
  :mod:`l2fast.bus.inprocess`: the embedded asyncio transport, no server.
- :mod:`l2fast.bus.bus`: :class:`MessageBus`, typed publish/subscribe on the topics
  ``l3.decisions``, ``market.bars``, ``l1.fills`` and ``l2.signals`` (:class:`Topic`);
  with a key (``MessageBus(transport, signer=load_key(Purpose.BUS, path))``) every
  message is signed and what is not signed with it is refused
  (:class:`UnauthenticatedError`).
- :mod:`l2fast.bus.adapter`: :class:`L2BusAdapter`, the engine on the bus (batched
  signal publication; acknowledgements that wait for an engine snapshot when asked).
- :mod:`l2fast.bus.redis`: the Redis Streams transport (ordered ids across topics, retry
  safe batched publication, consumer groups, reclaiming, trimming, partitions by symbol);
  :mod:`l2fast.bus.lease`: one owner per symbol when several workers share them;
  :mod:`l2fast.bus.tools`: the publisher and L1 reader around a worker
  (:mod:`l2fast.bus.worker`: the worker process).

Example (one process; an L3 task, a market-data task and an L1 task would publish and
read the same way)::

    bus = MessageBus()                                   # in-process transport
    adapter = L2BusAdapter(bus, TacticalSignalGenerator())
    signals = await bus.subscribe([Topic.SIGNALS], group="l1")
    worker = asyncio.create_task(adapter.start_processing())
    await bus.publish(Topic.DECISIONS, StrategicDecision(...))
    await bus.publish(Topic.BARS, Bar("BTC/USDT", ts_ms, o, h, l, c, v))
    received = await signals.get()                       # .message, .meta["stale"]
    await adapter.stop(); await worker

Backpressure, the rules:

1. Every queue is bounded, per consumer group and per topic
   (:class:`~l2fast.bus.transport.QueuePolicy`; in-process defaults in
   :data:`~l2fast.bus.bus.DEFAULT_POLICIES`: 1,024 decisions, 1,024 fills, 4,096 bars,
   4,096 signals).
2. A full queue blocks its publisher (:attr:`~l2fast.bus.transport.Overflow.BLOCK`) until
   the consumer takes a message of that topic, so a slow consumer slows its producers
   down instead of growing memory: a slow L1 blocks the adapter's signal publication,
   which stops the adapter reading, which fills its input queues and blocks the
   market-data, L3 and L1 publishers in turn.
3. Decisions, fills and signals are never dropped: :class:`MessageBus` refuses a
   transport configured otherwise. Only bars may be set to
   :attr:`~l2fast.bus.transport.Overflow.DROP_OLDEST` (counted per group), for a live
   feed where the newest bar matters more than every bar; the default blocks, which the
   equality with a replay needs.
4. Bars are processed in order: one subscription reads the adapter's three topics in
   delivery order, and the engine refuses a bar older than the symbol's previous one
   (counted, skipped).
5. Signals delayed by queueing are flagged, not dropped: a signal older than the
   adapter's ``stale_after_ms`` carries ``"stale": true`` in its envelope's ``meta``
   (with ``age_ms``; :mod:`l2fast.bus.adapter`).
6. L1 <-> L2 is a loop (signals one way, fills the other): L1 must keep reading signals
   while it publishes fills (two tasks, or a fill queue larger than the fills it can owe),
   or both sides can wait on each other's full queue.
"""

from __future__ import annotations

from l2fast.bus.adapter import INPUT_TOPICS, AdapterStats, L2BusAdapter, SignalFilter
from l2fast.bus.bus import DEFAULT_POLICIES, TOPIC_TYPES, BusSubscription, MessageBus, Received, Topic
from l2fast.bus.inprocess import InProcessTransport
from l2fast.bus.schema import (
    SCHEMA_VERSION,
    Bar,
    Envelope,
    Fill,
    MessageError,
    MessageType,
    UnauthenticatedError,
    decode,
    encode,
)
from l2fast.bus.transport import BusClosed, Delivery, Overflow, QueuePolicy, Subscription, Transport

__all__ = [
    "DEFAULT_POLICIES",
    "INPUT_TOPICS",
    "SCHEMA_VERSION",
    "TOPIC_TYPES",
    "AdapterStats",
    "Bar",
    "BusClosed",
    "BusSubscription",
    "Delivery",
    "Envelope",
    "Fill",
    "InProcessTransport",
    "L2BusAdapter",
    "MessageBus",
    "MessageError",
    "MessageType",
    "Overflow",
    "QueuePolicy",
    "Received",
    "SignalFilter",
    "Subscription",
    "Topic",
    "Transport",
    "UnauthenticatedError",
    "decode",
    "encode",
]

"""An L2 worker process: the engine on a Redis bus, crash-safe (``python -m l2fast worker``).

:func:`run_worker` builds the engine (restoring it from ``snapshot`` when that file
exists, else from the config), connects a :class:`~l2fast.bus.redis.RedisTransport`, and
runs an :class:`~l2fast.bus.L2BusAdapter` until SIGTERM or SIGINT. With a snapshot path
the adapter acknowledges only what a snapshot covers (:mod:`l2fast.bus.adapter`): kill
the worker at any moment, start it again with the same ``--snapshot`` and
``--consumer``, and it continues from its last snapshot; the messages after it are
delivered again and give the same signals (same ``signal_id``). A worker stopped by a
signal writes a final snapshot first.

While it runs, the worker writes its metrics every ``metrics_interval_s`` to Redis
(:func:`l2fast.monitoring.publish_metrics`, read by ``python -m l2fast dashboard``) and,
with ``metrics_port``, serves them in the Prometheus text format on the loopback
interface (``GET /metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from l2fast.bus import L2BusAdapter, MessageBus, SignalFilter
from l2fast.config import L2Config
from l2fast.engine import TacticalSignalGenerator

__all__ = ["WorkerOptions", "build_generator", "run_worker"]

logger = logging.getLogger("l2fast.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs (the CLI's options).

    Attributes:
        redis: ``redis://host:port/db``.
        config: The engine config (ignored when the snapshot exists: it holds its own).
        models_dir: Models folder override.
        snapshot: Snapshot file (None: no crash safety, acknowledged per message).
        snapshot_every: Messages between snapshots.
        snapshot_interval_s: Longest time between snapshots.
        group: Consumer group of the L2 workers.
        consumer: This worker's consumer name (keep it across restarts).
        prefix: Redis key prefix of the bus.
        signals: Which signals to publish (:class:`~l2fast.bus.SignalFilter`).
        stale_after_ms: Signal age flagged stale, or None.
        metrics_port: Loopback port of the Prometheus endpoint (None: none; 0: any free).
        metrics_interval_s: How often metrics are written to Redis.
    """

    redis: str = "redis://127.0.0.1:6379/0"
    config: L2Config | None = None
    models_dir: str | None = None
    snapshot: str | None = None
    snapshot_every: int = 10_000
    snapshot_interval_s: float = 5.0
    group: str = "l2"
    consumer: str = "l2-0"
    prefix: str = ""
    signals: str = SignalFilter.ACTIONABLE.value
    stale_after_ms: int | None = None
    metrics_port: int | None = None
    metrics_interval_s: float = 1.0


def build_generator(options: WorkerOptions) -> TacticalSignalGenerator:
    """The worker's engine: restored from ``options.snapshot`` if it exists, else new.

    Raises:
        SnapshotError: The snapshot exists but is corrupt, foreign or does not fit.
        ModelLoadError: The models cannot be loaded.
    """
    if options.snapshot is not None and Path(options.snapshot).exists():
        gen = TacticalSignalGenerator.restore(options.snapshot, models_dir=options.models_dir)
        logger.info("restored the engine from %s (symbols: %s)", options.snapshot, ", ".join(gen.symbols) or "none")
        return gen
    return TacticalSignalGenerator(options.config, models_dir=options.models_dir)


async def run_worker(options: WorkerOptions, *, ready: asyncio.Event | None = None) -> L2BusAdapter:
    """Run one worker until SIGTERM/SIGINT (module docstring).

    Args:
        options: The worker's settings.
        ready: Set once the worker reads its topics (and its metrics server listens).

    Returns:
        The adapter, stopped (its ``stats`` say what it did).
    """
    from l2fast.bus.redis import RedisTransport
    from l2fast.monitoring import MetricsServer, publish_metrics, render_prometheus

    gen = build_generator(options)
    transport = RedisTransport(options.redis, prefix=options.prefix)
    bus = MessageBus(transport)
    adapter = L2BusAdapter(bus, gen, signals=options.signals, stale_after_ms=options.stale_after_ms,
                           group=options.group, consumer=options.consumer, snapshot=options.snapshot,
                           snapshot_every=options.snapshot_every,
                           snapshot_interval_s=options.snapshot_interval_s)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def exposition() -> str:
        return render_prometheus(gen.metrics(), worker=options.consumer, adapter=_adapter_stats(adapter))

    server = None
    if options.metrics_port is not None:
        server = MetricsServer(exposition, port=options.metrics_port)
        await server.start()
        logger.info("metrics on http://127.0.0.1:%d/metrics", server.port)

    async def report() -> None:
        while True:
            await asyncio.sleep(options.metrics_interval_s)
            with contextlib.suppress(Exception):  # metrics must never stop the worker
                await publish_metrics(transport.client, options.prefix, options.consumer,
                                      {**gen.metrics(), "adapter": _adapter_stats(adapter), "pid": os.getpid()})

    processing = asyncio.create_task(adapter.start_processing())
    reporter = asyncio.create_task(report())
    await adapter.subscribed.wait()
    logger.info("worker %s/%s reading %s", options.group, options.consumer, options.redis)
    if ready is not None:
        ready.set()
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({processing, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await adapter.stop()
        await processing
    finally:
        stopper.cancel()
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        if server is not None:
            await server.close()
        await bus.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    logger.info("worker stopped: %s", adapter.stats)
    return adapter


def _adapter_stats(adapter: L2BusAdapter) -> dict[str, int]:
    s = adapter.stats
    return {"decisions": s.decisions, "fills": s.fills, "bars": s.bars, "signals": s.signals, "stale": s.stale,
            "malformed": s.malformed, "refused": s.refused, "snapshots": s.snapshots}

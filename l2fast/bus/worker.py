"""An L2 worker process: the engine on a Redis bus, crash-safe (``python -m l2fast worker``).

:func:`run_worker` builds the engine (restoring it from ``snapshot`` when that file
exists, else from the config), connects a :class:`~l2fast.bus.redis.RedisTransport`, and
runs an :class:`~l2fast.bus.L2BusAdapter` until SIGTERM or SIGINT. With a snapshot path
the adapter acknowledges only what a snapshot covers (:mod:`l2fast.bus.adapter`): kill
the worker at any moment, start it again with the same ``--snapshot`` and
``--consumer``, and it continues from its last snapshot; the messages after it are
delivered again and give the same signals (same ``signal_id``). A worker stopped by a
signal writes a final snapshot first.

A snapshot on storage that anyone else can write (shared storage, the standby setup
below) needs the snapshot key (``snapshot_signer``; ``--snapshot-key-file``, or
``$L2FAST_SNAPSHOT_KEY_FILE`` / ``$L2FAST_SNAPSHOT_KEY``): the worker then signs its
snapshots and restores only one signed with that key, so a forged file is refused before
it is read. Without a key the worker refuses a snapshot whose folder or file another
user can write (:func:`check_snapshot_storage`). Likewise ``model_signer``
(``--model-key-file``) loads only signed models.

While it runs, the worker writes its metrics every ``metrics_interval_s`` to Redis
(:func:`l2fast.ops.monitoring.publish_metrics`, read by ``python -m l2fast dashboard``) and,
with ``metrics_port``, serves them in the Prometheus text format on the loopback
interface (``GET /metrics``).

A worker holds a lease in Redis on what it reads (:class:`~l2fast.bus.lease.SymbolLease`):
its symbols, or without ``symbols`` the whole bus (:data:`~l2fast.bus.lease.EVERY_SYMBOL`).
A second worker started for the same ones waits as a standby rather than splitting the
messages with the first (which would break each symbol's order and state); SIGTERM stops
a waiting standby cleanly.

Several workers sharing the symbols (``symbols``): bars and fills then travel in one
stream per symbol (every process of the bus uses ``partitioned=(Topic.BARS,
Topic.FILLS)``; ``python -m l2fast publish --partitioned``), each worker owns its symbols
through a :class:`~l2fast.bus.lease.SymbolLease` and reads only theirs, in a consumer
group of its own symbol set (so that every worker reads every decision). A second worker
started for the same symbols is a standby: it waits for the lease, and when the owner
dies it takes over after at most ``lease_ttl_ms``, from the owner's last snapshot (give
both the same ``--snapshot`` path on shared storage, and the same snapshot key) and with the owner's unacknowledged
messages, which it claims at once (the lease says the owner is gone). Each worker's
engine is its own portfolio: positions, limits and correlations of its symbols only.

Authentication (``signer``, the bus key: every process of the bus holds the same one):
the worker reads only messages signed with it and signs the signals it publishes
(:mod:`l2fast.bus.bus`); what is not signed with it is refused before it is decoded,
counted as ``unauthenticated``, written to the dead letters and acknowledged. Without a
key nothing is signed or checked (the CLI requires a key unless told ``--no-auth``).

Redis unreachable, at the start or later (:class:`~l2fast.bus.redis.RedisRetry`): every
command and the lease are retried with backoff, each retry logged with the URL, the error
and a counter, until Redis answers or has been away for ``redis_timeout_s``; then
:func:`run_worker` raises :class:`~l2fast.errors.BusUnavailableError` (the CLI exits
with code 3). A running worker gives up sooner when its lease expires first: it must not
go on without it. Either way it stops without a final snapshot, as if killed: started
again once Redis is back, it continues from its last snapshot and loses nothing.

Persistence: the worker refuses to start against a Redis that would lose the bus on a
restart (``INFO persistence`` says ``aof_enabled:0``: RDB snapshots alone lose every
write since the last one; :func:`check_persistence`), unless ``allow_no_persistence``
(then one warning). A Redis that lost its state anyway (restarted without its data,
``FLUSHALL``, a stream or group deleted) is found and reported by the transport
(:meth:`~l2fast.bus.redis.RedisTransport.state_lost`): the worker creates its groups
again and goes on, and the count is in its metrics (``redis_state_lost``).

A refusal is not an outage: a wrong user or password, a command its ACL user may not run or
a failed TLS check stops it at once with :class:`~l2fast.errors.BusAuthError` (exit code 4).
The URL is logged with its password masked.

Stopping is bounded: after SIGTERM or SIGINT the adapter's last flush (signals, dead
letters, acknowledgements, the final snapshot) has ``stop_timeout_s`` to finish. When
Redis does not answer it in time, the worker logs an error naming what it was waiting
for and stops as if killed (nothing more is acknowledged or snapshotted; started again,
it loses nothing): :func:`run_worker` raises :class:`~l2fast.errors.BusUnavailableError`
(the CLI exits with code 3). Its background tasks (the metrics reporter, the lease
keeper) are cancelled until they end (:func:`_cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from l2fast.bus import L2BusAdapter, MessageBus, Topic
from l2fast.bus.adapter import DEFAULT_CONSUMER, DEFAULT_GROUP, DEFAULT_SIGNALS, SNAPSHOT_EVERY, SNAPSHOT_INTERVAL_S
from l2fast.bus.lease import EVERY_SYMBOL, LEASE_TTL_MS, LeaseLost, SymbolLease
from l2fast.bus.redis import REDIS_URL, RedisTransport, redacted_url
from l2fast.bus.transport import REDIS_TIMEOUT_S
from l2fast.config import L2Config
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import BusAuthError, BusUnavailableError, ConfigError
from l2fast.keys import Signer

__all__ = ["WorkerOptions", "build_generator", "check_persistence", "check_snapshot_storage", "run_worker"]

logger = logging.getLogger("l2fast.bus.worker")

#: Default of how long a stopping worker waits for its last flush (module docstring), seconds.
STOP_TIMEOUT_S = 30.0

# How long a cancelled task may go on before it is cancelled again (_cancel).
_CANCEL_AGAIN_S = 0.1


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs (the CLI's options).

    Attributes:
        redis: The Redis URL (``redis://[user:password@]host:port/db``, ``rediss://`` for
            TLS); left out of the repr, which must not show its password.
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
        symbols: The symbols this worker owns when several share them (module
            docstring); None: one worker reads every symbol.
        lease_ttl_ms: Time to live of the symbols' lease (how soon a standby takes over
            from a dead owner); longer than the engine's start-up, during which loading
            the models holds the GIL and delays the renewals.
        redis_timeout_s: How long Redis may stay unreachable before the worker gives up
            (module docstring); None or 0: retry for ever (still bounded by the lease
            once the worker runs).
        allow_no_persistence: Run against a Redis without an append-only file (module
            docstring), with a warning.
        signer: The bus key (module docstring); None: messages are neither signed nor
            checked.
        snapshot_signer: The snapshot key's signer: snapshots are signed with it and
            only a snapshot signed with it is restored (:mod:`l2fast.engine.snapshot`).
            Required in effect when the snapshot lives on shared storage, where
            whoever can write it could otherwise forge the engine's state.
        model_signer: The model key's signer: only models signed with it load
            (:mod:`l2fast.models.loading`).
        stop_timeout_s: How long the adapter's last flush may take after the stop
            signal before the worker stops as if killed (module docstring); None: no limit.
    """

    redis: str = field(default=REDIS_URL, repr=False)
    config: L2Config | None = None
    models_dir: str | None = None
    snapshot: str | None = None
    snapshot_every: int = SNAPSHOT_EVERY
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S
    group: str = DEFAULT_GROUP
    consumer: str = DEFAULT_CONSUMER
    prefix: str = ""
    signals: str = DEFAULT_SIGNALS.value
    stale_after_ms: int | None = None
    metrics_port: int | None = None
    metrics_interval_s: float = 1.0
    symbols: tuple[str, ...] | None = None
    lease_ttl_ms: int = LEASE_TTL_MS
    redis_timeout_s: float | None = REDIS_TIMEOUT_S
    allow_no_persistence: bool = False
    signer: Signer | None = None
    snapshot_signer: Signer | None = None
    model_signer: Signer | None = None
    stop_timeout_s: float | None = STOP_TIMEOUT_S

    @property
    def role(self) -> str:
        """The consumer group: one per symbol set, so that each reads every decision."""
        return self.group if self.symbols is None else f"{self.group}:{'+'.join(self.symbols)}"


def check_snapshot_storage(path: str | os.PathLike[str], signer: Signer | None) -> None:
    """Refuse an unsigned snapshot where another user could forge it.

    Without a snapshot key the file's integrity rests on the file system: its folder and
    the file itself (when it exists) must belong to this process's user and be writable
    by no group or other user. Storage shared with other users or machines' accounts
    needs the key.

    Raises:
        ConfigError: ``signer`` is None and the folder or the file is owned by another
            user or writable by its group or others.
    """
    if signer is not None:
        return
    target = Path(path)
    for item in (target.parent, target):
        try:
            info = item.stat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(f"snapshot {target}: {item} is writable by other users (mode "
                              f"{stat.filemode(info.st_mode)}, owner uid {info.st_uid}): whoever can write it could "
                              "forge the engine's state; give the snapshot key (--snapshot-key-file FILE, or "
                              "$L2FAST_SNAPSHOT_KEY_FILE / $L2FAST_SNAPSHOT_KEY) or keep the snapshot in a folder "
                              "only this user can write")


def build_generator(options: WorkerOptions) -> TacticalSignalGenerator:
    """The worker's engine: restored from ``options.snapshot`` if it exists, else new.

    Raises:
        ConfigError: The snapshot is unsigned on storage other users can write
            (:func:`check_snapshot_storage`).
        SnapshotError: The snapshot exists but is corrupt, foreign or does not fit.
        ModelLoadError: The models cannot be loaded.
    """
    if options.snapshot is not None:
        check_snapshot_storage(options.snapshot, options.snapshot_signer)
    if options.snapshot is not None and Path(options.snapshot).exists():
        gen = TacticalSignalGenerator.restore(options.snapshot, models_dir=options.models_dir,
                                              signer=options.snapshot_signer, model_signer=options.model_signer)
        logger.info("restored the engine from %s (symbols: %s)", options.snapshot, ", ".join(gen.symbols) or "none")
        return gen
    return TacticalSignalGenerator(options.config, models_dir=options.models_dir, model_signer=options.model_signer,
                                   snapshot_signer=options.snapshot_signer)


async def run_worker(options: WorkerOptions, *, ready: asyncio.Event | None = None) -> L2BusAdapter | None:
    """Run one worker until SIGTERM/SIGINT (module docstring).

    Args:
        options: The worker's settings.
        ready: Set once the worker reads its topics (and its metrics server listens).

    Returns:
        The adapter, stopped (its ``stats`` say what it did), or None for a standby
        stopped before it took the lease.

    Raises:
        BusUnavailableError: Redis stayed unreachable for ``options.redis_timeout_s``,
            or until the lease expired, or did not answer the last flush within
            ``options.stop_timeout_s`` of the stop signal.
        LeaseLost: Another worker took the lease (Redis answered so).
        BusAuthError: Redis refused the worker (password, ACL) or TLS failed.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _run(options, stop, ready)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _run(options: WorkerOptions, stop: asyncio.Event, ready: asyncio.Event | None) -> L2BusAdapter | None:
    partitioned = (Topic.BARS, Topic.FILLS) if options.symbols is not None else ()
    # The lease means no other reader of these streams is alive: what another consumer
    # left pending is claimed at once (on the first read), not after an idle time.
    transport = RedisTransport(options.redis, prefix=options.prefix, partitioned=partitioned,
                               claim_idle_ms=1, claim_interval_s=86_400.0, give_up_after_s=options.redis_timeout_s)
    bus = MessageBus(transport, signer=options.signer)
    # A worker without symbols reads them all: it leases the whole bus, so that a second
    # one started beside it waits as a standby instead of taking half of the messages.
    owned = options.symbols if options.symbols is not None else (EVERY_SYMBOL,)
    lease = SymbolLease(transport.client, owned, options.consumer, prefix=options.prefix,
                        ttl_ms=options.lease_ttl_ms, retry=transport.retry)
    keeper = None
    try:
        await check_persistence(transport, allow=options.allow_no_persistence)
        if not await _acquire(lease, stop):
            return None
        logger.info("%s owns %s", options.consumer, ", ".join(owned))

        # Renewed from now on: loading the models takes longer than a short lease.
        keeper = asyncio.create_task(lease.keep())
        # Built once the symbols are ours (a standby restores the snapshot its owner left),
        # in a thread so that the lease is renewed meanwhile.
        gen = await asyncio.to_thread(build_generator, options)
        adapter = L2BusAdapter(bus, gen, signals=options.signals, stale_after_ms=options.stale_after_ms,
                               group=options.role, consumer=options.consumer, snapshot=options.snapshot,
                               snapshot_every=options.snapshot_every,
                               snapshot_interval_s=options.snapshot_interval_s, symbols=options.symbols)
        await _serve(options, transport, lease, gen, adapter, keeper, stop, ready)
    finally:
        if keeper is not None:
            await _cancel(keeper)
            with contextlib.suppress(asyncio.CancelledError, LeaseLost, BusUnavailableError):
                await keeper
        with contextlib.suppress(Exception):  # gives back only what is still ours
            await lease.release()
        await bus.close()
    logger.info("worker stopped: %s; redis state lost %d times, far-ahead ids %d, lease taken again %d times",
                adapter.stats, transport.state_losses, transport.far_ahead_ids, lease.retaken)
    return adapter


async def check_persistence(transport: RedisTransport, *, allow: bool = False) -> None:
    """Refuse a Redis without an append-only file (module docstring), or warn once when
    ``allow``.

    ``INFO persistence`` rather than ``CONFIG GET``: an ACL user of the worker is given
    ``+info``, seldom ``+config``.

    Raises:
        ConfigError: Redis has no append-only file, or refuses INFO, and not ``allow``.
        BusUnavailableError: Redis stayed unreachable past the retries' time limit.
    """
    from redis import exceptions as redis_errors

    url = transport.retry.url
    fix = "start it with --appendonly yes (or CONFIG SET appendonly yes), or pass --allow-no-persistence"
    try:
        info = await transport.call(lambda: transport.client.info("persistence"))
    except (redis_errors.ResponseError, BusAuthError) as exc:
        if isinstance(exc, BusAuthError) and exc.kind != "permission":
            raise
        problem = f"cannot check the persistence of redis at {url} (INFO persistence: {exc}); grant +info"
    else:
        if int(info.get("aof_enabled", 0)) == 1:
            return
        problem = (f"redis at {url} has no append-only file (aof_enabled:0): a restart would lose the bus's streams, "
                   "groups and pending entries (RDB snapshots alone lose every write since the last one); " + fix)
    if not allow:
        raise ConfigError(problem)
    logger.warning("%s; running anyway (--allow-no-persistence): a restart of this Redis loses messages", problem)


async def _acquire(lease: SymbolLease, stop: asyncio.Event) -> bool:
    """Wait for the lease (a standby waits here); False when stopped first."""
    acquiring = asyncio.create_task(lease.acquire())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not acquiring.done():
        await _cancel(acquiring)
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
        logger.info("%s stopped while waiting for the lease of %s", lease.owner, ", ".join(lease.symbols))
        return False
    acquiring.result()
    return True


async def _serve(options: WorkerOptions, transport: RedisTransport, lease: SymbolLease,
                 gen: TacticalSignalGenerator, adapter: L2BusAdapter, keeper: asyncio.Task | None,
                 stop: asyncio.Event, ready: asyncio.Event | None) -> None:
    """Process until ``stop`` or a lost lease, with the metrics endpoint and reporter."""
    from l2fast.ops.monitoring import EngineCollector, MetricsServer, publish_metrics

    async def report() -> None:
        while True:
            await asyncio.sleep(options.metrics_interval_s)
            with contextlib.suppress(Exception):  # metrics must never stop the worker
                await publish_metrics(transport.client, options.prefix, options.consumer,
                                      {**gen.metrics(), "adapter": _adapter_stats(adapter, transport, lease),
                                       "pid": os.getpid()})

    server = None
    if options.metrics_port is not None:
        collector = EngineCollector(gen.metrics, worker=options.consumer,
                                    adapter=lambda: _adapter_stats(adapter, transport, lease))
        server = MetricsServer(collector, port=options.metrics_port)
        await server.start()
        logger.info("metrics on http://%s:%d/metrics", server.host, server.port)
    processing = asyncio.create_task(adapter.start_processing())
    reporter = asyncio.create_task(report())
    stopper = asyncio.create_task(stop.wait())
    try:
        subscribed = asyncio.create_task(adapter.subscribed.wait())
        await asyncio.wait({processing, stopper, subscribed}, return_when=asyncio.FIRST_COMPLETED)
        subscribed.cancel()
        if adapter.subscribed.is_set():
            logger.info("worker %s/%s reading %s", options.role, options.consumer, redacted_url(options.redis))
            if options.signer is not None:
                logger.info("bus messages signed and checked with the key from %s", options.signer.source)
            if ready is not None:
                ready.set()
        waits = {processing, stopper} | ({keeper} if keeper is not None else set())
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if keeper is not None and keeper.done():
            # Another worker may own the symbols now: stop at once; nothing more is
            # published, acknowledged or snapshotted.
            await _cancel(processing)
            with contextlib.suppress(asyncio.CancelledError):
                await processing
            keeper.result()
        await _finish(options, transport, adapter, processing)
    finally:
        stopper.cancel()
        await _cancel(reporter)
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        if server is not None:
            await server.close()


async def _finish(options: WorkerOptions, transport: RedisTransport, adapter: L2BusAdapter,
                  processing: asyncio.Task[None]) -> None:
    """Stop the adapter and wait for its last flush, for at most ``options.stop_timeout_s``
    (module docstring).

    Raises:
        BusUnavailableError: The flush did not finish in time (logged as an error, with
            what it was waiting for).
    """
    async def finish() -> None:
        await adapter.stop()
        await processing

    # A task, so that the wait is bounded even by a flush that does not heed one cancellation.
    finishing = asyncio.create_task(finish())
    await asyncio.wait({finishing}, timeout=options.stop_timeout_s)
    if finishing.done():
        finishing.result()
        return
    waiting = _awaiting(processing if not processing.done() else finishing)
    await _cancel(finishing)
    await _cancel(processing)
    logger.error("%s: the last flush got no reply within %g s of the stop signal (waiting in %s): stopping as if "
                 "killed, without acknowledging or snapshotting more; started again, it loses nothing",
                 options.consumer, options.stop_timeout_s, waiting)
    raise BusUnavailableError(transport.url, f"no reply to the stopping worker's last flush (waiting in {waiting})",
                              retries=transport.retry.retries, waited_s=float(options.stop_timeout_s or 0),
                              reason=f"the worker did not stop within {options.stop_timeout_s:g} s of the stop "
                                     "signal; stopped as if killed")


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again while it goes on.

    One cancellation is not always enough: on Python 3.11, redis-py sends each command
    under ``asyncio.wait_for``, which returns normally when the cancellation lands just
    after the command was sent (CPython issue 86296, bpo-42130; ``wait_for`` was rewritten in 3.12).
    The task then goes on as if never cancelled, and a loop such as the metrics reporter
    or the lease keeper would run for ever: the worker would never stop after SIGTERM.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_CANCEL_AGAIN_S)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: its chain of awaited coroutines, outermost first (for the log)."""
    names: list[str] = []
    awaited: Any = task.get_coro()
    while isinstance(awaited, Coroutine) and len(names) < 12:
        names.append(getattr(awaited, "__qualname__", type(awaited).__name__))
        awaited = getattr(awaited, "cr_await", None)
    return " > ".join(names) or repr(task)


def _adapter_stats(adapter: L2BusAdapter, transport: RedisTransport, lease: SymbolLease) -> dict[str, int]:
    # The message counters (not the per-topic table or the last reason), and the bus's faults.
    return {**{k: v for k, v in asdict(adapter.stats).items() if type(v) is int},
            "redis_state_lost": transport.state_losses, "far_ahead_ids": transport.far_ahead_ids,
            "lease_retaken": lease.retaken}

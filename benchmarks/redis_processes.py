"""Publisher, L2 worker and signal reader as three processes on one Redis (the deployed layout).

Used by ``test_bench_redis_processes.py``. :class:`Pipeline` starts the three processes of
one implementation and waits until each is ready (engine warmed, group joined, bars
built): that is the benchmark's untimed setup. :meth:`Pipeline.run` then releases the
publisher and returns when the worker has handled every bar and the reader has received
every signal it expects: the timed part. Processes are spawned (not forked), so a child
holds no copy of the parent's onnxruntime sessions or event loop.

Ours is the library (``MessageBus`` on ``RedisTransport``, ``L2BusAdapter``, a
subscription on ``l2.signals``); the alternative is the redis-py loop of
``test_bench_redis.py`` split into the same three processes (pipelined ``XADD``,
``XREADGROUP`` batches of 256, ``XACK``; no ordering across topics, no retry safety, no
validation, no backpressure).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
import uuid
from multiprocessing.synchronize import Event
from typing import Any

from test_bench_redis import BATCH, COLUMNS, WARM, _wanted, _warmed, plain_handle, plain_publish, plain_read

from l2fast.bus import Bar, L2BusAdapter, MessageBus, Topic
from l2fast.bus.redis import RedisTransport
from l2fast.evaluation.synthetic import generate_bars

_CTX = mp.get_context("spawn")
_READY_TIMEOUT_S = 120.0
_RUN_TIMEOUT_S = 300.0


def _rows(n_bars: int) -> list[tuple]:
    b = generate_bars(WARM + n_bars, seed=11)
    return list(zip(*(b[c].tolist() for c in COLUMNS)))


def expected_signals(n_bars: int, mode: str) -> int:
    """Signals the worker publishes for the streamed bars in ``mode`` (``all``/``actionable``)."""
    rows = _rows(n_bars)
    gen = _warmed(rows)
    return sum(_wanted(gen.on_bar("BTC/USDT", *row), mode) for row in rows[WARM:])


# ------------------------------------------------------------------------------- ours


def _ours_publisher(url: str, prefix: str, n_bars: int, ready: Event, start: Event) -> None:
    bars = [Bar("BTC/USDT", *row) for row in _rows(n_bars)[WARM:]]

    async def main() -> None:
        bus = MessageBus(RedisTransport(url, prefix=prefix))
        await bus.transport.client.ping()
        ready.set()
        await asyncio.to_thread(start.wait)
        for k in range(0, len(bars), BATCH):
            await bus.publish_many(Topic.BARS, bars[k:k + BATCH])
        await bus.close()

    asyncio.run(main())


def _ours_worker(url: str, prefix: str, n_bars: int, mode: str, ready: Event, done: Event) -> None:
    gen = _warmed(_rows(n_bars))

    async def main() -> None:
        bus = MessageBus(RedisTransport(url, prefix=prefix, block_ms=5))
        adapter = L2BusAdapter(bus, gen, signals=mode, consumer="w1")
        task = asyncio.create_task(adapter.start_processing())
        await adapter.subscribed.wait()
        ready.set()
        while adapter.stats.bars < n_bars:
            await asyncio.sleep(0.001)
        # A bar counts as handled before its batch's signals go out at the next flush:
        # stopping publishes and acknowledges what the adapter holds before it returns.
        await adapter.stop()
        await task
        done.set()
        await bus.close()

    asyncio.run(main())


def _ours_reader(url: str, prefix: str, n_signals: int, ready: Event, done: Event) -> None:
    async def main() -> None:
        bus = MessageBus(RedisTransport(url, prefix=prefix, block_ms=5))
        signals = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="c1")
        ready.set()
        read = 0
        while read < n_signals:
            batch = await signals.get_many(n_signals - read)
            await signals.ack_many(batch)
            read += len(batch)
        done.set()
        await bus.close()

    asyncio.run(main())


# ------------------------------------------------------------------------- the alternative


def _plain_publisher(url: str, prefix: str, n_bars: int, ready: Event, start: Event) -> None:
    from redis.asyncio import Redis

    bars = [Bar("BTC/USDT", *row) for row in _rows(n_bars)[WARM:]]

    async def main() -> None:
        client = Redis.from_url(url)
        await client.ping()
        ready.set()
        await asyncio.to_thread(start.wait)
        await plain_publish(client, prefix + "bars", bars)
        await client.aclose()

    asyncio.run(main())


def _plain_worker(url: str, prefix: str, n_bars: int, mode: str, ready: Event, done: Event) -> None:
    from redis.asyncio import Redis

    gen = _warmed(_rows(n_bars))

    async def main() -> None:
        client = Redis.from_url(url)
        await client.xgroup_create(prefix + "bars", "g", id="0", mkstream=True)
        ready.set()
        handled = 0
        while handled < n_bars:
            reply = await client.xreadgroup("g", "w", {prefix + "bars": ">"}, count=BATCH, block=5)
            for _, entries in reply or ():
                await plain_handle(client, gen, entries, prefix + "bars", prefix + "signals", mode)
                handled += len(entries)
        done.set()
        await client.aclose()

    asyncio.run(main())


def _plain_reader(url: str, prefix: str, n_signals: int, ready: Event, done: Event) -> None:
    from redis.asyncio import Redis

    async def main() -> None:
        client = Redis.from_url(url)
        await client.xgroup_create(prefix + "signals", "g", id="0", mkstream=True)
        ready.set()
        read = 0
        while read < n_signals:
            read += await plain_read(client, prefix + "signals", "l1", 5)
        done.set()
        await client.aclose()

    asyncio.run(main())


_ROLES: dict[str, tuple[Any, Any, Any]] = {
    "ours": (_ours_publisher, _ours_worker, _ours_reader),
    "plain": (_plain_publisher, _plain_worker, _plain_reader),
}


class Pipeline:
    """One implementation's three processes, started ready for one timed run.

    Args:
        impl: ``"ours"`` or ``"plain"``.
        url: The Redis server.
        n_bars: Bars streamed by the run.
        mode: ``"all"`` or ``"actionable"`` (which signals the worker publishes).
        n_signals: Signals the reader waits for (:func:`expected_signals`).
    """

    def __init__(self, impl: str, url: str, n_bars: int, mode: str, n_signals: int) -> None:
        publisher, worker, reader = _ROLES[impl]
        prefix = f"{impl}{uuid.uuid4().hex[:8]}:"
        self._start = _CTX.Event()
        self._done = [_CTX.Event(), _CTX.Event()]
        ready = [_CTX.Event() for _ in range(3)]
        self._processes = [
            _CTX.Process(target=worker, args=(url, prefix, n_bars, mode, ready[0], self._done[0])),
            _CTX.Process(target=reader, args=(url, prefix, n_signals, ready[1], self._done[1])),
            _CTX.Process(target=publisher, args=(url, prefix, n_bars, ready[2], self._start)),
        ]
        for p in self._processes:
            p.start()
        for event in ready:
            if not event.wait(_READY_TIMEOUT_S):
                self.close()
                raise RuntimeError(f"{impl} pipeline: a process was not ready within {_READY_TIMEOUT_S} s")

    def run(self) -> None:
        """Release the publisher; return once every bar is handled and every signal read."""
        self._start.set()
        deadline = time.monotonic() + _RUN_TIMEOUT_S
        for event in self._done:
            if not event.wait(max(deadline - time.monotonic(), 0.0)):
                raise RuntimeError("pipeline run did not finish in time")

    def close(self) -> None:
        """Wait for the processes to exit (killing any left after a failure)."""
        for p in self._processes:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        failed = [p.exitcode for p in self._processes if p.exitcode]
        if failed:
            raise RuntimeError(f"pipeline processes exited with {failed}")

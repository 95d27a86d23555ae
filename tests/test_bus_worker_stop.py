"""A worker stops after SIGTERM, within a bound (an in-process worker on a real redis-server).

- A background task that swallows its cancellation does not keep the worker running: on
  Python 3.11, redis-py sends each command under ``asyncio.wait_for``, which returns
  normally when the cancellation lands just after the command was sent (CPython issue
  86296). The metrics reporter, a ``while True`` loop, then ran for ever and ``run_worker``
  waited for it: the worker ignored SIGTERM (seen once in ~40 SIGTERMs of a real worker
  under load). The tests swallow one cancellation where the race does.
- A last flush that Redis never answers stops the worker after ``stop_timeout_s``, with an
  error naming what it waited for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("redis")

from l2fast.bus import redis as bus_redis
from l2fast.bus.lease import SymbolLease
from l2fast.bus.worker import WorkerOptions, run_worker
from l2fast.errors import BusUnavailableError
from l2fast.ops import monitoring

# Far longer than a worker takes to stop (well under a second once it is reading).
HANG_S = 30.0


class Stopping:
    """Whether the test has sent SIGTERM; what swallowed a cancellation."""

    def __init__(self) -> None:
        self.requested = False
        self.in_flight = False
        self.swallowed: list[str] = []

    async def swallow_once(self, what: str) -> None:
        """Wait as a command in flight does, and swallow the first cancellation once the
        test is about to send SIGTERM (it waits for this)."""
        if not self.requested or what in self.swallowed:
            return
        self.in_flight = True
        try:
            await asyncio.sleep(HANG_S)
        except asyncio.CancelledError:
            self.swallowed.append(what)  # what asyncio.wait_for does in the race: return as if done


@pytest.fixture
def stopping() -> Iterator[Stopping]:
    yield Stopping()


async def _run_then_sigterm(options: WorkerOptions, stopping: Stopping, *, swallowing: bool = False,
                            after_s: float = 0.3) -> object:
    ready = asyncio.Event()
    worker = asyncio.create_task(run_worker(options, ready=ready))
    async with asyncio.timeout(HANG_S):
        await asyncio.wait({worker, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    assert ready.is_set(), worker.exception() if worker.done() else "not ready"
    await asyncio.sleep(after_s)  # the reporter and the keeper are running
    stopping.requested = True
    if swallowing:
        async with asyncio.timeout(HANG_S):
            while not stopping.in_flight:
                await asyncio.sleep(0.005)
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        async with asyncio.timeout(HANG_S / 2):
            return await worker
    except TimeoutError:
        pytest.fail(f"the worker did not stop within {time.monotonic() - started:.0f} s of SIGTERM")


def _options(redis_url: str, name: str, **kwargs: object) -> WorkerOptions:
    # Renewals every second, each with three seconds to finish: the cancellation the keeper
    # swallows is the worker's, not its renewal's deadline.
    return WorkerOptions(redis=redis_url, prefix=f"{name}:", consumer=name, metrics_interval_s=0.05,
                         lease_ttl_ms=3_000, **kwargs)


def test_a_reporter_that_swallows_its_cancellation_does_not_keep_the_worker_running(
        redis_url: str, stopping: Stopping, monkeypatch: pytest.MonkeyPatch) -> None:
    publish = monitoring.publish_metrics

    async def publish_metrics(*args: object, **kwargs: object) -> None:
        await publish(*args, **kwargs)
        await stopping.swallow_once("reporter")

    monkeypatch.setattr(monitoring, "publish_metrics", publish_metrics)
    started = time.monotonic()
    adapter = asyncio.run(_run_then_sigterm(_options(redis_url, "swallowing-reporter"), stopping, swallowing=True))
    # Unfixed, only the test's own time limit ends it (its cancellation reaches the reporter).
    assert time.monotonic() - started < HANG_S / 2, "the worker ran on after SIGTERM"
    assert adapter is not None and stopping.swallowed == ["reporter"]


def test_a_lease_keeper_that_swallows_its_cancellation_does_not_keep_the_worker_running(
        redis_url: str, stopping: Stopping, monkeypatch: pytest.MonkeyPatch) -> None:
    renew = SymbolLease.renew

    async def renewing(self: SymbolLease) -> None:
        await renew(self)
        await stopping.swallow_once("keeper")

    monkeypatch.setattr(SymbolLease, "renew", renewing)
    started = time.monotonic()
    adapter = asyncio.run(_run_then_sigterm(_options(redis_url, "swallowing-keeper"), stopping, swallowing=True))
    assert time.monotonic() - started < HANG_S / 2, "the worker ran on after SIGTERM"
    assert adapter is not None and stopping.swallowed == ["keeper"]


def test_a_last_flush_redis_never_answers_stops_the_worker_after_stop_timeout_s(
        redis_url: str, stopping: Stopping, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    flush = bus_redis.RedisSubscription._flush_acks

    async def no_reply_once_stopping(self: bus_redis.RedisSubscription) -> None:
        if stopping.requested:
            await asyncio.sleep(HANG_S)  # a command Redis never answers (retried for ever: --redis-timeout 0)
        await flush(self)

    monkeypatch.setattr(bus_redis.RedisSubscription, "_flush_acks", no_reply_once_stopping)
    options = _options(redis_url, "stuck-flush", stop_timeout_s=0.5, redis_timeout_s=0)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, "l2fast.bus.worker"), \
            pytest.raises(BusUnavailableError, match=r"did not stop within 0\.5 s of the stop signal") as caught:
        asyncio.run(_run_then_sigterm(options, stopping))
    assert time.monotonic() - started < HANG_S / 2
    assert "RedisSubscription.ack_many > " in str(caught.value) and "no_reply_once_stopping" in str(caught.value)
    assert any("the last flush got no reply within 0.5 s of the stop signal" in r.getMessage()
               and "RedisSubscription.ack_many" in r.getMessage() for r in caplog.records), caplog.text


def test_stopping_within_the_bound_is_unchanged(redis_url: str, stopping: Stopping) -> None:
    adapter = asyncio.run(_run_then_sigterm(_options(redis_url, "plain", stop_timeout_s=5.0), stopping))
    assert adapter is not None and adapter.stats.bars == 0

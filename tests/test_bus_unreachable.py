"""Redis unreachable: the worker, publisher, signal reader and dashboard say so plainly.

Each command, pointed at a port where nothing listens, logs every retry with the URL, the
error and a counter, and after ``--redis-timeout`` exits with code 3 and one ``error:``
line naming the URL and the error, never blaming a lease. A worker started before Redis
connects once it comes up; a running worker whose Redis goes away for good gives up the
same way. A Redis that accepts connections but never answers is found out by the socket
timeout (a lease renewal by the lease's expiry), and an outage is never taken for
``signals --idle-exit`` idleness.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("redis")

from redis.asyncio import Redis
from support import REDIS_SERVER, RedisServer, bus_key_file, exit_code, free_port, write_csv

from l2fast.bus import MessageBus, Topic
from l2fast.bus.adapter import DEFAULT_CONSUMER, DEFAULT_GROUP
from l2fast.bus.lease import SymbolLease
from l2fast.bus.redis import REPLY_TIMEOUT_S, RedisRetry, RedisTransport, redacted_url
from l2fast.bus.tools import collect_signals
from l2fast.errors import BusUnavailableError
from l2fast.evaluation.synthetic import generate_bars
from l2fast.ops.dashboard import watch_redis

REPO = Path(__file__).resolve().parents[1]
EXIT_REDIS_UNREACHABLE = 3
# Process start-up (imports, the worker's arguments) on a busy 2-core machine, on top of
# the --redis-timeout the commands are given.
START_UP_S = 15.0


def _l2fast(*args: str) -> list[str]:
    return [sys.executable, "-m", "l2fast", *args]


@pytest.fixture(autouse=True)
def bus_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command gets the bus key, from the environment (inherited by subprocesses)."""
    monkeypatch.setenv("L2FAST_BUS_KEY_FILE", str(bus_key_file(tmp_path)))


@pytest.fixture
def dead_url() -> str:
    """A Redis URL on a loopback port where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("bars") / "btcusdt_1m.csv.gz", generate_bars(50))


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "worker": lambda _: ["worker"],
    "publish": lambda bars: ["publish", "--data", str(bars)],
    "signals": lambda _: ["signals"],
    "dashboard": lambda _: ["dashboard", "--once"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_gives_up_on_an_unreachable_redis_with_exit_3_naming_the_url_and_the_error(
        command: str, dead_url: str, bars_file: Path) -> None:
    args = [*COMMANDS[command](bars_file), "--redis", dead_url, "--redis-timeout", "1"]
    started = time.monotonic()
    proc = subprocess.run(_l2fast(*args), cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == EXIT_REDIS_UNREACHABLE, proc.stderr
    assert elapsed < 1.0 + START_UP_S
    port = dead_url.rsplit(":", 1)[1].split("/")[0]
    lines = proc.stderr.strip().splitlines()
    retries = [line for line in lines if f"redis at {dead_url} unreachable: " in line and " retry " in line]
    # Every retry is counted and names the address it could not connect to.
    assert "retry 1 in " in retries[0] and "retry 2 in " in retries[1], proc.stderr
    assert all(f"127.0.0.1:{port}" in line and "(giving up after 1 s)" in line for line in retries)
    # The last line says it all: the URL, the error, that it gave up.
    assert lines[-1].startswith(f"error: redis at {dead_url} unreachable: "), proc.stderr
    assert f"127.0.0.1:{port}" in lines[-1] and "gave up after" in lines[-1]
    assert "lease" not in proc.stderr.lower()


def test_a_worker_started_while_redis_is_down_connects_once_it_comes_up(tmp_path: Path) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path)  # its port is chosen, nothing listens there yet
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(_l2fast("worker", "--redis", server.url, "--redis-timeout", "60"), cwd=REPO, env=env,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        _wait_for(log, "retry 2 in ", worker)
        server.start()
        _wait_for(log, f"worker {DEFAULT_GROUP}/{DEFAULT_CONSUMER} reading", worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        server.stop()
    text = log.read_text()
    assert f"redis at {server.url} reachable again after " in text
    assert "waiting for its lease" not in text


def test_a_running_worker_whose_redis_goes_away_gives_up_after_its_timeout(server: RedisServer,
                                                                            tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The lease outlives the timeout: the timeout is what ends it.
    worker = subprocess.Popen(_l2fast("worker", "--redis", server.url, "--redis-timeout", "2",
                                      "--lease-ttl-ms", "30000"),
                              cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        _wait_for(log, f"worker {DEFAULT_GROUP}/{DEFAULT_CONSUMER} reading", worker)
        server.stop()
        stopped = time.monotonic()
        assert worker.wait(30) == EXIT_REDIS_UNREACHABLE, log.read_text()
        assert time.monotonic() - stopped < 2.0 + 10.0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"error: redis at {server.url} unreachable: ") and "gave up after" in last


def test_retries_and_the_error_mask_the_password_of_the_url(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    retry = RedisRetry(url, give_up_after_s=0.3)

    async def main() -> None:
        client = Redis.from_url(url)
        try:
            await retry.call(client.ping)
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"), pytest.raises(BusUnavailableError) as info:
        asyncio.run(main())
    assert redacted_url(url) == info.value.url == url.replace("s3cret", "***")
    assert "retry 1 in " in caplog.text
    assert "s3cret" not in caplog.text and "s3cret" not in str(info.value)


def test_a_redis_timeout_of_0_retries_for_ever(dead_url: str, tmp_path: Path) -> None:
    log = tmp_path / "signals.log"
    reader = subprocess.Popen(_l2fast("signals", "--redis", dead_url, "--redis-timeout", "0"), cwd=REPO,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                              stderr=log.open("w"))
    try:
        # Past the 0.05 + 0.1 + 0.2 + 0.4 + 0.8 s of the first retries: still at it.
        _wait_for(log, "retry 6 in ", reader)
        assert "(no time limit)" in log.read_text()
    finally:
        reader.kill()
        reader.wait()


def test_redis_timeout_must_be_non_negative_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["signals", "--redis", "redis://127.0.0.1:1/0", "--redis-timeout", "-1"]) == 2
    assert "--redis-timeout: '-1': must be seconds >= 0 (0: retry for ever)" in capsys.readouterr().err


@asynccontextmanager
async def _silent_redis() -> AsyncIterator[str]:
    """The URL of a server that accepts connections and reads commands but never answers:
    a Redis behind a network partition that reset nothing."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    finally:
        server.close()


LIMIT_S = 1.0  # --redis-timeout of the silent-server test
SOCKET_TIMEOUT_S = 0.5  # how long it waits for each reply


def test_a_command_without_a_reply_is_retried_and_gives_up_after_the_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> float:
        async with _silent_redis() as url:
            transport = RedisTransport(url, give_up_after_s=LIMIT_S, socket_timeout_s=SOCKET_TIMEOUT_S)
            started = time.monotonic()
            try:
                with pytest.raises(BusUnavailableError):
                    await transport.publish("t", b"x")
                return time.monotonic() - started
            finally:
                await transport.close()

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"):
        elapsed = asyncio.run(asyncio.wait_for(main(), 10))
    # The outage counts from when the unanswered command was sent: the limit, plus at
    # most one socket timeout for the last retry (and as much again for scheduling).
    assert LIMIT_S <= elapsed < LIMIT_S + 2 * SOCKET_TIMEOUT_S
    assert "retry 1 in " in caplog.text and "Timeout reading from" in caplog.text


def test_the_socket_timeout_outlasts_a_blocking_read_by_the_reply_timeout() -> None:
    transport = RedisTransport("redis://127.0.0.1:1/0", block_ms=2_000)
    assert transport.socket_timeout_s == 2.0 + REPLY_TIMEOUT_S
    assert transport.client.connection_pool.connection_kwargs["socket_timeout"] == 2.0 + REPLY_TIMEOUT_S


@pytest.mark.parametrize("seconds", [0.2, 0.0, float("nan"), float("inf")])
def test_a_socket_timeout_must_outlast_a_blocking_read(seconds: float) -> None:
    with pytest.raises(ValueError, match=rf"socket_timeout_s={seconds!r}: must be seconds > block_ms / 1000 \(0.2\)"):
        RedisTransport("redis://127.0.0.1:1/0", block_ms=200, socket_timeout_s=seconds)


def test_a_lease_renewal_without_a_reply_gives_up_when_the_lease_expires() -> None:
    async def main() -> tuple[float, BusUnavailableError]:
        async with _silent_redis() as url:
            # A socket timeout far past the lease: the lease's expiry alone must end it.
            client = Redis.from_url(url, socket_timeout=30.0)
            lease = SymbolLease(client, ["BTC/USDT"], "w1", ttl_ms=600, retry=RedisRetry(url))
            started = time.monotonic()
            try:
                with pytest.raises(BusUnavailableError) as info:
                    await lease.keep()
                return time.monotonic() - started, info.value
            finally:
                await client.aclose()

    elapsed, error = asyncio.run(asyncio.wait_for(main(), 5))
    assert 0.6 <= elapsed < 0.6 + 0.5
    assert "the lease of BTC/USDT has expired" in error.reason


async def _reading_signals(server: RedisServer, *, idle_exit_s: float,
                           give_up_after_s: float) -> tuple[asyncio.Task, MessageBus]:
    """collect_signals on ``server``, once its group reads the signals' stream."""
    bus = MessageBus(RedisTransport(server.url, give_up_after_s=give_up_after_s, block_ms=50))
    reading = asyncio.create_task(collect_signals(bus, idle_exit_s=idle_exit_s))
    client = Redis.from_url(server.url)
    try:
        while not await client.exists(Topic.SIGNALS):
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    return reading, bus


def test_an_outage_longer_than_the_idle_exit_ends_in_bus_unavailable_not_in_a_quiet_stop(
        server: RedisServer) -> None:
    async def main() -> None:
        reading, bus = await _reading_signals(server, idle_exit_s=0.5, give_up_after_s=2.0)
        try:
            await asyncio.to_thread(server.stop)
            with pytest.raises(BusUnavailableError):
                await reading
        finally:
            await bus.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_idle_time_counts_again_from_the_end_of_an_outage(server: RedisServer) -> None:
    async def main() -> tuple[list, float]:
        reading, bus = await _reading_signals(server, idle_exit_s=0.5, give_up_after_s=30.0)
        try:
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(1.0)  # twice the idle time, with Redis away
            assert not reading.done()
            await asyncio.to_thread(server.start)
            back = time.monotonic()
            signals, _ = await reading
            return signals, time.monotonic() - back
        finally:
            await bus.close()

    signals, idle = asyncio.run(asyncio.wait_for(main(), 20))
    assert signals == [] and idle >= 0.5


def test_a_dashboard_redis_timeout_of_0_retries_for_ever(dead_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):  # still retrying, neither refused nor given up
            await asyncio.wait_for(watch_redis(dead_url, once=True, redis_timeout_s=0), 1.5)

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"):
        asyncio.run(main())
    assert "retry 3 in " in caplog.text and "(no time limit)" in caplog.text


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (Debian: apt-get install redis-server)")
def test_a_dashboard_redis_error_masks_the_password_of_the_url(redis_url: str, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from redis import Redis as SyncRedis

    client = SyncRedis.from_url(redis_url)
    try:
        client.set("wrong:l2.signals", "not a stream")
    finally:
        client.close()
    # The default user has no password (nopass): any password logs in.
    url = redis_url.replace("redis://", "redis://default:s3cret@")
    # A password is refused on the command line: the URL comes from the environment.
    monkeypatch.setenv("L2FAST_REDIS_URL", url)
    assert exit_code(["dashboard", "--prefix", "wrong:", "--once"]) == 2
    err = capsys.readouterr().err
    assert f"redis at {redacted_url(url)}: WRONGTYPE" in err and "s3cret" not in err


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.05)


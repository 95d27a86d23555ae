"""Redis unreachable: the worker, publisher, signal reader and dashboard say so plainly.

Each command, pointed at a port where nothing listens, logs every retry with the URL, the
error and a counter, and after ``--redis-timeout`` exits with code 3 and one ``error:``
line naming the URL and the error, never blaming a lease. A worker started before Redis
connects once it comes up; a running worker whose Redis goes away for good gives up the
same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("redis")

from redis.asyncio import Redis  # noqa: E402
from support import REDIS_SERVER, RedisServer, exit_code, free_port, write_csv  # noqa: E402

from l2fast.bus.redis import RedisRetry, redacted_url  # noqa: E402
from l2fast.errors import BusUnavailableError  # noqa: E402
from l2fast.synthetic import generate_bars  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXIT_REDIS_UNREACHABLE = 3
# Process start-up (imports, the worker's arguments) on a busy 2-core machine, on top of
# the --redis-timeout the commands are given.
START_UP_S = 15.0


def _l2fast(*args: str) -> list[str]:
    return [sys.executable, "-m", "l2fast", *args]


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
        _wait_for(log, "worker l2/l2-0 reading", worker)
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
        _wait_for(log, "worker l2/l2-0 reading", worker)
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


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.05)


"""Per-role Redis ACL users and TLS on a real redis-server (issue 16 items 1 and 7).

ACL: the README's recipe (its ```acl block, with a key prefix and the users' password
hashes filled in; ``default`` off) is the server's ACL file. Publisher, worker, L1 and
dashboard run as processes, each as its user with its URL from a file, on 400 real BTC
and ETH bars; L1 reads exactly the signals of an in-process replay, adds a fill the
worker books, the dashboard reads the worker's metrics, and Redis refused nothing
(``ACL LOG``). Each role is then refused what it must not do (``NOPERM``): the publisher
adding signals or fills or touching a lease key, L1 adding bars or decisions, the worker
adding decisions or bars, the dashboard writing; the commands run as the wrong user
exit with code 4.

TLS: a CA and a server certificate made with ``openssl``; the three processes over
``rediss://`` with ``ssl_ca_certs`` give the replay's signals; a certificate of another
CA, and a ``rediss://`` URL to the plain port, end in exit code 4 within seconds, saying
what failed. In CI a redis-server without TLS or a missing ``openssl`` fails these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis")

import redis
from secure_redis import CA, REPO, ROLES, SecureRedis, acl_file, readme_acl, secret_file
from support import BUS_KEY, bus_signer, merged_bars, write_csv

from l2fast.bus import Fill, MessageBus, Topic
from l2fast.bus.redis import RedisTransport
from l2fast.cli.main import EXIT_REDIS_REFUSED
from l2fast.data import shipped_config
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.evaluation.replay import BarStream, demo_config
from l2fast.ops.monitoring import read_metrics
from l2fast.signals import StrategicDecision

BTC, ETH = "BTC/USDT", "ETH/USDT"
MINUTES = 200
PREFIX = "desk7:"
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive", universe=(BTC, ETH))
ADMIN = "l2fast-test-admin"


class Feed:
    """The bar files, the decision, and the signals of an in-process replay."""

    def __init__(self, folder: Path, btc: dict, eth: dict) -> None:
        streams = [BarStream(BTC, {k: v[-MINUTES:] for k, v in btc.items()}),
                   BarStream(ETH, {k: v[-MINUTES:] for k, v in eth.items()})]
        self.files = [write_csv(folder / "btcusdt_1m.csv.gz", streams[0].bars),
                      write_csv(folder / "ethusdt_1m.csv.gz", streams[1].bars)]
        self.decisions = folder / "decisions.jsonl"
        self.decisions.write_text(json.dumps(DECISION.to_dict()) + "\n")
        gen = TacticalSignalGenerator(config=demo_config())
        gen.on_strategic_decision(DECISION)
        self.bars = merged_bars(streams)
        self.expected = [gen.on_bar(b.symbol, b.ts_ms, b.open, b.high, b.low, b.close, b.volume).to_dict()
                         for b in self.bars]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory, btc_1m: dict, eth_1m: dict) -> Feed:
    return Feed(tmp_path_factory.mktemp("feed"), btc_1m, eth_1m)


def _cli(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "l2fast", *args], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160", "L2FAST_BUS_KEY": BUS_KEY,
                                 **(env or {})},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _received(path: Path) -> list[dict]:
    signals = [json.loads(line) for line in path.open()]
    for s in signals:
        s.pop("meta")
    return signals


def _wait(process: subprocess.Popen, worker: subprocess.Popen, logs: list[Path], timeout: float = 180.0) -> int:
    """``process``'s exit code; fails at once when ``worker`` dies first (with the logs)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert worker.poll() is None, "the worker died:\n" + "\n".join(p.read_text()[-3000:] for p in logs)
        assert time.monotonic() < deadline, "\n".join(p.read_text()[-3000:] for p in logs)
        time.sleep(0.05)
    return process.returncode


def _terminate(worker: subprocess.Popen, log: Path, timeout: float = 60.0) -> int:
    """SIGTERM ``worker`` and its exit code; fails with its log when it does not stop in time."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail(f"the worker did not stop within {timeout:g} s of SIGTERM:\n{log.read_text()[-3000:]}")


def _stop(*processes: subprocess.Popen) -> None:
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()


# --- ACL users ----------------------------------------------------------------------------


class Desk:
    """A redis-server whose ACL file is the README's recipe, and each role's URL file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.passwords = {role: secrets.token_hex(16) for role in ROLES}
        self.admin_password = secrets.token_hex(16)
        lines = acl_file(readme_acl(), PREFIX, self.passwords)
        # The tests' own user, to read ACL LOG.
        lines.append(f"user {ADMIN} on >{self.admin_password} ~* &* +@all")
        acl = secret_file(folder / "users.acl", "\n".join(lines))
        self.server = SecureRedis(folder, [f"aclfile {acl}"]).start()
        self.url_files = {role: secret_file(folder / f"{role}.url", self.url(role)) for role in ROLES}

    def url(self, role: str) -> str:
        return self.server.url(ROLES[role], self.passwords[role])

    def client(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(role))

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url(ADMIN, self.admin_password))

    def denials(self) -> list[dict]:
        """ACL LOG, without redis-py's CLIENT SETINFO (a command Redis 7.0 does not know,
        which the recipe therefore cannot grant, and redis-py ignores a refusal of)."""
        with self.admin() as admin:
            return [e for e in admin.acl_log() if e.get("object") != "client|setinfo"]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    d = Desk(tmp_path_factory.mktemp("acl"))
    try:
        yield d
    finally:
        d.server.stop()


def test_the_roles_run_the_pipeline_as_their_acl_users(desk: Desk, feed: Feed, tmp_path: Path) -> None:
    out = tmp_path / "signals.jsonl"
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "l1", "publisher", "dashboard")}
    common = ("--prefix", PREFIX)
    worker = _cli("worker", "--redis-file", str(desk.url_files["worker"]), *common, "--config",
                  str(shipped_config("demo")), "--signals", "all", "--consumer", "w1", log=logs["worker"])
    l1 = _cli("signals", *common, "--count", str(len(feed.expected)), "--out", str(out), log=logs["l1"],
              env={"L2FAST_REDIS_URL_FILE": str(desk.url_files["l1"])})
    try:
        publisher = _cli("publish", "--redis-file", str(desk.url_files["publisher"]), *common,
                         "--data", str(feed.files[0]), "--data", str(feed.files[1]),
                         "--decisions", str(feed.decisions), log=logs["publisher"])
        assert _wait(publisher, worker, [logs["publisher"], logs["worker"]]) == 0, logs["publisher"].read_text()
        assert _wait(l1, worker, [logs["l1"], logs["worker"]]) == 0, logs["l1"].read_text()
        assert _received(out) == feed.expected  # same ids and content, in order

        # L1 books a fill; the worker applies it (its metrics, read as the dashboard).
        last = feed.bars[-1]
        asyncio.run(_publish_fill(desk.url("l1"), Fill(last.symbol, "buy", 0.001, last.close, last.ts_ms)))
        asyncio.run(_wait_for_fill(desk.url("dashboard")))
        board = _cli("dashboard", "--redis-file", str(desk.url_files["dashboard"]), *common, "--once",
                     log=logs["dashboard"])
        assert board.wait(60) == 0, logs["dashboard"].read_text()
        assert "Portfolio heat" in logs["dashboard"].read_text()
    finally:
        try:
            assert _terminate(worker, logs["worker"]) == 0, logs["worker"].read_text()
        finally:
            _stop(worker, l1)
    assert "refused=0" in logs["worker"].read_text() and "dead=0" in logs["worker"].read_text()
    assert desk.denials() == []
    for role, password in desk.passwords.items():
        for log in logs.values():
            assert password not in log.read_text(), (role, log.name)


async def _publish_fill(url: str, fill: Fill) -> None:
    bus = MessageBus(RedisTransport(url, prefix=PREFIX, give_up_after_s=30), signer=bus_signer())
    try:
        await bus.publish(Topic.FILLS, fill)
    finally:
        await bus.close()


async def _wait_for_fill(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            worker = (await read_metrics(client, PREFIX)).get("w1", {})
            if worker.get("adapter", {}).get("fills") == 1:
                return
            assert time.monotonic() < deadline, f"the worker's metrics show no fill: {worker.get('adapter')}"
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


_STREAM_ENTRY = {"d": "{}"}

#: What each role must not do: (role, command, arguments).
FORBIDDEN = [
    ("publisher", "xadd", (PREFIX + "l2.signals", _STREAM_ENTRY)),
    ("publisher", "xadd", (PREFIX + "l1.fills", _STREAM_ENTRY)),
    ("publisher", "set", (PREFIX + "l2fast:owner:*", "intruder")),
    ("publisher", "delete", (PREFIX + "l2fast:owner:*",)),
    ("publisher", "set", (PREFIX + "l2fast:owner:BTC/USDT", "intruder")),
    ("l1", "xadd", (PREFIX + "market.bars", _STREAM_ENTRY)),
    ("l1", "xadd", (PREFIX + "l3.decisions", _STREAM_ENTRY)),
    ("l1", "set", (PREFIX + "l2fast:owner:*", "intruder")),
    ("worker", "xadd", (PREFIX + "l3.decisions", _STREAM_ENTRY)),
    ("worker", "xadd", (PREFIX + "market.bars", _STREAM_ENTRY)),
    ("worker", "xadd", (PREFIX + "l1.fills", _STREAM_ENTRY)),
    ("dashboard", "xadd", (PREFIX + "l2.signals", _STREAM_ENTRY)),
    ("dashboard", "set", (PREFIX + "l2fast:metrics:w1", "{}")),
    ("dashboard", "xreadgroup", ("l1", "x", {PREFIX + "l2.signals": ">"})),
    # Keys without the bus's prefix belong to no role.
    ("publisher", "xadd", ("market.bars", _STREAM_ENTRY)),
]


@pytest.mark.parametrize(("role", "command", "args"), FORBIDDEN,
                         ids=[f"{r}-{c}-{a[0] if c != 'xreadgroup' else 'signals'}" for r, c, a in FORBIDDEN])
def test_each_role_is_refused_what_it_must_not_do(desk: Desk, role: str, command: str, args: tuple) -> None:
    with desk.client(role) as client, pytest.raises(redis.exceptions.NoPermissionError):
        getattr(client, command)(*args)


@pytest.mark.parametrize(("role", "command"), [("l1", "publish"), ("publisher", "worker"), ("dashboard", "signals")])
def test_a_command_run_as_the_wrong_user_exits_4(desk: Desk, feed: Feed, tmp_path: Path, role: str,
                                                 command: str) -> None:
    extra = {"publish": ["--data", str(feed.files[0])], "signals": ["--count", "1"]}.get(command, [])
    log = tmp_path / "out.log"
    process = _cli(command, "--redis-file", str(desk.url_files[role]), "--prefix", PREFIX, "--redis-timeout", "0",
                   *extra, log=log)
    try:
        assert process.wait(60) == EXIT_REDIS_REFUSED, log.read_text()
    finally:
        _stop(process)
    text = log.read_text()
    assert f"error: redis at redis://{ROLES[role]}:***@127.0.0.1:{desk.server.port}/0: permission denied: " in text
    assert desk.passwords[role] not in text and "Traceback" not in text, text


# --- TLS ---------------------------------------------------------------------------------


class Tls:
    def __init__(self, folder: Path) -> None:
        self.ca = CA(folder / "ca")
        self.other = CA(folder / "other", name="another CA")
        self.server = SecureRedis(folder, [], tls=self.ca).start()

    def url(self, ca: CA | None = None) -> str:
        return self.server.url(tls=True, query=f"ssl_ca_certs={(ca or self.ca).cert}")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    t = Tls(tmp_path_factory.mktemp("tls"))
    try:
        yield t
    finally:
        t.server.stop()


def test_publisher_worker_and_l1_over_tls(tls: Tls, feed: Feed, tmp_path: Path) -> None:
    out = tmp_path / "signals.jsonl"
    url = tls.url()
    worker = _cli("worker", "--redis", url, "--config", str(shipped_config("demo")), "--signals", "all",
                  log=tmp_path / "worker.log")
    l1 = _cli("signals", "--redis", url, "--count", str(len(feed.expected)), "--out", str(out),
              log=tmp_path / "l1.log")
    try:
        publisher = _cli("publish", "--redis", url, "--data", str(feed.files[0]), "--data", str(feed.files[1]),
                         "--decisions", str(feed.decisions), log=tmp_path / "publisher.log")
        logs = [tmp_path / "publisher.log", tmp_path / "l1.log", tmp_path / "worker.log"]
        assert _wait(publisher, worker, logs) == 0, logs[0].read_text()
        assert _wait(l1, worker, logs) == 0, logs[1].read_text()
        assert _terminate(worker, logs[2]) == 0, logs[2].read_text()
    finally:
        _stop(worker, l1)
    assert _received(out) == feed.expected


@pytest.mark.parametrize("case", ["wrong CA", "plain port"])
@pytest.mark.parametrize("command", ["worker", "signals"])
def test_a_tls_failure_exits_4_at_once_saying_what_failed(tls: Tls, tmp_path: Path, case: str, command: str) -> None:
    if case == "wrong CA":
        url, says = tls.url(tls.other), "TLS certificate verification failed: "
    else:
        url = f"rediss://127.0.0.1:{tls.server.port}/0?ssl_ca_certs={tls.ca.cert}"
        says = "the port answers plain Redis, not TLS"
    log = tmp_path / "out.log"
    started = time.monotonic()
    process = _cli(command, "--redis", url, "--redis-timeout", "0", log=log)
    try:
        code = process.wait(60)
    finally:
        _stop(process)
    text = log.read_text()
    assert code == EXIT_REDIS_REFUSED, text
    assert time.monotonic() - started < 30, text  # start-up and imports under load; the check itself takes < 3 s
    assert "error: redis at rediss://127.0.0.1:" in text and says in text, text
    assert "unreachable" not in text and "Traceback" not in text, text

"""L3/market publisher, L2 worker and L1 reader as separate processes on a real Redis.

On 10,000 real BTC and ETH bars (5,000 minutes of each) with the fills a paper L1 made
in an in-process replay, the signals the L1 process reads (duplicates dropped by
``signal_id``) must equal the replay's, signal for signal: on a plain run, when the
worker is killed (SIGKILL) mid-stream and started again from its snapshot, when Redis
restarts mid-stream, with a malformed entry in the bar stream (skipped, counted), with
poison entries (numbers out of range in a bar, a fill and a decision: dead letters), and
with forged entries (not signed with the bus key, which every process is given as the
README says: refused, counted, dead letters).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis")

from prometheus_client.parser import text_string_to_metric_families
from support import REDIS_SERVER, RedisServer, bus_key_file, bus_signer, free_port, paper_desk_replay, write_csv

from l2fast.bus import Bar, Fill, Topic
from l2fast.bus.schema import encode, sign
from l2fast.data import shipped_config
from l2fast.evaluation.replay import BarStream
from l2fast.keys import Purpose, Signer
from l2fast.signals import StrategicDecision, TacticalSignal

pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server is not installed (Debian: apt-get install redis-server)")

REPO = Path(__file__).resolve().parents[1]
BTC, ETH = "BTC/USDT", "ETH/USDT"
MINUTES = 5_000
COLUMNS = ("ts", "open", "high", "low", "close", "volume")
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive", universe=(BTC, ETH))


class Setup:
    """The files the processes read and the replay's signals they must reproduce."""

    def __init__(self, folder: Path, btc: dict, eth: dict, split: bool = False) -> None:
        streams = [BarStream(BTC, {k: v[-MINUTES:] for k, v in btc.items()}),
                   BarStream(ETH, {k: v[-MINUTES:] for k, v in eth.items()})]
        self.btc = write_csv(folder / "btcusdt_1m.csv.gz", streams[0].bars)
        self.eth = write_csv(folder / "ethusdt_1m.csv.gz", streams[1].bars)
        self.decisions = folder / "decisions.jsonl"
        self.decisions.write_text(json.dumps(DECISION.to_dict()) + "\n")
        self.config = shipped_config("demo")
        self.expected, fills = paper_desk_replay(streams, DECISION, split=split)
        self.fills = folder / "fills.jsonl"
        self.fills.write_text("".join(json.dumps(f) + "\n" for f in fills))
        self.n_fills = len(fills)
        self.snapshot = folder / "worker.l2snap"
        self.key = bus_key_file(folder)


@pytest.fixture(scope="module")
def split_setup(tmp_path_factory, btc_1m, eth_1m) -> Setup:
    s = Setup(tmp_path_factory.mktemp("feed-split"), btc_1m, eth_1m, split=True)
    assert all(sum(d["side"] != "hold" and d["symbol"] == sym for d in s.expected) >= 3 for sym in (BTC, ETH))
    return s


@pytest.fixture(scope="module")
def setup(tmp_path_factory, btc_1m, eth_1m) -> Setup:
    s = Setup(tmp_path_factory.mktemp("feed"), btc_1m, eth_1m)
    assert s.n_fills >= 10 and sum(d["side"] != "hold" for d in s.expected) >= 10
    return s


def _l2fast(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "l2fast", *args], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


class Desk:
    """The three kinds of process on one Redis, with their logs in ``folder``."""

    def __init__(self, setup: Setup, url: str, folder: Path) -> None:
        self.setup = setup
        self.url = url
        self.folder = folder
        self.out = folder / "signals.jsonl"
        self.workers: list[subprocess.Popen] = []
        self.l1 = _l2fast("signals", "--redis", url, "--bus-key-file", str(setup.key), "--out", str(self.out),
                          "--count", str(len(setup.expected)), log=folder / "l1.log")

    def start_worker(self, *extra: str, consumer: str = "w1", snapshot: Path | None = None) -> subprocess.Popen:
        snapshot = snapshot or self.setup.snapshot
        worker = _l2fast("worker", "--redis", self.url, "--bus-key-file", str(self.setup.key),
                         "--config", str(self.setup.config), "--signals", "all",
                         "--snapshot", str(snapshot), "--snapshot-every", "500", "--consumer", consumer,
                         *extra, log=self.folder / f"worker{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def publish(self, *extra: str) -> subprocess.Popen:
        return _l2fast("publish", "--redis", self.url, "--bus-key-file", str(self.setup.key),
                       "--data", str(self.setup.btc), "--data", str(self.setup.eth),
                       "--decisions", str(self.setup.decisions), "--fills", str(self.setup.fills), *extra,
                       log=self.folder / "publisher.log")

    def received(self) -> int:
        return sum(1 for _ in self.out.open()) if self.out.exists() else 0

    def wait_received(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received() < n:
            assert time.monotonic() < deadline, f"only {self.received()} of {n} signals arrived"
            assert self.workers[-1].poll() is None, self.log("worker")
            time.sleep(0.05)

    def finish(self, before_stop: Callable[[], None] | None = None) -> list[dict]:
        try:
            assert self.l1.wait(180) == 0, self.log("l1")
            if before_stop is not None:
                before_stop()
        finally:
            running = [w for w in self.workers if w.poll() is None]
            for w in running:
                w.send_signal(signal.SIGTERM)
        for w in running:
            assert w.wait(30) == 0, self.log("worker")
        signals = [json.loads(line) for line in self.out.open()]
        assert all(isinstance(s.pop("meta")["age_ms"], int) for s in signals)
        return signals

    def log(self, name: str) -> str:
        matches = sorted(self.folder.glob(f"{name}*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in matches)


@pytest.fixture
def desk(setup: Setup, server: RedisServer, tmp_path: Path) -> Iterator[Desk]:
    setup.snapshot.unlink(missing_ok=True)
    yield from _running(Desk(setup, server.url, tmp_path))


def _running(d: Desk) -> Iterator[Desk]:
    """``d`` while the test runs; afterwards every process of it still alive is killed."""
    try:
        yield d
    finally:
        for p in (d.l1, *d.workers):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_three_processes_give_the_signals_of_an_in_process_replay(desk, setup) -> None:
    port = free_port()
    desk.start_worker("--metrics-port", str(port))
    publisher = desk.publish()
    seen: dict[str, str] = {}

    def look() -> None:
        # The worker's Prometheus endpoint (a real HTTP request) and the dashboard read
        # from Redis, once every signal has arrived.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            seen["metrics"] = response.read().decode()
        deadline = time.monotonic() + 10
        while "10,000" not in seen.get("dashboard", "") and time.monotonic() < deadline:
            seen["dashboard"] = subprocess.run(
                [sys.executable, "-m", "l2fast", "dashboard", "--redis", desk.url, "--once",
                 "--bus-key-file", str(setup.key)], cwd=REPO,
                capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "160"}).stdout
            time.sleep(0.5)

    got = desk.finish(look)
    assert publisher.wait(60) == 0, desk.log("publisher")
    assert got == setup.expected  # same ids and content, in order
    assert "unauthenticated=0, malformed=0" in desk.log("worker0")
    samples = {(s.name, s.labels.get("side")): s.value
               for family in text_string_to_metric_families(seen["metrics"]) for s in family.samples
               if s.labels.get("worker") == "w1"}
    assert samples[("l2fast_bars_total", None)] == len(setup.expected)
    for side in ("buy", "sell", "hold"):
        assert samples[("l2fast_signals_total", side)] == sum(d["side"] == side for d in setup.expected)
    orders = sum(d["side"] != "hold" for d in setup.expected)
    assert f"{orders:,}" in seen["dashboard"] and "Portfolio heat" in seen["dashboard"], seen["dashboard"]


def test_a_killed_worker_restarted_from_its_snapshot_loses_nothing(desk, setup) -> None:
    first = desk.start_worker()
    publisher = desk.publish()
    desk.wait_received(len(setup.expected) // 3)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert setup.snapshot.exists()
    desk.start_worker()
    got = desk.finish()
    assert publisher.wait(60) == 0, desk.log("publisher")
    assert "restored the engine" in desk.log("worker1")
    assert got == setup.expected


def test_a_second_worker_for_every_symbol_waits_as_a_standby(desk, setup, tmp_path) -> None:
    # Two workers of the same group reading everything would split the bars between two
    # engines (and their signals would differ from the replay): the second must wait.
    desk.start_worker()
    desk.start_worker(consumer="w2", snapshot=tmp_path / "w2.l2snap")
    publisher = desk.publish()
    got = desk.finish()
    assert publisher.wait(60) == 0, desk.log("publisher")
    assert got == setup.expected
    logs = [desk.log("worker0"), desk.log("worker1")]
    standby = [log for log in logs if "waiting for its lease" in log]
    assert len(standby) == 1, logs
    assert "stopped while waiting for the lease of *" in standby[0]


def test_a_redis_restart_mid_stream_loses_nothing(desk, setup, server) -> None:
    desk.start_worker()
    publisher = desk.publish()
    desk.wait_received(len(setup.expected) // 3)
    server.stop()
    time.sleep(0.5)
    server.start()
    got = desk.finish()
    assert publisher.wait(60) == 0, desk.log("publisher")
    assert got == setup.expected


def test_a_malformed_entry_is_skipped_counted_and_processing_goes_on(desk, setup) -> None:
    import redis

    client = redis.Redis.from_url(desk.url)
    # Signed with the bus key: malformed, not forged.
    client.xadd("market.bars", {"d": sign(bus_signer(), Topic.BARS, b"{not json")})
    client.close()
    desk.start_worker()
    publisher = desk.publish()
    got = desk.finish()
    assert publisher.wait(60) == 0, desk.log("publisher")
    assert got == setup.expected
    assert "malformed=1" in desk.log("worker0")


def _run_with_entries(desk: Desk, setup: Setup, entries: list[tuple[str, bytes]]) -> tuple[str, list]:
    """Run the desk with ``entries`` (stream, data) added first; require the replay's signals.

    Returns the worker's stop line and the dead letters.
    """
    import redis

    client = redis.Redis.from_url(desk.url)
    for k, (stream, data) in enumerate(entries, 1):
        # Ids of our own: automatic ones may repeat across streams, which the bus's
        # publisher never does (redis.py's ids are unique across topics).
        client.xadd(stream, {"d": data}, id=f"{k}-0")
    desk.start_worker()
    publisher = desk.publish()
    got = desk.finish()
    dead = client.xrange("l2fast:dead")
    client.close()
    assert publisher.wait(60) == 0, desk.log("publisher")
    assert got == setup.expected
    stopped = [line for line in desk.log("worker0").splitlines() if "worker stopped" in line]
    assert stopped
    return stopped[-1], dead


def test_poison_entries_are_dead_letters_and_the_worker_process_goes_on(desk, setup) -> None:
    # Each raised an untyped OverflowError that killed the worker, and killed it again
    # after every restart, as the entry was never acknowledged.
    poison = [
        ("market.bars", {"symbol": "BTC/USDT", "ts_ms": 0, "open": 10 ** 400, "high": 1.0, "low": 1.0,
                         "close": 1.0, "volume": 1.0}, "bar"),
        ("l1.fills", {"symbol": "BTC/USDT", "side": "buy", "qty": 10 ** 400, "price": 1.0, "ts_ms": 0}, "fill"),
        ("l3.decisions", {"regime": "trending", "target_exposure": 1.0, "risk_appetite": "aggressive",
                          "universe": ["BTC/USDT"], "ts_ms": 2 ** 63}, "decision"),
    ]
    stopped, dead = _run_with_entries(desk, setup, [
        (stream, sign(bus_signer(), stream, json.dumps({"v": 1, "type": kind, "payload": payload}).encode()))
        for stream, payload, kind in poison])
    assert "malformed=3," in stopped, stopped
    assert sorted(fields[b"topic"].decode() for _, fields in dead) == sorted(s for s, _, _ in poison)


def test_forged_entries_are_refused_counted_and_never_reach_l1(desk, setup) -> None:
    # Without the key every one of them was applied: anyone who could write to Redis
    # installed a decision, booked a fill, fed a bar and handed L1 a "buy 1000 BTC".
    other = Signer(b"o" * 32, Purpose.BUS)
    forged = [
        ("l3.decisions", encode(StrategicDecision(regime="trending", target_exposure=1.0, risk_appetite="aggressive",
                                                  universe=(BTC, ETH)))),
        ("l1.fills", sign(other, Topic.FILLS, encode(Fill(BTC, "buy", 1.0, 1.0, 0)))),
        ("market.bars", sign(bus_signer(), Topic.DECISIONS, encode(Bar(BTC, 0, 1.0, 1.0, 1.0, 1.0, 1.0)))),
        ("l2.signals", encode(TacticalSignal(BTC, "buy", 1000.0, 1.0, 1.0, None, None, {}, 0))),
    ]
    stopped, dead = _run_with_entries(desk, setup, forged)
    assert "unauthenticated=3, malformed=0," in stopped, stopped
    assert "1 unauthenticated and 0 malformed refused" in desk.log("l1")
    assert sorted((f[b"topic"].decode(), f[b"kind"].decode(), f[b"d"]) for _, f in dead) == sorted(
        (stream, "unauthenticated", data) for stream, data in forged)


@pytest.fixture
def split_desk(split_setup: Setup, server: RedisServer, tmp_path: Path) -> Iterator[Desk]:
    yield from _running(Desk(split_setup, server.url, tmp_path))


def test_two_workers_share_the_symbols_and_a_standby_takes_over_a_killed_owner(split_desk, split_setup,
                                                                               tmp_path) -> None:
    desk = split_desk
    btc_snap, eth_snap = tmp_path / "btc.l2snap", tmp_path / "eth.l2snap"
    # Longer than a worker's start-up (loading the models holds the GIL about a second).
    lease = ("--lease-ttl-ms", "5000")
    owner = desk.start_worker("--symbols", BTC, *lease, consumer="btc-a", snapshot=btc_snap)
    desk.start_worker("--symbols", ETH, *lease, consumer="eth-a", snapshot=eth_snap)
    time.sleep(1.0)
    standby = desk.start_worker("--symbols", BTC, *lease, consumer="btc-b", snapshot=btc_snap)
    publisher = desk.publish("--partitioned")
    desk.wait_received(len(split_setup.expected) // 3)
    assert standby.poll() is None and "owns" not in desk.log("worker2")  # waiting: BTC is owned
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    got = desk.finish()
    assert publisher.wait(60) == 0, desk.log("publisher")
    for symbol in (BTC, ETH):  # each worker's signals in its order; the two interleave freely
        assert [s for s in got if s["symbol"] == symbol] == [s for s in split_setup.expected
                                                            if s["symbol"] == symbol], symbol
    log = desk.log("worker2")
    assert "waiting for its lease" in log and "btc-b owns BTC/USDT" in log and "restored the engine" in log

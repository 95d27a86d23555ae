"""Fault soak of the deployed layout: kill -9 the worker, restart Redis, inject poison.

The three processes of a deployment (``publish``, ``worker``, ``signals`` as L1) run on a
real ``redis-server`` with append-only persistence, on real BTC and ETH minutes and the
fills a paper L1 made for them in an in-process replay. While the stream flows, the
worker is killed with SIGKILL at ``--kills`` random moments (during start-up and restore
too) and started again from its snapshot, Redis is restarted ``--restarts`` times
(SIGTERM, then started on the same append-only file), and ``--poison`` entries are added
to the bar stream (numbers out of range, signed with the bus key, and forged ones without
a valid tag). At the end the signals L1 read are compared, one by one, with the replay's:

- lost: a replay signal L1 never read;
- duplicated: a signal L1 passed on twice (the reader drops redeliveries by ``signal_id``);
- different: a signal with the replay's id whose content differs, or out of order.

The goal is 0 / 0 / 0 and every poison entry skipped without stopping the worker (one
dead letter each). Exit status 1 otherwise. Never run on the holdout.

Run from the checkout (takes a few minutes)::

    python benchmarks/soak_bus.py --data ../shared/data --minutes 6000 --kills 50 --restarts 5 --poison 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import RedisServer, paper_desk_replay, write_csv  # noqa: E402

from l2fast.data import shipped_config  # noqa: E402
from l2fast.evaluation.replay import BarStream  # noqa: E402
from l2fast.signals import StrategicDecision  # noqa: E402
from l2fast.technical.bars import load_bars_csv  # noqa: E402

BTC, ETH = "BTC/USDT", "ETH/USDT"
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive", universe=(BTC, ETH))


@dataclass
class Feed:
    """The files the processes read and the replay's signals L1 must end up with."""

    btc: Path
    eth: Path
    decisions: Path
    fills: Path
    expected: list[dict[str, Any]]
    n_fills: int


def build_feed(data: Path, minutes: int, end: str | None, folder: Path) -> Feed:
    """The last ``minutes`` minutes before ``end`` (default: the files' end) of both symbols, and their replay."""
    end_ms = (int(datetime.strptime(end, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) * 1000 if end
              else np.iinfo(np.int64).max)
    streams = []
    for symbol, name in ((BTC, "btcusdt_1m.csv.gz"), (ETH, "ethusdt_1m.csv.gz")):
        bars = load_bars_csv(data / name)
        stop = int((bars["ts"] < end_ms).sum())
        streams.append(BarStream(symbol, {k: v[stop - minutes:stop] for k, v in bars.items()}))
    expected, fills = paper_desk_replay(streams, DECISION)
    decisions = folder / "decisions.jsonl"
    decisions.write_text(json.dumps(DECISION.to_dict()) + "\n")
    fills_path = folder / "fills.jsonl"
    fills_path.write_text("".join(json.dumps(f) + "\n" for f in fills))
    return Feed(write_csv(folder / "btcusdt_1m.csv.gz", streams[0].bars),
                write_csv(folder / "ethusdt_1m.csv.gz", streams[1].bars), decisions, fills_path, expected, len(fills))


@dataclass
class Soak:
    """The processes of one soak run and what happened to them."""

    feed: Feed
    server: RedisServer
    folder: Path
    auth: list[str]
    rate: float
    workers: int = 0
    kills: int = 0
    restarts: int = 0
    poison: int = 0
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = self.folder / "signals.jsonl"
        self.snapshot = self.folder / "worker.l2snap"
        self.l1 = self._start("l1", "signals", "--out", str(self.out), "--count", str(len(self.feed.expected)))
        self.worker = self._start_worker()
        self.publisher = self._start("publisher", "publish", "--data", str(self.feed.btc), "--data",
                                     str(self.feed.eth), "--decisions", str(self.feed.decisions),
                                     "--fills", str(self.feed.fills), "--rate", f"{self.rate:.1f}")

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = (self.folder / f"{name}.log").open("a")
        return subprocess.Popen([sys.executable, "-m", "l2fast", *args, "--redis", self.server.url, *self.auth],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _start_worker(self) -> subprocess.Popen[bytes]:
        self.workers += 1
        return self._start("worker", "worker", "--config", str(shipped_config("demo")), "--signals", "all",
                           "--snapshot", str(self.snapshot), "--snapshot-every", "500", "--consumer", "w1")

    def received(self) -> int:
        return sum(1 for _ in self.out.open()) if self.out.exists() else 0

    def kill_worker(self) -> None:
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)
        self.kills += 1
        self.events.append(f"kill at {self.received()} signals")
        self.worker = self._start_worker()

    def restart_redis(self) -> None:
        self.server.stop()
        time.sleep(0.3)
        self.server.start()
        self.restarts += 1
        self.events.append(f"redis restart at {self.received()} signals")

    def add_poison(self, signed: bool) -> None:
        import redis

        from l2fast.bus.schema import sign
        from l2fast.keys import Purpose, load_key

        # A 400-digit number where a price goes: the kind of entry that once killed the
        # worker on every restart. Signed with the bus key it reaches the schema (malformed);
        # with a made-up tag it is refused before (unauthenticated).
        envelope = ('{"v":1,"type":"bar","payload":{"symbol":"BTC/USDT","ts":1,"open":' + "9" * 400 +
                    ',"high":1,"low":1,"close":1,"volume":1},"meta":{}}').encode()
        signer = load_key(Purpose.BUS)
        assert signer is not None
        data = sign(signer, "market.bars", envelope) if signed else b"sig1:" + b"0" * 64 + b":" + envelope
        client = redis.Redis.from_url(self.server.url)
        try:
            client.xadd("market.bars", {"d": data})
        finally:
            client.close()
        self.poison += 1
        self.events.append(f"{'signed' if signed else 'forged'} poison at {self.received()} signals")

    def dead_letters(self) -> dict[str, int]:
        """The dead letters by kind, each skipped entry once (a worker killed between the
        dead letter and the acknowledgement writes it again on restart)."""
        import redis

        client = redis.Redis.from_url(self.server.url)
        try:
            seen: dict[tuple[bytes, bytes], bytes] = {}
            for _, fields in client.xrange("l2fast:dead"):
                seen[(fields[b"stream"], fields[b"id"])] = fields[b"kind"]
        finally:
            client.close()
        kinds: dict[str, int] = {}
        for kind in seen.values():
            kinds[kind.decode()] = kinds.get(kind.decode(), 0) + 1
        return kinds

    def redelivered(self) -> int:
        """Signals L1 read again and dropped by ``signal_id`` (from its last line)."""
        text = (self.folder / "l1.log").read_text()
        found = re.findall(r"(\d+) duplicates dropped", text)
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        for p in (self.l1, self.worker, self.publisher):
            if p.poll() is None:
                p.kill()
                p.wait()


def compare(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> dict[str, int]:
    """Lost, duplicated and different signals of ``got`` against ``expected``."""
    for s in got:
        s.pop("meta", None)
    ids = [s["signal_id"] for s in got]
    want = {s["signal_id"]: (i, s) for i, s in enumerate(expected)}
    seen: set[str] = set()
    different = 0
    position = -1
    for s in got:
        sid = s["signal_id"]
        if sid in seen or sid not in want:
            different += sid not in want
            continue
        seen.add(sid)
        i, reference = want[sid]
        if reference != s or i < position:
            different += 1
        position = max(position, i)
    return {"expected": len(expected), "received": len(got), "lost": len(want.keys() - seen),
            "duplicated": len(ids) - len(set(ids)), "different": different}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder of btcusdt_1m.csv.gz and ethusdt_1m.csv.gz")
    parser.add_argument("--minutes", type=int, default=6_000, help="minutes of each symbol streamed")
    parser.add_argument("--end", help="first minute after the window (UTC date; default: the files' end)")
    parser.add_argument("--kills", type=int, default=50, help="worker SIGKILLs")
    parser.add_argument("--restarts", type=int, default=5, help="Redis restarts")
    parser.add_argument("--poison", type=int, default=10, help="poison entries (half signed, half forged)")
    parser.add_argument("--seconds", type=float, default=240.0, help="how long the stream flows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs) and print its path")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="l2fast-soak-"))
    key = folder / "bus.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    os.environ["L2FAST_BUS_KEY_FILE"] = str(key)
    started = time.monotonic()
    feed = build_feed(args.data, args.minutes, args.end, folder)
    print(f"replay: {len(feed.expected):,} signals, {feed.n_fills} fills ({time.monotonic() - started:.0f} s)")
    server = RedisServer(folder / "redis")
    server.folder.mkdir()
    server.start()
    events = ["kill"] * args.kills + ["restart"] * args.restarts + ["poison"] * args.poison
    rng.shuffle(events)
    messages = len(feed.expected) + feed.n_fills + 1
    soak = Soak(feed, server, folder, [], rate=messages / args.seconds)
    try:
        for i, event in enumerate(events):
            time.sleep(rng.uniform(0.2, 2 * args.seconds / len(events) - 0.2))
            if event == "kill":
                soak.kill_worker()
            elif event == "restart":
                soak.restart_redis()
            else:
                soak.add_poison(signed=i % 2 == 0)
        deadline = time.monotonic() + 600
        while soak.l1.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        l1_status = soak.l1.poll()
        dead = soak.dead_letters()
    finally:
        soak.stop()
        server.stop()
    got = [json.loads(line) for line in soak.out.open()] if soak.out.exists() else []
    result = {**compare(feed.expected, got), "worker_kills": soak.kills, "redis_restarts": soak.restarts,
              "poison_entries": soak.poison, "dead_letters": dead, "redelivered_dropped_by_l1": soak.redelivered(),
              "workers_started": soak.workers, "l1_exit": l1_status,
              "seconds": round(time.monotonic() - started)}
    print(json.dumps(result, indent=1))
    if args.keep:
        print(f"logs: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    # Every poison entry skipped (and nothing else): the worker survived each of them.
    bad = (result["lost"] or result["duplicated"] or result["different"] or l1_status != 0
           or sum(dead.values()) != soak.poison)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

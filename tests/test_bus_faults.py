"""Redis faults against a real ``redis-server`` (skipped when it is not installed).

Entries with equal ids in two streams; entry ids (and the bus clock) far ahead of the
server's clock; a Redis that lost its state (FLUSHALL, a group or stream deleted, a
restart without persistence); the worker's persistence requirement; a lease that lapsed
while its worker was paused; a publisher held back by backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("redis")

from redis.asyncio import Redis
from support import BUS_KEY, REDIS_SERVER, RedisServer, write_csv

from l2fast.bus import Bar, MessageBus, QueuePolicy, Topic
from l2fast.bus.lease import LeaseLost, SymbolLease
from l2fast.bus.redis import RedisTransport
from l2fast.bus.tools import collect_signals
from l2fast.bus.worker import check_persistence
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import ConfigError
from l2fast.signals import StrategicDecision

pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server is not installed (Debian: apt-get install redis-server)")

REPO = Path(__file__).resolve().parents[1]
BTC = "BTC/USDT"
T0 = 1_704_067_200_000
MINUTE = 60_000
FAR_IDS = ("9999999999999-0", "18446744073709551615-18446744073709551615")


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def transport(url: str, prefix: str | None = None, **kwargs: Any) -> RedisTransport:
    return RedisTransport(url, prefix=f"t{uuid.uuid4().hex[:8]}:" if prefix is None else prefix, **kwargs)


def bar(k: int) -> Bar:
    price = 100.0 + k
    return Bar(BTC, T0 + k * MINUTE, price, price + 1.0, price - 1.0, price + 0.5, 1.0 + k)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server without persistence: a restart loses everything."""
    s = RedisServer(tmp_path, appendonly=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()


# ------------------------------------------------------------------ ids


def test_equal_ids_in_two_streams_are_both_delivered_in_order(redis_url):
    # Ids are per stream: two streams may hold the same one (written by another producer).
    async def main() -> list:
        t = transport(redis_url)
        sub = await t.subscribe(["market.bars", "l1.fills"], group="l2", consumer="w1")
        await t.client.xadd(t.key("l1.fills"), {"d": b"fill"}, id="5-0")
        await t.client.xadd(t.key("market.bars"), {"d": b"bar"}, id="5-0")
        await t.client.xadd(t.key("market.bars"), {"d": b"bar2"}, id="6-0")
        got = []
        while len(got) < 3:
            got += await asyncio.wait_for(sub.get_many(10), 5.0)
        await sub.ack_many(got)
        later = await t.publish("l1.fills", b"after")
        got += [await asyncio.wait_for(sub.get(), 5.0)]
        await sub.ack_many(got[3:])
        await sub.close()
        pending = [await t.client.xpending(t.key(k), "l2") for k in ("market.bars", "l1.fills")]
        await t.close()
        return [(d.topic, d.id, d.data) for d in got] + [later] + [p["pending"] for p in pending]

    got = run(main())
    # The equal ids come out in the subscription's stream order; nothing is left pending.
    assert got[:4] == [("market.bars", "5-0", b"bar"), ("l1.fills", "5-0", b"fill"), ("market.bars", "6-0", b"bar2"),
                       ("l1.fills", got[4], b"after")]
    assert got[5:] == [0, 0]


@pytest.mark.parametrize("far", FAR_IDS)
def test_an_entry_far_ahead_of_the_clock_is_moved_aside_and_not_followed(redis_url, far, caplog):
    async def main() -> dict:
        t = transport(redis_url)
        sub = await t.subscribe(["market.bars"], group="l2", consumer="w1")
        first = await t.publish("market.bars", b"first")
        await t.client.xadd(t.key("market.bars"), {"d": b"forged"}, id=far)
        # The group reads the forged entry: its last delivered id is far ahead too.
        read = [await sub.get(), await sub.get()]
        await sub.ack_many(read)
        before = now_ms()
        ids = [await t.publish("market.bars", b"second"), await t.publish("l3.decisions", b"other"),
               await t.publish("market.bars", b"third")]
        after = now_ms()
        got = [await asyncio.wait_for(sub.get(), 5.0), await asyncio.wait_for(sub.get(), 5.0)]
        dead = await t.dead_letters()
        out = {"first": first, "read": [d.data for d in read], "ids": ids, "before": before, "after": after,
               "got": [d.data for d in got], "far": t.far_ahead_ids, "dead": dead,
               "stream": [i.decode() for i, _ in await t.client.xrange(t.key("market.bars"))]}
        await t.close()
        return out

    with caplog.at_level(logging.ERROR, logger="l2fast.bus"):
        out = run(main())
    assert out["read"] == [b"first", b"forged"]
    for entry_id in out["ids"]:
        ms = int(entry_id.split("-")[0])
        assert out["before"] - 1000 <= ms <= out["after"] + 1000, entry_id
    assert out["got"] == [b"second", b"third"]
    assert out["far"] == 1
    assert out["stream"] == [out["first"], out["ids"][0], out["ids"][2]]
    assert [(d["kind"], d["id"], d["d"]) for d in out["dead"]] == [("far_ahead_id", far, "forged")]
    assert f"moved entry {far} to the dead letters" in caplog.text


@pytest.mark.parametrize("far", FAR_IDS)
def test_a_bus_clock_far_ahead_is_ignored_and_counted(redis_url, far, caplog):
    async def main() -> tuple[list, int, int, int]:
        t = transport(redis_url)
        await t.publish("market.bars", b"first")
        await t.client.set(t.prefix + "l2fast:clock", far)
        before = now_ms()
        ids = [await t.publish("l1.fills", b"fill"), await t.publish("market.bars", b"bar")]
        after = now_ms()
        await t.close()
        return ids, before, after, t.far_ahead_ids

    with caplog.at_level(logging.ERROR, logger="l2fast.bus"):
        ids, before, after, far_count = run(main())
    assert all(before - 1000 <= int(i.split("-")[0]) <= after + 1000 for i in ids)
    assert far_count == 1 and "ignored the bus clock" in caplog.text


def test_a_stream_whose_far_ahead_entry_was_deleted_is_set_back(redis_url):
    async def main() -> tuple[str, int]:
        t = transport(redis_url)
        await t.publish("market.bars", b"first")
        await t.client.xadd(t.key("market.bars"), {"d": b"x"}, id=FAR_IDS[0])
        await t.client.xdel(t.key("market.bars"), FAR_IDS[0])  # only the stream's last id stays ahead
        entry_id = await t.publish("market.bars", b"second")
        await t.close()
        return entry_id, t.far_ahead_ids

    entry_id, far_count = run(main())
    assert abs(int(entry_id.split("-")[0]) - now_ms()) < 5_000 and far_count == 1


# ------------------------------------------------------------------ lost state


def test_a_flushed_redis_is_reported_and_the_groups_created_again(redis_url, caplog):
    async def main() -> dict:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        pub, con = transport(redis_url, prefix), transport(redis_url, prefix)
        sub = await con.subscribe(["market.bars", "l1.fills"], group="l2", consumer="w1")
        first = [await pub.publish("market.bars", b"b1"), await pub.publish("l1.fills", b"f1")]
        got = [await sub.get(), await sub.get()]
        await pub.client.flushall()
        later = [await pub.publish("market.bars", b"b2"), await pub.publish("l1.fills", b"f2")]
        got += [await asyncio.wait_for(sub.get(), 10.0), await asyncio.wait_for(sub.get(), 10.0)]
        await sub.ack_many(got)
        out = {"first": first, "later": later, "got": [d.data for d in got], "pub": pub.state_losses,
               "con": con.state_losses}
        await pub.close()
        await con.close()
        return out

    with caplog.at_level(logging.ERROR, logger="l2fast.bus"):
        out = run(main())
    assert out["got"] == [b"b1", b"f1", b"b2", b"f2"]
    # The publisher saw both of its streams vanish (one report each); the consumer lost its group.
    assert out["pub"] == 2 and out["con"] == 1
    assert "lost its state (same run id" in caplog.text
    assert f"published up to {out['first'][0]} may be lost" in caplog.text


def test_a_deleted_group_is_created_again_after_what_was_read(redis_url, caplog):
    async def main() -> tuple[list, int]:
        t = transport(redis_url)
        sub = await t.subscribe(["market.bars"], group="l2", consumer="w1")
        for k in range(3):
            await t.publish("market.bars", b"old%d" % k)
        old = [await sub.get() for _ in range(3)]
        await sub.ack_many(old)
        await t.client.xgroup_destroy(t.key("market.bars"), "l2")
        await t.publish("market.bars", b"new")
        new = await asyncio.wait_for(sub.get(), 10.0)
        await sub.ack(new)
        await t.close()
        return [d.data for d in old + [new]], t.state_losses

    with caplog.at_level(logging.ERROR, logger="l2fast.bus"):
        got, losses = run(main())
    assert got == [b"old0", b"old1", b"old2", b"new"]  # nothing read before comes again
    assert losses == 1 and "(group gone)" in caplog.text


def test_a_deleted_stream_is_seen_by_its_publisher(redis_url, caplog):
    async def main() -> int:
        t = transport(redis_url)
        await t.publish("l1.fills", b"f1")
        await t.publish("market.bars", b"b1")
        await t.client.delete(t.key("l1.fills"))
        await t.publish("market.bars", b"b2")  # another stream: nothing lost there
        losses = t.state_losses
        await t.publish("l1.fills", b"f2")
        await t.close()
        return losses * 10 + t.state_losses

    with caplog.at_level(logging.ERROR, logger="l2fast.bus"):
        assert run(main()) == 1
    assert "the stream" in caplog.text and "l1.fills vanished" in caplog.text


def _signal() -> Any:
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate",
                                                universe=(BTC,)))
    return gen.on_bar(BTC, T0, 100.0, 101.0, 99.0, 100.5, 3.0)


def test_the_l1_reader_rides_out_a_redis_restart_without_persistence(volatile, caplog):
    signal_ = _signal()

    async def main() -> tuple[list, int]:
        bus = MessageBus(transport(volatile.url, prefix=""))
        publisher = MessageBus(transport(volatile.url, prefix=""))
        first = asyncio.Event()
        reading = asyncio.create_task(collect_signals(bus, count=2, on_signal=lambda _: first.set()))
        await publisher.publish(Topic.SIGNALS, signal_)
        await first.wait()
        await asyncio.to_thread(volatile.stop)
        await asyncio.to_thread(volatile.start)
        await publisher.publish(Topic.SIGNALS, signal_)  # signal_id repeats: a duplicate
        await publisher.publish(Topic.SIGNALS, _other_signal())
        signals, duplicates = await reading
        await publisher.close()
        losses = bus.transport.state_losses
        await bus.close()
        return [s["signal_id"] for s in signals], duplicates * 10 + losses

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"):
        ids, counts = run(main(), 60.0)
    assert len(ids) == 2 and counts == 11
    assert "lost its state (run id" in caplog.text and "Redis restarted since" in caplog.text


def _other_signal() -> Any:
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate",
                                                universe=(BTC,)))
    return gen.on_bar(BTC, T0 + MINUTE, 100.0, 101.0, 99.0, 100.5, 3.0)


# ------------------------------------------------------------------ persistence


def test_the_worker_refuses_a_redis_without_persistence_unless_allowed(volatile, redis_url, caplog):
    async def main(url: str, allow: bool) -> None:
        t = transport(url)
        try:
            await check_persistence(t, allow=allow)
        finally:
            await t.close()

    with pytest.raises(ConfigError, match=r"no append-only file \(aof_enabled:0\).*--allow-no-persistence"):
        run(main(volatile.url, False))
    with caplog.at_level(logging.WARNING, logger="l2fast.bus.worker"):
        run(main(volatile.url, True))
        run(main(redis_url, False))  # append-only: nothing said
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_an_acl_user_without_info_is_refused_by_the_worker_and_still_publishes(redis_url):
    user = f"noinfo{uuid.uuid4().hex[:6]}"

    async def main() -> tuple[str, int]:
        admin = Redis.from_url(redis_url)
        await admin.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                                commands=["+@all", "-info"])
        url = redis_url.replace("redis://", f"redis://{user}:pw@")
        t = transport(url)
        try:
            with pytest.raises(ConfigError, match="INFO persistence.*grant \\+info"):
                await check_persistence(t)
            entry_id = await t.publish("market.bars", b"x")  # the run id is unknown: nothing else changes
            await t.publish("market.bars", b"y")
        finally:
            await t.close()
            await admin.acl_deluser(user)
            await admin.aclose()
        return entry_id, t.state_losses

    entry_id, losses = run(main())
    assert "-" in entry_id and losses == 0


def _l2fast(*args: str, log: Path) -> subprocess.Popen:
    # The bus key from the environment, as a deployment may give it.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "L2FAST_BUS_KEY": BUS_KEY}
    return subprocess.Popen([sys.executable, "-m", "l2fast", *args], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait_for(text: str, log: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_the_worker_command_exits_2_without_persistence_and_runs_with_the_flag(volatile, tmp_path):
    log = tmp_path / "worker.log"
    worker = _l2fast("worker", "--redis", volatile.url, log=log)
    assert worker.wait(60) == 2, log.read_text()
    assert "no append-only file" in log.read_text() and "--allow-no-persistence" in log.read_text()
    allowed = tmp_path / "allowed.log"
    worker = _l2fast("worker", "--redis", volatile.url, "--allow-no-persistence", log=allowed)
    try:
        _wait_for("reading", allowed, worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, allowed.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert allowed.read_text().count("running anyway (--allow-no-persistence)") == 1


# ------------------------------------------------------------------ lease


def test_a_lapsed_lease_nobody_took_is_taken_again_and_a_taken_one_is_lost(redis_url, caplog):
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    async def main() -> tuple[bool, int, str]:
        client = Redis.from_url(redis_url)
        owner = SymbolLease(client, [BTC], "owner", prefix=prefix, ttl_ms=200)
        await owner.acquire()
        keeper = asyncio.create_task(owner.keep())
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # the whole process paused (SIGSTOP): no renewal, the lease lapses
        await asyncio.sleep(0.3)
        alive = not keeper.done()
        owned = (await client.get(prefix + "l2fast:owner:" + BTC)).decode()
        # Now it lapses again and a standby takes it, then lets it go: lost all the same.
        keeper.cancel()
        await asyncio.sleep(0.3)
        standby = SymbolLease(client, [BTC], "standby", prefix=prefix, ttl_ms=200)
        await standby.acquire()
        await standby.release()
        with pytest.raises(LeaseLost, match="another worker took it"):
            await owner.renew()
        await client.aclose()
        return alive, owner.retaken, owned

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"):
        alive, retaken, owned = run(main())
    assert alive and retaken == 1 and owned == "owner"
    assert "had lapsed" in caplog.text and "taken again" in caplog.text


def test_a_lease_lost_with_redis_state_is_taken_again(redis_url):
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    async def main() -> int:
        client = Redis.from_url(redis_url)
        owner = SymbolLease(client, [BTC], "owner", prefix=prefix, ttl_ms=5000)
        await owner.acquire()
        await client.delete(prefix + "l2fast:owner:" + BTC, prefix + "l2fast:owner:" + BTC + ":taken")
        await owner.renew()
        await client.aclose()
        return owner.retaken

    assert run(main()) == 1


def test_a_worker_paused_past_its_lease_goes_on_when_nobody_took_it(redis_url, tmp_path):
    log = tmp_path / "worker.log"
    worker = _l2fast("worker", "--redis", redis_url, "--prefix", f"t{uuid.uuid4().hex[:8]}:",
                     "--lease-ttl-ms", "2000", "--consumer", "paused", log=log)
    try:
        _wait_for("reading", log, worker)
        time.sleep(0.5)
        before = log.read_text().count("taken again")
        worker.send_signal(signal.SIGSTOP)
        time.sleep(3.5)
        worker.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20.0
        while log.read_text().count("taken again") == before:
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(1.5)  # renewed since: still running
        assert worker.poll() is None, log.read_text()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert "lost the lease" not in log.read_text()


# ------------------------------------------------------------------ backpressure


def test_a_publisher_held_back_by_backpressure_says_so_periodically(redis_url, caplog):
    async def main() -> tuple[bool, int]:
        t = transport(redis_url, policies={Topic.BARS: QueuePolicy(8)}, blocked_log_interval_s=0.2)
        bus = MessageBus(t)
        sub = await bus.subscribe([Topic.BARS], group="l2", consumer="w1")
        async def publish() -> None:
            for k in range(40):
                await bus.publish(Topic.BARS, bar(k))

        publisher = asyncio.create_task(publish())
        for _ in range(40):
            await asyncio.sleep(0.05)
            if publisher.done():
                break
        blocked = not publisher.done()
        for _ in range(40):
            await sub.ack(await sub.get())
        await publisher
        await bus.close()
        return blocked, 0

    with caplog.at_level(logging.WARNING, logger="l2fast.bus"):
        blocked, _ = run(main())
    assert blocked
    said = [r.getMessage() for r in caplog.records if "blocked by backpressure" in r.getMessage()]
    assert len(said) >= 3, said
    assert "group l2 has" in said[0] and "entries unread" in said[0] and "(bound 8)" in said[0]
    assert any("unblocked" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ the three processes


def test_a_redis_restart_without_persistence_mid_stream_is_reported_by_every_process(volatile, tmp_path):
    # The run: the worker went on with the lease lost, the L1 reader died with a
    # NOGROUP traceback, the publisher exited 0.
    n = 3000
    rows = {"ts": np.array([T0 + k * MINUTE for k in range(n)], dtype=np.int64)}
    close = 100.0 + np.cumsum(np.sin(np.arange(n) / 7.0))
    rows.update(open=close, high=close + 1.0, low=close - 1.0, close=close, volume=np.full(n, 5.0))
    data = write_csv(tmp_path / "btcusdt_1m.csv.gz", rows)
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "l1", "publisher")}
    worker = _l2fast("worker", "--redis", volatile.url, "--allow-no-persistence", "--signals", "all",
                     "--snapshot", str(tmp_path / "w.l2snap"), log=logs["worker"])
    l1 = _l2fast("signals", "--redis", volatile.url, "--out", str(tmp_path / "signals.jsonl"), log=logs["l1"])
    publisher = None
    try:
        _wait_for("reading", logs["worker"], worker)
        publisher = _l2fast("publish", "--redis", volatile.url, "--data", str(data), "--rate", "600",
                            log=logs["publisher"])
        time.sleep(2.0)
        volatile.stop()
        volatile.start()
        assert publisher.wait(60) == 5, logs["publisher"].read_text()
        _wait_for("lost its state", logs["l1"], l1)
        time.sleep(1.0)
        assert worker.poll() is None and l1.poll() is None, "\n".join(p.read_text() for p in logs.values())
        for p in (worker, l1):
            p.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, logs["worker"].read_text()
        l1.wait(30)
    finally:
        for p in (worker, l1, publisher):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = {name: log.read_text() for name, log in logs.items()}
    assert all("Traceback" not in t for t in text.values()), text
    assert "lost its state (run id" in text["publisher"] and "lost its state" in text["publisher"].split("error:")[-1]
    assert "lost its state (run id" in text["worker"] and "recreated group l2" in text["worker"]
    assert re.search(r"redis state lost [1-9]\d* times", text["worker"]), text["worker"][-2000:]
    assert "recreated group l1 on l2.signals" in text["l1"]

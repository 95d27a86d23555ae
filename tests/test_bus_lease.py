"""Symbol ownership and per-symbol streams on a real Redis: one owner per symbol at a
time, all of a worker's symbols or none, expiry frees a dead owner's symbols, and a
partitioned subscription reads only its symbols, in publication order."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

pytest.importorskip("redis")

from redis.asyncio import Redis
from support import REDIS_SERVER

from l2fast.bus import Bar, Fill, MessageBus, Topic
from l2fast.bus.lease import LeaseLost, SymbolLease
from l2fast.bus.redis import RedisTransport
from l2fast.errors import BusUnavailableError
from l2fast.signals import StrategicDecision

pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server is not installed (Debian: apt-get install redis-server)")

BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"
T0 = 1_704_067_200_000
DECISION = StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate", universe=(BTC, ETH))


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_a_symbol_has_one_owner_and_a_lease_is_all_or_nothing(redis_url) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    async def main() -> dict:
        client = Redis.from_url(redis_url)
        a = SymbolLease(client, [BTC], "a", prefix=prefix)
        b = SymbolLease(client, [SOL, BTC], "b", prefix=prefix)
        c = SymbolLease(client, [SOL], "c", prefix=prefix)
        out = {"a": await a.try_acquire(), "b": await b.try_acquire(), "c": await c.try_acquire()}
        await c.release()
        await a.renew()
        await a.release()
        out["b_after"] = await b.try_acquire()
        with pytest.raises(LeaseLost, match="BTC/USDT"):
            await a.renew()
        await client.aclose()
        return out

    out = run(main())
    # b wanted BTC (owned by a) and took nothing, so SOL stayed free for c.
    assert out == {"a": None, "b": BTC, "c": None, "b_after": None}


def test_an_expired_lease_frees_the_symbols_for_a_standby(redis_url) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    async def main() -> tuple[str | None, float]:
        client = Redis.from_url(redis_url)
        owner = SymbolLease(client, [BTC, ETH], "owner", prefix=prefix, ttl_ms=300)
        standby = SymbolLease(client, [BTC, ETH], "standby", prefix=prefix, ttl_ms=300)
        await owner.try_acquire()
        refused = await standby.try_acquire()
        start = time.monotonic()
        await standby.acquire(poll_s=0.02)  # the owner never renews: it is dead
        waited = time.monotonic() - start
        with pytest.raises(LeaseLost):
            await owner.renew()
        await client.aclose()
        return refused, waited

    refused, waited = run(main())
    assert refused == BTC
    assert 0.1 < waited < 2.0


def test_lease_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="symbols"):
        SymbolLease(None, [BTC, BTC], "a")
    with pytest.raises(ValueError, match="ttl_ms"):
        SymbolLease(None, [BTC], "a", ttl_ms=10)


def _bar(k: int, symbol: str) -> Bar:
    price = 100.0 + k
    return Bar(symbol, T0 + 60_000 * k, price, price + 1.0, price - 1.0, price + 0.5, 1.0)


def test_a_partitioned_subscription_reads_only_its_symbols_in_publication_order(redis_url) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    inputs = (Topic.DECISIONS, Topic.FILLS, Topic.BARS)
    singles = [(Topic.DECISIONS, DECISION)]
    for k in range(15):
        singles += [(Topic.BARS, _bar(k, BTC)), (Topic.BARS, _bar(k, ETH))]
        if k % 5 == 0:
            singles.append((Topic.FILLS, Fill(ETH if k % 10 else BTC, "buy", 1.0, 100.0, T0 + 60_000 * k)))
    batch = [_bar(k, symbol) for k in range(15, 40) for symbol in (BTC, ETH)]  # publish_many
    order = [m for _, m in singles] + batch
    expected = {s: [m for m in order if getattr(m, "symbol", s) == s] for s in (BTC, ETH)}

    async def main() -> tuple[dict, list]:
        t = RedisTransport(redis_url, prefix=prefix, partitioned=(Topic.BARS, Topic.FILLS), count=7)
        bus = MessageBus(t)
        subs = {s: await bus.subscribe(inputs, group=f"l2:{s}", consumer="w", partitions=[s]) for s in (BTC, ETH)}
        for topic, message in singles:
            await bus.publish(topic, message)
        await bus.publish_many(Topic.BARS, batch)
        got = {s: [(await sub.get()).message for _ in expected[s]] for s, sub in subs.items()}
        keys = sorted(k.decode() for k in await t.client.keys(prefix + "*bars*"))
        await bus.close()
        return got, keys

    got, keys = run(main())
    assert got == expected  # each its symbol's bars and fills, and every decision, in order
    assert keys == [f"{prefix}market.bars|{BTC}", f"{prefix}market.bars|{ETH}"]


def test_a_partitioned_topic_needs_partitions(redis_url) -> None:
    async def main() -> None:
        bus = MessageBus(RedisTransport(redis_url, partitioned=(Topic.BARS,)))
        try:
            with pytest.raises(ValueError, match="partitioned"):
                await bus.subscribe([Topic.BARS], group="g", consumer="c")
        finally:
            await bus.close()

    run(main())


def test_a_kept_lease_rides_out_a_redis_restart_and_gives_up_on_redis_when_it_stays_away(server) -> None:
    async def main() -> tuple[bool, str | None, BusUnavailableError | None]:
        client = Redis.from_url(server.url)
        lease = SymbolLease(client, [BTC], "a", ttl_ms=3000)
        await lease.acquire()
        keeper = asyncio.create_task(lease.keep())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.5)  # a renewal (every second) falls while Redis is away
        await asyncio.to_thread(server.start)
        await asyncio.sleep(2.5)
        survived = not keeper.done()
        held_by = await SymbolLease(client, [BTC], "b", ttl_ms=3000).try_acquire()
        # Away for longer than the lease: lost (another worker may own the symbol by now).
        await asyncio.to_thread(server.stop)
        try:
            await asyncio.wait_for(keeper, 10)
        except BusUnavailableError as exc:
            gave_up = exc
        else:
            gave_up = None
        finally:
            await asyncio.to_thread(server.start)
            await client.aclose()
        return survived, held_by, gave_up

    survived, held_by, gave_up = run(main())
    assert survived and held_by == BTC
    # Said as it is: Redis is unreachable, and the lease expired meanwhile.
    assert gave_up is not None and gave_up.url == server.url
    assert "the lease of BTC/USDT has expired" in str(gave_up)

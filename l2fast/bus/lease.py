"""Symbol ownership for L2 workers sharing a Redis bus: a symbol has one owner at a time.

When several workers share the symbols, bars and fills travel in one stream per symbol
(``RedisTransport(partitioned=(Topic.BARS, Topic.FILLS))``) and each worker reads only
the symbols it owns. :class:`SymbolLease` makes the ownership exclusive: a worker takes
the lease of all its symbols at once (keys ``prefix + "l2fast:owner:" + symbol`` holding
the owner's name, with a time to live), renews it while it runs, and gives it back when
it stops. A second worker for a symbol that is owned waits (a standby) until the lease
is released or expires, which happens ``ttl_ms`` after its owner died.

A worker that failed to renew in time (paused longer than the lease: SIGSTOP, a swapped
out machine) takes the lease again at its next renewal when nobody took it meanwhile,
and says so in the log; when another worker took it (even one that has let it go since)
the symbols are no longer its own and it must stop at once without acknowledging
anything more (:class:`LeaseLost`). Each acquisition writes a token of its own under
``prefix + "l2fast:owner:" + symbol + ":taken"`` (no time to live), which tells the two
cases apart; a Redis that lost its keys (restarted without persistence) lost the token
too, and the lease is taken again.

While Redis is unreachable, taking and renewing are retried as the bus's commands are
(:class:`~l2fast.bus.redis.RedisRetry`, shared with the transport): the log says Redis
is unreachable, never that another worker holds the lease, which is said only when Redis
answered so; a refusal (a wrong password, an ACL without the lease keys, a failed TLS
check) ends the wait at once (:class:`~l2fast.errors.BusAuthError`). A renewal gives up
once the lease has expired, a renewal still without a reply then included
(:class:`~l2fast.errors.BusUnavailableError`, naming the lease).

Taking and renewing run as Lua scripts: all of a worker's symbols or none.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from l2fast.errors import L2FastError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from l2fast.bus.redis import RedisRetry

__all__ = ["EVERY_SYMBOL", "LEASE_TTL_MS", "LeaseLost", "SymbolLease"]

logger = logging.getLogger("l2fast.bus")

#: The lease name of a worker that reads every symbol (a bus not partitioned by symbol).
EVERY_SYMBOL = "*"

#: Default time to live of a lease, milliseconds: the worker's and the CLI's
#: ``--lease-ttl-ms``. (This module imports redis-py only where it uses it, so that the CLI
#: can show this default without it.)
LEASE_TTL_MS = 10_000

# KEYS: the symbols' owner keys, then their token keys. ARGV: owner, ttl (ms), this
# acquisition's token. Returns the first owner key held by someone else (nothing taken),
# or an empty string (all taken or renewed).
_TAKE = """
local n = #KEYS / 2
for k = 1, n do
  local owner = redis.call('GET', KEYS[k])
  if owner and owner ~= ARGV[1] then return KEYS[k] end
end
for k = 1, n do
  redis.call('SET', KEYS[k], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[n + k], ARGV[3])
end
return ''
"""
# Renew what is still ours, and take again what lapsed when no other acquisition came
# since (the token is still ours, or gone with the rest of Redis's keys). Returns
# {the first key that is not ours ('' none: then everything renewed), lapsed keys taken again}.
_RENEW = """
local n = #KEYS / 2
local lapsed = 0
for k = 1, n do
  local owner = redis.call('GET', KEYS[k])
  local token = redis.call('GET', KEYS[n + k])
  if (owner and owner ~= ARGV[1]) or (token and token ~= ARGV[3]) then return {KEYS[k], 0} end
  if not owner then lapsed = lapsed + 1 end
end
for k = 1, n do
  redis.call('SET', KEYS[k], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[n + k], ARGV[3])
end
return {'', lapsed}
"""
_RELEASE = """
for k = 1, #KEYS do
  if redis.call('GET', KEYS[k]) == ARGV[1] then redis.call('DEL', KEYS[k]) end
end
return ''
"""


class LeaseLost(L2FastError):
    """The worker no longer owns one of its symbols (another worker took its lease)."""


class SymbolLease:
    """Exclusive ownership of ``symbols`` by ``owner`` (module docstring).

    Args:
        client: redis-py asyncio client of the bus's Redis.
        symbols: The symbols to own.
        owner: This worker's name (unique among the workers).
        prefix: The bus's key prefix.
        ttl_ms: Lease time to live; a dead owner's symbols free up after it.
        retry: The retries while Redis is unreachable (the transport's ``retry``, so that
            both give up together); default: retry for ever.

    Raises:
        ValueError: No symbol, a repeated one, an empty owner, or ``ttl_ms`` < 100.
    """

    def __init__(self, client: Redis, symbols: Sequence[str], owner: str, *, prefix: str = "",
                 ttl_ms: int = LEASE_TTL_MS, retry: RedisRetry | None = None) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols={list(symbols)!r}: must be a non-empty list of distinct symbols")
        if not owner:
            raise ValueError("owner: a lease needs the worker's name")
        if type(ttl_ms) is not int or ttl_ms < 100:
            raise ValueError(f"ttl_ms={ttl_ms!r}: must be an integer >= 100")
        self.symbols = tuple(symbols)
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._keys = [f"{prefix}l2fast:owner:{s}" for s in self.symbols]
        self._all_keys = self._keys + [f"{key}:taken" for key in self._keys]
        self._token = f"{owner} {uuid.uuid4().hex}"
        #: Times the lease lapsed (no renewal in time) and was taken again.
        self.retaken = 0
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        if retry is None:
            from l2fast.bus.redis import RedisRetry

            retry = RedisRetry(_url_of(client))
        self._retry = retry

    async def try_acquire(self) -> str | None:
        """Take every symbol's lease if none is owned by another worker.

        Returns:
            None when taken, else the symbol whose lease another worker holds.
        """
        held = await self._take(keys=self._all_keys, args=[self.owner, self.ttl_ms, self._token])
        return self._symbol_of(held)

    async def acquire(self, poll_s: float = 0.2) -> None:
        """Wait until every symbol's lease is ours (a standby waits here, as long as it
        takes; while Redis is away, as long as the retries allow).

        Raises:
            BusUnavailableError: Redis stayed unreachable past the retries' time limit.
            BusAuthError: Redis refused the worker (password, ACL) or TLS failed.
        """
        waiting = None
        while True:
            held = await self._retry.call(self.try_acquire)
            if held is None:
                return
            if held != waiting:
                logger.info("%s: %s is owned by another worker: waiting for its lease", self.owner, held)
                waiting = held
            await asyncio.sleep(poll_s)

    async def keep(self) -> None:
        """Renew the lease every third of its time to live, for as long as it runs.

        A renewal that cannot reach Redis, or gets no reply, is retried with backoff until
        the lease expires or the retries' time limit, whichever comes first (a Redis
        restart does not cost the lease); one still waiting for its reply when the lease
        expires is abandoned. A renewal that comes after the lease expired (the process
        was paused) takes it again if nobody else took it (:meth:`renew`), and has a third
        of the lease's time to live to reach Redis.

        Raises:
            LeaseLost: A symbol's lease is no longer ours (Redis answered so).
            BusUnavailableError: Redis stayed unreachable until the lease expired, or
                past the retries' time limit.
        """
        expired = f"the lease of {', '.join(self.symbols)} has expired (another worker may own it now)"
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            deadline = renewed + self.ttl_ms / 1000
            if time.monotonic() >= deadline:
                # Past the lease already (paused): the renewal is still safe to try, as it
                # takes the lease only if no one else did; a third of the lease to answer.
                deadline = time.monotonic() + self.ttl_ms / 3000
            await self._retry.call(self.renew, deadline=deadline, reason=expired)
            renewed = time.monotonic()

    async def renew(self) -> None:
        """Extend the lease of every symbol; take again those whose lease lapsed when no
        other worker took them since (logged as a warning, counted in :attr:`retaken`).

        Raises:
            LeaseLost: A symbol's lease is no longer ours: another worker took it.
        """
        key, lapsed = await self._renew(keys=self._all_keys, args=[self.owner, self.ttl_ms, self._token])
        lost = self._symbol_of(key)
        if lost is not None:
            raise LeaseLost(f"{self.owner}: lost the lease of {lost} (another worker took it)")
        if lapsed:
            self.retaken += 1
            logger.warning("%s: the lease of %s had lapsed (no renewal within %d ms: the process paused, or Redis "
                           "lost its keys) and nobody took it since: taken again", self.owner,
                           ", ".join(self.symbols), self.ttl_ms)

    async def release(self) -> None:
        """Give back the symbols still ours."""
        await self._release(keys=self._keys, args=[self.owner])

    def _symbol_of(self, key: bytes | str) -> str | None:
        key = key.decode() if isinstance(key, bytes) else key
        if not key:
            return None
        return self.symbols[self._keys.index(key)]


def _url_of(client: Redis) -> str:
    """The URL ``client`` connects to, for the log."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"

"""The Redis Streams transport (redis-py's asyncio client; ``pip install l2fast[redis]``).

One stream per topic (key ``prefix + topic``), one entry per message with the field ``d``
(the encoded envelope).

Publication (:meth:`RedisTransport.publish`, and :meth:`~RedisTransport.publish_many`
for a batch of up to :data:`PUBLISH_BATCH` entries) runs one Lua script that, atomically:

- gives the entries consecutive ids ``"<ms>-<seq>"`` from the Redis server's clock,
  greater than every id given before on ANY topic of the bus (the last one is kept under
  ``prefix + "l2fast:clock"``) and than the stream's last id: ids are ordered across
  streams, so a reader of several topics can restore the publication order, and the id's
  ``<ms>`` is the publication time (:attr:`~l2fast.bus.transport.Delivery.published_ms`);
- drops a retry of a publication already added (the publisher's last counter and the ids
  it got are kept under ``prefix + "l2fast:publisher:<token>"`` for a day): a publication
  whose reply was lost with the connection is not added twice; nor is one older than the
  last (a copy sent on a connection given up for dead that reached Redis late);
- trims the stream to ``maxsize`` entries for a :attr:`~l2fast.bus.transport.Overflow.DROP_OLDEST`
  topic (exact ``MAXLEN``);
- does not follow an id far ahead of the server's clock (more than ``far_ahead_ms``,
  default :data:`FAR_AHEAD_MS`): an entry someone wrote with an explicit id like
  ``9999999999999-0`` (year 2286) or the largest id would otherwise drag every later id
  with it, or make every later publication fail. Such entries are moved to the dead
  letters (kind ``far_ahead_id``), the stream's last id and the groups that had read them
  are set back to the newest entry left, and a bus clock that far ahead is ignored; each
  is logged as an error and counted (:attr:`RedisTransport.far_ahead_ids`);
- notices that Redis lost what this publisher had written: the bus clock gone, or the
  stream gone or recreated below the last id it got there (:meth:`RedisTransport.state_lost`).

Publications of one transport are serialised (one in flight), which the retry check needs.

Backpressure for a :attr:`~l2fast.bus.transport.Overflow.BLOCK` topic: every
``max(1, maxsize // 8)`` publications the publisher reads the ``lag`` of the topic's groups
(``XINFO GROUPS``: entries not yet delivered to the group, counted after its last
delivered id when Redis cannot say, after an ``XDEL``) and waits while one of them is at
``maxsize`` or more; the bound can so be passed by that check interval. A topic no
group reads yet is not bounded (Redis keeps it for the first group, which starts at the
stream's first entry). A publisher held back logs so every ``blocked_log_interval_s``
(default :data:`BLOCKED_LOG_INTERVAL_S`): the stream, the groups behind and their unread
entries, and for how long (a consumer that stopped would otherwise hold it silently).

Trimming: at the same check, the streams of :data:`TRIMMED_TOPICS` (bars and signals, the
high-volume topics) lose the entries that every group has acknowledged (``XTRIM MINID``
below each group's oldest pending entry, in one script), so a stream holds what is in
flight rather than its whole history. An acknowledged entry is never needed again: the
adapter acknowledges only what a snapshot covers. Decisions and fills are kept whole.

Reading (:class:`RedisSubscription`): ``XREADGROUP`` over the subscription's streams in
batches of ``count``, merged by entry id: a batch is delivered only up to the smallest
last id of the streams that filled their batch, the rest waits for the next read, so
messages come out in publication order across topics (what one publisher wrote, in any
mix of topics, is read in its order; entries are told apart by stream and id, as two
streams may hold the same id, which then come out in the subscription's stream order).
Acknowledgements are buffered and sent (``XACK``)
before the next read and on close; an entry stays pending until then, so it is never lost
(at-least-once). The subscription also:

- reads its own pending entries first (``XREADGROUP ... 0``) when it starts and after a
  reconnection: those delivered before a crash of the same consumer, or whose reply was
  lost, are delivered again, except the ones it handed out and has not acknowledged yet;
- every ``claim_interval_s`` takes over entries that another consumer of the group left
  pending longer than ``claim_idle_ms`` (``XAUTOCLAIM``: a dead worker's messages);
  they come out before newer entries, after what was already delivered.

Consumers of one group share the messages (Redis competing consumers): the order across a
group holds only with one active consumer. ``python -m l2fast worker`` keeps it so with a
lease (:mod:`l2fast.bus.lease`): a second worker for the same symbols waits, then claims
what the first left pending.

Connection loss (:class:`RedisRetry`): every command is retried with exponential backoff
(``backoff_min_s`` doubling up to ``backoff_max_s``), each retry logged with the URL, the
error and a counter, until it succeeds, the transport closes, or Redis has been
unreachable for ``give_up_after_s`` (then :class:`~l2fast.errors.BusUnavailableError`;
None, the default, retries for ever). Redis restarting with its append-only file keeps
streams, groups and pending entries; after a reconnection a changed server ``run_id``
(``INFO server``) is logged as a restart.

Lost state (a Redis restarted without persistence, ``FLUSHALL``, a stream or group
deleted): a subscription whose read meets ``NOGROUP`` creates its group again, at the
start of a stream that vanished (all it holds is new) or after the newest entry it
fetched from a stream that only lost the group (nothing read is delivered twice), and
goes on; a publisher finds it as above. Either logs an error, ``redis at URL lost its
state (run id X -> Y: Redis restarted since): <what was recreated or vanished>; entries
... after <the last id read or published> ... may be lost``, and counts it
(:attr:`RedisTransport.state_losses`). What Redis lost is lost: messages published and
not read yet, and the pending list (entries fetched and not acknowledged are not
delivered again after a crash); hence the worker's persistence requirement
(:mod:`l2fast.bus.worker`).

Refusals are not retried (:func:`refusal`): a wrong user or password (``WRONGPASS``,
``NOAUTH``), a command or key the ACL user may not use (``NOPERM``) and a TLS connection
that cannot be set up (certificate verification, a ``rediss://`` URL to a port that
answers plain Redis) raise :class:`~l2fast.errors.BusAuthError` at once. URLs are logged
and put in errors with their password masked (:func:`redacted_url`).

A command without a reply (a network partition that resets nothing leaves the socket
open) fails after the client's ``socket_timeout_s`` (by default ``block_ms / 1000`` +
:data:`REPLY_TIMEOUT_S`), longer than a blocking read waits on a live Redis, and is
retried like a refused connection: the outage counts from when that command was sent, so
giving up comes at most ``socket_timeout_s`` after ``give_up_after_s``. A command given a
deadline (a lease renewal) is also abandoned at the deadline. Every command is safe to
send again: reads, acknowledgements, group creation and trimming repeat harmlessly, a
read whose reply was lost leaves its entries pending (read again after the retry), and
publications carry their counter (above).

Dead letters (:meth:`RedisTransport.dead_letter`): the stream ``prefix + "l2fast:dead"``
(:data:`~l2fast.bus.transport.DEAD_LETTERS`), one entry per skipped message, trimmed to
the latest ``dead_letter_maxlen`` entries; the entry's ``d`` field is the message's ``d``
as it was read, byte for byte.

Single Redis node only (the publication script touches keys of several streams).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.typing import KeyT, StreamIdT

from l2fast.bus.transport import (
    DEAD_LETTER_MAXLEN,
    DEAD_LETTERS,
    BusClosed,
    Delivery,
    Overflow,
    QueuePolicy,
    Subscription,
    Transport,
    dead_letter_text,
)
from l2fast.errors import BusAuthError, BusUnavailableError

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "CONNECT_TIMEOUT_S",
    "REDIS_URL",
    "REPLY_TIMEOUT_S",
    "RedisRetry",
    "RedisSubscription",
    "RedisTransport",
    "redacted_url",
    "refusal",
]

logger = logging.getLogger("l2fast.bus")

T = TypeVar("T")

#: Errors after which the same command may succeed once Redis is back (BusyLoadingError,
#: Redis replaying its append-only file after a restart, is a ConnectionError).
TRANSIENT_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

#: What a command's retry loop catches: the transient errors and the refusals among
#: Redis's replies (the others, such as a wrong type, are the caller's to handle).
#: AuthenticationError is a ConnectionError, a refusal all the same (:func:`refusal`).
_CAUGHT = (*TRANSIENT_ERRORS, redis_errors.NoPermissionError, redis_errors.AuthenticationWrongNumberOfArgsError)

# TLS errors that say the connection was cut, not that TLS itself failed: a server
# restarting mid-handshake (retried like any connection loss).
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError,
            ssl.SSLWantWriteError)

#: How long a reply may take, beyond a blocking command's own wait, before the connection
#: is taken for dead (a live Redis answers in milliseconds).
REPLY_TIMEOUT_S = 5.0

#: How long opening a connection to Redis may take (the transport's and the dashboard's).
CONNECT_TIMEOUT_S = 2.0

#: Default Redis of the transport and the worker.
REDIS_URL = "redis://127.0.0.1:6379/0"

#: Default first and longest wait between two retries while Redis is unreachable (the
#: wait doubles from one to the other): :class:`RedisRetry`'s and the transport's.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


def redacted_url(url: str) -> str:
    """``url`` with its password masked, fit for logs and error messages: the password of
    its user part and the value of any query option named like a password
    (``?password=``, ``?ssl_password=``, which redis-py accepts too)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. an unbalanced IPv6 bracket: nothing of it is shown
        return "<unparsable redis URL>"
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    # The names as redis-py reads them, percent-decoded: ?pass%77ord= is a password too.
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any("password" in k.lower() for k, _ in pairs):
        query = [(k, "***" if "password" in k.lower() else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(query, safe="*/"))
    # Not urlunsplit: it writes unix:///path as unix:/path.
    text = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return text + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def refusal(error: BaseException, url: str) -> BusAuthError | None:
    """``error`` as a :class:`~l2fast.errors.BusAuthError` when it is a refusal that no
    retry can change (module docstring), else None.

    Args:
        error: What a command raised (redis-py's error, its cause an ``ssl`` error for TLS).
        url: The Redis URL, password masked, for the message.
    """
    if isinstance(error, (redis_errors.AuthenticationError, redis_errors.AuthenticationWrongNumberOfArgsError)):
        return BusAuthError(url, "authentication", f"authentication failed: {_reply_text(error)} (check the user "
                                                   "and password of the URL)")
    if isinstance(error, redis_errors.NoPermissionError):
        return BusAuthError(url, "permission", f"permission denied: {_reply_text(error)} (the URL's ACL user "
                                               "may not run this command on this key)")
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:  # redis-py wraps the ssl error
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return BusAuthError(url, "tls", f"TLS certificate verification failed: {cause.verify_message} (is "
                                            "ssl_ca_certs the CA that signed the server's certificate, and the "
                                            "host the one it names?)")
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _TLS_CUT):
            return BusAuthError(url, "tls", f"TLS handshake failed: {cause.reason or cause}")
        cause = cause.__cause__ or cause.__context__
    return None


def _reply_text(error: BaseException) -> str:
    return (str(error) or type(error).__name__).rstrip(".")


async def _answers_plain_redis(host: str, port: int) -> bool:
    """Whether ``host:port`` answers a plain-text ``PING`` as Redis does (``+PONG``, or an
    error such as ``-NOAUTH``): a TLS client there waits for a handshake that never comes."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                reply = await reader.read(64)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return reply[:1] in (b"+", b"-")


class RedisRetry:
    """Retries of the commands to one Redis while it is unreachable: the backoff, a
    counter in the log, and when to give up; a refusal (:func:`refusal`) is raised at once.

    An outage starts at the first failed command and ends at the first one that succeeds;
    every caller sharing this object shares it (a worker's reads, publications and lease
    renewals), so the time limit counts from when Redis was first found unreachable. Each
    failure is logged as ``redis at URL unreachable: <error>; retry N in X s (giving up
    after T s)``. Once one caller gives up, the others give up at their next failure too,
    until Redis answers again.

    The outage counts from when the failed command was sent: one that timed out without a
    reply waited that long already.

    Args:
        url: The Redis URL (named in the log and in errors with its password masked; the
            object keeps only that).
        give_up_after_s: Longest outage before :class:`~l2fast.errors.BusUnavailableError`
            (seconds); None or 0 to retry for ever (``--redis-timeout 0``).
        backoff_min_s: First wait before retrying.
        backoff_max_s: Longest wait between retries.

    Raises:
        ValueError: A time out of range.
    """

    def __init__(self, url: str, *, give_up_after_s: float | None = None, backoff_min_s: float = BACKOFF_MIN_S,
                 backoff_max_s: float = BACKOFF_MAX_S) -> None:
        if not (0 < backoff_min_s <= backoff_max_s):
            raise ValueError(f"backoff_min_s={backoff_min_s!r}, backoff_max_s={backoff_max_s!r}: "
                             "need 0 < backoff_min_s <= backoff_max_s")
        if give_up_after_s is not None and not 0 <= give_up_after_s < float("inf"):  # NaN too
            raise ValueError(f"give_up_after_s={give_up_after_s!r}: must be seconds >= 0 (0 or None: no limit)")
        self.url = redacted_url(url)
        # Where a rediss:// URL points: a TLS handshake there that gets no reply is checked
        # against plain Redis once per outage (a TLS client sent to a non-TLS port).
        self._tls_endpoint: tuple[str, int] | None = None
        self._probed = False
        try:
            parts = urlsplit(url)
            if parts.scheme == "rediss":
                self._tls_endpoint = (parts.hostname or "localhost", parts.port or 6379)
        except ValueError:
            pass  # redis-py refuses the URL when it connects, with its own message
        #: The longest outage in seconds (None: no limit).
        self.give_up_after_s = give_up_after_s or None
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        #: Retries in the current outage (0 while Redis answers).
        self.retries = 0
        #: When (``time.monotonic()``) the last outage ended; None before any.
        self.recovered_at: float | None = None
        self._since: float | None = None
        self._delay = backoff_min_s
        # Set once a caller gave up in this outage: why (empty: the time limit).
        self._gave_up: str | None = None

    async def call(self, op: Callable[[], Awaitable[T]], *, deadline: float | None = None, reason: str = "") -> T:
        """``await op()``, retried while Redis is unreachable (class docstring).

        Args:
            op: The command; called again for each retry.
            deadline: A ``time.monotonic()`` after which this call must not retry, when
                it comes before the time limit (a lease that would have expired); a
                command still without a reply then is abandoned.
            reason: Why ``deadline``, for the error.

        Raises:
            BusUnavailableError: Redis stayed unreachable past the limit or ``deadline``.
            BusAuthError: Redis or TLS refused the connection or the command.
        """
        while True:
            started = time.monotonic()
            try:
                if deadline is None:
                    result = await op()
                else:
                    result = await _before(op, deadline)
            except _CAUGHT as exc:
                await self.wait(exc, deadline=deadline, reason=reason, started=started)
                continue
            self.reachable()
            return result

    @property
    def unreachable(self) -> bool:
        """True during an outage: from a failed command until one succeeds."""
        return self._since is not None

    async def wait(self, error: BaseException, *, deadline: float | None = None, reason: str = "",
                   started: float | None = None) -> None:
        """Count a failed command, log it and sleep before its retry (:meth:`call`'s
        arguments; ``started``: when the command was sent, default now); the last retry
        falls on the limit.

        Raises:
            BusAuthError: ``error`` is a refusal (:func:`refusal`), or a TLS handshake got no
                reply from a port that answers plain Redis.
            BusUnavailableError: Redis has been unreachable for the limit, or ``deadline``
                has passed, or another caller gave up in this outage.
        """
        refused = refusal(error, self.url)
        if refused is None and isinstance(error, redis_errors.TimeoutError) and self._tls_endpoint is not None \
                and not self._probed:
            self._probed = True
            if await _answers_plain_redis(*self._tls_endpoint):
                refused = BusAuthError(self.url, "tls", "TLS handshake got no reply: the port answers plain Redis, "
                                                        "not TLS (use redis://, or the server's --tls-port)")
        if refused is not None:
            raise refused from None
        now = time.monotonic()
        if self._since is None:
            self._since, self._delay = (now if started is None else started), self.backoff_min_s
        text = (str(error) or type(error).__name__).rstrip(".")  # ours follows it with "; "
        limit, why = None, ""
        if self.give_up_after_s is not None:
            limit = self._since + self.give_up_after_s
        if deadline is not None and (limit is None or deadline < limit):
            limit, why = deadline, reason
        if self._gave_up is not None or (limit is not None and now >= limit):
            if self._gave_up is None:
                self._gave_up = why
            raise BusUnavailableError(self.url, text, retries=self.retries, waited_s=now - self._since,
                                      reason=self._gave_up)
        delay = self._delay if limit is None else min(self._delay, limit - now)
        self.retries += 1
        self._delay = min(self._delay * 2.0, self.backoff_max_s)
        limit_text = "no time limit" if limit is None else f"giving up after {round(limit - self._since, 1):g} s"
        logger.warning("redis at %s unreachable: %s; retry %d in %.2f s (%s)", self.url, text, self.retries, delay,
                       limit_text)
        await asyncio.sleep(delay)

    def reachable(self) -> None:
        """Redis answered: the outage, if any, is over (logged with its retries)."""
        if self._since is None:
            return
        self.recovered_at = time.monotonic()
        logger.info("redis at %s reachable again after %d retries in %.1f s", self.url, self.retries,
                    self.recovered_at - self._since)
        self._since, self.retries, self._gave_up, self._probed = None, 0, None, False


async def _before(op: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``await op()``, abandoned at ``deadline`` (``time.monotonic()``) as a redis TimeoutError.

    redis-py drops a connection whose command is cancelled, so nothing of its reply is
    left to be read as the reply of the next command.
    """
    try:
        async with asyncio.timeout(deadline - time.monotonic()) as scope:
            return await op()
    except TimeoutError:
        if not scope.expired():
            raise
        raise redis_errors.TimeoutError("no reply before the deadline") from None


_PUBLISHER_TTL_S = 86_400

#: How far ahead of the Redis server's clock an entry id (or the bus clock) may be before
#: publication stops following it (:meth:`RedisTransport.publish_many`), milliseconds.
FAR_AHEAD_MS = 3_600_000

# KEYS: stream, clock (the last id given), publisher key, dead-letter stream. ARGV: maxlen
# (0: none), the publisher's counter, the publisher key's time to live (s), far-ahead bound
# (ms), dead letters kept, the last id this publisher got on this stream ('' none), the
# last id it got on any stream ('' none), then the entries' data.
# Consecutive ids from one clock reading; the ids are kept for a retry. A counter below the
# last one is a copy of a publication already retried: nothing added.
# Reply: {lost, far, far_text, id...}: lost names what vanished that this publisher had
# written ('' nothing: 'clock', 'stream'); far counts the ids ahead of the clock by more
# than the bound that were not followed (entries moved to the dead letters, the stream's
# last id and groups set back, a clock ignored), far_text says which.
_PUBLISH = """
local MAXSEQ = 9007199254740991
local function split(id)
  if type(id) ~= 'string' then return nil, nil end
  local dash = string.find(id, '-', 1, true)
  if not dash then return nil, nil end
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function below(ams, aseq, bms, bseq) return ams < bms or (ams == bms and aseq < bseq) end
-- The id after ms-seq (a sequence past what a double holds exactly moves to the next ms).
local function after(ms, seq)
  if seq >= MAXSEQ then return ms + 1, 0 end
  return ms, seq + 1
end
local last = redis.call('GET', KEYS[3])
if last then
  local sep = string.find(last, ' ', 1, true)
  local counter = string.sub(last, 1, sep - 1)
  if counter == ARGV[2] then
    local ids = {'', 0, ''}
    for id in string.gmatch(string.sub(last, sep + 1), '%S+') do ids[#ids + 1] = id end
    return ids
  end
  if tonumber(ARGV[2]) < tonumber(counter) then return {'', 0, ''} end
end
local now = redis.call('TIME')
local ms, seq = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), 0
local now_ms = ms
local bound = now_ms + tonumber(ARGV[4])
local lost, far, notes = {}, 0, {}
local given = redis.call('GET', KEYS[2])
if given then
  local gms, gseq = split(given)
  if gms == nil or gseq == nil or gms > bound then
    far = far + 1
    notes[#notes + 1] = 'ignored the bus clock ' .. string.sub(given, 1, 60)
  elseif gms >= ms then
    ms, seq = after(gms, gseq)
  end
elseif ARGV[7] ~= '' then
  lost[#lost + 1] = 'clock'
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local top = redis.call('XINFO', 'STREAM', KEYS[1])
  local lastid
  for k = 1, #top, 2 do
    if top[k] == 'last-generated-id' then lastid = top[k + 1] end
  end
  local lms, lseq = split(lastid)
  local pms, pseq = split(ARGV[6])
  if pms ~= nil and below(lms, lseq, pms, pseq) then lost[#lost + 1] = 'stream' end
  if lms > bound then
    -- Entries far ahead: moved to the dead letters, then the stream's last id and the
    -- groups that read them set back to the newest entry left.
    local start, moved = string.format('%d-0', bound + 1), 0
    while true do
      local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 100)
      if #entries == 0 then break end
      for _, e in ipairs(entries) do
        local record = {'XADD', KEYS[4], 'MAXLEN', ARGV[5], '*'}
        local fields = e[2]
        for k = 1, #fields, 2 do
          if fields[k] == 'd' then record[#record + 1] = 'd'; record[#record + 1] = fields[k + 1] end
        end
        for _, v in ipairs({'stream', KEYS[1], 'id', e[1], 'kind', 'far_ahead_id',
                            'error', 'entry id far ahead of the clock of redis: not followed by publication',
                            'dead_ms', string.format('%d', now_ms)}) do
          record[#record + 1] = v
        end
        redis.pcall(unpack(record))
        redis.call('XDEL', KEYS[1], e[1])
        moved = moved + 1
        if moved <= 10 then notes[#notes + 1] = 'moved entry ' .. e[1] .. ' to the dead letters' end
      end
    end
    local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    local reset = '0-1'
    if #newest > 0 then reset = newest[1][1] end
    if moved == 0 then
      -- The entry itself was deleted before: only the stream's last id is left ahead.
      moved = 1
      notes[#notes + 1] = 'set back the stream last id ' .. lastid
    end
    if moved > 10 then notes[#notes + 1] = string.format('and %d more', moved - 10) end
    far = far + moved
    redis.call('XSETID', KEYS[1], reset)
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
      local name, gms
      for k = 1, #g, 2 do
        if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then gms = split(g[k + 1]) end
      end
      if gms ~= nil and gms > bound then redis.call('XGROUP', 'SETID', KEYS[1], name, reset) end
    end
    lms, lseq = split(reset)
  end
  if not below(lms, lseq, ms, seq) then ms, seq = after(lms, lseq) end
elseif ARGV[6] ~= '' then
  lost[#lost + 1] = 'stream'
end
local ids = {}
for k = 8, #ARGV do
  local id = string.format('%d-%d', ms, seq)
  if ARGV[1] ~= '0' then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], id, 'd', ARGV[k])
  else
    redis.call('XADD', KEYS[1], id, 'd', ARGV[k])
  end
  ids[#ids + 1] = id
  ms, seq = after(ms, seq)
end
redis.call('SET', KEYS[2], ids[#ids])
redis.call('SET', KEYS[3], ARGV[2] .. ' ' .. table.concat(ids, ' '), 'EX', ARGV[3])
local reply = {table.concat(lost, ' '), far, table.concat(notes, '; ')}
for _, id in ipairs(ids) do reply[#reply + 1] = id end
return reply
"""
# KEYS[1]: a stream. Removes the entries that every consumer group has acknowledged
# (below each group's oldest pending entry, or up to its last delivered one when nothing
# is pending); nothing while no group reads the stream. Returns the number removed.
_TRIM = """
local function split(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local fms, fseq = nil, nil
for _, g in ipairs(groups) do
  local name, last
  for k = 1, #g, 2 do
    if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
  end
  local keep = last
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 then keep = pending[2] end
  local ms, seq = split(keep)
  if fms == nil or ms < fms or (ms == fms and seq < fseq) then fms, fseq = ms, seq end
end
if fms == 0 and fseq == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', fms, fseq))
"""
#: Topics whose streams are trimmed of what every group has acknowledged (the high-volume
#: ones); decisions and fills are kept, so that a group created later still reads them all.
TRIMMED_TOPICS: tuple[str, ...] = ("market.bars", "l2.signals")

#: Default of how often a publisher held back by backpressure logs that it waits, seconds.
BLOCKED_LOG_INTERVAL_S = 10.0

#: Entries per publication script of :meth:`RedisTransport.publish_many` (Redis runs a
#: script alone: a bound on how long one batch holds the server).
PUBLISH_BATCH = 512


def _stream_entries(response: object, **options: object) -> list[Any]:
    """XREADGROUP's reply as Redis sends it, ``[(stream, [[id, [name, value, ...]], ...]), ...]``
    (a map in RESP3, pairs in RESP2), without redis-py's dict per entry: building those
    cost more than the rest of an entry's reading."""
    if response is None:
        return []
    if isinstance(response, dict):
        return list(response.items())
    return response  # type: ignore[return-value]


def _data_field(fields: Mapping[bytes, bytes] | list[bytes]) -> bytes:
    """An entry's ``d`` field (empty when absent), from Redis's flat ``[name, value, ...]``
    list or redis-py's dict of the fields (the replies of XAUTOCLAIM, or of a client the
    caller gave)."""
    if isinstance(fields, list):
        if fields[0] == b"d":
            return fields[1]
        fields = dict(zip(fields[::2], fields[1::2]))
    return fields.get(b"d", b"")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisTransport(Transport):
    """Redis Streams transport (module docstring).

    Args:
        url: ``redis://[user:password@]host:port/db``, or ``rediss://...`` for TLS (redis-py's
            query options: ``?ssl_ca_certs=ca.crt``...); kept only by the client.
        policies: Queue policy per topic; topics not named get ``default``.
        default: The policy of every other topic.
        prefix: Prepended to every key (several buses on one Redis).
        count: Entries read per stream and ``XREADGROUP``.
        block_ms: Longest wait of one read (a closed subscription notices within it).
        claim_idle_ms: Pending time after which another consumer's entry is taken over.
        claim_interval_s: How often a subscription looks for such entries.
        backoff_min_s: First wait before retrying after a connection error.
        backoff_max_s: Longest wait between retries.
        give_up_after_s: Longest time Redis may stay unreachable before a command raises
            :class:`~l2fast.errors.BusUnavailableError` (None or 0: retry for ever).
        socket_timeout_s: How long a command may wait for its reply before the connection
            is taken for dead and the command retried; more than a blocking read's
            ``block_ms`` (default: ``block_ms / 1000`` + :data:`REPLY_TIMEOUT_S`).
            Ignored with ``client``.
        trimmed: Topics whose streams the publishers trim, at each room check, of the
            entries every group has acknowledged (a group created later starts at the
            oldest entry kept).
        partitioned: Topics split into one stream per partition (the message's symbol):
            ``prefix + topic + "|" + symbol``; a subscription then names the partitions
            it reads. Every process of a bus must agree on it.
        dead_letter_maxlen: Dead letters kept (the latest), >= 1.
        far_ahead_ms: How far ahead of the server's clock an entry id may be before
            publication stops following it (module docstring), > 0.
        blocked_log_interval_s: How often a publisher held back by backpressure says so.
        client: A ready client to use instead of connecting to ``url`` (tests).
    """

    needs_bytes = True

    def __init__(self, url: str = REDIS_URL, *, policies: Mapping[str, QueuePolicy] | None = None,
                 default: QueuePolicy = QueuePolicy(), prefix: str = "", count: int = 256, block_ms: int = 200,
                 claim_idle_ms: int = 30_000, claim_interval_s: float = 5.0, backoff_min_s: float = BACKOFF_MIN_S,
                 backoff_max_s: float = BACKOFF_MAX_S, give_up_after_s: float | None = None,
                 partitioned: Sequence[str] = (),
                 trimmed: Sequence[str] = TRIMMED_TOPICS, socket_timeout_s: float | None = None,
                 dead_letter_maxlen: int = DEAD_LETTER_MAXLEN, far_ahead_ms: int = FAR_AHEAD_MS,
                 blocked_log_interval_s: float = BLOCKED_LOG_INTERVAL_S, client: Redis | None = None) -> None:
        for name, value in (("count", count), ("block_ms", block_ms), ("claim_idle_ms", claim_idle_ms),
                            ("dead_letter_maxlen", dead_letter_maxlen), ("far_ahead_ms", far_ahead_ms)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        if socket_timeout_s is None:
            socket_timeout_s = block_ms / 1000 + REPLY_TIMEOUT_S
        elif not block_ms / 1000 < socket_timeout_s < float("inf"):  # NaN too
            # A shorter one would cut every read that waits its full block_ms on a live Redis.
            raise ValueError(f"socket_timeout_s={socket_timeout_s!r}: must be seconds > block_ms / 1000 "
                             f"({block_ms / 1000:g})")
        #: The retries while Redis is unreachable (share it with a lease on this Redis).
        self.retry = RedisRetry(url, give_up_after_s=give_up_after_s, backoff_min_s=backoff_min_s,
                                backoff_max_s=backoff_max_s)
        #: The Redis URL, its password masked (the client alone keeps the password).
        self.url = self.retry.url
        self.prefix = prefix
        self.count = count
        self.block_ms = block_ms
        self.socket_timeout_s = socket_timeout_s
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval_s = claim_interval_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self.partitioned = frozenset(partitioned)
        #: Connection errors survived (each retried command counts once per failure).
        self.reconnects = 0
        #: Entries this transport trimmed from acknowledged streams.
        self.trimmed = 0
        self.far_ahead_ms = far_ahead_ms
        self.blocked_log_interval_s = blocked_log_interval_s
        #: Times this transport found that Redis lost what the bus had written
        #: (:meth:`state_lost`).
        self.state_losses = 0
        #: Ids far ahead of the server's clock that publication did not follow.
        self.far_ahead_ids = 0
        #: The server's ``run_id`` when first seen (None before, or when INFO is refused);
        #: the reports of lost state compare the server's current one with it.
        self.run_id: str | None = None
        # The last id this publisher got, per stream and on any (lost-state checks).
        self._last_ids: dict[str, str] = {}
        self._last_id = ""
        self._restart_seen = ""
        self._observed = False  # run_id asked for (once, even when INFO is refused)
        self._policies = dict(policies or {})
        self._default = default
        if client is None:
            client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=socket_timeout_s)
            # Our own client only: a caller's keeps redis-py's replies.
            client.set_response_callback("XREADGROUP", _stream_entries)
        self._client = client
        self._script = self._client.register_script(_PUBLISH)
        self._trim = self._client.register_script(_TRIM)
        self.trimmed_topics = frozenset(trimmed)
        self._token = uuid.uuid4().hex
        self._counter = 0
        self._publish_lock = asyncio.Lock()
        self._since_check: dict[str, int] = {}
        self._subscriptions: list[RedisSubscription] = []
        self._closed = False

    def policy(self, topic: str) -> QueuePolicy:
        """The queue policy of ``topic``."""
        return self._policies.get(topic, self._default)

    def key(self, topic: str, partition: str | None = None) -> str:
        """The stream key of ``topic`` (of its ``partition`` for a partitioned topic).

        Raises:
            ValueError: A partitioned topic without a partition.
        """
        if topic in self.partitioned:
            if not partition:
                raise ValueError(f"topic {topic} is partitioned: a message needs its partition (symbol)")
            return f"{self.prefix}{topic}|{partition}"
        return self.prefix + topic

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        """``await op()``, retried with backoff on connection errors (:class:`RedisRetry`).

        Raises:
            BusClosed: The transport was closed while retrying.
            BusUnavailableError: Redis stayed unreachable for ``give_up_after_s``.
            BusAuthError: Redis or TLS refused the connection or the command.
        """
        retry = self.retry
        failed = False
        while True:
            if self._closed:
                raise BusClosed("transport is closed")
            started = time.monotonic()
            try:
                result = await op()
            except _CAUGHT as exc:
                self.reconnects += 1
                failed = True
                for subscription in self._subscriptions:
                    subscription._lost_connection()
                await retry.wait(exc, started=started)
                continue
            retry.reachable()
            if failed:
                await self._check_restart()
            return result

    async def _check_restart(self) -> None:
        """After a reconnection: log when the server's run id changed (a restart; what it
        lost, if anything, is found and reported where it is missed)."""
        if self.run_id is None:
            return
        try:
            info: Any = await self._client.info("server")
        except (redis_errors.RedisError, OSError):
            return  # informative only: the next command retries as usual
        run_id = _text(info.get("run_id", ""))
        if run_id and run_id not in (self.run_id, self._restart_seen):
            self._restart_seen = run_id
            logger.warning("redis at %s restarted (run id %s -> %s)", self.retry.url, self.run_id, run_id)

    async def publish(self, topic: str, data: object, *, partition: str | None = None) -> str:
        """Add ``data`` (bytes or text) to ``topic``'s stream (module docstring); for a
        partitioned topic, to the stream of ``partition``.

        Returns:
            The entry id (``"<ms>-<seq>"``).

        Raises:
            TypeError: ``data`` is not bytes or text.
            BusClosed: The transport was closed.
        """
        return (await self.publish_many(topic, [data], partition=partition))[0]

    async def publish_many(self, topic: str, items: Sequence[object], *, partition: str | None = None) -> list[str]:
        """Add ``items`` to ``topic``'s stream in order, :data:`PUBLISH_BATCH` per script.

        Same ids, retry safety and backpressure as :meth:`publish` (the room check runs
        before each batch).

        Returns:
            The entry ids, in order.

        Raises:
            TypeError: An item is not bytes or text.
            BusClosed: The transport was closed.
        """
        payloads: list[bytes | str] = []
        for data in items:
            if not isinstance(data, (bytes, str)):
                raise TypeError(f"the Redis transport carries encoded envelopes, got {type(data).__name__}")
            payloads.append(data)
        if self._closed:
            raise BusClosed("transport is closed")
        stream = self.key(topic, partition)
        policy = self.policy(topic)
        maxlen = policy.maxsize if policy.overflow is Overflow.DROP_OLDEST else 0
        keys = [stream, self.prefix + "l2fast:clock", f"{self.prefix}l2fast:publisher:{self._token}",
                self.prefix + DEAD_LETTERS]
        if not self._observed:
            await self._observe_run_id()
        ids: list[str] = []
        for start in range(0, len(payloads), PUBLISH_BATCH):
            batch = payloads[start:start + PUBLISH_BATCH]
            if policy.overflow is Overflow.BLOCK:
                await self._wait_for_room(stream, policy, len(batch), topic=topic)
            async with self._publish_lock:
                self._counter += 1
                previous = self._last_ids.get(stream) or self._last_id
                args = [maxlen, self._counter, _PUBLISHER_TTL_S, self.far_ahead_ms, self.dead_letter_maxlen,
                        self._last_ids.get(stream, ""), self._last_id, *batch]
                reply = await self.call(partial(self._script, keys=keys, args=args))
                lost, far, far_text, *got = (i.decode() if isinstance(i, bytes) else str(i) for i in reply)
                if got:
                    self._last_ids[stream] = self._last_id = got[-1]
            if far != "0":
                self.far_ahead_ids += int(far)
                logger.error("redis at %s: %s id(s) of %s far ahead of the server's clock (more than %d ms) not "
                             "followed by publication: %s", self.retry.url, far, stream, self.far_ahead_ms, far_text)
            if lost:
                what = " and ".join({"clock": f"the bus clock {self.prefix}l2fast:clock",
                                     "stream": f"the stream {stream}"}[w] for w in lost.split())
                await self.state_lost(f"{what} vanished, which this publisher had written; entries it "
                                      f"published up to {previous} may be lost")
            ids.extend(got)
        return ids

    async def _observe_run_id(self) -> str | None:
        """The server's ``run_id`` (``INFO server``; None when Redis refuses INFO), kept
        as :attr:`run_id` the first time."""
        self._observed = True
        try:
            info: Any = await self.call(lambda: self._client.info("server"))
        except redis_errors.ResponseError:
            return None
        except BusAuthError as exc:  # an ACL user without +info: the run id stays unknown
            if exc.kind != "permission":
                raise
            return None
        run_id = info.get("run_id")
        run_id = run_id.decode() if isinstance(run_id, bytes) else run_id
        if self.run_id is None:
            self.run_id = run_id
        return run_id

    async def state_lost(self, what: str) -> None:
        """Report that Redis lost state this bus had written (``what``, a clause naming
        it): logged as an error with the server's run ids and counted in
        :attr:`state_losses` (one count per finding: a reader and a publisher sharing this
        transport each report a restart that cost them)."""
        # Against the run id first seen: every report of one restart names it.
        before = self.run_id
        now = await self._observe_run_id()
        if before is not None and now is not None and before != now:
            why = f"run id {before} -> {now}: Redis restarted since"
        elif now is not None:
            why = f"same run id {now}: keys deleted (FLUSHALL, DEL or XGROUP DESTROY)"
        else:
            why = "run id unknown"
        self.state_losses += 1
        logger.error("redis at %s lost its state (%s): %s", self.retry.url, why, what)

    async def _wait_for_room(self, key: str, policy: QueuePolicy, n: int = 1, *, topic: str) -> None:
        every = max(1, policy.maxsize // 8)
        done = self._since_check.get(key, every)
        if done < every:
            self._since_check[key] = done + n
            return
        self._since_check[key] = n
        if topic in self.trimmed_topics:
            self.trimmed += await self.call(lambda: self._trim(keys=[key]))
        delay = 0.001
        blocked_since = time.monotonic()
        next_log = blocked_since + self.blocked_log_interval_s
        logged = False
        while True:
            try:
                groups = await self.call(lambda: self._client.xinfo_groups(key))
            except redis_errors.ResponseError:  # no stream yet: nothing waits
                return
            lags = [(g, await self._lag(key, g, policy.maxsize)) for g in groups]
            full = [(g, lag) for g, lag in lags if lag >= policy.maxsize]
            if not full:
                if logged:
                    logger.warning("publisher unblocked on %s after %.1f s", key, time.monotonic() - blocked_since)
                return
            now = time.monotonic()
            if now >= next_log:
                # A consumer that stopped leaves the publisher waiting for ever: never silently.
                next_log, logged = now + self.blocked_log_interval_s, True
                logger.warning("publisher blocked by backpressure on %s for %.0f s: %s (bound %d); waiting for "
                               "the consumer to read", key, now - blocked_since,
                               ", ".join(f"group {_text(g['name'])} has {lag} entries unread" for g, lag in full),
                               policy.maxsize)
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, 0.005)

    async def _lag(self, key: str, group: Mapping[str, Any], bound: int) -> int:
        """The entries not yet delivered to ``group``, counted up to ``bound``.

        Redis reports no lag once entries were deleted from the middle of a stream
        (``XDEL``); the entries after the group's last delivered id are then counted.
        """
        lag = group.get("lag")
        if lag is not None:
            return int(lag)
        last = group["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        entries = await self.call(lambda: self._client.xrange(key, min=f"({last}", count=bound))
        return len(entries or ())

    async def subscribe(self, topics: Sequence[str], *, group: str, consumer: str,
                        partitions: Sequence[str] | None = None) -> RedisSubscription:
        """Read ``topics`` as ``consumer`` of ``group``, creating the group where missing.

        A new group starts at the first entry of each stream (nothing published before is
        missed).

        Raises:
            ValueError: ``topics`` is empty or repeats a topic, ``consumer`` is empty, or
                a partitioned topic is read without ``partitions``.
            BusClosed: The transport was closed.
        """
        names = tuple(topics)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"topics={list(names)!r}: must be a non-empty list of distinct topics")
        if not consumer:
            raise ValueError("consumer: a Redis consumer needs a name (unique within its group)")
        streams: dict[str, str] = {}
        for topic in names:
            if topic in self.partitioned:
                if not partitions:
                    raise ValueError(f"topic {topic} is partitioned: name the partitions (symbols) to read")
                for partition in partitions:
                    streams[self.key(topic, partition)] = topic
            else:
                streams[self.key(topic)] = topic
        if not self._observed:
            await self._observe_run_id()
        for key in streams:
            await self._create_group(key, group)
        subscription = RedisSubscription(self, group, consumer, names, streams)
        self._subscriptions.append(subscription)
        return subscription

    async def dead_letter(self, record: Mapping[str, str | bytes]) -> None:
        """Add ``record`` to the dead-letter stream (module docstring), trimmed to the
        latest ``dead_letter_maxlen`` entries.

        A dead letter Redis refuses (an ACL without the right, a stream whose last id is
        the largest possible) is logged as an error and not retried: it must not stop the
        consumer it was written for.

        Raises:
            BusClosed: The transport was closed.
        """
        key = self.prefix + DEAD_LETTERS
        fields: dict[Any, Any] = dict(record)
        try:
            await self.call(lambda: self._client.xadd(key, fields, maxlen=self.dead_letter_maxlen,
                                                      approximate=False))
        except (redis_errors.ResponseError, BusAuthError) as exc:
            logger.error("could not write a dead letter to %s: %s (%s)", key, exc,
                         ", ".join(f"{k}={dead_letter_text(v)[:200]!r}" for k, v in record.items()))

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The latest ``count`` entries of the dead-letter stream, oldest first, as text.

        Raises:
            BusClosed: The transport was closed.
        """
        key = self.prefix + DEAD_LETTERS
        entries: Any = await self.call(lambda: self._client.xrevrange(key, count=count))
        return [{dead_letter_text(k): dead_letter_text(v) for k, v in fields.items()}
                for _, fields in reversed(entries or [])]

    async def _create_group(self, key: str, group: str, start: str = "0") -> None:
        try:
            await self.call(lambda: self._client.xgroup_create(key, group, id=start, mkstream=True))
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def close(self) -> None:
        """Flush every subscription's acknowledgements, close them and the connection."""
        if self._closed:
            return
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._closed = True
        await self._client.aclose()

    def _forget(self, subscription: RedisSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    @property
    def client(self) -> Redis:
        """The redis-py client (for inspection: pending entries, stream lengths)."""
        return self._client


class RedisSubscription(Subscription):
    """One consumer of a group over one or more streams (:mod:`l2fast.bus.redis`)."""

    def __init__(self, transport: RedisTransport, group: str, consumer: str, topics: tuple[str, ...],
                 streams: Mapping[str, str]) -> None:
        self.topics = topics
        self.group = group
        self.consumer = consumer
        self._transport = transport
        self._client = transport.client
        # Stream key -> its topic (a partitioned topic has one stream per partition).
        self._topic_of = dict(streams)
        self._keys = list(streams)
        # Fetched entries not handed out yet, per stream, in id order.
        self._buffers: dict[str, deque[tuple[tuple[int, int], Delivery]]] = {k: deque() for k in self._keys}
        # The largest id up to which every stream's entries are known (None: all).
        self._horizon: tuple[int, int] | None = None
        self._acks: dict[str, list[str]] = {k: [] for k in self._keys}
        # Buffered or handed out, and not acknowledged yet: a re-read of the pending list
        # or a claim must not deliver them again. Keyed by stream and id: ids are per stream,
        # so two streams can hold the same one.
        self._known: set[tuple[str, str]] = set()
        # The newest id fetched per stream: where a group Redis lost is created again.
        self._last_seen: dict[str, tuple[tuple[int, int], str]] = {}
        self._recover = True
        self._next_claim = 0.0
        self._closed = False

    def _lost_connection(self) -> None:
        # Entries delivered to us whose reply was lost are only in our pending list.
        self._recover = True

    async def get(self) -> Delivery:
        """The next message in publication order (module docstring).

        Raises:
            BusClosed: The subscription or the transport was closed.
        """
        return (await self.get_many(1))[0]

    async def get_many(self, limit: int) -> list[Delivery]:
        """The next messages in publication order: at least one, at most ``limit``.

        Raises:
            BusClosed: The subscription or the transport was closed.
        """
        while True:
            if self._closed:
                raise BusClosed(f"subscription {self.group}/{self.consumer} is closed")
            out: list[Delivery] = []
            buffer = self._ready()
            while buffer is not None:
                out.append(buffer.popleft()[1])
                if len(out) >= limit:
                    break
                buffer = self._ready()
            if out:
                return out
            await self._fetch()

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge ``deliveries``: buffered and sent before the next read (at once once closed)."""
        acks = self._acks
        for delivery in deliveries:
            acks[delivery.stream].append(delivery.id)
        if self._closed:
            await self._flush_acks()

    def ready(self) -> bool:
        """True when a fetched entry can be handed out without reading from Redis."""
        return self._ready() is not None

    def _ready(self) -> deque[tuple[tuple[int, int], Delivery]] | None:
        """The buffer whose first entry comes next, if it may be delivered now."""
        best: deque | None = None
        for buffer in self._buffers.values():
            if buffer and (best is None or buffer[0][0] < best[0][0]):
                best = buffer
        if best is None or (self._horizon is not None and best[0][0] > self._horizon):
            return None
        return best

    async def _fetch(self) -> None:
        await self._flush_acks()
        claimed = False
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._transport.claim_interval_s
            claimed = await self._claim()
        if claimed or self._ready() is None:
            # Claimed entries can be newer than entries of another stream that no one was
            # given yet: read those too (without waiting), so that the horizon holds the
            # claimed ones back until everything older is known.
            await self._read_new(block=not claimed)
        # After the read, so that entries whose reply a reconnection lost during it are
        # buffered before anything newer is handed out (they have smaller ids).
        if self._recover:
            self._recover = False
            await self._read_pending()

    async def _read_new(self, *, block: bool = True) -> None:
        count = self._transport.count
        streams: dict[KeyT, StreamIdT] = dict.fromkeys(self._keys, ">")
        block_ms = self._transport.block_ms if block else None
        # Any: the stubs type redis-py's parsing of the reply, and our client parses it with
        # _stream_entries (a caller's client with redis-py's own): both give (stream, entries) pairs.
        reply: Any = await self._call(lambda: self._client.xreadgroup(
            self.group, self.consumer, streams, count=count, block=block_ms))
        horizon = None
        for key, entries in reply or ():
            self._add(key.decode() if isinstance(key, bytes) else key, entries)
            if len(entries) >= count:
                last = _id_key(entries[-1][0])
                horizon = last if horizon is None else min(horizon, last)
        self._horizon = horizon

    def _add(self, key: str, entries: Sequence[tuple[bytes, Mapping[bytes, bytes] | list[bytes] | None]]) -> None:
        buffer = self._buffers[key]
        topic = self._topic_of[key]
        known = self._known
        newest = self._last_seen.get(key)
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if not fields:  # trimmed away (a DROP_OLDEST topic) while pending
                self._acks[key].append(entry_id)
                continue
            if (key, entry_id) in known:
                continue
            known.add((key, entry_id))
            order = _id_key(entry_id)
            if newest is None or order > newest[0]:
                newest = (order, entry_id)
            # An entry another producer wrote without our field reaches the bus as an
            # empty envelope, to be refused and counted like any malformed message.
            buffer.append((order, Delivery(topic, entry_id, order[0], _data_field(fields), key)))
        if newest is not None:
            self._last_seen[key] = newest
        if len(buffer) > 1 and any(buffer[k][0] > buffer[k + 1][0] for k in range(len(buffer) - 1)):
            self._buffers[key] = deque(sorted(buffer, key=lambda item: item[0]))

    async def _read_pending(self) -> None:
        for key in self._keys:
            start = "0"
            while True:
                streams: dict[KeyT, StreamIdT] = {key: start}
                reply: Any = await self._call(partial(  # Any: as in _read_new
                    self._client.xreadgroup, self.group, self.consumer, streams, count=self._transport.count))
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                self._add(key, entries)
                start = entries[-1][0].decode()

    async def _claim(self) -> bool:
        """Take over what other consumers left pending too long; True when anything was."""
        claimed = False
        for key in self._keys:
            start = "0-0"
            while True:
                # Any: the stubs say a dict; redis-py gives [next start, entries, deleted ids].
                reply: Any = await self._call(partial(
                    self._client.xautoclaim, key, self.group, self.consumer, self._transport.claim_idle_ms, start,
                    count=self._transport.count))
                start, entries = reply[0], reply[1]
                if entries:
                    logger.warning("%s/%s: took over %d pending %s entries of another consumer", self.group,
                                   self.consumer, len(entries), key)
                    self._add(key, entries)
                    claimed = True
                if start in (b"0-0", "0-0"):
                    break
        return claimed

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``: buffered and sent before the next read (at once once closed)."""
        self._acks[delivery.stream].append(delivery.id)
        if self._closed:
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        for key, ids in self._acks.items():
            if not ids:
                continue
            # Taken out before awaiting: a concurrent flush (close) sends the others.
            batch = ids[:]
            ids.clear()
            await self._transport.call(partial(self._client.xack, key, self.group, *batch))
            self._known.difference_update((key, i) for i in batch)

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        """The transport's ``call(op)`` for a command on the group, which creates the group
        again where Redis lost it (``NOGROUP``) and repeats the command."""
        while True:
            try:
                return await self._transport.call(op)
            except redis_errors.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                await self._recreate()

    async def _recreate(self) -> None:
        """Create the group again on the streams where Redis lost it, and say what was lost.

        A stream that vanished gets the group at its start (all it holds is new); a stream
        that lost only the group gets it after the newest entry this consumer fetched (the
        entries before were read, and must not be delivered twice).
        """
        gone, groupless = [], []
        for key in self._keys:
            try:
                groups: Any = await self._transport.call(partial(self._client.xinfo_groups, key))
            except redis_errors.ResponseError:  # no such key
                gone.append(key)
                await self._transport._create_group(key, self.group)
                continue
            if not any(_text(g["name"]) == self.group for g in groups):
                groupless.append(key)
                await self._transport._create_group(key, self.group, self._last_seen.get(key, ((0, 0), "0"))[1])
        if not gone and not groupless:
            return  # another consumer of the group created it again first
        parts = []
        if gone:
            parts.append(f"{', '.join(gone)} (stream gone)")
        if groupless:
            parts.append(f"{', '.join(groupless)} (group gone)")
        seen = ", ".join(f"{k} {self._last_seen[k][1]}" for k in gone + groupless if k in self._last_seen)
        await self._transport.state_lost(
            f"recreated group {self.group} on {' and '.join(parts)}; entries published after the last read "
            f"({seen or 'nothing read yet'}) and not yet read may be lost; {len(self._known)} entries fetched "
            "and not acknowledged are no longer pending")

    async def close(self) -> None:
        """Send the buffered acknowledgements and stop reading; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._flush_acks()
        except (BusClosed, BusUnavailableError):
            pass  # the transport closed first, or Redis is gone: the entries stay pending, to be read again
        finally:
            self._transport._forget(self)


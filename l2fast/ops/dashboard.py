"""The L2 dashboard: the engine's metrics and its recent signals in a rich panel
(``pip install l2fast[dashboard]``).

:class:`L2Dashboard` holds the latest metrics dict (:mod:`l2fast.ops.monitoring` describes
it) and the signals of the last ``window_ms`` (:meth:`TacticalSignal.to_dict
<l2fast.signals.TacticalSignal.to_dict>` dicts) and renders:

- the seed's panel: buy/sell signals (and holds), average confidence and ensemble
  consensus, in the last hour (over its voting bars) and since the start; active
  positions x/max, portfolio heat (with equity and gross exposure) and the P95 latency
  of the whole bar;
- the risk denials by code, in the last hour and since the start;
- every model's agreement with the ensemble's direction, votes and failures;
- the P50/P95/P99 latency of every stage.

"The last hour" is measured on the signals' ``ts_ms`` (bar open times) against
``now_ms``, by default the newest signal's: a replay shows market time, and a live
worker's bars follow the wall clock anyway.

Two drivers: :class:`ReplayFeed` (``python -m l2fast replay ... --dashboard``) and
:func:`watch_redis` (``python -m l2fast dashboard --redis URL``), which reads the
workers' metrics (:func:`l2fast.ops.monitoring.read_metrics`) and the ``l2.signals`` stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from l2fast.bus.bus import Topic
from l2fast.bus.schema import Message, MessageError, UnauthenticatedError, decode, open_signed
from l2fast.bus.transport import REDIS_TIMEOUT_S
from l2fast.keys import Signer
from l2fast.ops import DASHBOARD_EVERY, DASHBOARD_REFRESH_S
from l2fast.ops.monitoring import merge_metrics, read_metrics
from l2fast.signals import TacticalSignal

__all__ = ["L2Dashboard", "RedisFeed", "ReplayFeed", "watch_redis"]

logger = logging.getLogger("l2fast.ops.dashboard")

HOUR_MS = 3_600_000


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-6:
        return f"{s * 1e9:,.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:,.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:,.2f} ms"
    return f"{s:,.2f} s"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


class _Recent:
    """What the dashboard keeps of one signal."""

    __slots__ = ("confidence", "consensus", "denial", "side", "ts_ms", "voted")

    def __init__(self, signal: Mapping[str, Any]) -> None:
        reasoning = signal.get("reasoning") or {}
        denial = reasoning.get("denial")
        self.ts_ms: int = signal["ts_ms"]
        self.side: str = signal["side"]
        self.confidence: float = signal["confidence"]
        self.consensus: float = signal["consensus"]
        self.voted = "vote" in reasoning
        self.denial: str | None = denial["code"] if denial else None


class L2Dashboard:
    """The L2 dashboard (module docstring).

    Use :meth:`update` and :meth:`render`, or ``with L2Dashboard() as dash:`` to draw it
    live on the terminal (:class:`rich.live.Live`), redrawn by every :meth:`update`.

    Args:
        max_positions: Most positions at once, shown when the metrics lack
            ``positions.max`` (e.g. ``config.risk.max_concurrent_positions``).
        window_ms: Span of "the last hour", milliseconds (> 0).
        title: The panel's title.
        console: Where the live display draws (default: a new rich Console).

    Raises:
        ValueError: ``max_positions`` < 1 or ``window_ms`` <= 0.
    """

    def __init__(self, max_positions: int | None = None, window_ms: int = HOUR_MS, *,
                 title: str = "l2fast tactical layer (L2)", console: Console | None = None) -> None:
        if max_positions is not None and (type(max_positions) is not int or max_positions < 1):
            raise ValueError(f"max_positions={max_positions!r}: must be an integer >= 1 or None")
        if type(window_ms) is not int or window_ms <= 0:
            raise ValueError(f"window_ms={window_ms!r}: must be an integer > 0")
        self.max_positions = max_positions
        self.window_ms = window_ms
        self.title = title
        self.console = console if console is not None else Console()
        self.metrics: Mapping[str, Any] | None = None
        self.now_ms: int | None = None
        self._recent: deque[_Recent] = deque()
        self._live: Live | None = None

    def update(self, metrics: Mapping[str, Any] | None = None, signals: Iterable[Mapping[str, Any]] = (),
               now_ms: int | None = None) -> None:
        """Take the latest metrics (None keeps the previous ones) and new signals.

        Args:
            metrics: The engine's metrics dict, or None.
            signals: Signal dicts (``ts_ms``, ``side``, ``confidence``, ``consensus``,
                ``reasoning``), oldest first.
            now_ms: The time "the last hour" ends at (default: the newest signal's
                ``ts_ms`` seen so far).
        """
        if metrics is not None:
            self.metrics = metrics
        for signal in signals:
            recent = _Recent(signal)
            self._recent.append(recent)
            if now_ms is None and (self.now_ms is None or recent.ts_ms > self.now_ms):
                self.now_ms = recent.ts_ms
        if now_ms is not None:
            self.now_ms = now_ms
        # Signals arrive (nearly) in time order: dropping from the old end bounds the memory.
        cutoff = self._cutoff()
        while self._recent and self._recent[0].ts_ms < cutoff:
            self._recent.popleft()
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    def _cutoff(self) -> int:
        return -1 if self.now_ms is None else self.now_ms - self.window_ms

    def _window(self) -> list[_Recent]:
        # The kept signals inside (now_ms - window_ms, now_ms]; none before the first.
        cutoff, now = self._cutoff(), self.now_ms
        if now is None:
            return []
        return [r for r in self._recent if cutoff < r.ts_ms <= now]

    # ---------------------------------------------------------------- rendering

    def render(self) -> RenderableType:
        """The dashboard as a rich renderable: the panel, then the denials, agreement and
        latency tables (side by side where the console is wide enough)."""
        recent = self._window()
        return Group(self._panel(recent), Columns([self._denials(recent), self._agreement(), self._latency()],
                                                  padding=(0, 4)))

    def _panel(self, recent: list[_Recent]) -> Panel:
        m = self.metrics or {}
        sides = {"buy": 0, "sell": 0, "hold": 0}
        for r in recent:
            sides[r.side] += 1
        voted = [r for r in recent if r.voted]
        since = m.get("signals")
        flow = Table(box=None, pad_edge=False, header_style="dim")
        flow.add_column("")
        flow.add_column("last hour", justify="right")
        flow.add_column("since start", justify="right")
        flow.add_row("Signals (buy + sell)", f"{sides['buy'] + sides['sell']:,}",
                     f"{since['buy'] + since['sell']:,}" if since else "-")
        flow.add_row("  buy / sell / hold", f"{sides['buy']:,} / {sides['sell']:,} / {sides['hold']:,}",
                     f"{since['buy']:,} / {since['sell']:,} / {since['hold']:,}" if since else "-")
        for label, key in (("Average confidence", "confidence"), ("Ensemble consensus", "consensus")):
            mean = sum(getattr(r, key) for r in voted) / len(voted) if voted else None
            flow.add_row(label, _ratio(mean), _ratio(m[key]["mean"]) if key in m else "-")
        flow.add_row("Voting bars", f"{len(voted):,}", f"{m['votes']:,}" if "votes" in m else "-")

        state = Table.grid(padding=(0, 2))
        state.add_column()
        state.add_column(justify="right", style="bold")
        state.add_column(style="dim")
        positions = m.get("positions") or {}
        limit = positions.get("max", self.max_positions)
        state.add_row("Active positions", f"{positions.get('active', '-')}/{'-' if limit is None else limit}",
                      f"entries today {m['entries_today']:,}" if "entries_today" in m else "")
        heat = m.get("portfolio_heat")
        state.add_row("Portfolio heat", "-" if heat is None else f"{heat:.2%}",
                      f"equity {m['equity']:,.2f} · gross exposure {m['gross_exposure']:,.2f}" if "equity" in m else "")
        total = m.get("latency", {}).get("total")
        state.add_row("Latency P95", _seconds(total["p95_s"]) if total else "-",
                      f"per bar, over {total['count']:,} bars" if total else "")
        status = []
        if self.now_ms is not None:
            status.append(f"as of {_utc(self.now_ms)} UTC")
        if m.get("halted"):
            status.append("[bold red]HALTED: no new entries[/]")
        return Panel(Group(flow, "", state), title=self.title, subtitle=" · ".join(status) or None,
                     title_align="left", expand=False)

    def _denials(self, recent: list[_Recent]) -> Table:
        last_hour: dict[str, int] = {}
        for r in recent:
            if r.denial is not None:
                last_hour[r.denial] = last_hour.get(r.denial, 0) + 1
        since = dict((self.metrics or {}).get("denials", {}))
        table = Table(title="Risk denials", title_justify="left")
        table.add_column("code")
        table.add_column("last hour", justify="right")
        table.add_column("since start", justify="right")
        codes = sorted(set(last_hour) | set(since), key=lambda c: (-since.get(c, 0), -last_hour.get(c, 0), c))
        for code in codes:
            table.add_row(escape(str(code)), f"{last_hour.get(code, 0):,}",
                          f"{since[code]:,}" if code in since else "-")
        if not codes:
            table.add_row("none", "0", "0")
        return table

    def _agreement(self) -> Table:
        table = Table(title="Model agreement (since start)", title_justify="left")
        for name in ("model", "votes", "agree", "agreement", "failures"):
            table.add_column(name, justify="left" if name == "model" else "right")
        for name, m in (self.metrics or {}).get("members", {}).items():
            agreement = m["agreement"]
            table.add_row(escape(name), f"{m['votes']:,}", f"{m['agree']:,}",
                          "-" if agreement is None else f"{agreement:.1%}", f"{m['failures']:,}")
        return table

    def _latency(self) -> Table:
        table = Table(title="Latency by stage (since start)", title_justify="left")
        for name in ("stage", "P50", "P95", "P99", "bars"):
            table.add_column(name, justify="left" if name == "stage" else "right")
        for stage, h in (self.metrics or {}).get("latency", {}).items():
            table.add_row(escape(stage), _seconds(h["p50_s"]), _seconds(h["p95_s"]), _seconds(h["p99_s"]),
                          f"{h['count']:,}")
        return table

    # ---------------------------------------------------------------- live display

    def __enter__(self) -> Self:
        # Redrawn by update() only, on the caller's thread (no refresh thread reading
        # the state while update() changes it).
        self._live = Live(self.render(), console=self.console, auto_refresh=False)
        self._live.start(refresh=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            # Off a terminal, Live prints its last frame without ending the line.
            if not self.console.is_terminal:
                self.console.line()


class ReplayFeed:
    """Feeds an :class:`L2Dashboard` from :func:`l2fast.evaluation.replay.replay`'s ``on_signal``
    callback, redrawing it every ``every`` bars with ``metrics()``.

    ``with feed:`` draws the dashboard live and, at the end, redraws it with the last
    signals and metrics.

    Args:
        dashboard: The dashboard (live while the replay runs).
        metrics: Returns the engine's metrics dict (``gen.metrics``).
        every: Bars between two redraws (>= 1).

    Raises:
        ValueError: ``every`` < 1.
    """

    def __init__(self, dashboard: L2Dashboard, metrics: Callable[[], Mapping[str, Any]],
                 every: int = DASHBOARD_EVERY) -> None:
        if type(every) is not int or every < 1:
            raise ValueError(f"every={every!r}: must be an integer >= 1")
        self.dashboard = dashboard
        self.metrics = metrics
        self.every = every
        self._batch: list[dict[str, Any]] = []

    def __enter__(self) -> Self:
        self.dashboard.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.dashboard.__exit__(exc_type, exc, tb)

    def __call__(self, index: int, signal: TacticalSignal, latency_ns: int) -> None:
        """The replay's ``on_signal``: keep the signal, redraw every ``every`` bars."""
        # The fields the dashboard reads, without to_dict()'s JSON conversion of the reasoning.
        self._batch.append({"ts_ms": signal.ts_ms, "side": signal.side.value, "confidence": signal.confidence,
                            "consensus": signal.consensus, "reasoning": signal.reasoning})
        if len(self._batch) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Redraw with the signals kept since the last redraw and the current metrics."""
        self.dashboard.update(self.metrics(), self._batch)
        self._batch = []


class RedisFeed:
    """Reads the workers' metrics and new signals from Redis into an :class:`L2Dashboard`.

    The first :meth:`poll` reads the ``l2.signals`` entries published in the last
    ``dashboard.window_ms`` (Redis server time: entry ids are publication times); later
    polls read the entries after the last one seen. Several workers' metrics are merged
    (:func:`l2fast.ops.monitoring.merge_metrics`) and named in the title; an entry that
    does not merge (written by something else than a worker of this build) is skipped
    with a warning, and names are shown as text, never read as rich markup.

    Args:
        client: A ``redis.asyncio.Redis`` client (bytes responses, the default).
        prefix: The bus's key prefix.
        signer: The bus key: entries not signed with it are skipped (counted, logged);
            None reads without checking (:func:`l2fast.bus.schema.open_signed`).
    """

    def __init__(self, client: Any, prefix: str = "", signer: Signer | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.signer = signer
        self.stream = prefix + Topic.SIGNALS
        self._last_id: str | None = None
        #: Stream entries that were not valid signal envelopes (skipped, logged).
        self.malformed = 0
        #: Stream entries not signed with the bus key (skipped, logged; with a signer).
        self.unauthenticated = 0

    async def poll(self, dashboard: L2Dashboard) -> None:
        """One read of Redis, handed to ``dashboard.update``."""
        workers = await read_metrics(self.client, self.prefix)
        if self._last_id is None:
            seconds, micros = await self.client.time()
            start = str(seconds * 1000 + micros // 1000 - dashboard.window_ms)
        else:
            start = "(" + self._last_id
        signals = []
        for entry_id, fields in await self.client.xrange(self.stream, min=start, max="+"):
            self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            message: Message | MessageError
            try:
                message = decode(open_signed(fields.get(b"d", b""), Topic.SIGNALS, self.signer)).message
            except MessageError as exc:
                message = exc
            if type(message) is UnauthenticatedError:
                self.unauthenticated += 1
                logger.warning("%s %s: skipped, not signed with the bus key: %s", self.stream, self._last_id, message)
                continue
            if not isinstance(message, TacticalSignal):
                self.malformed += 1
                logger.warning("%s %s: skipped, not a signal: %s", self.stream, self._last_id, message)
                continue
            signals.append(message.to_dict())
        # A metrics key is anyone's to write who may write Redis (or an older build wrote
        # it): an entry that does not merge with the others is skipped, not fatal.
        shown: dict[str, dict[str, Any]] = {}
        for name, metrics in workers.items():
            try:
                merge_metrics([*shown.values(), metrics])
            except Exception as exc:
                logger.warning("%s: metrics entry skipped, it cannot be shown: %s: %s", name, type(exc).__name__, exc)
                continue
            shown[name] = metrics
        if shown:
            dashboard.title = f"l2fast tactical layer (L2): {escape(', '.join(shown))}"
        dashboard.update(merge_metrics(list(shown.values())) if shown else None, signals)


async def watch_redis(url: str, *, prefix: str = "", refresh_s: float = DASHBOARD_REFRESH_S, once: bool = False,
                      console: Console | None = None, redis_timeout_s: float | None = REDIS_TIMEOUT_S,
                      signer: Signer | None = None) -> None:
    """``python -m l2fast dashboard``: the dashboard of the workers behind ``url``.

    A read that cannot reach Redis, or gets no reply within
    :data:`~l2fast.bus.redis.REPLY_TIMEOUT_S`, is retried with backoff, each retry logged
    (:class:`~l2fast.bus.redis.RedisRetry`), until Redis answers again or has been
    unreachable for ``redis_timeout_s``.

    Args:
        url: ``redis://host:port/db``.
        prefix: The bus's key prefix.
        refresh_s: Seconds between two reads (> 0).
        once: Print one frame and return (else redraw live until interrupted).
        console: Where to draw (default: a new rich Console).
        redis_timeout_s: How long Redis may stay unreachable (seconds); None or 0: for ever.
        signer: The bus key (:class:`RedisFeed`); None: signals are shown unchecked.

    Raises:
        ValueError: ``refresh_s`` <= 0 or ``redis_timeout_s`` < 0.
        BusUnavailableError: Redis stayed unreachable for ``redis_timeout_s``.
    """
    from redis.asyncio import Redis

    from l2fast.bus.redis import CONNECT_TIMEOUT_S, REPLY_TIMEOUT_S, RedisRetry

    if not refresh_s > 0:
        raise ValueError(f"refresh_s={refresh_s!r}: must be > 0")
    retry = RedisRetry(url, give_up_after_s=redis_timeout_s)
    dashboard = L2Dashboard(console=console)
    client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=REPLY_TIMEOUT_S)
    feed = RedisFeed(client, prefix, signer)
    try:
        await retry.call(lambda: feed.poll(dashboard))
        if once:
            dashboard.console.print(dashboard.render())
            return
        with dashboard:
            while True:
                await asyncio.sleep(refresh_s)
                await retry.call(lambda: feed.poll(dashboard))
    finally:
        await client.aclose()

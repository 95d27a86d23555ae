"""Monitoring: the engine's metrics as Prometheus text, a loopback ``/metrics`` endpoint,
and the Redis hand-off that the dashboard reads.

- :func:`render_prometheus`: the metrics dict of the engine (the layout of
  :mod:`l2fast.engine._telemetry`, plus the keys the engine adds: ``positions``,
  ``portfolio_heat``, ``equity``, ``gross_exposure``, ``halted``, ``entries_today``,
  ``denials``) in the Prometheus text exposition format 0.0.4, every sample labelled
  ``worker``. No dependency on ``prometheus_client``.
- :class:`MetricsServer`: a minimal asyncio HTTP/1.1 server answering ``GET /metrics``
  with a provider's text, on a loopback address unless told otherwise.
- :func:`publish_metrics` / :func:`read_metrics`: each worker SETs its metrics as JSON
  under ``<prefix>l2fast:metrics:<worker>`` with a time to live (a dead worker's entry
  expires); the dashboard SCANs them. :func:`merge_metrics` sums several workers' dicts.

Exposed families (``<name>{labels}``; counters end in ``_total``):

=====================================  =========  ==============================================
``l2fast_bars_total``                  counter    signals emitted (one per bar)
``l2fast_signals_total{side}``         counter    signals by side (buy, sell, hold)
``l2fast_reasons_total{code}``         counter    signals by reasoning code
``l2fast_denials_total{code}``         counter    risk-gate denials by code
``l2fast_votes_total``                 counter    bars whose ensemble voted
``l2fast_member_votes_total{member}``  counter    votes each member took part in
``l2fast_member_agree_total{member}``  counter    ... agreeing with the ensemble's direction
``l2fast_member_failures_total{...}``  counter    votes each member failed
``l2fast_confidence_mean``             gauge      mean confidence of the votes
``l2fast_consensus_mean``              gauge      mean consensus of the votes
``l2fast_confidence``                  histogram  vote confidences, ``le`` 0.1 .. 1.0
``l2fast_stage_latency_seconds``       histogram  per-bar latency by ``stage``
``l2fast_positions_active``, ``l2fast_positions_max``, ``l2fast_portfolio_heat``,
``l2fast_equity``, ``l2fast_gross_exposure``, ``l2fast_halted``, ``l2fast_entries_today``:
gauges of the engine's state (when the dict has them)
``l2fast_bus_messages_total{kind}``    counter    the bus adapter's counts (when given)
=====================================  =========  ==============================================

The confidence histogram's buckets hold ``[k/10, (k+1)/10)`` (1.0 in the last): a
confidence exactly on a tenth counts in the bucket above it, so that the buckets from a
threshold up hold the confidences passing the gate ``confidence >= threshold``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self
from urllib.parse import urlsplit

from l2fast.errors import ConfigError

__all__ = [
    "ADAPTER_KINDS",
    "CONTENT_TYPE",
    "METRICS_KEY",
    "MetricsServer",
    "bucket_quantile",
    "merge_metrics",
    "metrics_from_json",
    "metrics_key",
    "metrics_to_json",
    "publish_metrics",
    "read_metrics",
    "render_prometheus",
]

logger = logging.getLogger("l2fast.ops.monitoring")

#: The Content-Type of the text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Key of a worker's metrics after the prefix: ``<prefix>l2fast:metrics:<worker>``.
METRICS_KEY = "l2fast:metrics:"
#: The bus adapter's counters exposed as ``l2fast_bus_messages_total{kind}``.
ADAPTER_KINDS = ("decisions", "fills", "bars", "signals", "stale", "malformed", "refused")

_GAUGES = (
    ("equity", "l2fast_equity", "Equity, quote currency (open positions marked)."),
    ("gross_exposure", "l2fast_gross_exposure", "Gross notional of the open positions, quote currency."),
    ("portfolio_heat", "l2fast_portfolio_heat", "Portfolio heat: open risk as a fraction of equity."),
    ("entries_today", "l2fast_entries_today", "Entries since the start of the UTC day."),
    ("halted", "l2fast_halted", "1 while the risk gate halts new entries (daily loss limit), else 0."),
)


# ------------------------------------------------------------------ exposition


def _number(value: Any) -> str:
    """A sample value as the format writes it (Go's float syntax, ``+Inf``, ``NaN``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _label_value(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Exposition:
    """Accumulates the lines of one exposition, every sample labelled with the worker."""

    def __init__(self, worker: str) -> None:
        self.lines: list[str] = []
        self.worker = f'worker="{_label_value(worker)}"'

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, Mapping[str, str], Any]]) -> None:
        """One family: HELP and TYPE lines, then ``(suffix, labels, value)`` samples."""
        escaped = help_text.replace("\\", r"\\").replace("\n", r"\n")
        self.lines.append(f"# HELP {name} {escaped}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            extra = "".join(f',{k}="{_label_value(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{suffix}{{{self.worker}{extra}}} {_number(value)}")

    def scalar(self, name: str, kind: str, help_text: str, value: Any) -> None:
        self.family(name, kind, help_text, [("", {}, value)])

    def labelled(self, name: str, kind: str, help_text: str, label: str, values: Mapping[str, Any]) -> None:
        self.family(name, kind, help_text, [("", {label: key}, v) for key, v in values.items()])

    def histogram(self, name: str, help_text: str,
                  series: Iterable[tuple[Mapping[str, str], Sequence[tuple[float, int]], float, int]]) -> None:
        """``series``: (labels, cumulative ``(upper bound, count)`` buckets ending with +inf,
        sum, count) per labelled histogram."""
        samples: list[tuple[str, Mapping[str, str], Any]] = []
        for labels, buckets, total, count in series:
            samples.extend(("_bucket", {**labels, "le": _number(bound)}, n) for bound, n in buckets)
            samples.append(("_sum", labels, total))
            samples.append(("_count", labels, count))
        self.family(name, "histogram", help_text, samples)


def render_prometheus(metrics: Mapping[str, Any], *, worker: str, adapter: Mapping[str, Any] | None = None) -> str:
    """The metrics in the Prometheus text exposition format 0.0.4 (module docstring).

    Args:
        metrics: The engine's metrics dict (``TacticalSignalGenerator.metrics()``); the
            engine's state keys and ``denials`` are rendered when present.
        worker: The ``worker`` label of every sample.
        adapter: The bus adapter's counters (:data:`ADAPTER_KINDS`; other keys are
            ignored), or None.

    Returns:
        The exposition text, ending with a newline.

    Raises:
        KeyError: ``metrics`` lacks a key of the kernel's layout.
    """
    out = _Exposition(worker)
    out.scalar("l2fast_bars_total", "counter", "Signals emitted by the engine (one per bar).", metrics["bars"])
    out.labelled("l2fast_signals_total", "counter", "Signals emitted, by side.", "side", metrics["signals"])
    out.labelled("l2fast_reasons_total", "counter", "Signals emitted, by reasoning code.", "code", metrics["codes"])
    out.labelled("l2fast_denials_total", "counter", "Entries denied by the risk gate, by denial code.", "code",
                 metrics.get("denials", {}))
    out.scalar("l2fast_votes_total", "counter", "Bars whose model ensemble voted.", metrics["votes"])
    members = metrics["members"]
    for key, name, text in (("votes", "l2fast_member_votes_total", "Ensemble votes each member took part in."),
                            ("agree", "l2fast_member_agree_total",
                             "Votes in which the member's side was the ensemble's direction."),
                            ("failures", "l2fast_member_failures_total",
                             "Votes each member was left out of (failed run or bad output).")):
        out.labelled(name, "counter", text, "member", {m: v[key] for m, v in members.items()})
    for key, name, text in (("confidence", "l2fast_confidence_mean", "Mean confidence of the ensemble's votes."),
                            ("consensus", "l2fast_consensus_mean", "Mean consensus of the ensemble's votes.")):
        mean = metrics[key]["mean"]
        out.family(name, "gauge", text, [] if mean is None else [("", {}, mean)])
    conf = metrics["confidence"]
    cumulative, seen = [], 0
    for k, n in enumerate(conf["buckets"]):
        seen += n
        cumulative.append(((k + 1) / len(conf["buckets"]), seen))
    cumulative.append((math.inf, metrics["votes"]))
    out.histogram("l2fast_confidence", "Confidence of the ensemble's votes (buckets hold [le - 0.1, le)).",
                  [({}, cumulative, conf["sum"], metrics["votes"])])
    out.histogram("l2fast_stage_latency_seconds", "Per-bar latency of each engine stage, seconds.",
                  [({"stage": stage}, [(b, n) for b, n in h["buckets"]], h["sum_s"], h["count"])
                   for stage, h in metrics["latency"].items()])
    positions = metrics.get("positions")
    if positions is not None:
        out.scalar("l2fast_positions_active", "gauge", "Open positions.", positions["active"])
        out.scalar("l2fast_positions_max", "gauge", "Most open positions allowed at once.", positions["max"])
    for key, name, text in _GAUGES:
        if key in metrics:
            out.scalar(name, "gauge", text, metrics[key])
    if adapter is not None:
        out.labelled("l2fast_bus_messages_total", "counter", "Messages the bus adapter handled, by kind.", "kind",
                     {kind: adapter[kind] for kind in ADAPTER_KINDS if kind in adapter})
    return "\n".join(out.lines) + "\n"


# ------------------------------------------------------------------ HTTP server

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error"}
# Longest request or header line, most header lines, and the time a client has to send
# its request: a scraper sends a few short lines at once.
_LINE_LIMIT = 8_192
_MAX_HEADERS = 100
_REQUEST_TIMEOUT_S = 10.0


class _ClientGone(Exception):
    """The client closed its connection before the end of its request."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsServer:
    """A minimal HTTP/1.1 server of ``GET /metrics`` (asyncio, one response per connection).

    ``GET`` (or ``HEAD``) ``/metrics`` answers 200 with ``provider()``'s text and
    :data:`CONTENT_TYPE`; another path 404; another method on ``/metrics`` 405; a request
    line or header that is not HTTP/1.x 400; a provider that raises 500 (logged). The
    provider runs on the event loop's thread, so it reads the engine between two bars.

    Args:
        provider: Returns the exposition text (e.g. ``lambda: render_prometheus(gen.metrics(),
            worker="w1")``).
        host: Address to listen on; a loopback one (``127.0.0.1``, ``::1``, ``localhost``)
            unless ``allow_remote``.
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        allow_remote: Allow a non-loopback ``host`` (the metrics then leave the machine).

    Raises:
        ConfigError: ``host`` is not a loopback address and ``allow_remote`` is False, or
            ``port`` is not in [0, 65535].
    """

    def __init__(self, provider: Callable[[], str], host: str = "127.0.0.1", port: int = 0, *,
                 allow_remote: bool = False) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ConfigError(f"host={host!r}: not a loopback address; the metrics endpoint listens on this "
                              "machine only unless allow_remote=True")
        if type(port) is not int or not 0 <= port <= 65_535:
            raise ConfigError(f"port={port!r}: must be an integer in [0, 65535]")
        self.provider = provider
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; :attr:`port` is then the bound port."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_LINE_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening (a request being answered finishes on its own, within its timeout)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                    request = await self._read_request(reader)
            except ValueError:  # a line over the limit (StreamReader.readline's error)
                request = None
            writer.write(self._respond(request))
            await writer.drain()
        except (_ClientGone, TimeoutError, ConnectionError):
            pass  # the client went away or never finished its request: nothing to answer
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
        """(method, path) of the request, None if it is malformed.

        Raises:
            _ClientGone: The client closed the connection before the end of its request.
        """
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise _ClientGone
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            return None
        for _ in range(_MAX_HEADERS):
            header = await reader.readline()
            if not header.endswith(b"\n"):
                raise _ClientGone
            if header in (b"\r\n", b"\n"):
                return parts[0], urlsplit(parts[1]).path
            if b":" not in header:
                return None
        return None

    def _respond(self, request: tuple[str, str] | None) -> bytes:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if request is None:
            status, body = 400, b"bad request\n"
        elif request[1] != "/metrics":
            status, body = 404, b"not found: the metrics are at /metrics\n"
        elif request[0] not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed\n"
            headers["Allow"] = "GET, HEAD"
        else:
            try:
                status, body = 200, self.provider().encode("utf-8")
                headers["Content-Type"] = CONTENT_TYPE
            except Exception:
                logger.exception("metrics provider failed")
                status, body = 500, b"the metrics provider failed (see the worker's log)\n"
        headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        head = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if request is not None and request[0] == "HEAD":
            body = b""
        return head.encode("latin-1") + b"\r\n" + body


# ------------------------------------------------------------------ Redis hand-off

_NON_FINITE = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}


def _json_ready(node: Any) -> Any:
    if isinstance(node, float) and not math.isfinite(node):
        return _number(node)
    if isinstance(node, Mapping):
        return {k: _json_ready(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_json_ready(v) for v in node]
    return node


def _restored(node: Any) -> Any:
    if isinstance(node, str):
        return _NON_FINITE.get(node, node)
    if isinstance(node, dict):
        return {k: _restored(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_restored(v) for v in node]
    return node


def metrics_to_json(metrics: Mapping[str, Any]) -> str:
    """``metrics`` as strict JSON: non-finite floats (the +inf latency bound) are written
    as the strings ``"+Inf"``, ``"-Inf"``, ``"NaN"`` (Prometheus' spellings)."""
    return json.dumps(_json_ready(metrics), allow_nan=False, separators=(",", ":"))


def metrics_from_json(text: str | bytes) -> dict[str, Any]:
    """The inverse of :func:`metrics_to_json` (those strings back to floats).

    Raises:
        ValueError: ``text`` is not JSON or not an object.
    """
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"metrics JSON must be an object, got {type(data).__name__}")
    return _restored(data)


def metrics_key(prefix: str, worker: str) -> str:
    """The Redis key of a worker's metrics."""
    return f"{prefix}{METRICS_KEY}{worker}"


async def publish_metrics(client: Any, prefix: str, worker: str, metrics: Mapping[str, Any], ttl_s: int = 30) -> None:
    """SET a worker's metrics (:func:`metrics_to_json`) with a time to live.

    Call it more often than ``ttl_s`` (e.g. every 5 s): a worker that stops publishing
    disappears from the dashboard once its key expires.

    Args:
        client: A ``redis.asyncio.Redis`` client.
        prefix: The bus's key prefix.
        worker: The worker's name (non-empty).
        metrics: The engine's metrics dict.
        ttl_s: Seconds the entry lives (>= 1).

    Raises:
        ValueError: ``worker`` is empty or ``ttl_s`` < 1.
    """
    if not worker:
        raise ValueError("worker: a worker needs a non-empty name")
    if type(ttl_s) is not int or ttl_s < 1:
        raise ValueError(f"ttl_s={ttl_s!r}: must be an integer >= 1")
    await client.set(metrics_key(prefix, worker), metrics_to_json(metrics), ex=ttl_s)


def _glob_escape(text: str) -> str:
    # SCAN's MATCH is a glob pattern: a prefix holding * ? [ ] or \ must match literally.
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def read_metrics(client: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """Every live worker's metrics, by worker name (sorted).

    An entry that expires between the scan and the read is left out; one that is not a
    metrics object is left out with a warning on the ``l2fast.ops.monitoring`` logger.

    Args:
        client: A ``redis.asyncio.Redis`` client.
        prefix: The bus's key prefix.
    """
    head = f"{prefix}{METRICS_KEY}".encode()
    keys = sorted({key async for key in client.scan_iter(match=_glob_escape(prefix + METRICS_KEY) + "*")})
    if not keys:
        return {}
    found = {}
    for key, value in zip(keys, await client.mget(keys)):
        worker = (key if isinstance(key, bytes) else key.encode())[len(head):].decode("utf-8", "replace")
        if value is None:
            continue
        try:
            found[worker] = metrics_from_json(value)
        except ValueError as exc:
            logger.warning("%s: not a metrics entry: %s", key, exc)
    return found


# ------------------------------------------------------------------ several workers


def bucket_quantile(buckets: Sequence[Sequence[float]], q: float, max_s: float) -> float | None:
    """The q-quantile of cumulative ``[upper bound, count]`` buckets (+inf last), by the
    kernel's rule: the bound of the bucket holding rank max(1, ceil(q n)), ``max_s`` in the
    +inf bucket; None when empty."""
    count = buckets[-1][1]
    if count == 0:
        return None
    rank = max(1, math.ceil(q * count))
    for bound, seen in buckets:
        if seen >= rank:
            return max_s if math.isinf(bound) else bound
    return max_s


def _sum_counts(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            total[key] = total.get(key, 0) + n
    return total


def _merge_latency(hists: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    bounds = [b for b, _ in hists[0]["buckets"]]
    for h in hists[1:]:
        if [b for b, _ in h["buckets"]] != bounds:
            raise ValueError("merge_metrics: the workers' latency buckets differ (different l2fast builds)")
    buckets = [[b, sum(h["buckets"][i][1] for h in hists)] for i, b in enumerate(bounds)]
    max_s = max(h["max_s"] for h in hists)
    merged = {"count": sum(h["count"] for h in hists), "sum_s": sum(h["sum_s"] for h in hists), "max_s": max_s,
              "buckets": buckets}
    for q in (50, 95, 99):
        merged[f"p{q}_s"] = bucket_quantile(buckets, q / 100, max_s)
    return merged


def merge_metrics(workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several workers' metrics as one dict of the same layout.

    Counters, sums, buckets, positions, equity and gross exposure add up; means,
    agreements and latency quantiles are recomputed from the sums and buckets; the
    portfolio heat is the equity-weighted mean; ``halted`` is true if any worker halted.
    Engine keys are merged over the workers that have them.

    Raises:
        ValueError: No worker, or their latency buckets differ.
    """
    if not workers:
        raise ValueError("merge_metrics: no worker")
    votes = sum(w["votes"] for w in workers)
    conf_sum = sum(w["confidence"]["sum"] for w in workers)
    cons_sum = sum(w["consensus"]["sum"] for w in workers)
    members: dict[str, dict[str, Any]] = {}
    for w in workers:
        for name, m in w["members"].items():
            into = members.setdefault(name, {"votes": 0, "agree": 0, "agreement": None, "failures": 0})
            for key in ("votes", "agree", "failures"):
                into[key] += m[key]
    for m in members.values():
        m["agreement"] = m["agree"] / m["votes"] if m["votes"] else None
    merged: dict[str, Any] = {
        "bars": sum(w["bars"] for w in workers),
        "signals": _sum_counts(w["signals"] for w in workers),
        "codes": _sum_counts(w["codes"] for w in workers),
        "votes": votes,
        "confidence": {"mean": conf_sum / votes if votes else None, "sum": conf_sum,
                       "buckets": [sum(b) for b in zip(*(w["confidence"]["buckets"] for w in workers))]},
        "consensus": {"mean": cons_sum / votes if votes else None, "sum": cons_sum},
        "members": members,
        "latency": {stage: _merge_latency([w["latency"][stage] for w in workers]) for stage in workers[0]["latency"]},
    }
    with_state = [w for w in workers if "positions" in w]
    if with_state:
        equity = sum(w["equity"] for w in with_state)
        merged.update(
            positions={"active": sum(w["positions"]["active"] for w in with_state),
                       "max": sum(w["positions"]["max"] for w in with_state)},
            equity=equity,
            gross_exposure=sum(w["gross_exposure"] for w in with_state),
            portfolio_heat=sum(w["portfolio_heat"] * w["equity"] for w in with_state) / equity if equity else 0.0,
            halted=any(w["halted"] for w in with_state),
            entries_today=sum(w["entries_today"] for w in with_state),
        )
    if any("denials" in w for w in workers):
        merged["denials"] = _sum_counts(w.get("denials", {}) for w in workers)
    return merged

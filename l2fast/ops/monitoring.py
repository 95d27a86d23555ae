"""Monitoring: the engine's metrics for Prometheus (``prometheus_client``), a loopback
``/metrics`` endpoint, and the Redis hand-off that the dashboard reads.

- :class:`EngineCollector`: a ``prometheus_client`` collector of the engine's metrics dict
  (the layout of :mod:`l2fast.engine._telemetry`, plus the keys the engine adds:
  ``positions``, ``portfolio_heat``, ``equity``, ``gross_exposure``, ``halted``,
  ``entries_today``, ``denials``), every sample labelled ``worker``;
  :func:`render_prometheus` writes it in the text exposition format 0.0.4.
- :class:`MetricsServer`: ``prometheus_client``'s WSGI app answering ``GET /metrics`` on a
  loopback address unless told otherwise, the collector read on the event loop's thread.
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
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from l2fast.errors import ConfigError

__all__ = [
    "ADAPTER_KINDS",
    "BUS_FAULTS",
    "CONTENT_TYPE",
    "METRICS_HOST",
    "METRICS_KEY",
    "EngineCollector",
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

#: The Content-Type of the text exposition format 0.0.4 (what a scrape gets unless it asks
#: for OpenMetrics or the format 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Key of a worker's metrics after the prefix: ``<prefix>l2fast:metrics:<worker>``.
METRICS_KEY = "l2fast:metrics:"
#: The bus adapter's counters exposed as ``l2fast_bus_messages_total{kind}``.
ADAPTER_KINDS = ("decisions", "fills", "bars", "signals", "stale", "unauthenticated", "malformed", "refused", "dead")
#: The worker's Redis faults (``l2fast.bus.worker``) exposed as ``l2fast_bus_faults_total{fault}``.
BUS_FAULTS = ("redis_state_lost", "far_ahead_ids", "lease_retaken")

# ------------------------------------------------------------------ exposition


class EngineCollector(Collector):
    """The engine's metrics as Prometheus metric families (module docstring), every sample
    labelled ``worker``; a ``prometheus_client`` collector.

    ``collect()`` reads ``metrics()`` (and ``adapter()``) afresh on each call, so a registry
    holding the collector serves the engine's current numbers.

    Args:
        metrics: Returns the engine's metrics dict (``TacticalSignalGenerator.metrics``);
            the engine's state keys and ``denials`` are exposed when present.
        worker: The ``worker`` label of every sample.
        adapter: Returns the bus adapter's counters (:data:`ADAPTER_KINDS`; other keys
            are ignored), or None for no bus families.
    """

    def __init__(self, metrics: Callable[[], Mapping[str, Any]], *, worker: str,
                 adapter: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.metrics = metrics
        self.worker = worker
        self.adapter = adapter

    def describe(self) -> Iterator[Metric]:
        """Every family the collector may yield, without samples (``?name[]=`` filtering
        looks the names up here; nothing is read from the engine)."""
        for name, kind, text, _ in _FAMILIES:
            yield _FAMILY_TYPES[kind](name, text)

    def collect(self) -> Iterator[Metric]:
        """The families of the current metrics.

        Raises:
            KeyError: The metrics dict lacks a key of the kernel's layout.
        """
        metrics = self.metrics()
        adapter = None if self.adapter is None else self.adapter()
        for name, kind, text, series in _FAMILIES:
            found = series(metrics, adapter)
            if found is None:
                continue
            labels = sorted({k for labelled, _ in found for k in labelled})
            names = ["worker", *labels]
            if kind == "histogram":
                histogram = HistogramMetricFamily(name, text, labels=names)
                for labelled, (buckets, total) in found:
                    histogram.add_metric([self.worker, *(labelled[k] for k in labels)],
                                         [(floatToGoString(bound), n) for bound, n in buckets], total)
                yield histogram
                continue
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, text, labels=names)
            for labelled, value in found:
                family.add_metric([self.worker, *(labelled[k] for k in labels)], value)
            yield family


# A family's samples from (metrics, adapter): (labels, value) pairs, None to leave the
# family out; a histogram's value is (cumulative (upper bound, count) buckets ending with
# +inf, sum).
_Series = list[tuple[dict[str, str], Any]]


def _scalar(key: str) -> Callable[[Mapping[str, Any], Any], _Series | None]:
    return lambda m, _: [({}, m[key])] if key in m else None


def _by(label: str, key: str) -> Callable[[Mapping[str, Any], Any], _Series]:
    return lambda m, _: [({label: k}, v) for k, v in m[key].items()]


def _member(key: str) -> Callable[[Mapping[str, Any], Any], _Series]:
    return lambda m, _: [({"member": name}, v[key]) for name, v in m["members"].items()]


def _mean(key: str) -> Callable[[Mapping[str, Any], Any], _Series]:
    # Before the first vote the family has no sample (the mean is None).
    return lambda m, _: [] if m[key]["mean"] is None else [({}, m[key]["mean"])]


def _position(key: str) -> Callable[[Mapping[str, Any], Any], _Series | None]:
    return lambda m, _: None if m.get("positions") is None else [({}, m["positions"][key])]


def _confidence(m: Mapping[str, Any], _: Any) -> _Series:
    counts = m["confidence"]["buckets"]
    cumulative, seen = [], 0
    for k, n in enumerate(counts):
        seen += n
        cumulative.append(((k + 1) / len(counts), seen))
    cumulative.append((math.inf, m["votes"]))
    return [({}, (cumulative, m["confidence"]["sum"]))]


def _latency(m: Mapping[str, Any], _: Any) -> _Series:
    return [({"stage": stage}, ([(b, n) for b, n in h["buckets"]], h["sum_s"])) for stage, h in m["latency"].items()]


def _bus(_: Mapping[str, Any], adapter: Mapping[str, Any] | None) -> _Series | None:
    if adapter is None:
        return None
    return [({"kind": kind}, adapter[kind]) for kind in ADAPTER_KINDS if kind in adapter]


def _faults(_: Mapping[str, Any], adapter: Mapping[str, Any] | None) -> _Series | None:
    if adapter is None or not any(fault in adapter for fault in BUS_FAULTS):
        return None
    return [({"fault": fault}, adapter[fault]) for fault in BUS_FAULTS if fault in adapter]


_FAMILY_TYPES: dict[str, Callable[[str, str], Metric]] = {
    "counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
# (name, type, help, samples) in exposition order; counters are named without ``_total``
# (prometheus_client adds it).
_FAMILIES: tuple[tuple[str, str, str, Callable[[Mapping[str, Any], Any], _Series | None]], ...] = (
    ("l2fast_bars", "counter", "Signals emitted by the engine (one per bar).", lambda m, _: [({}, m["bars"])]),
    ("l2fast_signals", "counter", "Signals emitted, by side.", _by("side", "signals")),
    ("l2fast_reasons", "counter", "Signals emitted, by reasoning code.", _by("code", "codes")),
    ("l2fast_denials", "counter", "Entries denied by the risk gate, by denial code.",
     lambda m, _: [({"code": k}, v) for k, v in m.get("denials", {}).items()]),
    ("l2fast_votes", "counter", "Bars whose model ensemble voted.", lambda m, _: [({}, m["votes"])]),
    ("l2fast_member_votes", "counter", "Ensemble votes each member took part in.", _member("votes")),
    ("l2fast_member_agree", "counter", "Votes in which the member's side was the ensemble's direction.",
     _member("agree")),
    ("l2fast_member_failures", "counter", "Votes each member was left out of (failed run or bad output).",
     _member("failures")),
    ("l2fast_confidence_mean", "gauge", "Mean confidence of the ensemble's votes.", _mean("confidence")),
    ("l2fast_consensus_mean", "gauge", "Mean consensus of the ensemble's votes.", _mean("consensus")),
    ("l2fast_confidence", "histogram", "Confidence of the ensemble's votes (buckets hold [le - 0.1, le)).",
     _confidence),
    ("l2fast_stage_latency_seconds", "histogram", "Per-bar latency of each engine stage, seconds.", _latency),
    ("l2fast_positions_active", "gauge", "Open positions.", _position("active")),
    ("l2fast_positions_max", "gauge", "Most open positions allowed at once.", _position("max")),
    ("l2fast_equity", "gauge", "Equity, quote currency (open positions marked).", _scalar("equity")),
    ("l2fast_gross_exposure", "gauge", "Gross notional of the open positions, quote currency.",
     _scalar("gross_exposure")),
    ("l2fast_portfolio_heat", "gauge", "Portfolio heat: open risk as a fraction of equity.",
     _scalar("portfolio_heat")),
    ("l2fast_entries_today", "gauge", "Entries since the start of the UTC day.", _scalar("entries_today")),
    ("l2fast_halted", "gauge", "1 while the risk gate halts new entries (daily loss limit), else 0.",
     _scalar("halted")),
    ("l2fast_bus_messages", "counter", "Messages the bus adapter handled, by kind.", _bus),
    ("l2fast_bus_faults", "counter", "Redis faults the worker found and survived, by fault.", _faults),
)


def render_prometheus(metrics: Mapping[str, Any], *, worker: str, adapter: Mapping[str, Any] | None = None) -> str:
    """The metrics in the Prometheus text exposition format 0.0.4 (module docstring), as
    ``prometheus_client`` writes :class:`EngineCollector`'s families.

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
    collector = EngineCollector(lambda: metrics, worker=worker, adapter=None if adapter is None else lambda: adapter)
    return generate_latest(collector).decode("utf-8")


# ------------------------------------------------------------------ HTTP server

# Seconds a client has to send its request, and a scrape waits for the event loop.
_REQUEST_TIMEOUT_S = 10.0

#: Default address of the metrics endpoint: the loopback interface (the worker's, the CLI's).
METRICS_HOST = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _OnLoop:
    """A collector read on the event loop's thread, so that a scrape (answered on a
    thread of the HTTP server) reads the engine between two bars, never during one."""

    def __init__(self, collector: Collector, loop: asyncio.AbstractEventLoop) -> None:
        self.collector = collector
        self.loop = loop

    def describe(self) -> list[Metric]:
        describe = getattr(self.collector, "describe", None)
        return [] if describe is None else list(describe())

    def collect(self) -> list[Metric]:
        async def read() -> list[Metric]:
            return list(self.collector.collect())

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(_REQUEST_TIMEOUT_S)


class _Handler(WSGIRequestHandler):
    """The WSGI request handler, strict on the request (HTTP/1.x and well-formed headers,
    else 400), with a time limit to send it, logging through :mod:`logging`."""

    timeout = _REQUEST_TIMEOUT_S
    # An error before the request's version is known is answered with a status line (the
    # base class's default, HTTP/0.9, answers a bare body).
    default_request_version = "HTTP/1.0"

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3 or self.headers.defects:  # HTTP/0.9, or a line without a colon
            self.send_error(400, "Bad request: HTTP/1.x with well-formed headers expected")
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics endpoint %s: " + format, self.address_string(), *args)


class _Server(ThreadingWSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away or never finished its request is not an error of ours.
        if not isinstance(sys.exc_info()[1], (TimeoutError, ConnectionError)):
            logger.exception("metrics endpoint: request from %s failed", client_address)


def _only_metrics(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app`` (prometheus_client's, which answers any path and only GET) on ``/metrics``
    only, with HEAD, and a failing collector answered 500 and logged."""

    def only_metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def reply(status: str, body: bytes, *extra: tuple[str, str]) -> list[bytes]:
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *extra])
            return [body]

        method = environ["REQUEST_METHOD"]
        if environ.get("PATH_INFO") != "/metrics":
            return reply("404 Not Found", b"not found: the metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return reply("405 Method Not Allowed", b"method not allowed\n", ("Allow", "GET, HEAD"))
        answer: list[Any] = []
        try:
            body = b"".join(app({**environ, "REQUEST_METHOD": "GET"},
                                lambda status, headers, exc_info=None: answer.extend((status, headers))))
        except Exception:
            logger.exception("metrics collector failed")
            return reply("500 Internal Server Error", b"the metrics collector failed (see the worker's log)\n")
        start_response(answer[0], [*answer[1], ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    return only_metrics


class MetricsServer:
    """Serves a collector's metrics at ``GET /metrics`` with prometheus_client's WSGI app,
    on a loopback address unless told otherwise.

    ``GET`` (or ``HEAD``) ``/metrics`` answers 200 with the exposition (the text format
    0.0.4, :data:`CONTENT_TYPE`, unless the scraper asks for OpenMetrics; gzip if it
    accepts it; ``?name[]=`` selects families); another path 404; another method on
    ``/metrics`` 405; a request that is not HTTP/1.x with well-formed headers 400; a
    collector that raises 500 (logged). Requests are answered on threads of the server,
    but the collector runs on the event loop's thread (the one that called :meth:`start`),
    so it reads the engine between two bars.

    Args:
        collector: The metrics (e.g. ``EngineCollector(gen.metrics, worker="w1")``).
        host: Address to listen on; a loopback one (``127.0.0.1``, ``::1``, ``localhost``)
            unless ``allow_remote``.
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        allow_remote: Allow a non-loopback ``host`` (the metrics then leave the machine).

    Raises:
        ConfigError: ``host`` is not a loopback address and ``allow_remote`` is False, or
            ``port`` is not in [0, 65535].
    """

    def __init__(self, collector: Collector, host: str = METRICS_HOST, port: int = 0, *,
                 allow_remote: bool = False) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ConfigError(f"host={host!r}: not a loopback address; the metrics endpoint listens on this "
                              "machine only unless allow_remote=True")
        if type(port) is not int or not 0 <= port <= 65_535:
            raise ConfigError(f"port={port!r}: must be an integer in [0, 65535]")
        self.collector = collector
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Listen; :attr:`port` is then the bound port."""
        registry = CollectorRegistry()
        registry.register(_OnLoop(self.collector, asyncio.get_running_loop()))
        # The address family of the host (AF_INET6 for ::1), as start_http_server finds it.
        family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]

        class Server(_Server):
            address_family = family

        server = make_server(str(address[0]), self.port, _only_metrics(make_wsgi_app(registry)), Server,
                             handler_class=_Handler)
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="l2fast-metrics", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop listening (a request being answered finishes on its own thread)."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ------------------------------------------------------------------ Redis hand-off

_NON_FINITE = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}


def _json_ready(node: Any) -> Any:
    if isinstance(node, float) and not math.isfinite(node):
        return floatToGoString(node)  # +Inf, -Inf, NaN
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
        except (ValueError, RecursionError) as exc:  # anyone who may write the key may write anything
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

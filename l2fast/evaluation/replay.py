"""Replay: stream recorded bars through the engine and a paper L1, and summarise the run.

:func:`replay` merges the bars of every symbol in timestamp order (ties in the order the
streams are given, so bars of the same minute reach the engine together and the
correlation and risk-parity terms of the sizing see every symbol), and per bar:

1. installs the L3 decisions whose ``ts_ms`` the bar's open time has reached;
2. lets the :class:`~l2fast.evaluation.paper.PaperBroker` execute what the bar triggers (the order
   of the symbol's previous signal at this bar's open, then stop-loss/take-profit hits on
   its range; rules in :mod:`l2fast.evaluation.paper`) and reports each fill to the engine's
   ``on_fill`` (fee in quote currency) BEFORE the engine sees the bar;
3. calls the engine's ``on_bar`` (timed) and hands the signal to the broker;
4. writes the signal to ``out`` as a JSON line of :meth:`~l2fast.signals.TacticalSignal.to_dict`
   (buy and sell signals only, or every one with ``all_signals=True``).

The same engine configuration, bars, decisions and broker settings give byte-identical
``out`` and equal summaries (timings aside) on every run.

:func:`demo_config` is the configuration of ``l2fast demo``, the shipped example
``demo`` (``l2fast/data/examples/demo.toml``, printed by ``l2fast config --template demo``):
it lowers the seed's vote thresholds and fixes the Kelly inputs so that the shipped demo
agents, which have no edge, trade at all.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from l2fast.config import SYMBOL_PATTERN, L2Config
from l2fast.data import config_template, shipped_config
from l2fast.errors import InvalidDecisionError, InvalidInputError
from l2fast.evaluation.paper import FILL_REASONS, PaperBroker, Trade
from l2fast.signals import Side, StrategicDecision, TacticalSignal

if TYPE_CHECKING:
    from l2fast.engine.generator import TacticalSignalGenerator

__all__ = [
    "BarStream",
    "ReplaySummary",
    "default_decision",
    "demo_config",
    "demo_overrides",
    "format_trades",
    "iter_jsonl",
    "load_decisions",
    "merge_streams",
    "replay",
    "symbol_from_filename",
]

_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
# Bars converted to Python numbers at a time: bounded memory on long series.
_CHUNK = 8_192
# Quote currencies recognised at the end of a file name's first token (longest first
# where one ends another: BUSD before USD).
_QUOTES = ("USDT", "USDC", "BUSD", "USD", "EUR", "BTC", "ETH")


def demo_overrides() -> dict[str, dict[str, Any]]:
    """The settings the demo's configuration changes, as its TOML file writes them.

    The seed's thresholds (consensus 0.6, confidence 0.7, alignment 0.7) and the manifests'
    Kelly inputs let almost nothing through with the shipped demo agents, which have no
    edge; the demo's values make them trade, to show the whole pipeline at work.
    """
    return tomllib.loads(config_template("demo"))


def demo_config() -> L2Config:
    """The demo's configuration: the shipped example ``demo`` over the defaults."""
    return L2Config.from_toml(shipped_config("demo"))


@dataclass(frozen=True, slots=True)
class BarStream:
    """The bars of one symbol.

    Attributes:
        symbol: Trading pair (``"BTC/USDT"``).
        bars: Arrays keyed ``ts`` (int64 epoch ms, bar open time, increasing), ``open``,
            ``high``, ``low``, ``close``, ``volume``, as :func:`l2fast.technical.bars.load_bars_csv`
            returns them.
    """

    symbol: str
    bars: Mapping[str, np.ndarray]


def symbol_from_filename(path: str | os.PathLike[str]) -> str | None:
    """The symbol a bar file's name announces, or None.

    The name's first token (up to ``_``, ``-`` or ``.``) is split before a known quote
    currency (USDT, USDC, BUSD, USD, EUR, BTC, ETH): ``btcusdt_1m.csv.gz`` is ``BTC/USDT``,
    ``ethusdt.csv`` is ``ETH/USDT``; ``bars.csv`` gives None.
    """
    token = re.split(r"[_.\-]", Path(path).name, maxsplit=1)[0].upper()
    for quote in _QUOTES:
        if token.endswith(quote) and len(token) > len(quote):
            symbol = f"{token[: -len(quote)]}/{quote}"
            if SYMBOL_PATTERN.fullmatch(symbol):
                return symbol
    return None


def default_decision(symbols: Sequence[str]) -> StrategicDecision:
    """The decision of a replay without a decisions file: trending, exposure 0.5, moderate,
    the replayed symbols as universe, no ``ts_ms`` (never stale)."""
    return StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate",
                             universe=tuple(symbols))


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of each non-blank line of a JSONL file.

    Raises:
        OSError: The file cannot be read.
        InvalidInputError: A line is not JSON (file and line named).
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{lineno}: not JSON: {exc}") from None


def load_decisions(path: str | os.PathLike[str]) -> list[StrategicDecision]:
    """Read L3 decisions from a JSONL file (one :meth:`StrategicDecision.to_dict` per line).

    A decision is installed when the replay's bar time reaches its ``ts_ms``; a missing or
    null ``ts_ms`` installs it before the first bar. Blank lines are skipped.

    Raises:
        OSError: The file cannot be read.
        InvalidInputError: A line is not JSON, or the file holds no decision.
        InvalidDecisionError: A decision is invalid (the message names file and line).
    """
    decisions = []
    for lineno, data in iter_jsonl(path):
        try:
            decisions.append(StrategicDecision.from_dict(data))
        except InvalidDecisionError as exc:
            raise InvalidDecisionError(f"{path}:{lineno}: {exc}") from None
    if not decisions:
        raise InvalidInputError(f"{path}: no decision in the file")
    return decisions


# ------------------------------------------------------------------------ summary


def _percentiles_us(latency_ns: np.ndarray) -> dict[str, float] | None:
    if latency_ns.size == 0:
        return None
    p50, p95, p99 = np.percentile(latency_ns, [50, 95, 99]) / 1_000.0
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(latency_ns.max()) / 1_000.0}


def _drawdown(curve: Sequence[float]) -> tuple[float, float]:
    """Largest drop from a running peak of ``curve``: (fraction of the peak, amount)."""
    if not curve:
        return 0.0, 0.0
    equity = np.asarray(curve)
    peak = np.maximum.accumulate(equity)
    drop = peak - equity
    k = int(np.argmax(drop / peak))
    return float(drop[k] / peak[k]), float(drop[k])


def _utc(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did (:meth:`format` prints it; :meth:`to_dict` is JSON-safe).

    Attributes:
        symbols: The replayed symbols, in stream order.
        bars: Bars replayed in all; ``bars_by_symbol`` per symbol.
        first_ts_ms: Open time of the first bar (None without bars); ``last_ts_ms`` of the last.
        decisions_applied: L3 decisions installed.
        signals: Signals by side (``buy``, ``sell``, ``hold``).
        orders: Buy and sell signals by reasoning code (``ENTRY``, ``EXIT``).
        hold_codes: Holds by reasoning code.
        denials: Holds denied by the risk gate, by denial code.
        fills: The broker's fills by reason (``entry``, ``exit``, ``stop_loss``, ``take_profit``).
        ignored_signals: Buy/sell signals the broker could not act on (should be 0).
        trades: Closed positions; ``wins`` of them with a positive PnL; ``win_rate`` (None
            without trades).
        trades_by_symbol: Per symbol ``{"trades": n, "pnl": closed trades' PnL}``.
        initial_equity, final_equity: The broker's equity before and after (open
            positions marked at their last close); ``pnl`` their difference, ``pnl_pct``
            in percent of the initial equity.
        max_drawdown_pct: Largest drop of the marked equity (recorded after every bar)
            from its running peak, in percent; ``max_drawdown`` that drop in quote currency.
        fees: Fees paid, quote currency.
        open_positions, pending_orders: Left at the end of the replay.
        latency_us: ``on_bar`` latency percentiles (``p50``, ``p95``, ``p99``, ``max``, in
            microseconds) over ``"all"`` bars and over the ``"voted"`` ones (those that ran
            the model ensemble); None where there is no such bar.
        elapsed_s: Wall time of the replay loop; ``bars_per_s`` its throughput.
    """

    symbols: tuple[str, ...]
    bars: int
    bars_by_symbol: dict[str, int]
    first_ts_ms: int | None
    last_ts_ms: int | None
    decisions_applied: int
    signals: dict[str, int]
    orders: dict[str, int]
    hold_codes: dict[str, int]
    denials: dict[str, int]
    fills: dict[str, int]
    ignored_signals: int
    trades: int
    wins: int
    win_rate: float | None
    trades_by_symbol: dict[str, dict[str, float]]
    initial_equity: float
    final_equity: float
    pnl: float
    pnl_pct: float
    max_drawdown_pct: float
    max_drawdown: float
    fees: float
    open_positions: int
    pending_orders: int
    latency_us: dict[str, dict[str, float] | None]
    elapsed_s: float
    bars_per_s: float

    #: Fields that depend on the machine, not on the inputs.
    TIMING_FIELDS = ("latency_us", "elapsed_s", "bars_per_s")

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON types (``symbols`` as a list)."""
        data = asdict(self)
        data["symbols"] = list(self.symbols)
        return data

    def format(self) -> str:
        """A human-readable report, one topic per line."""
        lat = self.latency_us

        def latency(key: str) -> str:
            p = lat.get(key)
            if p is None:
                return "-"
            return f"p50 {p['p50']:.1f}, p95 {p['p95']:.1f}, p99 {p['p99']:.1f}, max {p['max']:.1f}"

        per_symbol = ", ".join(f"{s} {n:,}" for s, n in self.bars_by_symbol.items())
        win = "-" if self.win_rate is None else f"{self.win_rate:.1%}"
        by_symbol = ", ".join(f"{s} {int(t['trades'])} ({t['pnl']:+,.2f})" for s, t in self.trades_by_symbol.items())
        lines = [
            f"bars:        {self.bars:,} ({per_symbol}), {_utc(self.first_ts_ms)} to {_utc(self.last_ts_ms)} UTC",
            f"decisions:   {self.decisions_applied} applied",
            (f"signals:     {self.signals.get('buy', 0):,} buy, {self.signals.get('sell', 0):,} sell, "
             f"{self.signals.get('hold', 0):,} hold; orders: {_counts(self.orders)}"),
            f"holds:       {_counts(self.hold_codes)}",
            f"denials:     {_counts(self.denials)}",
            f"fills:       {_counts(self.fills)}; ignored signals {self.ignored_signals}",
            (f"trades:      {self.trades} closed, {self.wins} won (win rate {win}); "
             f"{self.open_positions} open, {self.pending_orders} pending order(s) at the end"),
            f"by symbol:   {by_symbol}",
            (f"equity:      {self.initial_equity:,.2f} -> {self.final_equity:,.2f}, "
             f"PnL {self.pnl:+,.2f} ({self.pnl_pct:+.3f}%), fees {self.fees:,.2f}"),
            f"drawdown:    max {self.max_drawdown_pct:.3f}% ({self.max_drawdown:,.2f}) of the marked equity",
            f"on_bar (us): all bars {latency('all')}",
            f"             bars that ran the models {latency('voted')}",
            f"throughput:  {self.bars:,} bars in {self.elapsed_s:.2f} s ({self.bars_per_s:,.0f} bars/s)",
        ]
        return "\n".join(lines)


def format_trades(trades: Sequence[Trade], limit: int = 10) -> str:
    """The first ``limit`` closed trades as a table (one line each)."""
    lines = [(f"{'symbol':<10} {'side':<5} {'qty':>10} {'entry (UTC)':<16} {'entry':>11} "
              f"{'exit (UTC)':<16} {'exit':>11} {'reason':<11} {'pnl':>9}")]
    for t in trades[:limit]:
        lines.append(f"{t.symbol:<10} {t.side:<5} {t.qty:>10.5f} {_utc(t.entry_ts_ms):<16} {t.entry_price:>11.2f} "
                     f"{_utc(t.exit_ts_ms):<16} {t.exit_price:>11.2f} {t.exit_reason:<11} {t.pnl:>+9.2f}")
    if len(trades) > limit:
        lines.append(f"... {len(trades) - limit} more")
    return "\n".join(lines)


# ------------------------------------------------------------------------ progress


class _Progress:
    """tqdm's bar when tqdm is installed (it is optional), else a counter on stderr."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
            self._step = max(total // 100, 1)
            self._next = self._step
        else:
            self._bar = tqdm(total=total, unit="bar", unit_scale=True, mininterval=0.5, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.done >= self._next or self.done == self.total:
            self._next = self.done + self._step
            print(f"\rreplay: {self.done:,}/{self.total:,} bars ({self.done / self.total:.0%})",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.total:
            print(file=sys.stderr)


# ------------------------------------------------------------------------ replay


def merge_streams(streams: Sequence[BarStream]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every stream's bars in the replay's order, (ts, stream order).

    Returns:
        The stream index of each merged bar and the merged columns (``ts``, ``open``,
        ``high``, ``low``, ``close``, ``volume``); bar ``k`` of a :func:`replay` is row
        ``k`` here.
    """
    ts = np.concatenate([np.asarray(s.bars["ts"], dtype=np.int64) for s in streams])
    which = np.concatenate([np.full(len(s.bars["ts"]), k, dtype=np.int64) for k, s in enumerate(streams)])
    order = np.lexsort((which, ts))  # the last key is the primary one
    columns = {name: np.concatenate([np.asarray(s.bars[name]) for s in streams])[order] for name in _COLUMNS}
    return which[order], columns


def replay(gen: TacticalSignalGenerator, streams: Sequence[BarStream],
           decisions: Sequence[StrategicDecision] | None = None, broker: PaperBroker | None = None, *,
           out: TextIO | None = None, all_signals: bool = False, progress: bool = False,
           on_signal: Callable[[int, TacticalSignal, int], None] | None = None) -> ReplaySummary:
    """Replay ``streams`` through ``gen`` and ``broker`` (module docstring) and summarise.

    Args:
        gen: The engine (anything with ``on_strategic_decision``, ``on_fill`` and
            ``on_bar`` like :class:`~l2fast.engine.generator.TacticalSignalGenerator`).
        streams: One :class:`BarStream` per symbol, symbols distinct.
        decisions: L3 decisions, installed when the bar time reaches their ``ts_ms``
            (None: before the first bar); None means :func:`default_decision` over the
            streams' symbols.
        broker: The paper L1; None means a :class:`~l2fast.evaluation.paper.PaperBroker` with the
            engine's ``engine.initial_equity`` and the default fee and slippage.
        out: Where to write the signals as JSON lines (None: nowhere).
        all_signals: Write holds too (else only buy and sell signals).
        progress: Show a progress bar on stderr.
        on_signal: Called after every bar, once the broker has taken the signal, with the
            bar's index in :func:`merge_streams` order, the engine's signal and the
            ``on_bar`` latency in nanoseconds (for evaluations that need more than the
            summary, e.g. :mod:`l2fast.evaluation.backtest`).

    Returns:
        The :class:`ReplaySummary`; the broker keeps the fills, trades and equity curve.

    Raises:
        ValueError: No stream, or two streams of the same symbol.
        InvalidBarError: A bar is invalid (from the engine).
    """
    symbols = tuple(s.symbol for s in streams)
    if not symbols:
        raise ValueError("replay: no bar stream given")
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"replay: symbols must be distinct, got {list(symbols)}")
    if decisions is None:
        decisions = [default_decision(symbols)]
    if broker is None:
        broker = PaperBroker(gen.config.engine.initial_equity)
    # sorted() is stable: decisions due at the same time are installed in the given order.
    schedule = sorted(decisions, key=lambda d: -1 if d.ts_ms is None else d.ts_ms)
    due = [-1 if d.ts_ms is None else d.ts_ms for d in schedule]
    which, columns = merge_streams(streams)
    n = len(which)
    latency = np.zeros(n, dtype=np.int64)
    voted = np.zeros(n, dtype=bool)
    signals = {"buy": 0, "sell": 0, "hold": 0}
    orders: dict[str, int] = {}
    hold_codes: dict[str, int] = {}
    denials: dict[str, int] = {}
    applied = 0
    bar_fill, signal_fill, on_bar = broker.on_bar, broker.on_signal, gen.on_bar
    on_fill, now = gen.on_fill, time.perf_counter_ns
    hold = Side.HOLD
    bar_progress = _Progress(n) if progress else None
    start = time.perf_counter()
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        chunk = [columns[name][lo:hi].tolist() for name in _COLUMNS]
        names = [symbols[k] for k in which[lo:hi].tolist()]
        for k, (symbol, ts, o, h, l, c, v) in enumerate(zip(names, *chunk), lo):
            while applied < len(schedule) and due[applied] <= ts:
                gen.on_strategic_decision(schedule[applied])
                applied += 1
            for fill in bar_fill(symbol, ts, o, h, l, c):
                on_fill(fill.symbol, fill.side, fill.qty, fill.price, fill.ts_ms, fee=fill.fee)
            t0 = now()
            sig = on_bar(symbol, ts, o, h, l, c, v)
            latency[k] = elapsed_ns = now() - t0
            signal_fill(sig)
            if on_signal is not None:
                on_signal(k, sig, elapsed_ns)
            # The counts need three facts of the reasoning, not the dict: a lazy signal
            # builds it only when written out (or read by on_signal).
            code, voted[k], denial = sig._brief()
            if sig.side is hold:
                signals["hold"] += 1
                hold_codes[code] = hold_codes.get(code, 0) + 1
                if denial is not None:
                    denials[denial] = denials.get(denial, 0) + 1
                if not all_signals:
                    continue
            else:
                signals[sig.side.value] += 1
                orders[code] = orders.get(code, 0) + 1
            if out is not None:
                out.write(json.dumps(sig.to_dict(), allow_nan=False, separators=(",", ":")) + "\n")
        if bar_progress is not None:
            bar_progress.update(hi - lo)
    elapsed = time.perf_counter() - start
    if bar_progress is not None:
        bar_progress.close()
    return _summarise(symbols, which, columns["ts"], applied, signals, orders, hold_codes, denials,
                      broker, latency, voted, elapsed)


def _summarise(symbols: tuple[str, ...], which: np.ndarray, ts: np.ndarray, applied: int,
               signals: dict[str, int], orders: dict[str, int], hold_codes: dict[str, int],
               denials: dict[str, int], broker: PaperBroker, latency: np.ndarray, voted: np.ndarray,
               elapsed: float) -> ReplaySummary:
    n = len(which)
    per_symbol = np.bincount(which, minlength=len(symbols))
    fills = dict.fromkeys(FILL_REASONS, 0)
    for fill in broker.fills:
        fills[fill.reason] += 1
    by_symbol = {s: {"trades": 0, "pnl": 0.0} for s in symbols}
    for trade in broker.trades:
        by_symbol[trade.symbol]["trades"] += 1
        by_symbol[trade.symbol]["pnl"] += trade.pnl
    wins = sum(1 for t in broker.trades if t.pnl > 0.0)
    final = broker.equity
    dd_pct, dd = _drawdown(broker.equity_curve)
    return ReplaySummary(
        symbols=symbols, bars=n,
        bars_by_symbol={s: int(per_symbol[k]) for k, s in enumerate(symbols)},
        first_ts_ms=int(ts[0]) if n else None, last_ts_ms=int(ts[-1]) if n else None,
        decisions_applied=applied, signals=signals, orders=dict(sorted(orders.items())),
        hold_codes=dict(sorted(hold_codes.items())), denials=dict(sorted(denials.items())),
        fills=fills, ignored_signals=broker.ignored_signals,
        trades=len(broker.trades), wins=wins,
        win_rate=wins / len(broker.trades) if broker.trades else None,
        trades_by_symbol=by_symbol,
        initial_equity=broker.initial_equity, final_equity=final,
        pnl=final - broker.initial_equity,
        pnl_pct=(final - broker.initial_equity) / broker.initial_equity * 100.0,
        max_drawdown_pct=dd_pct * 100.0, max_drawdown=dd, fees=broker.fees,
        open_positions=len(broker.positions), pending_orders=len(broker.pending),
        latency_us={"all": _percentiles_us(latency), "voted": _percentiles_us(latency[voted])},
        elapsed_s=elapsed, bars_per_s=n / elapsed if elapsed > 0 else 0.0,
    )

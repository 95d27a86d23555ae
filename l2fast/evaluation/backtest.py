"""Backtest evaluation: :func:`run_benchmark` replays a test period and measures it honestly.

What one run does, per strategy:

1. Bars: for each symbol, the 1-minute bars of the period (``data`` is a folder of
   ``<base><quote>_1m*.csv[.gz]`` files, e.g. ``btcusdt_1m.csv.gz``, or the bars
   themselves) and, for warm-up, the bars just before it.
2. Warm-up: a fresh engine sees ``warmup_bars`` bars per symbol (default: the engine's
   own minimum, its largest member ``lookback``) with NO L3 decision installed, so it
   builds its technical state and cannot trade. Taken from the bars before the period;
   when the data has fewer (a file that starts with the period, like the holdout), the
   first bars of the period complete the warm-up and the evaluation starts after them
   (:attr:`BenchmarkResult.first_ts_ms` says where). Every strategy is evaluated on the
   same bars.
3. Evaluation: the L3 decision (default: :func:`l2fast.evaluation.replay.default_decision`) is
   installed and the bars are replayed through the engine and a fresh
   :class:`~l2fast.evaluation.paper.PaperBroker` (fills at the next bar's open with fee and
   slippage, stops and take-profits on the bar's range) by :func:`l2fast.evaluation.replay.replay`.

Strategies: ``ensemble`` (the configuration as given), each member with a positive
weight traded alone (``model.weights`` holding only that member), ``no_technical`` (the
ensemble with ``model.technical_weight = 0``) and ``buy_and_hold`` (the initial equity
split equally over the symbols, each bought at its first evaluated bar's open with the
same fee and slippage, then held; marked at every close).

Metrics (formulas in :mod:`l2fast.evaluation.performance`):

- Equity is sampled after every minute (once every symbol's bar of that minute was
  processed), starting from the initial equity. Sharpe and Sortino use the simple
  1-minute returns of that curve annualised by ``sqrt(525,600)`` (a 24/7, 365-day year);
  ``sharpe_daily`` uses UTC-day returns (the equity after each day's last minute; a
  partial first or last day counts as a day) annualised by ``sqrt(365)``. Calmar is the
  period's compound return annualised to 525,600 minutes over the max drawdown.
- Exposure is the mean of open notional over equity per minute; time in market the
  share of minutes ending with a position; turnover the traded notional over the mean
  equity; trades, win rate and profit factor count closed trades.
- Signal accuracy: each buy or sell signal is a call that the close moves its way; it is
  a hit at horizon ``h`` (:data:`HORIZONS`) when the symbol's close ``h`` minutes
  after the signal's bar is beyond the signal bar's close in the signal's direction
  (:func:`l2fast.evaluation.performance.directional_hits`). ``signals`` covers the buy/sell signals the
  engine emitted; ``votes`` every bar whose fused vote had a direction, gates passed or
  not (far more calls: the ensemble's directional skill before its gates). Both report
  the mean confidence and consensus and the calibration (hit rate by confidence decile).
- Latency: ``on_bar`` percentiles per bar (all bars, and those that ran the models);
  denials: the risk gate's denials by code.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2fast.config import REGIMES, SYMBOL_PATTERN, L2Config
from l2fast.errors import InvalidInputError
from l2fast.evaluation import performance as metrics
from l2fast.evaluation.paper import DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS, PaperBroker
from l2fast.evaluation.replay import BarStream, default_decision, merge_streams, replay, symbol_from_filename
from l2fast.signals import Side, StrategicDecision, TacticalSignal
from l2fast.technical.bars import load_bars_csv

if TYPE_CHECKING:
    from l2fast.engine.generator import TacticalSignalGenerator
    from l2fast.keys import Signer

__all__ = [
    "DATA_DIR_ENV",
    "HORIZONS",
    "BenchmarkResult",
    "Period",
    "SignalStats",
    "StrategyResult",
    "comparison_rows",
    "find_bar_files",
    "load_symbol_bars",
    "run_benchmark",
    "strategy_configs",
]

#: Hit-rate horizons, minutes.
HORIZONS: tuple[int, ...] = (5, 15, 60)
#: Environment variable naming the data folder when ``data`` is None.
DATA_DIR_ENV = "L2FAST_DATA_DIR"

_DAY_MS = 86_400_000
_MINUTE_MS = 60_000
_BAR_FILE = re.compile(r"[A-Za-z0-9]+_1m(?:[_\-.][^/]*)?\.csv(?:\.gz)?")
_PERIOD = re.compile(r"(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class Period:
    """A test period: bars whose open time is in ``[start_ms, end_ms)``.

    Attributes:
        start_ms: First included open time (epoch ms UTC).
        end_ms: First excluded open time.
    """

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.start_ms >= self.end_ms:
            raise InvalidInputError(f"period: start {_utc(self.start_ms)} must be before end {_utc(self.end_ms)}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"YYYY-MM-DD_YYYY-MM-DD"``: both UTC days included (``2025-05-20_2025-08-18``
        runs from 2025-05-20 00:00 to 2025-08-18 23:59).

        Raises:
            InvalidInputError: The text is not two dates joined by ``_``, a date does not
                exist, or the last day is before the first.
        """
        match = _PERIOD.fullmatch(text.strip())
        if match is None:
            raise InvalidInputError(f"period {text!r}: expected YYYY-MM-DD_YYYY-MM-DD (both days included, UTC)")
        try:
            first, last = (date.fromisoformat(d) for d in match.groups())
        except ValueError as exc:
            raise InvalidInputError(f"period {text!r}: {exc}") from None
        if last < first:
            raise InvalidInputError(f"period {text!r}: the last day is before the first")
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        return cls(_ms(start), _ms(end))

    @property
    def label(self) -> str:
        """The period as ``YYYY-MM-DD_YYYY-MM-DD`` when it spans whole days, else its bounds."""
        if self.start_ms % _DAY_MS == 0 and self.end_ms % _DAY_MS == 0:
            return f"{_day(self.start_ms)}_{_day(self.end_ms - _DAY_MS)}"
        return f"{_utc(self.start_ms)} to {_utc(self.end_ms)} (excluded)"


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def _utc(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def find_bar_files(data_dir: str | os.PathLike[str], symbol: str) -> list[Path]:
    """The 1-minute bar files of ``symbol`` in ``data_dir`` (not its sub-folders), by name.

    A file belongs to ``BTC/USDT`` when its name is ``btcusdt_1m`` followed by nothing or
    by ``_``/``-``/``.`` and more, then ``.csv`` or ``.csv.gz`` (case-insensitive):
    ``btcusdt_1m.csv.gz`` and ``btcusdt_1m_2025.csv.gz`` do, ``btcusdt_1h_2017-2024.csv.gz``
    does not.
    """
    folder = Path(data_dir)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and _BAR_FILE.fullmatch(p.name) and symbol_from_filename(p) == symbol)


def load_symbol_bars(data_dir: str | os.PathLike[str], symbol: str) -> dict[str, np.ndarray]:
    """Every 1-minute bar of ``symbol`` in ``data_dir``: its files (:func:`find_bar_files`)
    loaded, validated and concatenated in time order.

    Raises:
        InvalidInputError: No file for the symbol, a file is unreadable or invalid, or two
            files hold the same minute.
    """
    files = find_bar_files(data_dir, symbol)
    if not files:
        pair = symbol.replace("/", "").lower()
        raise InvalidInputError(f"{data_dir}: no 1-minute bar file for {symbol} "
                                f"(expected a name like {pair}_1m.csv.gz)")
    parts = []
    for path in files:
        try:
            parts.append(load_bars_csv(path))
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(parts) == 1:
        return parts[0]
    bars = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(bars["ts"], kind="stable")
    bars = {k: v[order] for k, v in bars.items()}
    if np.any(np.diff(bars["ts"]) == 0):
        raise InvalidInputError(f"{data_dir}: the files of {symbol} ({', '.join(p.name for p in files)}) overlap")
    return bars


def strategy_configs(config: L2Config) -> list[tuple[str, str, L2Config]]:
    """The engine strategies of a benchmark: ``(name, label, config)`` per strategy.

    ``ensemble`` is ``config``; each member with a positive weight traded alone keeps
    everything but ``model.weights`` (that member only) and its regime multipliers (1:
    a lone member gets the whole model share whatever its multiplier); ``no_technical``
    reads no technical vote anywhere: ``model.technical_weight`` 0 (the fused score is the
    models'), ``model.alignment_threshold`` 0 (no alignment gate) and
    ``model.confidence_weights`` on the members' confidence alone.
    """
    out = [("ensemble", "ensemble", config)]
    base = config.to_dict()
    for member, weight in config.model.weights.items():
        if weight <= 0.0:
            continue
        data = config.to_dict()
        data["model"]["weights"] = {member: 1.0}
        data["model"]["regime_multipliers"] = {regime: {member: 1.0} for regime in REGIMES}
        out.append((member, f"{member} alone", L2Config.from_dict(data)))
    base["model"]["technical_weight"] = 0.0
    base["model"]["alignment_threshold"] = 0.0
    base["model"]["confidence_weights"] = {"model": 1.0, "technical": 0.0, "alignment": 0.0}
    out.append(("no_technical", "ensemble, no technical votes", L2Config.from_dict(base)))
    return out


# ------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class SignalStats:
    """Directional calls and how they turned out (module docstring).

    Attributes:
        count: Calls.
        hit_rate: Per horizon (minutes), the share of hits among the calls with a known
            outcome; None if there is none.
        evaluated: Per horizon, the calls with a known outcome; ``hits`` how many of them hit.
        mean_confidence: Mean confidence of the calls (None without calls).
        mean_consensus: Mean consensus of the calls.
        calibration: Per horizon, the hit rate by confidence decile.
    """

    count: int
    hit_rate: dict[int, float | None]
    evaluated: dict[int, int]
    hits: dict[int, int]
    mean_confidence: float | None
    mean_consensus: float | None
    calibration: dict[int, list[metrics.CalibrationBin]]


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """One strategy's run over the evaluated bars.

    Attributes:
        name: ``ensemble``, a member's name, ``no_technical`` or ``buy_and_hold``.
        label: Human-readable name.
        initial_equity, final_equity: Equity before the first bar and after the last
            (open positions marked at their last close); ``total_return`` the change as a
            fraction.
        sharpe, sortino: Annualised from 1-minute returns; ``sharpe_daily`` from UTC-day
            returns; ``annual_return`` the compound return annualised; ``calmar`` that over
            ``max_drawdown`` (a fraction of the peak). None where undefined.
        exposure, time_in_market, turnover: See the module docstring.
        fees: Fees paid, quote currency.
        trades: Closed trades; ``win_rate`` and ``profit_factor`` over them.
        signals: Stats of the emitted buy/sell signals; ``votes`` of the directional
            votes (None for buy-and-hold).
        orders: Buy/sell signals by code (``ENTRY``, ``EXIT``); ``denials`` the risk
            gate's denials by code; ``hold_codes`` holds by code.
        latency_us: ``on_bar`` percentiles (``"all"`` and ``"voted"`` bars; None for
            buy-and-hold).
        replay_s: Wall time of the evaluation replay.
        minute_ts: Open time of each evaluated minute (arrays below are not in
            :meth:`BenchmarkResult.to_dict`).
        equity: Equity before the first minute, then after each minute (one longer).
        latency_ns: ``on_bar`` latency of each bar (empty for buy-and-hold).
    """

    name: str
    label: str
    initial_equity: float
    final_equity: float
    total_return: float
    sharpe: float | None
    sharpe_daily: float | None
    sortino: float | None
    max_drawdown: float
    annual_return: float | None
    calmar: float | None
    exposure: float | None
    time_in_market: float | None
    turnover: float | None
    fees: float
    trades: int
    win_rate: float | None
    profit_factor: float | None
    signals: SignalStats | None
    votes: SignalStats | None
    orders: dict[str, int]
    denials: dict[str, int]
    hold_codes: dict[str, int]
    latency_us: dict[str, dict[str, float] | None] | None
    replay_s: float
    minute_ts: np.ndarray = field(repr=False)
    equity: np.ndarray = field(repr=False)
    latency_ns: np.ndarray = field(repr=False)

    #: Array fields left out of :meth:`to_dict`.
    ARRAYS = ("minute_ts", "equity", "latency_ns")

    def to_dict(self) -> dict[str, Any]:
        """The scalars and tables as JSON types (the arrays left out)."""
        data = {k: v for k, v in asdict(self).items() if k not in self.ARRAYS}
        for key in ("signals", "votes"):
            if data[key] is not None:
                stats = data[key]
                stats["hit_rate"] = {str(h): v for h, v in stats["hit_rate"].items()}
                stats["evaluated"] = {str(h): v for h, v in stats["evaluated"].items()}
                stats["hits"] = {str(h): v for h, v in stats["hits"].items()}
                stats["calibration"] = {str(h): v for h, v in stats["calibration"].items()}
        return data


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """What :func:`run_benchmark` measured.

    Attributes:
        period: The requested test period.
        symbols: The symbols, in replay order.
        first_ts_ms, last_ts_ms: Open times of the first and last evaluated bars (the
            first is later than the period's start when the warm-up had to use the
            period's first bars).
        bars_by_symbol: Evaluated bars per symbol.
        warmup_bars: Warm-up bars per symbol; ``warmup_in_period`` how many of them come
            from the period itself (not evaluated).
        fee_bps, slippage_bps: The paper L1's costs.
        models_dir: The models folder.
        decision: The L3 decision, as its dict.
        config: The ensemble's configuration (``L2Config.to_dict``).
        strategies: One result per strategy: ensemble, members alone, no_technical,
            buy_and_hold.
        elapsed_s: Wall time of the whole benchmark.
    """

    period: Period
    symbols: tuple[str, ...]
    first_ts_ms: int
    last_ts_ms: int
    bars_by_symbol: dict[str, int]
    warmup_bars: int
    warmup_in_period: dict[str, int]
    fee_bps: float
    slippage_bps: float
    models_dir: str
    decision: dict[str, Any]
    config: dict[str, Any]
    strategies: tuple[StrategyResult, ...]
    elapsed_s: float

    def strategy(self, name: str) -> StrategyResult:
        """The result of the strategy ``name``.

        Raises:
            KeyError: No such strategy.
        """
        for result in self.strategies:
            if result.name == name:
                return result
        raise KeyError(f"no strategy {name!r} (have {[s.name for s in self.strategies]})")

    @property
    def ensemble(self) -> StrategyResult:
        """The ensemble's result."""
        return self.strategy("ensemble")

    @property
    def buy_and_hold(self) -> StrategyResult:
        """Buy-and-hold's result."""
        return self.strategy("buy_and_hold")

    @property
    def members(self) -> tuple[StrategyResult, ...]:
        """The results of the members traded alone."""
        return tuple(s for s in self.strategies if s.name not in ("ensemble", "no_technical", "buy_and_hold"))

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON types (the per-minute arrays left out)."""
        return {
            "period": {"label": self.period.label, "start_ms": self.period.start_ms, "end_ms": self.period.end_ms},
            "symbols": list(self.symbols), "first_ts_ms": self.first_ts_ms, "last_ts_ms": self.last_ts_ms,
            "bars_by_symbol": self.bars_by_symbol, "warmup_bars": self.warmup_bars,
            "warmup_in_period": self.warmup_in_period, "fee_bps": self.fee_bps,
            "slippage_bps": self.slippage_bps, "models_dir": self.models_dir, "decision": self.decision,
            "config": self.config, "strategies": [s.to_dict() for s in self.strategies],
            "elapsed_s": self.elapsed_s,
        }

    def format(self) -> str:
        """A plain-text report: the strategies side by side, then latency and denials."""
        rows = comparison_rows(self.strategies)
        names = [s.name for s in self.strategies]
        width = max(12, *(len(n) for n in names))
        head = f"{'':<24}" + "".join(f" {n:>{width}}" for n in names)
        lines = [head] + [f"{label:<24}" + "".join(f" {c:>{width}}" for c in cells) for label, cells in rows]
        lat = self.ensemble.latency_us or {}
        for key, what in (("all", "every bar"), ("voted", "bars that ran the models")):
            p = lat.get(key)
            if p is not None:
                lines.append(f"ensemble on_bar latency, {what}: p50 {p['p50']:.1f} us, p95 {p['p95']:.1f} us, "
                             f"p99 {p['p99']:.1f} us, max {p['max']:.1f} us")
        denials = self.ensemble.denials
        text = ", ".join(f"{k} {v:,}" for k, v in sorted(denials.items(), key=lambda kv: -kv[1])) or "none"
        lines.append(f"ensemble risk denials: {text}")
        return "\n".join(lines)


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def comparison_rows(strategies: Sequence[StrategyResult]) -> list[tuple[str, list[str]]]:
    """The strategies side by side: ``(metric label, one formatted cell per strategy)`` rows.

    Hit cells read ``rate (calls with a known outcome)``; ``-`` marks an undefined value.
    """
    def row(label: str, cell: Any) -> tuple[str, list[str]]:
        return label, [cell(s) for s in strategies]

    def hits(s: StrategyResult, h: int, which: str) -> str:
        stats = getattr(s, which)
        if stats is None:
            return "-"
        rate = stats.hit_rate[h]
        return "-" if rate is None else f"{rate * 100:.1f}% ({stats.evaluated[h]:,})"

    def mean(s: StrategyResult, attr: str) -> str:
        return "-" if s.signals is None else _num(getattr(s.signals, attr), 3)

    return [
        row("total return", lambda s: _pct(s.total_return)),
        row("Sharpe (1m, annualised)", lambda s: _num(s.sharpe)),
        row("Sharpe (daily, ann.)", lambda s: _num(s.sharpe_daily)),
        row("Sortino (1m, ann.)", lambda s: _num(s.sortino)),
        row("max drawdown", lambda s: _pct(s.max_drawdown)),
        row("Calmar", lambda s: _num(s.calmar)),
        row("trades (closed)", lambda s: f"{s.trades:,}"),
        row("win rate", lambda s: _pct(s.win_rate, 1)),
        row("profit factor", lambda s: _num(s.profit_factor)),
        row("exposure", lambda s: _pct(s.exposure)),
        row("time in market", lambda s: _pct(s.time_in_market, 1)),
        row("turnover (x equity)", lambda s: _num(s.turnover)),
        row("fees", lambda s: f"{s.fees:,.2f}"),
        row("buy/sell signals", lambda s: "-" if s.signals is None else f"{s.signals.count:,}"),
        *(row(f"signal hits {h}m", lambda s, h=h: hits(s, h, "signals")) for h in HORIZONS),
        row("signal mean confidence", lambda s: mean(s, "mean_confidence")),
        row("signal mean consensus", lambda s: mean(s, "mean_consensus")),
        row("directional votes", lambda s: "-" if s.votes is None else f"{s.votes.count:,}"),
        *(row(f"vote hits {h}m", lambda s, h=h: hits(s, h, "votes")) for h in HORIZONS),
    ]


# ------------------------------------------------------------------------ recording


class _Recorder:
    """The per-bar record of a replay (its ``on_signal`` hook): calls, exposure, latency."""

    def __init__(self, which: np.ndarray, close: np.ndarray, symbols: Sequence[str], broker: PaperBroker) -> None:
        n = len(which)
        self._symbols = [symbols[k] for k in which.tolist()]
        self._close = close.tolist()
        self._broker = broker
        self._marks: dict[str, float] = {}
        self.gross = np.zeros(n)
        self.latency = np.zeros(n, dtype=np.int64)
        self.signal_side = np.zeros(n, dtype=np.int8)
        self.signal_confidence = np.full(n, np.nan)
        self.signal_consensus = np.full(n, np.nan)
        self.vote_side = np.zeros(n, dtype=np.int8)
        self.vote_confidence = np.full(n, np.nan)
        self.vote_consensus = np.full(n, np.nan)

    def __call__(self, k: int, signal: TacticalSignal, latency_ns: int) -> None:
        self.latency[k] = latency_ns
        # The broker marks the bar's symbol at its close: mark the same way.
        self._marks[self._symbols[k]] = self._close[k]
        positions = self._broker.positions
        if positions:
            marks = self._marks
            self.gross[k] = sum(p.qty * marks[s] for s, p in positions.items())
        if signal.side is not Side.HOLD:
            self.signal_side[k] = 1 if signal.side is Side.BUY else -1
            self.signal_confidence[k] = signal.confidence
            self.signal_consensus[k] = signal.consensus
        vote = signal.reasoning.get("vote")
        if vote is not None and vote["direction"] != "hold":
            self.vote_side[k] = 1 if vote["direction"] == "buy" else -1
            self.vote_confidence[k] = _finite(vote["confidence"])
            self.vote_consensus[k] = _finite(vote["consensus"])


def _finite(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _signal_stats(side: np.ndarray, confidence: np.ndarray, consensus: np.ndarray, which: np.ndarray,
                  streams: Sequence[BarStream]) -> SignalStats:
    """Hit rates, means and calibration of the calls ``side != 0`` of the merged bars."""
    calls = np.flatnonzero(side)
    hits = {h: np.full(calls.size, np.nan) for h in HORIZONS}
    for k, stream in enumerate(streams):
        mine = which[calls] == k
        # Position of each merged bar inside its own stream: the streams' bars keep their
        # order in the merge.
        position = np.cumsum(which == k) - 1
        index = position[calls[mine]]
        for h in HORIZONS:
            hits[h][mine] = metrics.directional_hits(stream.bars["ts"], stream.bars["close"], index,
                                                     side[calls[mine]], h)
    conf = confidence[calls]
    return SignalStats(
        count=int(calls.size),
        hit_rate={h: metrics.hit_rate(hits[h]) for h in HORIZONS},
        evaluated={h: int(np.count_nonzero(~np.isnan(hits[h]))) for h in HORIZONS},
        hits={h: int(np.nansum(hits[h])) for h in HORIZONS},
        mean_confidence=_nanmean(conf), mean_consensus=_nanmean(consensus[calls]),
        # A call without a confidence (a NaN vote) has no place in a confidence decile.
        calibration={h: metrics.calibration(conf, np.where(np.isnan(conf), np.nan, hits[h])) for h in HORIZONS},
    )


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


# ------------------------------------------------------------------------ metrics


def _minute_ends(ts: np.ndarray) -> np.ndarray:
    """Index of the last merged bar of each minute."""
    return np.flatnonzero(np.r_[ts[1:] != ts[:-1], True])


def _curve_metrics(minute_ts: np.ndarray, equity: np.ndarray, gross: np.ndarray) -> dict[str, Any]:
    """The equity-curve metrics: ``equity`` starts with the initial equity (one longer)."""
    per_year = metrics.periods_per_year(1)
    returns = metrics.simple_returns(equity)
    day_ends = np.flatnonzero(np.r_[minute_ts[1:] // _DAY_MS != minute_ts[:-1] // _DAY_MS, True])
    daily = metrics.simple_returns(np.r_[equity[0], equity[1:][day_ends]])
    return {
        "initial_equity": float(equity[0]), "final_equity": float(equity[-1]),
        "total_return": float(equity[-1] / equity[0] - 1.0),
        "sharpe": metrics.sharpe_ratio(returns, per_year),
        "sharpe_daily": metrics.sharpe_ratio(daily, metrics.periods_per_year(1440)),
        "sortino": metrics.sortino_ratio(returns, per_year),
        "max_drawdown": metrics.max_drawdown(equity),
        "annual_return": metrics.annualised_return(equity, per_year),
        "calmar": metrics.calmar_ratio(equity, per_year),
        "exposure": metrics.exposure(gross, equity[1:]),
        "time_in_market": metrics.time_in_market(gross),
    }


def _buy_and_hold(streams: Sequence[BarStream], minute_ts: np.ndarray, initial: float, fee_bps: float,
                  slippage_bps: float) -> StrategyResult:
    """Equal split of ``initial`` over the symbols, each bought at its first bar's open."""
    fee, slip = fee_bps / 10_000.0, slippage_bps / 10_000.0
    share = initial / len(streams)
    equity = np.zeros(minute_ts.size)
    gross = np.zeros(minute_ts.size)
    fees = traded = 0.0
    for stream in streams:
        ts, close = np.asarray(stream.bars["ts"]), np.asarray(stream.bars["close"], dtype=np.float64)
        price = float(stream.bars["open"][0]) * (1.0 + slip)
        qty = share / (price * (1.0 + fee))
        fees += qty * price * fee
        traded += qty * price
        # The symbol's last close at each minute (its value stays put across its gaps).
        last = np.searchsorted(ts, minute_ts, side="right") - 1
        held = last >= 0
        value = np.where(held, qty * close[np.maximum(last, 0)], 0.0)
        equity += np.where(held, value, share)
        gross += value
    curve = np.r_[initial, equity]
    return StrategyResult(
        name="buy_and_hold", label="buy and hold", **_curve_metrics(minute_ts, curve, gross),
        turnover=metrics.turnover(traded, curve), fees=fees, trades=0, win_rate=None,
        profit_factor=None, signals=None, votes=None, orders={}, denials={}, hold_codes={},
        latency_us=None, replay_s=0.0, minute_ts=minute_ts, equity=curve,
        latency_ns=np.zeros(0, dtype=np.int64))


# ------------------------------------------------------------------------ the run


def _resolve_data(data: str | os.PathLike[str] | Mapping[str, Mapping[str, np.ndarray]] | None,
                  symbols: Sequence[str]) -> dict[str, Mapping[str, np.ndarray]]:
    if isinstance(data, Mapping):
        missing = [s for s in symbols if s not in data]
        if missing:
            raise InvalidInputError(f"data: no bars for {missing} (have {sorted(data)})")
        return {s: data[s] for s in symbols}
    if data is None:
        folder = os.environ.get(DATA_DIR_ENV, "")
        if not folder:
            raise InvalidInputError(f"no data folder: pass data= or set {DATA_DIR_ENV}")
        data = folder
    if not Path(data).is_dir():
        raise InvalidInputError(f"data folder {os.fspath(data)!r}: not a directory")
    return {s: load_symbol_bars(data, s) for s in symbols}


def _split(all_bars: Mapping[str, Mapping[str, np.ndarray]], period: Period,
           warmup: int) -> tuple[list[BarStream], list[BarStream], dict[str, int]]:
    """Warm-up and evaluation streams, the evaluation starting at one common minute."""
    start = period.start_ms
    windows = {}
    for symbol, bars in all_bars.items():
        ts = np.asarray(bars["ts"], dtype=np.int64)
        lo, hi = np.searchsorted(ts, [period.start_ms, period.end_ms])
        if hi <= lo:
            raise InvalidInputError(f"{symbol}: no bar in the period {period.label} "
                                    f"(the data runs from {_utc(int(ts[0]))} to {_utc(int(ts[-1]))})"
                                    if ts.size else f"{symbol}: no bar in the data")
        short = max(warmup - int(lo), 0)
        if short >= hi - lo:
            raise InvalidInputError(f"{symbol}: {hi - lo:,} bar(s) in the period, not enough after the "
                                    f"{warmup:,} warm-up bars")
        start = max(start, int(ts[lo + short]))
        windows[symbol] = (ts, int(hi))
    warm, test, in_period = [], [], {}
    for symbol, bars in all_bars.items():
        ts, hi = windows[symbol]
        first = int(np.searchsorted(ts, start))
        lo = max(first - warmup, 0)
        warm.append(BarStream(symbol, {k: np.asarray(v)[lo:first] for k, v in bars.items()}))
        test.append(BarStream(symbol, {k: np.asarray(v)[first:hi] for k, v in bars.items()}))
        in_period[symbol] = int(np.count_nonzero(ts[lo:first] >= period.start_ms))
    return warm, test, in_period


def _run_strategy(name: str, label: str, gen: TacticalSignalGenerator, warm: Sequence[BarStream],
                  test: Sequence[BarStream], decision: StrategicDecision, fee_bps: float, slippage_bps: float,
                  progress: bool) -> StrategyResult:
    # No decision during the warm-up: the engine builds its state and holds (NO_DECISION).
    if any(len(s.bars["ts"]) for s in warm):
        replay(gen, [s for s in warm if len(s.bars["ts"])], [], PaperBroker(gen.config.engine.initial_equity))
    broker = PaperBroker(gen.config.engine.initial_equity, fee_bps=fee_bps, slippage_bps=slippage_bps)
    which, columns = merge_streams(test)
    recorder = _Recorder(which, columns["close"], [s.symbol for s in test], broker)
    summary = replay(gen, test, [decision], broker, progress=progress, on_signal=recorder)
    ends = _minute_ends(columns["ts"])
    minute_ts = columns["ts"][ends]
    equity = np.r_[broker.initial_equity, np.asarray(broker.equity_curve)[ends]]
    pnls = np.array([t.pnl for t in broker.trades])
    traded = math.fsum(f.qty * f.price for f in broker.fills)
    return StrategyResult(
        name=name, label=label, **_curve_metrics(minute_ts, equity, recorder.gross[ends]),
        turnover=metrics.turnover(traded, equity), fees=broker.fees, trades=len(broker.trades),
        win_rate=metrics.win_rate(pnls), profit_factor=metrics.profit_factor(pnls),
        signals=_signal_stats(recorder.signal_side, recorder.signal_confidence, recorder.signal_consensus,
                              which, test),
        votes=_signal_stats(recorder.vote_side, recorder.vote_confidence, recorder.vote_consensus, which, test),
        orders=summary.orders, denials=summary.denials, hold_codes=summary.hold_codes,
        latency_us=summary.latency_us, replay_s=summary.elapsed_s, minute_ts=minute_ts, equity=equity,
        latency_ns=recorder.latency)


def run_benchmark(models_path: str | os.PathLike[str] | None, test_period: str | Period,
                  symbols: Sequence[str] | str,
                  data: str | os.PathLike[str] | Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  config: L2Config | str | os.PathLike[str] | None = None, *,
                  fee_bps: float = DEFAULT_FEE_BPS, slippage_bps: float = DEFAULT_SLIPPAGE_BPS,
                  warmup_bars: int | None = None,
                  decision: StrategicDecision | None = None, progress: bool = False,
                  model_signer: Signer | None = None) -> BenchmarkResult:
    """Backtest the period for every strategy and measure it (module docstring).

    Args:
        models_path: Folder of the ONNX models and manifests; None: ``config``'s
            ``model.models_dir`` (by default ``$L2FAST_MODELS_DIR``, else the shipped
            agents, package data: :func:`l2fast.data.models_dir`, i.e. ``l2fast/data/onnx_models``).
        test_period: ``"YYYY-MM-DD_YYYY-MM-DD"`` (both days included, UTC) or a
            :class:`Period`.
        symbols: Symbols (``["BTC/USDT", "ETH/USDT"]`` or ``"BTC/USDT,ETH/USDT"``).
        data: A folder of 1-minute bar files (:func:`find_bar_files`), or the bars per
            symbol (arrays as :func:`l2fast.technical.bars.load_bars_csv` returns them); None: the
            folder named by ``$L2FAST_DATA_DIR``.
        config: An :class:`~l2fast.config.L2Config`, a TOML file, or None (the defaults).
        fee_bps, slippage_bps: The paper L1's costs per fill, basis points (default
            :data:`~l2fast.evaluation.paper.DEFAULT_FEE_BPS`, :data:`~l2fast.evaluation.paper.DEFAULT_SLIPPAGE_BPS`).
        warmup_bars: Warm-up bars per symbol, at least the engine's ``warmup_bars``
            (default: exactly that).
        decision: The L3 decision (default :func:`l2fast.evaluation.replay.default_decision` over
            ``symbols``).
        progress: Name each strategy and show the replay's progress bar on stderr.
        model_signer: The model key's signer: the models must be signed with it
            (:class:`~l2fast.engine.generator.TacticalSignalGenerator`'s ``model_signer``).

    Returns:
        The :class:`BenchmarkResult`.

    Raises:
        InvalidInputError: Bad period, symbol or data (no file, no bar in the period, not
            enough bars after the warm-up), ``fee_bps``/``slippage_bps`` out of range, or
            ``warmup_bars`` below the engine's.
        ConfigError: The config file is invalid.
        ModelLoadError: A member's model cannot be loaded.
    """
    from l2fast.engine.generator import TacticalSignalGenerator

    started = time.perf_counter()
    period = test_period if isinstance(test_period, Period) else Period.parse(test_period)
    names = [s.strip() for s in symbols.split(",")] if isinstance(symbols, str) else list(symbols)
    if not names:
        raise InvalidInputError("symbols: name at least one symbol")
    for symbol in names:
        if not SYMBOL_PATTERN.fullmatch(symbol):
            raise InvalidInputError(f"symbol {symbol!r}: symbols look like 'BTC/USDT' (BASE/QUOTE, upper case)")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"symbols: each symbol once, got {names}")
    if config is None:
        config = L2Config()
    elif not isinstance(config, L2Config):
        config = L2Config.from_toml(config)
    try:
        PaperBroker(config.engine.initial_equity, fee_bps=fee_bps, slippage_bps=slippage_bps)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if decision is None:
        decision = default_decision(names)

    variants = strategy_configs(config)
    models_dir = None if models_path is None else Path(models_path)
    engines = [TacticalSignalGenerator(cfg, models_dir=models_dir, model_signer=model_signer) for _, _, cfg in variants]
    needed = max(gen.warmup_bars for gen in engines)
    if warmup_bars is None:
        warmup_bars = needed
    elif warmup_bars < needed:
        raise InvalidInputError(f"warmup_bars={warmup_bars}: the engine needs at least {needed}")
    warm, test, in_period = _split(_resolve_data(data, names), period, warmup_bars)

    results = []
    for k, ((name, label, _), gen) in enumerate(zip(variants, engines), 1):
        if progress:
            print(f"[{k}/{len(variants) + 1}] {label}", file=sys.stderr, flush=True)
        results.append(_run_strategy(name, label, gen, warm, test, decision, fee_bps, slippage_bps, progress))
    ensemble = results[0]
    results.append(_buy_and_hold(test, ensemble.minute_ts, config.engine.initial_equity, fee_bps, slippage_bps))
    first = min(int(s.bars["ts"][0]) for s in test)
    last = max(int(s.bars["ts"][-1]) for s in test)
    return BenchmarkResult(
        period=period, symbols=tuple(names), first_ts_ms=first, last_ts_ms=last,
        bars_by_symbol={s.symbol: len(s.bars["ts"]) for s in test}, warmup_bars=warmup_bars,
        warmup_in_period=in_period, fee_bps=float(fee_bps), slippage_bps=float(slippage_bps),
        models_dir=str(Path(models_path) if models_path is not None else config.model.resolve_models_dir()),
        decision=decision.to_dict(), config=config.to_dict(), strategies=tuple(results),
        elapsed_s=time.perf_counter() - started)

"""The benchmark report: Markdown, JSON and PNG plots of a :class:`~l2fast.evaluation.backtest.BenchmarkResult`.

:func:`write_report` writes into one folder:

- ``benchmark.md``: the run's setup, the seed's targets table with the ensemble's actual
  numbers, the strategies side by side, calibration, latency and risk denials, and the
  plots;
- ``benchmark.json``: :meth:`~l2fast.evaluation.backtest.BenchmarkResult.to_dict`;
- ``equity.png`` (every strategy's equity against buy-and-hold), ``drawdown.png``,
  ``latency.png`` (the ensemble's ``on_bar`` latency histogram), ``calibration.png``
  (hit rate by confidence decile) and ``strategies.png`` (the strategies compared).

The plots need matplotlib, an optional extra (``pip install l2fast[report]``); it is
imported with the non-interactive Agg backend, so no display is needed.
:func:`format_markdown` alone needs nothing beyond numpy.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2fast.evaluation.backtest import HORIZONS, BenchmarkResult, SignalStats, StrategyResult, comparison_rows
from l2fast.evaluation.performance import drawdown_series, wilson_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "Target", "format_markdown", "require_matplotlib", "targets", "write_report"]

#: Plot file names, in report order, with their captions.
PLOTS: dict[str, str] = {
    "equity.png": "Equity of every strategy against buy-and-hold",
    "drawdown.png": "Drawdown from the running peak",
    "latency.png": "Ensemble on_bar latency per bar",
    "calibration.png": "Hit rate by confidence decile (ensemble)",
    "strategies.png": "The strategies compared",
}

_MAX_POINTS = 4_000
_DPI = 110
_COLORS = {"ensemble": "#1f4e9c", "buy_and_hold": "#222222", "no_technical": "#d95f02"}
_MEMBER_COLORS = ("#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
_HORIZON_COLORS = {5: "#1b9e77", 15: "#1f4e9c", 60: "#d95f02"}


def require_matplotlib() -> None:
    """Fail early, with the install hint, when the plots cannot be drawn.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("the report's plots need matplotlib: pip install 'l2fast[report]'") from None


# ------------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class Target:
    """One row of the seed's targets table.

    Attributes:
        metric: What is measured.
        target: The seed's target, as text.
        actual: The ensemble's measured value, as text (``n/a (why)`` when undefined).
        met: Whether the target is met (None when the value is undefined).
    """

    metric: str
    target: str
    actual: str
    met: bool | None


def _check(value: float | None, ok: Callable[[float], bool], text: Callable[[float], str],
           missing: str) -> tuple[str, bool | None]:
    if value is None:
        return f"n/a ({missing})", None
    return text(value), ok(value)


def _hit_text(stats: SignalStats, horizon: int) -> str:
    """``rate of n (95 % CI low-high)``: the interval says how much a small sample proves."""
    n, k = stats.evaluated[horizon], stats.hits[horizon]
    interval = wilson_interval(k, n)
    if interval is None:  # no call with a known outcome
        return "n/a"
    low, high = interval
    return f"{k / n:.1%} of {n:,} (95 % CI {low:.1%} to {high:.1%})"


def targets(result: BenchmarkResult) -> list[Target]:
    """The seed's targets against the ensemble's numbers.

    Signal accuracy, confidence and consensus are those of the buy/sell signals the
    ensemble emitted (the accuracy with its 95 % Wilson interval: "met" compares the
    point estimate only); the latency is the ``on_bar`` p99 over every evaluated bar.
    """
    e = result.ensemble
    signals = e.signals
    no_signal = "no buy/sell signal"
    rows = []
    for h in HORIZONS:
        rate = None if signals is None else signals.hit_rate[h]
        if signals is None or rate is None:
            actual, met = f"n/a ({no_signal})", None
        else:
            actual, met = _hit_text(signals, h), rate > 0.65
        rows.append(Target(f"Signal accuracy ({h} min)", "> 65 %", actual, met))
    for label, attr, goal in (("Average confidence", "mean_confidence", 0.75),
                              ("Ensemble consensus", "mean_consensus", 0.70)):
        value = None if signals is None else getattr(signals, attr)
        actual, met = _check(value, partial(operator.lt, goal), lambda x: f"{x:.3f}", no_signal)
        rows.append(Target(label, f"> {goal:.2f}", actual, met))
    actual, met = _check(e.sharpe, lambda x: x > 2.0, lambda x: f"{x:.2f}", "flat equity")
    rows.append(Target("Sharpe ratio (1m returns, annualised)", "> 2.0", actual, met))
    rows.append(Target("Max drawdown", "< 15 %", f"{e.max_drawdown:.2%}", e.max_drawdown < 0.15))
    every_bar = None if e.latency_us is None else e.latency_us.get("all")
    p99 = None if every_bar is None else every_bar["p99"]
    actual, met = _check(p99, lambda x: x < 100_000.0, lambda x: f"{x / 1000:.3f} ms (p99 per bar)", "no bar")
    rows.append(Target("Latency", "< 100 ms", actual, met))
    return rows


# ------------------------------------------------------------------------ markdown


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _calibration_rows(stats: SignalStats, horizon: int) -> list[list[str]]:
    return [[str(k), f"{b.low:.3f} to {b.high:.3f}", f"{b.mean_confidence:.3f}", f"{b.count:,}", f"{b.hit_rate:.1%}"]
            for k, b in enumerate(stats.calibration[horizon], 1)]


def _setup_lines(result: BenchmarkResult) -> list[str]:
    model = result.config["model"]
    d = result.decision
    inside = {s: n for s, n in result.warmup_in_period.items() if n}
    where = ("all before the period" if not inside else
             "; of them from the period itself (not evaluated): " + ", ".join(f"{s} {n:,}" for s, n in inside.items()))
    bars = ", ".join(f"{s} {n:,}" for s, n in result.bars_by_symbol.items())
    return [
        (f"- Period requested: `{result.period.label}`; evaluated bars from {_utc(result.first_ts_ms)} to "
         f"{_utc(result.last_ts_ms)} UTC ({bars})."),
        (f"- Warm-up: {result.warmup_bars:,} bars per symbol before the evaluation, with no L3 decision "
         f"(the engine cannot trade), {where}."),
        (f"- L3 decision: {d['regime']}, target exposure {d['target_exposure']:g}, {d['risk_appetite']}, "
         f"universe {', '.join(d['universe'])}."),
        (f"- Models: `{result.models_dir}`; weights {model['weights']}; technical weight "
         f"{model['technical_weight']:g}; thresholds: consensus {model['consensus_threshold']:g}, confidence "
         f"{model['confidence_threshold']:g}, alignment {model['alignment_threshold']:g}."),
        (f"- Paper L1: fills at the next bar's open, fee {result.fee_bps:g} bps and slippage "
         f"{result.slippage_bps:g} bps per fill; stops and take-profits on the bar's range (the stop first "
         "when both are touched)."),
        f"- Wall time: {result.elapsed_s:,.1f} s for {len(result.strategies)} strategies.",
    ]


_METHOD = [
    ("How it is measured: equity is marked after every minute. Sharpe and Sortino use simple "
     "1-minute returns annualised by sqrt(525,600) (24/7, 365-day year, zero risk-free rate); "
     "the daily Sharpe uses UTC-day returns and sqrt(365). Calmar is the compound return "
     "annualised to a year over the max drawdown. A signal is a hit at h minutes when the "
     "close h minutes after its bar moved its way from the signal bar's close (unchanged is a "
     "miss). `signals` are the buy/sell signals emitted; `votes` every bar whose fused vote "
     "had a direction, gates passed or not. Hit cells read `rate (calls with a known outcome)`. "
     "A member alone trades with `model.weights` holding only that member; 'no technical votes' "
     "reads no technical vote anywhere: `model.technical_weight` 0 (the fused score is the "
     "models'), `model.alignment_threshold` 0 (no alignment gate) and `model.confidence_weights` "
     "on the members' confidence alone. "
     "Buy and hold splits the equity equally over the symbols at the first evaluated open, with "
     "the same fee and slippage."),
]


def format_markdown(result: BenchmarkResult, plots: Sequence[str] = ()) -> str:
    """The report as Markdown; ``plots`` are the PNG file names to embed (relative paths)."""
    lines = [f"# l2fast benchmark, {result.period.label}, {', '.join(result.symbols)}", ""]
    lines += _setup_lines(result) + [""] + _METHOD + [""]

    lines += ["## The seed's targets (ensemble)", ""]
    lines += _table(["Metric", "Target", "Actual", "Met"],
                    [[t.metric, t.target, t.actual, "-" if t.met is None else ("yes" if t.met else "no")]
                     for t in targets(result)], ["---", "---", "---:", "---"])

    lines += ["", "## Strategies side by side", ""]
    names = [s.label for s in result.strategies]
    lines += _table(["", *names], [[label, *cells] for label, cells in comparison_rows(result.strategies)])

    e = result.ensemble
    for which, stats in (("buy/sell signals", e.signals), ("directional votes", e.votes)):
        lines += ["", f"## Calibration of the ensemble's {which} (15 minutes)", ""]
        if stats is None or not stats.calibration[15]:
            lines.append(f"No {which} with a known outcome.")
            continue
        lines += _table(["decile", "confidence", "mean", "calls", "hit rate"], _calibration_rows(stats, 15))

    lines += ["", "## Latency of on_bar (microseconds per evaluated bar)", ""]
    rows = []
    for s in result.strategies:
        p = None if s.latency_us is None else s.latency_us.get("all")
        if p is not None:
            rows.append([s.label, *(f"{p[q]:.1f}" for q in ("p50", "p95", "p99", "max"))])
    lines += _table(["", "p50", "p95", "p99", "max"], rows)

    lines += ["", "## Risk denials by code", ""]
    engines = [s for s in result.strategies if s.latency_us is not None]
    codes = sorted({c for s in engines for c in s.denials})
    if codes:
        lines += _table(["code", *(s.label for s in engines)],
                        [[c, *(f"{s.denials.get(c, 0):,}" for s in engines)] for c in codes])
    else:
        lines.append("None: no entry reached the risk gate and was denied.")

    if plots:
        lines += ["", "## Plots", ""]
        for name in plots:
            lines += [f"![{PLOTS.get(name, name)}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------ plots


def _pyplot() -> Any:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thin(n: int) -> np.ndarray:
    """At most ``_MAX_POINTS`` indices over ``n`` points, the last one included."""
    if n <= _MAX_POINTS:
        return np.arange(n)
    return np.unique(np.r_[np.linspace(0, n - 1, _MAX_POINTS).astype(np.int64), n - 1])


def _times(s: StrategyResult) -> np.ndarray:
    """Datetime of each equity value: the first minute's open, then each minute's close."""
    ms = np.r_[s.minute_ts[0], s.minute_ts + 60_000]
    return ms.astype("datetime64[ms]")


def _style(s: StrategyResult, members: Sequence[str]) -> dict[str, Any]:
    # Strategies that trade the same often overlap the ensemble exactly: the thick
    # ensemble goes below, the thin members and the dashed no-technical line on top.
    if s.name in ("ensemble", "buy_and_hold"):
        return {"color": _COLORS[s.name], "lw": 2.2, "zorder": 2}
    if s.name == "no_technical":
        return {"color": _COLORS[s.name], "lw": 1.2, "ls": (0, (4, 3)), "zorder": 4}
    return {"color": _MEMBER_COLORS[members.index(s.name) % len(_MEMBER_COLORS)], "lw": 0.9, "zorder": 3}


def _date_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=_DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _subtitle(result: BenchmarkResult) -> str:
    return (f"{', '.join(result.symbols)}, {_utc(result.first_ts_ms)} to {_utc(result.last_ts_ms)} UTC, "
            f"fee {result.fee_bps:g} bps + slippage {result.slippage_bps:g} bps")


_NOTE_BOX = {"boxstyle": "round", "facecolor": "white", "edgecolor": "#cccccc"}


def _engine_panel_note(ax: Axes, strategies: Sequence[StrategyResult]) -> None:
    ax.set_title("the engine's strategies alone (own scale)", fontsize=9, loc="left")
    if all(np.ptp(s.equity) == 0.0 for s in strategies):
        ax.text(0.5, 0.75, "no trade: every strategy stayed flat at the initial equity", ha="center", va="center",
                transform=ax.transAxes, color="#444444", bbox=_NOTE_BOX)


def plot_equity(result: BenchmarkResult, path: Path) -> None:
    """Every strategy's return on the initial equity over time against buy-and-hold.

    The engine's strategies usually hold a small share of the equity: a second panel
    shows them alone on their own scale.
    """
    plt = _pyplot()
    members = [m.name for m in result.members]
    engines = [s for s in result.strategies if s.name != "buy_and_hold"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), layout="constrained", sharex=True,
                                      height_ratios=(3, 2))
    for ax, group in ((top, result.strategies), (bottom, engines)):
        for s in group:
            keep = _thin(s.equity.size)
            ax.plot(_times(s)[keep], (s.equity[keep] / s.initial_equity - 1.0) * 100.0,
                    label=f"{s.label} ({s.total_return:+.3%})", **_style(s, members))
        ax.axhline(0.0, color="#888888", lw=0.6)
        ax.set_ylabel("return on initial equity (%)")
        ax.grid(alpha=0.3)
    top.set_title(f"Equity against buy-and-hold\n{_subtitle(result)}", fontsize=10)
    top.legend(fontsize=8, loc="best")
    _engine_panel_note(bottom, engines)
    _date_axis(bottom)
    _save(fig, path)


def plot_drawdown(result: BenchmarkResult, path: Path) -> None:
    """Drawdown from the running peak of every strategy, the engine's alone below."""
    plt = _pyplot()
    members = [m.name for m in result.members]
    engines = [s for s in result.strategies if s.name != "buy_and_hold"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), layout="constrained", sharex=True,
                                      height_ratios=(3, 2))
    for ax, group in ((top, result.strategies), (bottom, engines)):
        for s in group:
            dd = -drawdown_series(s.equity) * 100.0
            keep = _thin(dd.size)
            ax.plot(_times(s)[keep], dd[keep], label=f"{s.label} (max {s.max_drawdown:.3%})", **_style(s, members))
            if s.name == "ensemble":
                ax.fill_between(_times(s)[keep], dd[keep], 0.0, color=_COLORS["ensemble"], alpha=0.15)
        ax.set_ylabel("drawdown from peak (%)")
        ax.grid(alpha=0.3)
    top.axhline(-15.0, color="#c0392b", lw=0.8, ls="--", label="target: max drawdown < 15 %")
    top.set_title(f"Drawdown\n{_subtitle(result)}", fontsize=10)
    top.legend(fontsize=8, loc="lower left")
    _engine_panel_note(bottom, engines)
    _date_axis(bottom)
    _save(fig, path)


def plot_latency(result: BenchmarkResult, path: Path) -> None:
    """Histogram of the ensemble's ``on_bar`` latency (log scale), with its percentiles."""
    plt = _pyplot()
    e = result.ensemble
    us = e.latency_ns / 1_000.0
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    lo, hi = max(float(us.min()), 0.1), float(us.max())
    ax.hist(us, bins=np.geomspace(lo, hi * 1.01, 80), color=_COLORS["ensemble"], alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    p = None if e.latency_us is None else e.latency_us.get("all")
    assert p is not None, "the ensemble's replay measures its latency"
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        ax.axvline(p[q], color="#d95f02", ls=style, lw=1.2, label=f"{q} {p[q]:.1f} us")
    ax.set_xlabel("on_bar latency (microseconds, log scale)")
    ax.set_ylabel("bars (log scale)")
    ax.set_title(f"Ensemble on_bar latency over {us.size:,} bars (max {p['max']:,.0f} us)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def _calibration_panel(ax: Axes, stats: SignalStats | None, title: str) -> None:
    """Grouped bars: the hit rate of each confidence decile at each horizon, with the
    decile's mean confidence (what a calibrated forecaster would hit) as black dots."""
    count = 0 if stats is None else stats.count
    ax.set_title(f"{title} ({count:,} calls)", fontsize=10)
    ax.set_ylim(0.0, 1.0)
    ax.axhline(0.5, color="#888888", lw=0.8, ls="--", label="coin flip (50 %)")
    bins = {h: [] if stats is None else stats.calibration[h] for h in HORIZONS}
    n = max(len(b) for b in bins.values())
    if n == 0:
        ax.text(0.5, 0.75, "no call with a known outcome", ha="center", va="center", transform=ax.transAxes,
                bbox=_NOTE_BOX)
        ax.set_xticks([])
        return
    width = 0.8 / len(HORIZONS)
    for j, h in enumerate(HORIZONS):
        x = np.arange(len(bins[h])) + (j - (len(HORIZONS) - 1) / 2) * width
        ax.bar(x, [b.hit_rate for b in bins[h]], width, color=_HORIZON_COLORS.get(h), label=f"hit rate, {h} min")
    # The deciles of the shortest horizon have the most known outcomes: they label the axis.
    ref = max(bins.values(), key=len)
    ax.plot(np.arange(len(ref)), [b.mean_confidence for b in ref], "o", color="black", ms=4,
            label="mean confidence (calibrated hit rate)")
    ax.set_xticks(np.arange(len(ref)), [f"{k}\n{b.low:.2f}-\n{b.high:.2f}" for k, b in enumerate(ref, 1)],
                  fontsize=7)
    ax.set_xlabel("confidence decile: number and range", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", ncols=2)


def plot_calibration(result: BenchmarkResult, path: Path) -> None:
    """Hit rate by confidence decile at each horizon: emitted signals and all directional votes."""
    plt = _pyplot()
    e = result.ensemble
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained", sharey=True)
    _calibration_panel(axes[0], e.signals, "buy/sell signals")
    _calibration_panel(axes[1], e.votes, "directional votes, gates passed or not")
    axes[0].set_ylabel("hit rate")
    fig.suptitle("Ensemble calibration: hit rate by confidence decile", fontsize=11)
    _save(fig, path)


def plot_strategies(result: BenchmarkResult, path: Path) -> None:
    """Return, Sharpe, max drawdown and 15-minute vote hit rate of every strategy."""
    plt = _pyplot()
    members = [m.name for m in result.members]
    strategies = list(result.strategies)
    labels = [s.label for s in strategies]
    colors = [_style(s, members)["color"] for s in strategies]
    panels: list[tuple[str, list[float | None]]] = [
        ("total return (%)", [s.total_return * 100.0 for s in strategies]),
        ("Sharpe (1m returns, annualised)", [s.sharpe for s in strategies]),
        ("max drawdown (%)", [s.max_drawdown * 100.0 for s in strategies]),
        ("hit rate of directional votes, 15 min (%)",
         [None if s.votes is None or s.votes.hit_rate[15] is None else s.votes.hit_rate[15] * 100.0
          for s in strategies]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.2), layout="constrained")
    y = np.arange(len(strategies))
    for ax, (title, values) in zip(axes.flat, panels):
        bars = [0.0 if v is None else v for v in values]
        ax.barh(y, bars, color=colors)
        for k, v in enumerate(values):
            text = "n/a" if v is None else f"{v:.2f}"
            ax.annotate(text, (bars[k], k), xytext=(3 if bars[k] >= 0 else -3, 0), textcoords="offset points",
                        ha="left" if bars[k] >= 0 else "right", va="center", fontsize=8)
        ax.axvline(50.0 if "hit rate" in title else 0.0, color="#888888", lw=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        # Room for the value labels on whichever side the bars point.
        lo, hi = min(0.0, *bars), max(0.0, *bars)
        pad = 0.3 * ((hi - lo) or 1.0)
        ax.set_xlim(lo - pad if lo < 0 else 0.0, hi + pad)
    fig.suptitle(f"Strategies compared\n{_subtitle(result)}", fontsize=10)
    _save(fig, path)


_PLOTTERS: dict[str, Callable[[BenchmarkResult, Path], None]] = {
    "equity.png": plot_equity,
    "drawdown.png": plot_drawdown,
    "latency.png": plot_latency,
    "calibration.png": plot_calibration,
    "strategies.png": plot_strategies,
}


def write_report(result: BenchmarkResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write the Markdown, the JSON and the plots into ``out_dir`` (created if needed).

    Returns:
        The Markdown file's path.

    Raises:
        ImportError: matplotlib is not installed.
        OSError: The folder or a file cannot be written.
    """
    require_matplotlib()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, plot in _PLOTTERS.items():
        plot(result, folder / name)
    (folder / "benchmark.json").write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n",
                                           encoding="utf-8")
    markdown = folder / "benchmark.md"
    markdown.write_text(format_markdown(result, list(_PLOTTERS)), encoding="utf-8")
    return markdown


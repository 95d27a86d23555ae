"""Benchmark harness: real data, benchmark labelling, and ratio gates checked at session end.

Every benchmark is labelled through the ``bench`` fixture with a ``group`` and an ``impl``;
in each group exactly one benchmark is ours (``impl`` starting with ``l2fast``) and the
others are alternatives, each declaring beside itself a ``gate`` (the lowest acceptable
ratio *alternative median / ours median*, set near half of today's measurement so a noisy
shared machine never trips it) and an aspirational ``target`` ratio. Absolute times are
never gated. After the run a compact table is printed and, if any ratio is below its
gate, the session exits non-zero (``--gates=report`` only reports it: CI leaves the
verdict to ``baseline.py check``, which judges the best of up to three runs against the
gates and the committed baseline). The ratios are computed by ``baseline.py``.

These benchmarks are collected only when ``benchmarks`` (or a path inside it) is given
on the command line, so a plain ``pytest`` run of the test suite never picks them up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from baseline import ratio_rows

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("L2FAST_DATA_DIR", HERE.parents[1] / "shared" / "data"))

_RESULTS_KEY = pytest.StashKey[list]()
_PERCENTILES_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gates", choices=("fail", "report"), default="fail",
                     help="fail: a ratio below its gate fails the session (default); report: only print it")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip this directory unless a command-line path points into it."""
    for arg in config.args:
        target = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if target == HERE or HERE in target.parents:
            return None
    return True


@pytest.fixture(scope="session")
def btc_1m() -> dict[str, np.ndarray]:
    """The full BTC/USDT 1-minute series, loaded and validated by ``l2fast.technical.bars``."""
    path = DATA_DIR / "btcusdt_1m.csv.gz"
    if not path.exists():
        pytest.skip(f"real market data not found at {path} (set L2FAST_DATA_DIR)")
    from l2fast.technical.bars import load_bars_csv

    return load_bars_csv(path)


@pytest.fixture(scope="session")
def bars_1m(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """The real BTC/USDT 1-minute series when present, else seeded synthetic bars.

    For benchmarks that measure speed rather than a market's numbers, so that they also
    run on a checkout without the data folder.
    """
    try:
        return request.getfixturevalue("btc_1m")
    except pytest.skip.Exception:
        from l2fast.evaluation.synthetic import generate_bars

        return generate_bars(100_000, seed=7)


@pytest.fixture(scope="session")
def evict() -> Callable[[], None]:
    """A call that writes every byte of a 16 MB buffer, for a ``setup`` run before each timed call.

    Writing 16 MB pushes the timed code's data and instructions out of L1 and L2 (and out
    of a last-level cache of 16 MB or less): the state a bar finds when it arrives once a
    minute after other work. Shared by the compiled-forward and the engine benchmarks.
    """
    buf = np.zeros(16 << 20, dtype=np.uint8)

    def touch() -> None:
        np.add(buf, 1, out=buf)  # written, not only read: dirty lines must be evicted too

    return touch


@pytest.fixture
def bench(benchmark) -> Iterator[Callable[..., object]]:
    """Label the ``benchmark`` fixture; the returned function returns it for chaining.

    Args (of the returned function):
        group: Benchmark group; ours and its alternatives share it.
        impl: Implementation label; ``l2fast...`` marks ours.
        gate: For an alternative, fail the run if the alt/ours median ratio falls below it.
        target: For an alternative, the aspirational alt/ours ratio (reported, not gated).
        calls: Calls of the measured operation per round; reported times are divided by it.
        ours_target_s: For ours, an aspirational absolute time per call (reported only).
        percentiles: Also record and print p50/p99 per call (for one-call rounds).
    """

    def label(group: str, impl: str, *, gate: float | None = None, target: float | None = None,
              calls: int = 1, ours_target_s: float | None = None, percentiles: bool = False) -> object:
        benchmark.group = group
        info = {"impl": impl, "ours": impl.startswith("l2fast"), "calls_per_round": calls}
        if gate is not None:
            info["gate"] = gate
        if target is not None:
            info["target"] = target
        if ours_target_s is not None:
            info["ours_target_s"] = ours_target_s
        info["percentiles"] = percentiles
        benchmark.extra_info.update(info)
        return benchmark

    yield label
    # extra_info is serialised at session end, so percentiles added here reach the JSON.
    data = getattr(getattr(benchmark, "stats", None), "stats", None)
    if benchmark.extra_info.get("percentiles") and data is not None and data.data:
        per_call = np.asarray(data.data) / benchmark.extra_info["calls_per_round"]
        benchmark.extra_info["p50_s"] = float(np.percentile(per_call, 50))
        benchmark.extra_info["p99_s"] = float(np.percentile(per_call, 99))


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _collect_rows(config: pytest.Config) -> list[dict]:
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or bs.disabled:
        return []
    # Errored benchmarks have no usable median, and pytest-benchmark leaves them out of the
    # JSON too: these rows and baseline.py's ratios of the JSON cover the same benchmarks.
    return ratio_rows(
        {"group": b.group, "median": b.stats.median, "extra_info": b.extra_info}
        for b in bs.benchmarks
        if b and not b.has_error
    )


def _collect_percentiles(config: pytest.Config) -> list[tuple[str, str, float, float]]:
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or bs.disabled:
        return []
    return [
        (b.group, b.extra_info["impl"], b.extra_info["p50_s"], b.extra_info["p99_s"])
        for b in bs.benchmarks
        if b and "p99_s" in b.extra_info
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rows = _collect_rows(session.config)
    session.config.stash[_RESULTS_KEY] = rows
    session.config.stash[_PERCENTILES_KEY] = _collect_percentiles(session.config)
    gates_fail = session.config.getoption("--gates") == "fail"
    if gates_fail and any(not r["ok"] for r in rows) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    pct = config.stash.get(_PERCENTILES_KEY, [])
    if pct:
        tr.write_sep("=", "per-call latency percentiles (one call per round)")
        wg, wi = (max(len(row[i]) for row in pct) for i in (0, 1))
        for group, impl, p50, p99 in pct:
            tr.write_line(f"{group:<{wg}}  {impl:<{wi}}  p50 {_fmt(p50):>9}   p99 {_fmt(p99):>9}")
    rows = config.stash.get(_RESULTS_KEY, [])
    if not rows:
        return
    tr.write_sep("=", "ratio gates: alternative median / l2fast median (per call)")
    header = ("group", "l2fast", "alternative", "alt time", "ratio", "gate", "target", "")
    table = [header]
    for r in rows:
        targets = []
        if r["target"] is not None:
            targets.append(f">={r['target']:.4g}x ({'met' if r['ratio'] >= r['target'] else 'missed'})")
        if r["ours_target_s"] is not None:
            met = "met" if r["ours"] <= r["ours_target_s"] else "missed"
            targets.append(f"l2fast<={_fmt(r['ours_target_s'])} ({met})")
        ours, target = _fmt(r["ours"]), ", ".join(targets) or "-"
        table.append(
            (
                r["group"],
                ours,
                r["alt_impl"],
                _fmt(r["alt"]),
                f"{r['ratio']:.2f}x",
                f">={r['gate']:g}x",
                target,
                "ok" if r["ok"] else "FAIL",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        tr.write_line("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    failed = [r for r in rows if not r["ok"]]
    if failed:
        tr.write_line(f"{len(failed)} ratio gate(s) FAILED", red=True, bold=True)
    else:
        tr.write_line(f"all {len(rows)} ratio gates passed", green=True)

"""Ratio baseline: fail a benchmark run whose ratios regressed against the committed ones.

The ratio gates of ``conftest.py`` are deliberately loose (near half of the ratio measured
when they were set), so a slowdown of l2fast against its alternatives can go a long way
before one trips. This module reads the pytest-benchmark JSON of a run, extracts every
ratio (*alternative median / l2fast median, per call*) with the same function the conftest
uses for its gates, and compares them with ``baseline.json`` beside it::

    python benchmarks/baseline.py check build/benchmarks.json [more runs ...] [--factor 1.5] [--strict]
    python benchmarks/baseline.py update build/benchmarks.json [more runs ...]

``check`` exits 1 when a ratio fell below its gate or more than ``factor`` times below its
baseline (or, with ``--strict``, when a baseline key is missing), and 2
when a file cannot be read or is not what it should be. Ratios are keyed
``"<group> | <alternative impl>"``. Only the standard library is used, so the check runs
without pytest or the project installed.

``check`` takes one or more runs of the same suite and judges, per key, the best (highest)
ratio among them, against both the baseline and the alternative's gate. One-bar ratios on
a shared 2-core machine swing by up to 2x from run to run (another process, a different
heap layout); a real regression shows in every run, noise rarely in all of them. So CI
runs the suite once and, only when a ratio fails, again (at most three runs in all),
checking the runs together each time.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

SCHEMA = 1
DEFAULT_BASELINE = Path(__file__).resolve().parent / "baseline.json"
DEFAULT_FACTOR = 1.5
# machine_info keys of pytest-benchmark kept in the baseline (the host name is left out:
# it identifies nothing about the speed of the machine).
_MACHINE_KEYS = ("system", "release", "machine", "python_implementation", "python_version")


class Benchmark(TypedDict):
    """One benchmark's result, as the ratio computation needs it.

    Attributes:
        group: The pytest-benchmark group (ours and its alternatives share it).
        median: Median time of one round, in seconds.
        extra_info: The labels set by the ``bench`` fixture: ``impl``, ``ours``,
            ``calls_per_round`` and, for a gated alternative, ``gate`` (and ``target``,
            ``ours_target_s`` where declared).
    """

    group: str | None
    median: float
    extra_info: Mapping[str, Any]


class MalformedFileError(ValueError):
    """A benchmark or baseline file is unreadable or not shaped as expected."""


@dataclass(frozen=True)
class Run:
    """The ratios of one pytest-benchmark run.

    Attributes:
        ratios: Alternative / ours, per key ``"<group> | <alternative impl>"``.
        gates: The gate each alternative declared, per key.
        machine: pytest-benchmark's ``machine_info`` (empty when absent).
    """

    ratios: dict[str, float]
    gates: dict[str, float]
    machine: dict[str, Any]


@dataclass(frozen=True)
class Comparison:
    """One key's baseline ratio against the current run's.

    Attributes:
        key: ``"<group> | <alternative impl>"``.
        baseline: The committed ratio, or None for a key new in this run.
        current: This run's ratio (the best of the runs checked together), or None for a
            key missing from it.
        gate: The alternative's gate, or None when unknown.
        verdict: ``"ok"``, ``"REGRESSION"`` (below baseline / factor), ``"BELOW GATE"``,
            ``"missing"`` or ``"new"``.
    """

    key: str
    baseline: float | None
    current: float | None
    gate: float | None
    verdict: str

    @property
    def change(self) -> float | None:
        """current / baseline, or None when one side is absent."""
        if self.baseline is None or self.current is None:
            return None
        return self.current / self.baseline


def ratio_rows(benchmarks: Iterable[Benchmark]) -> list[dict[str, Any]]:
    """The gated ratios of a run, one row per alternative, in run order.

    Benchmarks without an ``impl`` label are ignored. A group counts only with exactly one
    benchmark marked ``ours``; of its other members, those declaring a ``gate`` are the
    alternatives. Times are medians divided by ``calls_per_round``.

    Args:
        benchmarks: The run's benchmarks (errored or empty ones already left out).

    Returns:
        Rows with ``group``, ``ours`` and ``alt`` (seconds per call), ``ours_target_s``,
        ``alt_impl``, ``ratio`` (alt / ours), ``gate``, ``target`` and ``ok`` (ratio >= gate).
    """
    groups: dict[str | None, list[Benchmark]] = {}
    for b in benchmarks:
        if "impl" in b["extra_info"]:
            groups.setdefault(b["group"], []).append(b)
    rows = []
    for group, members in groups.items():
        ours = [b for b in members if b["extra_info"]["ours"]]
        alts = [b for b in members if not b["extra_info"]["ours"] and "gate" in b["extra_info"]]
        if len(ours) != 1:
            continue
        o = ours[0]["extra_info"]
        o_per_call = ours[0]["median"] / o["calls_per_round"]
        for a in alts:
            info = a["extra_info"]
            a_per_call = a["median"] / info["calls_per_round"]
            ratio = a_per_call / o_per_call
            rows.append(
                {
                    "group": group,
                    "ours": o_per_call,
                    "ours_target_s": o.get("ours_target_s"),
                    "alt_impl": info["impl"],
                    "alt": a_per_call,
                    "ratio": ratio,
                    "gate": info["gate"],
                    "target": info.get("target"),
                    "ok": ratio >= info["gate"],
                }
            )
    return rows


def keyed_rows(benchmarks: Iterable[Benchmark]) -> dict[str, dict[str, Any]]:
    """The rows of :func:`ratio_rows` keyed ``"<group> | <alternative impl>"``.

    Args:
        benchmarks: The run's benchmarks, as for :func:`ratio_rows`.

    Returns:
        The rows by key.

    Raises:
        MalformedFileError: Two alternatives of one group share an ``impl`` label, so
            their ratios could not be told apart in a baseline.
    """
    rows: dict[str, dict[str, Any]] = {}
    for row in ratio_rows(benchmarks):
        key = f"{row['group']} | {row['alt_impl']}"
        if key in rows:
            raise MalformedFileError(f"two alternatives share the key {key!r}")
        rows[key] = row
    return rows


def extract_ratios(benchmarks: Iterable[Benchmark]) -> dict[str, float]:
    """Every ratio of a run keyed ``"<group> | <alternative impl>"`` (see :func:`keyed_rows`)."""
    return {key: row["ratio"] for key, row in keyed_rows(benchmarks).items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedFileError(f"cannot read {path}: {exc}") from exc


def _is_positive_number(value: object) -> bool:
    # bool is an int subclass; a True median or call count is a labelling bug, not 1.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _benchmark(entry: object, path: Path, index: int) -> Benchmark | None:
    """Validate one entry of a pytest-benchmark JSON file; None when it has no label."""
    where = f"{path}: benchmarks[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("extra_info"), dict):
        raise MalformedFileError(f"{where} is not a benchmark with an extra_info object")
    info = entry["extra_info"]
    if "impl" not in info:
        return None
    where = f"{where} ({entry.get('name', '?')})"
    stats = entry.get("stats")
    median = stats.get("median") if isinstance(stats, dict) else None
    if not _is_positive_number(median):
        raise MalformedFileError(f"{where}: stats.median must be a positive number, got {median!r}")
    if not (entry.get("group") is None or isinstance(entry["group"], str)):
        raise MalformedFileError(f"{where}: group must be a string or null")
    if not isinstance(info.get("ours"), bool):
        raise MalformedFileError(f"{where}: extra_info.ours must be true or false")
    if not _is_positive_number(info.get("calls_per_round")):
        raise MalformedFileError(f"{where}: extra_info.calls_per_round must be a positive number")
    if "gate" in info and not _is_positive_number(info["gate"]):
        raise MalformedFileError(f"{where}: extra_info.gate must be a positive number")
    return {"group": entry.get("group"), "median": median, "extra_info": info}


def read_run(path: Path) -> Run:
    """Read the ratios of a pytest-benchmark JSON file (``--benchmark-json``).

    Args:
        path: The file.

    Returns:
        The run's ratios and gates by key, and its ``machine_info``.

    Raises:
        MalformedFileError: The file is unreadable or not JSON, an entry lacks what the
            ratios need, or the file holds no ratio at all (checking or recording such a
            run would silently cover nothing).
    """
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise MalformedFileError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    entries = (_benchmark(entry, path, i) for i, entry in enumerate(data["benchmarks"]))
    rows = keyed_rows(b for b in entries if b is not None)
    if not rows:
        raise MalformedFileError(f"{path} holds no ratio: is it a run of the benchmarks/ suite?")
    machine = data.get("machine_info")
    return Run(ratios={k: r["ratio"] for k, r in rows.items()}, gates={k: r["gate"] for k, r in rows.items()},
               machine=machine if isinstance(machine, dict) else {})


def best_of(runs: Sequence[Run]) -> Run:
    """Per key, the highest ratio of several runs of the same suite.

    Args:
        runs: One or more runs.

    Returns:
        A run holding every key of any run, with its best ratio, its gate (the latest
        run's, should a gate have changed between runs) and the first run's machine.
    """
    ratios: dict[str, float] = {}
    gates: dict[str, float] = {}
    for run in runs:
        for key, ratio in run.ratios.items():
            ratios[key] = max(ratio, ratios.get(key, ratio))
        gates.update(run.gates)
    return Run(ratios=ratios, gates=gates, machine=runs[0].machine)


def read_baseline(path: Path) -> dict[str, Any]:
    """Read and validate a baseline file.

    Args:
        path: The file written by :func:`write_baseline`.

    Returns:
        Its content; ``ratios`` maps one or more keys to positive numbers.

    Raises:
        MalformedFileError: The file is missing, unreadable or of another schema, holds no
            ratio, or a ratio is not a positive number.
    """
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MalformedFileError(f"{path} is not a schema-{SCHEMA} baseline file")
    ratios = data.get("ratios")
    # An empty baseline would pass every run while checking nothing.
    if not isinstance(ratios, dict) or not ratios or not all(_is_positive_number(v) for v in ratios.values()):
        raise MalformedFileError(f"{path}: 'ratios' must map one or more keys to positive numbers")
    return data


def compare(baseline: Mapping[str, float], current: Mapping[str, float], factor: float,
            gates: Mapping[str, float] | None = None) -> list[Comparison]:
    """Compare a run's ratios with the baseline's and with their gates, key by key.

    A key is ``BELOW GATE`` when its current ratio is below its gate, else it regresses
    when the ratio is below ``baseline / factor``. A key absent from the run is
    ``missing``: a run loses one when its benchmark was skipped (an errored benchmark
    already fails pytest) or removed. A key without a baseline is ``new``.

    Args:
        baseline: The committed ratios.
        current: This run's ratios.
        factor: The largest tolerated drop, as a ratio (1.5 tolerates current = baseline / 1.5).
        gates: Each alternative's gate (none checked when omitted).

    Returns:
        One comparison per key of either side, sorted by key.
    """
    gates = gates or {}
    result = []
    for key in sorted(baseline.keys() | current.keys()):
        base, cur, gate = baseline.get(key), current.get(key), gates.get(key)
        if cur is None:
            verdict = "missing"
        elif gate is not None and cur < gate:
            verdict = "BELOW GATE"
        elif base is None:
            verdict = "new"
        else:
            verdict = "REGRESSION" if cur < base / factor else "ok"
        result.append(Comparison(key, base, cur, gate, verdict))
    return result


def format_table(comparisons: Sequence[Comparison]) -> str:
    """Render comparisons as an aligned text table.

    Args:
        comparisons: As returned by :func:`compare`.

    Returns:
        The table, header first, without a trailing newline.
    """

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    table = [("key", "baseline", "current", "gate", "current/baseline", "verdict")]
    table += [(c.key, cell(c.baseline), cell(c.current), cell(c.gate), cell(c.change), c.verdict)
              for c in comparisons]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table)


def write_baseline(path: Path, ratios: Mapping[str, float], machine_info: Mapping[str, Any], command: str) -> None:
    """Write a baseline file: sorted and indented, so that its diffs read well.

    Args:
        path: Where to write it.
        ratios: The ratios by key.
        machine_info: pytest-benchmark's ``machine_info`` of the measured run.
        command: The command that produced the baseline.
    """
    machine = {k: machine_info[k] for k in _MACHINE_KEYS if k in machine_info}
    cpu = machine_info.get("cpu")
    if isinstance(cpu, dict):
        machine.update({name: cpu[k] for name, k in (("cpu", "brand_raw"), ("cpu_count", "count")) if k in cpu})
    data = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "command": command,
        # Four significant digits are far below the run-to-run noise and keep diffs short.
        "ratios": {k: float(f"{v:.4g}") for k, v in ratios.items()},
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check(args: argparse.Namespace) -> int:
    baseline = read_baseline(args.baseline)
    run = best_of([read_run(path) for path in args.runs])
    comparisons = compare(baseline["ratios"], run.ratios, args.factor, run.gates)
    what = str(args.runs[0]) if len(args.runs) == 1 else f"the best of {len(args.runs)} runs per key"
    print(f"ratios of {what} against {args.baseline} (created {baseline.get('created', '?')}), "
          f"failing below the gate or below baseline / {args.factor:g}")
    print(format_table(comparisons))
    counts = {v: sum(c.verdict == v for c in comparisons) for v in ("ok", "REGRESSION", "BELOW GATE", "missing", "new")}
    failed = counts["REGRESSION"] + counts["BELOW GATE"]
    if counts["missing"]:
        print(f"{counts['missing']} key(s) missing from this run: skipped here, or removed (then run update)")
        if args.strict:
            print("--strict: a missing key fails the check")
            failed += counts["missing"]
    if counts["new"]:
        print(f"{counts['new']} new key(s) without a baseline: run update to record them")
    if counts["BELOW GATE"]:
        print(f"{counts['BELOW GATE']} ratio(s) below their gate: FAILED")
    if counts["REGRESSION"]:
        print(f"{counts['REGRESSION']} ratio(s) fell more than {args.factor:g}x below the baseline: FAILED")
    if failed:
        return 1
    print(f"{counts['ok']} ratio(s) within {args.factor:g}x of the baseline")
    return 0


def _update(args: argparse.Namespace, command: str) -> int:
    runs = [read_run(path) for path in args.runs]
    ratios: dict[str, float] = {}
    for run in runs:
        for key, ratio in run.ratios.items():
            # The lowest of several runs: a baseline taken from a lucky run would fail
            # ordinary ones.
            ratios[key] = min(ratio, ratios.get(key, ratio))
    write_baseline(args.baseline, ratios, runs[0].machine, command)
    print(f"wrote {len(ratios)} ratio(s) from {len(runs)} run(s) to {args.baseline}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 when all is well, 1 on a regression, 2 on an unreadable or malformed file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="baseline.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="compare a run's ratios with the baseline and the gates")
    check.add_argument("runs", type=Path, nargs="+",
                       help="pytest-benchmark JSON of the run(s) of one suite; per key, the highest ratio counts")
    check.add_argument("--factor", type=float, default=DEFAULT_FACTOR,
                       help="fail when a ratio is below baseline / FACTOR (default %(default)s)")
    check.add_argument("--strict", action="store_true",
                       help="fail when a baseline key is missing from the run(s) (a skipped benchmark)")
    update = sub.add_parser("update", help="record the ratios of one or more runs as the baseline")
    update.add_argument("runs", type=Path, nargs="+",
                        help="pytest-benchmark JSON of the run(s); per key, the lowest ratio is kept")
    for p in (check, update):
        p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                       help="baseline file (default benchmarks/baseline.json)")
    args = parser.parse_args(argv)
    # Written so that NaN fails too; a factor below 1 would fail an unchanged run.
    if args.command == "check" and not args.factor >= 1:
        parser.error("--factor must be at least 1")
    try:
        if args.command == "check":
            return _check(args)
        return _update(args, shlex.join(["python", "benchmarks/baseline.py", *argv]))
    except MalformedFileError as exc:
        print(f"baseline.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

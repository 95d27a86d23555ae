"""benchmarks/baseline.py: ratio extraction, comparison with the baseline, and its CLI.

The runs are small pytest-benchmark-shaped JSON documents built here, with ratios computed
by hand; nothing is benchmarked.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_baseline_module() -> ModuleType:
    # benchmarks/ is not a package (no __init__.py): load the script by its path, under a
    # name that cannot clash with the ``baseline`` module the benchmarks' conftest imports.
    spec = importlib.util.spec_from_file_location("l2fast_bench_baseline", BENCHMARKS / "baseline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


bl = _load_baseline_module()


def entry(group: str | None, impl: str | None, median: float, *, calls: int = 1,
          gate: float | None = None, target: float | None = None) -> dict[str, Any]:
    """One benchmark as pytest-benchmark writes it, labelled as the ``bench`` fixture does."""
    info: dict[str, Any] = {}
    if impl is not None:
        info = {"impl": impl, "ours": impl.startswith("l2fast"), "calls_per_round": calls, "percentiles": False}
        if gate is not None:
            info["gate"] = gate
        if target is not None:
            info["target"] = target
    name = f"test_x[{impl}]"
    return {
        "group": group,
        "name": name,
        "fullname": f"benchmarks/test_x.py::{name}",
        "params": None,
        "param": None,
        "extra_info": info,
        "options": {},
        "stats": {"min": median / 2, "max": median * 2, "mean": median, "median": median, "rounds": 10},
    }


def run_json(benchmarks: list[dict[str, Any]]) -> dict[str, Any]:
    """A pytest-benchmark JSON document holding ``benchmarks``."""
    return {
        "machine_info": {
            "node": "somehost",
            "machine": "x86_64",
            "python_implementation": "CPython",
            "python_version": "3.11.7",
            "release": "6.1.0",
            "system": "Linux",
            "cpu": {"brand_raw": "Test CPU", "count": 2},
        },
        "commit_info": {"id": "0" * 40},
        "benchmarks": benchmarks,
        "datetime": "2026-01-01T00:00:00+00:00",
        "version": "5.2.3",
    }


# Hand-computed ratios (per call = median / calls_per_round; ratio = alt / ours):
#   stream X: ours 40 us / 1000 = 40 ns; alpha 120 us / 1000 = 120 ns -> 3.0 (gate 1.5: ok);
#             beta 2 ms / 100 = 20 us -> 500.0 (gate 600: below); "ungated" has no gate.
#   batch Y:  ours 10 ms; ref 5 ms -> 0.5 (gate 0.3, target 0.67).
#   "two ours" and "no ours" have no single l2fast benchmark: no ratio; nor has the
#   unlabelled benchmark.
SAMPLE = [
    entry("stream X", "l2fast.X", 40e-6, calls=1000),
    entry("stream X", "alpha", 120e-6, calls=1000, gate=1.5),
    entry("batch Y", "l2fast.Y", 10e-3),
    entry("stream X", "beta", 2e-3, calls=100, gate=600.0),
    entry("stream X", "ungated", 1e-3, calls=1000),
    entry("batch Y", "ref", 5e-3, gate=0.3, target=0.67),
    entry("two ours", "l2fast.a", 1e-3, calls=1),
    entry("two ours", "l2fast.b", 1e-3, calls=1),
    entry("two ours", "alt", 2e-3, gate=1.0),
    entry("no ours", "alt", 2e-3, gate=1.0),
    entry(None, None, 1e-3),
]
SAMPLE_RATIOS = {"stream X | alpha": 3.0, "stream X | beta": 500.0, "batch Y | ref": 0.5}


def plain(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plain benchmark dicts ratio_rows takes, as the conftest builds them."""
    return [{"group": e["group"], "median": e["stats"]["median"], "extra_info": e["extra_info"]} for e in entries]


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_baseline(path: Path, ratios: dict[str, float]) -> Path:
    return write(path, {"schema": 1, "created": "2026-01-01T00:00:00+00:00", "machine": {}, "command": "x",
                        "ratios": ratios})


# --------------------------------------------------------------------------- extraction


def test_ratio_rows_match_hand_computation() -> None:
    rows = bl.ratio_rows(plain(SAMPLE))
    # Groups in order of first appearance, alternatives in run order: the conftest's order.
    assert [(r["group"], r["alt_impl"]) for r in rows] == [("stream X", "alpha"), ("stream X", "beta"),
                                                           ("batch Y", "ref")]
    alpha, beta, ref = rows
    assert alpha["ours"] == pytest.approx(40e-9)
    assert alpha["alt"] == pytest.approx(120e-9)
    assert alpha["ratio"] == pytest.approx(3.0)
    assert (alpha["gate"], alpha["target"], alpha["ok"]) == (1.5, None, True)
    assert beta["alt"] == pytest.approx(20e-6)
    assert beta["ratio"] == pytest.approx(500.0)
    assert beta["ok"] is False
    assert ref["ratio"] == pytest.approx(0.5)
    assert (ref["gate"], ref["target"], ref["ok"]) == (0.3, 0.67, True)


def test_ratio_rows_carry_ours_target() -> None:
    ours = entry("g", "l2fast.g", 1e-6)
    ours["extra_info"]["ours_target_s"] = 2e-6
    (row,) = bl.ratio_rows(plain([ours, entry("g", "alt", 3e-6, gate=1.0)]))
    assert row["ours_target_s"] == 2e-6


def test_read_run_extracts_keyed_ratios_and_gates(tmp_path: Path) -> None:
    run = bl.read_run(write(tmp_path / "run.json", run_json(SAMPLE)))
    assert run.ratios.keys() == SAMPLE_RATIOS.keys()
    for key, expected in SAMPLE_RATIOS.items():
        assert run.ratios[key] == pytest.approx(expected)
    assert run.gates == {"stream X | alpha": 1.5, "stream X | beta": 600.0, "batch Y | ref": 0.3}
    assert run.machine["cpu"]["brand_raw"] == "Test CPU"


def test_best_of_takes_the_highest_ratio_per_key() -> None:
    first = bl.Run(ratios={"a": 2.0, "b": 5.0}, gates={"a": 1.0, "b": 2.0}, machine={"m": 1})
    second = bl.Run(ratios={"a": 3.0, "b": 4.0, "c": 1.0}, gates={"a": 1.0, "b": 2.0, "c": 0.5}, machine={"m": 2})
    best = bl.best_of([first, second])
    assert best.ratios == {"a": 3.0, "b": 5.0, "c": 1.0}
    assert best.gates == {"a": 1.0, "b": 2.0, "c": 0.5}
    assert best.machine == {"m": 1}


def test_duplicate_key_is_malformed() -> None:
    twice = [entry("g", "l2fast.g", 1e-6), entry("g", "alt", 2e-6, gate=1.0), entry("g", "alt", 3e-6, gate=1.0)]
    with pytest.raises(bl.MalformedFileError, match=re.escape("'g | alt'")):
        bl.extract_ratios(plain(twice))


# --------------------------------------------------------------------------- comparison


def verdicts(baseline: dict[str, float], current: dict[str, float], factor: float = 1.5,
             gates: dict[str, float] | None = None) -> dict[str, str]:
    return {c.key: c.verdict for c in bl.compare(baseline, current, factor, gates)}


def test_drop_of_149x_passes_and_151x_fails() -> None:
    assert verdicts({"k": 3.0}, {"k": 3.0 / 1.49}) == {"k": "ok"}
    assert verdicts({"k": 3.0}, {"k": 3.0 / 1.51}) == {"k": "REGRESSION"}


def test_factor_is_honoured_and_gains_pass() -> None:
    assert verdicts({"k": 3.0}, {"k": 3.0 / 1.9}, factor=2.0) == {"k": "ok"}
    assert verdicts({"k": 3.0}, {"k": 3.0 / 1.2}, factor=1.1) == {"k": "REGRESSION"}
    assert verdicts({"k": 3.0}, {"k": 30.0}) == {"k": "ok"}


def test_missing_and_new_keys() -> None:
    comparisons = bl.compare({"b": 2.0, "gone": 1.0}, {"b": 2.0, "added": 4.0}, 1.5)
    assert [(c.key, c.baseline, c.current, c.verdict) for c in comparisons] == [
        ("added", None, 4.0, "new"),
        ("b", 2.0, 2.0, "ok"),
        ("gone", 1.0, None, "missing"),
    ]
    assert [c.change for c in comparisons] == [None, 1.0, None]


def test_ratio_below_its_gate_fails_even_without_baseline() -> None:
    gates = {"k": 2.0, "new": 2.0}
    assert verdicts({"k": 2.5}, {"k": 1.99}, 1.5, gates) == {"k": "BELOW GATE"}
    assert verdicts({"k": 2.5}, {"k": 2.0}, 1.5, gates) == {"k": "ok"}
    assert verdicts({}, {"new": 1.0}, 1.5, gates) == {"new": "BELOW GATE"}
    assert verdicts({}, {"new": 3.0}, 1.5, gates) == {"new": "new"}


def test_table_lists_every_key() -> None:
    comparisons = bl.compare({"a | x": 2.0, "gone": 1.0}, {"a | x": 1.0}, 1.5, {"a | x": 0.5})
    table = bl.format_table(comparisons).splitlines()
    assert table[0].split() == ["key", "baseline", "current", "gate", "current/baseline", "verdict"]
    assert table[1].split() == ["a", "|", "x", "2.00x", "1.00x", "0.50x", "0.50x", "REGRESSION"]
    assert table[2].split() == ["gone", "1.00x", "-", "-", "-", "missing"]


# --------------------------------------------------------------------------- CLI


# SAMPLE's beta (ratio 500) is below its gate (600); PASSING raises that gate to 400.
PASSING = [entry("stream X", "beta", 2e-3, calls=100, gate=400.0) if e["extra_info"].get("impl") == "beta" else e
           for e in SAMPLE]


def test_check_passes_within_factor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write(tmp_path / "run.json", run_json(PASSING))
    # Every current ratio is 1.49x below these.
    base = write_baseline(tmp_path / "base.json", {k: v * 1.49 for k, v in SAMPLE_RATIOS.items()})
    assert bl.main(["check", str(run), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "stream X | beta" in out
    assert "3 ratio(s) within 1.5x" in out


def test_check_fails_below_a_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write(tmp_path / "run.json", run_json(SAMPLE))
    base = write_baseline(tmp_path / "base.json", SAMPLE_RATIOS)
    assert bl.main(["check", str(run), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "1 ratio(s) below their gate: FAILED" in out
    rows = {line.split("  ")[0]: line.split()[-2:] for line in out.splitlines()}
    assert rows["stream X | beta"] == ["BELOW", "GATE"]


def test_check_judges_the_best_of_several_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_baseline(tmp_path / "base.json", {"g | alt": 2.0})
    # Run 1: ratio 1.25 (more than 1.5x below 2.0); run 2: ratio 1.9; run 3: 0.9 (below the gate).
    noisy = [write(tmp_path / f"run{i}.json",
                   run_json([entry("g", "l2fast.g", 1e-6), entry("g", "alt", r * 1e-6, gate=1.0)]))
             for i, r in enumerate((1.25, 1.9, 0.9))]
    assert bl.main(["check", str(noisy[0]), "--baseline", str(base)]) == 1
    assert bl.main(["check", str(noisy[2]), "--baseline", str(base)]) == 1
    capsys.readouterr()
    assert bl.main(["check", *map(str, noisy), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "the best of 3 runs per key" in out
    assert out.splitlines()[2].split()[3:5] == ["2.00x", "1.90x"]


def test_strict_check_fails_on_a_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write(tmp_path / "run.json", run_json([e for e in PASSING if e["group"] != "batch Y"]))
    base = write_baseline(tmp_path / "base.json", SAMPLE_RATIOS)
    assert bl.main(["check", str(run), "--baseline", str(base)]) == 0
    assert bl.main(["check", str(run), "--baseline", str(base), "--strict"]) == 1
    assert "--strict: a missing key fails the check" in capsys.readouterr().out


def test_check_fails_on_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write(tmp_path / "run.json", run_json(PASSING))
    base = write_baseline(tmp_path / "base.json", {**SAMPLE_RATIOS, "batch Y | ref": 0.5 * 1.51})
    assert bl.main(["check", str(run), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    assert "1 ratio(s) fell more than 1.5x below the baseline: FAILED" in out
    # A looser factor lets the same drop through.
    assert bl.main(["check", str(run), "--baseline", str(base), "--factor", "1.6"]) == 0


def test_check_reports_missing_and_new_without_failing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # "batch Y" was skipped in this run; "stream X | beta" has no baseline yet.
    run = write(tmp_path / "run.json", run_json([e for e in PASSING if e["group"] != "batch Y"]))
    base = write_baseline(tmp_path / "base.json", {"stream X | alpha": 3.0, "batch Y | ref": 0.5})
    assert bl.main(["check", str(run), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "1 key(s) missing from this run" in out
    assert "1 new key(s) without a baseline" in out
    rows = {line.split("  ")[0]: line.split()[-1] for line in out.splitlines()}
    assert rows["batch Y | ref"] == "missing"
    assert rows["stream X | beta"] == "new"


def test_update_writes_sorted_baseline_with_lowest_ratio(tmp_path: Path) -> None:
    first = write(tmp_path / "first.json", run_json(SAMPLE))
    # The second run: alpha's alternative 10 % slower (ratio 3.3), beta's 10 % faster (450).
    faster = [dict(e, stats=dict(e["stats"])) for e in SAMPLE]
    faster[1]["stats"]["median"] *= 1.1
    faster[3]["stats"]["median"] *= 0.9
    second = write(tmp_path / "second.json", run_json(faster))
    out = tmp_path / "baseline.json"
    assert bl.main(["update", str(first), str(second), "--baseline", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["schema"] == 1
    assert datetime.fromisoformat(data["created"]).tzinfo is not None
    assert data["command"] == f"python benchmarks/baseline.py update {first} {second} --baseline {out}"
    assert data["machine"] == {"cpu": "Test CPU", "cpu_count": 2, "machine": "x86_64",
                               "python_implementation": "CPython", "python_version": "3.11.7",
                               "release": "6.1.0", "system": "Linux"}
    assert data["ratios"] == pytest.approx({"batch Y | ref": 0.5, "stream X | alpha": 3.0, "stream X | beta": 450.0})
    # The fresh baseline passes both runs it was taken from (but for beta's gate of 600).
    for run in (first, second):
        assert [c.key for c in bl.compare(data["ratios"], bl.read_run(run).ratios, 1.5) if c.verdict != "ok"] == []


def _labelled(**changes: Any) -> list[dict[str, Any]]:
    alt = entry("g", "alt", 2e-6, gate=1.0)
    ours = entry("g", "l2fast.g", 1e-6)
    for key, value in changes.items():
        target = ours["stats"] if key == "median" else ours["extra_info"]
        target[key] = value
    return [ours, alt]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ([1, 2], "not a pytest-benchmark JSON file"),
        ({"machine_info": {}}, "not a pytest-benchmark JSON file"),
        (run_json(["oops"]), "benchmarks[0]"),
        (run_json(_labelled(median="fast")), "stats.median"),
        (run_json(_labelled(median=0.0)), "stats.median"),
        (run_json(_labelled(ours="yes")), "extra_info.ours"),
        (run_json(_labelled(calls_per_round=0)), "calls_per_round"),
        (run_json([entry(None, None, 1e-3)]), "holds no ratio"),
    ],
)
def test_malformed_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object,
                               message: str) -> None:
    run = tmp_path / "run.json"
    run.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    base = write_baseline(tmp_path / "base.json", {"g | alt": 2.0})
    for argv in (["check", str(run), "--baseline", str(base)], ["update", str(run), "--baseline", str(base)]):
        assert bl.main(argv) == 2
        assert message in capsys.readouterr().err
    assert json.loads(base.read_text(encoding="utf-8"))["ratios"] == {"g | alt": 2.0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ({"schema": 2, "ratios": {}}, "not a schema-1 baseline"),
        ({"schema": 1}, "'ratios' must map"),
        ({"schema": 1, "ratios": {}}, "'ratios' must map"),
        ({"schema": 1, "ratios": {"g | alt": -1.0}}, "'ratios' must map"),
    ],
)
def test_malformed_baseline_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object,
                                    message: str) -> None:
    run = write(tmp_path / "run.json", run_json(_labelled()))
    base = tmp_path / "base.json"
    if content is not None:
        write(base, content)
    assert bl.main(["check", str(run), "--baseline", str(base)]) == 2
    assert message in capsys.readouterr().err


def test_factor_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        bl.main(["check", str(tmp_path / "run.json"), "--factor", "0.5"])
    assert exc.value.code == 2


def test_script_runs_standalone(tmp_path: Path) -> None:
    run = write(tmp_path / "run.json", run_json(SAMPLE))
    base = write_baseline(tmp_path / "base.json", {**SAMPLE_RATIOS, "stream X | alpha": 6.0})
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "baseline.py"), "check", str(run), "--baseline", str(base)],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "stream X | alpha" in proc.stdout
    assert "REGRESSION" in proc.stdout


def test_committed_baseline_is_well_formed() -> None:
    data = bl.read_baseline(bl.DEFAULT_BASELINE)
    assert data["ratios"]
    assert all(" | " in key for key in data["ratios"])

"""The README's main job: ``python -m l2fast indicators``."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np

from l2fast.cli.main import main
from l2fast.evaluation.synthetic import generate_bars
from l2fast.technical.state import TechnicalState


def test_indicators_on_a_generated_series_prints_every_timeframe(capsys):
    assert main(["indicators", "--bars", "3000"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("feature"))
    assert header.split()[1:] == ["1m", "5m", "15m", "1h"]
    assert any(line.startswith("rsi_14 ") for line in out.splitlines())


def test_indicators_on_a_csv_file_prints_the_state_of_its_last_bar(tmp_path, capsys):
    bars = generate_bars(2_000, seed=11)
    path = tmp_path / "bars.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("ts,open,high,low,close,volume\n")
        for row in zip(*(bars[k] for k in ("ts", "open", "high", "low", "close", "volume"))):
            fh.write(",".join([str(int(row[0]))] + [repr(float(x)) for x in row[1:]]) + "\n")
    assert main(["indicators", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    state = TechnicalState()
    state.update_many(*(bars[k] for k in ("ts", "open", "high", "low", "close", "volume")))
    rsi_row = next(line for line in out.splitlines() if line.startswith("rsi_14 "))
    assert float(rsi_row.split()[1]) == np.float64(f"{state.get('rsi_14_1m'):.6g}")


def test_module_entry_point_runs_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-m", "l2fast", "indicators", "--bars", "500"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "500 bars" in proc.stdout

"""Helpers shared by several test modules (not tests themselves)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l2fast.__main__ import main
from l2fast.bus import Bar
from l2fast.replay import BarStream, merge_streams

COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def write_csv(path: Path, bars: dict[str, np.ndarray]) -> Path:
    """Write bars as the data files' gzip CSV (``ts,open,high,low,close,volume``)."""
    with gzip.open(path, "wt") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for row in zip(*(bars[k] for k in COLUMNS)):
            fh.write(",".join([str(int(row[0]))] + [repr(float(x)) for x in row[1:]]) + "\n")
    return path


def exit_code(argv: list[str]) -> int:
    """``main``'s exit code, argparse's own exits (bad option values) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def merged_bars(streams: Sequence[BarStream]) -> list[Bar]:
    """Every stream's bars in the replay's order (open time, stream order), as bus bars."""
    which, columns = merge_streams(streams)
    rows = zip(*(columns[c].tolist() for c in COLUMNS))
    return [Bar(streams[k].symbol, *row) for k, row in zip(which.tolist(), rows)]

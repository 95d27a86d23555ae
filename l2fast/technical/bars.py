"""Market bars: validation, gap accounting, multi-timeframe aggregation and CSV loading.

A bar is ``(ts, open, high, low, close, volume)`` with ``ts`` its OPEN time in epoch
milliseconds, UTC. 1-minute bars are validated (:class:`BarValidator`, also built into
:class:`MultiTimeframeAggregator`): invalid bars raise
:class:`l2fast.errors.InvalidBarError` naming the field and value and change nothing,
missing minutes are legal and counted (``gaps``, ``missing_bars``).

Higher timeframes (any whole number of minutes dividing one day) are aligned to UTC and
equal pandas' ``df.resample(rule, label="left", closed="left")`` with first/max/min/
last/sum and empty buckets dropped. Each bar is emitted as soon as it is known complete.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from l2fast.errors import InvalidBarError, InvalidInputError
from l2fast.technical._aggregate import (
    Bar,
    BarValidator,
    MultiTimeframeAggregator,
    parse_timeframe,
    timeframe_name,
)

__all__ = [
    "Bar",
    "BarValidator",
    "MultiTimeframeAggregator",
    "load_bars_csv",
    "parse_timeframe",
    "timeframe_name",
]

COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def load_bars_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read and validate a bar CSV (gzip or plain) with header ``ts,open,high,low,close,volume``.

    Columns may come in any order. The whole series is validated with the rules of
    :class:`BarValidator` (rows sorted and unique on ``ts``, prices positive and
    consistent, volume non-negative); gaps are allowed.

    Args:
        path: File to read; gzip is recognised by its content, not its name.

    Returns:
        ``{"ts": int64 array, "open"/"high"/"low"/"close"/"volume": float64 arrays}``.

    Raises:
        InvalidInputError: The header is not the six bar columns, or a line does not parse.
        InvalidBarError: A bar breaks a rule; the message names the 0-based data row
            (row ``r`` is line ``r + 2`` of the file).
    """
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rt") if gzipped else open(path)) as f:
        header = [name.strip() for name in f.readline().split(",")]
        if sorted(header) != sorted(COLUMNS):
            raise InvalidInputError(f"{path}: header {header!r}: expected the columns {COLUMNS!r}")
        dtype = [(name, np.int64 if name == "ts" else np.float64) for name in header]
        try:
            table = np.loadtxt(f, delimiter=",", dtype=dtype, ndmin=1)
        except ValueError as exc:
            raise InvalidInputError(f"{path}: {exc}") from None
    bars = {name: np.ascontiguousarray(table[name]) for name in COLUMNS}
    try:
        BarValidator().check_many(*bars.values())
    except InvalidBarError as exc:
        raise InvalidBarError(exc.field, exc.value, f"{path}: {exc.reason}") from None
    return bars

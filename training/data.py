"""Bars, feature matrices and the decision grid the demo agents train and validate on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from l2fast.evaluation.synthetic import generate_bars
from l2fast.technical.bars import load_bars_csv, parse_timeframe
from l2fast.technical.state import TechnicalState

MINUTE_MS = 60_000
DATA_FILE = "btcusdt_1m.csv.gz"


def default_data_dir() -> Path:
    """``$L2FAST_DATA_DIR``, else ``../shared/data`` relative to the repository root."""
    env = os.environ.get("L2FAST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def to_ms(date: str) -> int:
    """Epoch milliseconds of an ISO date or datetime taken as UTC."""
    dt = datetime.fromisoformat(date)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso(ms: int) -> str:
    """ISO-8601 UTC text of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_bars(data: str | os.PathLike[str] | None, *, synthetic_bars: int, start: str) -> tuple[dict, str]:
    """The BTC/USDT 1m bars, or a generated series when the file is absent.

    Args:
        data: A bar CSV, or a folder holding ``btcusdt_1m.csv.gz`` (default: see
            :func:`default_data_dir`). The ``holdout/`` subfolder is never read.
        synthetic_bars: Length of the generated series used when the file is absent.
        start: First bar of the generated series (ISO date, UTC).

    Returns:
        The bars and a description of their source.
    """
    path = Path(data) if data is not None else default_data_dir()
    if path.is_dir():
        path = path / DATA_FILE
    if "holdout" in path.parts:
        raise ValueError(f"{path}: the holdout data is for final evaluation only, never for training")
    if path.is_file():
        return load_bars_csv(path), str(path.name)
    bars = generate_bars(synthetic_bars, seed=7, start_ts=to_ms(start))
    return bars, f"l2fast.evaluation.synthetic.generate_bars(n={synthetic_bars}, seed=7, start={start})"


def mirror_bars(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same market upside down: every price ``p`` becomes ``K / p`` (volume unchanged).

    Log returns change sign, so a rally becomes a sell-off of the same size; ``K`` keeps
    the first close unchanged. Training on both series removes the drift of the training
    period (a falling 2022, a rising 2023) from what the agent can learn.
    """
    k = float(bars["close"][0]) ** 2
    return {
        "ts": bars["ts"],
        "open": k / bars["open"],
        "high": k / bars["low"],
        "low": k / bars["high"],
        "close": k / bars["close"],
        "volume": bars["volume"],
    }


def compute_features(bars: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Feature matrix ``[n_bars, len(names)]``: row t is the state after bar t closed."""
    state = TechnicalState()
    unknown = [n for n in names if n not in state.index]
    if unknown:
        raise ValueError(f"unknown feature names: {unknown}")
    return state.update_many(
        bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"], record=list(names)
    )


def lookback_bars(features: np.ndarray, timeframes: tuple[str, ...]) -> int:
    """1m bars of history needed before every feature is finite.

    Measured as the first all-finite row of a series starting on a UTC midnight, plus one
    bar of the slowest timeframe because a stream may start anywhere inside its bucket.
    """
    finite = np.isfinite(features).all(axis=1)
    if not finite.any():
        raise ValueError("the series is too short: no row has all features finite")
    return int(np.argmax(finite)) + 1 + max(parse_timeframe(tf) for tf in timeframes)


@dataclass
class Period:
    """Decision points of one period: features at each decision and the return that follows.

    Attributes:
        time: Decision time, epoch ms UTC: the close of the 1m bar the features are read after.
        next_time: Time of the next decision, when the position is changed again.
        features: Raw features at each decision ``[n, k]``.
        log_ret: Log return of the close from this decision to the next one.
        close: Close at each decision (for buy-and-hold).
        next_close: Close at the next decision.
    """

    time: np.ndarray
    next_time: np.ndarray
    features: np.ndarray
    log_ret: np.ndarray
    close: np.ndarray
    next_close: np.ndarray

    def __len__(self) -> int:
        return len(self.time)


def decision_period(
    bars: dict[str, np.ndarray], features: np.ndarray, decision_minutes: int, start_ms: int, end_ms: int | None
) -> Period:
    """The decisions at or after ``start_ms`` whose next decision is at or before ``end_ms``.

    A decision is taken on the close of each UTC-aligned ``decision_minutes`` bucket (when
    that bucket's higher-timeframe bar has just closed, e.g. 00:15, 00:30 for 15 minutes)
    and held until the next decision; rows with any non-finite feature (warm-up) are
    dropped. Both ends of every holding interval lie in the period, so a training reward
    never reaches into the validation period.
    """
    close_ms = bars["ts"] + MINUTE_MS
    grid = np.flatnonzero(close_ms % (decision_minutes * MINUTE_MS) == 0)
    cur, nxt = grid[:-1], grid[1:]
    inside = close_ms[cur] >= start_ms
    if end_ms is not None:
        inside &= close_ms[nxt] <= end_ms
    cur, nxt = cur[inside], nxt[inside]
    keep = np.isfinite(features[cur]).all(axis=1)
    cur, nxt = cur[keep], nxt[keep]
    close = bars["close"]
    return Period(
        time=close_ms[cur],
        next_time=close_ms[nxt],
        features=features[cur],
        log_ret=np.log(close[nxt] / close[cur]),
        close=close[cur],
        next_close=close[nxt],
    )

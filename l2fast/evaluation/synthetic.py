"""Seeded synthetic 1-minute OHLCV bars for demos and tests when no real data is given."""

from __future__ import annotations

import numpy as np

MINUTE_MS = 60_000

#: Default length and seed of the generated series (also ``python -m l2fast indicators``'s).
DEFAULT_BARS = 20_000
DEFAULT_SEED = 7


def generate_bars(
    n: int = DEFAULT_BARS,
    *,
    seed: int = DEFAULT_SEED,
    start_ts: int = 1_704_067_200_000,
    start_price: float = 42_000.0,
    annual_vol: float = 0.6,
) -> dict[str, np.ndarray]:
    """Generate a valid 1-minute OHLCV series: a regime-switching geometric random walk.

    Args:
        n: Number of bars.
        seed: Seed of the random generator; the same seed gives the same series.
        start_ts: Open time of the first bar, epoch ms UTC (a multiple of 60,000).
        start_price: Open of the first bar.
        annual_vol: Average annualised volatility of the walk (24/7 minutes).

    Returns:
        Arrays keyed ``ts`` (int64) and ``open``, ``high``, ``low``, ``close``, ``volume``
        (float64), with ``low <= min(open, close)`` and ``high >= max(open, close)``.
    """
    if n < 1:
        raise ValueError(f"n={n!r}: must be >= 1")
    if start_ts % MINUTE_MS:
        raise ValueError(f"start_ts={start_ts!r}: must be a multiple of {MINUTE_MS}")
    rng = np.random.default_rng(seed)
    sigma = annual_vol / np.sqrt(365 * 24 * 60)
    # Slowly switching drift and volatility regimes make trends, ranges and bursts appear.
    regime = np.repeat(rng.integers(0, 3, size=n // 720 + 1), 720)[:n]
    drift = np.array([0.0, 2.0, -2.0])[regime] * sigma * 0.03
    vol = sigma * np.array([0.7, 1.0, 1.8])[regime]
    log_ret = drift + vol * rng.standard_normal(n)
    close = start_price * np.exp(np.cumsum(log_ret))
    open_ = np.empty(n)
    open_[0] = start_price
    open_[1:] = close[:-1]
    wick = np.abs(rng.standard_normal((2, n))) * vol * close * 0.6
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    # Volume rises with the size of the move, as on real exchanges.
    volume = rng.lognormal(mean=2.0, sigma=0.6, size=n) * (1.0 + 0.5 * np.abs(log_ret) / sigma)
    ts = start_ts + MINUTE_MS * np.arange(n, dtype=np.int64)
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}

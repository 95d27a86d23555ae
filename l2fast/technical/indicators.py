"""Incremental technical indicators and patterns (public API).

Every indicator follows one contract: ``update(...)`` consumes one closed bar in O(1)
and returns the value (NaN during warm-up), ``update_last(...)`` revises the most
recent bar (talipp's semantics), ``update_many(...)`` feeds arrays and returns arrays
whose NaN positions equal TA-Lib's, ``ready`` says whether warm-up is over and
``reset()`` returns to the fresh state. Values equal TA-Lib's to within 1e-9 relative.
Non-finite inputs raise :class:`l2fast.errors.InvalidInputError` and change nothing.

``Stockstats<X>`` is indicator X with stockstats' conventions instead of TA-Lib's (the
features FinRL computes with stockstats 0.6.10: ``StockstatsRSI`` is ``rsi_<n>``,
``StockstatsBollingerBands`` ``boll``/``boll_ub``/``boll_lb``, ``StockstatsDX`` ``dx``/``pdi``/
``ndi``, ...; the table is in :mod:`l2fast.technical._stockstats`). They give stockstats'
value from a series' first bar (no NaN warm-up: ``ready`` says when their windows are
whole, ``warmup`` after how many updates) and equal stockstats' to within 1e-9 relative.

``Turbulence(n_assets, window=252)`` is FinRL's turbulence index over a universe: its
``update`` takes one date's N closes (not one series' bar) and gives FinRL's value, 0 during
warm-up (FinRL's convention, not NaN); it has no ``update_last``.
"""

from __future__ import annotations

# --- averages ---
from l2fast.technical._averages import EMA, SMA

# --- candles ---
from l2fast.technical._candles import CANDLESTICK_PATTERNS, CandlestickDetector, candlestick

# --- levels ---
from l2fast.technical._levels import LevelsSnapshot, SupportResistance

# --- oscillators ---
from l2fast.technical._oscillators import ADX, MACD, RSI, Stochastic

# --- statistics ---
from l2fast.technical._statistics import RollingCorrelation

# --- stockstats (FinRL's indicators) ---
from l2fast.technical._stockstats import (
    StockstatsATR,
    StockstatsBollingerBands,
    StockstatsCCI,
    StockstatsDX,
    StockstatsEMA,
    StockstatsMACD,
    StockstatsRSI,
    StockstatsSMA,
)

# --- turbulence (FinRL's index over a universe) ---
from l2fast.technical._turbulence import Turbulence

# --- volatility ---
from l2fast.technical._volatility import ATR, BollingerBands, Donchian, RealizedVolatility

# --- volume ---
from l2fast.technical._volume import OBV, VolumeZScore

__all__ = [
    "ADX",
    "ATR",
    "BollingerBands",
    "CANDLESTICK_PATTERNS",
    "CandlestickDetector",
    "Donchian",
    "EMA",
    "LevelsSnapshot",
    "MACD",
    "OBV",
    "RSI",
    "RealizedVolatility",
    "RollingCorrelation",
    "SMA",
    "Stochastic",
    "StockstatsATR",
    "StockstatsBollingerBands",
    "StockstatsCCI",
    "StockstatsDX",
    "StockstatsEMA",
    "StockstatsMACD",
    "StockstatsRSI",
    "StockstatsSMA",
    "SupportResistance",
    "Turbulence",
    "VolumeZScore",
    "candlestick",
]

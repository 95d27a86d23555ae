"""Incremental technical indicators and patterns (public API).

Every indicator follows one contract: ``update(...)`` consumes one closed bar in O(1)
and returns the value (NaN during warm-up), ``update_last(...)`` revises the most
recent bar (talipp's semantics), ``update_many(...)`` feeds arrays and returns arrays
whose NaN positions equal TA-Lib's, ``ready`` says whether warm-up is over and
``reset()`` returns to the fresh state. Values equal TA-Lib's to within 1e-9 relative.
Non-finite inputs raise :class:`l2fast.errors.InvalidInputError` and change nothing.
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
    "SupportResistance",
    "VolumeZScore",
    "candlestick",
]

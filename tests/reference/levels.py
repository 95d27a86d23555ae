"""Pure-Python twin of :mod:`l2fast.technical._levels`, written from the definitions.

Windows are slices of the full bar history, pivots are kept in plain lists and necklines
are searched among all pivots between the two tops/bottoms; only the rule "match among
the last 16 pivots of the same kind" is shared with the compiled kernel, because it is
part of the definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PIVOT_HIST = 16


@dataclass
class _Level:
    price: float
    strength: float
    touches: int
    id: int


class SupportResistanceRef:
    """Same parameters (required, as ``TechnicalConfig.levels`` gives them) and per-bar
    output (a dict of ``LevelsSnapshot`` fields)."""

    def __init__(
        self,
        *,
        pivot_bars: int,
        merge_tol: float,
        half_life: float,
        min_strength: float,
        max_levels: int,
        volume_mult: float,
        volume_window: int,
        min_separation: int,
        min_depth: float,
        range_window: int,
        range_pct: float,
    ) -> None:
        self.n_side = pivot_bars
        self.merge_tol = merge_tol
        self.decay = 0.5 ** (1.0 / half_life)
        self.min_strength = min_strength
        self.max_levels = max_levels
        self.volume_mult = volume_mult
        self.volume_window = volume_window
        self.min_separation = min_separation
        self.min_depth = min_depth
        self.range_window = range_window
        self.range_pct = range_pct
        self.highs: list[float] = []
        self.lows: list[float] = []
        self.closes: list[float] = []
        self.volumes: list[float] = []
        self.levels: list[_Level] = []
        self.next_id = 0
        self.pivot_highs: list[tuple[int, float]] = []
        self.pivot_lows: list[tuple[int, float]] = []

    def _add_pivot(self, price: float) -> None:
        near = [lv for lv in self.levels if abs(price - lv.price) <= self.merge_tol * lv.price]
        if near:
            lv = min(near, key=lambda x: (abs(price - x.price), x.id))
            lv.price = (lv.price * lv.touches + price) / (lv.touches + 1)
            lv.touches += 1
            lv.strength += 1.0
            return
        if len(self.levels) >= self.max_levels:
            self.levels.remove(min(self.levels, key=lambda x: (x.strength, x.id)))
        self.levels.append(_Level(price, 1.0, 1, self.next_id))
        self.next_id += 1

    def _double(self, bar: int, price: float, top: bool) -> float:
        """Neckline of the double top (bottom) completed by this pivot, else NaN."""
        same = self.pivot_highs if top else self.pivot_lows
        other = self.pivot_lows if top else self.pivot_highs
        tol = self.merge_tol * price
        for bar1, price1 in reversed(same[-PIVOT_HIST:]):
            d = price1 - price
            inner = d < -tol if top else d > tol  # a lower top / higher bottom in between
            if inner:
                continue
            if abs(d) > tol:
                return math.nan
            between = [p for b, p in other if bar1 < b < bar]
            if bar - bar1 < self.min_separation or not between:
                return math.nan
            if top:
                lower, neck = min(price1, price), min(between)
                return neck if lower - neck >= self.min_depth * lower else math.nan
            higher, neck = max(price1, price), max(between)
            return neck if neck - higher >= self.min_depth * higher else math.nan
        return math.nan

    def update(self, high: float, low: float, close: float, volume: float) -> dict[str, float]:
        out: dict[str, float] = {
            "breakout": 0, "breakout_level": math.nan, "pivot_high": math.nan,
            "pivot_low": math.nan, "double_top": 0, "top_neckline": math.nan,
            "double_bottom": 0, "bottom_neckline": math.nan,
        }
        t = len(self.closes)
        self.highs.append(high)
        self.lows.append(low)

        for lv in self.levels:
            lv.strength *= self.decay
        self.levels = [lv for lv in self.levels if lv.strength >= self.min_strength]

        if len(self.volumes) >= self.volume_window and volume > 0:
            mean = sum(self.volumes[-self.volume_window:]) / self.volume_window
            if volume >= self.volume_mult * mean:
                prev = self.closes[-1]
                up = [lv.price for lv in self.levels if prev <= lv.price < close]
                down = [lv.price for lv in self.levels if close < lv.price <= prev]
                if up:
                    out["breakout"], out["breakout_level"] = 1, max(up)
                elif down:
                    out["breakout"], out["breakout_level"] = -1, min(down)
        self.closes.append(close)
        self.volumes.append(volume)

        n = self.n_side
        i = t - n
        if i >= n:
            h = self.highs[i]
            if h > max(self.highs[i - n:i]) and h > max(self.highs[i + 1:t + 1]):
                out["pivot_high"] = h
                self._add_pivot(h)
                neck = self._double(i, h, top=True)
                out["double_top"], out["top_neckline"] = int(not math.isnan(neck)), neck
                self.pivot_highs.append((i, h))
            lo = self.lows[i]
            if lo < min(self.lows[i - n:i]) and lo < min(self.lows[i + 1:t + 1]):
                out["pivot_low"] = lo
                self._add_pivot(lo)
                neck = self._double(i, lo, top=False)
                out["double_bottom"], out["bottom_neckline"] = int(not math.isnan(neck)), neck
                self.pivot_lows.append((i, lo))

        if t + 1 >= self.range_window:
            hh = max(self.highs[-self.range_window:])
            ll = min(self.lows[-self.range_window:])
            out["in_range"] = int(hh - ll <= self.range_pct * close)
            out["range_high"], out["range_low"] = hh, ll
        else:
            out["in_range"], out["range_high"], out["range_low"] = 0, math.nan, math.nan

        # Nearest level on each side; at equal prices the stronger, then the older, wins.
        below = [lv for lv in self.levels if lv.price <= close]
        above = [lv for lv in self.levels if lv.price > close]
        sup = max(below, key=lambda lv: (lv.price, lv.strength, -lv.id)) if below else None
        res = min(above, key=lambda lv: (lv.price, -lv.strength, lv.id)) if above else None
        for side, lv, dist in (
            ("support", sup, lambda p: (close - p) / close),
            ("resistance", res, lambda p: (p - close) / close),
        ):
            out[side] = lv.price if lv else math.nan
            out[f"{side}_strength"] = lv.strength if lv else math.nan
            out[f"{side}_touches"] = float(lv.touches) if lv else math.nan
            out[f"{side}_dist"] = dist(lv.price) if lv else math.nan
        out["n_levels"] = len(self.levels)
        return out

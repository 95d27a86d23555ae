from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

class LevelsSnapshot(NamedTuple):
    support: float
    support_strength: float
    support_touches: float
    support_dist: float
    resistance: float
    resistance_strength: float
    resistance_touches: float
    resistance_dist: float
    breakout: int
    breakout_level: float
    pivot_high: float
    pivot_low: float
    double_top: int
    top_neckline: float
    double_bottom: int
    bottom_neckline: float
    in_range: int
    range_high: float
    range_low: float
    n_levels: int

class SupportResistance:
    pivot_bars: int
    merge_tol: float
    half_life: float
    min_strength: float
    max_levels: int
    volume_mult: float
    volume_window: int
    min_separation: int
    min_depth: float
    range_window: int
    range_pct: float
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
    ) -> None: ...
    @property
    def ready(self) -> bool: ...
    def update(self, high: float, low: float, close: float, volume: float) -> LevelsSnapshot: ...
    def update_last(self, high: float, low: float, close: float, volume: float) -> LevelsSnapshot: ...
    def update_many(
        self, high: ArrayLike, low: ArrayLike, close: ArrayLike, volume: ArrayLike
    ) -> dict[str, np.ndarray]: ...
    def levels(self) -> list[tuple[float, int, float]]: ...
    def reset(self) -> None: ...

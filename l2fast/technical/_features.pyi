from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from l2fast.config import TechnicalConfig

SLOT_NAMES: tuple[str, ...]
FIRST_RSI_SLOT: int
MAX_RSI_PERIODS: int
MAX_TIMEFRAME_COUNT: int
EXTRA_KINDS: dict[str, tuple[str, ...]]
MAX_EXTRA_PERIOD: int

# ``extras``: objects with name, kind, periods, output, source and timeframe
# (l2fast.technical.state.ExtraFeature; the kernel reads them duck-typed).
def feature_names(config: TechnicalConfig, extras: Sequence[Any] = ()) -> tuple[str, ...]: ...
def feature_warmups(config: TechnicalConfig, extras: Sequence[Any] = ()) -> dict[str, int]: ...

class TechnicalState:
    values: npt.NDArray[np.float64]
    names: tuple[str, ...]
    index: dict[str, int]
    timeframes: tuple[str, ...]
    config: TechnicalConfig
    extras: tuple[tuple[str, str, tuple[int, ...], str, str, str], ...]
    bars: int
    # The kernel needs the config; l2fast.technical.state.TechnicalState defaults it.
    def __new__(cls, config: TechnicalConfig, extras: Sequence[Any] = ()) -> Self: ...
    def update(self, ts: int, open: float, high: float, low: float, close: float, volume: float) -> int: ...
    def update_many(
        self,
        ts: npt.ArrayLike,
        open: npt.ArrayLike,
        high: npt.ArrayLike,
        low: npt.ArrayLike,
        close: npt.ArrayLike,
        volume: npt.ArrayLike,
        record: Sequence[str] | None = None,
    ) -> npt.NDArray[np.float64] | None: ...
    def get(self, name: str) -> float: ...
    def as_dict(self) -> dict[str, float]: ...
    @property
    def gaps(self) -> int: ...
    @property
    def missing_bars(self) -> int: ...
    def timeframe_bars(self, tf: str) -> int: ...
    def format_table(self) -> str: ...

"""Type stubs for :mod:`l2fast.models._mlp` (the compiled MLP forward; see :mod:`l2fast.models.compiled`)."""

import enum
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# The C enum classes of _mlp.pxd (their members are its constants, not restated here).
MlpHead: type[enum.IntEnum]
MlpPrefixOp: type[enum.IntEnum]

LEVELS: tuple[str, ...]
MAX_LAYERS: int
MAX_PREFIX: int
MAX_CLIPS: int
ACTIVATIONS: dict[str, int]

def best_level() -> str: ...
def tanh_approx(x: npt.ArrayLike, level: str = ...) -> np.ndarray: ...

class MlpForward:
    """Every plain-MLP member's forward, batch 1, float32, one call."""

    level: int
    def __init__(self, row: np.ndarray, plans: Sequence[Any], level: str) -> None: ...
    @property
    def level_name(self) -> str: ...
    def __call__(self) -> None: ...
    def run_some(self, members: Sequence[int]) -> None: ...

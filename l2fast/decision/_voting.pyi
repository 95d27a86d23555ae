"""Type stubs for :mod:`l2fast.decision._voting` (the compiled voter; see :mod:`l2fast.decision.voting`)."""

import enum
from typing import Any

import numpy as np
import numpy.typing as npt

# The C enum classes of _voting.pxd (their members are its constants, not restated
# here); the name lists below derive from them.
MemberKindCode: type[enum.IntEnum]
MemberStatus: type[enum.IntEnum]
VoteGate: type[enum.IntEnum]

COMPONENTS: tuple[str, ...]
MEMBER_KINDS: tuple[str, ...]
MEMBER_STATUSES: tuple[str, ...]
GATE_CODES: tuple[tuple[int, str], ...]
MAX_MEMBERS: int
MAX_ACTIONS: int
MAX_TIMEFRAMES: int
MAX_WINDOW: int

class VoterCore:
    """The compiled voter of one symbol."""

    params: Any
    n_members: int
    n_timeframes: int
    n_features: int
    def __init__(self, params: Any) -> None: ...
    def technical(self, features: npt.ArrayLike, updated: int = -1) -> int: ...
    def technical_many(
        self, features: npt.ArrayLike, updated: npt.ArrayLike | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
    def vote(
        self,
        failed: npt.ArrayLike,
        actions: npt.ArrayLike,
        values: npt.ArrayLike,
        scores: npt.ArrayLike,
        multipliers: npt.ArrayLike,
    ) -> dict[str, Any]: ...
    def technical_votes(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def failures(self) -> tuple[int, ...]: ...
    @property
    def last_failures(self) -> tuple[int, ...]: ...
    @property
    def votes(self) -> int: ...
    def reset(self) -> None: ...

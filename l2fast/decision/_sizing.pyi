"""Type stubs for the compiled :mod:`l2fast.decision._sizing`."""

import enum
from collections.abc import Sequence
from typing import Any

# The C enum classes of _sizing.pxd (their members are its constants, not restated
# here); the name lists below derive from them.
SizingCode: type[enum.IntEnum]
KellySource: type[enum.IntEnum]

SIZING_CODES: tuple[str, ...]
KELLY_SOURCES: tuple[str, ...]

def finrl_shares(action: float, hmax: int, price: float, cash: float, held: float,
                 buy_cost: float) -> float: ...

class LiveTradeStats:
    window: int
    def __init__(self, window: int) -> None: ...
    def add(self, trade_return: float) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def wins(self) -> int: ...
    @property
    def losses(self) -> int: ...
    @property
    def sum_win(self) -> float: ...
    @property
    def sum_loss(self) -> float: ...
    @property
    def p(self) -> float: ...
    @property
    def b(self) -> float: ...
    def kelly_inputs(self, min_trades: int, manifest_p: float, manifest_b: float) -> tuple[float, float, str]: ...
    def reset(self) -> None: ...

class PositionSizer:
    def __init__(self, risk: Any) -> None: ...
    @property
    def params(self) -> dict[str, Any]: ...
    def size(
        self,
        equity: float,
        price: float,
        p: float,
        b: float,
        vol: float | None,
        *,
        direction: int = 1,
        other_vols: Sequence[float | None] = (),
        open_notional: Sequence[float] = (),
        open_rho: Sequence[float | None] = (),
        target_exposure: float = 1.0,
        risk_appetite: float = 1.0,
        confidence: float = 1.0,
        lot_step: float,
        min_notional: float,
        kelly_source: str = "manifest",
    ) -> dict[str, Any]: ...

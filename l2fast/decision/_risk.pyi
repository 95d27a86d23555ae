"""Type stubs for the compiled :mod:`l2fast.decision._risk`."""

import enum
from collections.abc import Iterable, Mapping
from typing import Any

# The C enum classes of risk.pxd (their members are its constants, not restated
# here); the name lists below derive from them.
RiskCode: type[enum.IntEnum]
RiskAction: type[enum.IntEnum]
StopMove: type[enum.IntEnum]

RISK_CODES: tuple[str, ...]
RISK_CODE_FIELDS: dict[str, tuple[str | None, str | None]]
ACTIONS: tuple[str, ...]
STOP_MOVES: tuple[str, ...]

class RiskGate:
    symbols: tuple[str, ...]
    def __init__(
        self,
        symbols: Iterable[str],
        initial_equity: float = 10000.0,
        *,
        atr_multiplier: float = 2.0,
        max_loss_per_trade: float = 0.02,
        take_profit_r: float = 2.0,
        breakeven_threshold: float = 1.5,
        trailing_atr_multiplier: float | None = None,
        max_daily_trades: int = 10,
        daily_loss_limit: float = 0.05,
        max_concurrent_positions: int = 3,
        exposure_limit: float = 0.8,
        max_position_size: float = 0.10,
        lot_step: float = 0.00001,
        min_notional: float = 10.0,
        symbol_rules: Mapping[str, Mapping[str, float]] | None = None,
        allow_short: bool = True,
    ) -> None: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def equity(self) -> float: ...
    @property
    def cash(self) -> float: ...
    @property
    def fees(self) -> float: ...
    @property
    def gross_exposure(self) -> float: ...
    @property
    def day(self) -> dict[str, Any]: ...
    def position(self, symbol: str) -> dict[str, Any] | None: ...
    @property
    def positions(self) -> dict[str, dict[str, Any]]: ...
    def on_bar(self, symbol: str, ts: int, high: float, low: float, close: float,
               atr: float | None) -> dict[str, Any]: ...
    def check(self, symbol: str, side: str, qty: float, price: float, atr: float | None, ts: int, *,
              commit: bool = True) -> dict[str, Any]: ...
    def on_fill(self, symbol: str, side: str, qty: float, price: float, ts: int,
                fee: float = 0.0) -> dict[str, Any]: ...
    def reset(self) -> None: ...

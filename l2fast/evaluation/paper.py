"""A paper execution layer (L1) for replays: it executes L2's signals against the bars.

:class:`PaperBroker` turns each :class:`~l2fast.signals.TacticalSignal` into an order,
fills it on the symbol's next bar, watches the open position's stop-loss and
take-profit, charges fees and slippage and keeps its own cash, positions, fills, closed
trades and equity curve. It is pure Python and knows nothing of the engine: the replay
loop (:mod:`l2fast.evaluation.replay`) reports each fill to the engine.

Orders (:meth:`PaperBroker.on_signal`, after the engine answered a bar):

- a buy or sell while flat: an entry of ``signal.qty`` with the signal's ``stop_loss``
  and ``take_profit``;
- a buy or sell against the open position: an exit of the whole position;
- a hold while a position is open: its ``stop_loss``/``take_profit`` (moved by the
  engine's trailing and breakeven rules) replace the position's levels from the next
  bar on;
- a buy or sell on the side of the open position, or while an order is pending, is
  ignored and counted in :attr:`PaperBroker.ignored_signals` (the engine never sends one
  while every fill is reported to it).

Fills (:meth:`PaperBroker.on_bar`, per bar of a symbol, in this order):

1. The pending order fills at this bar's OPEN (the next bar after its signal; a gap in
   the data delays it to the next bar that exists).
2. The open position's levels are checked against this bar's range, the bar of its entry
   included (the entry filled at the open, so the whole range came after it):

   - long: the stop is touched when ``low <= stop`` and fills at ``min(stop, open)`` (a
     bar opening below the stop gapped through it: the fill is the open); the
     take-profit is touched when ``high >= take_profit`` and fills at
     ``max(take_profit, open)``;
   - short, mirrored: the stop when ``high >= stop``, at ``max(stop, open)``; the
     take-profit when ``low <= take_profit``, at ``min(take_profit, open)``;
   - the open is the bar's first price, so a level the open is already through fills
     first; otherwise, when the range touches both levels, the stop is assumed to come
     first (the path inside a bar is unknown: the conservative choice).
3. The symbol is marked at the close and the equity (cash plus every open position at
   its symbol's last close) is appended to :attr:`PaperBroker.equity_curve`.

Prices and costs: every fill (take-profits included, treated as market orders on touch:
conservative) is worsened by the slippage, a buy at ``price * (1 + slippage_bps / 1e4)``
and a sell at ``price * (1 - slippage_bps / 1e4)``; the fee is ``qty * fill_price *
fee_bps / 1e4`` in quote currency. Cash moves by ``-side * qty * fill_price - fee``. A
closed trade's PnL is ``side * qty * (exit - entry) - entry_fee - exit_fee``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from l2fast.config import EngineConfig
from l2fast.signals import Side, TacticalSignal

__all__ = ["DEFAULT_FEE_BPS", "DEFAULT_SLIPPAGE_BPS", "FILL_REASONS", "Fill", "Order", "PaperBroker", "PaperPosition",
           "Trade"]

#: The paper L1's default fee per fill, basis points of its notional: the replay's, the
#: backtest's and the CLI's ``--fee-bps``. An evaluation setting, not the engine's (the
#: engine's config, saved in its snapshots, never sees it).
DEFAULT_FEE_BPS = 10.0
#: The paper L1's default price worsening per fill, basis points (``--slippage-bps``).
DEFAULT_SLIPPAGE_BPS = 2.0

#: Fill reasons, in the order a bar can produce them.
FILL_REASONS: tuple[str, ...] = ("entry", "exit", "stop_loss", "take_profit")


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution.

    Attributes:
        symbol: Trading pair.
        side: ``"buy"`` or ``"sell"``.
        qty: Executed quantity (base units), > 0.
        price: Executed price, slippage included.
        fee: Fee in quote currency.
        ts_ms: Open time of the bar during which it executed (what L1 reports to L2).
        reason: ``"entry"``, ``"exit"`` (an exit signal), ``"stop_loss"`` or ``"take_profit"``.
    """

    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    ts_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Order:
    """An order waiting for its symbol's next bar.

    Attributes:
        symbol: Trading pair.
        side: ``"buy"`` or ``"sell"``.
        qty: Quantity to execute.
        reason: ``"entry"`` or ``"exit"``.
        stop_loss: The entry's stop price (None for an exit or when the signal had none).
        take_profit: The entry's take-profit price (likewise).
        signal_ts_ms: Open time of the bar whose signal placed it.
    """

    symbol: str
    side: str
    qty: float
    reason: str
    stop_loss: float | None
    take_profit: float | None
    signal_ts_ms: int


@dataclass(slots=True)
class PaperPosition:
    """An open position of the broker.

    Attributes:
        side: +1 long, -1 short.
        qty: Quantity held (base units).
        entry: Entry fill price.
        stop_loss: Stop price in force, or None.
        take_profit: Take-profit price in force, or None.
        opened_ts_ms: Bar open time of the entry fill.
        entry_fee: Fee paid on the entry.
    """

    side: int
    qty: float
    entry: float
    stop_loss: float | None
    take_profit: float | None
    opened_ts_ms: int
    entry_fee: float


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed position.

    Attributes:
        symbol: Trading pair.
        side: ``"long"`` or ``"short"``.
        qty: Quantity (base units).
        entry_price: Entry fill price.
        exit_price: Exit fill price.
        entry_ts_ms: Bar open time of the entry fill.
        exit_ts_ms: Bar open time of the exit fill.
        fees: Entry and exit fees.
        pnl: ``side * qty * (exit - entry) - fees``.
        exit_reason: ``"exit"``, ``"stop_loss"`` or ``"take_profit"``.
    """

    symbol: str
    side: str
    qty: float
    entry_price: float
    exit_price: float
    entry_ts_ms: int
    exit_ts_ms: int
    fees: float
    pnl: float
    exit_reason: str

    @property
    def return_(self) -> float:
        """PnL over the entry notional."""
        return self.pnl / (self.qty * self.entry_price)


def _bps(name: str, value: float, upper: float) -> float:
    x = float(value)
    if not (math.isfinite(x) and 0.0 <= x < upper):
        raise ValueError(f"{name}={value!r}: must be a number in [0, {upper:g})")
    return x / 10_000.0


class PaperBroker:
    """Paper L1: orders from signals, fills on the next bar (rules: module docstring).

    Args:
        initial_equity: Cash before the first fill (quote currency), > 0; by default the
            engine's default ``engine.initial_equity``.
        fee_bps: Fee per fill in basis points of its notional, in [0, 10000).
        slippage_bps: Price worsening per fill in basis points, in [0, 10000).

    Raises:
        ValueError: An argument is out of range.
    """

    def __init__(self, initial_equity: float = EngineConfig.initial_equity, *, fee_bps: float = DEFAULT_FEE_BPS,
                 slippage_bps: float = DEFAULT_SLIPPAGE_BPS) -> None:
        equity = float(initial_equity)
        if not (math.isfinite(equity) and equity > 0.0):
            raise ValueError(f"initial_equity={initial_equity!r}: must be a finite number > 0")
        self.initial_equity = equity
        self.fee_rate = _bps("fee_bps", fee_bps, 10_000.0)
        self.slippage = _bps("slippage_bps", slippage_bps, 10_000.0)
        self.cash = equity
        self.fees = 0.0
        self.positions: dict[str, PaperPosition] = {}
        self.pending: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.trades: list[Trade] = []
        #: Marked equity after each bar, in bar order.
        self.equity_curve: list[float] = []
        self.ignored_signals = 0
        self._marks: dict[str, float] = {}

    @property
    def equity(self) -> float:
        """Cash plus every open position marked at its symbol's last close."""
        equity = self.cash
        for symbol, pos in self.positions.items():
            equity += pos.side * pos.qty * self._marks[symbol]
        return equity

    # ------------------------------------------------------------------ bars

    def on_bar(self, symbol: str, ts_ms: int, open_: float, high: float, low: float,
               close: float) -> list[Fill]:
        """Execute what this bar of ``symbol`` triggers, mark it and record the equity.

        Args:
            symbol: Trading pair.
            ts_ms: Bar open time (epoch ms UTC); the fills carry it.
            open_, high, low, close: The bar's prices.

        Returns:
            The fills of this bar in execution order (to report to L2 before its ``on_bar``).
        """
        fills: list[Fill] = []
        order = self.pending.pop(symbol, None)
        if order is not None:
            fills.append(self._execute_order(order, ts_ms, open_))
        pos = self.positions.get(symbol)
        if pos is not None:
            hit = self._level_hit(pos, open_, high, low)
            if hit is not None:
                reason, price = hit
                fills.append(self._close(symbol, pos, price, ts_ms, reason))
        self._marks[symbol] = close
        self.equity_curve.append(self.equity)
        return fills

    @staticmethod
    def _level_hit(pos: PaperPosition, open_: float, high: float, low: float) -> tuple[str, float] | None:
        """The level this bar executes and its reference price (before slippage), or None."""
        stop, tp = pos.stop_loss, pos.take_profit
        long = pos.side > 0
        tp_hit = tp is not None and (high >= tp if long else low <= tp)
        if stop is not None and (low <= stop if long else high >= stop):
            # Both touched: the stop first, unless the bar opened through the take-profit.
            tp_at_open = tp is not None and tp_hit and (open_ >= tp if long else open_ <= tp)
            if not tp_at_open:
                return "stop_loss", min(stop, open_) if long else max(stop, open_)
        if tp is not None and tp_hit:
            return "take_profit", max(tp, open_) if long else min(tp, open_)
        return None

    def _fill(self, symbol: str, side: int, qty: float, reference: float, ts_ms: int,
              reason: str) -> Fill:
        price = reference * (1.0 + side * self.slippage)
        fee = qty * price * self.fee_rate
        self.cash -= side * qty * price + fee
        self.fees += fee
        fill = Fill(symbol, "buy" if side > 0 else "sell", qty, price, fee, ts_ms, reason)
        self.fills.append(fill)
        return fill

    def _execute_order(self, order: Order, ts_ms: int, open_: float) -> Fill:
        pos = self.positions.get(order.symbol)
        if order.reason == "exit":
            # An exit order is made for an open position, executed before any level of the bar.
            assert pos is not None
            return self._close(order.symbol, pos, open_, ts_ms, "exit")
        side = 1 if order.side == "buy" else -1
        fill = self._fill(order.symbol, side, order.qty, open_, ts_ms, "entry")
        self.positions[order.symbol] = PaperPosition(side, order.qty, fill.price, order.stop_loss,
                                                     order.take_profit, ts_ms, fill.fee)
        return fill

    def _close(self, symbol: str, pos: PaperPosition, reference: float, ts_ms: int, reason: str) -> Fill:
        fill = self._fill(symbol, -pos.side, pos.qty, reference, ts_ms, reason)
        fees = pos.entry_fee + fill.fee
        pnl = pos.side * pos.qty * (fill.price - pos.entry) - fees
        self.trades.append(Trade(symbol, "long" if pos.side > 0 else "short", pos.qty, pos.entry,
                                 fill.price, pos.opened_ts_ms, ts_ms, fees, pnl, reason))
        del self.positions[symbol]
        return fill

    # ---------------------------------------------------------------- signals

    def on_signal(self, signal: TacticalSignal) -> None:
        """Turn L2's signal for a bar into an order for the symbol's next bar (module docstring)."""
        symbol = signal.symbol
        pos = self.positions.get(symbol)
        if signal.side is Side.HOLD:
            if pos is not None:
                if signal.stop_loss is not None:
                    pos.stop_loss = signal.stop_loss
                if signal.take_profit is not None:
                    pos.take_profit = signal.take_profit
            return
        side = 1 if signal.side is Side.BUY else -1
        if symbol in self.pending or (pos is not None and pos.side == side):
            self.ignored_signals += 1
        elif pos is not None:
            self.pending[symbol] = Order(symbol, signal.side.value, pos.qty, "exit", None, None, signal.ts_ms)
        else:
            self.pending[symbol] = Order(symbol, signal.side.value, signal.qty, "entry",
                                         signal.stop_loss, signal.take_profit, signal.ts_ms)

"""Pure-Python twin of :mod:`l2fast.decision._risk`, written from the rules in
:mod:`l2fast.decision.risk` (same API and dicts as :class:`l2fast.decision.risk.RiskGate`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reference.sizing import round_down_to_lots

DAY_MS = 86_400_000
SIDES = {"buy": 1, "sell": -1}
POSITION = {1: "long", -1: "short", 0: "flat"}


@dataclass
class _Position:
    side: int
    qty: float
    entry: float
    stop: float
    take_profit: float
    r: float
    best: float
    breakeven: bool
    opened_ts: int
    trade_pnl: float
    trade_cost: float


@dataclass
class _Reservation:
    side: int
    qty: float
    price: float
    r: float
    ts: int


def _note(code: str, value_name: str | None, value: float, limit_name: str | None, limit: float) -> dict:
    note: dict = {"code": code}
    if value_name is not None:
        note[value_name] = value if math.isfinite(value) else None
    if limit_name is not None:
        note[limit_name] = limit
    return note


class RiskGateRef:
    """The risk gate over a fixed universe (see :mod:`l2fast.decision.risk` for the rules)."""

    def __init__(self, symbols, initial_equity: float, risk) -> None:
        # ``risk``: the parameters by attribute, as RiskGate reads them (a RiskConfig).
        self.symbols = tuple(symbols)
        self.atr_multiplier = risk.atr_multiplier
        self.max_loss_per_trade = risk.max_loss_per_trade
        self.take_profit_r = risk.take_profit_r
        self.breakeven_threshold = risk.breakeven_threshold
        trailing = risk.trailing_atr_multiplier
        self.trailing = risk.atr_multiplier if trailing is None else trailing
        self.max_daily_trades = risk.max_daily_trades
        self.daily_loss_limit = risk.daily_loss_limit
        self.max_concurrent_positions = risk.max_concurrent_positions
        self.exposure_limit = risk.exposure_limit
        self.max_position_size = risk.max_position_size
        self.allow_short = risk.allow_short
        threshold = risk.turbulence_threshold
        self.turbulence_threshold = math.inf if threshold is None else threshold
        self.turbulence = 0.0
        self.lot_step = {s: risk.lot_step_for(s) for s in self.symbols}
        self.min_notional = {s: risk.min_notional_for(s) for s in self.symbols}
        self.positions: dict[str, _Position] = {}
        self.pending: dict[str, _Reservation] = {}
        self.mark: dict[str, float] = {}
        self.atr: dict[str, float] = {}
        self.cash = initial_equity
        self.fees = 0.0
        self.day = -1
        self.day_start_equity = initial_equity
        self.realized_today = 0.0
        self.entries_today = 0
        self.halted = False
        self.halt_loss = 0.0

    # -------------------------------------------------------------- accounting

    @property
    def equity(self) -> float:
        equity = self.cash
        for s in self.symbols:
            if s in self.positions:
                p = self.positions[s]
                equity += p.side * p.qty * self.mark[s]
        return equity

    def set_turbulence(self, value: float) -> None:
        self.turbulence = value

    def account(self, symbol: str) -> dict:
        # The features a model observes, from the position's definition.
        p = self.positions.get(symbol)
        if p is None:
            return {"cash": self.cash, "holdings": 0.0, "position_fraction": 0.0, "unrealized_pnl": 0.0}
        mark, equity = self.mark[symbol], self.equity
        return {"cash": self.cash, "holdings": p.side * p.qty,
                "position_fraction": p.side * p.qty * mark / equity if equity > 0 else 0.0,
                "unrealized_pnl": p.side * p.qty * (mark - p.entry)}

    def position(self, symbol: str) -> dict | None:
        p = self.positions.get(symbol)
        if p is None:
            return None
        return {"position": POSITION[p.side], "qty": p.qty, "entry": p.entry, "stop_loss": p.stop,
                "take_profit": p.take_profit, "r": p.r, "best": p.best, "breakeven": p.breakeven,
                "opened_ts": p.opened_ts}

    def _loss(self, day_start: float, equity: float) -> float:
        return (day_start - equity) / day_start if day_start > 0 else 0.0

    def _roll(self, ts: int) -> None:
        if ts // DAY_MS > self.day:
            self.day = ts // DAY_MS
            self.day_start_equity = self.equity
            self.realized_today = 0.0
            self.entries_today = 0
            self.halted = False
            self.halt_loss = 0.0

    def _latch(self) -> None:
        if not self.halted:
            loss = self._loss(self.day_start_equity, self.equity)
            if loss >= self.daily_loss_limit:
                self.halted, self.halt_loss = True, loss

    # ---------------------------------------------------------------- per bar

    def on_bar(self, symbol: str, ts: int, high: float, low: float, close: float, atr: float | None) -> dict:
        self._roll(ts)
        res = self.pending.get(symbol)
        if res is not None and res.ts < ts:
            del self.pending[symbol]
        self.mark[symbol] = close
        self.atr[symbol] = math.nan if atr is None else atr
        move, stop_hit, tp_hit = "none", False, False
        p = self.positions.get(symbol)
        if p is not None:
            long = p.side == 1
            stop_hit = low <= p.stop if long else high >= p.stop
            tp_hit = high >= p.take_profit if long else low <= p.take_profit
            p.best = max(p.best, high) if long else min(p.best, low)
            profit = p.best - p.entry if long else p.entry - p.best
            if not p.breakeven and profit >= self.breakeven_threshold * p.r:
                p.breakeven = True
                if (p.entry > p.stop) if long else (p.entry < p.stop):
                    p.stop, move = p.entry, "breakeven"
            if p.breakeven and atr is not None and atr > 0:
                trail = p.best - p.side * self.trailing * atr
                if (trail > p.stop) if long else (trail < p.stop):
                    p.stop, move = trail, "trailing"
        self._latch()
        equity = self.equity
        return {
            "position": POSITION[p.side if p else 0], "qty": p.qty if p else 0.0,
            "entry": p.entry if p else None, "stop_loss": p.stop if p else None,
            "take_profit": p.take_profit if p else None, "r": p.r if p else None,
            "best": p.best if p else None, "breakeven": p.breakeven if p else False,
            "stop_move": move, "stop_hit": stop_hit, "take_profit_hit": tp_hit,
            "unrealized": p.side * p.qty * (close - p.entry) if p else 0.0, "equity": equity,
            "day_start_equity": self.day_start_equity,
            "day_loss": max(0.0, self._loss(self.day_start_equity, equity)),
            "halted": self.halted, "entries_today": self.entries_today,
        }

    # ------------------------------------------------------------------ check

    def check(self, symbol: str, side: str, qty: float, price: float, atr: float | None, ts: int, *,
              commit: bool = True) -> dict:
        s = SIDES[side]
        out = {"action": "hold", "side": side, "qty": 0.0, "qty_requested": qty, "price": price,
               "notional": 0.0, "stop_loss": None, "take_profit": None, "r": None, "denial": None,
               "caps": []}
        p = self.positions.get(symbol)
        if p is not None and p.side == -s:
            out.update(action="exit", qty=p.qty, notional=p.qty * price)
            return out

        def deny(note: dict) -> dict:
            out["denial"] = note
            return out

        equity = self.equity
        new_day = ts // DAY_MS > self.day
        day_start = equity if new_day else self.day_start_equity
        entries = 0 if new_day else self.entries_today
        own = self.pending.get(symbol)
        if not new_day and own is not None and own.ts == ts:
            entries -= 1  # this bar's own entry would be replaced, not added
        halted = False if new_day else self.halted
        if equity <= 0:
            return deny(_note("EQUITY_DEPLETED", "equity", equity, None, 0))
        if s == -1 and not self.allow_short:
            return deny({"code": "SHORT_NOT_ALLOWED"})
        if p is not None:
            return deny(_note("POSITION_OPEN", "qty", p.qty, None, 0))
        if self.turbulence >= self.turbulence_threshold:
            return deny(_note("TURBULENCE", "turbulence", self.turbulence, "threshold", self.turbulence_threshold))
        if halted:
            return deny(_note("DAILY_LOSS_LIMIT", "loss", self.halt_loss, "limit", self.daily_loss_limit))
        loss = self._loss(day_start, equity)
        if loss >= self.daily_loss_limit:
            return deny(_note("DAILY_LOSS_LIMIT", "loss", loss, "limit", self.daily_loss_limit))
        if entries >= self.max_daily_trades:
            return deny({"code": "MAX_DAILY_TRADES", "trades": entries, "limit": self.max_daily_trades})
        slots, gross = 0, 0.0
        for sym in self.symbols:
            if sym in self.positions:
                slots += 1
                gross += self.positions[sym].qty * self.mark[sym]
            elif sym != symbol and sym in self.pending:
                slots += 1
                gross += self.pending[sym].qty * self.pending[sym].price
        if slots >= self.max_concurrent_positions:
            return deny({"code": "MAX_CONCURRENT_POSITIONS", "positions": slots,
                         "limit": self.max_concurrent_positions})
        r = self.atr_multiplier * (math.nan if atr is None else atr)
        stop = price - s * r
        tp = price + s * self.take_profit_r * r
        ordered = stop < price < tp if s == 1 else tp < price < stop
        if not (r > 0 and stop > 0 and tp > 0 and ordered and math.isfinite(tp)):
            return deny(_note("INVALID_STOP", "atr", math.nan if atr is None else atr, "price", price))

        q = qty
        caps = out["caps"]
        if q * price > self.max_position_size * equity:
            caps.append(_note("MAX_POSITION_SIZE", "size", q * price / equity, "limit", self.max_position_size))
            q = self.max_position_size * equity / price
            caps[-1]["qty"] = q
        if q * r > self.max_loss_per_trade * equity:
            caps.append(_note("MAX_LOSS_PER_TRADE", "loss", q * r / equity, "limit", self.max_loss_per_trade))
            q = self.max_loss_per_trade * equity / r
            caps[-1]["qty"] = q
        if gross + q * price > self.exposure_limit * equity:
            exposure = (gross + q * price) / equity
            room = self.exposure_limit * equity - gross
            if room <= 0:
                return deny(_note("EXPOSURE_LIMIT", "exposure", exposure, "limit", self.exposure_limit))
            caps.append(_note("EXPOSURE_LIMIT", "exposure", exposure, "limit", self.exposure_limit))
            q = room / price
            caps[-1]["qty"] = q

        def within_limits(x: float) -> bool:
            return (x * price <= self.max_position_size * equity
                    and x * r <= self.max_loss_per_trade * equity
                    and gross + x * price <= self.exposure_limit * equity)

        final = round_down_to_lots(q, self.lot_step[symbol], within_limits)
        if final == 0 or final * price < self.min_notional[symbol]:
            return deny(_note("BELOW_MIN_NOTIONAL", "notional", final * price, "min_notional",
                              self.min_notional[symbol]))
        out.update(action="entry", qty=final, notional=final * price, stop_loss=stop, take_profit=tp, r=r)
        if commit:
            self._roll(ts)
            res = self.pending.get(symbol)
            if not (res is not None and res.ts == ts):
                self.entries_today += 1
            self.pending[symbol] = _Reservation(s, final, price, r, ts)
        return out

    # ------------------------------------------------------------------ fills

    def on_fill(self, symbol: str, side: str, qty: float, price: float, ts: int, fee: float = 0.0) -> dict:
        s = SIDES[side]
        self._roll(ts)
        self.cash -= s * qty * price
        self.cash -= fee
        self.fees += fee
        self.mark[symbol] = price
        opened = closed = False
        realized = 0.0
        trade_return = None
        rest, fee_open = qty, fee
        p = self.positions.get(symbol)
        if p is not None and p.side == -s:
            closed_qty = min(qty, p.qty)
            fee_close = fee * (closed_qty / qty)
            realized = (price - p.entry) * p.side * closed_qty - fee_close
            p.trade_pnl += realized
            if qty >= p.qty:
                closed = True
                trade_return = p.trade_pnl / p.trade_cost
                del self.positions[symbol]
                p = None
                rest = qty - closed_qty
            else:
                p.qty -= qty
                rest = 0.0
            fee_open = fee - fee_close
        if rest > 0:
            reservation = self.pending.get(symbol)
            reserved = reservation is not None and reservation.side == s
            if p is None:
                p = _Position(s, rest, price, 0.0, 0.0, 0.0, price, False, ts, -fee_open, rest * price)
                self.positions[symbol] = p
                if not reserved:
                    self.entries_today += 1
                opened = True
            else:
                total = p.qty + rest
                p.entry = (p.qty * p.entry + rest * price) / total
                p.qty = total
                p.trade_pnl -= fee_open
                p.trade_cost += rest * price
            if reserved:
                r = reservation.r
                del self.pending[symbol]
            elif self.atr.get(symbol, math.nan) > 0:
                r = self.atr_multiplier * self.atr[symbol]
            else:
                r = self.max_loss_per_trade * self.equity / p.qty
                if not r > 0:
                    r = price
            p.r = r
            p.stop = p.entry - p.side * r
            p.take_profit = p.entry + p.side * self.take_profit_r * r
            p.best = p.entry
            p.breakeven = False
            realized -= fee_open
        self.realized_today += realized
        self._latch()
        return {"opened": opened, "closed": closed, "realized": realized, "trade_return": trade_return,
                "position": POSITION[p.side if p else 0], "qty": p.qty if p else 0.0,
                "equity": self.equity}

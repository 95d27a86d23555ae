"""The risk gate: stops, take-profits, per-day limits, exposure and portfolio accounting.

One compiled state per engine (``RiskState`` in ``risk.pxd``, up to 16 symbols) holds
cash, positions, reservations and the UTC day's counters; :class:`RiskGate` wraps it
with validation and names. Equity is ``cash + sum(side * qty * mark)``, marked at each
symbol's last bar close or fill price. R is the stop distance per unit.

Entries (a buy or sell while flat) are checked in this order; the first failing rule
denies with a code and its numbers, e.g. ``{"code": "DAILY_LOSS_LIMIT", "loss": 0.052,
"limit": 0.05}``:

1. ``EQUITY_DEPLETED`` (``equity``): equity <= 0.
2. ``SHORT_NOT_ALLOWED``: a sell while flat when shorting is disabled.
3. ``POSITION_OPEN`` (``qty``): a position on the same side is already open (no pyramiding).
4. ``DAILY_LOSS_LIMIT`` (``loss``, ``limit``): the UTC day's loss ``(day_start_equity -
   equity) / day_start_equity`` reached ``daily_loss_limit``. Once reached (at a bar,
   fill or check) new entries stay halted until 00:00 UTC even if equity recovers;
   ``loss`` is the loss that set the halt. Exits stay allowed.
5. ``MAX_DAILY_TRADES`` (``trades``, ``limit``): ``max_daily_trades`` entries were
   accepted this UTC day (plus fills that opened a position no check reserved).
6. ``MAX_CONCURRENT_POSITIONS`` (``positions``, ``limit``): open positions plus other
   symbols' reservations reached ``max_concurrent_positions``.
7. ``INVALID_STOP`` (``atr``, ``price``): no usable levels: ``R = atr_multiplier * ATR``
   is not > 0 (ATR unknown or 0), or the stop or take-profit would be <= 0, or they do
   not differ from the price in floating point.

The levels of an entry at reference price P (the bar's close) with side s (+1 buy,
-1 sell): ``stop = P - s * R``, ``take_profit = P + s * take_profit_r * R``; so
``stop < P < take_profit`` for buys and the mirror for sells. The quantity asked (from
:mod:`l2fast.decision.sizing`) is then reduced, each reduction reported in ``caps`` with the
quantity after it:

8. ``MAX_POSITION_SIZE`` (``size``, ``limit``): ``qty * P <= max_position_size * equity``.
9. ``MAX_LOSS_PER_TRADE`` (``loss``, ``limit``): ``qty * R <= max_loss_per_trade * equity``.
10. ``EXPOSURE_LIMIT`` (``exposure``, ``limit``): ``gross + qty * P <= exposure_limit *
    equity``, ``gross`` being the open notional plus the other symbols' reservations;
    with no room left the entry is denied with this code.
11. The quantity is rounded down to the symbol's ``lot_step`` (keeping every limit above
    exactly); ``BELOW_MIN_NOTIONAL`` (``notional``, ``min_notional``) if the notional is
    then below ``min_notional`` (or no whole lot remains).

Exits (a sell while long, a buy while short) close the whole position and are never
blocked by any entry rule. An accepted entry (``check(..., commit=True)``) is counted for
the day and reserves its slot and exposure until its fill or the symbol's next bar.

Open positions, per bar (:meth:`RiskGate.on_bar`): ``stop_hit`` / ``take_profit_hit``
say whether the bar's range touched the levels in force when it opened; then ``best``
(highest high of a long, lowest low of a short since entry) is updated; once ``best``
is ``breakeven_threshold * R`` in profit the stop moves to the entry (breakeven); from
then on it trails at ``best - s * trailing_atr_multiplier * ATR``. The stop only ever
moves in the position's favour. The updated stop is the one the signal carries.

Fills (:meth:`RiskGate.on_fill`) move cash (``-s * qty * price - fee``) and the
position: a fill against the position closes up to its quantity (realizing
``(price - entry) * side * qty`` minus its share of the fee) and opens the rest the other
way; a fill opening a position places its stop and take-profit R from the fill price,
R being the reserved entry's (else ``atr_multiplier`` times the symbol's last ATR, else
the distance at which the loss cap would be hit); an add re-opens the position at the
average entry. When a position closes, its trade return (PnL, fees included, over its
entry notional) feeds :class:`l2fast.decision.sizing.LiveTradeStats`.

The UTC day (``ts // 86400000``) rolls at the first bar, fill or accepted entry carrying
a later day: ``day_start_equity`` is the equity at the previous marks, and the day's
entries, realized PnL and halt are reset.
"""

from __future__ import annotations

from collections.abc import Sequence

from l2fast.decision._risk import ACTIONS, RISK_CODE_FIELDS, RISK_CODES, STOP_MOVES, RiskGate
from l2fast.config import L2Config, RiskConfig

__all__ = ["ACTIONS", "RISK_CODES", "RISK_CODE_FIELDS", "STOP_MOVES", "RiskGate", "risk_gate_from_config"]


def risk_gate_from_config(config: L2Config | RiskConfig, symbols: Sequence[str],
                          initial_equity: float | None = None, *, allow_short: bool = True) -> RiskGate:
    """A :class:`RiskGate` over ``symbols`` with the ``risk`` section's parameters.

    Args:
        config: The whole config or its ``risk`` section.
        symbols: The universe.
        initial_equity: Starting equity; None means ``engine.initial_equity`` (10,000
            with a bare ``RiskConfig``).
        allow_short: A sell while flat opens a short.
    """
    if isinstance(config, L2Config):
        risk = config.risk
        equity = config.engine.initial_equity if initial_equity is None else initial_equity
    else:
        risk = config
        equity = 10_000.0 if initial_equity is None else initial_equity
    rules = {s: dict(r) for s, r in risk.symbols.items() if s in symbols}
    return RiskGate(
        symbols, equity,
        atr_multiplier=risk.atr_multiplier, max_loss_per_trade=risk.max_loss_per_trade,
        take_profit_r=risk.take_profit_r, breakeven_threshold=risk.breakeven_threshold,
        trailing_atr_multiplier=risk.trailing_atr_multiplier, max_daily_trades=risk.max_daily_trades,
        daily_loss_limit=risk.daily_loss_limit, max_concurrent_positions=risk.max_concurrent_positions,
        exposure_limit=risk.exposure_limit, max_position_size=risk.max_position_size,
        lot_step=risk.lot_step, min_notional=risk.min_notional, symbol_rules=rules,
        allow_short=allow_short)

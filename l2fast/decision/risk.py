"""The risk gate: stops, take-profits, per-day limits, exposure and portfolio accounting.

One compiled state per engine (``RiskState`` in ``_risk.pxd``, up to 16 symbols) holds
cash, positions, reservations and the UTC day's counters; :class:`RiskGate` wraps it
with validation and names. Equity is ``cash + sum(side * qty * mark)``, marked at each
symbol's last bar close or fill price. R is the stop distance per unit.

Entries (a buy or sell while flat) are checked in this order; the first failing rule
denies with a code and its numbers, e.g. ``{"code": "DAILY_LOSS_LIMIT", "loss": 0.052,
"limit": 0.05}``:

1. ``EQUITY_DEPLETED`` (``equity``): equity <= 0.
2. ``SHORT_NOT_ALLOWED``: a sell while flat when shorting is disabled.
3. ``POSITION_OPEN`` (``qty``): a position on the same side is already open (no pyramiding).
4. ``TURBULENCE`` (``turbulence``, ``threshold``): FinRL's turbulence index, as the engine
   last stepped it (:meth:`RiskGate.set_turbulence`), is at or above
   ``turbulence_threshold`` (when set). The engine also exits every open position then.
5. ``DAILY_LOSS_LIMIT`` (``loss``, ``limit``): the UTC day's loss ``(day_start_equity -
   equity) / day_start_equity`` reached ``daily_loss_limit``. Once reached (at a bar,
   fill or check) new entries stay halted until 00:00 UTC even if equity recovers;
   ``loss`` is the loss that set the halt. Exits stay allowed.
6. ``MAX_DAILY_TRADES`` (``trades``, ``limit``): ``max_daily_trades`` entries were
   accepted this UTC day (plus fills that opened a position no check reserved).
7. ``MAX_CONCURRENT_POSITIONS`` (``positions``, ``limit``): open positions plus other
   symbols' reservations reached ``max_concurrent_positions``.
8. ``INVALID_STOP`` (``atr``, ``price``): no usable levels: ``R = atr_multiplier * ATR``
   is not > 0 (ATR unknown or 0), or the stop or take-profit would be <= 0, or they do
   not differ from the price in floating point.

The levels of an entry at reference price P (the bar's close) with side s (+1 buy,
-1 sell): ``stop = P - s * R``, ``take_profit = P + s * take_profit_r * R``; so
``stop < P < take_profit`` for buys and the mirror for sells. The quantity asked (from
:mod:`l2fast.decision.sizing`) is then reduced, each reduction reported in ``caps`` with the
quantity after it:

9. ``MAX_POSITION_SIZE`` (``size``, ``limit``): ``qty * P <= max_position_size * equity``.
10. ``MAX_LOSS_PER_TRADE`` (``loss``, ``limit``): ``qty * R <= max_loss_per_trade * equity``.
11. ``EXPOSURE_LIMIT`` (``exposure``, ``limit``): ``gross + qty * P <= exposure_limit *
    equity``, ``gross`` being the open notional plus the other symbols' reservations;
    with no room left the entry is denied with this code.
12. The quantity is rounded down to the symbol's ``lot_step`` (keeping every limit above
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

A gate is built from the config's ``risk`` section, the single owner of its parameters:
``RiskGate(symbols, config.engine.initial_equity, config.risk)`` (the engine fills its
risk state through the same kernel function).

The UTC day (``ts // 86400000``) rolls at the first bar, fill or accepted entry carrying
a later day: ``day_start_equity`` is the equity at the previous marks, and the day's
entries, realized PnL and halt are reset.
"""

from __future__ import annotations

from l2fast.decision._risk import ACTIONS, RISK_CODE_FIELDS, RISK_CODES, STOP_MOVES, RiskGate

__all__ = ["ACTIONS", "RISK_CODES", "RISK_CODE_FIELDS", "STOP_MOVES", "RiskGate"]

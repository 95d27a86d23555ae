"""Position sizing: how much to buy or sell when the vote says to enter.

Every entry is sized from plain numbers by one compiled call (the engine calls the same
kernel, ``sizing_compute`` in ``_sizing.pxd``, without Python objects). Each factor below
is returned by :meth:`PositionSizer.size` and goes into ``reasoning["sizing"]``.

Formulas, applied in this order:

1. **Kelly inputs** ``p`` (win rate) and ``b`` (payoff ratio = mean win / mean loss):
   the ensemble members' manifest metrics, replaced by the live statistics of the last
   ``engine.live_stats_window`` closed trades (:class:`LiveTradeStats`) once
   ``risk.min_trades_for_live_stats`` of them exist. A trade's return is its PnL, fees
   included, over its entry notional; ``p = wins / trades`` (return > 0 is a win, < 0 a
   loss, exactly 0 neither); ``b = (sum of wins / wins) / (sum of |losses| / losses)``,
   0 when there is no win or no loss (as the manifests' ``payoff_ratio``).
2. **Fractional Kelly**: ``f* = p - (1 - p) / b`` clamped to ``[0, 1]`` (0 when
   ``b <= 0``); ``kelly = kelly_fraction * f*``.
3. **Volatility targeting**: ``vol_used = max(vol, volatility_target / max_vol_scale)``
   (the floor guards a zero volatility on a flat market); ``vol_scale =
   volatility_target / vol_used``, so ``0 < vol_scale <= max_vol_scale``. ``vol`` is the
   annualised realized volatility (24/7 minutes: ``sqrt(525600)`` for 1m returns).
4. **Risk parity** across the universe: inverse-volatility weight ``w = (1 / vol_used) /
   sum_j (1 / max(vol_j, floor))`` over the N universe symbols whose volatility is known
   (this one included); ``risk_parity = N * w``: 1 for a single symbol or equal
   volatilities, above 1 for the calmer symbols and below 1 for the wilder ones.
5. **Correlation with open positions**: for each open position j (signed notional
   ``n_j``, + long, - short) with rolling return correlation ``rho_j`` to this symbol,
   the aligned weight ``a_j = max(0, direction * sign(n_j) * rho_j)`` (an unknown
   ``rho_j`` counts as ``a_j = 1``); ``correlated_exposure = sum_j a_j * |n_j| / equity``;
   ``correlation = max(0, 1 - correlated_exposure)``. It is bounded in [0, 1] and
   non-increasing in every aligned correlation and every open notional; positions that
   hedge (opposite direction and positive rho, or same direction and negative rho) do
   not reduce the size.
6. **L3 multipliers**: ``target_exposure`` (in [0, 1]) and the ``risk_appetite``
   multiplier (``risk.risk_appetite_multipliers``).
7. **Confidence** (optional, on by default): times the signal's confidence in [0, 1].
8. ``fraction_raw = kelly * vol_scale * risk_parity * correlation * target_exposure *
   risk_appetite * confidence``; ``fraction = min(fraction_raw, max_position_size)``.
9. ``qty`` = ``fraction * equity / price`` rounded DOWN to the symbol's ``lot_step``
   (the largest whole number of lots whose quantity and notional do not exceed it);
   0 when the notional ``qty * price`` is below ``min_notional``.

A sizer is built from the config's ``risk`` section, the single owner of its parameters:
``PositionSizer(config.risk)``; the live statistics from ``engine.live_stats_window``:
``LiveTradeStats(config.engine.live_stats_window)`` (the engine fills its structs through
the same kernel functions).

A zero size carries a ``code``: ``VOL_UNKNOWN`` (volatility still warming up),
``NO_EDGE`` (``f* = 0``), ``ZERO_SCALE`` (a multiplier is 0) or ``BELOW_MIN_NOTIONAL``;
``OK`` otherwise. The risk gate (:mod:`l2fast.decision.risk`) then caps the quantity further.
"""

from __future__ import annotations

from l2fast.decision._sizing import KELLY_SOURCES, SIZING_CODES, LiveTradeStats, PositionSizer

__all__ = ["KELLY_SOURCES", "SIZING_CODES", "LiveTradeStats", "PositionSizer"]

"""Position sizing kernels: live trade statistics and the per-entry sizing decision.

The formulas are stated in :mod:`l2fast.decision.sizing` (and in _sizing.pxd); this module
implements them on plain structs for the engine and wraps them in two validated classes.
"""

from cpython cimport array
from libc.math cimport INFINITY, copysign, fabs, floor, fmod, isfinite, isnan, NAN

import array

from l2fast.errors import InvalidInputError

from l2fast.technical._averages cimport window_free, window_get, window_init, window_push
from l2fast._checks cimport check_finite, check_period, enum_names

#: Names of the SizingCode values, as rendered in ``reasoning["sizing"]["code"]``.
SIZING_CODES = enum_names(globals()["SizingCode"], "SIZE_", False)
#: Names of the KellySource values.
KELLY_SOURCES = enum_names(globals()["KellySource"], "KELLY_", True)


# ------------------------------------------------------------------ live statistics

cdef int livestats_init(LiveStats* s, Py_ssize_t window) except -1:
    window_init(&s.trades, window)
    livestats_reset(s)
    return 0


cdef void livestats_reset(LiveStats* s) noexcept nogil:
    s.trades.head = 0
    s.trades.n = 0
    s.count = 0
    s.wins = 0
    s.losses = 0
    s.sum_win = 0.0
    s.sum_loss = 0.0


cdef void livestats_free(LiveStats* s) noexcept nogil:
    window_free(&s.trades)


cdef void livestats_push(LiveStats* s, double trade_return) noexcept nogil:
    cdef Py_ssize_t lag
    cdef double v
    window_push(&s.trades, trade_return)
    s.count = <int>(s.trades.n if s.trades.n < s.trades.size else s.trades.size)
    # Summed afresh, oldest first, rather than by add-and-subtract: trades close rarely,
    # and the sums then never drift from those of the window's contents.
    s.wins = 0
    s.losses = 0
    s.sum_win = 0.0
    s.sum_loss = 0.0
    for lag in range(s.count - 1, -1, -1):
        v = window_get(&s.trades, lag)
        if v > 0.0:
            s.wins += 1
            s.sum_win += v
        elif v < 0.0:
            s.losses += 1
            s.sum_loss += -v


cdef double livestats_p(const LiveStats* s) noexcept nogil:
    if s.count == 0:
        return 0.0
    return <double>s.wins / <double>s.count


cdef double livestats_b(const LiveStats* s) noexcept nogil:
    if s.wins == 0 or s.losses == 0:
        return 0.0
    return (s.sum_win / s.wins) / (s.sum_loss / s.losses)


cdef KellySource livestats_kelly_inputs(const LiveStats* s, int min_trades, double manifest_p,
                                        double manifest_b, double* p, double* b) noexcept nogil:
    if s.count >= min_trades:
        p[0] = livestats_p(s)
        b[0] = livestats_b(s)
        return KELLY_LIVE
    p[0] = manifest_p
    b[0] = manifest_b
    return KELLY_MANIFEST


# ------------------------------------------------------------------------ sizing

cdef inline double _kelly_full(double p, double b) noexcept nogil:
    cdef double f
    if not b > 0.0:
        return 0.0
    f = p - (1.0 - p) / b
    if f < 0.0:
        return 0.0
    return f if f < 1.0 else 1.0


cdef void sizing_compute(const SizingParams* prm, const SizingInput* inp,
                         SizingResult* out) noexcept nogil:
    cdef double floor_vol = prm.volatility_target / prm.max_vol_scale
    cdef double inv, total, v, x, rho, a, aligned, conf, raw
    cdef int j, sgn
    out.code = SIZE_OK
    out.kelly_source = inp.kelly_source
    out.p = inp.p
    out.b = inp.b
    out.kelly_full = _kelly_full(inp.p, inp.b)
    out.kelly = prm.kelly_fraction * out.kelly_full
    out.vol = inp.vol
    if isnan(inp.vol):
        out.code = SIZE_VOL_UNKNOWN
        out.vol_used = 0.0
        out.vol_scale = 0.0
        out.risk_parity = 0.0
        out.n_universe = 0
    else:
        out.vol_used = inp.vol if inp.vol > floor_vol else floor_vol
        out.vol_scale = prm.volatility_target / out.vol_used
        inv = 1.0 / out.vol_used
        total = inv
        out.n_universe = 1
        for j in range(inp.n_other):
            v = inp.other_vols[j]
            if not isnan(v):
                total += 1.0 / (v if v > floor_vol else floor_vol)
                out.n_universe += 1
        out.risk_parity = (inv / total) * out.n_universe

    aligned = 0.0
    for j in range(inp.n_open):
        x = inp.open_notional[j]
        if x == 0.0:
            continue
        sgn = 1 if x > 0.0 else -1
        rho = inp.open_rho[j]
        # An unknown correlation (still warming up) counts as fully aligned.
        a = 1.0 if isnan(rho) else inp.direction * sgn * rho
        if a > 0.0:
            aligned += a * fabs(x)
    out.correlated_exposure = aligned / inp.equity
    out.correlation = 1.0 - out.correlated_exposure
    if out.correlation < 0.0:
        out.correlation = 0.0

    out.target_exposure = inp.target_exposure
    out.risk_appetite = inp.risk_appetite
    conf = inp.confidence if prm.confidence_scaling else 1.0
    out.confidence = conf
    raw = (out.kelly * out.vol_scale * out.risk_parity * out.correlation
           * inp.target_exposure * inp.risk_appetite * conf)
    out.fraction_raw = raw
    out.capped = raw > prm.max_position_size
    out.fraction = prm.max_position_size if out.capped else raw
    out.notional_target = out.fraction * inp.equity
    out.lot_step = inp.lot_step
    out.min_notional = inp.min_notional
    out.qty = round_down_lots(out.notional_target / inp.price, inp.lot_step, inp.price,
                              out.notional_target, 0.0, 0.0, 0.0, INFINITY)
    out.notional = out.qty * inp.price
    if out.code == SIZE_OK:
        if out.kelly_full == 0.0:
            out.code = SIZE_NO_EDGE
        elif raw == 0.0:
            out.code = SIZE_ZERO_SCALE
        elif out.qty == 0.0 or out.notional < inp.min_notional:
            out.code = SIZE_BELOW_MIN_NOTIONAL
    if out.code != SIZE_OK:
        out.qty = 0.0
        out.notional = 0.0


# ------------------------------------------------------------- Python classes

cdef inline double _py_floordiv(double vx, double wx) noexcept nogil:
    # CPython's float // (float_floor_div), which FinRL's cash cap uses: floor of the
    # division of (vx - fmod(vx, wx)), not floor(vx / wx), which can round up past it.
    cdef double mod = fmod(vx, wx)
    cdef double div = (vx - mod) / wx
    cdef double fl
    if mod != 0.0 and (wx < 0.0) != (mod < 0.0):
        div -= 1.0
    if div != 0.0:
        fl = floor(div)
        if div - fl > 0.5:
            fl += 1.0
        return fl
    return copysign(0.0, vx / wx)


cdef double sizing_finrl_shares(double action, int hmax, double price, double cash, double held,
                                double buy_cost) noexcept nogil:
    cdef float product = (<float>action) * (<float>hmax)
    cdef double shares
    if not isfinite(product) or not (price > 0.0):
        return 0.0
    shares = <double><long long>product if fabs(product) < 9.0e18 else copysign(9.0e18, product)
    if shares < 0.0:
        return -min(-shares, held if held > 0.0 else 0.0)
    if shares > 0.0:
        return min(shares, max(_py_floordiv(cash, price * (1.0 + buy_cost)), 0.0))
    return 0.0


def finrl_shares(action, hmax, price, cash, held, buy_cost) -> float:
    """The signed whole shares FinRL's ``StockTradingEnv`` trades for one asset's action.

    ``trunc(float32(action) * hmax)`` shares; a sell is capped by ``held`` (the long
    position), a buy by ``cash // (price * (1 + buy_cost))``. What the engine requests for
    a member with a manifest ``finrl`` block (its quantity before sizing and the risk gate).

    Raises:
        InvalidInputError: A number is not finite, ``hmax`` < 1, ``price`` <= 0 or a cost outside [0, 1).
    """
    if isinstance(hmax, bool) or not isinstance(hmax, int) or hmax < 1:
        raise InvalidInputError(f"hmax={hmax!r}: must be an integer >= 1")
    cdef double a = check_number(action, "action", -INFINITY, INFINITY)
    cdef double p = check_number(price, "price", 0.0, INFINITY, True)
    cdef double c = check_number(cash, "cash", -INFINITY, INFINITY)
    cdef double h = check_number(held, "held", -INFINITY, INFINITY)
    cdef double bc = check_number(buy_cost, "buy_cost", 0.0, 1.0)
    if bc >= 1.0:
        raise InvalidInputError(f"buy_cost={buy_cost!r}: must be below 1")
    return sizing_finrl_shares(a, hmax, p, c, h, bc)


cdef double check_number(object value, str name, double lo, double hi, bint lo_open=False,
                         bint allow_none=False) except? -1:
    cdef double x
    if value is None and allow_none:
        return NAN
    try:
        x = value
    except TypeError:
        raise InvalidInputError(f"{name}={value!r}: must be a number") from None
    check_finite(x, name)
    if x < lo or (lo_open and x == lo) or x > hi:
        if isfinite(hi):
            rule = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        else:
            rule = f"{'>' if lo_open else '>='} {lo:g}"
        raise InvalidInputError(f"{name}={value!r}: must be {rule}")
    return x


cdef object _opt(double x):
    return None if isnan(x) else x


cdef dict sizing_result_dict(const SizingResult* r):
    return {
        "code": SIZING_CODES[<int>r.code],
        "qty": r.qty,
        "notional": r.notional,
        "kelly_source": KELLY_SOURCES[<int>r.kelly_source],
        "p": r.p,
        "b": r.b,
        "kelly_full": r.kelly_full,
        "kelly": r.kelly,
        "vol": _opt(r.vol),
        "vol_used": r.vol_used,
        "vol_scale": r.vol_scale,
        "risk_parity": r.risk_parity,
        "n_universe": r.n_universe,
        "correlated_exposure": r.correlated_exposure,
        "correlation": r.correlation,
        "target_exposure": r.target_exposure,
        "risk_appetite": r.risk_appetite,
        "confidence": r.confidence,
        "fraction_raw": r.fraction_raw,
        "fraction": r.fraction,
        "capped": bool(r.capped),
        "notional_target": r.notional_target,
        "lot_step": r.lot_step,
        "min_notional": r.min_notional,
    }


cdef int sizing_params_fill(SizingParams* p, object risk) except -1:
    # The one place a SizingParams is filled. ``risk`` is read by attribute (the names of
    # l2fast.config.RiskConfig, which owns the defaults and range rules); the checks here
    # only keep values the C code cannot work with out of the struct.
    p.kelly_fraction = check_number(risk.kelly_fraction, "kelly_fraction", 0.0, 1.0, True)
    p.volatility_target = check_number(risk.volatility_target, "volatility_target", 0.0, INFINITY, True)
    p.max_position_size = check_number(risk.max_position_size, "max_position_size", 0.0, 1.0, True)
    p.max_vol_scale = check_number(risk.max_vol_scale, "max_vol_scale", 0.0, INFINITY, True)
    p.confidence_scaling = risk.confidence_scaling
    return 0


cdef class LiveTradeStats:
    """Win rate and payoff ratio of the most recent closed trades (the live Kelly inputs).

    A trade's return is its PnL (fees included) over its entry notional. ``p`` is the
    share of winning trades (return > 0) in the window; ``b`` is the mean win over the
    mean |loss| (return < 0), 0 when there is no win or no loss, as the manifests'
    ``payoff_ratio``.

    Args:
        window: Most recent trades kept (>= 1; the engine's is ``engine.live_stats_window``).
    """

    cdef LiveStats _s
    cdef readonly Py_ssize_t window

    def __cinit__(self, Py_ssize_t window):
        check_period(window, 1, "window")
        self.window = window
        livestats_init(&self._s, window)

    def __dealloc__(self):
        livestats_free(&self._s)

    cpdef void add(self, double trade_return) except *:
        """Record one closed trade's return (finite)."""
        check_finite(trade_return, "trade_return")
        livestats_push(&self._s, trade_return)

    @property
    def count(self) -> int:
        """Trades in the window."""
        return self._s.count

    @property
    def wins(self) -> int:
        """Winning trades in the window."""
        return self._s.wins

    @property
    def losses(self) -> int:
        """Losing trades in the window."""
        return self._s.losses

    @property
    def sum_win(self) -> float:
        """Sum of the winning returns in the window."""
        return self._s.sum_win

    @property
    def sum_loss(self) -> float:
        """Sum of the magnitudes of the losing returns in the window."""
        return self._s.sum_loss

    @property
    def p(self) -> float:
        """Win rate in the window (0 when empty)."""
        return livestats_p(&self._s)

    @property
    def b(self) -> float:
        """Payoff ratio mean win / mean |loss| (0 without a win or a loss)."""
        return livestats_b(&self._s)

    def kelly_inputs(self, int min_trades, double manifest_p, double manifest_b) -> tuple:
        """``(p, b, source)``: live once ``count >= min_trades``, else the manifest's values.

        Raises:
            InvalidInputError: ``min_trades`` < 1, ``manifest_p`` not in [0, 1] or
                ``manifest_b`` negative or non-finite.
        """
        cdef double p, b
        check_period(min_trades, 1, "min_trades")
        check_number(manifest_p, "manifest_p", 0.0, 1.0)
        check_number(manifest_b, "manifest_b", 0.0, INFINITY)
        src = livestats_kelly_inputs(&self._s, min_trades, manifest_p, manifest_b, &p, &b)
        return p, b, KELLY_SOURCES[<int>src]

    cpdef void reset(self):
        """Forget every trade."""
        livestats_reset(&self._s)


cdef class PositionSizer:
    """Per-entry position size from fractional Kelly, volatility targeting, risk parity,
    the correlation with open positions and L3's multipliers (formulas: :mod:`l2fast.decision.sizing`).

    Args:
        risk: The parameters, read by attribute: a :class:`l2fast.config.RiskConfig`
            (``config.risk``; its fields, defaults and rules are the sizer's), or any object
            with the same names: ``kelly_fraction``, ``volatility_target``,
            ``max_position_size``, ``max_vol_scale`` and ``confidence_scaling``.
    """

    cdef SizingParams _p

    def __cinit__(self, risk):
        sizing_params_fill(&self._p, risk)

    @property
    def params(self) -> dict:
        """The sizing parameters."""
        return {"kelly_fraction": self._p.kelly_fraction,
                "volatility_target": self._p.volatility_target,
                "max_position_size": self._p.max_position_size,
                "max_vol_scale": self._p.max_vol_scale,
                "confidence_scaling": bool(self._p.confidence_scaling)}

    def size(self, equity, price, p, b, vol, *, int direction=1, other_vols=(),
             open_notional=(), open_rho=(), target_exposure=1.0, risk_appetite=1.0,
             confidence=1.0, lot_step, min_notional,
             str kelly_source="manifest") -> dict:
        """Size one entry; returns every factor (JSON-safe) with ``qty`` and ``code``.

        Args:
            equity: Current equity (> 0).
            price: Reference entry price (> 0).
            p: Kelly win probability in [0, 1].
            b: Kelly payoff ratio (>= 0).
            vol: This symbol's annualised realized volatility (>= 0), None if unknown.
            direction: +1 for a buy, -1 for a sell.
            other_vols: The other universe symbols' volatilities (None: unknown).
            open_notional: Signed notional of each open position (+ long, - short).
            open_rho: Each open position's return correlation with this symbol, in
                [-1, 1] (None: unknown, counted as fully aligned).
            target_exposure: L3's target exposure in [0, 1].
            risk_appetite: L3's risk-appetite multiplier (>= 0).
            confidence: The signal's confidence in [0, 1].
            lot_step: Quantity step (> 0): the symbol's ``RiskConfig.lot_step_for``.
            min_notional: Smallest order notional (>= 0): ``RiskConfig.min_notional_for``.
            kelly_source: ``"manifest"`` or ``"live"`` (reported as given).

        Raises:
            InvalidInputError: An argument is non-finite or out of range (named).
        """
        cdef SizingInput inp
        cdef SizingResult res
        cdef double[::1] ov, on, orho
        inp.equity = check_number(equity, "equity", 0.0, INFINITY, True)
        inp.price = check_number(price, "price", 0.0, INFINITY, True)
        if direction != 1 and direction != -1:
            raise InvalidInputError(f"direction={direction!r}: must be 1 (buy) or -1 (sell)")
        inp.direction = direction
        inp.p = check_number(p, "p", 0.0, 1.0)
        inp.b = check_number(b, "b", 0.0, INFINITY)
        if kelly_source not in KELLY_SOURCES:
            raise InvalidInputError(f"kelly_source={kelly_source!r}: must be 'manifest' or 'live'")
        inp.kelly_source = KELLY_LIVE if kelly_source == "live" else KELLY_MANIFEST
        inp.vol = check_number(vol, "vol", 0.0, INFINITY, False, True)
        others = [check_number(v, f"other_vols[{i}]", 0.0, INFINITY, False, True)
                  for i, v in enumerate(other_vols)]
        notionals = [check_number(v, f"open_notional[{i}]", -INFINITY, INFINITY)
                     for i, v in enumerate(open_notional)]
        rhos = [check_number(v, f"open_rho[{i}]", -1.0, 1.0, False, True) for i, v in enumerate(open_rho)]
        if len(rhos) != len(notionals):
            raise InvalidInputError(f"open_rho: {len(rhos)} values for {len(notionals)} open positions")
        inp.target_exposure = check_number(target_exposure, "target_exposure", 0.0, 1.0)
        inp.risk_appetite = check_number(risk_appetite, "risk_appetite", 0.0, INFINITY)
        inp.confidence = check_number(confidence, "confidence", 0.0, 1.0)
        inp.lot_step = check_number(lot_step, "lot_step", 0.0, INFINITY, True)
        inp.min_notional = check_number(min_notional, "min_notional", 0.0, INFINITY)
        ov = array_of(others)
        on = array_of(notionals)
        orho = array_of(rhos)
        inp.other_vols = &ov[0]
        inp.n_other = len(others)
        inp.open_notional = &on[0]
        inp.open_rho = &orho[0]
        inp.n_open = len(notionals)
        sizing_compute(&self._p, &inp, &res)
        return sizing_result_dict(&res)


cdef double[::1] array_of(list values):
    # One spare element keeps the view's first address valid when the list is empty.
    return array.array("d", values + [0.0])

"""Risk gate kernels: portfolio accounting, stop management and the entry/exit check.

The rules are stated in :mod:`l2fast.decision.risk` (and in _risk.pxd); this module implements
them on one fixed-capacity struct for the engine and wraps it in a validated class.
"""

from libc.math cimport INFINITY, isfinite, NAN

from l2fast.errors import InvalidInputError

from l2fast._checks cimport enum_names
from l2fast.decision._sizing cimport check_number, round_down_lots

cdef long long DAY_MS = 86400000

#: Names of the RiskCode values (the constants without RISK_), as in ``reasoning["code"]``.
RISK_CODES = enum_names(globals()["RiskCode"], "RISK_", False)
#: Names of the RiskAction values.
ACTIONS = enum_names(globals()["RiskAction"], "ACTION_", True)
#: Names of the StopMove values.
STOP_MOVES = enum_names(globals()["StopMove"], "STOP_", True)
#: Names of the AccountFeature values: the account-state features a manifest may name.
ACCOUNT_FEATURES = enum_names(globals()["AccountFeature"], "ACCOUNT_", True)
# Per code: the names of RiskNote.value and RiskNote.limit in the rendered dict (None:
# omitted). Keyed by the constants, so that a misspelt code does not compile; every code
# needs an entry (tests/test_codes.py).
_NOTE_FIELDS = {
    RISK_OK: (None, None),
    RISK_EQUITY_DEPLETED: ("equity", None),
    RISK_SHORT_NOT_ALLOWED: (None, None),
    RISK_POSITION_OPEN: ("qty", None),
    RISK_DAILY_LOSS_LIMIT: ("loss", "limit"),
    RISK_MAX_DAILY_TRADES: ("trades", "limit"),
    RISK_MAX_CONCURRENT_POSITIONS: ("positions", "limit"),
    RISK_INVALID_STOP: ("atr", "price"),
    RISK_MAX_POSITION_SIZE: ("size", "limit"),
    RISK_MAX_LOSS_PER_TRADE: ("loss", "limit"),
    RISK_EXPOSURE_LIMIT: ("exposure", "limit"),
    RISK_BELOW_MIN_NOTIONAL: ("notional", "min_notional"),
    RISK_TURBULENCE: ("turbulence", "threshold"),
}
#: Per code name: the names of RiskNote.value and RiskNote.limit in the rendered dict (None: omitted).
RISK_CODE_FIELDS = {RISK_CODES[code]: fields for code, fields in sorted(_NOTE_FIELDS.items())}
# Codes whose value and limit are counts (rendered as ints).
_COUNT_CODES = frozenset((RISK_MAX_DAILY_TRADES, RISK_MAX_CONCURRENT_POSITIONS))


# ------------------------------------------------------------------- accounting

cdef void risk_init(RiskState* s, const RiskParams* prm, int n_symbols,
                    double initial_equity) noexcept nogil:
    cdef int i
    s.prm = prm[0]
    s.n_symbols = n_symbols
    for i in range(RISK_MAX_SYMBOLS):
        # Unset until risk_set_symbol gives the slot its symbol's rules.
        s.lot_step[i] = 0.0
        s.min_notional[i] = 0.0
        s.pos[i].side = 0
        s.pos[i].qty = 0.0
        s.pending[i].side = 0
        s.mark[i] = NAN
        s.atr[i] = NAN
    s.cash = initial_equity
    s.fees = 0.0
    s.day = -1
    s.day_start_equity = initial_equity
    s.realized_today = 0.0
    s.entries_today = 0
    s.halted = False
    s.halt_loss = 0.0
    s.turbulence = 0.0


cdef int risk_params_fill(RiskParams* prm, object risk) except -1:
    # The one place a RiskParams is filled. ``risk`` is read by attribute (the names of
    # l2fast.config.RiskConfig, which owns the defaults and range rules); the checks here
    # only keep values the C code cannot work with out of the struct.
    prm.atr_multiplier = check_number(risk.atr_multiplier, "atr_multiplier", 0.0, INFINITY, True)
    prm.max_loss_per_trade = check_number(risk.max_loss_per_trade, "max_loss_per_trade", 0.0, 1.0, True)
    prm.take_profit_r = check_number(risk.take_profit_r, "take_profit_r", 0.0, INFINITY, True)
    prm.breakeven_threshold = check_number(risk.breakeven_threshold, "breakeven_threshold", 0.0, INFINITY, True)
    trailing = risk.trailing_atr_multiplier
    prm.trailing_atr_multiplier = check_number(
        risk.atr_multiplier if trailing is None else trailing, "trailing_atr_multiplier", 0.0, INFINITY, True)
    prm.max_daily_trades = _count(risk.max_daily_trades, "max_daily_trades")
    prm.daily_loss_limit = check_number(risk.daily_loss_limit, "daily_loss_limit", 0.0, 1.0, True)
    prm.max_concurrent_positions = _count(risk.max_concurrent_positions, "max_concurrent_positions")
    prm.exposure_limit = check_number(risk.exposure_limit, "exposure_limit", 0.0, 1.0, True)
    prm.max_position_size = check_number(risk.max_position_size, "max_position_size", 0.0, 1.0, True)
    prm.allow_short = risk.allow_short
    threshold = getattr(risk, "turbulence_threshold", None)
    prm.turbulence_threshold = INFINITY if threshold is None else check_number(
        threshold, "turbulence_threshold", 0.0, INFINITY, True)
    return 0


cdef int _count(object value, str name) except -1:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name}={value!r}: must be an integer >= 1")
    return value


cdef void risk_set_symbol(RiskState* s, int i, double lot_step, double min_notional) noexcept nogil:
    s.lot_step[i] = lot_step
    s.min_notional[i] = min_notional


cdef double risk_equity(const RiskState* s) noexcept nogil:
    cdef double eq = s.cash
    cdef int j
    for j in range(s.n_symbols):
        if s.pos[j].side != 0:
            eq += s.pos[j].side * s.pos[j].qty * s.mark[j]
    return eq


cdef double risk_account(const RiskState* s, int i, int feature) noexcept nogil:
    cdef const Position* p = &s.pos[i]
    cdef double eq
    if feature == ACCOUNT_CASH:
        return s.cash
    if feature < 0 or feature > ACCOUNT_UNREALIZED_PNL:
        return NAN
    if p.side == 0:
        return 0.0
    if feature == ACCOUNT_HOLDINGS:
        return p.side * p.qty
    if feature == ACCOUNT_UNREALIZED_PNL:
        return p.side * p.qty * (s.mark[i] - p.entry)
    eq = risk_equity(s)
    return p.side * p.qty * s.mark[i] / eq if eq > 0.0 else 0.0


cdef double risk_gross_exposure(const RiskState* s) noexcept nogil:
    cdef double g = 0.0
    cdef int j
    for j in range(s.n_symbols):
        if s.pos[j].side != 0:
            g += s.pos[j].qty * s.mark[j]
    return g


cdef int risk_open_positions(const RiskState* s, int exclude, int* idx,
                             double* signed_notional) noexcept nogil:
    cdef int j, n = 0
    for j in range(s.n_symbols):
        if j != exclude and s.pos[j].side != 0:
            idx[n] = j
            signed_notional[n] = s.pos[j].side * s.pos[j].qty * s.mark[j]
            n += 1
    return n


cdef inline double _loss_fraction(double day_start, double equity) noexcept nogil:
    if not day_start > 0.0:
        return 0.0
    return (day_start - equity) / day_start


cdef inline void _roll_day(RiskState* s, long long ts) noexcept nogil:
    cdef long long day = ts // DAY_MS
    if day > s.day:
        s.day = day
        s.day_start_equity = risk_equity(s)
        s.realized_today = 0.0
        s.entries_today = 0
        s.halted = False
        s.halt_loss = 0.0


cdef inline void _latch_halt(RiskState* s) noexcept nogil:
    cdef double loss
    if s.halted:
        return
    loss = _loss_fraction(s.day_start_equity, risk_equity(s))
    if loss >= s.prm.daily_loss_limit:
        s.halted = True
        s.halt_loss = loss


# --------------------------------------------------------------------- per bar

cdef void risk_bar(RiskState* s, int i, long long ts, double high, double low, double close,
                   double atr, RiskBarUpdate* out) noexcept nogil:
    cdef Position* p = &s.pos[i]
    cdef double stop, trail
    cdef int side = p.side
    _roll_day(s, ts)
    if s.pending[i].side != 0 and s.pending[i].ts < ts:
        s.pending[i].side = 0
    s.mark[i] = close
    s.atr[i] = atr
    out.stop_move = STOP_NONE
    out.stop_hit = False
    out.take_profit_hit = False
    if side != 0:
        # Hits are judged against the levels in force when the bar opened: the bar's
        # extreme may have come after the move that would have raised the stop.
        if side > 0:
            out.stop_hit = low <= p.stop
            out.take_profit_hit = high >= p.take_profit
            if high > p.best:
                p.best = high
        else:
            out.stop_hit = high >= p.stop
            out.take_profit_hit = low <= p.take_profit
            if low < p.best:
                p.best = low
        stop = p.stop
        if not p.breakeven and side * (p.best - p.entry) >= s.prm.breakeven_threshold * p.r:
            p.breakeven = True
            if side * (p.entry - stop) > 0.0:
                stop = p.entry
                out.stop_move = STOP_BREAKEVEN
        if p.breakeven and atr > 0.0:
            trail = p.best - side * s.prm.trailing_atr_multiplier * atr
            if side * (trail - stop) > 0.0:
                stop = trail
                out.stop_move = STOP_TRAILING
        p.stop = stop
    _latch_halt(s)
    out.side = side
    if side != 0:
        out.qty = p.qty
        out.entry = p.entry
        out.stop = p.stop
        out.take_profit = p.take_profit
        out.r = p.r
        out.best = p.best
        out.breakeven = p.breakeven
        out.unrealized = side * p.qty * (close - p.entry)
    else:
        out.qty = 0.0
        out.entry = 0.0
        out.stop = 0.0
        out.take_profit = 0.0
        out.r = 0.0
        out.best = 0.0
        out.breakeven = False
        out.unrealized = 0.0
    out.equity = risk_equity(s)
    out.day_start_equity = s.day_start_equity
    out.day_loss = _loss_fraction(s.day_start_equity, out.equity)
    if out.day_loss < 0.0:
        out.day_loss = 0.0
    out.halted = s.halted
    out.entries_today = s.entries_today


# ------------------------------------------------------------------------ check

cdef inline void _note(RiskNote* n, RiskCode code, double value, double limit,
                       double qty) noexcept nogil:
    n.code = code
    n.value = value
    n.limit = limit
    n.qty = qty


cdef inline void _deny(RiskCheck* out, RiskCode code, double value, double limit) noexcept nogil:
    out.action = ACTION_HOLD
    out.qty = 0.0
    out.notional = 0.0
    out.stop = 0.0
    out.take_profit = 0.0
    out.r = 0.0
    _note(&out.denial, code, value, limit, 0.0)


cdef void risk_check(const RiskState* s, int i, int side, double qty, double price, double atr,
                     long long ts, RiskCheck* out) noexcept nogil:
    cdef const Position* p = &s.pos[i]
    cdef const RiskParams* prm = &s.prm
    cdef double equity = risk_equity(s)
    cdef double day_start = s.day_start_equity, loss, r, stop, tp, gross, q, room
    cdef int entries = s.entries_today, count, j
    cdef bint halted = s.halted
    cdef double halt_loss = s.halt_loss
    out.side = side
    out.qty_requested = qty
    out.price = price
    out.n_caps = 0
    _note(&out.denial, RISK_OK, 0.0, 0.0, 0.0)

    if p.side == -side:
        # Closing the position is always allowed, whatever the entry limits say.
        out.action = ACTION_EXIT
        out.qty = p.qty
        out.notional = p.qty * price
        out.stop = 0.0
        out.take_profit = 0.0
        out.r = 0.0
        return

    if ts // DAY_MS > s.day:
        # The check sees the day that its timestamp opens, as the next mutation will.
        day_start = equity
        entries = 0
        halted = False
    elif s.pending[i].side != 0 and s.pending[i].ts == ts:
        # A re-check on the same bar would replace this entry, already counted.
        entries -= 1
    if not equity > 0.0:
        _deny(out, RISK_EQUITY_DEPLETED, equity, 0.0)
        return
    if side < 0 and not prm.allow_short:
        _deny(out, RISK_SHORT_NOT_ALLOWED, 0.0, 0.0)
        return
    if p.side == side:
        _deny(out, RISK_POSITION_OPEN, p.qty, 0.0)
        return
    if s.turbulence >= prm.turbulence_threshold:
        _deny(out, RISK_TURBULENCE, s.turbulence, prm.turbulence_threshold)
        return
    loss = _loss_fraction(day_start, equity)
    if halted:
        _deny(out, RISK_DAILY_LOSS_LIMIT, halt_loss, prm.daily_loss_limit)
        return
    if loss >= prm.daily_loss_limit:
        _deny(out, RISK_DAILY_LOSS_LIMIT, loss, prm.daily_loss_limit)
        return
    if entries >= prm.max_daily_trades:
        _deny(out, RISK_MAX_DAILY_TRADES, entries, prm.max_daily_trades)
        return
    # Open positions and the other symbols' reservations hold slots and exposure; this
    # symbol's own reservation is superseded by the check.
    count = 0
    gross = 0.0
    for j in range(s.n_symbols):
        if s.pos[j].side != 0:
            count += 1
            gross += s.pos[j].qty * s.mark[j]
        elif j != i and s.pending[j].side != 0:
            count += 1
            gross += s.pending[j].qty * s.pending[j].price
    if count >= prm.max_concurrent_positions:
        _deny(out, RISK_MAX_CONCURRENT_POSITIONS, count, prm.max_concurrent_positions)
        return
    r = prm.atr_multiplier * atr
    stop = price - side * r
    tp = price + side * prm.take_profit_r * r
    if not (r > 0.0 and stop > 0.0 and tp > 0.0 and side * (price - stop) > 0.0
            and side * (tp - price) > 0.0 and isfinite(tp)):
        _deny(out, RISK_INVALID_STOP, atr, price)
        return

    q = qty
    if q * price > prm.max_position_size * equity:
        _note(&out.caps[out.n_caps], RISK_MAX_POSITION_SIZE, q * price / equity,
              prm.max_position_size, 0.0)
        q = prm.max_position_size * equity / price
        out.caps[out.n_caps].qty = q
        out.n_caps += 1
    if q * r > prm.max_loss_per_trade * equity:
        _note(&out.caps[out.n_caps], RISK_MAX_LOSS_PER_TRADE, q * r / equity,
              prm.max_loss_per_trade, 0.0)
        q = prm.max_loss_per_trade * equity / r
        out.caps[out.n_caps].qty = q
        out.n_caps += 1
    if gross + q * price > prm.exposure_limit * equity:
        room = prm.exposure_limit * equity - gross
        if not room > 0.0:
            _deny(out, RISK_EXPOSURE_LIMIT, (gross + q * price) / equity, prm.exposure_limit)
            return
        _note(&out.caps[out.n_caps], RISK_EXPOSURE_LIMIT, (gross + q * price) / equity,
              prm.exposure_limit, 0.0)
        q = room / price
        out.caps[out.n_caps].qty = q
        out.n_caps += 1

    q = round_down_lots(q, s.lot_step[i], price, prm.max_position_size * equity, r,
                        prm.max_loss_per_trade * equity, gross, prm.exposure_limit * equity)
    if q == 0.0 or q * price < s.min_notional[i]:
        _deny(out, RISK_BELOW_MIN_NOTIONAL, q * price, s.min_notional[i])
        return
    out.action = ACTION_ENTRY
    out.qty = q
    out.notional = q * price
    out.stop = stop
    out.take_profit = tp
    out.r = r


cdef void risk_accept(RiskState* s, int i, const RiskCheck* chk, long long ts) noexcept nogil:
    cdef Reservation* res = &s.pending[i]
    if chk.action != ACTION_ENTRY:
        return
    _roll_day(s, ts)
    # A second accepted check on the same bar replaces the reservation, not adds one.
    if not (res.side != 0 and res.ts == ts):
        s.entries_today += 1
    res.side = chk.side
    res.qty = chk.qty
    res.price = chk.price
    res.r = chk.r
    res.ts = ts


# ------------------------------------------------------------------------ fills

cdef inline double _stop_distance(RiskState* s, int i, int side, double qty,
                                  double price) noexcept nogil:
    # The accepted entry's R when this fill is its own; else R from the symbol's last ATR;
    # else the distance at which the loss cap would be hit; failing all, the price.
    cdef double r
    if s.pending[i].side == side:
        r = s.pending[i].r
        s.pending[i].side = 0
        return r
    if s.atr[i] > 0.0:
        return s.prm.atr_multiplier * s.atr[i]
    r = s.prm.max_loss_per_trade * risk_equity(s) / qty
    return r if r > 0.0 else price


cdef inline void _place(Position* p, const RiskParams* prm, double r) noexcept nogil:
    p.r = r
    p.stop = p.entry - p.side * r
    p.take_profit = p.entry + p.side * prm.take_profit_r * r
    p.best = p.entry
    p.breakeven = False


cdef void risk_on_fill(RiskState* s, int i, int side, double qty, double price, double fee,
                       long long ts, FillResult* out) noexcept nogil:
    cdef Position* p = &s.pos[i]
    cdef double closed_qty, fee_close, pnl, rest, fee_open, total
    cdef bint reserved
    _roll_day(s, ts)
    s.cash -= side * qty * price
    s.cash -= fee
    s.fees += fee
    s.mark[i] = price
    out.opened = False
    out.closed = False
    out.realized = 0.0
    out.trade_return = 0.0
    rest = qty
    fee_open = fee
    if p.side == -side:
        closed_qty = qty if qty < p.qty else p.qty
        fee_close = fee * (closed_qty / qty)
        pnl = (price - p.entry) * p.side * closed_qty - fee_close
        p.trade_pnl += pnl
        out.realized = pnl
        if qty >= p.qty:
            out.closed = True
            out.trade_return = p.trade_pnl / p.trade_cost
            p.side = 0
            p.qty = 0.0
            rest = qty - closed_qty
        else:
            p.qty -= qty
            rest = 0.0
        fee_open = fee - fee_close
    if rest > 0.0:
        reserved = s.pending[i].side == side
        if p.side == 0:
            p.side = side
            p.qty = rest
            p.entry = price
            p.opened_ts = ts
            p.trade_pnl = -fee_open
            p.trade_cost = rest * price
            if not reserved:
                s.entries_today += 1
            out.opened = True
        else:
            # Adding to the position re-opens it at the average entry.
            total = p.qty + rest
            p.entry = (p.qty * p.entry + rest * price) / total
            p.qty = total
            p.trade_pnl -= fee_open
            p.trade_cost += rest * price
        _place(p, &s.prm, _stop_distance(s, i, side, p.qty, price))
        out.realized -= fee_open
    s.realized_today += out.realized
    _latch_halt(s)
    out.side = p.side
    out.qty = p.qty
    out.equity = risk_equity(s)


# ------------------------------------------------------------- Python class

cdef long long _timestamp(object ts) except -1:
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise InvalidInputError(f"ts={ts!r}: must be epoch milliseconds (an integer >= 0)")
    return ts


cdef int _side(object side) except 0:
    if side == "buy":
        return 1
    if side == "sell":
        return -1
    raise InvalidInputError(f"side={side!r}: must be 'buy' or 'sell'")


cdef object _opt(double x):
    return x if isfinite(x) else None


_SIDE_NAMES = {1: "buy", -1: "sell"}
_POSITION_NAMES = {1: "long", -1: "short", 0: "flat"}


cdef dict risk_note_dict(const RiskNote* n):
    cdef int code = n.code
    value_name, limit_name = _NOTE_FIELDS[code]
    counts = code in _COUNT_CODES
    d = {"code": RISK_CODES[code]}
    if value_name is not None:
        d[value_name] = int(n.value) if counts else _opt(n.value)
    if limit_name is not None:
        d[limit_name] = int(n.limit) if counts else _opt(n.limit)
    return d


cdef dict risk_check_dict(const RiskCheck* c):
    cdef int k
    caps = []
    for k in range(c.n_caps):
        note = risk_note_dict(&c.caps[k])
        note["qty"] = c.caps[k].qty
        caps.append(note)
    entry = c.action == ACTION_ENTRY
    return {"action": ACTIONS[<int>c.action], "side": _SIDE_NAMES[c.side], "qty": c.qty,
            "qty_requested": c.qty_requested, "price": c.price, "notional": c.notional,
            "stop_loss": c.stop if entry else None,
            "take_profit": c.take_profit if entry else None,
            "r": c.r if entry else None,
            "denial": None if c.denial.code == RISK_OK else risk_note_dict(&c.denial),
            "caps": caps}


cdef dict risk_bar_dict(const RiskBarUpdate* u):
    flat = u.side == 0
    return {"position": _POSITION_NAMES[u.side], "qty": u.qty,
            "entry": None if flat else u.entry,
            "stop_loss": None if flat else u.stop,
            "take_profit": None if flat else u.take_profit,
            "r": None if flat else u.r, "best": None if flat else u.best,
            "breakeven": bool(u.breakeven), "stop_move": STOP_MOVES[<int>u.stop_move],
            "stop_hit": bool(u.stop_hit), "take_profit_hit": bool(u.take_profit_hit),
            "unrealized": u.unrealized, "equity": u.equity,
            "day_start_equity": u.day_start_equity, "day_loss": u.day_loss,
            "halted": bool(u.halted), "entries_today": u.entries_today}


cdef dict fill_result_dict(const FillResult* f):
    return {"opened": bool(f.opened), "closed": bool(f.closed), "realized": f.realized,
            "trade_return": f.trade_return if f.closed else None,
            "position": _POSITION_NAMES[f.side], "qty": f.qty, "equity": f.equity}


cdef class RiskGate:
    """The risk gate over a fixed universe: stops, limits and portfolio accounting.

    Rules and formulas: :mod:`l2fast.decision.risk`. Symbols are named by their universe entry;
    every method validates its arguments first and, on an error, changes nothing.

    Args:
        symbols: The universe (1 to 16 distinct names).
        initial_equity: Equity before the first fill (> 0).
        risk: The parameters, read by attribute: a :class:`l2fast.config.RiskConfig`
            (``config.risk``; its fields, defaults and rules are the gate's), or any object
            with the same names: ``atr_multiplier``, ``max_loss_per_trade``,
            ``take_profit_r``, ``breakeven_threshold``, ``trailing_atr_multiplier`` (None:
            ``atr_multiplier``), ``max_daily_trades``, ``daily_loss_limit``,
            ``max_concurrent_positions``, ``exposure_limit``, ``max_position_size``,
            ``allow_short``, ``turbulence_threshold`` (None: no gate; optional), and the
            methods ``lot_step_for(symbol)`` and
            ``min_notional_for(symbol)`` (each universe symbol's order rules, as the
            engine reads them).
    """

    cdef RiskState _s
    cdef readonly tuple symbols
    cdef dict _index
    cdef double _initial_equity

    def __cinit__(self, symbols, double initial_equity, risk):
        cdef RiskParams prm
        cdef int i
        if isinstance(symbols, str):
            raise InvalidInputError(f"symbols={symbols!r}: must be a list of symbol names")
        names = tuple(symbols)
        if not 1 <= len(names) <= RISK_MAX_SYMBOLS:
            raise InvalidInputError(f"symbols: {len(names)} given, must be 1 to {RISK_MAX_SYMBOLS}")
        for name in names:
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"symbols: {name!r} is not a symbol name")
        if len(set(names)) != len(names):
            raise InvalidInputError(f"symbols={list(names)!r}: must be distinct")
        check_number(initial_equity, "initial_equity", 0.0, INFINITY, True)
        risk_params_fill(&prm, risk)
        steps = [check_number(risk.lot_step_for(name), f"lot_step_for({name!r})", 0.0, INFINITY, True)
                 for name in names]
        mins = [check_number(risk.min_notional_for(name), f"min_notional_for({name!r})", 0.0, INFINITY)
                for name in names]
        self.symbols = names
        self._index = {name: k for k, name in enumerate(names)}
        self._initial_equity = initial_equity
        risk_init(&self._s, &prm, len(names), initial_equity)
        for i in range(len(names)):
            risk_set_symbol(&self._s, i, steps[i], mins[i])

    cdef int _symbol(self, object symbol) except -1:
        try:
            return self._index[symbol]
        except (KeyError, TypeError):
            raise InvalidInputError(f"symbol={symbol!r}: not in the universe {list(self.symbols)}") from None

    @property
    def params(self) -> dict:
        """The gate's parameters."""
        prm = self._s.prm
        return {"atr_multiplier": prm.atr_multiplier, "max_loss_per_trade": prm.max_loss_per_trade,
                "take_profit_r": prm.take_profit_r, "breakeven_threshold": prm.breakeven_threshold,
                "trailing_atr_multiplier": prm.trailing_atr_multiplier,
                "max_daily_trades": prm.max_daily_trades, "daily_loss_limit": prm.daily_loss_limit,
                "max_concurrent_positions": prm.max_concurrent_positions,
                "exposure_limit": prm.exposure_limit, "max_position_size": prm.max_position_size,
                "allow_short": bool(prm.allow_short),
                "turbulence_threshold": prm.turbulence_threshold if isfinite(prm.turbulence_threshold) else None}

    @property
    def equity(self) -> float:
        """Cash plus the open positions marked at their last prices."""
        return risk_equity(&self._s)

    @property
    def cash(self) -> float:
        """Cash (quote currency)."""
        return self._s.cash

    @property
    def fees(self) -> float:
        """Fees paid since construction."""
        return self._s.fees

    @property
    def gross_exposure(self) -> float:
        """Sum of |qty| * mark over the open positions."""
        return risk_gross_exposure(&self._s)

    @property
    def day(self) -> dict:
        """The current UTC day's counters."""
        eq = risk_equity(&self._s)
        loss = _loss_fraction(self._s.day_start_equity, eq)
        return {"day": self._s.day, "day_start_equity": self._s.day_start_equity,
                "realized": self._s.realized_today, "pnl": eq - self._s.day_start_equity,
                "loss": loss if loss > 0.0 else 0.0, "entries": self._s.entries_today,
                "halted": bool(self._s.halted),
                "halt_loss": self._s.halt_loss if self._s.halted else None}

    def position(self, symbol) -> dict | None:
        """The open position of ``symbol`` (None when flat)."""
        cdef const Position* p = &self._s.pos[self._symbol(symbol)]
        if p.side == 0:
            return None
        return {"position": _POSITION_NAMES[p.side], "qty": p.qty, "entry": p.entry, "stop_loss": p.stop,
                "take_profit": p.take_profit, "r": p.r, "best": p.best,
                "breakeven": bool(p.breakeven), "opened_ts": p.opened_ts}

    def set_turbulence(self, value) -> None:
        """The turbulence index entries are gated on (``risk.turbulence_threshold``), >= 0."""
        self._s.turbulence = check_number(value, "turbulence", 0.0, INFINITY)

    def account(self, symbol) -> dict:
        """``{feature: value}`` of :data:`ACCOUNT_FEATURES` for ``symbol`` (what a model observes)."""
        cdef int i = self._symbol(symbol)
        return {name: risk_account(&self._s, i, k) for k, name in enumerate(ACCOUNT_FEATURES)}

    @property
    def positions(self) -> dict:
        """``{symbol: position}`` of the open positions."""
        return {name: self.position(name) for name in self.symbols
                if self._s.pos[self._index[name]].side != 0}

    def on_bar(self, symbol, ts, high, low, close, atr) -> dict:
        """Mark ``symbol`` at a closed bar, update its stop; returns the position's state.

        Args:
            symbol: A universe symbol.
            ts: The bar's open time, epoch ms UTC.
            high, low, close: The bar's prices (finite, > 0, high >= low).
            atr: The symbol's ATR at this bar (>= 0), None during warm-up.
        """
        cdef RiskBarUpdate u
        cdef int i = self._symbol(symbol)
        cdef long long t = _timestamp(ts)
        cdef double h = check_number(high, "high", 0.0, INFINITY, True)
        cdef double l = check_number(low, "low", 0.0, INFINITY, True)
        cdef double c = check_number(close, "close", 0.0, INFINITY, True)
        cdef double a = check_number(atr, "atr", 0.0, INFINITY, False, True)
        if h < l:
            raise InvalidInputError(f"high={high!r}: below low={low!r}")
        risk_bar(&self._s, i, t, h, l, c, a, &u)
        return risk_bar_dict(&u)

    def check(self, symbol, side, qty, price, atr, ts, *, bint commit=True) -> dict:
        """Gate a buy or sell of ``symbol``; with ``commit`` an allowed entry is recorded.

        Args:
            symbol: A universe symbol.
            side: ``"buy"`` or ``"sell"``.
            qty: The sized quantity (>= 0); ignored for an exit (the position's qty).
            price: Reference entry price (> 0), normally the bar's close.
            atr: The symbol's ATR (>= 0), None when unknown (an entry is then denied).
            ts: Epoch ms UTC of the decision.
            commit: Record an allowed entry (count it, reserve its slot and exposure).

        Returns:
            ``action`` (``"entry"``, ``"exit"`` or ``"hold"``), ``qty``, ``stop_loss``,
            ``take_profit`` (None unless an entry), ``denial`` (None or
            ``{"code": ..., <numbers>}``) and ``caps`` (the reductions, same form plus the
            ``qty`` after each).
        """
        cdef RiskCheck c
        cdef int i = self._symbol(symbol)
        cdef int sd = _side(side)
        cdef double q = check_number(qty, "qty", 0.0, INFINITY)
        cdef double pr = check_number(price, "price", 0.0, INFINITY, True)
        cdef double a = check_number(atr, "atr", 0.0, INFINITY, False, True)
        cdef long long t = _timestamp(ts)
        risk_check(&self._s, i, sd, q, pr, a, t, &c)
        if commit and c.action != ACTION_HOLD:
            risk_accept(&self._s, i, &c, t)
        return risk_check_dict(&c)

    def on_fill(self, symbol, side, qty, price, ts, fee=0.0) -> dict:
        """Account an L1 fill: cash, position, realized PnL, the closed trade's return.

        Args:
            symbol: A universe symbol.
            side: ``"buy"`` or ``"sell"``.
            qty: Filled quantity (> 0).
            price: Fill price (> 0).
            ts: Fill time, epoch ms UTC.
            fee: Fee paid in quote currency (>= 0).
        """
        cdef FillResult f
        cdef int i = self._symbol(symbol)
        cdef int sd = _side(side)
        cdef double q = check_number(qty, "qty", 0.0, INFINITY, True)
        cdef double pr = check_number(price, "price", 0.0, INFINITY, True)
        cdef long long t = _timestamp(ts)
        cdef double fe = check_number(fee, "fee", 0.0, INFINITY)
        risk_on_fill(&self._s, i, sd, q, pr, fe, t, &f)
        return fill_result_dict(&f)

    cpdef void reset(self):
        """Return to the freshly constructed state (flat, initial equity, no day)."""
        cdef double steps[RISK_MAX_SYMBOLS]
        cdef double mins[RISK_MAX_SYMBOLS]
        cdef RiskParams prm = self._s.prm
        cdef int i, n = self._s.n_symbols
        for i in range(n):
            steps[i] = self._s.lot_step[i]
            mins[i] = self._s.min_notional[i]
        risk_init(&self._s, &prm, n, self._initial_equity)
        for i in range(n):
            risk_set_symbol(&self._s, i, steps[i], mins[i])

# Contract of the risk gate: portfolio state, per-bar stop management, the entry/exit
# check and fill accounting. Rules and formulas: l2fast/decision/risk.py (pinned by tests/test_risk.py).
#
# RiskState is one plain struct of fixed capacity (RISK_MAX_SYMBOLS symbols, indexed
# 0 .. n_symbols - 1 in the caller's universe order): it owns no buffer, nothing needs
# freeing, and the state before any call is restored by a plain struct copy.
# Timestamps are epoch ms UTC, >= 0; the UTC day (ts // 86400000) rolls the per-day
# counters when a call carries a later day than the current one (never backwards).
#
# Per 1-minute bar of symbol i the engine does, in this order:
#     risk_on_fill(&rs, i, side, qty, price, fee, ts, &fill)   # for each L1 fill first;
#         if fill.closed: livestats_push(&stats, fill.trade_return)
#     risk_bar(&rs, i, ts, high, low, close, atr, &upd)   # day roll, marks, stop update
#     ... vote says buy (+1) / sell (-1):
#     if rs.pos[i].side == -side:                         # an exit: never blocked
#         risk_check(&rs, i, side, 0.0, close, atr, ts, &chk)
#     else:                                               # an entry: size it, then gate it
#         n = risk_open_positions(&rs, i, idx, notional)  # + rho from the CorrelStates
#         sizing_compute(&sp, &inp, &sz)                  # inp.equity = risk_equity(&rs)
#         risk_check(&rs, i, side, sz.qty, close, atr, ts, &chk)
#     if chk.action != ACTION_HOLD:
#         risk_accept(&rs, i, &chk, ts)                   # counts the entry, reserves it
#     the signal: chk.qty, chk.stop, chk.take_profit; or, holding with a position,
#     upd.stop / upd.take_profit (the updated stop of the open position)

cdef enum:
    RISK_MAX_SYMBOLS = 16
    RISK_MAX_CAPS = 3

# The code enums below are the one declaration of each code: _risk.pyx derives the Python
# names from them (RISK_CODES = the names without RISK_, ACTIONS and STOP_MOVES the names
# without ACTION_ / STOP_, lower-cased), so a new code is added here only (and its fields
# in _risk.pyx's _NOTE_FIELDS).
# A denial (or a cap that reduced the quantity) and the meaning of RiskNote.value/limit.
cpdef enum RiskCode:
    RISK_OK = 0
    RISK_EQUITY_DEPLETED            # value: equity (<= 0)
    RISK_SHORT_NOT_ALLOWED          # a sell entry while shorting is disabled
    RISK_POSITION_OPEN              # value: qty of the open same-side position
    RISK_DAILY_LOSS_LIMIT           # value: day's loss fraction, limit: daily_loss_limit
    RISK_MAX_DAILY_TRADES           # value: entries today, limit: max_daily_trades
    RISK_MAX_CONCURRENT_POSITIONS   # value: open + reserved positions, limit
    RISK_INVALID_STOP               # value: atr, limit: price (no usable stop/take-profit)
    RISK_MAX_POSITION_SIZE          # cap; value: notional / equity asked, limit
    RISK_MAX_LOSS_PER_TRADE         # cap; value: loss at the stop / equity asked, limit
    RISK_EXPOSURE_LIMIT             # cap or denial; value: gross exposure after / equity, limit
    RISK_BELOW_MIN_NOTIONAL         # value: notional after rounding, limit: min_notional
    RISK_TURBULENCE                 # value: the turbulence index, limit: turbulence_threshold

cpdef enum RiskAction:
    ACTION_HOLD = 0
    ACTION_ENTRY
    ACTION_EXIT

cpdef enum AccountFeature:         # a symbol's account state as a model observes it
    ACCOUNT_CASH = 0                # cash in quote currency (the whole account's)
    ACCOUNT_HOLDINGS                # side * qty of the symbol's position (base units: FinRL's shares)
    ACCOUNT_POSITION_FRACTION       # side * qty * mark / equity (0 when equity <= 0)
    ACCOUNT_UNREALIZED_PNL          # side * qty * (mark - entry)

cpdef enum StopMove:
    STOP_NONE = 0                   # unchanged
    STOP_BREAKEVEN                  # moved to the entry price
    STOP_TRAILING                   # ratcheted to best - side * trailing_atr_multiplier * atr

cdef struct RiskParams:
    double atr_multiplier           # stop distance R = atr_multiplier * ATR, > 0
    double max_loss_per_trade       # qty * R <= this * equity, (0, 1]
    double take_profit_r            # take-profit at entry + side * take_profit_r * R, > 0
    double breakeven_threshold      # move the stop to entry once best is this many R away, > 0
    double trailing_atr_multiplier  # trailing distance in ATRs (after breakeven), > 0
    int max_daily_trades            # entries per UTC day, >= 1
    double daily_loss_limit         # day's loss fraction that halts entries, (0, 1]
    int max_concurrent_positions    # >= 1
    double exposure_limit           # gross notional / equity after an entry, (0, 1]
    double max_position_size        # notional / equity of one entry, (0, 1]
    bint allow_short                # a sell while flat opens a short
    double turbulence_threshold     # entries denied while turbulence >= it (INFINITY: off)

cdef struct Position:
    int side                        # +1 long, -1 short, 0 flat (other fields then unused)
    double qty                      # > 0
    double entry                    # average entry price
    double stop
    double take_profit
    double r                        # initial risk per unit |entry - initial stop|
    double best                     # most favourable price since entry (high / low)
    bint breakeven                  # the stop has been moved to breakeven
    long long opened_ts
    double trade_pnl                # realized PnL of the trade so far, fees included
    double trade_cost               # entry notional of the trade (sum of qty * price)

cdef struct Reservation:
    # An accepted entry waiting for its fill; lives until the fill or the symbol's next bar.
    int side                        # 0: none
    double qty
    double price
    double r
    long long ts

cdef struct RiskState:
    RiskParams prm
    int n_symbols
    double lot_step[RISK_MAX_SYMBOLS]
    double min_notional[RISK_MAX_SYMBOLS]
    Position pos[RISK_MAX_SYMBOLS]
    Reservation pending[RISK_MAX_SYMBOLS]
    double mark[RISK_MAX_SYMBOLS]   # last close or fill price (NaN before the first)
    double atr[RISK_MAX_SYMBOLS]    # ATR of the symbol's last bar (NaN before / in warm-up)
    double cash                     # equity = cash + sum side * qty * mark
    double fees                     # fees paid since init
    long long day                   # UTC day of the counters (-1 before any timestamp)
    double day_start_equity         # equity when the day rolled (marked at the last prices)
    double realized_today           # realized PnL today, fees included
    int entries_today               # accepted entries + fills opening unreserved positions
    bint halted                     # the daily loss limit was reached today (latched)
    double turbulence               # FinRL's turbulence index as the engine last stepped it (0 before)
    double halt_loss                # the loss fraction that set ``halted``

cdef struct RiskBarUpdate:
    int side                        # of the symbol's position (0: flat; fields below 0)
    double qty
    double entry
    double stop                     # in force from the next bar on
    double take_profit
    double r
    double best
    bint breakeven
    StopMove stop_move              # what this bar did to the stop
    bint stop_hit                   # the bar's range touched the stop in force at its open
    bint take_profit_hit
    double unrealized               # side * qty * (close - entry)
    double equity
    double day_start_equity
    double day_loss                 # max(0, day_start_equity - equity) / day_start_equity
    bint halted
    int entries_today

cdef struct RiskNote:
    RiskCode code
    double value
    double limit
    double qty                      # quantity after this cap (0 in a denial)

cdef struct RiskCheck:
    RiskAction action
    int side                        # +1 buy, -1 sell
    double qty_requested
    double qty                      # approved quantity (0 when held)
    double price
    double notional                 # qty * price
    double stop                     # entry: stop-loss price; exit / hold: 0
    double take_profit              # entry: take-profit price; exit / hold: 0
    double r                        # entry: stop distance per unit; else 0
    RiskNote denial                 # code RISK_OK unless action == ACTION_HOLD
    int n_caps
    RiskNote caps[RISK_MAX_CAPS]    # reductions in order: position size, loss, exposure

cdef struct FillResult:
    bint opened                     # a position was opened (or the rest of a reversal)
    bint closed                     # a position was closed in full
    double realized                 # realized PnL of this fill, fees included
    double trade_return             # closed: the trade's PnL / its entry notional; else 0
    int side                        # the symbol's position after the fill
    double qty
    double equity

# Fill ``prm`` from a risk section read by attribute (l2fast.config.RiskConfig's names):
# the one function that fills a RiskParams (the engine and RiskGate call it; GIL held).
cdef int risk_params_fill(RiskParams* prm, object risk) except -1
# Fresh state: every symbol flat, its lot_step and min_notional unset (0) until risk_set_symbol.
cdef void risk_init(RiskState* s, const RiskParams* prm, int n_symbols,
                    double initial_equity) noexcept nogil
cdef void risk_set_symbol(RiskState* s, int i, double lot_step, double min_notional) noexcept nogil
cdef double risk_equity(const RiskState* s) noexcept nogil
# Sum of qty * mark over open positions (reservations excluded).
cdef double risk_gross_exposure(const RiskState* s) noexcept nogil
# One AccountFeature of symbol i (0 for a flat symbol but ACCOUNT_CASH; a feature outside
# the enum is NaN).
cdef double risk_account(const RiskState* s, int i, int feature) noexcept nogil
# Open positions other than ``exclude``: writes their symbol index and signed notional
# (side * qty * mark) and returns how many (<= n_symbols).
cdef int risk_open_positions(const RiskState* s, int exclude, int* idx,
                             double* signed_notional) noexcept nogil
cdef void risk_bar(RiskState* s, int i, long long ts, double high, double low, double close,
                   double atr, RiskBarUpdate* out) noexcept nogil
# Pure: what the gate allows for ``side`` on symbol i at ``price`` (an exit when the
# position is on the other side: its full qty, ``qty`` ignored).
cdef void risk_check(const RiskState* s, int i, int side, double qty, double price, double atr,
                     long long ts, RiskCheck* out) noexcept nogil
# Records an allowed check that becomes a signal: an entry is counted for the day and
# reserved (slot and exposure) until its fill or the symbol's next bar; an exit changes nothing.
cdef void risk_accept(RiskState* s, int i, const RiskCheck* chk, long long ts) noexcept nogil
cdef void risk_on_fill(RiskState* s, int i, int side, double qty, double price, double fee,
                       long long ts, FillResult* out) noexcept nogil

# The Python renderings of the results (JSON-safe; the keys RiskGate returns), for the
# engine's ``reasoning``: a note is ``{"code": "DAILY_LOSS_LIMIT", "loss": .., "limit": ..}``.
cdef dict risk_note_dict(const RiskNote* n)
cdef dict risk_check_dict(const RiskCheck* c)
cdef dict risk_bar_dict(const RiskBarUpdate* u)
cdef dict fill_result_dict(const FillResult* f)

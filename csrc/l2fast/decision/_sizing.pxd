# Contract of position sizing: the live trade statistics and the per-entry sizing kernel.
#
# Formulas (documented in full in l2fast/decision/sizing.py, pinned by tests/test_sizing.py):
#   f*          = p - (1 - p) / b, clamped to [0, 1]; 0 when b <= 0
#   kelly       = kelly_fraction * f*
#   vol_used    = max(vol, volatility_target / max_vol_scale)     (the zero-vol guard)
#   vol_scale   = volatility_target / vol_used                    (<= max_vol_scale)
#   risk_parity = N * w, w = (1/vol_used) / sum over the N symbols with a known vol of
#                 1/max(vol_j, floor)                              (1 for equal vols)
#   correlation = max(0, 1 - sum_j a_j * |notional_j| / equity),
#                 a_j = max(0, direction * sign(notional_j) * rho_j), a_j = 1 if rho_j is NaN
#   fraction    = min(max_position_size,
#                     kelly * vol_scale * risk_parity * correlation
#                     * target_exposure * risk_appetite * confidence)
#   qty         = fraction * equity / price rounded DOWN to lot_step (never above it,
#                 nor above fraction * equity in notional); 0 if notional < min_notional
#
# Per entry decision the caller does:
#     source = livestats_kelly_inputs(&stats, min_trades, manifest_p, manifest_b, &p, &b)
#     fill a SizingInput (p, b, source, equity from risk_equity(), vols, open exposure)
#     sizing_compute(&params, &input, &result)      # result.qty, every factor, a code
# and, when a trade closes (risk_on_fill's FillResult.closed):
#     livestats_push(&stats, fill.trade_return)
# FinRL's action semantics (a manifest's ``finrl`` block; StockTradingEnv, FinRL 0.3.7):
#     shares = trunc(float32(action) * float32(hmax))        (numpy's float32 product, astype(int))
#     sell (shares < 0): min(-shares, held)                   (held: the long position, 0 if none)
#     buy  (shares > 0): min(shares, cash // (price * (1 + buy_cost)))   (Python's float //)
# sizing_finrl_shares returns the signed whole shares FinRL would trade.
# Nothing here fails or allocates except livestats_init (one buffer, freed by
# livestats_free); all structs are restored by a plain copy (the window keeps a spare slot).

from libc.math cimport fabs, floor, round

from l2fast.technical._averages cimport Window

# The two code enums are the one declaration of their codes: _sizing.pyx derives the
# Python names (SIZING_CODES: the names without SIZE_; KELLY_SOURCES: without KELLY_,
# lower-cased).
# Why a sizing result is zero (SIZE_OK when qty > 0).
cpdef enum SizingCode:
    SIZE_OK = 0
    SIZE_VOL_UNKNOWN            # this symbol's volatility is NaN (still warming up)
    SIZE_NO_EDGE                # f* = 0: p and b give no positive Kelly bet
    SIZE_ZERO_SCALE             # a multiplier (exposure, appetite, confidence, correlation) is 0
    SIZE_BELOW_MIN_NOTIONAL     # the lot-rounded notional is below min_notional (or 0 lots)

# Where p and b came from.
cpdef enum KellySource:
    KELLY_MANIFEST = 0          # the ensemble members' manifest metrics
    KELLY_LIVE = 1              # the live trade statistics (>= min_trades closed trades)

# ------------------------------------------------------------------ live statistics

cdef struct LiveStats:
    # Returns of the last ``window`` closed trades (trade PnL, fees included, over the
    # trade's entry notional); the counts and sums below cover exactly those.
    Window trades
    int count                   # trades in the window: min(pushed, window)
    int wins                    # returns > 0
    int losses                  # returns < 0 (a return of exactly 0 is neither)
    double sum_win              # sum of the winning returns
    double sum_loss             # sum of |losing returns|

cdef int livestats_init(LiveStats* s, Py_ssize_t window) except -1
cdef void livestats_reset(LiveStats* s) noexcept nogil
cdef void livestats_free(LiveStats* s) noexcept nogil
# Add one closed trade's return (finite); O(window), once per closed trade.
cdef void livestats_push(LiveStats* s, double trade_return) noexcept nogil
# p = wins / count (0 when count = 0).
cdef double livestats_p(const LiveStats* s) noexcept nogil
# b = mean win / mean |loss|; 0 when there is no win or no loss (as the manifests' payoff_ratio).
cdef double livestats_b(const LiveStats* s) noexcept nogil
# Writes the Kelly inputs: the live p and b once count >= min_trades, else the manifest's.
cdef KellySource livestats_kelly_inputs(const LiveStats* s, int min_trades, double manifest_p,
                                        double manifest_b, double* p, double* b) noexcept nogil

# ------------------------------------------------------------------------ sizing

cdef struct SizingParams:
    double kelly_fraction       # (0, 1]
    double volatility_target    # annualised, > 0
    double max_vol_scale        # cap of vol_scale, > 0 (sets the volatility floor)
    double max_position_size    # fraction of equity, (0, 1]
    bint confidence_scaling     # multiply by the signal's confidence

cdef struct SizingInput:
    double equity               # > 0 (quote currency)
    double price                # > 0, reference entry price
    int direction               # +1 buy, -1 sell
    double p                    # Kelly win probability, [0, 1]
    double b                    # Kelly payoff ratio, >= 0
    KellySource kelly_source    # passed through to the result
    double vol                  # this symbol's annualised realized vol, >= 0 (NaN: unknown)
    const double* other_vols    # the other universe symbols' vols (NaN: unknown, skipped)
    int n_other
    const double* open_notional # signed notional (+ long, - short) of the open positions
    const double* open_rho      # their return correlation with this symbol (NaN: unknown)
    int n_open
    double target_exposure      # L3's target exposure, [0, 1]
    double risk_appetite        # L3's risk-appetite multiplier, >= 0
    double confidence           # the signal's confidence, [0, 1]
    double lot_step             # > 0
    double min_notional         # >= 0

cdef struct SizingResult:
    SizingCode code
    KellySource kelly_source
    double p
    double b
    double kelly_full           # f*
    double kelly                # kelly_fraction * f*
    double vol                  # input volatility
    double vol_used             # after the floor
    double vol_scale
    double risk_parity
    int n_universe              # symbols with a known vol in the risk-parity weight
    double correlated_exposure  # sum_j a_j * |notional_j| / equity
    double correlation
    double target_exposure
    double risk_appetite
    double confidence           # the confidence factor applied (1 when scaling is off)
    double fraction_raw         # product of all factors
    double fraction             # after the max_position_size cap
    bint capped                 # fraction_raw > max_position_size
    double notional_target      # fraction * equity
    double qty                  # final quantity (0 unless code == SIZE_OK)
    double notional             # qty * price
    double lot_step
    double min_notional

# Fill ``p`` from a risk section read by attribute (l2fast.config.RiskConfig's names):
# the one function that fills a SizingParams (the engine and PositionSizer call it; GIL held).
cdef int sizing_params_fill(SizingParams* p, object risk) except -1
cdef void sizing_compute(const SizingParams* prm, const SizingInput* inp,
                         SizingResult* out) noexcept nogil
# The result as the JSON-safe dict PositionSizer.size returns (``reasoning["sizing"]``).
cdef dict sizing_result_dict(const SizingResult* r)


# Boundary validation of the Python wrappers (here and in _risk.pyx): ``value`` as a finite
# double in [lo, hi], lo excluded when lo_open; None gives NaN when allow_none. Raises
# InvalidInputError naming ``name`` and the value.
cdef double check_number(object value, str name, double lo, double hi, bint lo_open=*,
                         bint allow_none=*) except? -1

# ------------------------------------------------------------------ lot rounding
# Shared with the risk gate. A lot step that is the reciprocal of a whole number m
# (1e-5, 0.001, 0.5...) gives quantities n / m, the doubles nearest the decimal lot
# multiples (n * 1e-5 would leave 0.00228 as 0.0022800000000000003); other steps give n * lot.

cdef inline double lots_per_unit(double lot) noexcept nogil:
    cdef double m = round(1.0 / lot)
    return m if m >= 1.0 and fabs(m * lot - 1.0) <= 1e-12 else 0.0


cdef inline double lot_qty(double n, double lot, double m) noexcept nogil:
    return n / m if m > 0.0 else n * lot


# The largest whole number of lots q <= qty_max with q * price <= notional_max,
# q * r <= loss_max and gross + q * price <= gross_max, all in exact floating point; 0 if
# none. (Only beyond 2**53 lots, where n - 1 == n, does the bounded search give up.)
cdef inline double round_down_lots(double qty_max, double lot, double price, double notional_max,
                                   double r, double loss_max, double gross,
                                   double gross_max) noexcept nogil:
    cdef double m = lots_per_unit(lot), n, q
    cdef int tries
    if not qty_max > 0.0:
        return 0.0
    n = floor(qty_max * m) if m > 0.0 else floor(qty_max / lot)
    # The product or division may land one lot low: step up once if the next lot fits.
    if lot_qty(n + 1.0, lot, m) <= qty_max:
        n += 1.0
    for tries in range(4):
        if n <= 0.0:
            return 0.0
        q = lot_qty(n, lot, m)
        if (q <= qty_max and q * price <= notional_max and q * r <= loss_max
                and gross + q * price <= gross_max):
            return q
        n -= 1.0
    return 0.0

# The signed shares FinRL's StockTradingEnv trades for ``action`` (comment above).
cdef double sizing_finrl_shares(double action, int hmax, double price, double cash, double held,
                                double buy_cost) noexcept nogil

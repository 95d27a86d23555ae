"""Oscillators: RSI, MACD, Stochastic (slow %K/%D) and ADX with +DI/-DI.

Arithmetic follows the linked TA-Lib (C library 0.8.1, under the ``ta-lib`` 0.8.2
wheel) operation for operation, so results are bit-identical to ``talib.RSI``,
``talib.MACD``, ``talib.STOCH`` (SMA smoothing), ``talib.ADX``, ``talib.PLUS_DI`` and
``talib.MINUS_DI`` (default compatibility mode). That build differs from older TA-Lib
sources in ways that change the last bits, which the kernels reproduce:

* RSI divides by the period as a multiplication by ``1.0 / period``;
* MACD's three EMAs step as ``fma(k, x - prev, prev)`` (``averages.ema_step``): TA-Lib's
  FMA clone, which it selects on x86-64 CPUs with FMA. On CPUs without FMA TA-Lib falls
  back to ``(x - prev) * k + prev`` while these kernels still compute the fused form (in
  software), so there the two agree to rounding only;
* fast %K is ``(close - lowest) / (highest - lowest) * 100``;
* zero tests are exact comparisons with 0 (measured down to denormals).
"""

from libc.math cimport NAN, fabs
from libc.string cimport memset

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast.technical._averages cimport (
    EMAState,
    SMAState,
    Window,
    ema_init,
    ema_step_on,
    sma_init,
    sma_free,
    sma_step,
    window_get,
    window_push,
    window_free,
    window_init,
)
from l2fast._checks cimport (
    as_input, check_finite, check_period, check_same_length, fma_available,
)

cnp.import_array()


# Each kernel's step body (``_x``) has a single call site, the batch loop (``_x_run``;
# ``_macd_loop`` per FMA flavour), and ``x_step`` is that loop over one value. GCC
# then always inlines the body into the loop (it inlines functions called once even
# where the module's inlining budget is spent), and the loop steps a local copy of the
# state, which the compiler keeps in registers because the outputs cannot alias it.

# ------------------------------------------------------------------------- RSI

cdef void rsi_init(RSIState* s, Py_ssize_t period) noexcept nogil:
    s.period = period
    s.inv_period = 1.0 / <double>period
    s.period_m1 = <double>(period - 1)
    s.prev = 0.0
    s.gain = 0.0
    s.loss = 0.0
    s.n = 0


cdef inline double _rsi(RSIState* s, double x) noexcept nogil:
    cdef double diff, up, down, total
    s.n += 1
    if s.n == 1:
        s.prev = x
        return NAN
    diff = x - s.prev
    s.prev = x
    # Branch-free split (rises and falls alternate unpredictably); adding the zero
    # side leaves a sum bit-for-bit unchanged.
    up = diff if diff > 0.0 else 0.0
    down = up - diff
    if s.n <= s.period + 1:
        # Seeding: the first ``period`` changes are summed, then averaged once.
        s.gain += up
        s.loss += down
        if s.n <= s.period:
            return NAN
    else:
        s.gain = s.gain * s.period_m1 + up
        s.loss = s.loss * s.period_m1 + down
    s.loss *= s.inv_period
    s.gain *= s.inv_period
    total = s.gain + s.loss
    if total != 0.0:
        return (s.gain / total) * 100.0
    return 0.0


cdef void _rsi_run(RSIState* s, const double* x, double* o, Py_ssize_t n) noexcept nogil:
    cdef RSIState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = _rsi(&st, x[i])
    s[0] = st


cdef double rsi_step(RSIState* s, double x) noexcept nogil:
    cdef double out
    _rsi_run(s, &x, &out, 1)
    return out


# ------------------------------------------------------------------------ MACD

cdef void macd_init(MACDState* s, Py_ssize_t fast, Py_ssize_t slow,
                    Py_ssize_t signal) noexcept nogil:
    ema_init(&s.fast, fast)
    ema_init(&s.slow, slow)
    ema_init(&s.signal, signal)
    s.fast_skip = slow - fast
    s.n = 0


cdef inline void _macd(MACDState* s, double x, double* macd, double* signal,
                       double* hist, bint hw) noexcept nogil:
    cdef double f = NAN, sl, m, sig
    s.n += 1
    # TA-Lib seeds both price EMAs on windows ending at the same bar (slow - 1), so
    # the fast EMA ignores the first ``slow - fast`` inputs altogether.
    if s.n > s.fast_skip:
        f = ema_step_on(&s.fast, x, hw)
    sl = ema_step_on(&s.slow, x, hw)
    if s.n < s.slow.period:
        macd[0] = NAN
        signal[0] = NAN
        hist[0] = NAN
        return
    m = f - sl
    sig = ema_step_on(&s.signal, m, hw)
    if s.signal.n < s.signal.period:
        macd[0] = NAN
        signal[0] = NAN
        hist[0] = NAN
        return
    macd[0] = m
    signal[0] = sig
    hist[0] = m - sig


cdef inline void _macd_loop(MACDState* s, const double* x, double* om, double* osg,
                            double* oh, Py_ssize_t n, bint hw) noexcept nogil:
    cdef MACDState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        _macd(&st, x[i], &om[i], &osg[i], &oh[i], hw)
    s[0] = st


cdef void _macd_run(MACDState* s, const double* x, double* om, double* osg, double* oh,
                    Py_ssize_t n) noexcept nogil:
    if fma_available():
        _macd_loop(s, x, om, osg, oh, n, True)
    else:
        _macd_loop(s, x, om, osg, oh, n, False)


cdef void macd_step(MACDState* s, double x, double* macd, double* signal,
                    double* hist) noexcept nogil:
    _macd_run(s, &x, macd, signal, hist, 1)


# ------------------------------------------------------------------ Stochastic

cdef int stoch_init(StochState* s, Py_ssize_t fastk_period, Py_ssize_t slowk_period,
                    Py_ssize_t slowd_period) except -1:
    memset(s, 0, sizeof(StochState))
    try:
        window_init(&s.highs, fastk_period)
        window_init(&s.lows, fastk_period)
        sma_init(&s.slowk, slowk_period)
        sma_init(&s.slowd, slowd_period)
    except MemoryError:
        stoch_free(s)
        raise
    stoch_reset(s)
    return 0


cdef void stoch_free(StochState* s) noexcept nogil:
    window_free(&s.highs)
    window_free(&s.lows)
    sma_free(&s.slowk)
    sma_free(&s.slowd)


cdef inline void _window_clear(Window* w) noexcept nogil:
    w.head = 0
    w.n = 0


cdef void stoch_reset(StochState* s) noexcept nogil:
    _window_clear(&s.highs)
    _window_clear(&s.lows)
    _window_clear(&s.slowk.win)
    _window_clear(&s.slowd.win)
    s.slowk.total = 0.0
    s.slowd.total = 0.0
    s.highest = 0.0
    s.lowest = 0.0
    s.highest_at = -1
    s.lowest_at = -1


cdef inline void _stoch(StochState* s, double high, double low, double close,
                        double* k, double* d) noexcept nogil:
    cdef Py_ssize_t size = s.highs.size, lag
    cdef long long today, trailing
    cdef double v, span, fastk, slowk, slowd
    window_push(&s.highs, high)
    window_push(&s.lows, low)
    if s.highs.n < size:
        k[0] = NAN
        d[0] = NAN
        return
    today = s.highs.n - 1
    trailing = today - size + 1
    # An extreme is kept until it leaves the window; only then is the window
    # rescanned (oldest first, strict comparison, as TA-Lib), so the cost is O(1)
    # amortised.
    if s.lowest_at < trailing:
        s.lowest = window_get(&s.lows, size - 1)
        s.lowest_at = trailing
        for lag in range(size - 2, -1, -1):
            v = window_get(&s.lows, lag)
            if v < s.lowest:
                s.lowest = v
                s.lowest_at = today - lag
    elif low <= s.lowest:
        s.lowest = low
        s.lowest_at = today
    if s.highest_at < trailing:
        s.highest = window_get(&s.highs, size - 1)
        s.highest_at = trailing
        for lag in range(size - 2, -1, -1):
            v = window_get(&s.highs, lag)
            if v > s.highest:
                s.highest = v
                s.highest_at = today - lag
    elif high >= s.highest:
        s.highest = high
        s.highest_at = today
    span = s.highest - s.lowest
    if span != 0.0:
        fastk = (close - s.lowest) / span * 100.0
    else:
        fastk = 0.0
    slowk = sma_step(&s.slowk, fastk)
    if s.slowk.win.n < s.slowk.win.size:
        k[0] = NAN
        d[0] = NAN
        return
    slowd = sma_step(&s.slowd, slowk)
    # TA-Lib publishes slow %K only from the bar where slow %D is defined.
    if s.slowd.win.n < s.slowd.win.size:
        k[0] = NAN
        d[0] = NAN
        return
    k[0] = slowk
    d[0] = slowd


cdef void _stoch_run(StochState* s, const double* h, const double* l, const double* c,
                     double* ok, double* od, Py_ssize_t n) noexcept nogil:
    cdef StochState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        _stoch(&st, h[i], l[i], c[i], &ok[i], &od[i])
    s[0] = st


cdef void stoch_step(StochState* s, double high, double low, double close,
                     double* k, double* d) noexcept nogil:
    _stoch_run(s, &high, &low, &close, k, d, 1)


# ------------------------------------------------------------------------- ADX

cdef void adx_init(ADXState* s, Py_ssize_t period) noexcept nogil:
    s.period = period
    s.period_d = <double>period
    s.period_m1 = <double>(period - 1)
    s.prev_high = 0.0
    s.prev_low = 0.0
    s.prev_close = 0.0
    s.plus_dm = 0.0
    s.minus_dm = 0.0
    s.tr = 0.0
    s.sum_dx = 0.0
    s.adx = 0.0
    s.n = 0


cdef inline void _adx(ADXState* s, double high, double low, double close,
                      double* adx, double* pdi, double* mdi) noexcept nogil:
    cdef double diff_p, diff_m, tr, t, mdi_v, pdi_v, di_sum, dx = 0.0
    cdef bint has_dx = False
    s.n += 1
    if s.n == 1:
        s.prev_high = high
        s.prev_low = low
        s.prev_close = close
        adx[0] = NAN
        pdi[0] = NAN
        mdi[0] = NAN
        return
    diff_p = high - s.prev_high
    diff_m = s.prev_low - low
    s.prev_high = high
    s.prev_low = low
    tr = high - low
    t = fabs(high - s.prev_close)
    if t > tr:
        tr = t
    t = fabs(low - s.prev_close)
    if t > tr:
        tr = t
    s.prev_close = close
    if s.n > s.period:
        s.minus_dm -= s.minus_dm / s.period_d
        s.plus_dm -= s.plus_dm / s.period_d
    # Branch-free (the direction is unpredictable); adding 0.0 changes no bits.
    s.minus_dm += diff_m if diff_m > 0.0 and diff_p < diff_m else 0.0
    s.plus_dm += diff_p if diff_p > 0.0 and diff_p > diff_m else 0.0
    if s.n <= s.period:
        # Seeding: the first ``period - 1`` directional moves and ranges are summed.
        s.tr += tr
        adx[0] = NAN
        pdi[0] = NAN
        mdi[0] = NAN
        return
    s.tr = s.tr - s.tr / s.period_d + tr
    if s.tr != 0.0:
        mdi_v = 100.0 * (s.minus_dm / s.tr)
        pdi_v = 100.0 * (s.plus_dm / s.tr)
        di_sum = mdi_v + pdi_v
        if di_sum != 0.0:
            dx = 100.0 * (fabs(mdi_v - pdi_v) / di_sum)
            has_dx = True
    else:
        mdi_v = 0.0
        pdi_v = 0.0
    pdi[0] = pdi_v
    mdi[0] = mdi_v
    if s.n <= 2 * s.period:
        # TA-Lib leaves an undefined DX out of the seed sum but still divides by period.
        if has_dx:
            s.sum_dx += dx
        if s.n < 2 * s.period:
            adx[0] = NAN
            return
        s.adx = s.sum_dx / s.period_d
    elif has_dx:
        s.adx = (s.adx * s.period_m1 + dx) / s.period_d
    adx[0] = s.adx


cdef void _adx_run(ADXState* s, const double* h, const double* l, const double* c,
                   double* oa, double* op, double* om, Py_ssize_t n) noexcept nogil:
    cdef ADXState st = s[0]
    cdef Py_ssize_t i
    for i in range(n):
        _adx(&st, h[i], l[i], c[i], &oa[i], &op[i], &om[i])
    s[0] = st


cdef void adx_step(ADXState* s, double high, double low, double close,
                   double* adx, double* pdi, double* mdi) noexcept nogil:
    _adx_run(s, &high, &low, &close, adx, pdi, mdi, 1)


# ------------------------------------------------------------- Python classes

cdef class RSI:
    """Relative Strength Index with Wilder smoothing, equal to ``talib.RSI``.

    Args:
        period: Smoothing period (>= 2). The first value comes after ``period + 1``
            closes.
    """

    cdef RSIState _s
    cdef RSIState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        rsi_init(&self._s, period)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once the output is defined (after ``period + 1`` updates)."""
        return self._s.n > self.period

    cpdef double update(self, double close) except? -1:
        """Add a closed bar's close and return the RSI (NaN during warm-up)."""
        check_finite(close, "close")
        self._prev = self._s
        return rsi_step(&self._s, close)

    cpdef double update_last(self, double close) except? -1:
        """Replace the most recent close (an intra-bar revision) and return the RSI."""
        check_finite(close, "close")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        return rsi_step(&self._s, close)

    def update_many(self, closes) -> np.ndarray:
        """Feed an array of closes; returns the RSI after each one (NaN in warm-up)."""
        cdef cnp.ndarray arr = as_input(closes, "closes")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        if n == 0:
            return out
        with nogil:
            _rsi_run(&self._s, &x[0], &o[0], n - 1)
            self._prev = self._s
            _rsi_run(&self._s, &x[n - 1], &o[n - 1], 1)
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        rsi_init(&self._s, self.period)
        self._prev = self._s


cdef class MACD:
    """MACD line, signal line and histogram, equal to ``talib.MACD``.

    As in TA-Lib, both price EMAs are seeded on windows ending at bar ``slow - 1``
    (the fast EMA is seeded by the mean of closes ``slow - fast`` .. ``slow - 1`` and
    never sees the earlier ones), and all three outputs are NaN until the signal
    line is defined, i.e. for the first ``slow + signal - 2`` closes.

    Args:
        fast: Fast EMA period (>= 2).
        slow: Slow EMA period (> fast).
        signal: Signal EMA period (>= 1).
    """

    cdef MACDState _s
    cdef MACDState _prev
    cdef readonly Py_ssize_t fast
    cdef readonly Py_ssize_t slow
    cdef readonly Py_ssize_t signal

    def __cinit__(self, Py_ssize_t fast, Py_ssize_t slow, Py_ssize_t signal):
        check_period(fast, 2, "fast")
        check_period(slow, 2, "slow")
        check_period(signal, 1, "signal")
        if slow <= fast:
            raise InvalidInputError(f"slow={slow!r}: must be greater than fast={fast!r}")
        self.fast = fast
        self.slow = slow
        self.signal = signal
        macd_init(&self._s, fast, slow, signal)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once the outputs are defined (after ``slow + signal - 1`` updates)."""
        return self._s.n >= self.slow + self.signal - 1

    cpdef tuple update(self, double close):
        """Add a closed bar's close; returns ``(macd, signal, hist)`` (NaN in warm-up)."""
        cdef double m, sig, h
        check_finite(close, "close")
        self._prev = self._s
        macd_step(&self._s, close, &m, &sig, &h)
        return (m, sig, h)

    cpdef tuple update_last(self, double close):
        """Replace the most recent close; returns ``(macd, signal, hist)``."""
        cdef double m, sig, h
        check_finite(close, "close")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        macd_step(&self._s, close, &m, &sig, &h)
        return (m, sig, h)

    def update_many(self, closes) -> tuple:
        """Feed an array of closes; returns arrays ``(macd, signal, hist)``."""
        cdef cnp.ndarray arr = as_input(closes, "closes")
        cdef const double[::1] x = arr
        cdef Py_ssize_t n = x.shape[0]
        out_m = np.empty(n, dtype=np.float64)
        out_s = np.empty(n, dtype=np.float64)
        out_h = np.empty(n, dtype=np.float64)
        cdef double[::1] om = out_m, osg = out_s, oh = out_h
        if n == 0:
            return out_m, out_s, out_h
        with nogil:
            _macd_run(&self._s, &x[0], &om[0], &osg[0], &oh[0], n - 1)
            self._prev = self._s
            _macd_run(&self._s, &x[n - 1], &om[n - 1], &osg[n - 1], &oh[n - 1], 1)
        return out_m, out_s, out_h

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        macd_init(&self._s, self.fast, self.slow, self.signal)
        self._prev = self._s


cdef class Stochastic:
    """Slow stochastic oscillator, equal to ``talib.STOCH`` with SMA smoothing.

    Fast %K is ``100 * (close - lowest low) / (highest high - lowest low)`` over the
    last ``fastk_period`` bars (0 when that range is 0); slow %K is its SMA over
    ``slowk_period`` and slow %D the SMA of slow %K over ``slowd_period``. As in TA-Lib,
    both outputs are NaN for the first ``fastk + slowk + slowd - 3`` bars.

    Args:
        fastk_period: Look-back of the high/low range (>= 1).
        slowk_period: Smoothing of fast %K (>= 1).
        slowd_period: Smoothing of slow %K (>= 1).
    """

    cdef StochState _s
    cdef StochState _prev
    cdef readonly Py_ssize_t fastk_period
    cdef readonly Py_ssize_t slowk_period
    cdef readonly Py_ssize_t slowd_period

    def __cinit__(self, Py_ssize_t fastk_period, Py_ssize_t slowk_period, Py_ssize_t slowd_period):
        check_period(fastk_period, 1, "fastk_period")
        check_period(slowk_period, 1, "slowk_period")
        check_period(slowd_period, 1, "slowd_period")
        self.fastk_period = fastk_period
        self.slowk_period = slowk_period
        self.slowd_period = slowd_period
        stoch_init(&self._s, fastk_period, slowk_period, slowd_period)
        self._prev = self._s

    def __dealloc__(self):
        stoch_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once both outputs are defined (after ``fastk + slowk + slowd - 2`` updates)."""
        return self._s.highs.n >= self.fastk_period + self.slowk_period + self.slowd_period - 2

    cdef int _check_bar(self, double high, double low, double close) except -1:
        check_finite(high, "high")
        check_finite(low, "low")
        check_finite(close, "close")
        return 0

    cpdef tuple update(self, double high, double low, double close):
        """Add a closed bar; returns ``(slowk, slowd)`` (both NaN during warm-up)."""
        cdef double k, d
        self._check_bar(high, low, close)
        self._prev = self._s
        stoch_step(&self._s, high, low, close, &k, &d)
        return (k, d)

    cpdef tuple update_last(self, double high, double low, double close):
        """Replace the most recent bar (an intra-bar revision); returns ``(slowk, slowd)``."""
        cdef double k, d
        self._check_bar(high, low, close)
        if self._s.highs.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        stoch_step(&self._s, high, low, close, &k, &d)
        return (k, d)

    def update_many(self, highs, lows, closes) -> tuple:
        """Feed arrays of highs, lows and closes; returns arrays ``(slowk, slowd)``."""
        cdef cnp.ndarray ah = as_input(highs, "highs")
        cdef cnp.ndarray al = as_input(lows, "lows")
        cdef cnp.ndarray ac = as_input(closes, "closes")
        check_same_length(ah.shape[0], al.shape[0], "lows")
        check_same_length(ah.shape[0], ac.shape[0], "closes")
        cdef const double[::1] h = ah, l = al, c = ac
        cdef Py_ssize_t n = h.shape[0]
        out_k = np.empty(n, dtype=np.float64)
        out_d = np.empty(n, dtype=np.float64)
        cdef double[::1] ok = out_k, od = out_d
        if n == 0:
            return out_k, out_d
        with nogil:
            _stoch_run(&self._s, &h[0], &l[0], &c[0], &ok[0], &od[0], n - 1)
            self._prev = self._s
            _stoch_run(&self._s, &h[n - 1], &l[n - 1], &c[n - 1], &ok[n - 1], &od[n - 1], 1)
        return out_k, out_d

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        stoch_reset(&self._s)
        self._prev = self._s


cdef class ADX:
    """Average Directional Index with +DI and -DI, equal to ``talib.ADX``,
    ``talib.PLUS_DI`` and ``talib.MINUS_DI``.

    Args:
        period: Wilder smoothing period (>= 2). +DI/-DI are defined after
            ``period + 1`` bars, ADX after ``2 * period`` bars.
    """

    cdef ADXState _s
    cdef ADXState _prev
    cdef readonly Py_ssize_t period

    def __cinit__(self, Py_ssize_t period):
        check_period(period, 2)
        self.period = period
        adx_init(&self._s, period)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once all three outputs are defined (after ``2 * period`` updates)."""
        return self._s.n >= 2 * self.period

    cdef int _check_bar(self, double high, double low, double close) except -1:
        check_finite(high, "high")
        check_finite(low, "low")
        check_finite(close, "close")
        return 0

    cpdef tuple update(self, double high, double low, double close):
        """Add a closed bar; returns ``(adx, plus_di, minus_di)`` (NaN during warm-up)."""
        cdef double a, p, m
        self._check_bar(high, low, close)
        self._prev = self._s
        adx_step(&self._s, high, low, close, &a, &p, &m)
        return (a, p, m)

    cpdef tuple update_last(self, double high, double low, double close):
        """Replace the most recent bar; returns ``(adx, plus_di, minus_di)``."""
        cdef double a, p, m
        self._check_bar(high, low, close)
        if self._s.n == 0:
            raise InvalidInputError("update_last: no value to revise yet")
        self._s = self._prev
        adx_step(&self._s, high, low, close, &a, &p, &m)
        return (a, p, m)

    def update_many(self, highs, lows, closes) -> tuple:
        """Feed arrays of highs, lows and closes; returns arrays ``(adx, plus_di, minus_di)``."""
        cdef cnp.ndarray ah = as_input(highs, "highs")
        cdef cnp.ndarray al = as_input(lows, "lows")
        cdef cnp.ndarray ac = as_input(closes, "closes")
        check_same_length(ah.shape[0], al.shape[0], "lows")
        check_same_length(ah.shape[0], ac.shape[0], "closes")
        cdef const double[::1] h = ah, l = al, c = ac
        cdef Py_ssize_t n = h.shape[0]
        out_a = np.empty(n, dtype=np.float64)
        out_p = np.empty(n, dtype=np.float64)
        out_m = np.empty(n, dtype=np.float64)
        cdef double[::1] oa = out_a, op = out_p, om = out_m
        if n == 0:
            return out_a, out_p, out_m
        with nogil:
            _adx_run(&self._s, &h[0], &l[0], &c[0], &oa[0], &op[0], &om[0], n - 1)
            self._prev = self._s
            _adx_run(&self._s, &h[n - 1], &l[n - 1], &c[n - 1], &oa[n - 1], &op[n - 1],
                     &om[n - 1], 1)
        return out_a, out_p, out_m

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        adx_init(&self._s, self.period)
        self._prev = self._s

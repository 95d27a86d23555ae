"""Candlestick patterns, incremental and equal to TA-Lib's CDL* functions.

TA-Lib judges "long", "short", "doji", "near"... against averages of recent candles
that it keeps as running totals: each total is summed over the ``period`` bars before
the pattern's first output (its lookback), then rolled by ``+= newest - oldest`` after
every output. The rounding of those totals decides borderline comparisons, so every
pattern here owns its totals, starts them on the same bar and rolls them with the same
operations as TA-Lib (default candle settings, ``ta_global.c``); the output is then
identical, bar for bar, to the batch function on the same series.
"""

from libc.math cimport fabs, fmax, fmin

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast._checks cimport as_input, check_finite, check_same_length

cnp.import_array()


#: TA-Lib's names of the patterns, in CDL_* order (_candles.pxd; the output order): CDL_HAMMER
#: is "CDLHAMMER" (tests/test_codes.py checks each against its constant; the count is checked here).
CANDLESTICK_PATTERNS = (
    "CDLDOJI",
    "CDLDOJISTAR",
    "CDLDRAGONFLYDOJI",
    "CDLGRAVESTONEDOJI",
    "CDLLONGLEGGEDDOJI",
    "CDLHAMMER",
    "CDLHANGINGMAN",
    "CDLINVERTEDHAMMER",
    "CDLSHOOTINGSTAR",
    "CDLENGULFING",
    "CDLHARAMI",
    "CDLHARAMICROSS",
    "CDLPIERCING",
    "CDLDARKCLOUDCOVER",
    "CDLMORNINGSTAR",
    "CDLEVENINGSTAR",
    "CDL3WHITESOLDIERS",
    "CDL3BLACKCROWS",
    "CDLMARUBOZU",
    "CDLSPINNINGTOP",
)
if len(CANDLESTICK_PATTERNS) != N_CANDLE_PATTERNS:
    raise RuntimeError("CANDLESTICK_PATTERNS must name every CDL_* constant of _candles.pxd")

cdef enum:
    _MASK = CANDLE_RING - 1
    # Largest TA-Lib lookback among the patterns (CDL3BLACKCROWS).
    _MAX_LOOKBACK = 13
    # TA_CANDLERANGE kinds used by the default settings of these patterns.
    _REALBODY = 0
    _HIGHLOW = 1
    # Averaging periods of the default settings: BodyLong/BodyShort/BodyDoji/
    # ShadowVeryShort average 10 candles, Near/Far average 5.
    _P_BODY = 10
    _P_NEAR = 5
    # Default penetrations of CDLDARKCLOUDCOVER / CDLMORNINGSTAR / CDLEVENINGSTAR are
    # written where used (0.5, 0.3); CDLPIERCING's 0.5 is fixed in TA-Lib itself.

# Slots of ``CandleState.tot``: every pattern's own totals (name: setting, lag).
cdef enum:
    T_DOJI_DOJI = 0
    T_DOJISTAR_LONG1 = 1
    T_DOJISTAR_DOJI0 = 2
    T_DRAGONFLY_DOJI = 3
    T_DRAGONFLY_VSHORT = 4
    T_GRAVESTONE_DOJI = 5
    T_GRAVESTONE_VSHORT = 6
    T_LONGLEGGED_DOJI = 7
    T_HAMMER_SHORT = 8
    T_HAMMER_VSHORT = 9
    T_HAMMER_NEAR1 = 10
    T_HANGINGMAN_SHORT = 11
    T_HANGINGMAN_VSHORT = 12
    T_HANGINGMAN_NEAR1 = 13
    T_INVHAMMER_SHORT = 14
    T_INVHAMMER_VSHORT = 15
    T_SHOOTING_SHORT = 16
    T_SHOOTING_VSHORT = 17
    T_HARAMI_LONG1 = 18
    T_HARAMI_SHORT0 = 19
    T_HARAMICROSS_LONG1 = 20
    T_HARAMICROSS_DOJI0 = 21
    T_PIERCING_LONG1 = 22
    T_PIERCING_LONG0 = 23
    T_DARKCLOUD_LONG1 = 24
    T_MORNING_LONG2 = 25
    T_MORNING_SHORT1 = 26
    T_MORNING_SHORT0 = 27
    T_EVENING_LONG2 = 28
    T_EVENING_SHORT1 = 29
    T_EVENING_SHORT0 = 30
    T_3WS_VSHORT2 = 31
    T_3WS_VSHORT1 = 32
    T_3WS_VSHORT0 = 33
    T_3WS_NEAR2 = 34
    T_3WS_NEAR1 = 35
    T_3WS_FAR2 = 36
    T_3WS_FAR1 = 37
    T_3WS_SHORT0 = 38
    T_3BC_VSHORT2 = 39
    T_3BC_VSHORT1 = 40
    T_3BC_VSHORT0 = 41
    T_MARUBOZU_LONG = 42
    T_MARUBOZU_VSHORT = 43
    T_SPINNING_SHORT = 44


# ------------------------------------------------------------- bar measurements
# ``t`` is an absolute bar number; the caller guarantees it is among the last
# CANDLE_RING bars.

cdef inline double _o(const CandleState* s, long long t) noexcept nogil:
    return s.o[t & _MASK]


cdef inline double _h(const CandleState* s, long long t) noexcept nogil:
    return s.h[t & _MASK]


cdef inline double _l(const CandleState* s, long long t) noexcept nogil:
    return s.l[t & _MASK]


cdef inline double _c(const CandleState* s, long long t) noexcept nogil:
    return s.c[t & _MASK]


cdef inline double _realbody(const CandleState* s, long long t) noexcept nogil:
    return s.rb[t & _MASK]


cdef inline double _highlow(const CandleState* s, long long t) noexcept nogil:
    return s.hl[t & _MASK]


cdef inline double _upper_shadow(const CandleState* s, long long t) noexcept nogil:
    cdef double c = _c(s, t), o = _o(s, t)
    return _h(s, t) - (c if c >= o else o)


cdef inline double _lower_shadow(const CandleState* s, long long t) noexcept nogil:
    cdef double c = _c(s, t), o = _o(s, t)
    return (o if c >= o else c) - _l(s, t)


cdef inline int _color(const CandleState* s, long long t) noexcept nogil:
    return 1 if _c(s, t) >= _o(s, t) else -1


cdef inline double _body_top(const CandleState* s, long long t) noexcept nogil:
    return fmax(_o(s, t), _c(s, t))


cdef inline double _body_bottom(const CandleState* s, long long t) noexcept nogil:
    return fmin(_o(s, t), _c(s, t))


# ------------------------------------------------- TA-Lib's candle averages
# TA_CANDLEAVERAGE = factor * (total / avgPeriod) / (2 for Shadows else 1); the
# division by 1.0 is exact, so it is left out.

cdef inline double _body_long(double total) noexcept nogil:
    return 1.0 * (total / <double>_P_BODY)


cdef inline double _body_short(double total) noexcept nogil:
    return 1.0 * (total / <double>_P_BODY)


cdef inline double _body_doji(double total) noexcept nogil:
    return 0.1 * (total / <double>_P_BODY)


cdef inline double _shadow_very_short(double total) noexcept nogil:
    return 0.1 * (total / <double>_P_BODY)


cdef inline double _near(double total) noexcept nogil:
    return 0.2 * (total / <double>_P_NEAR)


cdef inline double _far(double total) noexcept nogil:
    return 0.6 * (total / <double>_P_NEAR)


cdef inline double _shadow_long(double realbody) noexcept nogil:
    # ShadowLong has avgPeriod 0: TA-Lib then measures the candle's own real body.
    return 1.0 * realbody


cdef inline double _range(const CandleState* s, int kind, long long t) noexcept nogil:
    return _realbody(s, t) if kind == _REALBODY else _highlow(s, t)


cdef inline void _roll(CandleState* s, int slot, int kind, long long period,
                       long long lag, long long lookback) noexcept nogil:
    # Total of the ``period`` ranges before bar ``t - lag``: TA-Lib sums it over
    # bars [lookback - period - lag, lookback - 1 - lag] before its first output at
    # t == lookback, then after each output adds the newest range minus the oldest.
    cdef long long t = s.n - 1
    if t < lookback - period:
        return
    if t < lookback:
        s.tot[slot] += _range(s, kind, t - lag)
    else:
        s.tot[slot] += _range(s, kind, t - lag) - _range(s, kind, t - lag - period)


cdef inline void _push(CandleState* s, double o, double h, double l, double c) noexcept nogil:
    cdef Py_ssize_t k = s.n & _MASK
    s.o[k] = o
    s.h[k] = h
    s.l[k] = l
    s.c[k] = c
    s.rb[k] = fabs(c - o)
    s.hl[k] = h - l
    s.n += 1


# -------------------------------------------------------------------- patterns
# Each consumes the bar just pushed (t = n - 1): it decides with the totals as they
# stand (they exclude the current candle), then rolls its own totals.

cdef int _doji(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 10 and _realbody(s, t) <= _body_doji(s.tot[T_DOJI_DOJI]):
        r = 100
    _roll(s, T_DOJI_DOJI, _HIGHLOW, _P_BODY, 0, 10)
    return r


cdef int _dojistar(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0, color1
    if t >= 11:
        color1 = _color(s, t - 1)
        if (_realbody(s, t - 1) > _body_long(s.tot[T_DOJISTAR_LONG1])
                and _realbody(s, t) <= _body_doji(s.tot[T_DOJISTAR_DOJI0])
                and ((color1 == 1 and _body_bottom(s, t) > _body_top(s, t - 1))
                     or (color1 == -1 and _body_top(s, t) < _body_bottom(s, t - 1)))):
            r = -color1 * 100
    _roll(s, T_DOJISTAR_LONG1, _REALBODY, _P_BODY, 1, 11)
    _roll(s, T_DOJISTAR_DOJI0, _HIGHLOW, _P_BODY, 0, 11)
    return r


cdef int _dragonflydoji(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double vshort
    if t >= 10:
        vshort = _shadow_very_short(s.tot[T_DRAGONFLY_VSHORT])
        if (_realbody(s, t) <= _body_doji(s.tot[T_DRAGONFLY_DOJI])
                and _upper_shadow(s, t) < vshort and _lower_shadow(s, t) > vshort):
            r = 100
    _roll(s, T_DRAGONFLY_DOJI, _HIGHLOW, _P_BODY, 0, 10)
    _roll(s, T_DRAGONFLY_VSHORT, _HIGHLOW, _P_BODY, 0, 10)
    return r


cdef int _gravestonedoji(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double vshort
    if t >= 10:
        vshort = _shadow_very_short(s.tot[T_GRAVESTONE_VSHORT])
        if (_realbody(s, t) <= _body_doji(s.tot[T_GRAVESTONE_DOJI])
                and _lower_shadow(s, t) < vshort and _upper_shadow(s, t) > vshort):
            r = 100
    _roll(s, T_GRAVESTONE_DOJI, _HIGHLOW, _P_BODY, 0, 10)
    _roll(s, T_GRAVESTONE_VSHORT, _HIGHLOW, _P_BODY, 0, 10)
    return r


cdef int _longleggeddoji(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb, slong
    if t >= 10:
        rb = _realbody(s, t)
        slong = _shadow_long(rb)
        if (rb <= _body_doji(s.tot[T_LONGLEGGED_DOJI])
                and (_lower_shadow(s, t) > slong or _upper_shadow(s, t) > slong)):
            r = 100
    _roll(s, T_LONGLEGGED_DOJI, _HIGHLOW, _P_BODY, 0, 10)
    return r


cdef int _hammer(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb
    if t >= 11:
        rb = _realbody(s, t)
        if (rb < _body_short(s.tot[T_HAMMER_SHORT])
                and _lower_shadow(s, t) > _shadow_long(rb)
                and _upper_shadow(s, t) < _shadow_very_short(s.tot[T_HAMMER_VSHORT])
                and _body_bottom(s, t) <= _l(s, t - 1) + _near(s.tot[T_HAMMER_NEAR1])):
            r = 100
    _roll(s, T_HAMMER_SHORT, _REALBODY, _P_BODY, 0, 11)
    _roll(s, T_HAMMER_VSHORT, _HIGHLOW, _P_BODY, 0, 11)
    _roll(s, T_HAMMER_NEAR1, _HIGHLOW, _P_NEAR, 1, 11)
    return r


cdef int _hangingman(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb
    if t >= 11:
        rb = _realbody(s, t)
        if (rb < _body_short(s.tot[T_HANGINGMAN_SHORT])
                and _lower_shadow(s, t) > _shadow_long(rb)
                and _upper_shadow(s, t) < _shadow_very_short(s.tot[T_HANGINGMAN_VSHORT])
                and _body_bottom(s, t) >= _h(s, t - 1) - _near(s.tot[T_HANGINGMAN_NEAR1])):
            r = -100
    _roll(s, T_HANGINGMAN_SHORT, _REALBODY, _P_BODY, 0, 11)
    _roll(s, T_HANGINGMAN_VSHORT, _HIGHLOW, _P_BODY, 0, 11)
    _roll(s, T_HANGINGMAN_NEAR1, _HIGHLOW, _P_NEAR, 1, 11)
    return r


cdef int _invertedhammer(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb
    if t >= 11:
        rb = _realbody(s, t)
        if (_body_top(s, t) < _body_bottom(s, t - 1)
                and rb < _body_short(s.tot[T_INVHAMMER_SHORT])
                and _upper_shadow(s, t) > _shadow_long(rb)
                and _lower_shadow(s, t) < _shadow_very_short(s.tot[T_INVHAMMER_VSHORT])):
            r = 100
    _roll(s, T_INVHAMMER_SHORT, _REALBODY, _P_BODY, 0, 11)
    _roll(s, T_INVHAMMER_VSHORT, _HIGHLOW, _P_BODY, 0, 11)
    return r


cdef int _shootingstar(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb
    if t >= 11:
        rb = _realbody(s, t)
        if (_body_bottom(s, t) > _body_top(s, t - 1)
                and rb < _body_short(s.tot[T_SHOOTING_SHORT])
                and _upper_shadow(s, t) > _shadow_long(rb)
                and _lower_shadow(s, t) < _shadow_very_short(s.tot[T_SHOOTING_VSHORT])):
            r = -100
    _roll(s, T_SHOOTING_SHORT, _REALBODY, _P_BODY, 0, 11)
    _roll(s, T_SHOOTING_VSHORT, _HIGHLOW, _P_BODY, 0, 11)
    return r


cdef int _engulfing(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef double o, c, o1, c1
    cdef int color, color1
    # TA-Lib's lookback is 2 although only one prior candle is compared.
    if t < 2:
        return 0
    o = _o(s, t)
    c = _c(s, t)
    o1 = _o(s, t - 1)
    c1 = _c(s, t - 1)
    color = _color(s, t)
    color1 = _color(s, t - 1)
    if ((color == 1 and color1 == -1
            and ((c >= o1 and o < c1) or (c > o1 and o <= c1)))
            or (color == -1 and color1 == 1
                and ((o >= c1 and c < o1) or (o > c1 and c <= o1)))):
        # 80 when the two bodies share one end (Greg Morris' looser engulfing).
        return color * 100 if (o != c1 and c != o1) else color * 80
    return 0


cdef inline int _harami_like(CandleState* s, long long t, bint second_small) noexcept nogil:
    # Shared tail of HARAMI / HARAMICROSS once the size tests are known.
    cdef int color1 = _color(s, t - 1)
    cdef double top = _body_top(s, t), bottom = _body_bottom(s, t)
    cdef double top1 = _body_top(s, t - 1), bottom1 = _body_bottom(s, t - 1)
    if not second_small:
        return 0
    if top < top1 and bottom > bottom1:
        return -color1 * 100
    if top <= top1 and bottom >= bottom1:
        return -color1 * 80
    return 0


cdef int _harami(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 11 and _realbody(s, t - 1) > _body_long(s.tot[T_HARAMI_LONG1]):
        r = _harami_like(s, t, _realbody(s, t) <= _body_short(s.tot[T_HARAMI_SHORT0]))
    _roll(s, T_HARAMI_LONG1, _REALBODY, _P_BODY, 1, 11)
    _roll(s, T_HARAMI_SHORT0, _REALBODY, _P_BODY, 0, 11)
    return r


cdef int _haramicross(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 11 and _realbody(s, t - 1) > _body_long(s.tot[T_HARAMICROSS_LONG1]):
        r = _harami_like(s, t, _realbody(s, t) <= _body_doji(s.tot[T_HARAMICROSS_DOJI0]))
    _roll(s, T_HARAMICROSS_LONG1, _REALBODY, _P_BODY, 1, 11)
    _roll(s, T_HARAMICROSS_DOJI0, _HIGHLOW, _P_BODY, 0, 11)
    return r


cdef int _piercing(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb1
    if t >= 11:
        rb1 = _realbody(s, t - 1)
        if (_color(s, t - 1) == -1
                and rb1 > _body_long(s.tot[T_PIERCING_LONG1])
                and _color(s, t) == 1
                and _realbody(s, t) > _body_long(s.tot[T_PIERCING_LONG0])
                and _o(s, t) < _l(s, t - 1)
                and _c(s, t) < _o(s, t - 1)
                and _c(s, t) > _c(s, t - 1) + rb1 * 0.5):
            r = 100
    _roll(s, T_PIERCING_LONG1, _REALBODY, _P_BODY, 1, 11)
    _roll(s, T_PIERCING_LONG0, _REALBODY, _P_BODY, 0, 11)
    return r


cdef int _darkcloudcover(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb1
    if t >= 11:
        rb1 = _realbody(s, t - 1)
        if (_color(s, t - 1) == 1
                and rb1 > _body_long(s.tot[T_DARKCLOUD_LONG1])
                and _color(s, t) == -1
                and _o(s, t) > _h(s, t - 1)
                and _c(s, t) > _o(s, t - 1)
                and _c(s, t) < _c(s, t - 1) - rb1 * 0.5):
            r = -100
    _roll(s, T_DARKCLOUD_LONG1, _REALBODY, _P_BODY, 1, 11)
    return r


cdef int _morningstar(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 12:
        if (_color(s, t - 2) == -1
                and _color(s, t) == 1
                and _body_top(s, t - 1) < _body_bottom(s, t - 2)
                and _c(s, t) > _c(s, t - 2) + _realbody(s, t - 2) * 0.3
                and _realbody(s, t - 2) > _body_long(s.tot[T_MORNING_LONG2])
                and _realbody(s, t - 1) <= _body_short(s.tot[T_MORNING_SHORT1])
                and _realbody(s, t) > _body_short(s.tot[T_MORNING_SHORT0])):
            r = 100
    _roll(s, T_MORNING_LONG2, _REALBODY, _P_BODY, 2, 12)
    _roll(s, T_MORNING_SHORT1, _REALBODY, _P_BODY, 1, 12)
    _roll(s, T_MORNING_SHORT0, _REALBODY, _P_BODY, 0, 12)
    return r


cdef int _eveningstar(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 12:
        if (_color(s, t - 2) == 1
                and _color(s, t) == -1
                and _body_bottom(s, t - 1) > _body_top(s, t - 2)
                and _c(s, t) < _c(s, t - 2) - _realbody(s, t - 2) * 0.3
                and _realbody(s, t - 2) > _body_long(s.tot[T_EVENING_LONG2])
                and _realbody(s, t - 1) <= _body_short(s.tot[T_EVENING_SHORT1])
                and _realbody(s, t) > _body_short(s.tot[T_EVENING_SHORT0])):
            r = -100
    _roll(s, T_EVENING_LONG2, _REALBODY, _P_BODY, 2, 12)
    _roll(s, T_EVENING_SHORT1, _REALBODY, _P_BODY, 1, 12)
    _roll(s, T_EVENING_SHORT0, _REALBODY, _P_BODY, 0, 12)
    return r


cdef int _3whitesoldiers(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 12:
        if (_color(s, t - 2) == 1
                and _upper_shadow(s, t - 2) < _shadow_very_short(s.tot[T_3WS_VSHORT2])
                and _color(s, t - 1) == 1
                and _upper_shadow(s, t - 1) < _shadow_very_short(s.tot[T_3WS_VSHORT1])
                and _color(s, t) == 1
                and _upper_shadow(s, t) < _shadow_very_short(s.tot[T_3WS_VSHORT0])
                and _c(s, t) > _c(s, t - 1)
                and _c(s, t - 1) > _c(s, t - 2)
                and _o(s, t - 1) > _o(s, t - 2)
                and _o(s, t - 1) <= _c(s, t - 2) + _near(s.tot[T_3WS_NEAR2])
                and _o(s, t) > _o(s, t - 1)
                and _o(s, t) <= _c(s, t - 1) + _near(s.tot[T_3WS_NEAR1])
                and _realbody(s, t - 1) > _realbody(s, t - 2) - _far(s.tot[T_3WS_FAR2])
                and _realbody(s, t) > _realbody(s, t - 1) - _far(s.tot[T_3WS_FAR1])
                and _realbody(s, t) > _body_short(s.tot[T_3WS_SHORT0])):
            r = 100
    _roll(s, T_3WS_VSHORT2, _HIGHLOW, _P_BODY, 2, 12)
    _roll(s, T_3WS_VSHORT1, _HIGHLOW, _P_BODY, 1, 12)
    _roll(s, T_3WS_VSHORT0, _HIGHLOW, _P_BODY, 0, 12)
    _roll(s, T_3WS_NEAR2, _HIGHLOW, _P_NEAR, 2, 12)
    _roll(s, T_3WS_NEAR1, _HIGHLOW, _P_NEAR, 1, 12)
    _roll(s, T_3WS_FAR2, _HIGHLOW, _P_NEAR, 2, 12)
    _roll(s, T_3WS_FAR1, _HIGHLOW, _P_NEAR, 1, 12)
    _roll(s, T_3WS_SHORT0, _REALBODY, _P_BODY, 0, 12)
    return r


cdef int _3blackcrows(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    if t >= 13:
        if (_color(s, t - 3) == 1
                and _color(s, t - 2) == -1
                and _color(s, t - 1) == -1
                and _color(s, t) == -1
                and _o(s, t - 1) < _o(s, t - 2)
                and _o(s, t - 1) > _c(s, t - 2)
                and _o(s, t) < _o(s, t - 1)
                and _o(s, t) > _c(s, t - 1)
                and _h(s, t - 3) > _c(s, t - 2)
                and _c(s, t - 2) > _c(s, t - 1)
                and _c(s, t - 1) > _c(s, t)
                and _lower_shadow(s, t - 2) < _shadow_very_short(s.tot[T_3BC_VSHORT2])
                and _lower_shadow(s, t - 1) < _shadow_very_short(s.tot[T_3BC_VSHORT1])
                and _lower_shadow(s, t) < _shadow_very_short(s.tot[T_3BC_VSHORT0])):
            r = -100
    _roll(s, T_3BC_VSHORT2, _HIGHLOW, _P_BODY, 2, 13)
    _roll(s, T_3BC_VSHORT1, _HIGHLOW, _P_BODY, 1, 13)
    _roll(s, T_3BC_VSHORT0, _HIGHLOW, _P_BODY, 0, 13)
    return r


cdef int _marubozu(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double vshort
    if t >= 10:
        vshort = _shadow_very_short(s.tot[T_MARUBOZU_VSHORT])
        if (_realbody(s, t) > _body_long(s.tot[T_MARUBOZU_LONG])
                and _upper_shadow(s, t) < vshort and _lower_shadow(s, t) < vshort):
            r = _color(s, t) * 100
    _roll(s, T_MARUBOZU_LONG, _REALBODY, _P_BODY, 0, 10)
    _roll(s, T_MARUBOZU_VSHORT, _HIGHLOW, _P_BODY, 0, 10)
    return r


cdef int _spinningtop(CandleState* s) noexcept nogil:
    cdef long long t = s.n - 1
    cdef int r = 0
    cdef double rb
    if t >= 10:
        rb = _realbody(s, t)
        if (_upper_shadow(s, t) > rb and _lower_shadow(s, t) > rb
                and rb < _body_short(s.tot[T_SPINNING_SHORT])):
            r = _color(s, t) * 100
    _roll(s, T_SPINNING_SHORT, _REALBODY, _P_BODY, 0, 10)
    return r


# --------------------------------------------------------------------- kernel

cdef void candles_init(CandleState* s) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(CANDLE_RING):
        s.o[i] = 0.0
        s.h[i] = 0.0
        s.l[i] = 0.0
        s.c[i] = 0.0
        s.rb[i] = 0.0
        s.hl[i] = 0.0
    for i in range(N_CANDLE_TOTALS):
        s.tot[i] = 0.0
    s.n = 0


cdef long long candles_warmup() noexcept nogil:
    return _MAX_LOOKBACK + 1


cdef void candles_step(CandleState* s, double o, double h, double l, double c, int* out) noexcept nogil:
    _push(s, o, h, l, c)
    out[CDL_DOJI] = _doji(s)
    out[CDL_DOJISTAR] = _dojistar(s)
    out[CDL_DRAGONFLYDOJI] = _dragonflydoji(s)
    out[CDL_GRAVESTONEDOJI] = _gravestonedoji(s)
    out[CDL_LONGLEGGEDDOJI] = _longleggeddoji(s)
    out[CDL_HAMMER] = _hammer(s)
    out[CDL_HANGINGMAN] = _hangingman(s)
    out[CDL_INVERTEDHAMMER] = _invertedhammer(s)
    out[CDL_SHOOTINGSTAR] = _shootingstar(s)
    out[CDL_ENGULFING] = _engulfing(s)
    out[CDL_HARAMI] = _harami(s)
    out[CDL_HARAMICROSS] = _haramicross(s)
    out[CDL_PIERCING] = _piercing(s)
    out[CDL_DARKCLOUDCOVER] = _darkcloudcover(s)
    out[CDL_MORNINGSTAR] = _morningstar(s)
    out[CDL_EVENINGSTAR] = _eveningstar(s)
    out[CDL_3WHITESOLDIERS] = _3whitesoldiers(s)
    out[CDL_3BLACKCROWS] = _3blackcrows(s)
    out[CDL_MARUBOZU] = _marubozu(s)
    out[CDL_SPINNINGTOP] = _spinningtop(s)


# One pattern alone, for ``candlestick(name, ...)``: the totals a pattern rolls are
# its own, so running it without the others gives the same values.
ctypedef int (*_pattern_fn)(CandleState* s) noexcept nogil

cdef _pattern_fn _PATTERN_FNS[N_CANDLE_PATTERNS]
_PATTERN_FNS[CDL_DOJI] = _doji
_PATTERN_FNS[CDL_DOJISTAR] = _dojistar
_PATTERN_FNS[CDL_DRAGONFLYDOJI] = _dragonflydoji
_PATTERN_FNS[CDL_GRAVESTONEDOJI] = _gravestonedoji
_PATTERN_FNS[CDL_LONGLEGGEDDOJI] = _longleggeddoji
_PATTERN_FNS[CDL_HAMMER] = _hammer
_PATTERN_FNS[CDL_HANGINGMAN] = _hangingman
_PATTERN_FNS[CDL_INVERTEDHAMMER] = _invertedhammer
_PATTERN_FNS[CDL_SHOOTINGSTAR] = _shootingstar
_PATTERN_FNS[CDL_ENGULFING] = _engulfing
_PATTERN_FNS[CDL_HARAMI] = _harami
_PATTERN_FNS[CDL_HARAMICROSS] = _haramicross
_PATTERN_FNS[CDL_PIERCING] = _piercing
_PATTERN_FNS[CDL_DARKCLOUDCOVER] = _darkcloudcover
_PATTERN_FNS[CDL_MORNINGSTAR] = _morningstar
_PATTERN_FNS[CDL_EVENINGSTAR] = _eveningstar
_PATTERN_FNS[CDL_3WHITESOLDIERS] = _3whitesoldiers
_PATTERN_FNS[CDL_3BLACKCROWS] = _3blackcrows
_PATTERN_FNS[CDL_MARUBOZU] = _marubozu
_PATTERN_FNS[CDL_SPINNINGTOP] = _spinningtop


cdef int _check_pattern_fns() except -1:
    # A pattern declared in _candles.pxd without a kernel here would call NULL: refuse to load.
    cdef int i
    for i in range(N_CANDLE_PATTERNS):
        if _PATTERN_FNS[i] == NULL:
            raise RuntimeError(f"{CANDLESTICK_PATTERNS[i]} has no kernel in _PATTERN_FNS")
    return 0


_check_pattern_fns()


# ------------------------------------------------------------- Python API

cdef tuple _ohlc_inputs(open, high, low, close):
    cdef cnp.ndarray o = as_input(open, "open")
    cdef cnp.ndarray h = as_input(high, "high")
    cdef cnp.ndarray l = as_input(low, "low")
    cdef cnp.ndarray c = as_input(close, "close")
    cdef Py_ssize_t n = o.shape[0]
    check_same_length(n, h.shape[0], "high")
    check_same_length(n, l.shape[0], "low")
    check_same_length(n, c.shape[0], "close")
    return o, h, l, c


def candlestick(str name, open, high, low, close) -> np.ndarray:
    """One TA-Lib candlestick pattern over whole arrays, equal to ``talib.<name>``.

    Args:
        name: A name from ``CANDLESTICK_PATTERNS`` (e.g. ``"CDLHAMMER"``).
        open: Bar opens.
        high: Bar highs.
        low: Bar lows.
        close: Bar closes (all four the same length, all finite).

    Returns:
        int32 array: 0, +-80, +-100 per bar; 0 during the pattern's lookback.

    Raises:
        InvalidInputError: Unknown name, non-finite input or mismatched lengths.
    """
    if name not in CANDLESTICK_PATTERNS:
        raise InvalidInputError(
            f"name={name!r}: unknown candlestick pattern; known: {', '.join(CANDLESTICK_PATTERNS)}")
    cdef Py_ssize_t idx = CANDLESTICK_PATTERNS.index(name)
    o_arr, h_arr, l_arr, c_arr = _ohlc_inputs(open, high, low, close)
    cdef const double[::1] o = o_arr
    cdef const double[::1] h = h_arr
    cdef const double[::1] l = l_arr
    cdef const double[::1] c = c_arr
    cdef Py_ssize_t i, n = o.shape[0]
    out = np.empty(n, dtype=np.intc)
    cdef int[::1] res = out
    cdef CandleState s
    cdef _pattern_fn fn = _PATTERN_FNS[idx]
    candles_init(&s)
    with nogil:
        for i in range(n):
            _push(&s, o[i], h[i], l[i], c[i])
            res[i] = fn(&s)
    return out


cdef class CandlestickDetector:
    """Every pattern of ``CANDLESTICK_PATTERNS`` at once, one closed bar at a time.

    Each value equals TA-Lib's batch output (default settings and penetrations) for
    the same bar of the same series, including the 0s during each pattern's own
    lookback. ``update`` returns a fresh int32 array of ``len(CANDLESTICK_PATTERNS)``
    values (the caller may keep or modify it).
    """

    cdef CandleState _s
    cdef CandleState _prev

    def __cinit__(self):
        candles_init(&self._s)
        self._prev = self._s

    @property
    def ready(self) -> bool:
        """True once every pattern is past its TA-Lib lookback (after 14 bars)."""
        return self._s.n >= candles_warmup()

    cdef cnp.ndarray _step(self, double open, double high, double low, double close):
        cdef cnp.npy_intp dim = N_CANDLE_PATTERNS
        cdef cnp.ndarray out = cnp.PyArray_SimpleNew(1, &dim, cnp.NPY_INT)
        candles_step(&self._s, open, high, low, close, <int*>cnp.PyArray_DATA(out))
        return out

    cpdef cnp.ndarray update(self, double open, double high, double low, double close):
        """Add a closed bar; returns the int32 value of every pattern for it."""
        check_finite(open, "open")
        check_finite(high, "high")
        check_finite(low, "low")
        check_finite(close, "close")
        self._prev = self._s
        return self._step(open, high, low, close)

    cpdef cnp.ndarray update_last(self, double open, double high, double low, double close):
        """Replace the most recent bar (an intra-bar revision); returns its values."""
        check_finite(open, "open")
        check_finite(high, "high")
        check_finite(low, "low")
        check_finite(close, "close")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no bar to revise yet")
        self._s = self._prev
        return self._step(open, high, low, close)

    def update_many(self, open, high, low, close) -> np.ndarray:
        """Feed arrays of bars; returns int32 values of shape (n_bars, n_patterns)."""
        o_arr, h_arr, l_arr, c_arr = _ohlc_inputs(open, high, low, close)
        cdef const double[::1] o = o_arr
        cdef const double[::1] h = h_arr
        cdef const double[::1] l = l_arr
        cdef const double[::1] c = c_arr
        cdef Py_ssize_t i, n = o.shape[0]
        out = np.empty((n, N_CANDLE_PATTERNS), dtype=np.intc)
        cdef int[:, ::1] res = out
        if n == 0:
            return out
        with nogil:
            for i in range(n - 1):
                candles_step(&self._s, o[i], h[i], l[i], c[i], &res[i, 0])
            self._prev = self._s
            candles_step(&self._s, o[n - 1], h[n - 1], l[n - 1], c[n - 1], &res[n - 1, 0])
        return out

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        candles_init(&self._s)
        self._prev = self._s

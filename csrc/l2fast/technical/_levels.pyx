"""Support/resistance from swing pivots: a decaying level table, volume-confirmed
breakouts, double tops/bottoms and tight-range detection, one closed bar at a time.

Per bar, in this order: the windows take the bar; every level's strength is multiplied
by ``decay`` and levels below ``min_strength`` are dropped; a close crossing a live level
on confirmed volume is a breakout; the pivots (if any) of bar ``t - pivot_bars`` are
confirmed, merged into the table (high before low) and matched for double tops/bottoms;
finally the range and the nearest levels are reported.
"""

from collections import namedtuple

from libc.math cimport NAN, fabs, isfinite, isnan, pow

import numpy as np
cimport numpy as cnp

from l2fast.errors import InvalidInputError

from l2fast.technical._averages cimport (
    extreme_free, extreme_init, extreme_reset, extreme_step, window_free, window_get, window_init,
    window_push,
)
from l2fast._checks cimport as_input, check_finite, check_period, check_same_length

cnp.import_array()


# ------------------------------------------------------------- support/resistance

cdef int levels_init(LevelsState* s, Py_ssize_t pivot_bars, double merge_tol, double half_life,
                     double min_strength, Py_ssize_t max_levels, double volume_mult,
                     Py_ssize_t volume_window, Py_ssize_t min_separation, double min_depth,
                     Py_ssize_t range_window, double range_pct) except -1:
    s.pivot_bars = pivot_bars
    s.max_levels = max_levels
    s.volume_window = volume_window
    s.min_separation = min_separation
    s.range_window = range_window
    s.merge_tol = merge_tol
    s.decay = pow(0.5, 1.0 / half_life)
    s.min_strength = min_strength
    s.volume_mult = volume_mult
    s.min_depth = min_depth
    s.range_pct = range_pct
    # NULL buffers first, so levels_free is safe whichever allocation fails.
    s.piv_hi.suffix = NULL
    s.piv_hi.raw.buf = NULL
    s.piv_lo.suffix = NULL
    s.piv_lo.raw.buf = NULL
    s.range_hi.suffix = NULL
    s.range_hi.raw.buf = NULL
    s.range_lo.suffix = NULL
    s.range_lo.raw.buf = NULL
    s.piv_hi_hist.buf = NULL
    s.piv_lo_hist.buf = NULL
    s.vol.buf = NULL
    try:
        extreme_init(&s.piv_hi, pivot_bars, True)
        extreme_init(&s.piv_lo, pivot_bars, False)
        window_init(&s.piv_hi_hist, pivot_bars + 2)
        window_init(&s.piv_lo_hist, pivot_bars + 2)
        extreme_init(&s.range_hi, range_window, True)
        extreme_init(&s.range_lo, range_window, False)
        window_init(&s.vol, volume_window)
    except MemoryError:
        levels_free(s)
        raise
    levels_reset(s)
    return 0


cdef void levels_reset(LevelsState* s) noexcept nogil:
    extreme_reset(&s.piv_hi)
    extreme_reset(&s.piv_lo)
    extreme_reset(&s.range_hi)
    extreme_reset(&s.range_lo)
    s.piv_hi_hist.head = 0
    s.piv_hi_hist.n = 0
    s.piv_lo_hist.head = 0
    s.piv_lo_hist.n = 0
    s.vol.head = 0
    s.vol.n = 0
    s.vol_sum = 0.0
    s.prev_close = NAN
    s.n = 0
    s.next_id = 0
    s.n_levels = 0
    s.highs_head = 0
    s.n_highs = 0
    s.lows_head = 0
    s.n_lows = 0


cdef void levels_free(LevelsState* s) noexcept nogil:
    extreme_free(&s.piv_hi)
    extreme_free(&s.piv_lo)
    extreme_free(&s.range_hi)
    extreme_free(&s.range_lo)
    window_free(&s.piv_hi_hist)
    window_free(&s.piv_lo_hist)
    window_free(&s.vol)


cdef void _decay(LevelsState* s) noexcept nogil:
    cdef int k
    for k in range(s.n_levels - 1, -1, -1):
        s.levels[k].strength *= s.decay
        if s.levels[k].strength < s.min_strength:
            s.n_levels -= 1
            s.levels[k] = s.levels[s.n_levels]


cdef void _touch(LevelsState* s, double p) noexcept nogil:
    """Merge pivot price ``p`` into the nearest level within merge_tol, else add a level."""
    cdef int k, best = -1
    cdef double d, best_d = 0.0
    cdef Level* lv
    for k in range(s.n_levels):
        lv = &s.levels[k]
        d = fabs(p - lv.price)
        if d <= s.merge_tol * lv.price and (
                best < 0 or d < best_d or (d == best_d and lv.id < s.levels[best].id)):
            best = k
            best_d = d
    if best >= 0:
        lv = &s.levels[best]
        lv.price = (lv.price * lv.touches + p) / (lv.touches + 1)
        lv.touches += 1
        lv.strength += 1.0
        return
    if s.n_levels < s.max_levels:
        best = s.n_levels
        s.n_levels += 1
    else:
        best = 0
        for k in range(1, s.n_levels):
            lv = &s.levels[k]
            if lv.strength < s.levels[best].strength or (
                    lv.strength == s.levels[best].strength and lv.id < s.levels[best].id):
                best = k
    lv = &s.levels[best]
    lv.price = p
    lv.strength = 1.0
    lv.touches = 1
    lv.id = s.next_id
    s.next_id += 1


cdef inline int _ring_slot(int head, int back) noexcept nogil:
    """Slot of the entry ``back`` places before the newest (0 = newest)."""
    cdef int i = head - 1 - back
    if i < 0:
        i += PIVOT_HIST
    return i


cdef int _match_top(const LevelsState* s, long long bar, double p, double* neck) noexcept nogil:
    """Double top: the latest earlier pivot high not below p's band must lie in it, far and
    deep enough. Lower highs in between are skipped; a higher one ends the search."""
    cdef int i
    cdef double tol = s.merge_tol * p, d, lower
    cdef const PivotRec* r
    for i in range(s.n_highs):
        r = &s.highs[_ring_slot(s.highs_head, i)]
        d = r.price - p
        if d < -tol:
            continue
        if d > tol:
            return 0
        lower = r.price if r.price < p else p
        if (bar - r.bar >= s.min_separation and not isnan(r.between)
                and lower - r.between >= s.min_depth * lower):
            neck[0] = r.between
            return 1
        return 0
    return 0


cdef int _match_bottom(const LevelsState* s, long long bar, double p, double* neck) noexcept nogil:
    """Mirror of ``_match_top``: higher lows in between are skipped, a lower one ends it."""
    cdef int i
    cdef double tol = s.merge_tol * p, d, higher
    cdef const PivotRec* r
    for i in range(s.n_lows):
        r = &s.lows[_ring_slot(s.lows_head, i)]
        d = r.price - p
        if d > tol:
            continue
        if d < -tol:
            return 0
        higher = r.price if r.price > p else p
        if (bar - r.bar >= s.min_separation and not isnan(r.between)
                and r.between - higher >= s.min_depth * higher):
            neck[0] = r.between
            return 1
        return 0
    return 0


cdef void _record(PivotRec* ring, int* head, int* count, PivotRec* other, int n_other,
                  long long bar, double p, bint is_high) noexcept nogil:
    """Push a pivot into its ring and extend the ``between`` extreme of the earlier
    pivots of the other kind (only those strictly before it)."""
    cdef int i
    cdef PivotRec* r = &ring[head[0]]
    r.bar = bar
    r.price = p
    r.between = NAN
    head[0] = (head[0] + 1) % PIVOT_HIST
    if count[0] < PIVOT_HIST:
        count[0] += 1
    for i in range(n_other):
        r = &other[i]
        if r.bar < bar and (isnan(r.between) or (r.between < p if is_high else r.between > p)):
            r.between = p


cdef void _pivots(LevelsState* s, long long bar, double ph, double pl, LevelsOut* out) noexcept nogil:
    """Confirm the pivot high and/or low (NaN = none) of ``bar``. Both patterns are
    matched before either pivot is recorded, so a bar that is both a pivot high and a
    pivot low never counts as lying between itself and an earlier pivot."""
    if not isnan(ph):
        out.pivot_high = ph
        _touch(s, ph)
        out.double_top = _match_top(s, bar, ph, &out.top_neckline)
    if not isnan(pl):
        out.pivot_low = pl
        _touch(s, pl)
        out.double_bottom = _match_bottom(s, bar, pl, &out.bottom_neckline)
    if not isnan(ph):
        _record(s.highs, &s.highs_head, &s.n_highs, s.lows, s.n_lows, bar, ph, True)
    if not isnan(pl):
        _record(s.lows, &s.lows_head, &s.n_lows, s.highs, s.n_highs, bar, pl, False)


cdef void _breakout(const LevelsState* s, double c, LevelsOut* out) noexcept nogil:
    """Report the crossed level nearest the close (the last one broken)."""
    cdef int k
    cdef double lp, pc = s.prev_close
    for k in range(s.n_levels):
        lp = s.levels[k].price
        if pc <= lp < c:
            if out.breakout == 0 or lp > out.breakout_level:
                out.breakout = 1
                out.breakout_level = lp
        elif c < lp <= pc:
            if out.breakout == 0 or lp < out.breakout_level:
                out.breakout = -1
                out.breakout_level = lp


cdef inline bint _before(const Level* a, const Level* b) noexcept nogil:
    """Among levels at one price, the stronger (then the older) is the one reported."""
    return a.strength > b.strength or (a.strength == b.strength and a.id < b.id)


cdef void _nearest(const LevelsState* s, double c, LevelsOut* out) noexcept nogil:
    cdef int k, sup = -1, res = -1
    cdef const Level* lv
    for k in range(s.n_levels):
        lv = &s.levels[k]
        if lv.price <= c:
            if sup < 0 or lv.price > s.levels[sup].price or (
                    lv.price == s.levels[sup].price and _before(lv, &s.levels[sup])):
                sup = k
        elif res < 0 or lv.price < s.levels[res].price or (
                lv.price == s.levels[res].price and _before(lv, &s.levels[res])):
            res = k
    if sup >= 0:
        lv = &s.levels[sup]
        out.support = lv.price
        out.support_strength = lv.strength
        out.support_touches = <double>lv.touches
        out.support_dist = (c - lv.price) / c
    else:
        out.support = NAN
        out.support_strength = NAN
        out.support_touches = NAN
        out.support_dist = NAN
    if res >= 0:
        lv = &s.levels[res]
        out.resistance = lv.price
        out.resistance_strength = lv.strength
        out.resistance_touches = <double>lv.touches
        out.resistance_dist = (lv.price - c) / c
    else:
        out.resistance = NAN
        out.resistance_strength = NAN
        out.resistance_touches = NAN
        out.resistance_dist = NAN


cdef void levels_step(LevelsState* s, double h, double l, double c, double v,
                      LevelsOut* out) noexcept nogil:
    cdef Py_ssize_t nb = s.pivot_bars
    cdef double mh, ml, ph, pl, rh, rl
    s.n += 1
    out.breakout = 0
    out.breakout_level = NAN
    out.pivot_high = NAN
    out.pivot_low = NAN
    out.double_top = 0
    out.top_neckline = NAN
    out.double_bottom = 0
    out.bottom_neckline = NAN

    mh = extreme_step(&s.piv_hi, h)
    window_push(&s.piv_hi_hist, mh)
    ml = extreme_step(&s.piv_lo, l)
    window_push(&s.piv_lo_hist, ml)
    rh = extreme_step(&s.range_hi, h)
    rl = extreme_step(&s.range_lo, l)

    _decay(s)

    # Confirmation compares with the mean of the bars before this one, so the spike
    # being tested does not dilute its own benchmark.
    if (s.vol.n >= s.volume_window and v > 0.0
            and v >= s.volume_mult * (s.vol_sum / s.volume_window)):
        _breakout(s, c, out)
    if s.vol.n >= s.volume_window:
        s.vol_sum -= window_get(&s.vol, s.volume_window - 1)
    window_push(&s.vol, v)
    s.vol_sum += v

    # Bar t - nb is a pivot when it beats the nb bars after it (the window max of this
    # bar) and the nb bars before it (the window max of bar t - nb - 1).
    if s.n >= 2 * nb + 1:
        ph = window_get(&s.piv_hi.raw, nb)
        if not (ph > mh and ph > window_get(&s.piv_hi_hist, nb + 1)):
            ph = NAN
        pl = window_get(&s.piv_lo.raw, nb)
        if not (pl < ml and pl < window_get(&s.piv_lo_hist, nb + 1)):
            pl = NAN
        if not (isnan(ph) and isnan(pl)):
            _pivots(s, s.n - 1 - nb, ph, pl, out)

    if s.n >= s.range_window:
        out.range_high = rh
        out.range_low = rl
        out.in_range = (rh - rl) <= s.range_pct * c
    else:
        out.range_high = NAN
        out.range_low = NAN
        out.in_range = 0

    _nearest(s, c, out)
    out.n_levels = s.n_levels
    s.prev_close = c


# ------------------------------------------------------------- Python classes

LevelsSnapshot = namedtuple("LevelsSnapshot", [
    "support", "support_strength", "support_touches", "support_dist",
    "resistance", "resistance_strength", "resistance_touches", "resistance_dist",
    "breakout", "breakout_level", "pivot_high", "pivot_low",
    "double_top", "top_neckline", "double_bottom", "bottom_neckline",
    "in_range", "range_high", "range_low", "n_levels",
])
LevelsSnapshot.__doc__ = """What one bar produced (see ``SupportResistance``); NaN marks an absent price."""

_INT8_FIELDS = frozenset(("breakout", "double_top", "double_bottom", "in_range"))


cdef object _snapshot(const LevelsOut* o):
    return LevelsSnapshot(
        o.support, o.support_strength, o.support_touches, o.support_dist,
        o.resistance, o.resistance_strength, o.resistance_touches, o.resistance_dist,
        o.breakout, o.breakout_level, o.pivot_high, o.pivot_low,
        o.double_top, o.top_neckline, o.double_bottom, o.bottom_neckline,
        o.in_range, o.range_high, o.range_low, o.n_levels,
    )


cdef int _check_real(str name, double value, bint ok, str rule) except -1:
    if not (isfinite(value) and ok):
        raise InvalidInputError(f"{name}={value!r}: must be {rule}")
    return 0


cdef int _check_bar(double h, double l, double c, double v, str at) except -1:
    check_finite(h, "high" + at)
    check_finite(l, "low" + at)
    check_finite(c, "close" + at)
    check_finite(v, "volume" + at)
    if l <= 0.0:
        raise InvalidInputError(f"low{at}={l!r}: must be > 0")
    if h < l:
        raise InvalidInputError(f"high{at}={h!r}: must be >= low{at}={l!r}")
    if c < l or c > h:
        raise InvalidInputError(f"close{at}={c!r}: must lie within [low, high] = [{l!r}, {h!r}]")
    if v < 0.0:
        raise InvalidInputError(f"volume{at}={v!r}: must be >= 0")
    return 0


cdef class SupportResistance:
    """Swing pivots, decaying support/resistance levels, volume-confirmed breakouts,
    double tops/bottoms and tight ranges, updated one closed bar at a time.

    Bar ``t - pivot_bars`` is a pivot high when its high is strictly above the highs of
    the ``pivot_bars`` bars on each side (mirror for lows); it is confirmed on bar ``t``.
    Every pivot (highs and lows alike) enters one table of at most ``max_levels`` levels:
    it merges into the nearest level within ``merge_tol`` of that level's price (price
    becomes the touch-weighted mean, touches and strength +1), otherwise it starts a level
    of strength 1, replacing the weakest (then oldest) one when the table is full.
    Strength halves every ``half_life`` bars; a level whose strength falls below
    ``min_strength`` is dropped. Levels at or below the close are supports, above it
    resistances, so a broken level changes role by itself.

    A breakout (+1) is a close crossing a live level upwards (previous close <= level <
    close), a breakdown (-1) downwards, on a bar whose volume is positive and at least
    ``volume_mult`` times the mean volume of the ``volume_window`` bars before it; the
    crossed level nearest the close is reported. A double top is flagged when a pivot high
    is confirmed and the most recent earlier pivot high (among the last 16) not below its
    band (within ``merge_tol`` of the new high) lies inside it, at least ``min_separation``
    bars earlier, with the lowest pivot low between them at least ``min_depth`` (relative)
    below the lower top; that low is the neckline. Double bottoms mirror this. The last
    ``range_window`` bars are a range when highest high - lowest low <= ``range_pct`` x close.

    Every parameter is required, by keyword: the defaults are the config's
    (``SupportResistance(**TechnicalConfig().levels)``, ``[technical.levels]``).

    Args:
        pivot_bars: Bars on each side of a pivot (>= 1).
        merge_tol: Relative distance for a pivot to merge into a level (0 <= x < 1).
        half_life: Bars for a level's strength to halve (> 0).
        min_strength: Strength below which a level is dropped (0 < x < 1).
        max_levels: Capacity of the level table (1..32).
        volume_mult: Volume multiple of the mean that confirms a breakout (>= 0).
        volume_window: Bars in the volume mean (>= 1).
        min_separation: Minimum bars between the two tops/bottoms (>= 1).
        min_depth: Minimum relative depth of the neckline (0 <= x < 1).
        range_window: Bars examined for a range (>= 2).
        range_pct: Largest relative height of a range (>= 0).
    """

    cdef LevelsState _s
    cdef LevelsState _prev
    cdef readonly Py_ssize_t pivot_bars
    cdef readonly double merge_tol
    cdef readonly double half_life
    cdef readonly double min_strength
    cdef readonly Py_ssize_t max_levels
    cdef readonly double volume_mult
    cdef readonly Py_ssize_t volume_window
    cdef readonly Py_ssize_t min_separation
    cdef readonly double min_depth
    cdef readonly Py_ssize_t range_window
    cdef readonly double range_pct

    def __cinit__(self, *, Py_ssize_t pivot_bars, double merge_tol, double half_life,
                  double min_strength, Py_ssize_t max_levels, double volume_mult,
                  Py_ssize_t volume_window, Py_ssize_t min_separation,
                  double min_depth, Py_ssize_t range_window, double range_pct):
        check_period(pivot_bars, 1, "pivot_bars")
        _check_real("merge_tol", merge_tol, 0.0 <= merge_tol < 1.0, "in [0, 1)")
        _check_real("half_life", half_life, half_life > 0.0, "> 0")
        _check_real("min_strength", min_strength, 0.0 < min_strength < 1.0, "in (0, 1)")
        if not 1 <= max_levels <= LEVELS_CAP:
            raise InvalidInputError(f"max_levels={max_levels!r}: must be an integer in [1, {LEVELS_CAP}]")
        _check_real("volume_mult", volume_mult, volume_mult >= 0.0, ">= 0")
        check_period(volume_window, 1, "volume_window")
        check_period(min_separation, 1, "min_separation")
        _check_real("min_depth", min_depth, 0.0 <= min_depth < 1.0, "in [0, 1)")
        check_period(range_window, 2, "range_window")
        _check_real("range_pct", range_pct, range_pct >= 0.0, ">= 0")
        self.pivot_bars = pivot_bars
        self.merge_tol = merge_tol
        self.half_life = half_life
        self.min_strength = min_strength
        self.max_levels = max_levels
        self.volume_mult = volume_mult
        self.volume_window = volume_window
        self.min_separation = min_separation
        self.min_depth = min_depth
        self.range_window = range_window
        self.range_pct = range_pct
        levels_init(&self._s, pivot_bars, merge_tol, half_life, min_strength, max_levels,
                    volume_mult, volume_window, min_separation, min_depth, range_window,
                    range_pct)
        self._prev = self._s

    def __dealloc__(self):
        levels_free(&self._s)

    @property
    def ready(self) -> bool:
        """True once pivots, the volume mean and the range window are all warmed up."""
        cdef long long need = max(2 * self.pivot_bars + 1, self.range_window, self.volume_window + 1)
        return self._s.n >= need

    def update(self, double high, double low, double close, double volume):
        """Add a closed bar and return its ``LevelsSnapshot``."""
        cdef LevelsOut out
        _check_bar(high, low, close, volume, "")
        self._prev = self._s
        levels_step(&self._s, high, low, close, volume, &out)
        return _snapshot(&out)

    def update_last(self, double high, double low, double close, double volume):
        """Replace the most recent bar (an intra-bar revision) and return its snapshot."""
        cdef LevelsOut out
        _check_bar(high, low, close, volume, "")
        if self._s.n == 0:
            raise InvalidInputError("update_last: no bar to revise yet")
        self._s = self._prev
        levels_step(&self._s, high, low, close, volume, &out)
        return _snapshot(&out)

    def update_many(self, high, low, close, volume) -> dict:
        """Feed arrays of bars; returns one array per ``LevelsSnapshot`` field.

        Flags and the breakout direction are int8, ``n_levels`` int32, the rest float64.
        Nothing is consumed if any bar is invalid.
        """
        cdef cnp.ndarray ah = as_input(high, "high")
        cdef cnp.ndarray al = as_input(low, "low")
        cdef cnp.ndarray ac = as_input(close, "close")
        cdef cnp.ndarray av = as_input(volume, "volume")
        cdef Py_ssize_t i, n = ah.shape[0]
        check_same_length(n, al.shape[0], "low")
        check_same_length(n, ac.shape[0], "close")
        check_same_length(n, av.shape[0], "volume")
        bad = (al <= 0.0) | (ah < al) | (ac < al) | (ac > ah) | (av < 0.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            _check_bar(ah[i], al[i], ac[i], av[i], f"[{i}]")
        res = {f: np.empty(n, dtype=np.int8 if f in _INT8_FIELDS else
                           np.int32 if f == "n_levels" else np.float64)
               for f in LevelsSnapshot._fields}
        cdef const double[::1] h = ah, l = al, c = ac, v = av
        cdef double[::1] sup = res["support"], sup_s = res["support_strength"]
        cdef double[::1] sup_t = res["support_touches"], sup_d = res["support_dist"]
        cdef double[::1] rs = res["resistance"], rs_s = res["resistance_strength"]
        cdef double[::1] rs_t = res["resistance_touches"], rs_d = res["resistance_dist"]
        cdef signed char[::1] bo = res["breakout"]
        cdef double[::1] bo_l = res["breakout_level"]
        cdef double[::1] ph = res["pivot_high"], pl = res["pivot_low"]
        cdef signed char[::1] dt = res["double_top"], db = res["double_bottom"]
        cdef double[::1] dt_n = res["top_neckline"], db_n = res["bottom_neckline"]
        cdef signed char[::1] rng = res["in_range"]
        cdef double[::1] rng_h = res["range_high"], rng_l = res["range_low"]
        cdef int[::1] nl = res["n_levels"]
        cdef LevelsOut o
        with nogil:
            for i in range(n):
                if i == n - 1:
                    self._prev = self._s
                levels_step(&self._s, h[i], l[i], c[i], v[i], &o)
                sup[i] = o.support
                sup_s[i] = o.support_strength
                sup_t[i] = o.support_touches
                sup_d[i] = o.support_dist
                rs[i] = o.resistance
                rs_s[i] = o.resistance_strength
                rs_t[i] = o.resistance_touches
                rs_d[i] = o.resistance_dist
                bo[i] = <signed char>o.breakout
                bo_l[i] = o.breakout_level
                ph[i] = o.pivot_high
                pl[i] = o.pivot_low
                dt[i] = <signed char>o.double_top
                dt_n[i] = o.top_neckline
                db[i] = <signed char>o.double_bottom
                db_n[i] = o.bottom_neckline
                rng[i] = <signed char>o.in_range
                rng_h[i] = o.range_high
                rng_l[i] = o.range_low
                nl[i] = o.n_levels
        return res

    def levels(self) -> list:
        """Live levels as ``(price, touches, strength)``, sorted by price (then age)."""
        cdef int k
        rows = sorted((self._s.levels[k].price, self._s.levels[k].id, k)
                      for k in range(self._s.n_levels))
        return [(price, int(self._s.levels[k].touches), self._s.levels[k].strength)
                for price, _id, k in rows]

    cpdef void reset(self):
        """Return to the freshly constructed state."""
        levels_reset(&self._s)
        self._prev = self._s

"""The engine-state codec (contract and format: snapshot.pxd).

Only :mod:`l2fast.engine.snapshot` uses it, through ``EngineCore._dump_state`` and
``_load_state``; the file format around the bytes (header, checksum, atomic write) is
that module's.
"""

from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from l2fast.technical._aggregate cimport BarGuard, TFAgg
from l2fast.technical._averages cimport ExtremeState, SMAState, Window
from l2fast.technical._features cimport TFBlock
from l2fast.technical._levels cimport LevelsState
from l2fast.technical._oscillators cimport StochState
from l2fast.technical._statistics cimport VarState
from l2fast.technical._volatility cimport DonchianState

from l2fast.errors import SnapshotError

cdef extern from *:
    """
    #ifndef L2F_LAYOUT_HASH
    #define L2F_LAYOUT_HASH "unknown"
    #endif
    """
    const char* L2F_LAYOUT_HASH

#: Hash of the compiled state layout (every .pxd of the core, taken by setup.py at build
#: time): a snapshot loads only into a build with the same one.
LAYOUT_HASH = L2F_LAYOUT_HASH.decode("ascii")

ctypedef bint (*relink_fn)(void* tmp, const void* live) noexcept nogil
ctypedef int (*data_fn)(StateCodec c, void* s) except -1


cdef class StateCodec:
    """One pass over an engine's state: ``StateCodec()`` saves, ``StateCodec(data)`` loads."""

    def __cinit__(self, data=None):
        if data is None:
            self.loading = False
            self._out = bytearray()
        else:
            self.loading = True
            self._data = bytes(data)
            self._ptr = <const unsigned char*>(<char*>self._data)
            self._size = len(self._data)
        self._pos = 0

    cdef int raw(self, void* p, size_t n) except -1:
        if not self.loading:
            self._out += (<char*>p)[:n]
            return 0
        if self._pos + <Py_ssize_t>n > self._size:
            raise SnapshotError(f"state truncated: {self._size} bytes, needed more at offset {self._pos}")
        memcpy(p, self._ptr + self._pos, n)
        self._pos += n
        return 0

    cdef int same(self, long long value, str what) except -1:
        cdef long long saved = value
        self.raw(&saved, sizeof(saved))
        if saved != value:
            raise SnapshotError(f"state does not match this engine: {what} is {saved} in the snapshot, "
                                f"{value} here")
        return 0

    def result(self) -> bytes:
        """The saved bytes (saving), after checking that every byte was read (loading)."""
        if self.loading:
            if self._pos != self._size:
                raise SnapshotError(f"state has {self._size - self._pos} trailing bytes")
            return b""
        return bytes(self._out)


cdef int _composite(StateCodec c, void* s, size_t n, relink_fn relink, data_fn data, str what) except -1:
    # The struct's bytes, then its buffers; on load through a temporary (snapshot.pxd).
    # Saved with NULL buffer pointers (relinked to a zeroed struct), so that equal states
    # give equal bytes.
    cdef void* tmp = malloc(n)
    cdef void* zero
    if tmp == NULL:
        raise MemoryError()
    try:
        if c.loading:
            c.raw(tmp, n)
            if not relink(tmp, s):
                raise SnapshotError(f"state does not match this engine: {what} buffer sizes differ")
            memcpy(s, tmp, n)
        else:
            zero = calloc(1, n)
            if zero == NULL:
                raise MemoryError()
            memcpy(tmp, s, n)
            relink(tmp, zero)
            free(zero)
            c.raw(tmp, n)
    finally:
        free(tmp)
    return data(c, s)


# ---------------------------------------------------------------- per kernel: relink, data

cdef inline bint _window_relink(Window* t, const Window* live) noexcept nogil:
    t.buf = live.buf
    return t.size == live.size


cdef inline int _window_data(StateCodec c, Window* w) except -1:
    return c.raw(w.buf, (w.size + 1) * sizeof(double))


cdef inline bint _extreme_relink(ExtremeState* t, const ExtremeState* live) noexcept nogil:
    t.suffix = live.suffix
    return _window_relink(&t.raw, &live.raw) and t.size == live.size


cdef inline int _extreme_data(StateCodec c, ExtremeState* e) except -1:
    _window_data(c, &e.raw)
    return c.raw(e.suffix, 2 * e.size * sizeof(double))


cdef inline bint _donchian_relink(DonchianState* t, const DonchianState* live) noexcept nogil:
    t.low = live.low
    t.suffix_high = live.suffix_high
    t.suffix_low = live.suffix_low
    return _window_relink(&t.high, &live.high)


cdef inline int _donchian_data(StateCodec c, DonchianState* s) except -1:
    cdef Py_ssize_t period = s.high.size
    _window_data(c, &s.high)
    c.raw(s.low, (period + 1) * sizeof(double))
    c.raw(s.suffix_high, period * sizeof(double))
    return c.raw(s.suffix_low, period * sizeof(double))


cdef inline bint _stoch_relink(StochState* t, const StochState* live) noexcept nogil:
    # Every relink runs (no short-circuit): a temporary never keeps a foreign pointer.
    cdef bint ok = _window_relink(&t.highs, &live.highs)
    ok &= _window_relink(&t.lows, &live.lows)
    ok &= _window_relink(&t.slowk.win, &live.slowk.win)
    ok &= _window_relink(&t.slowd.win, &live.slowd.win)
    return ok


cdef inline int _stoch_data(StateCodec c, StochState* s) except -1:
    _window_data(c, &s.highs)
    _window_data(c, &s.lows)
    _window_data(c, &s.slowk.win)
    return _window_data(c, &s.slowd.win)


cdef inline bint _levels_relink(LevelsState* t, const LevelsState* live) noexcept nogil:
    cdef bint ok = _extreme_relink(&t.piv_hi, &live.piv_hi)
    ok &= _extreme_relink(&t.piv_lo, &live.piv_lo)
    ok &= _window_relink(&t.piv_hi_hist, &live.piv_hi_hist)
    ok &= _window_relink(&t.piv_lo_hist, &live.piv_lo_hist)
    ok &= _extreme_relink(&t.range_hi, &live.range_hi)
    ok &= _extreme_relink(&t.range_lo, &live.range_lo)
    ok &= _window_relink(&t.vol, &live.vol)
    return ok


cdef inline int _levels_data(StateCodec c, LevelsState* s) except -1:
    _extreme_data(c, &s.piv_hi)
    _extreme_data(c, &s.piv_lo)
    _window_data(c, &s.piv_hi_hist)
    _window_data(c, &s.piv_lo_hist)
    _extreme_data(c, &s.range_hi)
    _extreme_data(c, &s.range_lo)
    return _window_data(c, &s.vol)


cdef bint _block_relink(void* tmp, const void* live) noexcept nogil:
    cdef TFBlock* t = <TFBlock*>tmp
    cdef const TFBlock* b = <const TFBlock*>live
    cdef bint ok = _window_relink(&t.closes, &b.closes)
    ok &= _window_relink(&t.bb.var.win, &b.bb.var.win)
    ok &= _stoch_relink(&t.stoch, &b.stoch)
    ok &= _window_relink(&t.vol_z.var.win, &b.vol_z.var.win)
    ok &= _window_relink(&t.rvol.var.win, &b.rvol.var.win)
    ok &= _donchian_relink(&t.donchian, &b.donchian)
    ok &= _levels_relink(&t.levels, &b.levels)
    return ok and t.n_rsi == b.n_rsi and t.offset == b.offset


cdef int _block_data(StateCodec c, void* s) except -1:
    cdef TFBlock* b = <TFBlock*>s
    _window_data(c, &b.closes)
    _window_data(c, &b.bb.var.win)
    _stoch_data(c, &b.stoch)
    _window_data(c, &b.vol_z.var.win)
    _window_data(c, &b.rvol.var.win)
    _donchian_data(c, &b.donchian)
    return _levels_data(c, &b.levels)


cdef bint _correl_relink(void* tmp, const void* live) noexcept nogil:
    cdef CorrelState* t = <CorrelState*>tmp
    cdef const CorrelState* s = <const CorrelState*>live
    cdef bint ok = _window_relink(&t.wx, &s.wx)
    ok &= _window_relink(&t.wy, &s.wy)
    return ok


cdef int _correl_data(StateCodec c, void* s) except -1:
    _window_data(c, &(<CorrelState*>s).wx)
    return _window_data(c, &(<CorrelState*>s).wy)


cdef bint _livestats_relink(void* tmp, const void* live) noexcept nogil:
    return _window_relink(&(<LiveStats*>tmp).trades, &(<const LiveStats*>live).trades)


cdef int _livestats_data(StateCodec c, void* s) except -1:
    return _window_data(c, &(<LiveStats*>s).trades)


# ---------------------------------------------------------------- public walks

cdef int technical_codec(StateCodec c, TechnicalState st) except -1:
    cdef int i
    cdef Py_ssize_t n_features = len(st.names)
    c.same(st._n_tf, "timeframes")
    c.same(n_features, "features")
    c.raw(&st._guard, sizeof(BarGuard))
    c.raw(st._aggs, st._n_tf * sizeof(TFAgg))
    for i in range(st._n_tf):
        _composite(c, &st._blocks[i], sizeof(TFBlock), _block_relink, _block_data, "technical block")
    return c.raw(st._out, n_features * sizeof(double))


cdef int correl_codec(StateCodec c, CorrelState* s) except -1:
    return _composite(c, s, sizeof(CorrelState), _correl_relink, _correl_data, "correlation")


cdef int livestats_codec(StateCodec c, LiveStats* s) except -1:
    return _composite(c, s, sizeof(LiveStats), _livestats_relink, _livestats_data, "live statistics")

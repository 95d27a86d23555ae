"""The engine-state codec (contract and format: _snapshot.pxd).

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

# One kernel family's buffers, listed once: called with (temporary, live) to relink the
# temporary's buffers to the live struct's (StateCodec.relinking), then with (live, live)
# to save or load their contents.
ctypedef int (*walk_fn)(StateCodec c, void* s, const void* live) except -1


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

    cdef int buffer(self, void** p, void* live, size_t n, size_t live_n) except -1:
        if self.relinking:
            p[0] = live
            self._fits &= n == live_n
            return 0
        return self.raw(p[0], n)

    cdef int expect(self, bint same) except -1:
        if self.relinking:
            self._fits &= same
        return 0

    def result(self) -> bytes:
        """The saved bytes (saving), after checking that every byte was read (loading)."""
        if self.loading:
            if self._pos != self._size:
                raise SnapshotError(f"state has {self._size - self._pos} trailing bytes")
            return b""
        return bytes(self._out)


cdef int _relink(StateCodec c, walk_fn walk, void* tmp, const void* live) except -1:
    # 1 if every buffer size (and expected field) of ``tmp`` agrees with ``live``. Every
    # buffer is relinked (no stop at the first mismatch): a temporary never keeps a
    # foreign pointer.
    c.relinking = True
    c._fits = True
    try:
        walk(c, tmp, live)
    finally:
        c.relinking = False
    return c._fits


cdef int _composite(StateCodec c, void* s, size_t n, walk_fn walk, str what) except -1:
    # The struct's bytes, then its buffers; on load through a temporary (_snapshot.pxd).
    # Saved with NULL buffer pointers (relinked to a zeroed struct), so that equal states
    # give equal bytes.
    cdef void* tmp = malloc(n)
    cdef void* zero
    if tmp == NULL:
        raise MemoryError()
    try:
        if c.loading:
            c.raw(tmp, n)
            if not _relink(c, walk, tmp, s):
                raise SnapshotError(f"state does not match this engine: {what} buffer sizes differ")
            memcpy(s, tmp, n)
        else:
            zero = calloc(1, n)
            if zero == NULL:
                raise MemoryError()
            memcpy(tmp, s, n)
            _relink(c, walk, tmp, zero)
            free(zero)
            c.raw(tmp, n)
    finally:
        free(tmp)
    return walk(c, s, s)


# ---------------------------------------------------------------- per kernel: its buffers, in order

cdef inline int _window(StateCodec c, Window* t, const Window* live) except -1:
    return c.buffer(<void**>&t.buf, live.buf, (t.size + 1) * sizeof(double), (live.size + 1) * sizeof(double))


cdef inline int _extreme(StateCodec c, ExtremeState* t, const ExtremeState* live) except -1:
    _window(c, &t.raw, &live.raw)
    return c.buffer(<void**>&t.suffix, live.suffix, 2 * t.size * sizeof(double), 2 * live.size * sizeof(double))


cdef inline int _donchian(StateCodec c, DonchianState* t, const DonchianState* live) except -1:
    # low and the suffixes are sized by the period, the size of the high window.
    cdef size_t n = t.high.size * sizeof(double)
    cdef size_t live_n = live.high.size * sizeof(double)
    _window(c, &t.high, &live.high)
    c.buffer(<void**>&t.low, live.low, n + sizeof(double), live_n + sizeof(double))
    c.buffer(<void**>&t.suffix_high, live.suffix_high, n, live_n)
    return c.buffer(<void**>&t.suffix_low, live.suffix_low, n, live_n)


cdef inline int _stoch(StateCodec c, StochState* t, const StochState* live) except -1:
    _window(c, &t.highs, &live.highs)
    _window(c, &t.lows, &live.lows)
    _window(c, &t.slowk.win, &live.slowk.win)
    return _window(c, &t.slowd.win, &live.slowd.win)


cdef inline int _levels(StateCodec c, LevelsState* t, const LevelsState* live) except -1:
    _extreme(c, &t.piv_hi, &live.piv_hi)
    _extreme(c, &t.piv_lo, &live.piv_lo)
    _window(c, &t.piv_hi_hist, &live.piv_hi_hist)
    _window(c, &t.piv_lo_hist, &live.piv_lo_hist)
    _extreme(c, &t.range_hi, &live.range_hi)
    _extreme(c, &t.range_lo, &live.range_lo)
    return _window(c, &t.vol, &live.vol)


cdef int _block(StateCodec c, void* s, const void* live) except -1:
    cdef TFBlock* t = <TFBlock*>s
    cdef const TFBlock* b = <const TFBlock*>live
    _window(c, &t.closes, &b.closes)
    _window(c, &t.bb.var.win, &b.bb.var.win)
    _stoch(c, &t.stoch, &b.stoch)
    _window(c, &t.vol_z.var.win, &b.vol_z.var.win)
    _window(c, &t.rvol.var.win, &b.rvol.var.win)
    _donchian(c, &t.donchian, &b.donchian)
    _levels(c, &t.levels, &b.levels)
    return c.expect(t.n_rsi == b.n_rsi and t.offset == b.offset)


cdef int _correl(StateCodec c, void* s, const void* live) except -1:
    _window(c, &(<CorrelState*>s).wx, &(<const CorrelState*>live).wx)
    return _window(c, &(<CorrelState*>s).wy, &(<const CorrelState*>live).wy)


cdef int _livestats(StateCodec c, void* s, const void* live) except -1:
    return _window(c, &(<LiveStats*>s).trades, &(<const LiveStats*>live).trades)


# ---------------------------------------------------------------- public walks

cdef int technical_codec(StateCodec c, TechnicalState st) except -1:
    cdef int i
    cdef Py_ssize_t n_features = len(st.names)
    c.same(st._n_tf, "timeframes")
    c.same(n_features, "features")
    c.raw(&st._guard, sizeof(BarGuard))
    c.raw(st._aggs, st._n_tf * sizeof(TFAgg))
    for i in range(st._n_tf):
        _composite(c, &st._blocks[i], sizeof(TFBlock), _block, "technical block")
    return c.raw(st._out, n_features * sizeof(double))


cdef int correl_codec(StateCodec c, CorrelState* s) except -1:
    return _composite(c, s, sizeof(CorrelState), _correl, "correlation")


cdef int livestats_codec(StateCodec c, LiveStats* s) except -1:
    return _composite(c, s, sizeof(LiveStats), _livestats, "live statistics")

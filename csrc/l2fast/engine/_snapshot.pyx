"""The engine-state codec (contract and format: _snapshot.pxd).

Only :mod:`l2fast.engine.snapshot` uses it, through ``EngineCore._dump_state`` and
``_load_state``; the file format around the bytes (header, checksum, atomic write) is
that module's.
"""

from libc.math cimport isfinite
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy

from l2fast.technical._aggregate cimport BarGuard, TFAgg
from l2fast.technical._averages cimport EMAState, ExtremeState, SMAState, Window
from l2fast.technical._features cimport (
    X_ATR, X_BOLL, X_CCI, X_DX, X_EMA, X_MACD, X_RSI, X_SMA, ExtraState, TFBlock,
)
from l2fast.technical._stockstats cimport SSEWMState
from l2fast.technical._turbulence cimport TurbState
from l2fast.technical._levels cimport LEVELS_CAP, PIVOT_HIST, LevelsState
from l2fast.technical._oscillators cimport ADXState, MACDState, RSIState, StochState
from l2fast.technical._statistics cimport VarState
from l2fast.technical._volatility cimport ATRState, DonchianState, RVolState
from l2fast.decision._risk cimport RISK_MAX_SYMBOLS, STOP_TRAILING, RiskParams, RiskState
from l2fast.decision._voting cimport (
    MEMBER_BAD_ACTION, VOTE_MAX_MEMBERS, VOTE_MAX_TIMEFRAMES, VOTE_RING, MonoDeque, VoteParams, Voter,
)

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

    cdef int name(self, str value, str what) except -1:
        cdef bytes b = value.encode()
        cdef long long n = len(b)
        cdef bytes saved
        if not self.loading:
            self.raw(&n, sizeof(n))
            self._out += b
            return 0
        self.raw(&n, sizeof(n))
        if n < 0 or n > self._size - self._pos:
            raise SnapshotError(f"state truncated or corrupt: {what} of {n} bytes at offset {self._pos}")
        saved = self._data[self._pos:self._pos + n]
        self._pos += n
        if saved != b:
            raise SnapshotError(f"state does not match this engine: {what} is "
                                f"{saved.decode(errors='replace')!r} in the state bytes, {value!r} here")
        return 0

    cdef int buffer(self, void** p, void* live, size_t n, size_t live_n) except -1:
        if self.relinking:
            p[0] = live
            self.expect(n == live_n, "buffer sizes differ")
            return 0
        return self.raw(p[0], n)

    cdef int expect(self, bint ok, str what) except -1:
        if self.relinking and not ok and self._fits:
            self._fits = False
            self._why = what
        return 0

    cdef int struct_(self, void* live, size_t n, check_fn check, str what) except -1:
        cdef void* tmp
        if not self.loading:
            return self.raw(live, n)
        tmp = malloc(n)
        if tmp == NULL:
            raise MemoryError()
        try:
            self.raw(tmp, n)
            self.relinking = True
            self._fits = True
            try:
                check(self, tmp, live)
            finally:
                self.relinking = False
            if not self._fits:
                raise SnapshotError(f"state does not match this engine: {what}: {self._why}")
            memcpy(live, tmp, n)
        finally:
            free(tmp)
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
    c._why = None
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
                raise SnapshotError(f"state does not match this engine: {what} {c._why}")
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
#
# Each walk also states its family's invariants, checked on the temporary against the
# live struct (built from the snapshot's config) while relinking, before anything is
# copied in: parameters equal the live ones (so every ring keeps the capacity it was
# allocated with and every period its value), every ring position is inside its ring and
# every count is one the kernel's steps can reach. That is what makes the kernels' steps
# memory-safe on restored state; floats are free (the live state holds NaN too).

cdef inline bint _eq(const void* a, const void* b, size_t n) noexcept:
    # Bytewise: exact for parameters, NaN included (no padding in what it is given).
    return memcmp(a, b, n) == 0


cdef inline int _window(StateCodec c, Window* t, const Window* live) except -1:
    c.expect(t.size == live.size, "buffer sizes differ")
    c.expect(0 <= t.head <= t.size, "ring position outside its ring")
    c.expect(t.n >= 0, "negative count of values")
    return c.buffer(<void**>&t.buf, live.buf, (t.size + 1) * sizeof(double), (live.size + 1) * sizeof(double))


cdef inline int _extreme(StateCodec c, ExtremeState* t, const ExtremeState* live) except -1:
    c.expect(t.size == live.size and t.sign == live.sign, "buffer sizes differ")
    c.expect(0 <= t.offset < t.size and (t.half == 0 or t.half == t.size), "block position outside its block")
    _window(c, &t.raw, &live.raw)
    return c.buffer(<void**>&t.suffix, live.suffix, 2 * t.size * sizeof(double), 2 * live.size * sizeof(double))


cdef inline int _sma(StateCodec c, SMAState* t, const SMAState* live) except -1:
    return _window(c, &t.win, &live.win)


cdef inline int _var(StateCodec c, VarState* t, const VarState* live) except -1:
    _window(c, &t.win, &live.win)
    return c.expect(t.inv_period == live.inv_period, "variance period differs")


cdef inline int _ema(StateCodec c, const EMAState* t, const EMAState* live) except -1:
    return c.expect(t.period == live.period and t.k == live.k and t.n >= 0, "EMA period or count")


cdef inline int _donchian(StateCodec c, DonchianState* t, const DonchianState* live) except -1:
    # low and the suffixes are sized by the period, the size of the high window.
    cdef size_t n = t.high.size * sizeof(double)
    cdef size_t live_n = live.high.size * sizeof(double)
    _window(c, &t.high, &live.high)
    c.expect(0 <= t.block_len <= t.high.size, "Donchian block position outside its block")
    c.buffer(<void**>&t.low, live.low, n + sizeof(double), live_n + sizeof(double))
    c.buffer(<void**>&t.suffix_high, live.suffix_high, n, live_n)
    return c.buffer(<void**>&t.suffix_low, live.suffix_low, n, live_n)


cdef inline int _stoch(StateCodec c, StochState* t, const StochState* live) except -1:
    _window(c, &t.highs, &live.highs)
    _window(c, &t.lows, &live.lows)
    c.expect(t.highest_at >= -1 and t.lowest_at >= -1, "stochastic extreme index")
    _sma(c, &t.slowk, &live.slowk)
    return _sma(c, &t.slowd, &live.slowd)


cdef inline int _levels(StateCodec c, LevelsState* t, const LevelsState* live) except -1:
    _extreme(c, &t.piv_hi, &live.piv_hi)
    _extreme(c, &t.piv_lo, &live.piv_lo)
    _window(c, &t.piv_hi_hist, &live.piv_hi_hist)
    _window(c, &t.piv_lo_hist, &live.piv_lo_hist)
    _extreme(c, &t.range_hi, &live.range_hi)
    _extreme(c, &t.range_lo, &live.range_lo)
    _window(c, &t.vol, &live.vol)
    # Parameters: the first fields, up to the windows (all 8-byte wide: no padding).
    c.expect(_eq(t, live, <size_t>(<char*>&t.piv_hi - <char*>t)), "support/resistance parameters differ")
    c.expect(0 <= t.n_levels <= t.max_levels <= LEVELS_CAP, "level count outside the table")
    c.expect(0 <= t.highs_head < PIVOT_HIST and 0 <= t.n_highs <= PIVOT_HIST
             and 0 <= t.lows_head < PIVOT_HIST and 0 <= t.n_lows <= PIVOT_HIST, "pivot ring position or count")
    c.expect(t.n >= 0 and t.next_id >= 0, "support/resistance counters")
    return 0


cdef int _block(StateCodec c, void* s, const void* live) except -1:
    cdef TFBlock* t = <TFBlock*>s
    cdef const TFBlock* b = <const TFBlock*>live
    cdef int k
    _window(c, &t.closes, &b.closes)
    _var(c, &t.bb.var, &b.bb.var)
    _stoch(c, &t.stoch, &b.stoch)
    _var(c, &t.vol_z.var, &b.vol_z.var)
    _var(c, &t.rvol.var, &b.rvol.var)
    _donchian(c, &t.donchian, &b.donchian)
    _levels(c, &t.levels, &b.levels)
    # After the buffers: a config with other periods is reported by its buffer sizes.
    c.expect(t.n_rsi == b.n_rsi and t.offset == b.offset and t.bars >= 0, "feature layout differs")
    for k in range(len(t.rsi)):
        c.expect(_eq(&t.rsi[k], &b.rsi[k], 3 * sizeof(double)) and t.rsi[k].n >= 0, "RSI period or count")
    _ema(c, &t.macd.fast, &b.macd.fast)
    _ema(c, &t.macd.slow, &b.macd.slow)
    _ema(c, &t.macd.signal, &b.macd.signal)
    c.expect(t.macd.fast_skip == b.macd.fast_skip and t.macd.n >= 0, "MACD periods or count")
    c.expect(t.bb.nbdev == b.bb.nbdev, "Bollinger width differs")
    c.expect(_eq(&t.atr, &b.atr, 3 * sizeof(double)) and t.atr.n >= 0, "ATR period or count")
    c.expect(_eq(&t.adx, &b.adx, 3 * sizeof(double)) and t.adx.n >= 0, "ADX period or count")
    c.expect(t.rvol.ddof_scale == b.rvol.ddof_scale and t.rvol.annualise == b.rvol.annualise
             and t.rvol.n >= 0 and t.obv.n >= 0 and t.candles.n >= 0, "volatility parameters or counts")
    # The extra features' tables are the live ones (built from their specs, which the
    # snapshot names: technical_codec); their states follow the block (_extra).
    if c.relinking:
        t.extras = b.extras
        t.extra_outs = b.extra_outs
    c.expect(t.n_extras == b.n_extras and t.n_extra_outs == b.n_extra_outs, "extra features differ")
    return 0


cdef inline int _ss_ewm(StateCodec c, const SSEWMState* t, const SSEWMState* live) except -1:
    return c.expect(_eq(&t.decay, &live.decay, sizeof(double)), "stockstats average period differs")


cdef int _extra(StateCodec c, void* s, const void* live) except -1:
    # The union member is the live state's kind. Saving relinks against a zeroed struct,
    # whose kind says nothing: the state's own kind picks the member there. A loaded kind
    # that differs is refused before its member is read (its fields would be another
    # member's bytes).
    cdef ExtraState* t = <ExtraState*>s
    cdef const ExtraState* b = <const ExtraState*>live
    cdef int kind = t.kind
    c.expect(kind == b.kind and t.source == b.source, "extra feature kind differs")
    if c.loading and kind != b.kind:
        return 0
    if kind == X_SMA:
        _window(c, &t.u.sma.win, &b.u.sma.win)
    elif kind == X_BOLL:
        _window(c, &t.u.boll.ma.win, &b.u.boll.ma.win)
    elif kind == X_CCI:
        _window(c, &t.u.cci.tp.win, &b.u.cci.tp.win)
    elif kind == X_EMA:
        _ss_ewm(c, &t.u.ema, &b.u.ema)
    elif kind == X_MACD:
        _ss_ewm(c, &t.u.macd.fast, &b.u.macd.fast)
        _ss_ewm(c, &t.u.macd.slow, &b.u.macd.slow)
        _ss_ewm(c, &t.u.macd.signal, &b.u.macd.signal)
    elif kind == X_RSI:
        _ss_ewm(c, &t.u.rsi.up, &b.u.rsi.up)
        _ss_ewm(c, &t.u.rsi.down, &b.u.rsi.down)
    elif kind == X_ATR:
        _ss_ewm(c, &t.u.atr.tr, &b.u.atr.tr)
    elif kind == X_DX:
        _ss_ewm(c, &t.u.dx.atr.tr, &b.u.dx.atr.tr)
        _ss_ewm(c, &t.u.dx.pdm, &b.u.dx.pdm)
        _ss_ewm(c, &t.u.dx.ndm, &b.u.dx.ndm)
    return 0


cdef int _correl(StateCodec c, void* s, const void* live) except -1:
    cdef CorrelState* t = <CorrelState*>s
    cdef const CorrelState* b = <const CorrelState*>live
    # Both rings are pushed together: one position and count for the pair.
    c.expect(t.inv_period == b.inv_period and t.wx.head == t.wy.head and t.wx.n == t.wy.n,
             "correlation rings out of step")
    _window(c, &t.wx, &b.wx)
    return _window(c, &t.wy, &b.wy)


cdef int _turbulence(StateCodec c, void* s, const void* live) except -1:
    cdef TurbState* t = <TurbState*>s
    cdef const TurbState* b = <const TurbState*>live
    c.expect(t.n_assets == b.n_assets and t.window == b.window, "turbulence assets or window differ")
    c.expect(0 <= t.head < t.window and 0 <= t.count <= t.window and t.steps >= 0
             and 0 <= t.positives <= t.steps and 0 < t.pushes_to_rebuild <= t.window, "turbulence ring position")
    return c.buffer(<void**>&t.ring, b.ring, <size_t>t.window * t.n_assets * sizeof(double),
                    <size_t>b.window * b.n_assets * sizeof(double))


cdef int _livestats(StateCodec c, void* s, const void* live) except -1:
    cdef LiveStats* t = <LiveStats*>s
    _window(c, &t.trades, &(<const LiveStats*>live).trades)
    # count is min(pushed, window) (livestats_push), the returns it reads back.
    c.expect(t.trades.n >= 0 and t.count == min(t.trades.n, t.trades.size)
             and t.wins >= 0 and t.losses >= 0 and t.wins + t.losses <= t.count, "trade counts")
    return 0


cdef int _aggregate(StateCodec c, void* s, const void* live) except -1:
    cdef TFAgg* t = <TFAgg*>s
    # tf_ms divides every timestamp: never 0, always the config's.
    return c.expect(t.tf_ms == (<const TFAgg*>live).tf_ms, "timeframe differs")


cdef int _guard(StateCodec c, void* s, const void* live) except -1:
    cdef BarGuard* t = <BarGuard*>s
    return c.expect(t.last_ts >= 0 and t.gaps >= 0 and t.missing >= 0, "bar guard counters")


cdef int _risk(StateCodec c, void* s, const void* live) except -1:
    cdef RiskState* t = <RiskState*>s
    cdef const RiskState* b = <const RiskState*>live
    cdef const RiskParams* p = &t.prm
    cdef const RiskParams* q = &b.prm
    cdef int k
    c.expect(p.atr_multiplier == q.atr_multiplier and p.max_loss_per_trade == q.max_loss_per_trade
             and p.take_profit_r == q.take_profit_r and p.breakeven_threshold == q.breakeven_threshold
             and p.trailing_atr_multiplier == q.trailing_atr_multiplier and p.max_daily_trades == q.max_daily_trades
             and p.daily_loss_limit == q.daily_loss_limit
             and p.max_concurrent_positions == q.max_concurrent_positions
             and p.exposure_limit == q.exposure_limit and p.max_position_size == q.max_position_size
             and p.allow_short == q.allow_short and p.turbulence_threshold == q.turbulence_threshold,
             "risk parameters differ from the config's")
    c.expect(t.n_symbols == b.n_symbols and _eq(t.lot_step, b.lot_step, sizeof(t.lot_step))
             and _eq(t.min_notional, b.min_notional, sizeof(t.min_notional)), "symbol lot sizes differ")
    for k in range(RISK_MAX_SYMBOLS):
        c.expect(-1 <= t.pos[k].side <= 1 and -1 <= t.pending[k].side <= 1, "position side outside -1, 0, 1")
        # An open position or reservation has a real size and price (the fill checks).
        c.expect(t.pos[k].side == 0 or (isfinite(t.pos[k].qty) and t.pos[k].qty > 0.0
                                        and isfinite(t.pos[k].entry) and t.pos[k].entry > 0.0),
                 "open position without a finite quantity and entry")
        c.expect(t.pending[k].side == 0 or (isfinite(t.pending[k].qty) and t.pending[k].qty > 0.0),
                 "pending entry without a finite quantity")
    c.expect(isfinite(t.fees) and t.fees >= 0.0, "fees not a finite amount >= 0")
    c.expect(t.turbulence >= 0.0, "turbulence not a number >= 0")
    return c.expect(t.day >= -1 and t.entries_today >= 0, "day counters")


cdef int _deque(StateCodec c, const MonoDeque* d) except -1:
    return c.expect(0 <= d.head < VOTE_RING and 0 <= d.count < VOTE_RING, "vote ring position or count")


cdef int _voter(StateCodec c, void* s, const void* live) except -1:
    cdef Voter* t = <Voter*>s
    cdef const Voter* b = <const Voter*>live
    cdef const VoteParams* p = &t.p
    cdef const VoteParams* q = &b.p
    cdef int k
    # Field by field: VoteParams has padding, whose bytes need not agree.
    c.expect(p.n_members == q.n_members and _eq(p.members, q.members, sizeof(p.members))
             and p.voting == q.voting and _eq(&p.dead_band, &q.dead_band, 9 * sizeof(double))
             and p.n_timeframes == q.n_timeframes and _eq(p.tf_weights, q.tf_weights, sizeof(p.tf_weights))
             and _eq(&t.tp, &b.tp, sizeof(t.tp)) and t.block_size == b.block_size, "vote parameters differ")
    for k in range(VOTE_MAX_TIMEFRAMES):
        _deque(c, &t.tf[k].lows)
        _deque(c, &t.tf[k].highs)
        _deque(c, &t.tf[k].widths)
        c.expect(t.tf[k].last_squeeze >= -1 and t.tf[k].bars >= 0, "vote counters")
    for k in range(VOTE_MAX_MEMBERS):
        c.expect(t.failures[k] >= 0 and 0 <= t.last_failure[k] <= MEMBER_BAD_ACTION, "member failure record")
    return c.expect(t.votes >= 0, "vote counters")


# ---------------------------------------------------------------- public walks

cdef str _extras_signature(TechnicalState st):
    # The extra features' specs, as the snapshot names them (empty without any).
    return "; ".join(f"{name}={kind}{list(periods)}.{output}({source})@{tf}"
                     for name, kind, periods, output, source, tf in st.extras)


cdef int technical_codec(StateCodec c, TechnicalState st) except -1:
    cdef int i, k
    cdef Py_ssize_t n_features = len(st.names)
    cdef TFBlock* b
    c.same(st._n_tf, "timeframes")
    # Before the feature count, which other extras change too: this names them.
    c.name(_extras_signature(st), "extra features")
    c.same(n_features, "features")
    c.struct_(&st._guard, sizeof(BarGuard), _guard, "bar guard")
    for i in range(st._n_tf):
        c.struct_(&st._aggs[i], sizeof(TFAgg), _aggregate, "aggregator")
    for i in range(st._n_tf):
        b = &st._blocks[i]
        _composite(c, b, sizeof(TFBlock), _block, "technical block")
        for k in range(b.n_extras):
            _composite(c, &b.extras[k], sizeof(ExtraState), _extra, "extra feature")
    return c.raw(st._out, n_features * sizeof(double))


def technical_state_bytes(TechnicalState st) -> bytes:
    """One technical state's bytes (the engine's walk of each symbol's state)."""
    cdef StateCodec c = StateCodec()
    technical_codec(c, st)
    return c.result()


def load_technical_state(TechnicalState st, data) -> None:
    """Load :func:`technical_state_bytes`' bytes into a state built from the same config
    and extras; on any refusal the state is left as it was.

    Raises:
        SnapshotError: The bytes are truncated or do not fit this state.
    """
    cdef StateCodec c = StateCodec(data)
    before = technical_state_bytes(st)
    try:
        technical_codec(c, st)
        c.result()
    except BaseException:
        technical_codec(StateCodec(before), st)
        raise


cdef int correl_codec(StateCodec c, CorrelState* s) except -1:
    return _composite(c, s, sizeof(CorrelState), _correl, "correlation")


cdef int turbulence_codec(StateCodec c, TurbState* s) except -1:
    return _composite(c, s, sizeof(TurbState), _turbulence, "turbulence")


cdef int livestats_codec(StateCodec c, LiveStats* s) except -1:
    return _composite(c, s, sizeof(LiveStats), _livestats, "live statistics")


cdef int risk_codec(StateCodec c, RiskState* s) except -1:
    return c.struct_(s, sizeof(RiskState), _risk, "risk state")


cdef int voter_codec(StateCodec c, Voter* s) except -1:
    return c.struct_(s, sizeof(Voter), _voter, "voter")

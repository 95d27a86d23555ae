"""The per-bar technical state: one call per 1-minute bar updates every timeframe,
indicator, candlestick pattern and support/resistance level into one feature vector.
"""

from libc.math cimport NAN, log
from libc.stdlib cimport calloc, free

import numpy as np
cimport numpy as cnp

from l2fast.technical._aggregate cimport (
    BAR_OK, OHLCV, bar_check, bar_commit, bar_fault, bar_guard_init, tf_init, tf_step,
)
from l2fast.technical._averages cimport window_free, window_get, window_init, window_push
from l2fast.technical._candles cimport candles_init, candles_step, candles_warmup
from l2fast._checks cimport as_input, check_period, check_same_length
from l2fast.technical._levels cimport LEVELS_CAP, LevelsOut, levels_free, levels_init, levels_step
from l2fast.technical._oscillators cimport (
    adx_init, adx_step, macd_init, macd_step, rsi_init, rsi_step, stoch_free, stoch_init,
    stoch_step,
)
from l2fast.technical._volatility cimport (
    atr_init, atr_step, bbands_free, bbands_init, bbands_step, donchian_free, donchian_init,
    donchian_step, rvol_free, rvol_init, rvol_step,
)
from l2fast.technical._volume cimport obv_init, obv_step, volz_free, volz_init, volz_step
from l2fast.technical._stockstats cimport (
    ss_atr_init, ss_atr_step, ss_boll_free, ss_boll_init, ss_boll_step, ss_cci_free, ss_cci_init,
    ss_cci_step, ss_dx_init, ss_dx_step, ss_ema_init, ss_ewm_step, ss_macd_init, ss_macd_step,
    ss_rsi_init, ss_rsi_step, ss_sma_free, ss_sma_init, ss_sma_step,
)

from l2fast.technical._candles import CANDLESTICK_PATTERNS
from l2fast.technical._stockstats import (
    StockstatsATR, StockstatsBollingerBands, StockstatsCCI, StockstatsDX, StockstatsEMA, StockstatsMACD,
    StockstatsRSI, StockstatsSMA,
)
from l2fast.errors import InvalidBarError, InvalidInputError

cnp.import_array()

# The fixed slots in S_* order (_features.pxd), one row each: its constant and its base name
# ("{...}" takes a period). The constants index a C array, so their enum stays anonymous
# and gives no names; the row keeps each name beside its constant, the check below that
# row i is constant i, and tests/test_codes.py that each name is its constant's.
_SLOTS = (
    (S_CLOSE, "close"), (S_RET_1, "ret_1"), (S_RET_5, "ret_5"),
    (S_MACD, "macd"), (S_MACD_SIGNAL, "macd_signal"), (S_MACD_HIST, "macd_hist"),
    (S_MACD_HIST_PCT, "macd_hist_pct"),
    (S_BB_UPPER, "bb_upper"), (S_BB_MIDDLE, "bb_middle"), (S_BB_LOWER, "bb_lower"),
    (S_BB_PCTB, "bb_pctb"), (S_BB_WIDTH, "bb_width"),
    (S_ATR, "atr_{atr}"), (S_ATR_PCT, "atr_pct"),
    (S_STOCH_K, "stoch_k"), (S_STOCH_D, "stoch_d"),
    (S_ADX, "adx_{adx}"), (S_PLUS_DI, "plus_di_{adx}"), (S_MINUS_DI, "minus_di_{adx}"),
    (S_OBV, "obv"), (S_VOL_Z, "vol_z_{vol_z}"), (S_RVOL, "rvol_{rvol}"),
    (S_DONCHIAN_UPPER, "donchian_upper_{donchian}"), (S_DONCHIAN_LOWER, "donchian_lower_{donchian}"),
    (S_DONCHIAN_POS, "donchian_pos_{donchian}"),
    (S_SR_SUPPORT, "sr_support"), (S_SR_RESISTANCE, "sr_resistance"),
    (S_SR_DIST_SUPPORT, "sr_dist_support"), (S_SR_DIST_RESISTANCE, "sr_dist_resistance"),
    (S_SR_SUPPORT_STRENGTH, "sr_support_strength"), (S_SR_RESISTANCE_STRENGTH, "sr_resistance_strength"),
    (S_SR_BREAKOUT, "sr_breakout"),
    (S_SR_DOUBLE_TOP, "sr_double_top"), (S_SR_DOUBLE_BOTTOM, "sr_double_bottom"),
    (S_SR_IN_RANGE, "sr_in_range"),
)
if [slot for slot, _ in _SLOTS] != list(range(S_RSI)):
    raise RuntimeError("_SLOTS must list every fixed slot of _features.pxd once, in S_* order")
#: Base names of the fixed slots, in slot order; "{...}" takes a period.
SLOT_NAMES = tuple(name for _, name in _SLOTS)
FIRST_RSI_SLOT = S_RSI
#: Capacities of the state: RSI periods per timeframe, timeframes.
MAX_RSI_PERIODS = MAX_RSI
MAX_TIMEFRAME_COUNT = MAX_TIMEFRAMES

# The extra features' kinds (X_* of _features.pxd, in order): (constant, name, outputs
# (by output code), periods it takes, the standalone class whose ``warmup`` it has).
_EXTRA_KINDS = (
    (X_SMA, "sma", ("value",), 1, StockstatsSMA),
    (X_EMA, "ema", ("value",), 1, StockstatsEMA),
    (X_BOLL, "boll", ("mid", "ub", "lb"), 1, StockstatsBollingerBands),
    (X_MACD, "macd", ("macd", "macds", "macdh"), 3, StockstatsMACD),
    (X_RSI, "rsi", ("value",), 1, StockstatsRSI),
    (X_ATR, "atr", ("value",), 1, StockstatsATR),
    (X_DX, "dx", ("dx", "pdi", "ndi"), 1, StockstatsDX),
    (X_CCI, "cci", ("value",), 1, StockstatsCCI),
)
_EXTRA_SOURCES = ((XS_OPEN, "open"), (XS_HIGH, "high"), (XS_LOW, "low"), (XS_CLOSE, "close"),
                  (XS_VOLUME, "volume"))
if ([row[0] for row in _EXTRA_KINDS] != list(range(N_EXTRA_KINDS))
        or [row[0] for row in _EXTRA_SOURCES] != list(range(N_EXTRA_SOURCES))):
    raise RuntimeError("_EXTRA_KINDS / _EXTRA_SOURCES must list every X_* / XS_* of _features.pxd in order")
_KIND_CODES = {row[1]: row for row in _EXTRA_KINDS}
_SOURCE_CODES = {name: code for code, name in _EXTRA_SOURCES}
#: Kinds an extra feature may be, and their outputs.
EXTRA_KINDS = {name: outputs for _, name, outputs, _, _ in _EXTRA_KINDS}
#: Longest window an extra feature may take, in closed bars of its timeframe (its ring
#: is allocated at that size).
MAX_EXTRA_PERIOD = 100_000


cdef inline double _position(double x, double lower, double upper) noexcept nogil:
    # Where x sits in [lower, upper]; 0.5 in a zero-width channel, NaN in warm-up.
    cdef double width = upper - lower
    if width > 0.0:
        return (x - lower) / width
    if width == 0.0:
        return 0.5
    return NAN


cdef void block_step(TFBlock* b, double o, double h, double l, double c, double v,
                     double* out) noexcept nogil:
    cdef double* f = out + b.offset
    cdef double middle
    cdef int i
    cdef int cdl[N_CANDLE_PATTERNS]
    cdef LevelsOut lv

    b.bars += 1
    window_push(&b.closes, c)
    f[S_CLOSE] = c
    f[S_RET_1] = log(c / window_get(&b.closes, 1)) if b.closes.n > 1 else NAN
    f[S_RET_5] = log(c / window_get(&b.closes, 5)) if b.closes.n > 5 else NAN

    for i in range(b.n_rsi):
        f[S_RSI + i] = rsi_step(&b.rsi[i], c)
    macd_step(&b.macd, c, &f[S_MACD], &f[S_MACD_SIGNAL], &f[S_MACD_HIST])
    f[S_MACD_HIST_PCT] = f[S_MACD_HIST] / c

    bbands_step(&b.bb, c, &f[S_BB_UPPER], &f[S_BB_MIDDLE], &f[S_BB_LOWER])
    f[S_BB_PCTB] = _position(c, f[S_BB_LOWER], f[S_BB_UPPER])
    f[S_BB_WIDTH] = (f[S_BB_UPPER] - f[S_BB_LOWER]) / f[S_BB_MIDDLE]
    f[S_ATR] = atr_step(&b.atr, h, l, c)
    f[S_ATR_PCT] = f[S_ATR] / c

    stoch_step(&b.stoch, h, l, c, &f[S_STOCH_K], &f[S_STOCH_D])
    adx_step(&b.adx, h, l, c, &f[S_ADX], &f[S_PLUS_DI], &f[S_MINUS_DI])

    f[S_OBV] = obv_step(&b.obv, c, v)
    f[S_VOL_Z] = volz_step(&b.vol_z, v)
    f[S_RVOL] = rvol_step(&b.rvol, c)

    donchian_step(&b.donchian, h, l, &f[S_DONCHIAN_UPPER], &middle, &f[S_DONCHIAN_LOWER])
    f[S_DONCHIAN_POS] = _position(c, f[S_DONCHIAN_LOWER], f[S_DONCHIAN_UPPER])

    levels_step(&b.levels, h, l, c, v, &lv)
    f[S_SR_SUPPORT] = lv.support
    f[S_SR_RESISTANCE] = lv.resistance
    f[S_SR_DIST_SUPPORT] = lv.support_dist
    f[S_SR_DIST_RESISTANCE] = lv.resistance_dist
    f[S_SR_SUPPORT_STRENGTH] = lv.support_strength
    f[S_SR_RESISTANCE_STRENGTH] = lv.resistance_strength
    f[S_SR_BREAKOUT] = lv.breakout
    f[S_SR_DOUBLE_TOP] = lv.double_top
    f[S_SR_DOUBLE_BOTTOM] = lv.double_bottom
    f[S_SR_IN_RANGE] = lv.in_range

    candles_step(&b.candles, o, h, l, c, cdl)
    f += S_RSI + b.n_rsi
    for i in range(N_CANDLE_PATTERNS):
        f[i] = cdl[i]

    if b.n_extras:
        _extras_step(b, o, h, l, c, v, out)


cdef void _extras_step(TFBlock* b, double o, double h, double l, double c, double v,
                       double* out) noexcept nogil:
    # Each state once, then the outputs read from it (extra_outs is ordered by state).
    cdef double src[N_EXTRA_SOURCES]
    cdef double val[3]
    cdef ExtraState* x
    cdef const ExtraOut* e = b.extra_outs
    cdef const ExtraOut* end = b.extra_outs + b.n_extra_outs
    cdef int k
    src[XS_OPEN] = o
    src[XS_HIGH] = h
    src[XS_LOW] = l
    src[XS_CLOSE] = c
    src[XS_VOLUME] = v
    for k in range(b.n_extras):
        x = &b.extras[k]
        if x.kind == X_SMA:
            val[0] = ss_sma_step(&x.u.sma, src[x.source])
        elif x.kind == X_EMA:
            val[0] = ss_ewm_step(&x.u.ema, src[x.source])
        elif x.kind == X_BOLL:
            ss_boll_step(&x.u.boll, c, &val[0], &val[1], &val[2])
        elif x.kind == X_MACD:
            ss_macd_step(&x.u.macd, c, &val[0], &val[1], &val[2])
        elif x.kind == X_RSI:
            val[0] = ss_rsi_step(&x.u.rsi, c)
        elif x.kind == X_ATR:
            val[0] = ss_atr_step(&x.u.atr, h, l, c)
        elif x.kind == X_DX:
            ss_dx_step(&x.u.dx, h, l, c, &val[0], &val[1], &val[2])
        else:
            val[0] = ss_cci_step(&x.u.cci, h, l, c)
        while e < end and e.state == k:
            out[e.slot] = val[e.output]
            e += 1


cdef int _check_capacity(object cfg) except -1:
    # The bounds of the C state, whoever built ``cfg``: the config owns the ranges of these
    # settings, and this keeps a section that skipped its validation from writing past a
    # fixed array or sizing a buffer from a non-positive period.
    n_tf, n_rsi = len(cfg.timeframe_minutes), len(cfg.rsi_periods)
    if not 1 <= n_tf <= MAX_TIMEFRAMES:
        raise InvalidInputError(f"timeframes: 1 to {MAX_TIMEFRAMES}, got {n_tf}")
    if not 1 <= n_rsi <= MAX_RSI:
        raise InvalidInputError(f"rsi_periods: 1 to {MAX_RSI} periods, got {n_rsi}")
    for minutes in cfg.timeframe_minutes:
        check_period(minutes, 1, "timeframe_minutes")
    for period in cfg.rsi_periods:
        check_period(period, 1, "rsi_periods")
    for name in ("atr_period", "adx_period", "bb_period", "volume_z_period", "realized_vol_period",
                 "donchian_period"):
        check_period(getattr(cfg, name), 1, name)
    for name in ("macd", "stoch"):
        for period in getattr(cfg, name):
            check_period(period, 1, name)
    lv = cfg.levels
    for name in ("pivot_bars", "volume_window", "range_window", "min_separation"):
        check_period(lv[name], 1, f"levels.{name}")
    if not 1 <= lv["max_levels"] <= LEVELS_CAP:
        raise InvalidInputError(f"levels.max_levels={lv['max_levels']!r}: 1 to {LEVELS_CAP}")
    return 0


def _extra_specs(config, extras) -> tuple:
    """The extra features checked against ``config``: ``(name, kind, periods, output,
    source, timeframe)`` tuples of plain values, in the given order.

    ``extras`` holds objects with those attributes (l2fast.technical.names parses them
    from manifest names); the kernel checks every one itself, as it sizes its rings and
    indexes its tables from them.
    """
    try:
        items = list(extras)
    except TypeError:
        raise InvalidInputError(f"extras={extras!r}: expected a sequence of extra feature specs") from None
    fixed = set(_fixed_names(config))
    seen = set()
    out = []
    for i, spec in enumerate(items):
        try:
            name, kind, periods, output, source, tf = (
                spec.name, spec.kind, spec.periods, spec.output, spec.source, spec.timeframe)
        except AttributeError:
            raise InvalidInputError(f"extras[{i}]={spec!r}: expected name, kind, periods, output, source "
                                    "and timeframe attributes") from None
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"extras[{i}]: name={name!r}: expected a non-empty string")
        if name in fixed or name in seen:
            raise InvalidInputError(f"extra feature name={name!r}: already a "
                                    f"{'fixed' if name in fixed else 'given extra'} feature name")
        seen.add(name)
        where = f"extra feature {name!r}"
        if not isinstance(kind, str) or kind not in _KIND_CODES:
            raise InvalidInputError(f"{where}: kind={kind!r}: one of {', '.join(_KIND_CODES)}")
        _, _, outputs, n_periods, _ = _KIND_CODES[kind]
        if output not in outputs:
            raise InvalidInputError(f"{where}: output={output!r}: a {kind} gives {', '.join(outputs)}")
        if (not isinstance(periods, tuple) or len(periods) != n_periods
                or not all(type(p) is int and 1 <= p <= MAX_EXTRA_PERIOD for p in periods)):
            raise InvalidInputError(f"{where}: periods={periods!r}: a {kind} takes {n_periods} "
                                    f"integer period{'s' if n_periods > 1 else ''} from 1 to {MAX_EXTRA_PERIOD}")
        if (not isinstance(source, str) or source not in _SOURCE_CODES
                or (kind not in ("sma", "ema") and source != "close")):
            allowed = ", ".join(_SOURCE_CODES) if kind in ("sma", "ema") else "close (only sma and ema take another)"
            raise InvalidInputError(f"{where}: source={source!r}: {allowed}")
        if tf not in config.timeframes:
            raise InvalidInputError(f"{where}: timeframe={tf!r}: not configured {tuple(config.timeframes)}")
        out.append((name, kind, periods, output, source, tf))
    return tuple(out)


cdef int _extras_init(TFBlock* b, list specs) except -1:
    # ``specs``: (kind, periods, source, output, slot) of this block's extras. Outputs of
    # one (kind, periods, source) share a state; states in order of first use.
    cdef int k, j
    cdef ExtraState* x
    states = {}
    outs = []
    for kind, periods, source, output, slot in specs:
        k = states.setdefault((kind, periods, source), len(states))
        outs.append((k, output, slot))
    outs.sort()
    b.extras = <ExtraState*>calloc(len(states), sizeof(ExtraState))
    b.extra_outs = <ExtraOut*>calloc(len(outs), sizeof(ExtraOut))
    if b.extras == NULL or b.extra_outs == NULL:
        raise MemoryError()
    # Zeroed states are X_SMA with no ring: _block_free frees them all, whatever
    # allocation below fails.
    b.n_extras = len(states)
    for (kind, periods, source), k in states.items():
        x = &b.extras[k]
        x.source = source
        if kind == X_SMA:
            ss_sma_init(&x.u.sma, periods[0])
        elif kind == X_EMA:
            ss_ema_init(&x.u.ema, periods[0])
        elif kind == X_BOLL:
            ss_boll_init(&x.u.boll, periods[0])
        elif kind == X_MACD:
            ss_macd_init(&x.u.macd, periods[0], periods[1], periods[2])
        elif kind == X_RSI:
            ss_rsi_init(&x.u.rsi, periods[0])
        elif kind == X_ATR:
            ss_atr_init(&x.u.atr, periods[0])
        elif kind == X_DX:
            ss_dx_init(&x.u.dx, periods[0])
        else:
            ss_cci_init(&x.u.cci, periods[0])
        x.kind = kind  # once its ring exists: _block_free frees by kind
    for j, (k, output, slot) in enumerate(outs):
        b.extra_outs[j].state = k
        b.extra_outs[j].output = output
        b.extra_outs[j].slot = slot
    b.n_extra_outs = len(outs)
    return 0


cdef void _extras_free(TFBlock* b) noexcept nogil:
    cdef int k
    cdef ExtraState* x
    if b.extras != NULL:
        for k in range(b.n_extras):
            x = &b.extras[k]
            if x.kind == X_SMA:
                ss_sma_free(&x.u.sma)
            elif x.kind == X_BOLL:
                ss_boll_free(&x.u.boll)
            elif x.kind == X_CCI:
                ss_cci_free(&x.u.cci)
        free(b.extras)
        b.extras = NULL
    free(b.extra_outs)
    b.extra_outs = NULL
    b.n_extras = 0
    b.n_extra_outs = 0


cdef int _block_init(TFBlock* b, object cfg, double bar_minutes, Py_ssize_t offset,
                     list extras) except -1:
    cdef int i
    b.offset = offset
    b.bars = 0
    b.n_rsi = len(cfg.rsi_periods)
    for i in range(b.n_rsi):
        rsi_init(&b.rsi[i], cfg.rsi_periods[i])
    macd_init(&b.macd, cfg.macd[0], cfg.macd[1], cfg.macd[2])
    atr_init(&b.atr, cfg.atr_period)
    adx_init(&b.adx, cfg.adx_period)
    obv_init(&b.obv)
    candles_init(&b.candles)
    window_init(&b.closes, 6)
    bbands_init(&b.bb, cfg.bb_period, cfg.bb_std)
    stoch_init(&b.stoch, cfg.stoch[0], cfg.stoch[1], cfg.stoch[2])
    volz_init(&b.vol_z, cfg.volume_z_period)
    rvol_init(&b.rvol, cfg.realized_vol_period, bar_minutes)
    donchian_init(&b.donchian, cfg.donchian_period)
    lv = cfg.levels
    levels_init(&b.levels, lv["pivot_bars"], lv["merge_tol"], lv["half_life"],
                lv["min_strength"], lv["max_levels"], lv["volume_mult"], lv["volume_window"],
                lv["min_separation"], lv["min_depth"], lv["range_window"], lv["range_pct"])
    if extras:
        _extras_init(b, extras)
    return 0


cdef void _block_free(TFBlock* b) noexcept nogil:
    # Every free tolerates a never-initialised (zeroed) kernel.
    window_free(&b.closes)
    bbands_free(&b.bb)
    stoch_free(&b.stoch)
    volz_free(&b.vol_z)
    rvol_free(&b.rvol)
    donchian_free(&b.donchian)
    levels_free(&b.levels)
    _extras_free(b)


def _slot_warmups(config) -> dict:
    """Closed bars of its timeframe each fixed slot (by its S_* constant) needs before it is finite.

    Each kernel's NaN prefix is TA-Lib's lookback, so a slot is finite from bar
    ``lookback + 1`` on. Support/resistance slots count the bars until pivots, the volume
    mean and the range window are warmed up (``SupportResistance.ready``); a level may still
    be absent afterwards, which is NaN, not warm-up.
    """
    macd = config.macd[1] + config.macd[2] - 1
    stoch = config.stoch[0] + config.stoch[1] + config.stoch[2] - 2
    di = config.adx_period + 1
    lv = config.levels
    sr = max(2 * lv["pivot_bars"] + 1, lv["range_window"], lv["volume_window"] + 1)
    bb = config.bb_period
    don = config.donchian_period
    return {
        S_CLOSE: 1, S_RET_1: 2, S_RET_5: 6,
        S_MACD: macd, S_MACD_SIGNAL: macd, S_MACD_HIST: macd, S_MACD_HIST_PCT: macd,
        S_BB_UPPER: bb, S_BB_MIDDLE: bb, S_BB_LOWER: bb, S_BB_PCTB: bb, S_BB_WIDTH: bb,
        S_ATR: config.atr_period + 1, S_ATR_PCT: config.atr_period + 1,
        S_STOCH_K: stoch, S_STOCH_D: stoch,
        S_ADX: 2 * config.adx_period, S_PLUS_DI: di, S_MINUS_DI: di,
        S_OBV: 1, S_VOL_Z: config.volume_z_period, S_RVOL: config.realized_vol_period + 1,
        S_DONCHIAN_UPPER: don, S_DONCHIAN_LOWER: don, S_DONCHIAN_POS: don,
        S_SR_SUPPORT: sr, S_SR_RESISTANCE: sr, S_SR_DIST_SUPPORT: sr, S_SR_DIST_RESISTANCE: sr,
        S_SR_SUPPORT_STRENGTH: sr, S_SR_RESISTANCE_STRENGTH: sr, S_SR_BREAKOUT: sr,
        S_SR_DOUBLE_TOP: sr, S_SR_DOUBLE_BOTTOM: sr, S_SR_IN_RANGE: sr,
    }


def _block(config) -> list:
    """``(name, warm-up in closed bars)`` of one timeframe's block, in vector order."""
    params = {
        "atr": config.atr_period,
        "adx": config.adx_period,
        "vol_z": config.volume_z_period,
        "rvol": config.realized_vol_period,
        "donchian": config.donchian_period,
    }
    slots = _slot_warmups(config)
    block = [(name.format(**params), slots[slot]) for slot, name in enumerate(SLOT_NAMES)]
    block += [(f"rsi_{p}", p + 1) for p in config.rsi_periods]
    # Patterns are 0, not NaN, during their lookback: they count until all have left it.
    block += [(f"cdl_{name[3:].lower()}", candles_warmup()) for name in CANDLESTICK_PATTERNS]
    return block


def _fixed_names(config) -> list:
    block = _block(config)
    return [f"{name}_{tf}" for tf in config.timeframes for name, _ in block]


def feature_names(config, extras=()) -> tuple:
    """The feature names of a :class:`~l2fast.config.TechnicalConfig`, in vector order: the
    fixed block of every timeframe, then the ``extras``' names in the given order."""
    return tuple(_fixed_names(config)) + tuple(spec[0] for spec in _extra_specs(config, extras))


def feature_warmups(config, extras=()) -> dict:
    """1-minute bars each feature of ``config`` (and of ``extras``) needs before it is warmed up, by name.

    A feature that needs ``k`` closed bars of an ``m``-minute timeframe needs
    ``(k + 1) * m - 1`` one-minute bars: buckets are UTC-aligned and a stream's first,
    partial bucket closes as a bar of its own, so from any start that many minutes give
    ``k`` bars after a partial one (or ``k`` whole bars from a bucket's first minute). The
    feature is then finite and its windows hold whole bars only. ``k`` is the indicator's
    lookback + 1 (e.g. ``rsi_14``: 15, MACD ``(12, 26, 9)``: 34, ``adx_14``: 28); candlestick
    patterns count until every pattern has left TA-Lib's lookback, ``sr_*`` features until
    the support/resistance detector is warmed up. An extra feature's ``k`` is its
    standalone class's ``warmup`` (e.g. ``StockstatsRSI(30).warmup``, 31): stockstats gives
    values from the first bar, and these count until its windows are whole.

    Returns:
        ``{name: bars}`` for every name of :func:`feature_names`, e.g. ``rsi_14_5m``: 79.
    """
    block = _block(config)
    minutes = dict(zip(config.timeframes, config.timeframe_minutes))
    warm = {f"{name}_{tf}": (bars + 1) * minutes[tf] - 1 for tf in config.timeframes for name, bars in block}
    for name, kind, periods, _, _, tf in _extra_specs(config, extras):
        warm[name] = (_KIND_CODES[kind][4](*periods).warmup + 1) * minutes[tf] - 1
    return warm


cdef class TechnicalState:
    """Every timeframe, indicator, pattern and level, updated by one call per 1m bar.

    Args:
        config: A :class:`~l2fast.config.TechnicalConfig` (:class:`l2fast.technical.state.
            TechnicalState`, the public class, defaults it).
        extras: Extra features (stockstats-compatible kernels on a configured timeframe):
            objects with ``name``, ``kind`` (one of :data:`EXTRA_KINDS`), ``periods``,
            ``output``, ``source`` and ``timeframe``; outputs of the same kind, periods,
            source and timeframe share one kernel. Their values follow the fixed vector, in
            the given order, each updated when its timeframe's bar closes.

    Attributes:
        names: Feature names, in vector order (e.g. ``"rsi_14_1m"``), the extras' last.
        index: Mapping of feature name to its position in :attr:`values`.
        values: Read-only float64 view of the feature vector, updated in place.
        timeframes: The configured timeframes; the first is ``"1m"``.
        config: The configuration used.
        extras: The extra features as ``(name, kind, periods, output, source, timeframe)``.
    """

    def __cinit__(self, config=None, extras=()):
        cdef int i
        cdef Py_ssize_t block_size, n_fixed
        # The kernel imports no Python layer: l2fast.technical.state.TechnicalState gives
        # the default config and checks its type; here any object with its fields will do.
        if config is None or not hasattr(config, "timeframe_minutes"):
            raise InvalidInputError(f"config={config!r}: expected a TechnicalConfig")
        minutes = config.timeframe_minutes
        _check_capacity(config)
        self.config = config
        self.timeframes = tuple(config.timeframes)
        self.extras = _extra_specs(config, extras)
        fixed = _fixed_names(config)
        n_fixed = len(fixed)
        self.names = tuple(fixed) + tuple(spec[0] for spec in self.extras)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._buffer = np.full(len(self.names), np.nan)
        self._out = <double*>cnp.PyArray_DATA(self._buffer)
        self.values = self._buffer.view()
        self.values.flags.writeable = False
        self._n_tf = len(minutes)
        block_size = n_fixed // self._n_tf
        per_block = [[] for _ in range(self._n_tf)]
        for slot, (_, kind, periods, output, source, tf) in enumerate(self.extras, n_fixed):
            row = _KIND_CODES[kind]
            per_block[self.timeframes.index(tf)].append(
                (row[0], periods, _SOURCE_CODES[source], row[2].index(output), slot))
        self._blocks = <TFBlock*>calloc(self._n_tf, sizeof(TFBlock))
        if self._blocks == NULL:
            raise MemoryError()
        for i in range(self._n_tf):
            _block_init(&self._blocks[i], config, minutes[i], i * block_size, per_block[i])
            tf_init(&self._aggs[i], minutes[i] * 60_000)
        bar_guard_init(&self._guard)

    def __dealloc__(self):
        cdef int i
        if self._blocks != NULL:
            for i in range(self._n_tf):
                _block_free(&self._blocks[i])
            free(self._blocks)

    cdef int _step(self, long long ts, double o, double h, double l, double c,
                          double v) noexcept nogil:
        cdef int i, j, k
        cdef int updated = 1
        cdef OHLCV* bar
        bar_commit(&self._guard, ts)
        block_step(&self._blocks[0], o, h, l, c, v, self._out)
        for i in range(1, self._n_tf):
            k = tf_step(&self._aggs[i], ts, o, h, l, c, v)
            for j in range(k):
                bar = &self._aggs[i].closed[j]
                block_step(&self._blocks[i], bar.open, bar.high, bar.low, bar.close,
                           bar.volume, self._out)
            if k:
                updated |= 1 << i
        return updated

    cpdef int update(self, long long ts, double open, double high, double low, double close,
                     double volume) except -1:
        """Consume one closed 1-minute bar.

        Args:
            ts: Bar open time, epoch ms UTC, on the minute grid, after the previous bar.
            open, high, low, close, volume: The bar (validated; see :mod:`l2fast.technical.bars`).

        Returns:
            A bit mask of the timeframes whose features changed (bit i = ``timeframes[i]``;
            bit 0, the 1m timeframe, is always set).

        Raises:
            InvalidBarError: The bar is invalid; the state is left exactly as it was.
        """
        bar_check(&self._guard, ts, open, high, low, close, volume)
        return self._step(ts, open, high, low, close, volume)

    def update_many(self, ts, open, high, low, close, volume, record=None):
        """Consume a series of 1-minute bars.

        The whole series is validated first: on an invalid bar nothing is consumed and
        :class:`~l2fast.errors.InvalidBarError` names its row.

        Args:
            ts: Bar open times (int64 epoch ms).
            open, high, low, close, volume: float64 arrays of the same length.
            record: Optional feature names to record after every bar.

        Returns:
            None, or with ``record`` a float64 array ``[n_bars, len(record)]``.
        """
        cdef const long long[::1] t = np.ascontiguousarray(ts, dtype=np.int64)
        cdef const double[::1] o = as_input(open, "open")
        cdef const double[::1] h = as_input(high, "high")
        cdef const double[::1] l = as_input(low, "low")
        cdef const double[::1] c = as_input(close, "close")
        cdef const double[::1] v = as_input(volume, "volume")
        cdef Py_ssize_t n = t.shape[0], i, j, k
        cdef BarGuard probe = self._guard
        for name, arr in (("open", o), ("high", h), ("low", l), ("close", c), ("volume", v)):
            check_same_length(n, arr.shape[0], name)
        for i in range(n):
            if bar_fault(&probe, t[i], o[i], h[i], l[i], c[i], v[i]) != BAR_OK:
                try:
                    bar_check(&probe, t[i], o[i], h[i], l[i], c[i], v[i])
                except InvalidBarError as exc:
                    raise type(exc)(exc.field, exc.value, f"row {i}: {exc.reason}") from None
            bar_commit(&probe, t[i])
        if record is None:
            with nogil:
                for i in range(n):
                    self._step(t[i], o[i], h[i], l[i], c[i], v[i])
            return None
        cols = np.array([self._column(name) for name in record], dtype=np.intp)
        cdef const Py_ssize_t[::1] idx = cols
        k = idx.shape[0]
        result = np.empty((n, k), dtype=np.float64)
        cdef double[:, ::1] rec = result
        with nogil:
            for i in range(n):
                self._step(t[i], o[i], h[i], l[i], c[i], v[i])
                for j in range(k):
                    rec[i, j] = self._out[idx[j]]
        return result

    def _column(self, name) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise InvalidInputError(f"feature {name!r}: unknown (e.g. {', '.join(self.names[:4])}, ...)") from None

    def get(self, name) -> float:
        """The current value of one feature by name."""
        return self._out[self._column(name)]

    def as_dict(self) -> dict:
        """All current feature values keyed by name."""
        return dict(zip(self.names, self._buffer.tolist()))

    @property
    def bars(self) -> int:
        """Number of 1-minute bars consumed."""
        return self._blocks[0].bars

    @property
    def gaps(self) -> int:
        """Number of gaps (runs of missing minutes) seen in the 1m stream."""
        return self._guard.gaps

    @property
    def missing_bars(self) -> int:
        """Total number of missing 1-minute bars inside those gaps."""
        return self._guard.missing

    def timeframe_bars(self, tf) -> int:
        """Closed bars consumed so far on timeframe ``tf`` (e.g. ``"1h"``)."""
        try:
            return self._blocks[self.timeframes.index(tf)].bars
        except ValueError:
            raise InvalidInputError(f"timeframe {tf!r}: not configured {self.timeframes}") from None

    def format_table(self) -> str:
        """The latest features as a text table: one row per feature, one column per timeframe,
        then one row per extra feature."""
        n_fixed = len(self.names) - len(self.extras)
        width = n_fixed // self._n_tf
        base = [name[: -len(self.timeframes[0]) - 1] for name in self.names[:width]]
        lines = [f"{'feature':<26}" + "".join(f"{tf:>14}" for tf in self.timeframes)]
        for row, name in enumerate(base):
            cells = []
            for col in range(self._n_tf):
                value = self._out[col * width + row]
                cells.append(f"{value:>14.6g}")
            lines.append(f"{name:<26}" + "".join(cells))
        for slot, (name, *_) in enumerate(self.extras, n_fixed):
            lines.append(f"{name:<26}{self._out[slot]:>14.6g}")
        return "\n".join(lines)

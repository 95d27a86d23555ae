"""Single indicators: streaming ``update`` from Python and ``update_many`` over 1.3M bars.

Streaming: each indicator is warmed on ``WARM`` real bars, then every round feeds the next
``CALLS`` consecutive real bars through ``update`` (TA-Lib: a ``talib.stream`` handle's
``update``; talipp: ``add``). The calls are driven by ``map`` so the harness adds ~10 ns
per call, the same for every implementation; a single ~30 ns call is below what one
timer reading per call can resolve. Times are reported per call.

Batch: a fresh indicator's ``update_many`` over the full BTC 1m series against the TA-Lib
function computing the same output.

Gates (alternative median / l2fast median) sit at roughly half the ratio measured on the
2-core development machine; ``target`` is the aspirational ratio, ``ours_target_s`` the
aspirational absolute time per call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import pytest

from l2fast.technical import indicators as technical

talib = pytest.importorskip("talib")
talib_stream = pytest.importorskip("talib.stream")
talipp_ind = pytest.importorskip("talipp.indicators")
talipp_ohlcv = pytest.importorskip("talipp.ohlcv")

WARM = 5_000
CALLS = 1_000
UPDATE_TARGET_S = 100e-9

_sink = deque(maxlen=0).extend  # consumes an iterator in C, keeping nothing


# --------------------------------------------------------------------------- streaming
# indicator: (inputs, l2fast factory, talib.stream opener on history, talipp factory, gates)
# inputs "c" = close only, "hlc" = high/low/close; gates: {alternative: lowest alt/ours ratio}.
# The aspiration here is absolute (UPDATE_TARGET_S per call), so no ratio target is set.
# RSI's and EMA's gates sit lower than the others: ours stays at ~30-50 ns while the
# alternatives' times moved by 1.7x between runs on the same machine (talib.stream 98-165
# ns): RSI 1.9-3.2x, EMA 2.25-3.7x.
UPDATE_CASES: dict[str, tuple] = {
    "RSI14": (
        "c",
        lambda: technical.RSI(14),
        lambda h, l, c: talib_stream.RSI(c, timeperiod=14),
        lambda: talipp_ind.RSI(14),
        {"talib.stream": 1.5, "talipp": 15.0},
    ),
    "EMA20": (
        "c",
        lambda: technical.EMA(20),
        lambda h, l, c: talib_stream.EMA(c, timeperiod=20),
        lambda: talipp_ind.EMA(20),
        {"talib.stream": 1.5, "talipp": 13.0},
    ),
    "MACD12/26/9": (
        "c",
        lambda: technical.MACD(12, 26, 9),
        lambda h, l, c: talib_stream.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9),
        lambda: talipp_ind.MACD(12, 26, 9),
        {"talib.stream": 1.2, "talipp": 25.0},
    ),
    "BB20/2": (
        "c",
        lambda: technical.BollingerBands(20, 2.0),
        lambda h, l, c: talib_stream.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0),
        lambda: talipp_ind.BB(20, 2.0),
        {"talib.stream": 1.2, "talipp": 30.0},
    ),
    "ATR14": (
        "hlc",
        lambda: technical.ATR(14),
        lambda h, l, c: talib_stream.ATR(h, l, c, timeperiod=14),
        lambda: talipp_ind.ATR(14),
        {"talib.stream": 1.9, "talipp": 11.0},
    ),
}
UPDATE_ROUNDS = {"l2fast": 300, "talib.stream": 300, "talipp": 30}
UPDATE_WARMUP_ROUNDS = 3


@pytest.mark.parametrize("impl", ["l2fast", "talib.stream", "talipp"])
@pytest.mark.parametrize("indicator", list(UPDATE_CASES))
def test_update_one_bar(bench, btc_1m, indicator: str, impl: str) -> None:
    inputs, make_ours, open_talib, make_talipp, gates = UPDATE_CASES[indicator]
    rounds = UPDATE_ROUNDS[impl]
    end = WARM + (rounds + UPDATE_WARMUP_ROUNDS) * CALLS
    o, h, l, c = (btc_1m[k][:end] for k in ("open", "high", "low", "close"))

    if impl == "l2fast":
        ind = make_ours()
        if inputs == "c":
            ind.update_many(c[:WARM])
        else:
            ind.update_many(h[:WARM], l[:WARM], c[:WARM])
        step = ind.update
    elif impl == "talib.stream":
        step = open_talib(h[:WARM], l[:WARM], c[:WARM]).update
    else:
        ind = make_talipp()
        step = ind.add
    if impl == "talipp" and inputs == "hlc":
        # talipp takes OHLCV objects; building them is left out of the timing.
        bars = [talipp_ohlcv.OHLCV(*row, 0.0) for row in zip(o.tolist(), h.tolist(), l.tolist(), c.tolist())]
        columns: list[list] = [bars]
    else:
        columns = [c.tolist()] if inputs == "c" else [h.tolist(), l.tolist(), c.tolist()]
    if impl == "talipp":
        _sink(map(step, *(col[:WARM] for col in columns)))

    starts = iter(range(WARM, end, CALLS))

    def next_block() -> tuple[tuple, dict]:
        i = next(starts)
        return (map(step, *(col[i : i + CALLS] for col in columns)),), {}

    if impl == "l2fast":
        b = bench(f"update {indicator}", impl, calls=CALLS, ours_target_s=UPDATE_TARGET_S)
    else:
        b = bench(f"update {indicator}", impl, calls=CALLS, gate=gates[impl])
    b.pedantic(_sink, setup=next_block, rounds=rounds, warmup_rounds=UPDATE_WARMUP_ROUNDS)


# --------------------------------------------------------------------------- batch
def _cdl_talib(b: dict[str, np.ndarray]) -> list[np.ndarray]:
    o, h, l, c = b["open"], b["high"], b["low"], b["close"]
    return [getattr(talib, name)(o, h, l, c) for name in technical.CANDLESTICK_PATTERNS]


def _cdl_ours_function(b: dict[str, np.ndarray]) -> list[np.ndarray]:
    o, h, l, c = b["open"], b["high"], b["low"], b["close"]
    fn = technical.candlestick
    return [fn(name, o, h, l, c) for name in technical.CANDLESTICK_PATTERNS]


# name: (l2fast run, TA-Lib run, gate, target). TA-Lib's call computes the same outputs
# (ADX: ours returns ADX, +DI and -DI together; TA-Lib is timed for ADX alone).
BATCH_CASES: dict[str, tuple[Callable, Callable, float, float]] = {
    "SMA20": (
        lambda b: technical.SMA(20).update_many(b["close"]),
        lambda b: talib.SMA(b["close"], 20),
        0.35,
        1 / 1.5,
    ),
    "EMA20": (
        lambda b: technical.EMA(20).update_many(b["close"]),
        lambda b: talib.EMA(b["close"], 20),
        0.45,
        1 / 1.5,
    ),
    "RSI14": (
        lambda b: technical.RSI(14).update_many(b["close"]),
        lambda b: talib.RSI(b["close"], 14),
        0.45,
        1 / 1.5,
    ),
    "MACD12/26/9": (
        lambda b: technical.MACD(12, 26, 9).update_many(b["close"]),
        lambda b: talib.MACD(b["close"], 12, 26, 9),
        0.28,
        1 / 1.5,
    ),
    "BBANDS20/2": (
        lambda b: technical.BollingerBands(20, 2.0).update_many(b["close"]),
        lambda b: talib.BBANDS(b["close"], 20, 2.0, 2.0, 0),
        0.45,
        1 / 1.5,
    ),
    "ATR14": (
        lambda b: technical.ATR(14).update_many(b["high"], b["low"], b["close"]),
        lambda b: talib.ATR(b["high"], b["low"], b["close"], 14),
        0.25,
        1 / 1.5,
    ),
    "DONCHIAN20": (
        lambda b: technical.Donchian(20).update_many(b["high"], b["low"]),
        lambda b: (talib.MAX(b["high"], 20), talib.MIN(b["low"], 20)),
        0.3,
        1 / 1.5,
    ),
    "STOCH14/3/3": (
        lambda b: technical.Stochastic(14, 3, 3).update_many(b["high"], b["low"], b["close"]),
        lambda b: talib.STOCH(b["high"], b["low"], b["close"], 14, 3, 0, 3, 0),
        0.45,
        1 / 1.5,
    ),
    "ADX14": (
        lambda b: technical.ADX(14).update_many(b["high"], b["low"], b["close"]),
        lambda b: talib.ADX(b["high"], b["low"], b["close"], 14),
        0.35,
        1 / 1.5,
    ),
    "OBV": (
        lambda b: technical.OBV().update_many(b["close"], b["volume"]),
        lambda b: talib.OBV(b["close"], b["volume"]),
        0.35,
        1 / 1.5,
    ),
    "CORREL30(close,volume)": (
        lambda b: technical.RollingCorrelation(30).update_many(b["close"], b["volume"]),
        lambda b: talib.CORREL(b["close"], b["volume"], 30),
        0.35,
        1 / 1.5,
    ),
    "CDL x20 (CandlestickDetector)": (
        lambda b: technical.CandlestickDetector().update_many(b["open"], b["high"], b["low"], b["close"]),
        _cdl_talib,
        1.0,
        1 / 1.5,
    ),
    "CDL x20 (candlestick())": (_cdl_ours_function, _cdl_talib, 0.35, 1 / 1.5),
}
BATCH_ROUNDS = 10


@pytest.mark.parametrize("impl", ["l2fast", "talib"])
@pytest.mark.parametrize("indicator", list(BATCH_CASES))
def test_update_many_full_btc(bench, btc_1m, indicator: str, impl: str) -> None:
    run_ours, run_talib, gate, target = BATCH_CASES[indicator]
    group = f"batch {indicator}"
    if impl == "l2fast":
        b, fn = bench(group, impl), run_ours
    else:
        b, fn = bench(group, "talib", gate=gate, target=target), run_talib
    b.pedantic(fn, args=(btc_1m,), rounds=BATCH_ROUNDS, warmup_rounds=1)

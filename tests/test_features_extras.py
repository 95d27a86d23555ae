"""Extra features of TechnicalState (features on demand): the stockstats-compatible family
on any configured timeframe, after the fixed vector. Each equals stockstats 0.6.10 on that
timeframe's bars (the 1h bars rolled up with pandas as the state's own aggregation does,
the first partial hour a bar of its own), the fixed features do not move, bad specs are
refused naming the field, and the state's snapshot carries the extras bit for bit and
refuses other extras or forged buffers.

Tolerance as tests/test_stockstats.py: relative 1e-9 plus 1e-9 times the output's scale
(the mean |close| for price-unit outputs, the mean volume for the volume SMA, 100 for the
oscillators).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pytest

from l2fast.config import TechnicalConfig
from l2fast.engine._snapshot import load_technical_state, technical_state_bytes
from l2fast.errors import InvalidInputError, SnapshotError
from l2fast.technical.indicators import (
    StockstatsATR,
    StockstatsBollingerBands,
    StockstatsCCI,
    StockstatsDX,
    StockstatsEMA,
    StockstatsMACD,
    StockstatsRSI,
    StockstatsSMA,
)
from l2fast.technical.state import TechnicalState, feature_names, feature_warmups

pd = pytest.importorskip("pandas")
stockstats = pytest.importorskip("stockstats")

COLUMNS = ("ts", "open", "high", "low", "close", "volume")
OSC = 100.0


@dataclass(frozen=True)
class Extra:
    """A parsed extra feature, as l2fast.technical.names hands it to the state."""

    name: str
    kind: str
    periods: tuple[int, ...]
    output: str
    source: str = "close"
    timeframe: str = "1m"


# (stockstats column, kind, periods, output, source): FinRL's indicators and more.
SPECS = [
    ("rsi_30", "rsi", (30,), "value", "close"),
    ("cci_30", "cci", (30,), "value", "close"),
    ("dx_30", "dx", (30,), "dx", "close"),
    ("pdi_30", "dx", (30,), "pdi", "close"),
    ("ndi_30", "dx", (30,), "ndi", "close"),
    ("close_30_sma", "sma", (30,), "value", "close"),
    ("close_60_sma", "sma", (60,), "value", "close"),
    ("close_12_ema", "ema", (12,), "value", "close"),
    ("volume_20_sma", "sma", (20,), "value", "volume"),
    ("high_5_ema", "ema", (5,), "value", "high"),
    ("boll", "boll", (20,), "mid", "close"),
    ("boll_ub", "boll", (20,), "ub", "close"),
    ("boll_lb", "boll", (20,), "lb", "close"),
    ("macd", "macd", (12, 26, 9), "macd", "close"),
    ("macds", "macd", (12, 26, 9), "macds", "close"),
    ("macdh", "macd", (12, 26, 9), "macdh", "close"),
    ("atr_14", "atr", (14,), "value", "close"),
]
PRICE_SCALED = {"close_30_sma", "close_60_sma", "close_12_ema", "high_5_ema", "boll", "boll_ub", "boll_lb",
                "macd", "macds", "macdh", "atr_14"}


def extras_for(timeframes: tuple[str, ...]) -> list[Extra]:
    return [Extra(f"ss:{col}_{tf}", kind, periods, output, source, tf)
            for tf in timeframes for col, kind, periods, output, source in SPECS]


EXTRAS = extras_for(("1m", "1h"))


def stockstats_columns(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    df = pd.DataFrame({k: bars[k] for k in ("open", "high", "low", "close", "volume")})
    sdf = stockstats.StockDataFrame.retype(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {col: sdf[col].to_numpy(dtype=np.float64) for col, *_ in SPECS}


def hourly(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """UTC hours, left-closed and left-labelled, empty hours dropped (the first partial hour is a bar)."""
    df = pd.DataFrame({k: bars[k] for k in COLUMNS[1:]}, index=pd.to_datetime(bars["ts"], unit="ms"))
    h = df.resample("1h", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    return {k: h[k].to_numpy(dtype=np.float64) for k in COLUMNS[1:]}


def scale(col: str, bars: dict[str, np.ndarray]) -> float:
    if col == "volume_20_sma":
        return float(np.mean(bars["volume"]))
    return float(np.mean(np.abs(bars["close"]))) if col in PRICE_SCALED else OSC


def assert_close(ours: np.ndarray, theirs: np.ndarray, tol_scale: float, what: str) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=what)
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-9, atol=1e-9 * tol_scale, err_msg=what)


def feed(state: TechnicalState, bars: dict[str, np.ndarray], start: int = 0, stop: int | None = None) -> None:
    sl = slice(start, stop)
    state.update_many(*(bars[k][sl] for k in COLUMNS))


@pytest.fixture(scope="module")
def streamed(btc_1m_head):
    """The 20k bars streamed one call at a time: the 1m extras after every bar, the 1h
    extras (and the state's 1h close) after every closed hour, by the hour's index."""
    bars = btc_1m_head
    state = TechnicalState(None, EXTRAS)
    cols_1m = [state.index[e.name] for e in EXTRAS if e.timeframe == "1m"]
    cols_1h = [state.index[e.name] for e in EXTRAS if e.timeframe == "1h"] + [state.index["close_1h"]]
    rows_1m, rows_1h = [], {}
    for i in range(len(bars["ts"])):
        before = state.timeframe_bars("1h")
        state.update(int(bars["ts"][i]), *(float(bars[k][i]) for k in COLUMNS[1:]))
        rows_1m.append(state.values[cols_1m].copy())
        if state.timeframe_bars("1h") > before:
            rows_1h[state.timeframe_bars("1h") - 1] = state.values[cols_1h].copy()
    return state, np.array(rows_1m), rows_1h


def test_1m_extras_equal_stockstats_from_the_first_bar(streamed, btc_1m_head):
    _, rows, _ = streamed
    theirs = stockstats_columns(btc_1m_head)
    for j, (col, *_) in enumerate(SPECS):
        assert_close(rows[:, j], theirs[col], scale(col, btc_1m_head), col)


def test_1h_extras_equal_stockstats_on_the_hourly_bars_the_state_closes(streamed, btc_1m_head):
    state, _, rows = streamed
    h = hourly(btc_1m_head)
    n = state.timeframe_bars("1h")
    assert n == len(h["close"]) - 1  # the last hour is still forming
    h = {k: v[:n] for k, v in h.items()}
    index = np.array(sorted(rows))
    got = np.array([rows[k] for k in index])
    assert len(index) > 0.99 * n
    # The state's own aggregation is pandas' roll-up.
    np.testing.assert_array_equal(got[:, -1], h["close"][index])
    theirs = stockstats_columns(h)
    for j, (col, *_) in enumerate(SPECS):
        assert_close(got[:, j], theirs[col][index], scale(col, h), f"{col}_1h")


def test_extras_leave_the_fixed_features_bit_for_bit(btc_1m_head):
    plain, extra = TechnicalState(), TechnicalState(None, EXTRAS)
    fixed = list(plain.names)
    assert extra.names[: len(fixed)] == plain.names and extra.names[len(fixed):] == tuple(e.name for e in EXTRAS)
    assert [extra.index[e.name] for e in EXTRAS] == list(range(len(fixed), len(fixed) + len(EXTRAS)))
    n = 6_000
    a = plain.update_many(*(btc_1m_head[k][:n] for k in COLUMNS), record=fixed)
    b = extra.update_many(*(btc_1m_head[k][:n] for k in COLUMNS), record=fixed)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain.values, extra.values[: len(fixed)])
    assert feature_names(TechnicalConfig(), EXTRAS) == extra.names
    assert "ss:boll_ub_1h" in extra.as_dict() and extra.get("ss:rsi_30_1m") == extra.values[-len(EXTRAS)]
    assert "ss:macdh_1h" in extra.format_table()


def test_outputs_of_one_indicator_share_one_state_and_order_is_the_given_one(btc_1m_head):
    # The bands given alone, reordered or with the middle band: same values.
    alone = [Extra("lb", "boll", (20,), "lb"), Extra("ub", "boll", (20,), "ub")]
    state = TechnicalState(None, alone)
    full = TechnicalState(None, [Extra("m", "boll", (20,), "mid"), *reversed(alone)])
    feed(state, btc_1m_head, 0, 500)
    feed(full, btc_1m_head, 0, 500)
    assert state.names[-2:] == ("lb", "ub")
    assert state.get("lb") == full.get("lb") and state.get("ub") == full.get("ub")
    assert state.get("lb") < full.get("m") < state.get("ub")


def test_warmups_of_the_extras_are_the_standalone_classes_in_closed_bars_of_their_timeframe():
    cfg = TechnicalConfig()
    warm = feature_warmups(cfg, EXTRAS)
    assert list(warm) == list(feature_names(cfg, EXTRAS))
    assert {k: v for k, v in warm.items() if not k.startswith("ss:")} == feature_warmups(cfg)
    classes = {"rsi": StockstatsRSI, "cci": StockstatsCCI, "dx": StockstatsDX, "sma": StockstatsSMA,
               "ema": StockstatsEMA, "boll": StockstatsBollingerBands, "macd": StockstatsMACD,
               "atr": StockstatsATR}
    for e in EXTRAS:
        k = classes[e.kind](*e.periods).warmup
        m = {"1m": 1, "1h": 60}[e.timeframe]
        assert warm[e.name] == (k + 1) * m - 1, e.name
    assert warm["ss:rsi_30_1h"] == 32 * 60 - 1 and warm["ss:macd_1m"] == 34


@pytest.mark.parametrize("changes, match", [
    ({"kind": "kama"}, "kind='kama'"),
    ({"kind": 3}, "kind=3"),
    ({"output": "ub"}, "output='ub'"),
    ({"kind": "macd", "periods": (12, 26, 9), "output": "value"}, "output='value'"),
    ({"timeframe": "4h"}, "timeframe='4h'"),
    ({"periods": (0,)}, r"periods=\(0,\)"),
    ({"periods": (30, 2)}, r"periods=\(30, 2\)"),
    ({"periods": ()}, r"periods=\(\)"),
    ({"periods": (2.5,)}, r"periods=\(2.5,\)"),
    ({"periods": (True,)}, r"periods=\(True,\)"),
    ({"periods": (10**7,)}, "periods="),
    ({"kind": "macd", "periods": (12, 26), "output": "macd"}, r"periods=\(12, 26\)"),
    ({"source": "vwap"}, "source='vwap'"),
    ({"source": ["close"]}, r"source=\['close'\]"),
    ({"source": "volume"}, "source='volume'"),  # an RSI reads the close only
    ({"name": ""}, "name=''"),
    ({"name": "rsi_14_1m"}, "name='rsi_14_1m'"),  # a fixed feature's name
])
def test_bad_extras_are_refused_naming_the_field_and_value(changes, match):
    bad = replace(Extra("ss:rsi_30_1m", "rsi", (30,), "value"), **changes)
    for call in (lambda: TechnicalState(None, [bad]), lambda: feature_names(TechnicalConfig(), [bad]),
                 lambda: feature_warmups(TechnicalConfig(), [bad])):
        with pytest.raises(InvalidInputError, match=match):
            call()


def test_duplicate_extra_names_are_refused():
    twice = [Extra("x", "rsi", (30,), "value"), Extra("x", "cci", (30,), "value")]
    with pytest.raises(InvalidInputError, match="name='x'"):
        TechnicalState(None, twice)
    with pytest.raises(InvalidInputError, match="extras"):
        TechnicalState(None, [object()])


def test_snapshot_of_a_state_with_extras_continues_bit_for_bit(btc_1m_head):
    ref, state = TechnicalState(None, EXTRAS), TechnicalState(None, EXTRAS)
    feed(ref, btc_1m_head, 0, 10_000)
    feed(state, btc_1m_head, 0, 10_000)
    data = technical_state_bytes(state)
    restored = TechnicalState(None, EXTRAS)
    load_technical_state(restored, data)
    assert technical_state_bytes(restored) == data
    np.testing.assert_array_equal(restored.values, state.values)
    feed(ref, btc_1m_head, 10_000, None)
    feed(restored, btc_1m_head, 10_000, None)
    np.testing.assert_array_equal(restored.values, ref.values)
    assert technical_state_bytes(restored) == technical_state_bytes(ref)


@pytest.mark.parametrize("other", [
    (),
    EXTRAS[:-1],
    [replace(e, periods=(31,)) if e.name == "ss:rsi_30_1m" else e for e in EXTRAS],
    [replace(e, name=e.name + "x") if e.name == "ss:cci_30_1h" else e for e in EXTRAS],
])
def test_a_snapshot_with_other_extras_is_refused_and_leaves_the_state(other, btc_1m_head):
    state = TechnicalState(None, EXTRAS)
    feed(state, btc_1m_head, 0, 300)
    target = TechnicalState(None, other)
    feed(target, btc_1m_head, 0, 100)
    before = technical_state_bytes(target)
    with pytest.raises(SnapshotError, match="extra features"):
        load_technical_state(target, technical_state_bytes(state))
    assert technical_state_bytes(target) == before
    # And the other way round: a default state's snapshot does not load into one with extras.
    if not other:
        with pytest.raises(SnapshotError, match="extra features"):
            load_technical_state(state, before)


def _window_at(data: bytes, size: int, n: int) -> int:
    """Offset of the one saved Window (buf NULL, size, head, n) of a ring of ``size`` after ``n`` pushes."""
    pattern = struct.pack("<qqqq", 0, size, n % (size + 1), n)
    at = data.find(pattern)
    assert at >= 0 and data.find(pattern, at + 1) < 0
    return at


@pytest.mark.parametrize("kind, output", [("sma", "value"), ("boll", "ub"), ("cci", "value")])
def test_forged_extra_buffers_are_refused(kind, output, btc_1m_head):
    # An odd period no fixed kernel uses, so that its ring is found by its bytes.
    spec = [Extra("x", kind, (37,), output)]
    state = TechnicalState(None, spec)
    feed(state, btc_1m_head, 0, 100)
    data = technical_state_bytes(state)
    at = _window_at(data, 37, 100)
    for offset, value, why in ((8, 1_000, "buffer sizes differ"), (16, 39, "ring position"),
                               (16, -1, "ring position"), (24, -5, "negative count")):
        forged = bytearray(data)
        struct.pack_into("<q", forged, at + offset, value)
        fresh = TechnicalState(None, spec)
        with pytest.raises(SnapshotError, match=why):
            load_technical_state(fresh, bytes(forged))
        assert fresh.bars == 0


def test_forged_extra_parameters_and_kinds_are_refused(btc_1m_head):
    spec = [Extra("r", "rsi", (37,), "value"), Extra("e", "ema", (41,), "value", "high")]
    state = TechnicalState(None, spec)
    feed(state, btc_1m_head, 0, 100)
    data = technical_state_bytes(state)
    decay = struct.pack("<d", 1.0 - 1.0 / 37)
    at = data.find(decay)
    assert at >= 0
    forged = bytearray(data)
    struct.pack_into("<d", forged, at, 0.5)
    with pytest.raises(SnapshotError, match="period"):
        load_technical_state(TechnicalState(None, spec), bytes(forged))


CHILD = r"""
import random, struct, sys
import numpy as np
from dataclasses import dataclass
from l2fast.engine._snapshot import load_technical_state, technical_state_bytes
from l2fast.errors import SnapshotError
from l2fast.evaluation.synthetic import generate_bars
from l2fast.technical.state import TechnicalState

@dataclass(frozen=True)
class Extra:
    name: str
    kind: str
    periods: tuple
    output: str
    source: str = "close"
    timeframe: str = "1m"

SPECS = [Extra(f"x:{k}_{tf}", k, p, o, "close", tf) for tf in ("1m", "5m") for k, p, o in (
    ("sma", (7,), "value"), ("ema", (5,), "value"), ("boll", (9,), "ub"), ("macd", (3, 7, 4), "macdh"),
    ("rsi", (6,), "value"), ("atr", (4,), "value"), ("dx", (5,), "ndi"), ("cci", (8,), "value"))]
bars = generate_bars(400, seed=5)
cols = [bars[k] for k in ("ts", "open", "high", "low", "close", "volume")]
state = TechnicalState(None, SPECS)
state.update_many(*(c[:300] for c in cols))
data = technical_state_bytes(state)
rng = random.Random(int(sys.argv[1]))
ints = [k for k in range(0, len(data) - 7, 8) if -1 <= struct.unpack_from("<q", data, k)[0] < 1 << 20]
# The extras' states: around their rings (buf NULL, size, head, n) and their averages' decays.
marks = [data.find(struct.pack("<qq", 0, size)) for size in (7, 9, 8)]
marks += [data.find(struct.pack("<d", d)) for d in (1 - 2 / 6, 1 - 1 / 6, 1 - 1 / 4, 1 - 1 / 5)]
assert min(marks) >= 0, marks
hot = sorted({k for m in marks for k in range(m - m % 8 - 64, m - m % 8 + 200, 8) if 0 <= k < len(data) - 7})
loaded = 0
for variant in range(int(sys.argv[2])):
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        k = rng.choice(hot if rng.random() < 0.8 else ints)
        v = struct.unpack_from("<q", b, k)[0]
        w = rng.choice((-1, -2, 0, 1, 8, 9, 10, 11, 1 << 40, v + 1, v - 1, 2 * v + 1))
        struct.pack_into("<q", b, k, max(-(1 << 63), min(w, (1 << 63) - 1)))
    fresh = TechnicalState(None, SPECS)
    try:
        load_technical_state(fresh, bytes(b))
    except SnapshotError:
        continue
    loaded += 1
    fresh.update_many(*(c[300:] for c in cols))
    fresh.as_dict()
print("ok", loaded)
"""


def test_forged_state_bytes_never_crash_a_state_with_extras():
    # In a child: a memory fault would kill the interpreter, not raise.
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), "7", "1500"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok"), run.stdout

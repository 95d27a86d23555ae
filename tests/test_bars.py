"""Bar validation and multi-timeframe aggregation: pandas equality on the real data,
emission timing, gaps, validation with state kept, reference twin, property tests."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2fast.errors import InvalidBarError, InvalidInputError
from l2fast.technical.bars import (
    Bar,
    BarValidator,
    MultiTimeframeAggregator,
    load_bars_csv,
    parse_timeframe,
    timeframe_name,
)

from reference.aggregate import BarValidatorRef, TimeframeAggregatorRef, bar_problem

pd = pytest.importorskip("pandas")

MIN = 60_000
DAY0 = 19_676 * 86_400_000  # 2023-11-15 00:00 UTC
FIELDS = ("ts", "open", "high", "low", "close", "volume")
ALL_TFS = ("5m", "15m", "1h", "4h", "1d")


def bar(minute: int, base: float = 100.0) -> tuple[int, float, float, float, float, float]:
    """A valid, distinct 1-minute bar opening ``minute`` minutes after DAY0."""
    o = base + minute
    return (DAY0 + minute * MIN, o, o + 2.0, o - 1.0, o + 1.0, float(minute + 1))


def expected(minutes: list[int], bucket_minute: int) -> Bar:
    """The aggregate of ``bar(m)`` for the given minutes (in order)."""
    bars = [bar(m) for m in minutes]
    return Bar(
        DAY0 + bucket_minute * MIN,
        bars[0][1],
        max(b[2] for b in bars),
        min(b[3] for b in bars),
        bars[-1][4],
        sum(b[5] for b in bars),
    )


def pandas_resample(data: dict[str, np.ndarray], minutes: int) -> dict[str, np.ndarray]:
    df = pd.DataFrame({k: data[k] for k in FIELDS[1:]}, index=pd.to_datetime(data["ts"], unit="ms"))
    out = (
        df.resample(f"{minutes}min", label="left", closed="left")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna()
    )
    res = {"ts": out.index.as_unit("ms").asi8}
    res.update({k: out[k].to_numpy() for k in FIELDS[1:]})
    return res


def assert_same_bars(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    for k in ("ts", "open", "high", "low", "close"):
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    # pandas sums with Kahan compensation, we add sequentially like a streaming sum.
    np.testing.assert_allclose(ours["volume"], theirs["volume"], rtol=1e-12, atol=0)


def assert_bar_matches_ref(ours: Bar, ref: tuple) -> None:
    assert ours[:5] == ref[:5]
    assert ours.volume == pytest.approx(ref[5], rel=1e-12, abs=1e-300)


def snapshot(agg: MultiTimeframeAggregator) -> tuple:
    return (agg.last_ts, agg.gaps, agg.missing_bars, tuple(agg.forming(tf) for tf in agg.timeframes))


def with_forming(closed: dict[str, np.ndarray], forming: Bar | None) -> dict[str, np.ndarray]:
    if forming is None:
        return closed
    return {k: np.append(closed[k], getattr(forming, k)) for k in FIELDS}


# ------------------------------------------------------------------ real data


@pytest.mark.parametrize("symbol", ["btc_1m", "eth_1m"])
def test_aggregate_many_matches_pandas_resample_on_full_real_data(symbol, request):
    data = request.getfixturevalue(symbol)
    agg = MultiTimeframeAggregator(ALL_TFS)
    out = agg.aggregate_many(*(data[k] for k in FIELDS))
    assert (agg.gaps, agg.missing_bars) == (1, 80)
    for tf in ALL_TFS:
        assert_same_bars(with_forming(out[tf], agg.forming(tf)), pandas_resample(data, parse_timeframe(tf)))


def test_streaming_across_the_real_gap_matches_reference_and_emits_stale_buckets(btc_1m):
    gap = int(np.flatnonzero(np.diff(btc_1m["ts"]) > MIN)[0]) + 1
    rows = range(gap - 1500, gap + 1500)
    agg = MultiTimeframeAggregator(ALL_TFS)
    refs = {tf: TimeframeAggregatorRef(parse_timeframe(tf)) for tf in ALL_TFS}
    for i in rows:
        b = (int(btc_1m["ts"][i]), *(float(btc_1m[k][i]) for k in FIELDS[1:]))
        out = agg.update(*b)
        for tf, ref in refs.items():
            ref_bars = ref.update(*b)
            assert len(out.get(tf, [])) == len(ref_bars)
            for ours, theirs in zip(out.get(tf, []), ref_bars):
                assert_bar_matches_ref(ours, theirs)
        if i == gap:
            # 12:39 closed the 12:35 five-minute bar; 14:00 reveals that 12:30/15m and
            # 12:00/1h will get no more minutes. 4h and 1d keep forming.
            assert pd.Timestamp(b[0], unit="ms") == pd.Timestamp("2023-03-24 14:00")
            assert {tf: [pd.Timestamp(x.ts, unit="ms") for x in bars] for tf, bars in out.items()} == {
                "15m": [pd.Timestamp("2023-03-24 12:30")],
                "1h": [pd.Timestamp("2023-03-24 12:00")],
            }
    assert (agg.gaps, agg.missing_bars) == (1, 80)


def test_streaming_and_batch_leave_identical_state(btc_1m_head):
    cols = [btc_1m_head[k] for k in FIELDS]
    split = 7_777  # mid-bucket for every timeframe above 1m
    streamed, batched = MultiTimeframeAggregator(ALL_TFS), MultiTimeframeAggregator(ALL_TFS)
    emitted: dict[str, list[Bar]] = {tf: [] for tf in ALL_TFS}
    for i in range(split):
        for tf, bars in streamed.update(*(c[i].item() for c in cols)).items():
            emitted[tf].extend(bars)
    out = batched.aggregate_many(*(c[:split] for c in cols))
    for tf in ALL_TFS:
        assert [Bar(*(out[tf][k][j].item() for k in FIELDS)) for j in range(len(out[tf]["ts"]))] == emitted[tf]
    assert snapshot(streamed) == snapshot(batched)
    rest = [c[split:] for c in cols]
    a, b = streamed.aggregate_many(*rest), batched.aggregate_many(*rest)
    for tf in ALL_TFS:
        assert_same_bars(a[tf], b[tf])
    assert snapshot(streamed) == snapshot(batched)


def test_load_bars_csv_reads_real_file_like_pandas(btc_1m, data_dir):
    loaded = load_bars_csv(data_dir / "btcusdt_1m.csv.gz")
    assert loaded["ts"].dtype == np.int64
    for k in FIELDS:
        np.testing.assert_array_equal(loaded[k], btc_1m[k], err_msg=k)


# ------------------------------------------------------------ emission timing


def test_bar_is_emitted_on_its_last_minute_not_one_bar_later():
    agg = MultiTimeframeAggregator(("5m", "15m"))
    for m in range(4):
        assert agg.update(*bar(m)) == {}
    assert agg.update(*bar(4)) == {"5m": [expected([0, 1, 2, 3, 4], 0)]}
    assert agg.forming("5m") is None
    assert agg.forming("15m") == expected([0, 1, 2, 3, 4], 0)
    assert agg.update(*bar(5)) == {}
    for m in range(6, 14):
        agg.update(*bar(m))
    assert agg.update(*bar(14)) == {"5m": [expected(list(range(10, 15)), 10)], "15m": [expected(list(range(15)), 0)]}


def test_one_minute_timeframe_passes_bars_through():
    agg = MultiTimeframeAggregator("1m")
    assert agg.timeframes == ("1m",)
    assert agg.update(*bar(3)) == {"1m": [Bar(*bar(3))]}
    assert agg.forming("1m") is None


def test_forming_bar_is_readable_and_none_before_data():
    agg = MultiTimeframeAggregator(("5m", "15m", "1h"))
    assert agg.timeframes == ("5m", "15m", "1h")
    assert agg.forming("1h") is None
    for m in range(3):
        agg.update(*bar(m))
    assert agg.forming("1h") == agg.forming(60) == expected([0, 1, 2], 0)
    with pytest.raises(InvalidInputError, match="timeframe='4h'"):
        agg.forming("4h")


# ----------------------------------------------------------------------- gaps


def test_bucket_missing_its_last_minute_is_emitted_by_the_next_buckets_first_bar():
    agg = MultiTimeframeAggregator(("5m",))
    for m in range(4):
        agg.update(*bar(m))
    assert agg.update(*bar(5)) == {"5m": [expected([0, 1, 2, 3], 0)]}
    assert agg.forming("5m") == expected([5], 5)
    assert (agg.gaps, agg.missing_bars) == (1, 1)


def test_bucket_with_only_its_last_minute_is_emitted_with_the_stale_one_in_one_step():
    agg = MultiTimeframeAggregator(("5m", "15m"))
    agg.update(*bar(0))
    agg.update(*bar(1))
    out = agg.update(*bar(9))
    assert out == {"5m": [expected([0, 1], 0), expected([9], 5)]}
    assert agg.forming("5m") is None
    assert agg.forming("15m") == expected([0, 1, 9], 0)
    assert (agg.gaps, agg.missing_bars) == (1, 7)


def test_gap_spanning_several_buckets_emits_no_empty_bars():
    agg = MultiTimeframeAggregator(("5m", "15m", "1h"))
    for m in range(3):
        agg.update(*bar(m))
    assert agg.update(*bar(23)) == {"5m": [expected([0, 1, 2], 0)], "15m": [expected([0, 1, 2], 0)]}
    assert agg.forming("5m") == expected([23], 20)
    assert agg.forming("15m") == expected([23], 15)
    assert agg.forming("1h") == expected([0, 1, 2, 23], 0)
    agg.update(*bar(24))
    assert (agg.gaps, agg.missing_bars) == (1, 20)


def test_constructed_gappy_series_matches_pandas_and_counts_gaps():
    minutes = [0, 1, 2, 4, 9, 10, 11, 29, 59, 60, 61, 299, 300, 1439, 1440, 1441, 3000]
    rows = [bar(m) for m in minutes]
    data = {k: np.array([r[i] for r in rows]) for i, k in enumerate(FIELDS)}
    agg = MultiTimeframeAggregator(("1m", "5m", "15m", "1h", "4h", "1d"))
    out = agg.aggregate_many(*(data[k] for k in FIELDS))
    for tf in agg.timeframes:
        assert_same_bars(with_forming(out[tf], agg.forming(tf)), pandas_resample(data, parse_timeframe(tf)))
    steps = np.diff(minutes)
    assert agg.gaps == int((steps > 1).sum())
    assert agg.missing_bars == int((steps - 1).sum())


# ----------------------------------------------------------------- validation

HISTORY = [bar(m) for m in (0, 1, 2, 6)]
LAST = HISTORY[-1][0]
GOOD = (LAST + 3 * MIN, 100.0, 105.0, 95.0, 101.0, 3.0)
NAN, INF = float("nan"), float("inf")


def breaking(**fields) -> tuple:
    return tuple(fields.get(k, GOOD[i]) for i, k in enumerate(FIELDS))


INVALID = [
    pytest.param(breaking(ts=LAST + 30_000), "ts", "not a whole minute", id="ts-off-grid"),
    pytest.param(breaking(ts=LAST), "ts", "duplicate", id="ts-duplicate"),
    pytest.param(breaking(ts=LAST - MIN), "ts", "out of order", id="ts-out-of-order"),
    pytest.param(breaking(ts=-MIN), "ts", "non-negative", id="ts-negative"),
    pytest.param(breaking(open=NAN), "open", "finite", id="open-nan"),
    pytest.param(breaking(high=INF), "high", "finite", id="high-inf"),
    pytest.param(breaking(low=-INF), "low", "finite", id="low-minus-inf"),
    pytest.param(breaking(close=NAN), "close", "finite", id="close-nan"),
    pytest.param(breaking(open=0.0), "open", "positive", id="open-zero"),
    pytest.param(breaking(low=-1.0), "low", "positive", id="low-negative"),
    pytest.param(breaking(close=-2.0), "close", "positive", id="close-negative"),
    pytest.param(breaking(volume=-1.0), "volume", "non-negative", id="volume-negative"),
    pytest.param(breaking(volume=NAN), "volume", "finite", id="volume-nan"),
    pytest.param(breaking(volume=INF), "volume", "finite", id="volume-inf"),
    pytest.param(breaking(high=100.5), "high", r"below max\(open, close\)=101.0", id="high-below-close"),
    pytest.param(breaking(high=99.0, low=90.0), "high", r"below max\(open, close\)", id="high-below-open"),
    pytest.param(breaking(low=100.5), "low", r"above min\(open, close\)=100.0", id="low-above-open"),
]


def fed(bars: list[tuple]) -> MultiTimeframeAggregator:
    agg = MultiTimeframeAggregator(("5m", "15m"))
    for b in bars:
        agg.update(*b)
    return agg


def assert_error(exc: InvalidBarError, field: str, value: object) -> None:
    assert exc.field == field
    assert (isinstance(value, float) and math.isnan(value) and math.isnan(exc.value)) or exc.value == value


@pytest.mark.parametrize("bad,field,reason", INVALID)
def test_invalid_bar_is_rejected_by_update_and_state_kept(bad, field, reason):
    agg = fed(HISTORY)
    before = snapshot(agg)
    with pytest.raises(InvalidBarError, match=f"{field}=.*{reason}") as info:
        agg.update(*bad)
    assert_error(info.value, field, bad[FIELDS.index(field)])
    assert snapshot(agg) == before
    fresh = fed(HISTORY)
    assert agg.update(*GOOD) == fresh.update(*GOOD)
    assert snapshot(agg) == snapshot(fresh)


@pytest.mark.parametrize("bad,field,reason", INVALID)
def test_invalid_bar_is_rejected_by_validator_and_state_kept(bad, field, reason):
    v = BarValidator()
    for b in HISTORY:
        v.check(*b)
    before = (v.last_ts, v.gaps, v.missing_bars)
    with pytest.raises(InvalidBarError, match=reason) as info:
        v.check(*bad)
    assert_error(info.value, field, bad[FIELDS.index(field)])
    assert (v.last_ts, v.gaps, v.missing_bars) == before == (LAST, 1, 3)
    assert v.check(*GOOD) == 2
    assert (v.gaps, v.missing_bars) == (2, 5)


@pytest.mark.parametrize("bad,field,reason", INVALID)
def test_invalid_row_in_a_batch_is_named_and_nothing_changes(bad, field, reason):
    rows = [HISTORY[0], HISTORY[1], HISTORY[2], HISTORY[3], bad]
    cols = [np.array([r[i] for r in rows]) for i in range(6)]
    agg, v = MultiTimeframeAggregator(("5m", "15m")), BarValidator()
    with pytest.raises(InvalidBarError, match=f"{field}=.*row 4: .*{reason}"):
        agg.aggregate_many(*cols)
    with pytest.raises(InvalidBarError, match=f"{field}=.*row 4: .*{reason}"):
        v.check_many(*cols)
    assert snapshot(agg) == snapshot(MultiTimeframeAggregator(("5m", "15m")))
    assert (v.last_ts, v.gaps, v.missing_bars) == (None, 0, 0)


def test_first_batch_row_is_checked_against_the_previous_batch():
    agg = fed(HISTORY)
    before = snapshot(agg)
    with pytest.raises(InvalidBarError, match="row 0: duplicate"):
        agg.aggregate_many(*(np.array([x]) for x in HISTORY[-1]))
    assert snapshot(agg) == before


def test_batch_inputs_of_wrong_type_or_length_are_rejected():
    agg = MultiTimeframeAggregator(("5m", "15m", "1h"))
    cols = [np.array([r[i] for r in HISTORY]) for i in range(6)]
    with pytest.raises(InvalidInputError, match="ts: expected integer epoch ms"):
        agg.aggregate_many(cols[0].astype(float), *cols[1:])
    with pytest.raises(InvalidInputError, match="volume: length 3 differs"):
        agg.aggregate_many(*cols[:5], cols[5][:3])
    assert agg.last_ts is None


def test_flat_zero_volume_bars_aggregate_to_a_flat_bar():
    agg = MultiTimeframeAggregator(("5m",))
    ts = DAY0 + MIN * np.arange(10)
    out = agg.aggregate_many(ts, *(np.full(10, 42.0) for _ in range(4)), np.zeros(10))
    assert_same_bars(
        out["5m"],
        {"ts": ts[::5], "open": [42.0] * 2, "high": [42.0] * 2, "low": [42.0] * 2, "close": [42.0] * 2,
         "volume": [0.0] * 2},
    )


def test_reset_returns_to_fresh_state():
    agg = fed(HISTORY)
    v = BarValidator()
    v.check_many(*(np.array([r[i] for r in HISTORY]) for i in range(6)))
    agg.reset()
    v.reset()
    assert snapshot(agg) == snapshot(MultiTimeframeAggregator(("5m", "15m")))
    assert (v.last_ts, v.gaps, v.missing_bars) == (None, 0, 0)
    assert agg.update(*HISTORY[0]) == {}


# ----------------------------------------------------------------- timeframes


@pytest.mark.parametrize(
    "tf,minutes,name",
    [("1m", 1, "1m"), ("5m", 5, "5m"), ("15m", 15, "15m"), ("1h", 60, "1h"), ("4h", 240, "4h"),
     ("1d", 1440, "1d"), ("90m", 90, "90m"), ("60m", 60, "1h"), (30, 30, "30m"), (np.int64(120), 120, "2h")],
)
def test_timeframes_parse_to_minutes_and_canonical_names(tf, minutes, name):
    assert parse_timeframe(tf) == minutes
    assert timeframe_name(minutes) == name


@pytest.mark.parametrize("tf", ["7m", "2d", "0m", "05m", "5x", "m", "5M", " 5m", 0, 7, 1441, 2880, 1.5, True, None])
def test_timeframe_that_is_malformed_or_does_not_divide_a_day_is_rejected(tf):
    with pytest.raises(InvalidInputError, match=f"timeframe={tf!r}"):
        parse_timeframe(tf)
    with pytest.raises(ValueError, match=f"timeframe={tf!r}"):
        MultiTimeframeAggregator(("5m", tf))


def test_duplicate_or_empty_timeframe_list_is_rejected():
    with pytest.raises(InvalidInputError, match="'60m' duplicates '1h'"):
        MultiTimeframeAggregator(("1h", "60m"))
    with pytest.raises(InvalidInputError, match="at least one"):
        MultiTimeframeAggregator(())


# ------------------------------------------------------------------------ CSV


def write_csv(path, rows, header="ts,open,high,low,close,volume", compress=False):
    text = header + "\n" + "".join(",".join(repr(x) for x in r) + "\n" for r in rows)
    if compress:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize("compress", [False, True])
def test_load_bars_csv_reads_plain_and_gzip(tmp_path, compress):
    path = tmp_path / "bars.csv"
    write_csv(path, HISTORY, compress=compress)
    loaded = load_bars_csv(path)
    assert list(loaded) == list(FIELDS)
    for i, k in enumerate(FIELDS):
        np.testing.assert_array_equal(loaded[k], [r[i] for r in HISTORY])


def test_load_bars_csv_accepts_columns_in_any_order(tmp_path):
    path = tmp_path / "bars.csv"
    write_csv(path, [(r[5], r[0], r[1], r[2], r[3], r[4]) for r in HISTORY], header="volume,ts,open,high,low,close")
    np.testing.assert_array_equal(load_bars_csv(path)["volume"], [r[5] for r in HISTORY])


def test_load_bars_csv_names_the_bad_row(tmp_path):
    path = tmp_path / "bars.csv"
    write_csv(path, [HISTORY[0], HISTORY[1], HISTORY[0]])
    with pytest.raises(InvalidBarError, match=r"bars\.csv: row 2: out of order"):
        load_bars_csv(path)
    write_csv(path, [HISTORY[0], breaking(high=1.0)])
    with pytest.raises(InvalidBarError, match=r"high=1\.0: .*row 1: below max"):
        load_bars_csv(path)


def test_load_bars_csv_rejects_wrong_header_and_unparsable_lines(tmp_path):
    path = tmp_path / "bars.csv"
    write_csv(path, HISTORY, header="time,open,high,low,close,volume")
    with pytest.raises(InvalidInputError, match="header"):
        load_bars_csv(path)
    path.write_text("ts,open,high,low,close,volume\n60000,1,x,1,1,1\n")
    with pytest.raises(InvalidInputError, match="could not convert"):
        load_bars_csv(path)


def test_bars_module_does_not_import_pandas():
    code = "import sys, l2fast.technical.bars; assert 'pandas' not in sys.modules, 'pandas imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ properties

TF_CHOICES = ("1m", "2m", "3m", "5m", "15m", "30m", "1h", "90m", "4h", "1d")


@st.composite
def valid_streams(draw):
    start = draw(st.integers(0, 3 * 1440))
    # Mostly contiguous minutes, with short gaps and gaps spanning many buckets.
    gap = st.one_of(st.just(1), st.just(1), st.integers(2, 16), st.integers(17, 3000))
    steps = draw(st.lists(gap, min_size=1, max_size=400))
    rows, minute = [], start
    prices = st.floats(1e-3, 1e5, allow_nan=False, allow_infinity=False)
    for step in steps:
        o, c = draw(prices), draw(prices)
        h = max(o, c) + draw(st.floats(0, 1e3))
        l = min(o, c) * draw(st.floats(0.01, 1.0))
        v = draw(st.one_of(st.just(0.0), st.floats(0, 1e6)))
        rows.append((DAY0 + minute * MIN, o, h, l, c, v))
        minute += step
    return rows


@settings(max_examples=150, deadline=None)
@given(rows=valid_streams(), tfs=st.lists(st.sampled_from(TF_CHOICES), min_size=1, max_size=5, unique=True))
def test_property_aggregator_equals_reference_on_random_valid_streams(rows, tfs):
    agg = MultiTimeframeAggregator(tfs)
    refs = {timeframe_name(parse_timeframe(tf)): TimeframeAggregatorRef(parse_timeframe(tf)) for tf in tfs}
    check = BarValidatorRef()
    emitted = {name: [] for name in refs}
    for row in rows:
        out = agg.update(*row)
        check.check(*row)
        for name, ref in refs.items():
            ref_bars = ref.update(*row)
            assert len(out.get(name, [])) == len(ref_bars)
            for ours, theirs in zip(out.get(name, []), ref_bars):
                assert_bar_matches_ref(ours, theirs)
            emitted[name].extend(out.get(name, []))
            forming = agg.forming(name)
            assert (forming is None) == (ref.forming() is None)
            if forming is not None:
                assert_bar_matches_ref(forming, ref.forming())
    assert (agg.gaps, agg.missing_bars) == (check.gaps, check.missing_bars)
    batch = MultiTimeframeAggregator(tfs)
    out = batch.aggregate_many(*(np.array([r[i] for r in rows]) for i in range(6)))
    for name, bars in emitted.items():
        assert [Bar(*(out[name][k][j].item() for k in FIELDS)) for j in range(len(out[name]["ts"]))] == bars
    assert snapshot(batch) == snapshot(agg)


@settings(max_examples=300, deadline=None)
@given(
    prev=st.one_of(st.none(), st.integers(0, 10).map(lambda m: DAY0 + m * MIN)),
    ts=st.one_of(st.integers(0, 12).map(lambda m: DAY0 + m * MIN), st.integers(-2 * MIN, DAY0 + 20 * MIN)),
    ohlcv=st.tuples(*(st.sampled_from([100.0, 101.0, 99.0, 0.0, -1.0, float("nan"), float("inf")]) for _ in range(5))),
)
def test_property_validator_agrees_with_reference_rules(prev, ts, ohlcv):
    v = BarValidator()
    if prev is not None:
        v.check(prev, 100.0, 100.0, 100.0, 100.0, 1.0)
    problem = bar_problem(prev, ts, *ohlcv)
    if problem is None:
        v.check(ts, *ohlcv)
        assert v.last_ts == ts
    else:
        with pytest.raises(InvalidBarError) as info:
            v.check(ts, *ohlcv)
        assert info.value.field == problem
        assert v.last_ts == prev

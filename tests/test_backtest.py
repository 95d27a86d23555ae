"""run_benchmark, its report and the ``benchmark`` command.

The end-to-end run is checked against an independent assembly of the same backtest: the
replay driven by hand (warm-up without a decision, then the decision and the period),
its buy/sell signals read back from the JSON lines, and every metric recomputed in plain
Python from the broker's fills and equity.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support import exit_code, write_csv

from l2fast.cli.main import main
from l2fast.config import EngineConfig
from l2fast.data import shipped_config
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.errors import InvalidInputError
from l2fast.evaluation.backtest import (
    HORIZONS,
    BenchmarkResult,
    Period,
    find_bar_files,
    load_symbol_bars,
    run_benchmark,
    strategy_configs,
)
from l2fast.evaluation.paper import DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS, PaperBroker
from l2fast.evaluation.replay import BarStream, default_decision, demo_config, replay
from l2fast.evaluation.report import format_markdown, targets
from l2fast.evaluation.synthetic import generate_bars
from l2fast.technical.bars import load_bars_csv

BTC, ETH = "BTC/USDT", "ETH/USDT"
MINUTE, DAY = 60_000, 86_400_000
# The generated bars start 2024-01-01 00:00 UTC: one day before the period, whose first
# 660 bars therefore complete the 2,100-bar warm-up.
PERIOD = "2024-01-02_2024-01-04"
PERIOD_START = 1_704_153_600_000
WARMUP = 2_100


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def bars() -> dict[str, dict[str, np.ndarray]]:
    """Four days of two generated symbols; ETH misses ten minutes inside the period."""
    n = 1440 * 4
    eth = generate_bars(n, seed=2, start_price=2_500.0)
    keep = np.ones(n, dtype=bool)
    keep[3_000:3_010] = False
    return {BTC: generate_bars(n, seed=1), ETH: {k: v[keep] for k, v in eth.items()}}


@pytest.fixture(scope="module")
def result(bars) -> BenchmarkResult:
    return run_benchmark(None, PERIOD, [BTC, ETH], data=bars, config=demo_config())


# ------------------------------------------------------------------ the reference


def evaluated(bars: dict[str, dict[str, np.ndarray]], start: int, end: int) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for symbol, b in bars.items():
        keep = (b["ts"] >= start) & (b["ts"] < end)
        out[symbol] = {k: v[keep] for k, v in b.items()}
    return out


@pytest.fixture(scope="module")
def reference(bars, result):
    """The backtest assembled by hand; returns (test bars, broker, signals, merged bar list)."""
    start = PERIOD_START + (WARMUP - 1440) * MINUTE
    gen = TacticalSignalGenerator(config=demo_config())
    warm = [BarStream(s, {k: v[(b["ts"] < start)][-WARMUP:] for k, v in b.items()}) for s, b in bars.items()]
    replay(gen, warm, [], PaperBroker())
    test = evaluated(bars, start, ms("2024-01-05T00:00"))
    broker = PaperBroker(10_000.0, fee_bps=10.0, slippage_bps=2.0)
    out = io.StringIO()
    replay(gen, [BarStream(s, b) for s, b in test.items()], [default_decision([BTC, ETH])], broker, out=out)
    signals = [json.loads(line) for line in out.getvalue().splitlines()]
    merged = sorted(((int(t), k, s) for k, (s, b) in enumerate(test.items()) for t in b["ts"]))
    return test, broker, signals, merged


def minute_equity(broker: PaperBroker, merged: list[tuple[int, int, str]]) -> tuple[list[int], list[float]]:
    """Equity after the last bar of every minute, preceded by the initial equity."""
    last: dict[int, float] = {}
    for (ts, _, _), equity in zip(merged, broker.equity_curve):
        last[ts] = equity
    minutes = sorted(last)
    return minutes, [broker.initial_equity] + [last[t] for t in minutes]


def hand_sharpe(curve: list[float], per_year: float) -> float:
    r = [b / a - 1.0 for a, b in zip(curve, curve[1:])]
    return statistics.mean(r) / statistics.stdev(r) * math.sqrt(per_year)


def hand_drawdown(curve: list[float]) -> float:
    peak, worst = curve[0], 0.0
    for x in curve:
        peak = max(peak, x)
        worst = max(worst, (peak - x) / peak)
    return worst


# ------------------------------------------------------------------ the run


def test_the_warm_up_completes_inside_the_period_when_the_data_has_too_few_bars_before_it(result):
    assert result.warmup_bars == WARMUP
    assert result.warmup_in_period == {BTC: WARMUP - 1440, ETH: WARMUP - 1440}
    assert result.first_ts_ms == PERIOD_START + (WARMUP - 1440) * MINUTE
    assert result.last_ts_ms == ms("2024-01-04T23:59")
    assert result.bars_by_symbol == {BTC: 3 * 1440 - 660, ETH: 3 * 1440 - 660 - 10}


def test_every_strategy_is_evaluated_and_they_share_the_minutes(result):
    assert [s.name for s in result.strategies] == [
        "ensemble", "trend_agent", "mean_revert_agent", "volatility_agent", "no_technical", "buy_and_hold"]
    minutes = result.ensemble.minute_ts
    assert minutes.size == 3 * 1440 - 660
    for s in result.strategies:
        np.testing.assert_array_equal(s.minute_ts, minutes)
        assert s.equity.size == minutes.size + 1
        assert s.equity[0] == EngineConfig.initial_equity


def test_the_ensemble_matches_a_hand_assembled_backtest(result, reference):
    _, broker, _, merged = reference
    e = result.ensemble
    minutes, curve = minute_equity(broker, merged)
    np.testing.assert_array_equal(e.minute_ts, minutes)
    np.testing.assert_allclose(e.equity, curve, rtol=1e-12)
    assert e.trades == len(broker.trades) > 0
    assert e.fees == pytest.approx(sum(f.fee for f in broker.fills), rel=1e-12)
    assert e.final_equity == pytest.approx(broker.equity, rel=1e-12)
    pnls = [t.pnl for t in broker.trades]
    assert e.win_rate == pytest.approx(sum(p > 0 for p in pnls) / len(pnls))
    losses = -sum(p for p in pnls if p < 0)
    assert e.profit_factor == pytest.approx(sum(p for p in pnls if p > 0) / losses, rel=1e-9)


def test_sharpe_sortino_drawdown_and_calmar_are_computed_on_the_minute_curve(result, reference):
    _, broker, _, merged = reference
    _, curve = minute_equity(broker, merged)
    e = result.ensemble
    assert e.sharpe == pytest.approx(hand_sharpe(curve, 525_600), rel=1e-9)
    r = [b / a - 1.0 for a, b in zip(curve, curve[1:])]
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r))
    assert e.sortino == pytest.approx(statistics.mean(r) / downside * math.sqrt(525_600), rel=1e-9)
    assert e.max_drawdown == pytest.approx(hand_drawdown(curve), rel=1e-12)
    years = (len(curve) - 1) / 525_600
    assert e.calmar == pytest.approx(((curve[-1] / curve[0]) ** (1 / years) - 1) / hand_drawdown(curve), rel=1e-9)


def test_the_daily_sharpe_uses_the_equity_after_each_utc_days_last_minute(result, reference):
    _, broker, _, merged = reference
    minutes, curve = minute_equity(broker, merged)
    day_end: dict[int, float] = {}
    for t, equity in zip(minutes, curve[1:]):
        day_end[t // DAY] = equity
    daily = [curve[0]] + [day_end[d] for d in sorted(day_end)]
    assert len(daily) == 4  # 2024-01-02 (from 11:00), 01-03, 01-04 after the initial equity
    assert result.ensemble.sharpe_daily == pytest.approx(hand_sharpe(daily, 365), rel=1e-9)


def test_exposure_and_turnover_follow_the_fills_bar_by_bar(result, reference):
    test, broker, _, merged = reference
    fills = defaultdict(list)
    for f in broker.fills:
        fills[(f.symbol, f.ts_ms)].append(f)
    close = {s: dict(zip(b["ts"].tolist(), b["close"].tolist())) for s, b in test.items()}
    position = {BTC: 0.0, ETH: 0.0}
    mark: dict[str, float] = {}
    gross_by_minute: dict[int, float] = {}
    for ts, _, symbol in merged:
        for f in fills.get((symbol, ts), []):
            position[symbol] += f.qty if f.side == "buy" else -f.qty
        mark[symbol] = close[symbol][ts]
        gross_by_minute[ts] = sum(abs(q) * mark[s] for s, q in position.items() if q)
    minutes, curve = minute_equity(broker, merged)
    gross = [gross_by_minute[t] for t in minutes]
    e = result.ensemble
    assert e.exposure == pytest.approx(statistics.mean(g / x for g, x in zip(gross, curve[1:])), rel=1e-9)
    assert e.time_in_market == pytest.approx(sum(g > 0 for g in gross) / len(gross))
    traded = sum(f.qty * f.price for f in broker.fills)
    assert e.turnover == pytest.approx(traded / statistics.mean(curve), rel=1e-9)


def test_signal_hits_and_means_match_a_recount_of_the_emitted_signals(result, reference):
    test, _, signals, _ = reference
    stats = result.ensemble.signals
    assert stats.count == len(signals) > 0
    close = {s: dict(zip(b["ts"].tolist(), b["close"].tolist())) for s, b in test.items()}
    for h in HORIZONS:
        known = hits = 0
        for sig in signals:
            later = close[sig["symbol"]].get(sig["ts_ms"] + h * MINUTE)
            if later is None:
                continue
            known += 1
            side = 1 if sig["side"] == "buy" else -1
            hits += side * (later - close[sig["symbol"]][sig["ts_ms"]]) > 0
        assert (stats.evaluated[h], stats.hits[h]) == (known, hits)
        assert stats.hit_rate[h] == pytest.approx(hits / known)
        assert sum(b.count for b in stats.calibration[h]) == known
    assert stats.mean_confidence == pytest.approx(statistics.mean(s["confidence"] for s in signals))
    assert stats.mean_consensus == pytest.approx(statistics.mean(s["consensus"] for s in signals))


def test_votes_count_every_bar_whose_fused_vote_had_a_direction(result):
    votes = result.ensemble.votes
    assert votes.count >= result.ensemble.signals.count
    assert votes.count <= sum(result.bars_by_symbol.values())
    for h in HORIZONS:
        assert 0 < votes.evaluated[h] <= votes.count


def test_buy_and_hold_splits_the_equity_and_pays_one_fee_and_slippage_per_symbol(result, bars):
    test = evaluated(bars, result.first_ts_ms, ms("2024-01-05T00:00"))
    bh = result.buy_and_hold
    value, fees = 0.0, 0.0
    for b in test.values():
        price = b["open"][0] * 1.0002
        qty = 5_000.0 / (price * 1.001)
        fees += qty * price * 0.001
        value += qty * b["close"][-1]
    assert bh.final_equity == pytest.approx(value, rel=1e-12)
    assert bh.fees == pytest.approx(fees, rel=1e-12)
    assert bh.time_in_market == 1.0
    assert bh.trades == 0 and bh.signals is None and bh.latency_us is None
    # ETH's gap: the curve keeps ETH's last close over the missing minutes.
    gap = ms("2024-01-03T02:00")  # bar 3000 of the generated series
    k = int(np.searchsorted(bh.minute_ts, gap))
    assert bh.minute_ts[k] == gap
    assert bh.equity[k + 1] - bh.equity[k] == pytest.approx(
        (test[BTC]["close"][test[BTC]["ts"] == gap][0] - test[BTC]["close"][test[BTC]["ts"] == gap - MINUTE][0])
        * 5_000.0 / (test[BTC]["open"][0] * 1.0002 * 1.001), rel=1e-9)


def test_latency_and_denials_come_from_the_replay(result):
    e = result.ensemble
    assert e.latency_ns.size == sum(result.bars_by_symbol.values())
    p = e.latency_us["all"]
    assert p["p50"] == pytest.approx(np.percentile(e.latency_ns, 50) / 1000)
    assert p["p99"] == pytest.approx(np.percentile(e.latency_ns, 99) / 1000)
    assert all(isinstance(v, int) and v > 0 for v in e.denials.values())


def test_the_result_is_json_safe(result):
    text = json.dumps(result.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert [s["name"] for s in data["strategies"]][-1] == "buy_and_hold"
    assert "equity" not in data["strategies"][0]
    assert set(data["strategies"][0]["signals"]["hit_rate"]) == {str(h) for h in HORIZONS}


# ------------------------------------------------------------------ strategies, inputs


def test_members_alone_keep_only_their_weight_and_no_technical_reads_no_technical_vote():
    variants = {name: cfg for name, _, cfg in strategy_configs(demo_config())}
    assert list(variants) == ["ensemble", "trend_agent", "mean_revert_agent", "volatility_agent", "no_technical"]
    assert dict(variants["trend_agent"].model.weights) == {"trend_agent": 1.0}
    assert variants["trend_agent"].model.consensus_threshold == 0.5  # the rest is kept
    no_tech = variants["no_technical"].model
    assert (no_tech.technical_weight, no_tech.alignment_threshold) == (0.0, 0.0)
    assert dict(no_tech.confidence_weights) == {"model": 1.0, "technical": 0.0, "alignment": 0.0}
    assert dict(no_tech.weights) == dict(demo_config().model.weights)
    assert no_tech.consensus_threshold == demo_config().model.consensus_threshold


def _vote_under_technical_picture(config, sign: float) -> dict:
    """The reference voter's result when every member buys (probability 0.9) and every
    timeframe's technical vote is ``sign``."""
    from l2fast.decision.voting import VotingParams

    from reference.voting import COMPONENTS, VoterRef

    manifests = TacticalSignalGenerator(config=config).manifests
    params = VotingParams.from_config(config.model, manifests, config.technical)
    voter = VoterRef(params)
    for tf in voter.tfs:
        tf.vote, tf.components = sign, dict.fromkeys(COMPONENTS, sign)
    n = len(params.members)
    actions = [spec.n_actions - 1 for spec in params.members]  # the largest long target
    scores = [[0.1 / (spec.n_actions - 1)] * (spec.n_actions - 1) + [0.9] for spec in params.members]
    result = voter.vote([False] * n, actions, [0.0] * n, scores, [1.0] * n)
    return {k: result[k] for k in ("side", "direction", "gates", "score", "consensus", "confidence", "target")}


def test_without_technical_votes_the_vote_follows_the_models_whatever_the_indicators_say():
    variants = {name: cfg for name, _, cfg in strategy_configs(demo_config())}
    # The ensemble's vote changes when the indicators turn against the members ...
    assert _vote_under_technical_picture(variants["ensemble"], 1.0) != \
        _vote_under_technical_picture(variants["ensemble"], -1.0)
    # ... the variant's does not: same side, score, confidence and gates.
    backing = _vote_under_technical_picture(variants["no_technical"], 1.0)
    assert backing == _vote_under_technical_picture(variants["no_technical"], -1.0)
    assert backing["side"] == 1 and backing["gates"] == 0


def test_a_member_with_zero_weight_is_not_traded_alone():
    config = demo_config().to_dict()
    config["model"]["weights"] = {"trend_agent": 1.0, "mean_revert_agent": 0.0, "volatility_agent": 0.5}
    from l2fast.config import L2Config

    names = [name for name, _, _ in strategy_configs(L2Config.from_dict(config))]
    assert names == ["ensemble", "trend_agent", "volatility_agent", "no_technical"]


def test_period_text_names_two_whole_utc_days():
    p = Period.parse("2025-05-20_2025-08-18")
    assert (p.start_ms, p.end_ms) == (ms("2025-05-20T00:00"), ms("2025-08-19T00:00"))
    assert p.label == "2025-05-20_2025-08-18"
    assert Period.parse("2024-06-01_2024-06-01").end_ms - Period.parse("2024-06-01_2024-06-01").start_ms == DAY


@pytest.mark.parametrize("text", ["2025-05-20", "2025-05-20_2025-02-30", "2025-08-18_2025-05-20", "20250520_20250818"])
def test_a_bad_period_is_rejected(text):
    with pytest.raises(InvalidInputError, match="period"):
        Period.parse(text)


def test_bar_files_are_found_by_symbol_and_1m_timeframe(tmp_path):
    names = ["btcusdt_1m.csv.gz", "btcusdt_1m_2025.csv.gz", "btcusdt_1h_2017-2024.csv.gz",
             "ethusdt_1m.csv.gz", "btcusd_1d_2011-2025.csv.gz", "README.md"]
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in find_bar_files(tmp_path, BTC)] == ["btcusdt_1m.csv.gz", "btcusdt_1m_2025.csv.gz"]
    assert [p.name for p in find_bar_files(tmp_path, ETH)] == ["ethusdt_1m.csv.gz"]
    assert find_bar_files(tmp_path, "SOL/USDT") == []


def test_a_symbols_files_are_joined_in_time_order_and_may_not_overlap(tmp_path):
    b = generate_bars(100, seed=3)
    write_csv(tmp_path / "btcusdt_1m_b.csv.gz", {k: v[60:] for k, v in b.items()})
    write_csv(tmp_path / "btcusdt_1m_a.csv.gz", {k: v[:60] for k, v in b.items()})
    joined = load_symbol_bars(tmp_path, BTC)
    np.testing.assert_array_equal(joined["ts"], b["ts"])
    np.testing.assert_allclose(joined["close"], b["close"])
    write_csv(tmp_path / "btcusdt_1m_c.csv.gz", {k: v[50:55] for k, v in b.items()})
    with pytest.raises(InvalidInputError, match="overlap"):
        load_symbol_bars(tmp_path, BTC)
    with pytest.raises(InvalidInputError, match="no 1-minute bar file for ETH/USDT"):
        load_symbol_bars(tmp_path, ETH)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"test_period": "2023-01-01_2023-01-02"}, "no bar in the period"),
    ({"symbols": ["btc/usdt"]}, "symbols look like"),
    ({"symbols": [BTC, "SOL/USDT"]}, "no bars for"),
    ({"symbols": [BTC, BTC]}, "each symbol once"),
    ({"warmup_bars": 100}, "at least 2100"),
    ({"fee_bps": -1.0}, "fee_bps"),
    ({"test_period": "2024-01-04_2024-01-04", "warmup_bars": 6_000}, "not enough"),
])
def test_run_benchmark_rejects_bad_inputs_before_replaying(bars, kwargs, message):
    args = {"models_path": None, "test_period": PERIOD, "symbols": [BTC, ETH], "data": bars} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        run_benchmark(**args)


# ------------------------------------------------------------------ report


def test_the_targets_table_reports_the_ensembles_numbers(result):
    rows = {t.metric: t for t in targets(result)}
    e = result.ensemble
    assert rows["Max drawdown"].met == (e.max_drawdown < 0.15)
    assert rows["Latency"].met is True
    assert rows["Sharpe ratio (1m returns, annualised)"].actual == f"{e.sharpe:.2f}"
    s15 = e.signals
    assert rows["Signal accuracy (15 min)"].actual.startswith(
        f"{s15.hits[15] / s15.evaluated[15]:.1%} of {s15.evaluated[15]:,} (95 % CI")
    assert rows["Signal accuracy (15 min)"].met == (s15.hit_rate[15] > 0.65)
    assert rows["Average confidence"].actual == f"{s15.mean_confidence:.3f}"


def test_without_signals_the_targets_say_so_instead_of_inventing_numbers(bars):
    quiet = run_benchmark(None, "2024-01-04_2024-01-04", [BTC], data=bars)  # defaults: no trade
    assert quiet.ensemble.signals.count == 0
    rows = {t.metric: t for t in targets(quiet)}
    assert rows["Signal accuracy (5 min)"].actual == "n/a (no buy/sell signal)"
    assert rows["Signal accuracy (5 min)"].met is None
    assert rows["Sharpe ratio (1m returns, annualised)"].actual == "n/a (flat equity)"
    assert "No buy/sell signals with a known outcome." in format_markdown(quiet)


def test_the_markdown_puts_the_strategies_side_by_side_and_embeds_the_plots(result):
    text = format_markdown(result, ["equity.png"])
    header = next(line for line in text.splitlines() if line.startswith("|  | ensemble"))
    assert header.count("|") == len(result.strategies) + 2
    assert "![Equity of every strategy against buy-and-hold](equity.png)" in text
    assert f"| total return | {result.ensemble.total_return:.2%}" in text


# ------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory, bars) -> Path:
    folder = tmp_path_factory.mktemp("bars")
    write_csv(folder / "btcusdt_1m.csv.gz", bars[BTC])
    write_csv(folder / "ethusdt_1m.csv.gz", bars[ETH])
    return folder


def test_the_benchmark_command_prints_the_table_and_writes_the_report(data_folder, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    report = tmp_path / "report"
    code = main(["benchmark", "--data", str(data_folder), "--period", PERIOD, "--symbols", f"{BTC},{ETH}",
                 "--config", str(shipped_config("demo")),
                 "--report", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ensemble" in out and "buy_and_hold" in out and "Sharpe (1m, annualised)" in out
    assert "(1,320 of them from the period)" in out
    for name in ("benchmark.md", "benchmark.json", "equity.png", "drawdown.png", "latency.png",
                 "calibration.png", "strategies.png"):
        assert (report / name).stat().st_size > 0, name
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((report / "benchmark.json").read_text())
    assert data["strategies"][0]["trades"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--period", "2024-01-02"], "--period"),
    (["--period", "2023-01-01_2023-01-02"], "no bar in the period"),
    (["--symbols", "SOL/USDT"], "no 1-minute bar file for SOL/USDT"),
    (["--symbols", "btc"], "symbols look like"),
    (["--fee-bps", "-3"], "fee_bps"),
    (["--warmup-bars", "10"], "at least 2100"),
    (["--config", "/nonexistent/l2fast.toml"], "cannot read config file"),
])
def test_bad_benchmark_input_exits_2_with_an_error(data_folder, capsys, args, message):
    base = {"--data": str(data_folder), "--period": PERIOD, "--symbols": BTC}
    argv = ["benchmark"]
    for key, value in base.items():
        if key not in args:
            argv += [key, value]
    assert exit_code(argv + args + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_data_folder_exits_2(capsys):
    assert exit_code(["benchmark", "--data", "/nonexistent", "--period", PERIOD, "--symbols", BTC]) == 2
    assert "not a directory" in capsys.readouterr().err


# ------------------------------------------------------------------ real data


def test_a_day_of_real_btc_warms_up_on_the_bars_before_it(data_dir):
    result = run_benchmark(None, "2024-06-01_2024-06-01", [BTC], data=data_dir)
    assert result.first_ts_ms == ms("2024-06-01T00:00")
    assert result.warmup_in_period == {BTC: 0}
    assert result.bars_by_symbol == {BTC: 1440}
    bars = load_bars_csv(data_dir / "btcusdt_1m.csv.gz")
    day = (bars["ts"] >= ms("2024-06-01T00:00")) & (bars["ts"] < ms("2024-06-02T00:00"))
    # The default equity and costs, bought at the first open and held.
    entry = bars["open"][day][0] * (1.0 + DEFAULT_SLIPPAGE_BPS / 10_000.0)
    expected = EngineConfig.initial_equity / (entry * (1.0 + DEFAULT_FEE_BPS / 10_000.0)) * bars["close"][day][-1]
    assert result.buy_and_hold.final_equity == pytest.approx(expected, rel=1e-12)

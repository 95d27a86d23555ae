"""The replay loop, its summary and the ``replay`` / ``demo`` commands."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import exit_code, write_csv

from l2fast.cli.main import main
from l2fast.config import L2Config
from l2fast.data import shipped_config
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.evaluation.paper import PaperBroker
from l2fast.evaluation.replay import (
    BarStream,
    ReplaySummary,
    default_decision,
    demo_config,
    load_decisions,
    replay,
    symbol_from_filename,
)
from l2fast.evaluation.synthetic import generate_bars
from l2fast.signals import StrategicDecision, TacticalSignal

ROOT = Path(__file__).resolve().parents[1]
BTC, ETH = "BTC/USDT", "ETH/USDT"


@pytest.fixture(scope="module")
def bars_5k() -> dict[str, np.ndarray]:
    return generate_bars(5_000, seed=7)


@pytest.fixture(scope="module")
def demo_run(bars_5k):
    """One replay of the demo config over 5,000 generated bars: (summary, broker, engine, jsonl)."""
    gen = TacticalSignalGenerator(config=demo_config())
    broker = PaperBroker(10_000.0)
    out = io.StringIO()
    summary = replay(gen, [BarStream(BTC, bars_5k)], broker=broker, out=out, all_signals=True)
    return summary, broker, gen, out.getvalue()


# ----------------------------------------------------------------- the loop


class ScriptedEngine:
    """Stands in for the engine: logs every call and answers bar ``k`` with ``script[k]``."""

    def __init__(self, script: dict[int, tuple[str, float, float, float]]) -> None:
        self.script = script
        self.calls: list[tuple] = []
        self.bars = 0

    def on_strategic_decision(self, decision: StrategicDecision) -> None:
        self.calls.append(("decision", decision.regime))

    def on_fill(self, symbol, side, qty, price, ts_ms, fee=0.0) -> dict:
        self.calls.append(("fill", symbol, side, qty, price, ts_ms, fee))
        return {}

    def on_bar(self, symbol, ts_ms, open, high, low, close, volume) -> TacticalSignal:
        self.calls.append(("bar", symbol, ts_ms))
        step = self.script.get(self.bars)
        self.bars += 1
        if step is None:
            return TacticalSignal.hold(symbol, ts_ms, {"code": "LOW_CONSENSUS"})
        side, qty, stop, tp = step
        return TacticalSignal(symbol, side, qty, 0.9, 0.9, stop, tp, {"code": "ENTRY"}, ts_ms)


def flat_bars(opens: list[float]) -> dict[str, np.ndarray]:
    n = len(opens)
    o = np.array(opens, dtype=np.float64)
    return {"ts": 1_704_067_200_000 + 60_000 * np.arange(n, dtype=np.int64), "open": o,
            "high": o + 0.5, "low": o - 0.5, "close": o, "volume": np.ones(n)}


def test_fills_reach_the_engine_before_the_bar_they_executed_in():
    bars = flat_bars([100.0, 101.0, 102.0, 103.0])
    engine = ScriptedEngine({0: ("buy", 2.0, 90.0, 120.0), 2: ("sell", 2.0, None, None)})
    broker = PaperBroker(10_000.0, fee_bps=10, slippage_bps=2)
    replay(engine, [BarStream(BTC, bars)], broker=broker)
    t = bars["ts"].tolist()
    buy, sell = 101.0 * 1.0002, 103.0 * 0.9998
    assert engine.calls == [
        ("decision", "trending"),
        ("bar", BTC, t[0]),
        ("fill", BTC, "buy", 2.0, buy, t[1], 2.0 * buy * 0.001),
        ("bar", BTC, t[1]),
        ("bar", BTC, t[2]),
        ("fill", BTC, "sell", 2.0, sell, t[3], 2.0 * sell * 0.001),
        ("bar", BTC, t[3]),
    ]


def test_decisions_are_installed_when_the_bar_time_reaches_their_ts():
    bars = flat_bars([100.0] * 4)
    t = bars["ts"].tolist()
    later = StrategicDecision("ranging", 0.3, "conservative", [BTC], ts_ms=t[2])
    first = StrategicDecision("volatile", 0.3, "conservative", [BTC])
    engine = ScriptedEngine({})
    summary = replay(engine, [BarStream(BTC, bars)], [later, first], PaperBroker())
    assert [c for c in engine.calls if c[0] == "decision" or c[2] in (t[1], t[2])] == [
        ("decision", "volatile"), ("bar", BTC, t[1]), ("decision", "ranging"), ("bar", BTC, t[2])]
    assert summary.decisions_applied == 2


def test_symbols_are_merged_in_time_order_with_ties_in_stream_order():
    a, b = flat_bars([100.0] * 3), flat_bars([10.0] * 4)
    b["ts"] = b["ts"] - 60_000  # ETH starts one minute earlier
    engine = ScriptedEngine({})
    replay(engine, [BarStream(BTC, a), BarStream(ETH, b)], broker=PaperBroker())
    order = [(c[2], c[1]) for c in engine.calls if c[0] == "bar"]
    assert order == sorted(order, key=lambda x: (x[0], [BTC, ETH].index(x[1])))
    assert len(order) == 7


def test_two_streams_of_one_symbol_are_rejected():
    with pytest.raises(ValueError, match="distinct"):
        replay(ScriptedEngine({}), [BarStream(BTC, flat_bars([1.0])), BarStream(BTC, flat_bars([1.0]))])


# ---------------------------------------------------- the real engine, generated bars


def test_the_demo_config_trades_on_a_short_generated_series(demo_run):
    summary, broker, _, _ = demo_run
    assert summary.trades > 0
    assert summary.ignored_signals == 0


def test_replay_is_bit_identical_across_runs(demo_run, bars_5k):
    summary, _, _, text = demo_run
    gen = TacticalSignalGenerator(config=demo_config())
    out = io.StringIO()
    again = replay(gen, [BarStream(BTC, bars_5k)], broker=PaperBroker(10_000.0), out=out, all_signals=True)
    assert out.getvalue() == text
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k not in ReplaySummary.TIMING_FIELDS}  # noqa: E731
    assert strip(again) == strip(summary)


def test_every_signal_is_written_with_all_signals_and_reads_back(demo_run, bars_5k):
    summary, _, _, text = demo_run
    lines = text.splitlines()
    assert len(lines) == summary.bars == len(bars_5k["ts"])
    signals = [TacticalSignal.from_dict(json.loads(line)) for line in lines]
    assert [s.ts_ms for s in signals] == bars_5k["ts"].tolist()
    sides = {side: sum(s.side.value == side for s in signals) for side in ("buy", "sell", "hold")}
    assert sides == summary.signals


def test_summary_agrees_with_an_independent_recount_of_the_fills(demo_run, bars_5k):
    summary, broker, gen, _ = demo_run
    cash, position, trades = 10_000.0, 0.0, 0
    for fill in broker.fills:
        sign = 1.0 if fill.side == "buy" else -1.0
        before = position
        position += sign * fill.qty
        cash -= sign * fill.qty * fill.price + fill.fee
        trades += before != 0.0 and abs(position) < 1e-12
    final = cash + position * bars_5k["close"][-1]
    assert summary.final_equity == pytest.approx(final, rel=1e-12)
    assert summary.pnl == pytest.approx(final - 10_000.0, rel=1e-9)
    assert summary.pnl_pct == pytest.approx((final - 10_000.0) / 100.0, rel=1e-9)
    assert summary.trades == trades == len(broker.trades)
    assert summary.fees == pytest.approx(sum(f.fee for f in broker.fills), rel=1e-12)
    assert sum(summary.fills.values()) == len(broker.fills)
    assert summary.wins == sum(t.pnl > 0 for t in broker.trades)
    # The engine, told every fill, books the same equity.
    assert gen.equity == pytest.approx(summary.final_equity, rel=1e-12)
    peak, worst = -np.inf, 0.0
    for equity in broker.equity_curve:
        peak = max(peak, equity)
        worst = max(worst, (peak - equity) / peak)
    assert summary.max_drawdown_pct == pytest.approx(worst * 100.0, rel=1e-12, abs=1e-15)
    assert len(broker.equity_curve) == summary.bars
    assert sum(summary.hold_codes.values()) == summary.signals["hold"]
    assert sum(summary.orders.values()) == summary.signals["buy"] + summary.signals["sell"]


def test_btc_and_eth_replay_together(btc_1m, eth_1m):
    n = 6_000
    streams = [BarStream(BTC, {k: v[:n] for k, v in btc_1m.items()}),
               BarStream(ETH, {k: v[:n] for k, v in eth_1m.items()})]
    gen = TacticalSignalGenerator(config=demo_config())
    broker = PaperBroker(gen.config.engine.initial_equity)
    out = io.StringIO()
    summary = replay(gen, streams, broker=broker, out=out, all_signals=True)
    assert summary.bars_by_symbol == {BTC: n, ETH: n}
    assert gen.symbols == (BTC, ETH)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    keys = [(d["ts_ms"], [BTC, ETH].index(d["symbol"])) for d in lines]
    assert keys == sorted(keys) and len(keys) == 2 * n
    assert gen.equity == pytest.approx(broker.equity, rel=1e-12)


# -------------------------------------------------------------------- helpers


@pytest.mark.parametrize(("name", "symbol"), [
    ("btcusdt_1m.csv.gz", "BTC/USDT"), ("ethusdt.csv", "ETH/USDT"), ("/x/y/SOLUSDC-1m.csv", "SOL/USDC"),
    ("btcusd_1d_2011-2025.csv.gz", "BTC/USD"), ("ethbtc_1m.csv", "ETH/BTC"), ("bars.csv.gz", None),
    ("usdt.csv", None),
])
def test_symbol_is_read_from_the_file_name(name, symbol):
    assert symbol_from_filename(name) == symbol


def test_default_decision_trades_the_replayed_symbols_and_never_goes_stale():
    d = default_decision([BTC, ETH])
    assert (d.regime, d.target_exposure, d.risk_appetite, d.universe, d.ts_ms) == (
        "trending", 0.5, "moderate", (BTC, ETH), None)


def test_the_demo_config_lowers_the_vote_thresholds_fixes_the_kelly_inputs_and_keeps_the_rest():
    demo, defaults = demo_config().to_dict(), L2Config().to_dict()
    assert (demo["model"]["consensus_threshold"], demo["model"]["alignment_threshold"],
            demo["model"]["confidence_threshold"]) == (0.5, 0.5, 0.6)
    assert (demo["risk"]["kelly_win_rate"], demo["risk"]["kelly_payoff_ratio"], demo["risk"]["allow_short"]) == (
        0.55, 1.5, True)
    for section, keys in {"model": ("consensus_threshold", "alignment_threshold", "confidence_threshold"),
                          "risk": ("kelly_win_rate", "kelly_payoff_ratio", "allow_short")}.items():
        for key in keys:
            del demo[section][key], defaults[section][key]
    assert demo == defaults


def test_a_bad_decision_line_is_named_with_its_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"regime": "trending", "target_exposure": 0.5, "risk_appetite": "moderate", '
                    '"universe": ["BTC/USDT"], "ts_ms": 5}\n\n'
                    '{"regime": "bull", "target_exposure": 0.5, "risk_appetite": "moderate", '
                    '"universe": ["BTC/USDT"]}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:3: .*regime='bull'"):
        load_decisions(path)


# ------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def btc_csv(tmp_path_factory, bars_5k) -> Path:
    return write_csv(tmp_path_factory.mktemp("bars") / "btcusdt_1m.csv.gz", bars_5k)


def test_replay_command_writes_what_the_python_replay_writes(btc_csv, demo_run, tmp_path, capsys):
    out = tmp_path / "signals.jsonl"
    argv = ["replay", "--data", str(btc_csv), "--config", str(shipped_config("demo")),
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    summary, _, _, text = demo_run
    orders = [line for line in text.splitlines() if json.loads(line)["side"] != "hold"]
    assert out.read_text() == "".join(line + "\n" for line in orders)
    printed = capsys.readouterr().out
    assert f"trades:      {summary.trades} closed" in printed
    assert "BTC/USDT <- " in printed


def test_replay_command_is_byte_identical_across_runs(btc_csv, tmp_path, capsys):
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        assert main(["replay", "--data", str(btc_csv), "--config", str(shipped_config("demo")),
                     "--out", str(out), "--all-signals", "--from", "2024-01-02", "--no-progress"]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    first = json.loads(outs[0].read_text().splitlines()[0])
    assert first["ts_ms"] == 1_704_153_600_000  # --from 2024-01-02 is inclusive


def test_replay_command_installs_the_decisions_file(btc_csv, tmp_path, capsys):
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text("\n".join(json.dumps(d) for d in [
        {"regime": "trending", "target_exposure": 0.5, "risk_appetite": "moderate", "universe": [BTC]},
        {"regime": "ranging", "target_exposure": 0.2, "risk_appetite": "aggressive", "universe": [BTC],
         "ts_ms": 1_704_100_000_000}]) + "\n")
    assert main(["replay", "--data", str(btc_csv), "--decisions", str(decisions), "--no-progress"]) == 0
    assert "decisions:   2 applied" in capsys.readouterr().out


def test_demo_command_trades_past_the_warm_up(capsys):
    assert main(["demo", "--bars", "4000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "DEMO config" in out and "LOWERS the seed's thresholds" in out
    assert "model.consensus_threshold 0.6 -> 0.5" in out
    closed = int(out.split("trades:")[1].split()[0])
    assert closed > 0
    assert "closed trades:" in out


def test_demo_needs_only_the_core_dependencies():
    # No tqdm, no pandas: the fallback progress counter on stderr.
    code = ("import sys; sys.modules['tqdm'] = None; sys.modules['pandas'] = None\n"
            "from l2fast.cli.main import main; sys.exit(main(['demo', '--bars', '2500']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "replay: 2,500/2,500 bars (100%)" in proc.stderr
    assert "throughput:" in proc.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "no/such/file.csv.gz"], "cannot read no/such/file.csv.gz"),
    (["--data", "{csv}", "--from", "2024-13-01"], "not a date"),
    (["--data", "{csv}", "--from", "2024-01-03", "--to", "2024-01-02"], "--from must be before --to"),
    (["--data", "{csv}", "--from", "2030-01-01"], "no bar in the requested window"),
    (["--data", "{csv}", "--symbol", BTC, "--symbol", ETH], "--symbol given 2 time(s) for 1 --data"),
    (["--data", "{plain}"], "pass --symbol"),
    (["--data", "{csv}", "--decisions", "{bad}"], "bad.jsonl:1"),
    (["--data", "{csv}", "--config", "{bad}"], "not valid TOML"),
    (["--data", "{csv}", "--fee-bps", "-1"], "fee_bps=-1.0"),
    (["--data", "{csv}", "--symbol", "btc"], "--symbol 'btc'"),
])
def test_bad_replay_input_is_a_clear_error_with_exit_code_2(argv, message, btc_csv, tmp_path, capsys):
    plain = tmp_path / "bars.csv.gz"
    plain.write_bytes(btc_csv.read_bytes())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"regime": "bull"}\n')
    argv = [a.format(csv=btc_csv, plain=plain, bad=bad) for a in argv]
    assert exit_code(["replay", *argv, "--no-progress"]) == 2
    assert message in capsys.readouterr().err

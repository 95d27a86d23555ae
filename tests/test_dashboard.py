"""The L2 dashboard: its rendering (rich console capture), its window of signals, and
``python -m l2fast dashboard --once`` against a real redis-server."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rich")

from rich.console import Console
from support import bus_key_file, bus_signer, exit_code, write_csv

from l2fast.data import shipped_config
from l2fast.engine._telemetry import STAGE_NAMES, MetricsRecorder
from l2fast.evaluation.synthetic import generate_bars
from l2fast.ops.dashboard import L2Dashboard, ReplayFeed
from l2fast.ops.monitoring import metrics_key, metrics_to_json, publish_metrics, read_metrics
from l2fast.signals import TacticalSignal

DEMO_CONFIG = shipped_config("demo")

BTC = "BTC/USDT"
T0 = 1_704_067_200_000
MINUTE = 60_000
CODES = ("ENTRY", "EXIT", "LOW_CONSENSUS", "DAILY_LOSS_LIMIT", "MAX_DAILY_TRADES")
MEMBERS = ("ppo_trend", "dqn_swing", "a2c_range")


def engine_metrics(*, signals: tuple[int, int, int] = (7, 3, 90), halted: bool = False,
                   active: int = 2) -> dict[str, Any]:
    """A recorder's dict plus the engine's keys; ``signals`` = (buy, sell, hold)."""
    m = MetricsRecorder(CODES, MEMBERS)
    buy, sell, hold = signals
    for side, n in ((1, buy), (-1, sell), (0, hold)):
        for _ in range(n):
            m.signal(side, 0 if side else 2)
    for c, k in ((0.8, 0.9), (0.6, 0.7)):
        m.vote(c, k)
    for _ in range(3):
        m.member(0, False, 1, 1)
    m.member(1, False, -1, 1)
    m.member(2, True, 0, 1)
    for ns in [20_000] * 90 + [60_000] * 10:
        m.latency(STAGE_NAMES.index("total"), ns)
    d = m.as_dict()
    d.update(positions={"active": active, "max": 5}, portfolio_heat=0.0325, equity=10_250.5, gross_exposure=1_999.0,
             halted=halted, entries_today=4, denials={"DAILY_LOSS_LIMIT": 3, "MAX_DAILY_TRADES": 1})
    return d


def signal(ts_ms: int, side: str = "buy", *, confidence: float = 0.9, consensus: float = 0.8,
           denial: str | None = None, voted: bool = True) -> TacticalSignal:
    reasoning: dict[str, Any] = {"code": "ENTRY" if side != "hold" else (denial or "WARM_UP")}
    if voted:
        reasoning["vote"] = {"confidence": confidence, "consensus": consensus}
    if denial is not None:
        reasoning["denial"] = {"code": denial}
    qty = 0.0 if side == "hold" else 0.01
    return TacticalSignal(BTC, side, qty, confidence, consensus, None, None, reasoning, ts_ms)


def text_of(dash: L2Dashboard, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(dash.render())
    return console.export_text()


def cells(line: str) -> list[str]:
    """A rendered line's cells: split on table borders and on runs of 2+ spaces."""
    return [c for part in line.split("│") for c in re.split(r"\s{2,}", part.strip()) if c]


def line_of(text: str, label: str) -> str:
    """The first rendered line holding ``label``."""
    return next(line for line in text.splitlines() if label in line)


def has_row(text: str, *expected: str) -> bool:
    """Whether some line holds ``expected`` as consecutive cells."""
    n = len(expected)
    for line in text.splitlines():
        found = cells(line)
        if any(tuple(found[i:i + n]) == expected for i in range(len(found) - n + 1)):
            return True
    return False


# ----------------------------------------------------------------- rendering


def test_panel_shows_the_seed_numbers_from_metrics_and_recent_signals():
    dash = L2Dashboard()
    signals = [signal(T0, "buy", confidence=0.70, consensus=0.60),
               signal(T0 + MINUTE, "sell", confidence=0.80, consensus=0.90),
               signal(T0 + 2 * MINUTE, "hold", confidence=0.60, consensus=0.30, denial="DAILY_LOSS_LIMIT")]
    dash.update(engine_metrics(), [s.to_dict() for s in signals])
    text = text_of(dash)
    assert has_row(text, "Signals (buy + sell)", "2", "10")
    assert has_row(text, "buy / sell / hold", "1 / 1 / 1", "7 / 3 / 90")
    assert has_row(text, "Average confidence", "0.700", "0.700")     # (0.7 + 0.8 + 0.6) / 3; (0.8 + 0.6) / 2
    assert has_row(text, "Ensemble consensus", "0.600", "0.800")     # (0.6 + 0.9 + 0.3) / 3; (0.9 + 0.7) / 2
    assert has_row(text, "Voting bars", "3", "2")
    assert has_row(text, "Active positions", "2/5", "entries today 4")
    assert has_row(text, "Portfolio heat", "3.25%", "equity 10,250.50 · gross exposure 1,999.00")
    # 90 bars at 20 us and 10 at 60 us: P95 is the bound of 60,000 ns's bucket (57,344, 65,536].
    assert has_row(text, "Latency P95", "65.5 µs", "per bar, over 100 bars")
    assert "as of 2024-01-01 00:02 UTC" in text


def test_latency_table_shows_every_stage_quantiles():
    dash = L2Dashboard()
    dash.update(engine_metrics())
    text = text_of(dash)
    # P50: the bound of 20,000 ns's bucket (16,384, 20,480].
    assert has_row(text, "total", "20.5 µs", "65.5 µs", "65.5 µs", "100")
    assert has_row(text, "technical", "-", "-", "-", "0")


def test_denials_table_counts_the_last_hour_and_since_start():
    dash = L2Dashboard()
    holds = [signal(T0 + k * MINUTE, "hold", denial="DAILY_LOSS_LIMIT") for k in range(2)]
    holds.append(signal(T0 + 3 * MINUTE, "hold", denial="POSITION_OPEN"))
    dash.update(engine_metrics(), [s.to_dict() for s in holds])
    text = text_of(dash)
    assert has_row(text, "DAILY_LOSS_LIMIT", "2", "3")
    assert has_row(text, "MAX_DAILY_TRADES", "0", "1")
    assert has_row(text, "POSITION_OPEN", "1", "-")


def test_agreement_table_shows_every_model_since_start():
    dash = L2Dashboard()
    dash.update(engine_metrics())
    text = text_of(dash)
    assert has_row(text, "ppo_trend", "3", "3", "100.0%", "0")
    assert has_row(text, "dqn_swing", "1", "0", "0.0%", "0")
    assert has_row(text, "a2c_range", "0", "0", "-", "1")


def test_names_from_the_metrics_are_shown_as_they_are_not_read_as_rich_markup():
    # A member, stage or denial code like "[/x]" raised rich's MarkupError on every redraw.
    m = engine_metrics()
    m["members"] = {"[/m]": m["members"]["ppo_trend"]}
    m["latency"] = {"[/s]": m["latency"]["total"]}
    m["denials"] = {"[/d]": 2}
    dash = L2Dashboard()
    dash.update(m)
    text = text_of(dash)
    assert has_row(text, "[/m]", "3", "3", "100.0%", "0")
    assert has_row(text, "[/s]", "20.5 µs", "65.5 µs", "65.5 µs", "100")
    assert has_row(text, "[/d]", "0", "2")


def test_the_last_hour_is_measured_on_signal_time_up_to_the_newest_signal():
    dash = L2Dashboard()
    old = [signal(T0 + k * MINUTE, "sell").to_dict() for k in range(5)]          # T0 .. T0 + 4 min
    new = [signal(T0 + 64 * MINUTE, "buy").to_dict(), signal(T0 + 65 * MINUTE, "buy").to_dict()]
    dash.update(None, old + new)
    # Newest at T0 + 65 min: the hour (T0 + 5 min, T0 + 65 min] leaves out every sell.
    assert has_row(text_of(dash), "buy / sell / hold", "2 / 0 / 0")
    dash.update(None, (), now_ms=T0 + 30 * MINUTE)
    # The sells fell out of memory; the buys lie after now.
    assert has_row(text_of(dash), "buy / sell / hold", "0 / 0 / 0")


def test_a_shorter_window_counts_fewer_signals():
    dash = L2Dashboard(window_ms=10 * MINUTE)
    dash.update(None, [signal(T0 + k * MINUTE, "buy").to_dict() for k in range(30)])
    assert has_row(text_of(dash), "Signals (buy + sell)", "10", "-")


def test_average_confidence_is_over_the_signals_whose_ensemble_voted():
    dash = L2Dashboard()
    dash.update(None, [signal(T0, "buy", confidence=0.9).to_dict(),
                       signal(T0 + MINUTE, "hold", confidence=0.0, voted=False).to_dict()])
    text = text_of(dash)
    assert has_row(text, "Average confidence", "0.900", "-")
    assert has_row(text, "Voting bars", "1", "-")


def test_without_metrics_the_state_rows_show_dashes_and_the_configured_max():
    text = text_of(L2Dashboard(max_positions=3))
    assert has_row(text, "Active positions", "-/3")
    assert has_row(text, "Portfolio heat", "-")
    assert has_row(text, "Latency P95", "-")
    assert has_row(text, "none", "0", "0")


def test_halted_engine_is_flagged():
    dash = L2Dashboard()
    dash.update(engine_metrics(halted=True))
    assert "HALTED: no new entries" in text_of(dash)


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="max_positions=0"):
        L2Dashboard(max_positions=0)
    with pytest.raises(ValueError, match="window_ms=0"):
        L2Dashboard(window_ms=0)


def test_live_display_redraws_on_update():
    console = Console(record=True, width=160, force_terminal=True, file=io.StringIO())
    with L2Dashboard(console=console) as dash:
        dash.update(engine_metrics(active=1))
        dash.update(engine_metrics(active=4))
    text = console.export_text()
    assert has_row(text, "Active positions", "1/5") and has_row(text, "Active positions", "4/5")


def test_replay_feed_redraws_every_n_bars_and_at_the_end():
    calls = []

    def metrics() -> dict[str, Any]:
        calls.append(1)
        return engine_metrics(active=len(calls))

    console = Console(record=True, width=160, file=io.StringIO())
    feed = ReplayFeed(L2Dashboard(console=console), metrics, every=2)
    with feed:
        for k in range(5):
            feed(k, signal(T0 + k * MINUTE, "buy"), 1_000)
        assert len(calls) == 2
    assert len(calls) == 3
    assert has_row(console.export_text(), "buy / sell / hold", "5 / 0 / 0")
    with pytest.raises(ValueError, match="every=0"):
        ReplayFeed(L2Dashboard(), metrics, every=0)


def test_demo_with_dashboard_ends_on_a_frame_that_agrees_with_the_summary(capsys):
    assert exit_code(["demo", "--bars", "3000", "--dashboard", "--dashboard-every", "700"]) == 0
    out = capsys.readouterr().out
    summary = re.search(r"signals: +([\d,]+) buy, ([\d,]+) sell, ([\d,]+) hold", out)
    assert summary, out
    buy, sell, hold = summary.groups()
    assert cells(line_of(out, "buy / sell / hold"))[-1] == f"{buy} / {sell} / {hold}"  # since start
    assert has_row(out, "Latency P95")
    denials = re.search(r"denials: +(.*)", out).group(1)
    for code, n in re.findall(r"([A-Z_]+) ([\d,]*\d)", denials):
        assert any(cells(line)[:1] == [code] and cells(line)[2:3] == [n] for line in out.splitlines()), code
    assert out.index("Model agreement") < out.index("bars:        3,000")


def test_replay_with_dashboard_ends_on_a_frame_that_agrees_with_the_summary(tmp_path, capsys):
    data = write_csv(tmp_path / "bars.csv", generate_bars(3000, seed=3))
    argv = ["replay", "--data", str(data), "--symbol", "BTC/USDT", "--config", str(DEMO_CONFIG), "--dashboard",
            "--dashboard-every", "700"]
    assert exit_code(argv) == 0
    out = capsys.readouterr().out
    buy, sell, hold = re.search(r"signals: +([\d,]+) buy, ([\d,]+) sell, ([\d,]+) hold", out).groups()
    assert cells(line_of(out, "buy / sell / hold"))[-1] == f"{buy} / {sell} / {hold}"
    assert int(buy.replace(",", "")) + int(sell.replace(",", "")) > 0  # the demo config trades here
    assert has_row(out, "Latency P95")
    assert out.index("Model agreement") < out.index("bars:        3,000")


# ----------------------------------------------------------------- the CLI against Redis


@pytest.fixture
def key_option(tmp_path: Path) -> list[str]:
    """The dashboard's bus key option (the signals below are signed with it)."""
    return ["--bus-key-file", str(bus_key_file(tmp_path))]


async def _publish(url: str, prefix: str, workers: dict[str, dict[str, Any]], signals: list[TacticalSignal]) -> None:
    from redis.asyncio import Redis

    from l2fast.bus import MessageBus, Topic
    from l2fast.bus.redis import RedisTransport

    client = Redis.from_url(url)
    try:
        for worker, metrics in workers.items():
            await publish_metrics(client, prefix, worker, metrics)
    finally:
        await client.aclose()
    async with MessageBus(RedisTransport(url, prefix=prefix), signer=bus_signer()) as bus:
        for s in signals:
            await bus.publish(Topic.SIGNALS, s)


def test_publish_metrics_sets_json_with_a_ttl_that_read_metrics_returns(redis_url):
    from redis.asyncio import Redis

    async def main() -> tuple[dict[str, Any], int]:
        client = Redis.from_url(redis_url)
        try:
            await publish_metrics(client, "pm*[x]:", "w1", engine_metrics(), ttl_s=17)
            await publish_metrics(client, "other:", "w2", engine_metrics())
            ttl = await client.ttl(metrics_key("pm*[x]:", "w1"))
            return await read_metrics(client, "pm*[x]:"), ttl
        finally:
            await client.aclose()

    found, ttl = asyncio.run(main())
    assert found == {"w1": engine_metrics()}
    assert 0 < ttl <= 17


def test_dashboard_once_shows_the_workers_metrics_and_the_signals_of_the_last_hour(redis_url, capsys, key_option):
    signals = [signal(T0 + k * MINUTE, "buy" if k % 2 else "sell") for k in range(6)]
    signals.append(signal(T0 + 6 * MINUTE, "hold", denial="MAX_DAILY_TRADES"))
    asyncio.run(_publish(redis_url, "once:", {"w1": engine_metrics()}, signals))
    assert exit_code(["dashboard", "--redis", redis_url, "--prefix", "once:", "--once", *key_option]) == 0
    out = capsys.readouterr().out
    assert "l2fast tactical layer (L2): w1" in out
    assert has_row(out, "buy / sell / hold", "3 / 3 / 1", "7 / 3 / 90")
    assert has_row(out, "Active positions", "2/5")
    assert has_row(out, "Portfolio heat", "3.25%")
    assert has_row(out, "Latency P95", "65.5 µs")
    assert has_row(out, "MAX_DAILY_TRADES", "1", "1")
    assert has_row(out, "ppo_trend", "3", "3", "100.0%", "0")
    assert "as of 2024-01-01 00:06 UTC" in out


def test_dashboard_once_merges_several_workers(redis_url, capsys, key_option):
    asyncio.run(_publish(redis_url, "two:", {"w1": engine_metrics(), "w2": engine_metrics(signals=(1, 1, 1))}, []))
    assert exit_code(["dashboard", "--redis", redis_url, "--prefix", "two:", "--once", *key_option]) == 0
    out = capsys.readouterr().out
    assert "l2fast tactical layer (L2): w1, w2" in out
    assert has_row(out, "buy / sell / hold", "0 / 0 / 0", "8 / 4 / 91")
    assert has_row(out, "Active positions", "4/10")
    assert has_row(out, "DAILY_LOSS_LIMIT", "0", "6")
    assert has_row(out, "ppo_trend", "6", "6", "100.0%", "0")


def test_dashboard_skips_stream_entries_that_are_not_signals(redis_url, capsys, caplog):
    from redis import Redis

    client = Redis.from_url(redis_url)
    try:
        client.xadd("junk:l2.signals", {"d": b"not json"})
    finally:
        client.close()
    asyncio.run(_publish(redis_url, "junk:", {}, [signal(T0, "buy")]))
    assert exit_code(["dashboard", "--redis", redis_url, "--prefix", "junk:", "--once", "--no-auth"]) == 0
    assert has_row(capsys.readouterr().out, "buy / sell / hold", "1 / 0 / 0")
    assert "skipped, not a signal" in caplog.text


@pytest.mark.parametrize(("worker", "entry"), [
    ("evil", "{}"),
    ("evil", json.dumps({"votes": 1})),
    ("evil", "[" * 100_000 + "]" * 100_000),
    ("[/x]", None),
], ids=["empty object", "missing keys", "deep nesting", "markup in the name"])
def test_dashboard_skips_a_metrics_entry_it_cannot_show_and_shows_the_others(redis_url, capsys, caplog, key_option,
                                                                           worker, entry):
    # Any user of the bus's Redis may SET a metrics key (or an older build wrote it): one
    # such entry stopped the dashboard (KeyError in the merge, RecursionError in the JSON,
    # rich's MarkupError on the worker's name in the title).
    from redis import Redis

    prefix = f"m{abs(hash((worker, entry))) % 10**8}:"
    asyncio.run(_publish(redis_url, prefix, {"w1": engine_metrics()}, [signal(T0, "buy")]))
    client = Redis.from_url(redis_url)
    try:
        client.set(metrics_key(prefix, worker), entry if entry is not None else metrics_to_json(engine_metrics()))
    finally:
        client.close()
    assert exit_code(["dashboard", "--redis", redis_url, "--prefix", prefix, "--once", *key_option]) == 0
    out = capsys.readouterr().out
    assert has_row(out, "buy / sell / hold", "1 / 0 / 0")
    if entry is None:
        assert "l2fast tactical layer (L2): [/x], w1" in out
    else:
        assert "l2fast tactical layer (L2): w1" in out and "metrics entry" in caplog.text


def test_dashboard_without_redis_server_gives_up_after_its_timeout_with_exit_3_naming_the_url(capsys, key_option):
    assert exit_code(["dashboard", "--redis", "redis://127.0.0.1:1/0", "--once", "--redis-timeout", "0.3",
                      *key_option]) == 3
    assert "error: redis at redis://127.0.0.1:1/0 unreachable: " in capsys.readouterr().err


def test_dashboard_refuses_a_non_positive_refresh(capsys, key_option):
    assert exit_code(["dashboard", "--redis", "redis://127.0.0.1:1/0", "--refresh", "0", *key_option]) == 2
    assert "--refresh 0: must be > 0" in capsys.readouterr().err


# ----------------------------------------------------------------- without rich

_NO_RICH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "rich" or name.startswith("rich."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def test_l2fast_imports_without_rich():
    code = _NO_RICH + "import l2fast, l2fast.ops.monitoring, l2fast.cli.main, l2fast.engine.generator; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    assert "rich" not in proc.stderr


@pytest.mark.parametrize("argv", [["dashboard", "--redis", "redis://127.0.0.1:1/0", "--once"],
                                  ["demo", "--bars", "10", "--dashboard"]])
def test_dashboard_without_rich_exits_2_naming_the_extra(argv):
    code = _NO_RICH + f"from l2fast.cli.main import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install l2fast[dashboard]" in proc.stderr

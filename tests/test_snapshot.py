"""Engine snapshots: restoring and continuing gives the signals of an engine that never
stopped, bit for bit; corrupt, truncated, foreign or mismatched files are refused; writes
are atomic."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from l2fast import L2Config, StrategicDecision, TacticalSignalGenerator
from l2fast.engine.snapshot import FORMAT_VERSION, MAGIC, decode, encode, read_snapshot
from l2fast.errors import SnapshotError
from l2fast.evaluation.paper import PaperBroker
from l2fast.evaluation.synthetic import generate_bars

BTC, ETH = "BTC/USDT", "ETH/USDT"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")
# Open vote gates and fixed Kelly inputs, so that the run enters, exits, trails stops and
# hits the daily limits: every part of the state changes.
CONFIG = {
    "model": {"consensus_threshold": 0.0, "alignment_threshold": 0.0, "confidence_threshold": 0.0},
    "risk": {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.5, "allow_short": True, "max_daily_trades": 6,
             "min_trades_for_live_stats": 5},
}


def _decision(ts_ms: int | None = None, regime: str = "trending") -> StrategicDecision:
    return StrategicDecision(regime=regime, target_exposure=0.7, risk_appetite="aggressive",
                             universe=[BTC, ETH], ts_ms=ts_ms)


def _aligned_rows(btc: dict[str, np.ndarray], eth: dict[str, np.ndarray], n: int) -> list[tuple[str, tuple]]:
    """``n`` minutes of BTC and ETH bars, interleaved by minute (both symbols per minute)."""
    ts = np.intersect1d(btc["ts"], eth["ts"])[-n:]
    rows = []
    picked = [{k: v[np.isin(bars["ts"], ts)].tolist() for k, v in bars.items()} for bars in (btc, eth)]
    for k in range(len(ts)):
        for symbol, bars in zip((BTC, ETH), picked):
            rows.append((symbol, tuple(bars[c][k] for c in COLUMNS)))
    return rows


class _Desk:
    """L1 around an engine: a paper broker whose fills are reported before each bar."""

    def __init__(self, gen: TacticalSignalGenerator) -> None:
        self.gen = gen
        self.broker = PaperBroker(gen.config.engine.initial_equity)

    def bar(self, symbol: str, row: tuple) -> dict:
        ts, o, h, lo, c, _ = row
        for f in self.broker.on_bar(symbol, ts, o, h, lo, c):
            self.gen.on_fill(f.symbol, f.side, f.qty, f.price, f.ts_ms, fee=f.fee)
        signal = self.gen.on_bar(symbol, *row)
        self.broker.on_signal(signal)
        return signal.to_dict()


def _run(rows: list[tuple[str, tuple]], restart_every: int | None, tmp_path: Path,
         decisions: dict[int, StrategicDecision]) -> tuple[list[dict], TacticalSignalGenerator, int]:
    gen = TacticalSignalGenerator(L2Config.from_dict(CONFIG))
    desk = _Desk(gen)
    out, restarts = [], 0
    for k, (symbol, row) in enumerate(rows):
        if k in decisions:
            desk.gen.on_strategic_decision(decisions[k])
        if restart_every and k and k % restart_every == 0:
            path = desk.gen.snapshot(tmp_path / "engine.l2snap")
            desk.gen = TacticalSignalGenerator.restore(path)
            restarts += 1
        out.append(desk.bar(symbol, row))
    return out, desk.gen, restarts


@pytest.fixture(scope="module")
def real_rows(btc_1m, eth_1m) -> list[tuple[str, tuple]]:
    return _aligned_rows(btc_1m, eth_1m, 5_000)


def test_restored_engines_continue_bit_for_bit_on_real_btc_and_eth(real_rows, tmp_path) -> None:
    t0 = real_rows[0][1][0]
    decisions = {0: _decision(t0), 3_001: _decision(real_rows[3_001][1][0], "volatile")}
    expected, ref, _ = _run(real_rows, None, tmp_path, decisions)
    # Restarts at many points: in warm-up, with positions and pending entries open, after
    # day rolls, with closed trades in the live statistics.
    got, restored, restarts = _run(real_rows, 997, tmp_path, decisions)
    assert restarts == len(real_rows) // 997
    assert got == expected  # every field of every signal, signal ids included
    assert restored._dump_state() == ref._dump_state()
    assert (restored.equity, restored.cash, restored.entries_today) == (ref.equity, ref.cash, ref.entries_today)
    assert restored.trade_stats == ref.trade_stats and ref.trade_stats["trades"] > 0
    codes = {s["reasoning"]["code"] for s in expected}
    assert {"ENTRY", "WARM_UP", "POSITION_OPEN"} <= codes, codes


def test_snapshot_round_trip_keeps_every_byte_of_state_and_the_decision(tmp_path) -> None:
    bars = generate_bars(3_000, seed=3)
    gen = TacticalSignalGenerator(L2Config.from_dict(CONFIG))
    gen.on_strategic_decision(_decision(int(bars["ts"][0]), "ranging"))
    for row in zip(*(bars[c].tolist() for c in COLUMNS)):
        gen.on_bar(BTC, *row)
    restored = TacticalSignalGenerator.restore(gen.snapshot(tmp_path / "s.l2snap"))
    assert restored.export_state() == gen.export_state()
    assert restored.decision == gen.decision
    assert restored.symbols == gen.symbols
    np.testing.assert_array_equal(restored.features(BTC), gen.features(BTC))
    header, _ = read_snapshot(tmp_path / "s.l2snap")
    assert header["format"] == FORMAT_VERSION and header["symbols"] == [BTC, ETH]
    # The header's layout: members in vote order, models by name (as every snapshot so far).
    assert header["members"] == list(gen.members) == ["trend_agent", "mean_revert_agent", "volatility_agent"]
    assert list(header["models"]) == sorted(gen.members)


def test_export_state_into_a_fresh_engine_continues_bit_for_bit() -> None:
    bars = generate_bars(2_000, seed=4)
    rows = list(zip(*(bars[c].tolist() for c in COLUMNS)))
    gen = TacticalSignalGenerator(L2Config.from_dict(CONFIG))
    gen.on_strategic_decision(_decision(int(bars["ts"][0])))
    for row in rows[:1_500]:
        gen.on_bar(BTC, *row)
    state = gen.export_state()
    assert (state.symbols, state.decision, state.ensemble_failures) == ((BTC, ETH), gen.decision, 0)
    twin = TacticalSignalGenerator(L2Config.from_dict(CONFIG))
    twin.import_state(state)
    assert twin.export_state() == state
    for row in rows[1_500:]:
        assert twin.on_bar(BTC, *row).to_dict() == gen.on_bar(BTC, *row).to_dict()


def test_import_state_refuses_core_bytes_that_do_not_fit() -> None:
    state = TacticalSignalGenerator().export_state()
    with pytest.raises(SnapshotError):
        TacticalSignalGenerator().import_state(dataclasses.replace(state, core=state.core + b"\x00"))


def test_an_engine_without_bars_or_decision_restores(tmp_path) -> None:
    gen = TacticalSignalGenerator()
    restored = TacticalSignalGenerator.restore(gen.snapshot(tmp_path / "empty.l2snap"))
    assert restored.decision is None and restored.symbols == ()
    assert restored.on_bar(BTC, 1_704_067_200_000, 1.0, 1.0, 1.0, 1.0, 1.0).reasoning["code"] == "NO_DECISION"


@pytest.fixture
def saved(tmp_path) -> Path:
    bars = generate_bars(500, seed=5)
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(_decision())
    for row in zip(*(bars[c].tolist() for c in COLUMNS)):
        gen.on_bar(BTC, *row)
    return gen.snapshot(tmp_path / "s.l2snap")


def _rewrite_header(path: Path, change) -> None:
    header, state = read_snapshot(path)
    change(header)
    path.write_bytes(encode(header, state))


def test_a_flipped_byte_is_refused_as_corrupt(saved) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x40
    saved.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        TacticalSignalGenerator.restore(saved)


@pytest.mark.parametrize("cut", [1, 40, 1000])
def test_a_truncated_file_is_refused(saved, cut) -> None:
    saved.write_bytes(saved.read_bytes()[:-cut])
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        TacticalSignalGenerator.restore(saved)


def test_a_file_that_is_not_a_snapshot_is_refused(tmp_path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"name": "trend"}) * 10)
    with pytest.raises(SnapshotError, match="bad magic"):
        TacticalSignalGenerator.restore(path)
    with pytest.raises(SnapshotError, match="cannot read"):
        TacticalSignalGenerator.restore(tmp_path / "missing.l2snap")


def test_another_format_version_is_refused(saved) -> None:
    data = bytearray(saved.read_bytes())
    struct.pack_into("<I", data, len(MAGIC), FORMAT_VERSION + 1)
    saved.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=f"format {FORMAT_VERSION + 1}"):
        TacticalSignalGenerator.restore(saved)


@pytest.mark.parametrize("field, value, match", [
    ("layout", "0123456789abcdef", "state layout"),
    ("machine", {"arch": "s390x", "byteorder": "big", "pointer_bytes": 8}, "written on"),
])
def test_a_snapshot_of_another_build_or_machine_is_refused(saved, field, value, match) -> None:
    _rewrite_header(saved, lambda h: h.update({field: value}))
    with pytest.raises(SnapshotError, match=match):
        TacticalSignalGenerator.restore(saved)


def test_changed_models_are_refused_naming_the_member(saved) -> None:
    def change(header: dict) -> None:
        header["models"]["trend_agent"] = "0" * 64

    _rewrite_header(saved, change)
    with pytest.raises(SnapshotError, match="trend_agent"):
        TacticalSignalGenerator.restore(saved)


def test_state_that_does_not_fit_the_config_is_refused(saved) -> None:
    # Another RSI period list changes the feature count: the state no longer fits.
    def change(header: dict) -> None:
        header["config"]["technical"]["rsi_periods"] = [14]

    _rewrite_header(saved, change)
    with pytest.raises(SnapshotError, match="does not match this engine|cannot rebuild"):
        TacticalSignalGenerator.restore(saved)


@pytest.mark.parametrize(("key", "value"), [("bb_period", 21), ("stoch", [5, 3, 3])])
def test_state_whose_window_sizes_differ_is_refused(saved, key, value) -> None:
    # Same feature count, other window sizes: the technical block's buffers do not fit.
    def change(header: dict) -> None:
        header["config"]["technical"][key] = value

    _rewrite_header(saved, change)
    with pytest.raises(SnapshotError, match="technical block buffer sizes differ"):
        TacticalSignalGenerator.restore(saved)


def test_trailing_or_missing_state_bytes_are_refused(saved) -> None:
    header, state = read_snapshot(saved)
    for bad in (state + b"\0" * 8, state[:-8]):
        saved.write_bytes(encode(header, bad))
        with pytest.raises(SnapshotError, match="trailing|truncated"):
            TacticalSignalGenerator.restore(saved)


def test_a_failed_write_keeps_the_previous_snapshot_and_leaves_no_temporary(saved, monkeypatch) -> None:
    before = saved.read_bytes()
    gen = TacticalSignalGenerator.restore(saved)
    gen.on_strategic_decision(_decision(regime="volatile"))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        gen.snapshot(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_decode_splits_what_encode_joins() -> None:
    header = {"format": FORMAT_VERSION, "x": [1, 2.5, None]}
    assert decode(encode(header, b"\x01\x02\x03")) == (header, b"\x01\x02\x03")

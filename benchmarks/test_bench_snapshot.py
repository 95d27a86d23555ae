"""Engine snapshot: ``TacticalSignalGenerator.snapshot`` against the bare atomic write it wraps.

The engine follows BTC/USDT and ETH/USDT, warmed on 3,000 bars each (every indicator,
level table and window filled). Ours writes the whole state (header with the config,
the compiled core's state bytes, SHA-256) atomically: temporary file, fsync, rename,
fsync of the folder. The alternative writes the same number of bytes the same atomic way
with nothing to serialise: the I/O floor any crash-safe snapshot pays, so the ratio
(below 1 by construction) says what the serialisation adds to it. The issue's absolute
target, 5 ms per snapshot, is reported beside it. Gate: about half today's ratio.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from l2fast import StrategicDecision, TacticalSignalGenerator
from l2fast.evaluation.synthetic import generate_bars

GROUP = "engine snapshot, 2 symbols"
ROUNDS = 60
# Measured 0.64x (1.9 ms against 1.2 ms: both dominated by the two fsyncs) on the 2-core
# development machine.
GATE = 0.3
TARGET = 0.8
OURS_TARGET_S = 5e-3
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def engine() -> TacticalSignalGenerator:
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.5, risk_appetite="moderate",
                                                universe=["BTC/USDT", "ETH/USDT"]))
    for symbol, seed in (("BTC/USDT", 1), ("ETH/USDT", 2)):
        bars = generate_bars(3_000, seed=seed)
        for row in zip(*(bars[c].tolist() for c in COLUMNS)):
            gen.on_bar(symbol, *row)
    return gen


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    os.fsync(dir_fd)
    os.close(dir_fd)


@pytest.mark.parametrize("impl", ["l2fast.engine.snapshot", "atomic write of the same bytes"])
def test_engine_snapshot(bench, engine: TacticalSignalGenerator, tmp_path: Path, impl: str) -> None:
    path = tmp_path / "engine.l2snap"
    if impl.startswith("l2fast"):
        b = bench(GROUP, impl, ours_target_s=OURS_TARGET_S, percentiles=True)
        b.pedantic(engine.snapshot, args=(path,), rounds=ROUNDS, warmup_rounds=3)
        assert TacticalSignalGenerator.restore(path)._dump_state() == engine._dump_state()
    else:
        data = os.urandom(len(engine.snapshot(path).read_bytes()))
        b = bench(GROUP, impl, gate=GATE, target=TARGET, percentiles=True)
        b.pedantic(_atomic_write, args=(path, data), rounds=ROUNDS, warmup_rounds=3)

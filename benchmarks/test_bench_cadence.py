"""Members with a decision timeframe cost nothing in inference on the bars they do not act on.

Ours is the engine whose three shipped members carry ``decision_timeframe = "1h"`` (the
manifests of a copy of the shipped folder); the alternative is the same engine with the
members acting on every 1m bar (the default). Both are warmed on the same ``WARM`` real
BTC/USDT bars under the same L3 decision, then timed one bar per round on the following
bars, hot (back to back). 59 bars in 60 close no hour: on those ours runs no forward at
all and the members' last votes stand, so the ratio is what skipping inference saves of a
whole bar (the technical step, vote and decision still run).

Gate (alternative median / ours median): measured 1.71-1.82x in three runs on the 2-core
development machine (ours 1.38-1.43 us, every bar 2.36-2.53 us); gated at 1.2x, well
above the 1.0x a cadenced member that still paid for its forward would tie at.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2fast import StrategicDecision, TacticalSignalGenerator
from l2fast.config import L2Config
from l2fast.data import models_dir

GROUP = "engine per 1m bar, members deciding hourly (59 of 60 bars run no inference)"
OURS, ALT = "l2fast.on_bar (decision_timeframe 1h)", "on_bar with members on every bar"
WARM, ROUNDS = 4_000, 20_000
GATE, TARGET = 1.2, 1.5
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate", universe=["BTC/USDT"])


@pytest.fixture(scope="module")
def hourly_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cadence") / "models"
    shutil.copytree(models_dir(), folder)
    for manifest in folder.glob("*.json"):
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "decision_timeframe": "1h"}))
    return folder


def _engine(models: Path | None, bars: dict) -> tuple[TacticalSignalGenerator, Iterator[tuple]]:
    config = L2Config() if models is None else L2Config.from_dict({"model": {"models_dir": str(models)}})
    gen = TacticalSignalGenerator(config)
    gen.on_strategic_decision(DECISION)
    rows = zip(*(bars[k].tolist() for k in ("ts", "open", "high", "low", "close", "volume")))
    for _ in range(WARM):
        gen.on_bar("BTC/USDT", *next(rows))
    return gen, rows


@pytest.mark.parametrize("impl", [OURS, ALT])
def test_cadenced_members_skip_inference(bench, btc_1m, hourly_models, impl: str) -> None:
    gen, rows = _engine(hourly_models if impl == OURS else None, btc_1m)
    signal = gen.on_bar("BTC/USDT", *next(rows))
    assert signal.reasoning["code"] not in ("WARM_UP", "NO_DECISION")

    def bar() -> None:
        gen.on_bar("BTC/USDT", *next(rows))

    if impl == OURS:
        b = bench(GROUP, impl, percentiles=True)
    else:
        b = bench(GROUP, impl, gate=GATE, target=TARGET, percentiles=True)
    b.pedantic(bar, rounds=ROUNDS, warmup_rounds=200)

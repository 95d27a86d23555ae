"""The compiled MLP forward of the three shipped agents vs onnxruntime's io_binding run of them.

Ours is ``FusedEnsemble.compiled()``: the compiled batch-1 forward of every member
(:mod:`l2fast.models.compiled`, at the widest level this CPU runs), reading the bound
float32 row and writing each member's action and probabilities. The alternative is what
the engine runs per bar with ``model.inference = "onnxruntime"``: ``FusedEnsemble.session_run()``,
the members' stacked graph in one single-threaded onnxruntime session through a pre-bound
io_binding, same row in, its own bound buffers out. Both start from the same row of real BTC features (seeded synthetic
bars without the data folder), and are checked
to give the same actions and probabilities within 1e-5 before timing.

Hot: back-to-back calls. Cold: 16 MB written before each call (outside the timing), so the
weights and onnxruntime's state come from memory, as they do when a bar arrives once a
minute after other work.

Gates (alternative median / ours median) sit at roughly half the ratios measured on the
2-core development machine; ``target`` is the issue's ">= 8x".
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from l2fast.data import models_dir
from l2fast.models.ensemble import FusedEnsemble
from l2fast.technical.state import TechnicalState

MODELS_DIR = models_dir()
HOT, COLD = "compiled MLP forward, 3 agents, hot", "compiled MLP forward, 3 agents, 16 MB touched before each call"
ROUNDS_HOT, ROUNDS_COLD = 20_000, 2_000
OURS, ALT = "l2fast.MlpForward", "ort io_binding (stacked graph)"
# Measured 9.6-9.9x hot (0.95-1.01 us vs 9.4-9.7 us) and 9.9-10.2x cold (4.1-4.4 us vs
# 42-44 us) in three runs on the 2-core development machine (AVX-512 level).
GATE_HOT, GATE_COLD = 5.0, 5.0
TARGET = 8.0


@pytest.fixture(scope="module")
def ensemble(bars_1m) -> FusedEnsemble:
    state = TechnicalState()
    rows = state.update_many(bars_1m["ts"], bars_1m["open"], bars_1m["high"], bars_1m["low"], bars_1m["close"],
                             bars_1m["volume"], record=state.names)
    ens = FusedEnsemble.from_dir(MODELS_DIR, state.names)
    assert ens.compiled is not None and len(ens.compiled_buffers) == len(ens.names)
    used = np.concatenate(list(ens.columns.values()))
    ens.input_row[0] = rows[np.flatnonzero(np.isfinite(rows[:, used]).all(axis=1))[-1]]
    ens.session_run()
    ens.compiled()
    for theirs, ours in zip(ens.session_buffers, ens.compiled_buffers):
        assert theirs.action[0] == ours.action[0]
        np.testing.assert_allclose(ours.scores, theirs.scores, rtol=0, atol=1e-5)
    return ens


@pytest.mark.parametrize("impl", [OURS, ALT])
def test_compiled_forward_hot(bench, ensemble, impl: str) -> None:
    if impl == OURS:
        b = bench(HOT, impl, percentiles=True)
        b.extra_info["level"] = ensemble.compiled.level_name
        b.pedantic(ensemble.compiled, rounds=ROUNDS_HOT, warmup_rounds=500)
    else:
        b = bench(HOT, impl, gate=GATE_HOT, target=TARGET, percentiles=True)
        b.pedantic(ensemble.session_run, rounds=ROUNDS_HOT, warmup_rounds=500)


@pytest.mark.parametrize("impl", [OURS, ALT])
def test_compiled_forward_cold(bench, ensemble, evict, impl: str) -> None:
    if impl == OURS:
        b = bench(COLD, impl, percentiles=True)
        b.extra_info["level"] = ensemble.compiled.level_name
        b.pedantic(ensemble.compiled, setup=evict, rounds=ROUNDS_COLD, warmup_rounds=20)
    else:
        b = bench(COLD, impl, gate=GATE_COLD, target=TARGET, percentiles=True)
        b.pedantic(ensemble.session_run, setup=evict, rounds=ROUNDS_COLD, warmup_rounds=20)

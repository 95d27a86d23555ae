"""The whole engine per 1-minute bar: ``TacticalSignalGenerator.on_bar`` against the alternatives.

Every implementation is warmed on the first ``WARM`` bars (real BTC/USDT when the data
folder exists, else seeded synthetic bars; well past the shipped agents' 2,100-bar
lookback) under the same L3 decision, then timed one bar per round on the consecutive
bars that follow, so rounds that close a 5m, 15m or 1h bar come at their natural rate
and show in p99. Every timed bar runs the three agents and the vote (checked: no
``WARM_UP``/``NO_DECISION`` shortcut). Ours is ``TacticalSignalGenerator()`` with the
default config, so it runs the members on whatever ``model.inference`` defaults to.

Three regimes, one group each, every round one bar timed alone (p50 and p99 recorded);
the regime's pre-step runs in the pedantic ``setup``, outside the timing:

* ``engine per 1m bar`` (hot): bars back to back, the caches holding all a bar touches,
  as in a replay or a feed of many symbols.
* ``engine per 1m bar, 16 MB touched before each call``: the setup writes every byte of a
  16 MB buffer (the ``evict`` fixture of conftest.py, shared with the compiled-forward
  benchmark) before handing over the next bar, so the engine's state, the weights and
  much of the code come from memory: a bar arriving once a minute after other work.
* ``engine per 1m bar, 2 ms sleep before each call``: the setup sleeps 2 ms, so the
  thread gives up its core and keeps what the core did meanwhile left in the caches (an
  idle core, or another process on a loaded machine): a bar waking an otherwise idle
  process.

Ours against, in every regime:

* ``ort.InferenceSession.run x3``: only the inference, three bare single-threaded
  sessions on inputs gathered and cast to float32 outside the timing -- what the
  ensemble alone costs done the plain way. Checked to choose the actions ours chose.
* ``talib.stream+merged-onnx+python``: the best plain-library assembly
  (:class:`engine_alternatives.PlainLibraryPipeline`): TA-Lib 0.8 streaming handles over a
  Python resampler for exactly the manifests' features, ONE merged ONNX graph (every
  member's own nodes, built with onnx's helpers) through io_binding, Python vote, sizing
  and risk. Checked before timing: every feature equals ours (rel 1e-6; ``sr_breakout``
  is approximated, see that module) and the agents that do not read ``sr_breakout``
  choose the actions ours chose; after timing its features are checked again.

and, hot only (a bar of it takes some 35 ms, far longer than any pre-step's effect):

* ``pandas+ta+sb3.predict x3``: the naive pipeline (:class:`engine_alternatives.
  NaivePipeline`): pandas resampling and pandas + ``ta`` recomputation over the last
  2,400 bars, then SB3 ``predict`` per agent. Checked: its 1m and 5m features and its
  windowed features on 15m/1h equal ours (its EMA-type ones restart from the window, the
  naive approach's own error), and SB3 ``predict`` on ours' features chooses ours'
  actions.

Group ``engine replay``: the same as bars per second, a loop of ``REPLAY_BARS`` bars per
round, ours against the plain-library assembly.

``test_process_footprint`` times ``import l2fast`` in a fresh interpreter, and records the
resident memory of a process holding the engine with the three agents after it ran them
(asserted within the 120 MB budget: memory is not noisy, unlike time).

Gates (alternative median / l2fast median) sit at roughly half the ratio measured on the
2-core development machine, never above the target (but the naive pipeline's 1,000x, set
before that rule: its target is 500x, its ratio some 14,000x). ``target`` is the issue's
aspiration (issue 14's for the per-bar groups: >= 10x the plain-library assembly and >= 6x
the three bare runs hot, >= 6x the assembly with 16 MB touched, >= 4x with the 2 ms
sleep); ours' own target, an absolute time per bar, is reported, not gated.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import engine_alternatives as ea
import numpy as np
import pytest

from l2fast import StrategicDecision, TacticalSignal, TacticalSignalGenerator
from l2fast.config import L2Config
from l2fast.data import models_dir
from l2fast.models.loading import LoadedModel, load_model, session_options
from l2fast.models.manifest import INPUT_NAME
from l2fast.technical.state import TechnicalState

Bars = dict[str, np.ndarray]
# What a builder returns: the per-bar call to time, and a check to run after timing (or None).
Timed = tuple[Callable[..., object], Callable[[], None] | None]

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = models_dir()
SAVED_MODELS = ROOT / "saved_models"
SYMBOL = "BTC/USDT"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")
WARM = 10_000
DECISION = StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate",
                             universe=[SYMBOL])
NO_VOTE_CODES = {"NO_DECISION", "STALE_DECISION", "WARM_UP"}
# Features whose value depends on how far back the series starts (exponential smoothing).
EMA_BASES = ("rsi_", "macd_", "atr_", "adx_", "plus_di_", "minus_di_")

GROUP = "engine per 1m bar"
OURS = "l2fast.TacticalSignalGenerator.on_bar"
BARE = "ort.InferenceSession.run x3"
PLAIN = "talib.stream+merged-onnx+python"
NAIVE = "pandas+ta+sb3.predict x3"
HOT, TOUCHED, SLEPT = "hot", "16 MB touched", "2 ms sleep"
SLEEP_S = 0.002


class Case(NamedTuple):
    """How one implementation is timed in one regime.

    Attributes:
        rounds: Timed rounds, one bar each.
        warmup: Untimed rounds before them (bars too, under the same pre-step).
        gate: For an alternative, the lowest acceptable ratio alternative / ours (None for ours).
        target: For an alternative, the issue's ratio; for ours, its time per bar in seconds.
    """

    rounds: int
    warmup: int
    gate: float | None
    target: float | None


# (regime, impl) -> Case. Gates set from the engine with model.inference = "compiled": five
# runs interleaved with four of the onnxruntime engine on the 2-core development machine
# (median ratio, lowest in brackets; the onnxruntime engine's median after the slash): hot,
# three bare runs 11.6x (11.4) / 2.45x, plain library 16.8x (16.2) / 3.5x, naive 14,100x
# (12,700) / 2,980x; 16 MB touched, three bare runs 4.7x (4.65) / 1.3x, plain library 6.9x
# (6.6) / 1.9x; 2 ms sleep, three bare runs 6.5x (4.6) / 1.5x, plain library 10.9x (7.0) /
# 2.4x. The naive gate stays where the onnxruntime engine's ratio put it.
CASES: dict[tuple[str, str], Case] = {
    (HOT, OURS): Case(20_000, 500, None, 2.5e-6),
    (HOT, BARE): Case(20_000, 500, 5.0, 6.0),
    (HOT, PLAIN): Case(10_000, 300, 8.0, 10.0),
    (HOT, NAIVE): Case(15, 2, 1000.0, 500.0),
    (TOUCHED, OURS): Case(4_000, 20, None, 15e-6),
    (TOUCHED, BARE): Case(4_000, 20, 2.4, None),
    (TOUCHED, PLAIN): Case(4_000, 20, 3.5, 6.0),
    (SLEPT, OURS): Case(3_000, 20, None, 25e-6),
    (SLEPT, BARE): Case(3_000, 20, 3.0, None),
    (SLEPT, PLAIN): Case(3_000, 20, 4.0, 4.0),
}


def _group(regime: str) -> str:
    """The benchmark group of a regime (the hot one keeps the name its baseline keys carry)."""
    return GROUP if regime == HOT else f"{GROUP}, {regime} before each call"


REPLAY_GROUP = "engine replay"
REPLAY_BARS = 5_000
REPLAY_ROUNDS = 4
REPLAY_OURS_TARGET_S = 1 / 50_000  # the 50,000 bars/s
REPLAY_GATE, REPLAY_TARGET = 4.0, 4.0  # measured 12-18x with the compiled forward (2.5x on onnxruntime)

RSS_BUDGET_KB = 120 * 1024


def _rows(bars: Bars, start: int, stop: int) -> list[tuple]:
    """Bars ``start:stop`` as the ``(ts, o, h, l, c, v)`` tuples of Python numbers a feed delivers."""
    return list(zip(*(bars[k][start:stop].tolist() for k in COLUMNS)))


def _reference_features(bars: Bars, n: int) -> dict[str, float]:
    """The technical core's features after the first ``n`` bars (checked against TA-Lib in
    test_bench_technical_state and the test suite)."""
    state = TechnicalState(L2Config().technical)
    state.update_many(*(bars[k][:n] for k in COLUMNS))
    return state.as_dict()


def _warmed_engine(bars: Bars) -> tuple[TacticalSignalGenerator, TacticalSignal]:
    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(DECISION)
    signal = None
    for row in _rows(bars, 0, WARM):
        signal = gen.on_bar(SYMBOL, *row)
    return gen, signal


@pytest.fixture(scope="module")
def bars(bars_1m: Bars) -> Bars:
    """The 1-minute series, checked long enough for the warm-up and every timed bar."""
    n = WARM + max(c.rounds + c.warmup for c in CASES.values()) + (REPLAY_ROUNDS + 1) * REPLAY_BARS
    assert len(bars_1m["ts"]) >= n, f"need {n} bars"
    return bars_1m


@pytest.fixture(scope="module")
def reference(bars: Bars) -> dict[str, object]:
    """Ours after the warm-up: its features, and each member's target on the last warm-up bar."""
    gen, signal = _warmed_engine(bars)
    assert signal.reasoning["code"] not in NO_VOTE_CODES, signal.reasoning
    return {
        "features": dict(zip(gen.feature_names, gen.features(SYMBOL).tolist())),
        "targets": {n: m["target"] for n, m in signal.reasoning["vote"]["members"].items()},
        "members": list(gen.members),
    }


@pytest.fixture(scope="module")
def models() -> list[LoadedModel]:
    return [load_model(MODELS_DIR / f"{name}.json") for name in L2Config().model.weights]


def _mismatches(got: dict[str, float], want: dict[str, float],
                names: Iterable[str]) -> dict[str, tuple[float, float]]:
    return {n: (got[n], want[n]) for n in names
            if not math.isclose(got[n], want[n], rel_tol=1e-6, abs_tol=1e-12)}


def _feed(rows: list[tuple], before: Callable[[], None] | None = None) -> Callable[[], tuple[tuple, dict]]:
    """A pedantic ``setup`` giving each round the arguments of the next bar, after ``before()``."""
    it: Iterator[tuple] = iter(rows)

    def next_bar() -> tuple[tuple, dict]:
        if before is not None:
            before()
        return (SYMBOL, *next(it)), {}

    return next_bar


# ------------------------------------------------------------------ per-bar group


def _ours(bars: Bars, reference: dict, models: list[LoadedModel]) -> Timed:
    gen, _ = _warmed_engine(bars)
    return gen.on_bar, None


def _bare_sessions(bars: Bars, reference: dict, models: list[LoadedModel]) -> Timed:
    import onnxruntime as ort

    feats = reference["features"]
    runs = []
    for model in models:
        sess = ort.InferenceSession(str(model.onnx_path), sess_options=session_options(),
                                    providers=["CPUExecutionProvider"])
        x = np.array([[feats[n] for n in model.feature_names]], dtype=np.float32)
        action = int(sess.run(None, {INPUT_NAME: x})[0][0])
        assert model.manifest["action_targets"][action] == reference["targets"][model.name], model.name
        runs.append((sess.run, {INPUT_NAME: x}))

    def three_runs(*bar: object) -> None:
        for run, feeds in runs:
            run(None, feeds)

    return three_runs, None


def _plain_library(bars: Bars, reference: dict, models: list[LoadedModel]) -> Timed:
    pytest.importorskip("talib")
    pipe = ea.PlainLibraryPipeline(models)
    pipe.on_decision(DECISION)
    signal = None
    for row in _rows(bars, 0, WARM):
        signal = pipe.on_bar(SYMBOL, *row)
    assert signal["reasoning"]["code"] not in NO_VOTE_CODES
    covered = [n for n in pipe.names if not n.startswith("sr_breakout")]
    got = dict(zip(pipe.names, pipe.features.row.tolist()))
    wrong = _mismatches(got, reference["features"], covered)
    assert not wrong, f"plain-library features differ from ours: {wrong}"
    readers = {m.name for m in models if any(f.startswith("sr_breakout") for f in m.feature_names)}
    for name, vote in signal["reasoning"]["vote"]["members"].items():
        if name not in readers:
            assert vote["target"] == reference["targets"][name], name

    def recheck() -> None:
        want = _reference_features(bars, pipe.bars)
        wrong = _mismatches(dict(zip(pipe.names, pipe.features.row.tolist())), want, covered)
        assert not wrong, f"plain-library features drifted from ours while timed: {wrong}"

    return pipe.on_bar, recheck


def _naive(bars: Bars, reference: dict, models: list[LoadedModel]) -> Timed:
    pytest.importorskip("pandas")
    pytest.importorskip("ta")
    pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    manifests = {m.name: m.manifest for m in models}
    pipe = ea.NaivePipeline(ea.load_sb3_bundles(SAVED_MODELS, reference["members"]), manifests)
    pipe.on_decision(DECISION)
    pipe.warm_up(_rows(bars, 0, WARM - 1))
    signal = pipe.on_bar(SYMBOL, *_rows(bars, WARM - 1, WARM)[0])
    assert signal["reasoning"]["code"] not in NO_VOTE_CODES
    got = pipe.features()
    exact = [n for n in pipe.names if not n.startswith("sr_breakout")
             and (ea.split_feature(n)[1] in ("1m", "5m") or not n.startswith(EMA_BASES))]
    wrong = _mismatches(got, reference["features"], exact)
    assert not wrong, f"pandas+ta features differ from ours: {wrong}"
    for name, (action, _) in zip(pipe.decider.members, pipe.act(reference["features"])):
        assert manifests[name]["action_targets"][action] == reference["targets"][name], name
    return pipe.on_bar, None


BUILDERS = {OURS: _ours, BARE: _bare_sessions, PLAIN: _plain_library, NAIVE: _naive}


def _sleep() -> None:
    time.sleep(SLEEP_S)


@pytest.mark.parametrize(("regime", "impl"), list(CASES), ids=[f"{r}: {i}" for r, i in CASES])
def test_engine_per_1m_bar(bench, bars: Bars, reference: dict, models: list[LoadedModel],
                           evict: Callable[[], None], regime: str, impl: str) -> None:
    case = CASES[regime, impl]
    on_bar, recheck = BUILDERS[impl](bars, reference, models)
    if impl == OURS:
        b = bench(_group(regime), impl, ours_target_s=case.target, percentiles=True)
    else:
        b = bench(_group(regime), impl, gate=case.gate, target=case.target, percentiles=True)
    before = {HOT: None, TOUCHED: evict, SLEPT: _sleep}[regime]
    b.pedantic(on_bar, setup=_feed(_rows(bars, WARM, WARM + case.rounds + case.warmup), before),
               rounds=case.rounds, warmup_rounds=case.warmup)
    if recheck is not None:
        recheck()


# ------------------------------------------------------------------ replay group


@pytest.mark.parametrize("impl", [f"{OURS} loop", f"{PLAIN} loop"])
def test_engine_replay(bench, bars: Bars, reference: dict, models: list[LoadedModel], impl: str) -> None:
    if impl.startswith("l2fast"):
        on_bar, recheck = _ours(bars, reference, models)
        b = bench(REPLAY_GROUP, impl, calls=REPLAY_BARS, ours_target_s=REPLAY_OURS_TARGET_S)
    else:
        on_bar, recheck = _plain_library(bars, reference, models)
        b = bench(REPLAY_GROUP, impl, gate=REPLAY_GATE, target=REPLAY_TARGET, calls=REPLAY_BARS)
    chunks = iter([_rows(bars, start, start + REPLAY_BARS)
                   for start in range(WARM, WARM + (REPLAY_ROUNDS + 1) * REPLAY_BARS, REPLAY_BARS)])

    def next_chunk() -> tuple[tuple, dict]:
        return (next(chunks),), {}

    def replay(rows: list[tuple]) -> None:
        for row in rows:
            on_bar(SYMBOL, *row)

    b.pedantic(replay, setup=next_chunk, rounds=REPLAY_ROUNDS, warmup_rounds=1)
    b.extra_info["bars_per_s"] = REPLAY_BARS / b.stats.stats.median
    if recheck is not None:
        recheck()


# ------------------------------------------------------------------ process footprint


_IMPORT_PROBE = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import l2fast
    t1 = time.perf_counter()
    l2fast.TacticalSignalGenerator  # the lazy import of the engine, onnxruntime and onnx
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "engine_import_s": t2 - t1}))
""")

_MEMORY_PROBE = textwrap.dedent("""
    import json
    from l2fast import StrategicDecision, TacticalSignal, TacticalSignalGenerator
    from l2fast.evaluation.synthetic import generate_bars

    gen = TacticalSignalGenerator()
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.7,
                                                risk_appetite="moderate", universe=["BTC/USDT"]))
    bars = generate_bars(3_000, seed=7)
    for row in zip(*(bars[k].tolist() for k in ("ts", "open", "high", "low", "close", "volume"))):
        signal = gen.on_bar("BTC/USDT", *row)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({"code": signal.reasoning["code"],
                      "rss_kb": int(status["VmRSS"].split()[0]), "hwm_kb": int(status["VmHWM"].split()[0])}))
""")


def _run_probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_process_footprint(bench, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("resident memory is read from /proc (Linux)")
    b = bench("process footprint", "l2fast import (fresh interpreter)")
    imports: list[dict] = []
    b.pedantic(lambda: imports.append(_run_probe(_IMPORT_PROBE)), rounds=5, warmup_rounds=1)
    memory = _run_probe(_MEMORY_PROBE)
    assert memory["code"] not in NO_VOTE_CODES, memory
    b.extra_info.update(
        import_s=float(np.median([x["import_s"] for x in imports])),
        engine_import_s=float(np.median([x["engine_import_s"] for x in imports])),
        rss_mb=memory["rss_kb"] / 1024, peak_rss_mb=memory["hwm_kb"] / 1024,
    )
    with capsys.disabled():
        print(f"\nimport l2fast {b.extra_info['import_s'] * 1e3:.1f} ms, then the engine's modules "
              f"{b.extra_info['engine_import_s'] * 1e3:.0f} ms; engine with 3 agents after 3,000 bars: "
              f"RSS {b.extra_info['rss_mb']:.1f} MB, peak {b.extra_info['peak_rss_mb']:.1f} MB")
    assert memory["hwm_kb"] <= RSS_BUDGET_KB, f"peak RSS {memory['hwm_kb'] / 1024:.1f} MB > 120 MB"

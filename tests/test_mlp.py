"""The compiled MLP forward (l2fast.models._mlp) against its float64 twin and onnxruntime.

Observations are the technical core's feature vectors on real BTC 1-minute bars (every
member's inputs warmed up). Tolerances:

- tanh: |approximation - float64 tanh| <= TANH_BOUND = 3.5e-7 at every level (measured
  max 3.4e-7 without FMA, 2.6e-7 with, on 2,000,001 points of [-12, 12]; onnxruntime's own
  Tanh uses the same rational approximation);
- kernel vs onnxruntime (batch 1, the engine's call): equal actions, probabilities within
  1e-5 (the issue's bound; measured about 1e-6);
- kernel vs the float64 twin: probabilities within 1e-5, and equal actions wherever the
  twin's top-1/top-2 margin exceeds 1e-5 (inside it, float32 rounding legitimately decides).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("onnx")

from l2fast.data import models_dir
from l2fast.errors import ConfigError, InvalidInputError
from l2fast.models import compiled
from l2fast.models._mlp import LEVELS, MlpForward, best_level, tanh_approx
from l2fast.models.ensemble import FusedEnsemble
from l2fast.models.loading import load_model
from l2fast.models.stacking import mlp_chain
from l2fast.technical.state import TechnicalState

from reference.mlp import forward as forward_ref

MODELS_DIR = models_dir()
TANH_BOUND = 3.5e-7
N_ROWS = 2_000
SUPPORTED = LEVELS[:LEVELS.index(best_level()) + 1]


@pytest.fixture(scope="module")
def ensemble() -> FusedEnsemble:
    return FusedEnsemble.from_dir(MODELS_DIR)


@pytest.fixture(scope="module")
def real_rows(btc_1m, ensemble) -> np.ndarray:
    """Feature vectors on real BTC bars, float32 as the engine writes its row."""
    state = TechnicalState()
    rows = state.update_many(btc_1m["ts"], btc_1m["open"], btc_1m["high"], btc_1m["low"], btc_1m["close"],
                             btc_1m["volume"], record=ensemble.feature_names)
    used = np.concatenate(list(ensemble.columns.values()))
    warm = np.flatnonzero(np.isfinite(rows[:, used]).all(axis=1))
    assert len(warm) >= N_ROWS
    return rows[warm[np.linspace(0, len(warm) - 1, N_ROWS).astype(int)]].astype(np.float32)


def _chains(ensemble):
    import onnx

    return {m.name: mlp_chain(onnx.load(m.onnx_path)) for m in ensemble.members}


def _run_forward(ensemble, rows, level):
    """Every shipped member through one MlpForward at ``level``: actions [N, M], scores [N, M, A]."""
    chains = _chains(ensemble)
    row = np.zeros((1, rows.shape[1]), np.float32)
    outs = [(np.zeros(1, np.int64), np.zeros((1, chains[n].n_actions), np.float32)) for n in ensemble.names]
    plans = [compiled.plan_for(chains[n], ensemble.columns[n], a, s) for n, (a, s) in zip(ensemble.names, outs)]
    forward = MlpForward(row, plans, level)
    actions = np.zeros((len(rows), len(plans)), np.int64)
    scores = np.zeros((len(rows), len(plans), outs[0][1].shape[1]), np.float32)
    for k, r in enumerate(rows):
        row[0] = r
        forward()
        for m, (a, s) in enumerate(outs):
            actions[k, m], scores[k, m] = a[0], s[0]
    return actions, scores


@pytest.mark.parametrize("level", SUPPORTED)
def test_tanh_approximation_error_is_bounded_at_every_level(level) -> None:
    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-30, 9.0, -9.0, 20.0, -20.0])])
    err = np.abs(tanh_approx(x, level).astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() <= TANH_BOUND
    assert np.all(np.abs(tanh_approx(x, level)) <= 1.0)


@pytest.mark.parametrize("level", SUPPORTED)
def test_kernel_equals_onnxruntime_batch_one_on_real_btc_rows(ensemble, real_rows, level) -> None:
    actions, scores = _run_forward(ensemble, real_rows, level)
    for m, member in enumerate(ensemble.members):
        obs = real_rows[:, ensemble.columns[member.name]]
        for k in range(len(obs)):
            ref = member.session.run(None, {"obs": obs[k:k + 1]})
            assert actions[k, m] == ref[0][0], (member.name, k)
            np.testing.assert_allclose(scores[k, m], ref[1][0], rtol=0, atol=1e-5, err_msg=member.name)


@pytest.mark.parametrize("level", SUPPORTED)
def test_kernel_equals_its_float64_twin_on_real_btc_rows(ensemble, real_rows, level) -> None:
    chains = _chains(ensemble)
    rows = real_rows[:400]
    actions, scores = _run_forward(ensemble, rows, level)
    for m, name in enumerate(ensemble.names):
        for k, r in enumerate(rows):
            action, probs = forward_ref(chains[name], r[ensemble.columns[name]])
            np.testing.assert_allclose(scores[k, m], probs, rtol=0, atol=1e-5)
            top = sorted(probs)
            if top[-1] - top[-2] > 1e-5:
                assert actions[k, m] == action, (name, k)


def test_levels_agree_with_each_other(ensemble, real_rows) -> None:
    results = [_run_forward(ensemble, real_rows[:500], level) for level in SUPPORTED]
    for actions, scores in results[1:]:
        np.testing.assert_array_equal(actions, results[0][0])
        np.testing.assert_allclose(scores, results[0][1], rtol=0, atol=2e-6)


def test_every_shipped_member_compiles_and_passes_its_load_time_check(ensemble) -> None:
    assert [(p.name, p.path, p.reason, p.rows) for p in ensemble.paths] == [
        (n, "compiled", None, compiled.CHECK_ROWS) for n in ensemble.names]
    assert all(p.max_score_diff <= compiled.SCORE_TOLERANCE for p in ensemble.paths)
    assert ensemble.compiled is not None and ensemble.compiled.level_name == best_level()
    # The default: every member runs compiled per bar, the session not at all.
    assert ensemble.inference == "compiled" and ensemble.forward is ensemble.compiled
    assert not ensemble.uses_session and ensemble.run_bound is ensemble.compiled
    assert "compiled forward verified for 3/3" in repr(ensemble)


def test_compiled_inference_writes_what_onnxruntime_writes(real_rows) -> None:
    ort_side = FusedEnsemble.from_dir(MODELS_DIR, inference="onnxruntime")
    ours = FusedEnsemble.from_dir(MODELS_DIR, inference="compiled")
    assert ort_side.forward is None and ort_side.run_bound is ort_side.session_run
    assert ours.inference == "compiled" and ours.run_bound is ours.compiled
    for r in real_rows[:300]:
        ort_side.input_row[0] = r
        ours.input_row[0] = r
        ort_side.run_bound()
        ours.run_bound()
        for a, b in zip(ort_side.member_buffers, ours.member_buffers):
            assert a.name == b.name and a.action[0] == b.action[0]
            np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("level", SUPPORTED)
def test_the_level_is_forced_by_the_environment_at_load(monkeypatch, level) -> None:
    monkeypatch.setenv(compiled.LEVEL_VARIABLE, level)
    assert FusedEnsemble.from_dir(MODELS_DIR).compiled.level_name == level


def test_an_unknown_level_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(compiled.LEVEL_VARIABLE, "sse9")
    with pytest.raises(ConfigError, match="L2FAST_MLP_LEVEL"):
        compiled.level_from_env()
    with pytest.raises(InvalidInputError, match="level"):
        tanh_approx([0.0], "sse9")


def test_a_member_failing_its_check_stays_on_onnxruntime_with_the_reason(monkeypatch, caplog) -> None:
    monkeypatch.setattr(compiled, "SCORE_TOLERANCE", 0.0)
    with caplog.at_level(logging.WARNING, logger="l2fast.models"):
        ensemble = FusedEnsemble.from_dir(MODELS_DIR, inference="compiled")
    assert ensemble.compiled is None and ensemble.inference == "onnxruntime"
    assert all(p.path == "onnxruntime" and "differ from onnxruntime" in p.reason for p in ensemble.paths)
    assert "runs on onnxruntime" in caplog.text
    assert "onnxruntime (probs differ" in ensemble.describe_paths()


def test_a_member_failing_its_check_reads_the_session_while_the_others_run_compiled(monkeypatch,
                                                                                   real_rows) -> None:
    check = compiled._check

    def trend_fails(model, *args):
        return ("forced for the test", 0.0) if model.name == "trend_agent" else check(model, *args)

    monkeypatch.setattr(compiled, "_check", trend_fails)
    mixed = FusedEnsemble.from_dir(MODELS_DIR, inference="compiled")
    alone = FusedEnsemble.from_dir(MODELS_DIR, inference="onnxruntime")
    assert mixed.inference == "compiled+onnxruntime" and mixed.uses_session
    assert [p.path for p in mixed.paths] == ["compiled", "onnxruntime", "compiled"]  # name order
    assert mixed.member_buffers[1] is mixed.session_buffers[1]
    assert mixed.member_buffers[0] is mixed.compiled_buffers[0] and mixed.member_buffers[2] is mixed.compiled_buffers[1]
    for r in real_rows[:200]:
        mixed.input_row[0] = r
        alone.input_row[0] = r
        mixed.run_bound()
        alone.run_bound()
        for a, b in zip(alone.member_buffers, mixed.member_buffers):
            assert a.action[0] == b.action[0]
            np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-5)
        # The failing member's numbers are onnxruntime's own.
        np.testing.assert_array_equal(mixed.member_buffers[1].scores, alone.member_buffers[1].scores)
    assert set(mixed.run(real_rows[0])) == set(alone.run(real_rows[0]))


def test_a_graph_that_is_not_a_plain_mlp_says_so(ensemble) -> None:
    member = ensemble.members[0]
    forward, paths = compiled.compile_members([member], [None], [np.arange(member.observation_size)],
                                              np.zeros((1, member.observation_size), np.float32),
                                              [(np.zeros(1, np.int64), np.zeros((1, 7), np.float32))], "baseline")
    assert forward is None and paths[0].path == "onnxruntime" and "not a plain MLP" in paths[0].reason


def test_check_rows_are_deterministic_and_follow_the_scaler(ensemble) -> None:
    chain = _chains(ensemble)[ensemble.names[0]]
    a, b = compiled.check_rows(chain), compiled.check_rows(chain)
    np.testing.assert_array_equal(a, b)
    mean = chain.prefix[1][1]
    assert np.all(np.abs(np.median(a, axis=0) - mean) <= 0.2 * np.abs(chain.prefix[2][1]) + 1e-6)


def test_forward_refuses_plans_that_do_not_fit() -> None:
    model = load_model(MODELS_DIR / "trend_agent.json")
    import onnx

    chain = mlp_chain(onnx.load(model.onnx_path))
    row = np.zeros((1, 5), np.float32)
    plan = compiled.plan_for(chain, np.arange(20), np.zeros(1, np.int64), np.zeros((1, 7), np.float32))
    with pytest.raises(InvalidInputError, match="columns"):
        MlpForward(row, [plan], "baseline")
    with pytest.raises(InvalidInputError, match="row"):
        MlpForward(np.zeros((1, 20), np.float64), [plan], "baseline")
    with pytest.raises(InvalidInputError, match="scores"):
        MlpForward(np.zeros((1, 20), np.float32),
                   [compiled.plan_for(chain, np.arange(20), np.zeros(1, np.int64), np.zeros((1, 6), np.float32))],
                   "baseline")


@pytest.mark.parametrize("failing, bars", [(None, 7000), ("trend_agent", 2500)],
                         ids=["all-compiled", "one-on-onnxruntime"])
def test_the_engine_on_the_compiled_forward_gives_the_same_signals_on_real_btc_and_eth(btc_1m, eth_1m, monkeypatch,
                                                                                       failing, bars) -> None:
    """``model.inference = "compiled"`` (the default): every side, code, quantity, stop and take-profit of
    onnxruntime's engine, confidence and consensus within 1e-6 (the members' probabilities
    differ by about 1e-6 at most, and both are weighted means of them); also with one
    member failing its check, which then reads the session's outputs each bar."""
    from test_engine import BTC, ETH, _aligned, _config, _decision, _Fills, _view

    from l2fast.engine.generator import TacticalSignalGenerator

    if failing is not None:
        check = compiled._check
        monkeypatch.setattr(compiled, "_check", lambda model, *args: ("forced for the test", 0.0)
                            if model.name == failing else check(model, *args))
    risk = {"allow_short": True, "max_daily_trades": 4, "atr_multiplier": 8.0, "min_trades_for_live_stats": 5}
    ours = TacticalSignalGenerator(_config(risk=risk))
    theirs = TacticalSignalGenerator(_config(model={"inference": "onnxruntime"}, risk=risk))
    per_bar = "compiled" if failing is None else "compiled+onnxruntime"
    assert ours.ensemble.inference == per_bar and theirs.ensemble.inference == "onnxruntime"
    assert ours.metrics()["inference"]["per_bar"] == per_bar
    assert f"inference={per_bar}" in repr(ours)
    assert ("trend_agent: compiled" if failing is None else "trend_agent: onnxruntime (forced") in repr(ours)
    decision = _decision((BTC, ETH))
    for gen in (ours, theirs):
        gen.on_strategic_decision(decision)
    streams = dict(zip((BTC, ETH), _aligned(btc_1m, eth_1m, bars)))
    fills = {id(ours): _Fills(), id(theirs): _Fills()}
    entries = 0
    for k in range(len(streams[BTC])):
        for symbol, rows in streams.items():
            bar = rows[k]
            views = []
            for gen in (ours, theirs):
                fills[id(gen)].before_bar(symbol, bar, [gen])
                views.append(_view(gen.on_bar(symbol, *bar)))
                fills[id(gen)].after_signal(symbol, views[-1])
            got, exp = views
            where = f"{symbol} bar {k}"
            for key in ("side", "code", "qty", "stop_loss", "take_profit"):
                assert got[key] == exp[key], f"{where}: {key} {got[key]!r} != {exp[key]!r}"
            for key in ("confidence", "consensus"):
                assert abs(got[key] - exp[key]) <= 1e-6, f"{where}: {key}"
            entries += exp["code"] == "ENTRY"
    assert entries > 0 and ours.equity == theirs.equity


# ---------------------------------------------------------------------------------------
# heads and activations the shipped agents do not use, on graphs written here


def _graph(head: str, *, acts=("Sigmoid", "Relu"), scaler: str = "double", tie: bool = False, seed: int = 3):
    """A plain-MLP graph as the exporter writes it, random weights: 6 features, 3 layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n, widths = 6, (24, 17, 5)
    inits, nodes, x = [], [], "obs"

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    mean, scale = rng.normal(50, 20, n), rng.uniform(5, 30, n)
    if scaler == "double":
        nodes += [helper.make_node("Cast", ["obs"], ["x64"], to=TensorProto.DOUBLE),
                  helper.make_node("Sub", ["x64", const("mean", mean)], ["xs"]),
                  helper.make_node("Div", ["xs", const("scale", scale)], ["xd"]),
                  helper.make_node("Cast", ["xd"], ["x0"], to=TensorProto.FLOAT)]
    else:  # float32 steps: a Sub and a Mul without Casts
        nodes += [helper.make_node("Sub", ["obs", const("mean", mean.astype(np.float32))], ["xs"]),
                  helper.make_node("Mul", ["xs", const("inv", (1 / scale).astype(np.float32))], ["x0"])]
    x, width = "x0", n
    for k, (out, act) in enumerate(zip(widths, (*acts, None))):
        w = rng.normal(0, 1 / np.sqrt(width), (out, width)).astype(np.float32)
        b = rng.normal(0, 0.1, out).astype(np.float32)
        if tie and act is None:
            w[3], b[3] = w[1], b[1]  # actions 1 and 3 always tie
        nodes.append(helper.make_node("Gemm", [x, const(f"W{k}", w), const(f"B{k}", b)], [f"h{k}"], transB=1))
        x, width = f"h{k}", out
        if act is not None:
            nodes.append(helper.make_node(act, [x], [f"a{k}"]))
            x = f"a{k}"
    a = widths[-1]
    if head == "argmax":
        nodes += [helper.make_node("Identity", [x], ["q_values"]),
                  helper.make_node("ArgMax", [x], ["action"], axis=1, keepdims=0)]
        outputs = [("action", TensorProto.INT64, ["N"]), ("q_values", TensorProto.FLOAT, ["N", a])]
    elif head == "categorical":
        nodes += [helper.make_node("ReduceLogSumExp", [x], ["lse"], axes=[-1], keepdims=1),
                  helper.make_node("Sub", [x, "lse"], ["norm"]),
                  helper.make_node("Softmax", ["norm"], ["probs"], axis=-1),
                  helper.make_node("ArgMax", ["probs"], ["action"], axis=1, keepdims=0)]
        outputs = [("action", TensorProto.INT64, ["N"]), ("probs", TensorProto.FLOAT, ["N", a])]
    else:  # box: tanh, float32 unscale to [low, high], clip
        low, high = np.float32([-2, -1, 0, 0.5, -3]), np.float32([2, 1, 4, 0.75, 3])
        nodes += [helper.make_node("Tanh", [x], ["t"]),
                  helper.make_node("Add", ["t", const("one", np.float32(1))], ["u1"]),
                  helper.make_node("Mul", ["u1", const("half", np.float32(0.5))], ["u2"]),
                  helper.make_node("Mul", ["u2", const("range", high - low)], ["u3"]),
                  helper.make_node("Add", [const("low", low), "u3"], ["u4"]),
                  helper.make_node("Min", ["u4", const("act_high", high)], ["u5"]),
                  helper.make_node("Max", ["u5", const("act_low", low)], ["action"])]
        outputs = [("action", TensorProto.FLOAT, ["N", a])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", n])],
                              [helper.make_tensor_value_info(*o) for o in outputs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _as_member(proto, bounds=None):
    """What compile_members reads of a LoadedModel, over an onnxruntime session of ``proto``."""
    from types import SimpleNamespace

    import onnxruntime as ort

    from l2fast.models.loading import session_options

    sess = ort.InferenceSession(proto.SerializeToString(), sess_options=session_options(),
                                providers=["CPUExecutionProvider"])
    names = tuple(o.name for o in proto.graph.output)

    def run(rows):  # as LoadedModel.run: a Box action clipped to the manifest's bounds
        out = dict(zip(names, sess.run(None, {"obs": rows})))
        if bounds is not None:
            out["action"] = np.clip(out["action"], *bounds)
        return out

    return SimpleNamespace(name="toy", session=sess, output_names=names, action_bounds=bounds, run=run)


def _compile_toy(proto, level, bounds=None):
    chain = mlp_chain(proto)
    assert chain is not None
    member = _as_member(proto, bounds)
    row = np.zeros((1, 6), np.float32)
    box = chain.head == "box"
    action = np.zeros((1, chain.n_actions), np.float32) if box else np.zeros(1, np.int64)
    scores = None if box else np.zeros((1, chain.n_actions), np.float32)
    forward, paths = compiled.compile_members([member], [chain], [np.arange(6)], row, [(action, scores)], level)
    assert (paths[0].path, paths[0].reason) == ("compiled", None)
    return chain, member, forward, row, action, scores


def _toy_rows(n=3000, seed=5):
    rng = np.random.default_rng(seed)
    return rng.normal(50, 60, (n, 6)).astype(np.float32)


@pytest.mark.parametrize("level", SUPPORTED)
@pytest.mark.parametrize("head, scaler", [("argmax", "double"), ("categorical", "float"), ("box", "double")])
def test_heads_activations_and_float32_scalers_match_onnxruntime_and_the_twin(head, scaler, level) -> None:
    proto = _graph(head, scaler=scaler)
    bounds = (np.float32([-1.5, -1, 0, 0.5, -3]), np.float32([2, 1, 4, 0.7, 3])) if head == "box" else None
    chain, member, forward, row, action, scores = _compile_toy(proto, level, bounds)
    rows = _toy_rows()
    ref = member.run(rows)
    for k, r in enumerate(rows):
        row[0] = r
        forward()
        want, want_scores = forward_ref(chain, r)
        if head == "box":
            np.testing.assert_allclose(action[0], ref["action"][k], rtol=0, atol=1e-5)
            np.testing.assert_allclose(action[0], np.clip(want, *bounds), rtol=0, atol=1e-5)
            assert np.all((action[0] >= bounds[0]) & (action[0] <= bounds[1]))
        else:
            assert action[0] == ref["action"][k], k
            np.testing.assert_allclose(scores[0], ref[member.output_names[1]][k], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(scores[0], want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", SUPPORTED)
@pytest.mark.parametrize("head", ["argmax", "categorical"])
def test_tied_actions_go_to_the_first_maximum(head, level) -> None:
    proto = _graph(head, acts=("Tanh", "Tanh"), tie=True)
    chain, member, forward, row, action, scores = _compile_toy(proto, level)
    rng = np.random.default_rng(0)
    picked_tie = 0
    for r in rng.normal(50, 60, (2000, 6)).astype(np.float32):
        row[0] = r
        forward()
        assert scores[0, 1] == scores[0, 3]
        assert action[0] != 3
        picked_tie += action[0] == 1
        assert action[0] == member.session.run(["action"], {"obs": r[None, :]})[0][0]
    assert picked_tie > 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_feature_gives_what_each_member_alone_gives(ensemble, real_rows, value) -> None:
    # Each member's own session, not the stacked graph: there 0 x inf in the zero blocks
    # makes every member's outputs NaN, while the compiled forward keeps members apart.
    row, buffers = ensemble.input_row, ensemble.compiled_buffers
    for col in range(0, row.shape[1], 7):
        row[0] = real_rows[-1]
        row[0, col] = value
        ensemble.compiled()
        for member, out in zip(ensemble.members, buffers):
            ref = member.run(row[0, ensemble.columns[member.name]][None, :])
            np.testing.assert_allclose(out.scores[0], ref["probs"][0], rtol=0, atol=1e-5, equal_nan=True)
            if np.isfinite(ref["probs"]).all():
                assert out.action[0] == ref["action"][0]


def test_run_some_runs_only_the_named_members(ensemble, real_rows) -> None:
    # The engine's forward_some for members that do not act: the others' outputs keep their values.
    forward, buffers = ensemble.compiled, ensemble.compiled_buffers
    ensemble.input_row[0] = real_rows[0]
    forward()
    before = [(b.action.copy(), b.scores.copy()) for b in buffers]
    ensemble.input_row[0] = real_rows[-1]
    forward.run_some([1])
    for k, (b, (action, scores)) in enumerate(zip(buffers, before)):
        if k != 1:
            assert np.array_equal(b.action, action) and np.array_equal(b.scores, scores)
    ran = (buffers[1].action.copy(), buffers[1].scores.copy())
    forward()
    assert np.array_equal(buffers[1].action, ran[0]) and np.array_equal(buffers[1].scores, ran[1])
    with pytest.raises(IndexError, match="member index 7"):
        forward.run_some([7])

"""The fused ensemble graph against each shipped agent run on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from l2fast.data import models_dir
from l2fast.errors import InvalidInputError, ModelLoadError
from l2fast.evaluation.synthetic import generate_bars
from l2fast.models.ensemble import FusedEnsemble
from l2fast.technical.state import TechnicalConfig, TechnicalState, feature_names

MODELS_DIR = models_dir()
N_ROWS = 1_000


@pytest.fixture(scope="module")
def names() -> tuple[str, ...]:
    return TechnicalState().names


@pytest.fixture(scope="module")
def ensemble(names) -> FusedEnsemble:
    # The fused graph itself (the compiled forward has tests/test_mlp.py).
    return FusedEnsemble.from_dir(MODELS_DIR, names, inference="onnxruntime")


@pytest.fixture(scope="module")
def feature_rows(names, ensemble) -> np.ndarray:
    """1,000 technical-core feature vectors on which every member's inputs are warmed up."""
    bars = generate_bars(20_000)
    state = TechnicalState()
    rows = state.update_many(bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"],
                             bars["volume"], record=names)
    used = np.concatenate(list(ensemble.columns.values()))
    warm = np.flatnonzero(np.isfinite(rows[:, used]).all(axis=1))
    assert len(warm) >= N_ROWS
    return rows[warm[np.linspace(0, len(warm) - 1, N_ROWS).astype(int)]]


def test_fused_graph_has_one_input_and_every_member_output(ensemble, names, feature_rows) -> None:
    assert ensemble.names == ("mean_revert_agent", "trend_agent", "volatility_agent")
    inputs = ensemble.session.get_inputs()
    assert [(i.name, i.shape) for i in inputs] == [("features", [1, len(names)])]
    assert set(ensemble.output_names) == {f"{n}/{o}" for n in ensemble.names for o in ("action", "probs")}
    assert set(ensemble.run(feature_rows[0])) == set(ensemble.output_names)
    for member in ensemble.members:
        assert [names[i] for i in ensemble.columns[member.name]] == list(member.feature_names)


def test_fused_outputs_equal_each_member_run_alone_on_1000_rows(ensemble, feature_rows) -> None:
    for row in feature_rows:
        fused = {k: v.copy() for k, v in ensemble.run(row).items()}
        for member in ensemble.members:
            alone = member.run(row[ensemble.columns[member.name]])
            for out in member.output_names:
                np.testing.assert_array_equal(fused[f"{member.name}/{out}"], alone[out],
                                              err_msg=f"{member.name}/{out}")


def test_the_shipped_agents_share_one_stacked_mlp(ensemble) -> None:
    # Same preprocessing, depth, activations and action count: one Gemm per layer.
    assert ensemble.stacked
    assert [(o.name, o.shape) for o in ensemble.session.get_outputs()] == [
        ("stacked/probs", [3, 7]), ("stacked/action", [3])]


def _toy_member(folder: Path, name: str, features: list[str], seed: int) -> None:
    """A member of another shape (a single Gemm, 4 actions): it cannot be stacked."""
    import hashlib

    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(4, len(features))).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["obs", "W"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
             helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", len(features)])],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(w, "W")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    manifest = json.loads((MODELS_DIR / "trend_agent.json").read_text())
    manifest.update(name=name, feature_names=features, observation_size=len(features),
                    action_space={"type": "discrete", "n": 4}, action_targets=[-1.0, -0.5, 0.5, 1.0],
                    onnx_sha256=hashlib.sha256(data).hexdigest())
    (folder / f"{name}.onnx").write_bytes(data)
    (folder / f"{name}.json").write_text(json.dumps(manifest))


def test_members_of_different_shapes_use_the_generic_fused_graph(models_copy, names, feature_rows) -> None:
    _toy_member(models_copy, "toy_agent", ["rsi_14_1m", "atr_pct_5m", "ret_1_1h"], seed=1)
    ensemble = FusedEnsemble.from_dir(models_copy, names, inference="onnxruntime")
    assert not ensemble.stacked
    for row in feature_rows[:200]:
        fused = {k: v.copy() for k, v in ensemble.run(row).items()}
        for member in ensemble.members:
            alone = member.run(row[ensemble.columns[member.name]])
            for out in member.output_names:
                np.testing.assert_array_equal(fused[f"{member.name}/{out}"], alone[out])


def test_from_dir_reads_feature_names_and_default_lookbacks_from_its_technical_config(models_copy, names) -> None:
    custom = TechnicalConfig(rsi_periods=(14, 21, 30), atr_period=20)
    _toy_member(models_copy, "toy_agent", ["ret_1_1m", "rsi_30_1m", "atr_pct_1h"], seed=1)
    path = models_copy / "toy_agent.json"
    manifest = json.loads(path.read_text())
    del manifest["lookback"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="unknown to the technical core: rsi_30_1m"):
        FusedEnsemble.from_dir(models_copy, names)
    ensemble = FusedEnsemble.from_dir(models_copy, technical=custom)
    assert ensemble.feature_names == TechnicalState(custom).names == feature_names(custom)
    toy = next(m for m in ensemble.members if m.name == "toy_agent")
    # atr_pct_1h needs (atr_period + 2) * 60 - 1 bars: 1319 under atr_period 20, not 959.
    assert toy.lookback == toy.manifest["lookback"] == 1319
    assert FusedEnsemble.from_dir(MODELS_DIR).feature_names == names


def _unclipped_box_member(folder: Path, name: str, features: list[str], low: list[float],
                          high: list[float]) -> None:
    """A hand-written Box member whose graph passes its features through, ignoring its bounds."""
    import hashlib

    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["obs"], ["action"])], name,
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", len(features)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["N", len(features)])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    manifest = json.loads((MODELS_DIR / "trend_agent.json").read_text())
    manifest.update(name=name, algorithm="SAC", feature_names=features, observation_size=len(features),
                    action_space={"type": "box", "low": low, "high": high, "shape": [len(features)]},
                    action_targets=None, outputs=["action"], onnx_sha256=hashlib.sha256(data).hexdigest(),
                    parity={"samples": 10, "kind": "box", "max_abs_diff": 0.0, "passed": True})
    (folder / f"{name}.onnx").write_bytes(data)
    (folder / f"{name}.json").write_text(json.dumps(manifest))


def test_box_member_actions_never_leave_the_declared_bounds(models_copy, names, feature_rows) -> None:
    # 0.1 and -0.3 have no float32: the nearest float32 lies outside [-0.3, 0.1], so the
    # bounds must be rounded inward. RSI (0..100) lands far above the high bound.
    low, high = [-0.3, -0.3], [0.1, 0.1]
    assert float(np.float32(high[0])) > high[0] and float(np.float32(low[0])) < low[0]
    _unclipped_box_member(models_copy, "box_agent", ["rsi_14_1m", "ret_1_1m"], low, high)
    ensemble = FusedEnsemble.from_dir(models_copy, names)
    member = next(m for m in ensemble.members if m.name == "box_agent")
    cols = ensemble.columns["box_agent"]
    for row in feature_rows[:200]:
        fused = ensemble.run(row)["box_agent/action"][0].copy()
        for action in (fused, member.act(row[cols]), member.run(row[cols])["action"][0]):
            assert np.all(action.astype(np.float64) >= low) and np.all(action.astype(np.float64) <= high)
        np.testing.assert_array_equal(fused, member.act(row[cols]))
        np.testing.assert_array_equal(fused, np.clip(row[cols].astype(np.float32), *member.action_bounds))


def test_box_member_action_from_a_nan_feature_stays_nan_not_a_bound(models_copy, names, feature_rows) -> None:
    # The engine leaves a member whose output is non-finite out of the vote; a clip that
    # turned NaN into a bound would let a broken feature vote at full size instead.
    _unclipped_box_member(models_copy, "box_agent", ["rsi_14_1m", "ret_1_1m"], [-0.3, -0.3], [0.1, 0.1])
    ensemble = FusedEnsemble.from_dir(models_copy, names)
    assert not ensemble.stacked
    member = next(m for m in ensemble.members if m.name == "box_agent")
    cols = ensemble.columns["box_agent"]
    low, high = member.action_bounds
    for nan_at in (0, 1):
        row = feature_rows[0].copy()
        row[cols[nan_at]] = np.nan
        fused = ensemble.run(row)["box_agent/action"][0].copy()
        for action in (fused, member.act(row[cols]), member.run(row[cols])["action"][0]):
            assert np.isnan(action[nan_at])
            other = action[1 - nan_at]
            assert np.isfinite(other) and low[1 - nan_at] <= other <= high[1 - nan_at]


def test_run_reuses_bound_buffers(ensemble, feature_rows) -> None:
    first = ensemble.run(feature_rows[0])
    action = first["trend_agent/action"]
    second = ensemble.run(feature_rows[1])
    assert second is first and second["trend_agent/action"] is action


def test_unknown_feature_name_in_manifest_raises_model_load_error(models_copy, names) -> None:
    path = models_copy / "trend_agent.json"
    manifest = json.loads(path.read_text())
    manifest["feature_names"][2] = "rsi_99_7m"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError,
                       match=r"unknown to the technical core: rsi_99_7m.*Known names \(228\): close_1m, "):
        FusedEnsemble.from_dir(models_copy, names)


def test_feature_name_missing_from_given_names_raises_model_load_error(names) -> None:
    kept = [n for n in names if n != "rsi_14_1m"]
    with pytest.raises(ModelLoadError, match="rsi_14_1m"):
        FusedEnsemble.from_dir(MODELS_DIR, kept)


def test_tampered_onnx_raises_model_load_error(models_copy, names) -> None:
    path = models_copy / "volatility_agent.onnx"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        FusedEnsemble.from_dir(models_copy, names)


def test_onnx_swapped_after_load_is_never_fused(monkeypatch, models_copy, names) -> None:
    import l2fast.models.ensemble as ens

    real_load = ens.load_model

    def load_then_tamper(path, *, technical=None, signer=None):
        model = real_load(path, technical=technical, signer=signer)
        model.onnx_path.write_bytes(model.onnx_path.read_bytes() + b"\x00")
        return model

    monkeypatch.setattr(ens, "load_model", load_then_tamper)
    with pytest.raises(ModelLoadError, match="SHA-256"):
        FusedEnsemble.from_dir(models_copy, names)


def test_empty_or_orphaned_folder_raises_model_load_error(tmp_path, models_copy, names) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no exported models"):
        FusedEnsemble.from_dir(empty, names)
    (models_copy / "trend_agent.json").unlink()
    with pytest.raises(ModelLoadError, match="without a manifest"):
        FusedEnsemble.from_dir(models_copy, names)


def test_run_rejects_a_row_of_the_wrong_length(ensemble) -> None:
    ens = ensemble
    with pytest.raises(InvalidInputError, match="features_row: shape"):
        ens.run(np.zeros(1))
    with pytest.raises(InvalidInputError, match="features_row: shape"):
        ens.run(np.zeros(len(ens.feature_names) + 1))


def test_members_keep_the_order_given_and_the_graph_stays_the_one_of_name_order(ensemble, names,
                                                                                  feature_rows) -> None:
    vote_order = [ensemble.members[k] for k in (1, 0, 2)]          # trend, mean_revert, volatility
    ordered = FusedEnsemble(vote_order, names, inference="onnxruntime")
    assert ordered.names == ("trend_agent", "mean_revert_agent", "volatility_agent")
    assert tuple(b.name for b in ordered.member_buffers) == ordered.names
    assert [o.name for o in ordered.session.get_outputs()] == [o.name for o in ensemble.session.get_outputs()]
    for row in feature_rows[:200]:
        want = {k: v.copy() for k, v in ensemble.run(row).items()}
        got = ordered.run(row)
        assert list(got) == [f"{n}/{o}" for n in ordered.names for o in ("action", "probs")]
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_the_bound_interface_is_what_run_uses(ensemble, feature_rows) -> None:
    # The engine's path: write input_row, call run_bound, read each member's buffers.
    row = feature_rows[3]
    want = {k: v.copy() for k, v in ensemble.run(row).items()}
    ensemble.run(feature_rows[4])
    ensemble.input_row[0] = row
    ensemble.run_bound()
    assert ensemble.input_row.dtype == np.float32 and ensemble.input_row.shape == (1, len(ensemble.feature_names))
    for member, buffers in zip(ensemble.members, ensemble.member_buffers):
        assert buffers.name == member.name
        assert buffers.action.dtype == np.int64 and buffers.scores.dtype == np.float32
        np.testing.assert_array_equal(buffers.action, want[f"{member.name}/action"])
        np.testing.assert_array_equal(buffers.scores, want[f"{member.name}/probs"])


def test_a_continuous_member_has_no_score_buffer(models_copy, names) -> None:
    _unclipped_box_member(models_copy, "box_agent", ["rsi_14_1m", "ret_1_1m"], [-0.3, -0.3], [0.1, 0.1])
    ensemble = FusedEnsemble.from_dir(models_copy, names)
    box = next(b for b in ensemble.member_buffers if b.name == "box_agent")
    assert box.scores is None and box.action.dtype == np.float32 and box.action.shape == (1, 2)

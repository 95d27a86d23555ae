"""The runtime side of exported models: manifest schema, loading, tamper checks, validation.

The models here are small hand-built ONNX graphs with hand-written manifests, so these
tests need neither torch nor stable-baselines3 (only ``onnx`` to write the fixtures).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import l2fast
from l2fast.config import L2Config
from l2fast.errors import ConfigError, ModelLoadError
from l2fast.models.loading import load_model, validate_models
from l2fast.models.manifest import (
    DEFAULT_ACTION_TARGETS,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    Manifest,
    default_action_targets,
    validate_manifest,
)
from l2fast.technical.state import TechnicalConfig, feature_names

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

FEATURES = ["ret_1_1m", "rsi_14_5m", "atr_pct_1h"]
WEIGHTS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, -1.0]], np.float32)


def _discrete_graph(n_features: int = 3) -> bytes:
    """obs -> Gemm -> logits; probs = Softmax, action = ArgMax (4 actions)."""
    w = WEIGHTS[:, :n_features]
    nodes = [
        helper.make_node("Gemm", ["obs", "W"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _box_graph() -> bytes:
    """obs[:, :2] clipped to the box [-1, 1] x [0, 2]."""
    nodes = [
        helper.make_node("Gemm", ["obs", "W"], ["mean"], transB=1),
        helper.make_node("Min", ["mean", "high"], ["capped"]),
        helper.make_node("Max", ["capped", "low"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes, "toy_box", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(np.eye(2, 3, dtype=np.float32), "W"),
                     numpy_helper.from_array(np.array([-1.0, 0.0], np.float32), "low"),
                     numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "high")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _manifest(name: str, data: bytes, **overrides) -> dict:
    manifest = {
        "schema_version": 1, "name": name, "algorithm": "PPO",
        "source": {"file": f"{name}.pkl", "sha256": "ab" * 32, "kind": "pkl-bundle"},
        "onnx_sha256": hashlib.sha256(data).hexdigest(), "opset": 17,
        "feature_names": list(FEATURES), "observation_size": 3,
        "action_space": {"type": "discrete", "n": 4}, "action_targets": [-1.0, -0.5, 0.5, 1.0],
        "outputs": ["action", "probs"], "specialization": "trend", "timeframes": ["1m", "5m", "1h"],
        "lookback": 1, "performance_metrics": {"sharpe": 0.5}, "training_config": {"steps": 1000},
        "versions": {"torch": "2", "stable_baselines3": "2", "onnx": "1", "onnxruntime": "1", "l2fast": "0.1.0"},
        "parity": {"samples": 100, "kind": "discrete", "discrete_agreement": 1.0, "mismatches": 0, "passed": True},
        "exported_at": "2025-01-01T00:00:00Z",
    }
    manifest.update(overrides)
    return manifest


def _write(folder, name: str, data: bytes, manifest: dict | None = None):
    (folder / f"{name}.onnx").write_bytes(data)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(manifest if manifest is not None else _manifest(name, data)))
    return path


def test_features_used_by_the_fixtures_exist_in_the_technical_core():
    assert set(FEATURES) <= set(feature_names(TechnicalConfig()))


def test_valid_discrete_model_loads_and_acts(tmp_path):
    model = load_model(_write(tmp_path, "toy", _discrete_graph()))
    assert model.name == "toy" and model.discrete and model.feature_names == tuple(FEATURES)
    assert model.act(np.array([0.1, 0.9, 0.2])) == 1
    assert model.target(np.array([0.0, 0.0, 3.0])) == 0.5
    out = model.run(np.array([[3.0, 0.0, 0.0], [-1.0, -1.0, -1.0]], np.float32))
    np.testing.assert_array_equal(out["action"], [0, 3])
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(np.full(3, -1.0)), [3])
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert load_model(tmp_path / "toy.onnx").name == "toy"  # either file of the pair


def test_valid_box_model_acts_within_bounds(tmp_path):
    data = _box_graph()
    manifest = _manifest("box", data, algorithm="SAC", outputs=["action"], action_targets=None,
                         action_space={"type": "box", "low": [-1.0, 0.0], "high": [1.0, 2.0], "shape": [2]},
                         parity={"samples": 10, "kind": "box", "max_abs_diff": 0.0, "passed": True})
    model = load_model(_write(tmp_path, "box", data, manifest))
    np.testing.assert_array_equal(model.act(np.array([5.0, -3.0, 0.0])), [1.0, 0.0])
    with pytest.raises(ValueError, match="no discrete action targets"):
        model.target(np.zeros(3))


def test_changed_onnx_bytes_are_refused_by_hash(tmp_path):
    path = _write(tmp_path, "toy", _discrete_graph())
    tampered = _discrete_graph().replace(numpy_helper.from_array(WEIGHTS, "W").raw_data,
                                         numpy_helper.from_array(-WEIGHTS, "W").raw_data)
    (tmp_path / "toy.onnx").write_bytes(tampered)
    with pytest.raises(ModelLoadError, match="SHA-256 .* does not match the manifest"):
        load_model(path)


def test_corrupt_onnx_with_matching_hash_is_refused(tmp_path):
    junk = b"\x08\x07 this is not an onnx model"
    path = _write(tmp_path, "junk", junk)
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        load_model(path)


def test_missing_onnx_file_is_refused(tmp_path):
    path = _write(tmp_path, "toy", _discrete_graph())
    (tmp_path / "toy.onnx").unlink()
    with pytest.raises(ModelLoadError, match="cannot read ONNX file"):
        load_model(path)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: m.pop("onnx_sha256"), "missing keys: onnx_sha256"),
    (lambda m: m.update(schema_version=2), "schema_version 2"),
    (lambda m: m.update(algorithm="TRPO"), "algorithm must be one of"),
    (lambda m: m.update(observation_size=4), "observation_size is 4 but there are 3"),
    (lambda m: m.update(feature_names=["a", "a", "b"]), "duplicates: a"),
    (lambda m: m.update(action_targets=[-1.0, 0.0, 2.0, 1.0]), "action_targets must be a list of numbers in"),
    (lambda m: m.update(action_targets=[-1.0, 1.0]), "action_targets has 2 values for 4"),
    (lambda m: m.update(outputs=["action"]), "outputs must be"),
    (lambda m: m["parity"].update(passed=False), "parity.passed is false"),
    (lambda m: m.update(action_space={"type": "box", "low": [1.0], "high": [0.0], "shape": [1]}), "low exceeds"),
])
def test_invalid_manifest_is_refused_with_the_reason(tmp_path, change, reason):
    data = _discrete_graph()
    manifest = _manifest("toy", data)
    change(manifest)
    with pytest.raises(ModelLoadError, match=reason):
        load_model(_write(tmp_path, "toy", data, manifest))


def test_manifest_that_is_not_json_is_refused(tmp_path):
    path = _write(tmp_path, "toy", _discrete_graph())
    path.write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(path)


def test_graph_inputs_that_disagree_with_the_manifest_are_refused(tmp_path):
    data = _discrete_graph(n_features=2)
    manifest = _manifest("toy", data)
    with pytest.raises(ModelLoadError, match=r"input 'obs' must be float \[N, 3\]"):
        load_model(_write(tmp_path, "toy", data, manifest))


def test_graph_outputs_that_disagree_with_the_manifest_are_refused(tmp_path):
    data = _discrete_graph()
    manifest = _manifest("toy", data, algorithm="DQN", outputs=["action", "q_values"])
    with pytest.raises(ModelLoadError, match="outputs .* differ from the manifest"):
        load_model(_write(tmp_path, "toy", data, manifest))


def test_validate_models_reports_each_failure_with_its_reason(tmp_path):
    good = _discrete_graph()
    _write(tmp_path, "good", good)
    _write(tmp_path, "unnamed", good, _manifest("unnamed", good, feature_names=["obs_0", "obs_1", "obs_2"]))
    _write(tmp_path, "unknown", good, _manifest("unknown", good, feature_names=["ret_1_1m", "rsi_99_2m", "x"]))
    tampered = _write(tmp_path, "tampered", good)
    (tmp_path / "tampered.onnx").write_bytes(good + b"\x00")
    (tmp_path / "orphan.onnx").write_bytes(good)
    result = validate_models(tmp_path)
    assert result["total"] == 5 and result["passed"] == 1
    reasons = {f["name"]: f["reason"] for f in result["failures"]}
    assert "re-export with --feature-names" in reasons["unnamed"]
    assert "unknown to the technical core: rsi_99_2m, x" in reasons["unknown"]
    assert "SHA-256" in reasons["tampered"]
    assert "no manifest" in reasons["orphan"]
    assert tampered.exists()
    assert l2fast.validate_models(tmp_path / "good.json") == {"passed": 1, "total": 1, "failures": []}


def test_validate_models_raises_for_a_missing_or_empty_folder_naming_it(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no exported model \(<name>.json \+ <name>.onnx\)") as empty:
        validate_models(tmp_path)
    assert empty.value.path == tmp_path
    with pytest.raises(ModelLoadError, match="no such file") as missing:
        validate_models(tmp_path / "nope")
    assert missing.value.path == tmp_path / "nope"


def test_validate_models_says_a_folder_of_sources_holds_no_exported_model(tmp_path):
    for name in ("a.pkl", "b.pkl", "c.pkl", "d.zip"):
        (tmp_path / name).write_bytes(b"\x80\x04source")
    with pytest.raises(ModelLoadError) as exc:
        validate_models(tmp_path)
    assert str(exc.value) == (f"{tmp_path}: no exported model (found 3 .pkl and 1 .zip sources; "
                              f"export them with python -m l2fast.export {tmp_path} --out DIR)")
    with pytest.raises(ModelLoadError, match="a .pkl source, not an exported model"):
        validate_models(tmp_path / "a.pkl")


def test_validate_models_accepts_the_feature_names_its_technical_config_defines(tmp_path):
    data = _discrete_graph()
    names = ["ret_1_1m", "rsi_30_1h", "atr_pct_1h"]
    _write(tmp_path, "toy", data, _manifest("toy", data, feature_names=names))
    default = validate_models(tmp_path)
    assert default["passed"] == 0 and "unknown to the technical core: rsi_30_1h" in default["failures"][0]["reason"]
    custom = TechnicalConfig(rsi_periods=(14, 30))
    assert validate_models(tmp_path, technical=custom) == {"passed": 1, "total": 1, "failures": []}


def test_validate_models_takes_a_whole_l2config_and_uses_its_technical_section(tmp_path):
    data = _discrete_graph()
    _write(tmp_path, "toy", data, _manifest("toy", data, feature_names=["ret_1_1m", "rsi_30_1h", "atr_pct_1h"]))
    config = L2Config.from_dict({"technical": {"rsi_periods": [14, 30]}})
    assert validate_models(tmp_path, technical=config) == {"passed": 1, "total": 1, "failures": []}
    assert validate_models(tmp_path, technical=L2Config())["passed"] == 0
    with pytest.raises(ConfigError,
                       match=r"technical=\{'rsi_periods': \[14, 30\]\}: expected an l2fast.config.L2Config"):
        validate_models(tmp_path, technical={"rsi_periods": [14, 30]})


@pytest.mark.parametrize("lookback", ["missing", None])
def test_manifest_without_lookback_loads_with_the_largest_warm_up_of_its_features(tmp_path, lookback):
    data = _discrete_graph()
    manifest = _manifest("toy", data)
    if lookback == "missing":
        del manifest["lookback"]
    else:
        manifest["lookback"] = lookback
    path = _write(tmp_path, "toy", data, manifest)
    # (k + 1) * minutes - 1 with k the bars each feature's indicator needs: ret_1_1m 2,
    # rsi_14_5m (14 + 2) * 5 - 1 = 79, atr_pct_1h (14 + 2) * 60 - 1 = 959.
    model = load_model(path)
    assert model.lookback == model.manifest["lookback"] == 959
    # atr_period 20: atr_pct_1h needs (20 + 2) * 60 - 1 bars.
    assert load_model(path, technical=TechnicalConfig(atr_period=20)).lookback == 1319
    assert load_model(_write(tmp_path, "given", data, _manifest("given", data, lookback=7))).lookback == 7


def _fail_reading(monkeypatch, target):
    real_read, real_os_open = type(target).read_bytes, os.open

    def read_bytes(self):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    def os_open(path, *args, **kwargs):  # the manifest is read through os.open (bounded, non-blocking)
        if os.fspath(path) == os.fspath(target):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(type(target), "read_bytes", read_bytes)
    monkeypatch.setattr(os, "open", os_open)


def _case(tmp_path, monkeypatch, mode):
    """Set up one broken model; return (path to load, file the error must name, reason pattern)."""
    data = _discrete_graph()
    path = _write(tmp_path, "toy", data)
    onnx_path = tmp_path / "toy.onnx"
    if mode == "not json":
        path.write_text("{not json")
        return path, path, "manifest is not valid JSON"
    if mode == "deeply nested json":
        path.write_text("[" * 100_000 + "]" * 100_000)
        return path, path, "manifest nests arrays/objects deeper than 32 levels"
    if mode == "binary manifest":
        path.write_bytes(b"\x80\x04\x95\x00binary")
        return path, path, "not UTF-8 text .*binary file"
    if mode == "latin-1 manifest":
        path.write_bytes(json.dumps(_manifest("toy", data, specialization="tendance-é"),
                                    ensure_ascii=False).encode("latin-1"))
        return path, path, "not UTF-8 text"
    if mode == "pkl source":
        source = tmp_path / "agent.pkl"
        source.write_bytes(b"\x80\x04\x95\x00pickle")
        return source, source, ("a .pkl source, not an exported model "
                                f"\\(export it with python -m l2fast.export {source}")
    if mode == "folder":
        return tmp_path, tmp_path, "a folder"
    if mode == "manifest is a folder":
        path.unlink()
        path.mkdir()
        return path, path, "cannot read manifest: Is a directory"
    if mode == "unreadable manifest":
        _fail_reading(monkeypatch, path)
        return path, path, "cannot read manifest: Permission denied"
    if mode == "unreadable onnx":
        _fail_reading(monkeypatch, onnx_path)
        return path, onnx_path, "cannot read ONNX file: Permission denied"
    if mode == "missing onnx":
        onnx_path.unlink()
        return path, onnx_path, "cannot read ONNX file: No such file"
    if mode == "wrong hash":
        onnx_path.write_bytes(data + b"\x00")
        return path, onnx_path, "SHA-256 .* does not match the manifest"
    if mode == "onnxruntime cannot load":
        junk = b"\x08\x07 not an onnx model"
        _write(tmp_path, "toy", junk)
        return path, onnx_path, "onnxruntime cannot load the model"
    if mode == "number beyond float":
        text = json.dumps(_manifest("toy", data, algorithm="SAC", outputs=["action"], action_targets=None,
                                    action_space={"type": "box", "low": [0.0], "high": [1.0], "shape": [1]}))
        path.write_text(text.replace('"low": [0.0]', '"low": [1' + "0" * 400 + "]"))
        return path, path, "OverflowError"
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", [
    "not json", "deeply nested json", "binary manifest", "latin-1 manifest", "pkl source", "folder",
    "manifest is a folder", "unreadable manifest", "unreadable onnx", "missing onnx", "wrong hash",
    "onnxruntime cannot load", "number beyond float",
])
def test_every_load_failure_is_a_model_load_error_naming_the_file_and_the_reason(tmp_path, monkeypatch, mode):
    target, culprit, reason = _case(tmp_path, monkeypatch, mode)
    with pytest.raises(ModelLoadError, match=reason) as exc:
        load_model(target)
    assert exc.value.path == culprit and str(exc.value).startswith(f"{culprit}: ")


@pytest.mark.parametrize("which", ["json", "onnx"])
def test_a_model_file_symlinked_from_outside_the_models_folder_is_refused(tmp_path, which):
    data = _discrete_graph()
    outside, folder = tmp_path / "outside", tmp_path / "models"
    outside.mkdir()
    folder.mkdir()
    _write(outside, "toy", data)
    _write(folder, "toy", data)
    link = folder / f"toy.{which}"
    link.unlink()
    link.symlink_to(outside / f"toy.{which}")
    with pytest.raises(ModelLoadError, match="outside the models folder") as exc:
        load_model(folder / "toy.json")
    assert exc.value.path == link
    result = validate_models(folder)
    assert result["passed"] == 0 and "outside the models folder" in result["failures"][0]["reason"]


def test_a_symlink_within_the_models_folder_stays_allowed(tmp_path):
    data = _discrete_graph()
    _write(tmp_path, "toy", data)
    (tmp_path / "alias.onnx").symlink_to(tmp_path / "toy.onnx")
    (tmp_path / "alias.json").symlink_to("toy.json")
    assert load_model(tmp_path / "alias.json").act(np.array([0.1, 0.9, 0.2])) == 1


def test_a_manifest_over_the_size_limit_is_refused_without_reading_it_whole(tmp_path):
    data = _discrete_graph()
    manifest = _manifest("toy", data, training_config={"notes": "x" * (2 << 20)})  # 2 MiB, valid JSON
    path = _write(tmp_path, "toy", data, manifest)
    with pytest.raises(ModelLoadError, match=r"manifest is larger than 1048576 bytes"):
        load_model(path)
    assert validate_models(tmp_path)["passed"] == 0


def test_a_fifo_named_as_the_manifest_is_refused_without_blocking(tmp_path):
    # open() on a FIFO waits for a writer: the loader would hang for ever.
    data = _discrete_graph()
    path = _write(tmp_path, "toy", data, _manifest("toy", data))
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ModelLoadError, match="manifest toy.json is not a regular file"):
        load_model(path)


def test_a_deeply_nested_manifest_is_refused_without_recursion_error(tmp_path):
    data = _discrete_graph()
    nested: object = {}
    for _ in range(100):
        nested = {"n": nested}
    path = _write(tmp_path, "toy", data, _manifest("toy", data, training_config=nested))
    with pytest.raises(ModelLoadError, match="deeper than 32 levels"):
        load_model(path)
    # brackets inside strings do not count; an export's own nesting (3) is far below the limit
    text = json.dumps(_manifest("toy", data, specialization='[[[{"\\' * 40))
    path.write_text(text)
    assert load_model(path).manifest["specialization"].startswith('[[[{"')


@pytest.mark.parametrize("lookback", [10**12, 14_401])
def test_an_absurd_lookback_is_refused(tmp_path, lookback):
    data = _discrete_graph()
    path = _write(tmp_path, "toy", data, _manifest("toy", data, lookback=lookback))
    with pytest.raises(ModelLoadError, match=r"lookback must be an integer in \[1, 14400\]"):
        load_model(path)
    result = validate_models(tmp_path)
    assert result["passed"] == 0 and "lookback" in result["failures"][0]["reason"]
    assert load_model(_write(tmp_path, "ok", data, _manifest("ok", data, lookback=14_400))).lookback == 14_400


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_validate_models_fails_a_model_with_nan_or_inf_weights(tmp_path, bad):
    weights = WEIGHTS.copy()
    weights[1, 2] = bad
    data = _discrete_graph().replace(numpy_helper.from_array(WEIGHTS, "W").raw_data,
                                     numpy_helper.from_array(weights, "W").raw_data)
    _write(tmp_path, "toy", data)
    result = validate_models(tmp_path)
    assert result["passed"] == 0
    assert "output 'probs' is not finite" in result["failures"][0]["reason"]
    assert "NaN or inf weights" in result["failures"][0]["reason"]


def test_the_manifest_typeddict_marks_its_optional_keys_not_required_as_the_schema_check_does():
    optional = ("lookback", "feature_namespace", "feature_timeframe", "feature_scales", "decision_timeframe", "finrl")
    assert Manifest.__optional_keys__ == set(optional) and OPTIONAL_KEYS == optional
    assert set(REQUIRED_KEYS) == Manifest.__required_keys__
    data = _discrete_graph()
    manifest = _manifest("toy", data)
    del manifest["lookback"]
    assert validate_manifest(manifest) == []
    del manifest["opset"]
    assert validate_manifest(manifest) == ["missing keys: opset"]


@pytest.mark.parametrize("fields, problem", [
    ({"feature_namespace": "finrl"}, "feature_namespace must be one of l2fast, stockstats, got 'finrl'"),
    ({"feature_namespace": "stockstats", "feature_timeframe": 60}, "feature_timeframe must be a timeframe string"),
    ({"feature_namespace": "stockstats", "feature_timeframe": "1h"}, "'ret_1_1m': not a stockstats name"),
    ({"feature_namespace": "stockstats", "feature_names": ["rsi_30", "cci_30", "dx_30"]}, "'rsi_30': no timeframe"),
])
def test_a_manifest_feature_namespace_is_checked_with_its_names(fields, problem):
    manifest = _manifest("toy", _discrete_graph())
    manifest.update(fields)
    problems = validate_manifest(manifest)
    assert len(problems) == 1 and problem in problems[0], problems


def test_default_action_targets_are_evenly_spaced_exact_fractions():
    assert default_action_targets(7) == [-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0]
    assert DEFAULT_ACTION_TARGETS(3) == [-1.0, 0.0, 1.0]
    assert default_action_targets(1) == [0.0]
    with pytest.raises(ValueError, match="positive integer"):
        default_action_targets(0)


def test_unbounded_box_bounds_are_written_as_text():
    data = _box_graph()
    manifest = _manifest("box", data, algorithm="PPO", outputs=["action"], action_targets=None,
                         action_space={"type": "box", "low": ["-inf", 0.0], "high": ["inf", 2.0], "shape": [2]})
    assert validate_manifest(manifest) == []
    manifest["action_space"]["low"][0] = float("-inf")
    assert any("action_space.low" in p for p in validate_manifest(manifest))


def test_runtime_imports_no_export_dependencies():
    code = ("import sys, l2fast, l2fast.models.loading, l2fast.models.manifest; "
            "heavy = {'torch', 'stable_baselines3', 'sklearn', 'onnx', 'gymnasium'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

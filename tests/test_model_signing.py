"""Signed model manifests (issue 16 item 5): with the model key every member needs a
valid ``<name>.sig``; a forged model whose manifest hash was rewritten is refused; a
genuine signed folder loads and gives the same signals; without a key nothing changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from l2fast import L2Config, StrategicDecision, TacticalSignalGenerator
from l2fast.data import models_dir
from l2fast.errors import ConfigError, ExportError, ModelLoadError, SnapshotError
from l2fast.evaluation.synthetic import generate_bars
from l2fast.export.__main__ import main as export_main
from l2fast.export.signing import sign_models
from l2fast.keys import Purpose, Signer, load_key
from l2fast.models.ensemble import FusedEnsemble
from l2fast.models.loading import SIGNATURE_SUFFIX, load_model, model_signature, validate_models

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

BTC = "BTC/USDT"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")
KEY = Signer(b"m" * 32, Purpose.MODEL, source="test key")
OTHER_KEY = Signer(b"x" * 32, Purpose.MODEL, source="other key")
SHIPPED = Path(models_dir())
MEMBERS = ("mean_revert_agent", "trend_agent", "volatility_agent")


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED, folder)
    return folder


def _config(folder: Path) -> L2Config:
    return L2Config.from_dict({"model": {"models_dir": str(folder)}})


def _always_long(template: dict) -> bytes:
    """A discrete policy that ignores its input and always picks the last action (target +1)."""
    n_in, n_out = len(template["feature_names"]), template["action_space"]["n"]
    bias = np.zeros(n_out, np.float32)
    bias[-1] = 10.0
    nodes = [helper.make_node("Mul", ["obs", "zero"], ["z"]),
             helper.make_node("Gemm", ["z", "W", "b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
             helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "always_long", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_out])],
        initializer=[numpy_helper.from_array(np.zeros((n_out, n_in), np.float32), "W"),
                     numpy_helper.from_array(bias, "b"), numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _forge_always_long(folder: Path, name: str = "trend_agent") -> None:
    """The issue's finding: swap in an always-long graph and rewrite the manifest's hash."""
    manifest_path = folder / f"{name}.json"
    manifest = json.loads(manifest_path.read_text())
    data = _always_long(manifest)
    (folder / f"{name}.onnx").write_bytes(data)
    manifest["onnx_sha256"] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def _signals(gen: TacticalSignalGenerator, n_after_warmup: int = 150) -> list[dict]:
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.7,
                                                risk_appetite="aggressive", universe=[BTC]))
    bars = generate_bars(gen.warmup_bars + n_after_warmup, seed=31)
    return [gen.on_bar(BTC, *row).to_dict() for row in zip(*(bars[c].tolist() for c in COLUMNS))]


def test_the_shipped_demo_models_are_unsigned_and_load_without_a_key() -> None:
    assert not list(SHIPPED.glob(f"*{SIGNATURE_SUFFIX}"))
    assert TacticalSignalGenerator().members == ("trend_agent", "mean_revert_agent", "volatility_agent")
    assert validate_models(SHIPPED)["passed"] == 3


def test_a_signed_folder_loads_with_the_key_and_gives_the_same_signals(tmp_path) -> None:
    folder = _copy(tmp_path)
    written = sign_models(folder, KEY)
    assert [p.name for p in written] == [f"{m}.sig" for m in MEMBERS]
    manifest_bytes = (folder / "trend_agent.json").read_bytes()
    assert (folder / "trend_agent.sig").read_text() == model_signature(KEY, "trend_agent", manifest_bytes) + "\n"
    signed = TacticalSignalGenerator(_config(folder), model_signer=KEY)
    plain = TacticalSignalGenerator()
    assert _signals(signed) == _signals(plain)
    assert validate_models(folder, signer=KEY) == {"passed": 3, "total": 3, "failures": []}
    assert len(FusedEnsemble.from_dir(folder, signer=KEY).members) == 3


def test_a_forged_always_long_model_with_its_hash_rewritten_is_refused_with_the_key(tmp_path) -> None:
    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    _forge_always_long(folder)
    # Without a key the forgery passes every unkeyed check (the finding) and votes long.
    forged = load_model(folder / "trend_agent.json")
    assert forged.target(np.zeros(forged.observation_size)) == 1.0
    with pytest.raises(ModelLoadError, match=r"signature mismatch \(trend_agent\.sig\)") as caught:
        TacticalSignalGenerator(_config(folder), model_signer=KEY)
    assert caught.value.path == folder / "trend_agent.json"
    failures = validate_models(folder, signer=KEY)["failures"]
    assert [f["name"] for f in failures] == ["trend_agent"] and "signature mismatch" in failures[0]["reason"]


def test_a_forged_model_without_a_signature_is_refused_as_not_signed(tmp_path) -> None:
    folder = _copy(tmp_path)
    _forge_always_long(folder)
    with pytest.raises(ModelLoadError, match="not signed.*model key is configured.*--sign") as caught:
        load_model(folder / "trend_agent.json", signer=KEY)
    assert "trend_agent.json" in str(caught.value)


def test_the_wrong_key_is_refused(tmp_path) -> None:
    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    with pytest.raises(ModelLoadError, match="signature mismatch.*other key"):
        TacticalSignalGenerator(_config(folder), model_signer=OTHER_KEY)


def test_a_signed_model_renamed_into_anothers_place_is_refused(tmp_path) -> None:
    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    for suffix in (".json", ".onnx", ".sig"):
        shutil.copy(folder / f"mean_revert_agent{suffix}", folder / f"trend_agent{suffix}")
    with pytest.raises(ModelLoadError, match="signature mismatch"):
        load_model(folder / "trend_agent.json", signer=KEY)


def test_a_signature_that_is_not_a_tag_is_refused(tmp_path) -> None:
    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    (folder / "trend_agent.sig").write_bytes(b"\0" * 100_000)
    with pytest.raises(ModelLoadError, match="signature mismatch"):
        load_model(folder / "trend_agent.json", signer=KEY)


def test_a_signature_symlinked_from_outside_the_folder_is_refused(tmp_path) -> None:
    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    outside = tmp_path / "elsewhere.sig"
    shutil.move(folder / "trend_agent.sig", outside)
    (folder / "trend_agent.sig").symlink_to(outside)
    with pytest.raises(ModelLoadError, match="outside the models folder"):
        load_model(folder / "trend_agent.json", signer=KEY)


def test_a_fifo_as_the_signature_is_refused_without_waiting(tmp_path) -> None:
    folder = _copy(tmp_path)
    os.mkfifo(folder / "trend_agent.sig")
    with pytest.raises(ModelLoadError, match="trend_agent.sig is not a regular file"):
        load_model(folder / "trend_agent.json", signer=KEY)


def test_signing_refuses_a_pair_whose_onnx_does_not_match_and_signs_nothing(tmp_path) -> None:
    folder = _copy(tmp_path)
    (folder / "volatility_agent.onnx").write_bytes(b"not the pinned graph")
    with pytest.raises(ExportError, match="refusing to sign.*volatility_agent.json.*SHA-256"):
        sign_models(folder, KEY)
    assert not list(folder.glob("*.sig"))


def test_another_purposes_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="model key"):
        TacticalSignalGenerator(model_signer=Signer(b"m" * 32, Purpose.SNAPSHOT))
    with pytest.raises(ConfigError, match="model key"):
        sign_models(SHIPPED, Signer(b"m" * 32, Purpose.BUS))


def test_a_restored_engine_loads_its_models_with_the_model_key(tmp_path) -> None:
    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    path = TacticalSignalGenerator(_config(folder), model_signer=KEY).snapshot(tmp_path / "s.l2snap")
    assert TacticalSignalGenerator.restore(path, model_signer=KEY).members
    (folder / "trend_agent.sig").unlink()
    with pytest.raises(SnapshotError, match="cannot rebuild the engine.*trend_agent.json: not signed"):
        TacticalSignalGenerator.restore(path, model_signer=KEY)


def _key_file(tmp_path: Path, text: str = "m" * 32) -> Path:
    path = tmp_path / "model.key"
    path.write_text(text + "\n")
    return path


def test_the_export_cli_signs_a_folder_and_validates_with_the_key(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("L2FAST_MODEL_KEY", raising=False)
    monkeypatch.delenv("L2FAST_MODEL_KEY_FILE", raising=False)
    folder = _copy(tmp_path)
    key = _key_file(tmp_path)
    assert export_main(["--validate", str(folder), "--sign-key-file", str(key)]) == 1
    assert "FAIL trend_agent" in capsys.readouterr().out
    assert export_main(["--sign", str(folder), "--sign-key-file", str(key)]) == 0
    assert "signed trend_agent.json" in capsys.readouterr().out
    assert export_main(["--validate", str(folder), "--sign-key-file", str(key)]) == 0
    # The key from the environment, as every command reads it.
    monkeypatch.setenv("L2FAST_MODEL_KEY_FILE", str(key))
    assert export_main(["--validate", str(folder)]) == 0
    assert load_key(Purpose.MODEL) is not None
    _forge_always_long(folder)
    assert export_main(["--validate", str(folder)]) == 1
    assert "signature mismatch" in capsys.readouterr().out


def test_the_export_cli_refuses_to_sign_without_a_key(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("L2FAST_MODEL_KEY", raising=False)
    monkeypatch.delenv("L2FAST_MODEL_KEY_FILE", raising=False)
    folder = _copy(tmp_path)
    assert export_main(["--sign", str(folder)]) == 1
    assert "--sign needs the model key" in capsys.readouterr().err
    assert export_main(["--sign", str(folder), "--sign-key-file", str(_key_file(tmp_path, "short"))]) == 1
    assert "at least 32 bytes" in capsys.readouterr().err
    assert not list(folder.glob("*.sig"))


def test_the_commands_take_a_model_key_file(tmp_path, capsys, monkeypatch) -> None:
    from l2fast.cli.main import main

    monkeypatch.delenv("L2FAST_MODEL_KEY", raising=False)
    monkeypatch.delenv("L2FAST_MODEL_KEY_FILE", raising=False)
    key = _key_file(tmp_path)
    # The shipped demo agents are unsigned: with a key the demo refuses them by name.
    assert main(["demo", "--bars", "50", "--no-progress", "--model-key-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert "trend_agent.json: not signed" in err
    monkeypatch.setenv("L2FAST_MODEL_KEY", "m" * 32)
    assert main(["demo", "--bars", "50", "--no-progress"]) == 2
    assert "not signed" in capsys.readouterr().err


def test_the_worker_passes_both_keys_to_the_engine(tmp_path) -> None:
    pytest.importorskip("redis")
    from l2fast.bus.worker import WorkerOptions, build_generator

    folder = _copy(tmp_path)
    sign_models(folder, KEY)
    snapshot_key = Signer(b"s" * 32, Purpose.SNAPSHOT)
    snap = tmp_path / "worker.l2snap"
    options = WorkerOptions(models_dir=str(folder), snapshot=str(snap), snapshot_signer=snapshot_key,
                            model_signer=KEY)
    gen = build_generator(options)
    assert gen.snapshot_signer is snapshot_key
    gen.snapshot(snap)
    assert build_generator(options).snapshot_signer is snapshot_key  # restored from the signed file
    with pytest.raises(SnapshotError, match="needs that key"):
        build_generator(WorkerOptions(models_dir=str(folder), snapshot=str(snap), model_signer=KEY))
    with pytest.raises(ModelLoadError, match="not signed"):
        build_generator(WorkerOptions(models_dir=str(SHIPPED), model_signer=KEY))


def test_an_export_with_the_key_signs_and_one_without_removes_the_stale_signature(tmp_path, capsys,
                                                                                  monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym
    from stable_baselines3 import PPO

    from l2fast.technical.state import TechnicalConfig, feature_names

    monkeypatch.delenv("L2FAST_MODEL_KEY", raising=False)
    monkeypatch.delenv("L2FAST_MODEL_KEY_FILE", raising=False)
    names = list(feature_names(TechnicalConfig()))[:4]

    class Toy(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (len(names),), np.float32)
        action_space = gym.spaces.Discrete(7)

        def reset(self, *, seed=None, options=None):
            return np.zeros(len(names), np.float32), {}

        def step(self, action):
            return np.zeros(len(names), np.float32), 0.0, True, False, {}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        source = tmp_path / "agent.zip"
        PPO("MlpPolicy", Toy(), n_steps=64, batch_size=64, seed=1, device="cpu").save(source)
        out = tmp_path / "out"
        args = [str(source), "--out", str(out), "--feature-names", ",".join(names), "--samples", "200"]
        assert export_main([*args, "--sign-key-file", str(_key_file(tmp_path))]) == 0
        assert "agent.sig" in capsys.readouterr().out
        assert load_model(out / "agent.json", signer=KEY).name == "agent"
        assert export_main(args) == 0
    finally:
        torch.set_num_threads(threads)
    # An unsigned export of the same name must not leave a signature of the old manifest.
    assert not (out / "agent.sig").exists()
    with pytest.raises(ModelLoadError, match="not signed"):
        load_model(out / "agent.json", signer=KEY)

"""``python -m l2fast.export``: export real source files, refuse bad ones, validate folders.

Sources are written the way users have them: ``model.save("agent.zip")`` from SB3, and
seed-format ``.pkl`` bundles (a dict whose ``model`` is the bytes of an SB3 zip archive).
Every failure must exit non-zero with one ``error:`` line and leave the output folder empty.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("onnx")
pytest.importorskip("sklearn")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from stable_baselines3 import PPO, SAC  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

from l2fast.export.__main__ import main  # noqa: E402
from l2fast.models.loading import load_model, validate_models  # noqa: E402
from l2fast.models.manifest import default_action_targets  # noqa: E402
from l2fast.technical.state import TechnicalConfig, feature_names  # noqa: E402

NAMES = [n for n in feature_names(TechnicalConfig()) if n.startswith(("ret_", "rsi_"))][:5]
N = len(NAMES)
SAMPLES = "400"


# SB3 trains and predicts on one torch thread (the machine's other core runs the suite's
# other work): tests/conftest.py's one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Toy(gym.Env):
    def __init__(self, action_space: spaces.Space | None = None, n: int = N) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.action_space = action_space or spaces.Discrete(7)
        self._rng = np.random.default_rng(0)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._rng.standard_normal(self.observation_space.shape).astype(np.float32), {}

    def step(self, action):
        self._t += 1
        obs = self._rng.standard_normal(self.observation_space.shape).astype(np.float32)
        return obs, float(obs[0]), self._t >= 32, False, {}


@pytest.fixture(scope="module")
def ppo():
    model = PPO("MlpPolicy", _Toy(), n_steps=64, batch_size=64, n_epochs=1, seed=1, device="cpu")
    return model.learn(64)


def _zip_bytes(model) -> bytes:
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def _bundle(path, model, *, scaler="fit", names=NAMES, **extra):
    if scaler == "fit":
        scaler = StandardScaler().fit(np.random.default_rng(2).normal(10, 3, (300, N)))
    bundle = {
        "model": _zip_bytes(model), "scaler": scaler, "feature_names": names, "action_space": 7,
        "specialization": "trend", "performance_metrics": {"sharpe": np.float64(0.7), "trades": np.int64(12)},
        "training_config": {"total_timesteps": 64, "seed": 1},
    }
    bundle.update(extra)
    path.write_bytes(pickle.dumps(bundle))
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_clean_failure(code: int, err: str, out_dir) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_bundle_exports_onnx_and_manifest_that_validate(ppo, tmp_path, capsys):
    src = _bundle(tmp_path / "trend_agent.pkl", ppo, timeframes=["1m", "5m"], lookback=1)
    out = tmp_path / "onnx_models"
    code, stdout, err = _run(capsys, src, "--out", out, "--samples", SAMPLES)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["trend_agent.json", "trend_agent.onnx"]
    assert "trend_agent" in stdout and "parity on 400 samples" in stdout
    manifest = json.loads((out / "trend_agent.json").read_text())
    assert manifest["feature_names"] == NAMES and manifest["algorithm"] == "PPO"
    assert manifest["source"]["kind"] == "pkl-bundle" and manifest["source"]["file"] == "trend_agent.pkl"
    assert manifest["action_targets"] == default_action_targets(7)
    assert manifest["performance_metrics"] == {"sharpe": 0.7, "trades": 12}
    assert manifest["parity"]["passed"] and manifest["parity"]["discrete_agreement"] == 1.0
    assert manifest["timeframes"] == ["1m", "5m"] and manifest["specialization"] == "trend"
    assert validate_models(out) == {"passed": 1, "total": 1, "failures": []}
    assert _run(capsys, "--validate", out)[0] == 0


def test_sb3_zip_without_names_warns_and_names_can_be_given(ppo, tmp_path, capsys):
    src = tmp_path / "agent.zip"
    ppo.save(src)
    code, _, err = _run(capsys, src, "--out", tmp_path / "a", "--samples", SAMPLES)
    assert code == 0 and "warning:" in err and "obs_0" in err
    assert load_model(tmp_path / "a" / "agent.json").feature_names == tuple(f"obs_{i}" for i in range(N))
    assert validate_models(tmp_path / "a")["passed"] == 0  # placeholder names are unusable by the engine

    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(NAMES) + "\n")
    for spec in (",".join(NAMES), names_file):
        out = tmp_path / f"b{len(str(spec))}"
        code, _, err = _run(capsys, src, "--out", out, "--feature-names", spec, "--samples", SAMPLES)
        assert code == 0 and "warning" not in err
        assert validate_models(out)["passed"] == 1


def test_vecnormalize_file_is_folded_in(tmp_path, capsys):
    venv = VecNormalize(DummyVecEnv([lambda: _Toy(spaces.Box(-1, 1, (2,), np.float32))]), clip_obs=3.0)
    model = SAC("MlpPolicy", venv, learning_starts=32, buffer_size=500, batch_size=16, seed=0, device="cpu").learn(64)
    model.save(tmp_path / "sac.zip")
    venv.save(tmp_path / "vecnormalize.pkl")
    out = tmp_path / "out"
    code, _, err = _run(capsys, tmp_path / "sac.zip", "--out", out, "--vecnormalize", tmp_path / "vecnormalize.pkl",
                        "--feature-names", ",".join(NAMES), "--samples", SAMPLES)
    assert code == 0, err
    loaded = load_model(out / "sac.json")
    raw = np.random.default_rng(3).normal(0, 50, (64, N)).astype(np.float32)
    venv.training = False
    ref, _ = model.predict(venv.normalize_obs(raw.astype(np.float64)), deterministic=True)
    np.testing.assert_allclose(loaded.predict(raw), ref, atol=1e-5)


def test_a_folder_of_sources_exports_all_of_them(ppo, tmp_path, capsys):
    folder = tmp_path / "saved_models"
    folder.mkdir()
    _bundle(folder / "one.pkl", ppo)
    ppo.save(folder / "two.zip")
    out = tmp_path / "out"
    code, _, err = _run(capsys, folder, "--out", out, "--feature-names", ",".join(NAMES), "--samples", SAMPLES)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["one.json", "one.onnx", "two.json", "two.onnx"]


def test_corrupt_source_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "broken.zip"
    src.write_bytes(b"PK\x03\x04 definitely not a full archive")
    code, _, err = _run(capsys, src, "--out", tmp_path / "out", "--samples", SAMPLES)
    _assert_clean_failure(code, err, tmp_path / "out")
    assert "broken.zip" in err


def test_one_bad_source_in_a_folder_writes_nothing_at_all(ppo, tmp_path, capsys):
    folder = tmp_path / "saved_models"
    folder.mkdir()
    _bundle(folder / "good.pkl", ppo)
    (folder / "zz_bad.pkl").write_bytes(b"\x80\x04garbage")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = _run(capsys, folder, "--out", out, "--samples", SAMPLES)
    _assert_clean_failure(code, err, out)
    assert "zz_bad.pkl" in err


def test_feature_name_count_mismatch_fails_cleanly(ppo, tmp_path, capsys):
    src = tmp_path / "agent.zip"
    ppo.save(src)
    code, _, err = _run(capsys, src, "--out", tmp_path / "out", "--feature-names", "a,b", "--samples", SAMPLES)
    _assert_clean_failure(code, err, tmp_path / "out")
    assert "2" in err and str(N) in err


def test_unfitted_scaler_fails_cleanly(ppo, tmp_path, capsys):
    src = _bundle(tmp_path / "agent.pkl", ppo, scaler=StandardScaler())
    code, _, err = _run(capsys, src, "--out", tmp_path / "out", "--samples", SAMPLES)
    _assert_clean_failure(code, err, tmp_path / "out")
    assert "mean_" in err or "fitted" in err


def test_cnn_policy_is_refused_saying_what_is_unsupported(tmp_path, capsys):
    class Image(gym.Env):
        observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
        action_space = spaces.Discrete(3)

    PPO("CnnPolicy", DummyVecEnv([Image]), n_steps=64, batch_size=64, device="cpu").save(tmp_path / "cnn.zip")
    code, _, err = _run(capsys, tmp_path / "cnn.zip", "--out", tmp_path / "out", "--samples", SAMPLES)
    _assert_clean_failure(code, err, tmp_path / "out")
    assert "cnn" in err.lower() or "observation" in err.lower()


def test_validate_reports_a_tampered_model(ppo, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, _bundle(tmp_path / "m.pkl", ppo), "--out", out, "--samples", SAMPLES)[0] == 0
    onnx_file = out / "m.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\x00")
    code, stdout, _ = _run(capsys, "--validate", out)
    assert code == 1 and "FAIL m:" in stdout and "SHA-256" in stdout and "0/1 models valid" in stdout
    assert _run(capsys, "--validate", tmp_path / "empty_or_missing")[0] == 1


def test_validate_takes_a_config_whose_technical_section_defines_the_names(ppo, tmp_path, capsys):
    names = NAMES[:-1] + ["rsi_30_1h"]
    out = tmp_path / "out"
    assert _run(capsys, _bundle(tmp_path / "m.pkl", ppo, names=names), "--out", out, "--samples", SAMPLES)[0] == 0
    code, stdout, _ = _run(capsys, "--validate", out)
    assert code == 1 and "unknown to the technical core: rsi_30_1h" in stdout
    config = tmp_path / "l2fast.toml"
    config.write_text("[technical]\nrsi_periods = [14, 21, 30]\n")
    code, stdout, err = _run(capsys, "--validate", out, "--config", config)
    assert code == 0 and "1/1 models valid" in stdout, stdout + err
    config.write_text("[technical]\nrsi_periods = 14\n")
    code, _, err = _run(capsys, "--validate", out, "--config", config)
    assert code == 1 and err.startswith("error: ") and "rsi_periods" in err


def test_validate_says_a_folder_of_sources_holds_no_exported_model(tmp_path, capsys):
    folder = tmp_path / "saved_models"
    folder.mkdir()
    for name in ("a.pkl", "b.pkl"):
        (folder / name).write_bytes(b"\x80\x04source")
    code, stdout, err = _run(capsys, "--validate", folder)
    assert code == 1 and stdout == ""
    assert err == (f"error: {folder}: no exported model (found 2 .pkl sources; "
                   f"export them with python -m l2fast.export {folder} --out DIR)\n")


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["agent.zip"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["agent.zip", "--out", "out", "--config", "l2fast.toml"])
    assert exc.value.code == 2


def test_fresh_interpreter_failure_prints_one_line_and_no_traceback(tmp_path):
    (tmp_path / "nope.zip").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "l2fast.export", str(tmp_path / "nope.zip"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_feature_namespace_and_timeframe_go_into_the_manifest_and_the_names_are_checked(ppo, tmp_path, capsys):
    src = tmp_path / "finrl_agent.zip"
    ppo.save(src)
    names = ",".join(["close", "macd", "rsi_30", "cci_30", "dx_30", "close_30_sma", "boll_ub"][:N])  # FinRL's
    out = tmp_path / "a"
    code, _, err = _run(capsys, src, "--out", out, "--feature-names", names, "--feature-namespace", "stockstats",
                        "--feature-timeframe", "1h", "--samples", SAMPLES)
    assert code == 0, err
    manifest = json.loads((out / "finrl_agent.json").read_text())
    assert (manifest["feature_namespace"], manifest["feature_timeframe"]) == ("stockstats", "1h")
    model = load_model(out / "finrl_agent.json")
    assert model.vector_names[0] == "close_1h" and model.vector_names[1] == "ss:macd_1h"
    assert validate_models(out) == {"passed": 1, "total": 1, "failures": []}

    # A name stockstats' family lacks is refused before anything is written.
    bad = tmp_path / "b"
    code, _, err = _run(capsys, src, "--out", bad, "--feature-names", names.replace("rsi_30", "kdjk"),
                        "--feature-namespace", "stockstats", "--feature-timeframe", "1h", "--samples", SAMPLES)
    _assert_clean_failure(code, err, bad)
    assert "not a stockstats name" in err
    # Without the flags the manifest keeps l2fast's name space and carries neither key.
    code, _, err = _run(capsys, src, "--out", tmp_path / "c", "--feature-names", ",".join(NAMES),
                        "--samples", SAMPLES)
    assert code == 0 and not {"feature_namespace", "feature_timeframe"} & set(
        json.loads((tmp_path / "c" / "finrl_agent.json").read_text()))

"""``--trust-pickle``: a bundle whose model is a pickled SB3 object, unpickled only in a child process.

The bundles are written as the seed wrote them (``pickle.dumps({"model": model, "scaler":
scaler, ...})`` with the live SB3 algorithm). Without the flag they are refused as before;
with it, the exporting process still never unpickles anything: the tests poison its
pickle, and the file's code (a ``__reduce__`` with side effects) shows it ran elsewhere.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("onnx")
pytest.importorskip("sklearn")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402
from test_export_cli import NAMES, N  # noqa: E402  (the exporter tests' feature layout)

import l2fast  # noqa: E402
from l2fast.errors import ExportError, UnsafePickleError  # noqa: E402
from l2fast.export import export_model  # noqa: E402
from l2fast.export.__main__ import main  # noqa: E402
from l2fast.export.sources import load_source  # noqa: E402
from l2fast.export.trusted import load_trusted_bundle  # noqa: E402
from l2fast.models.loading import load_model, validate_models  # noqa: E402

SAMPLES = 300
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
REPO = Path(__file__).resolve().parents[1]


# SB3 trains and predicts on one torch thread (the machine's other core runs the suite's
# other work): tests/conftest.py's one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path, monkeypatch):
    """Temporary folders go to a folder of the test's own, checked empty afterwards."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield
    assert list(tmp.iterdir()) == [], "the trusted unpickling left its temporary folder behind"


@pytest.fixture(scope="module")
def real_rows(btc_1m) -> np.ndarray:
    """Features of real BTC minutes: log returns over 1, 5, 15, 60 bars and the log volume change."""
    close = np.log(btc_1m["close"][:20_061])
    volume = np.log1p(btc_1m["volume"][:20_061])
    t = np.arange(60, close.size)
    rows = np.stack([close[t] - close[t - 1], close[t] - close[t - 5], close[t] - close[t - 15],
                     close[t] - close[t - 60], volume[t] - volume[t - 1]], axis=1)
    return rows.astype(np.float32)


class _Rows(gym.Env):
    """Observations are scaled real rows; the reward follows the next return."""

    def __init__(self, obs: np.ndarray, action_space: spaces.Space) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (N,), np.float32)
        self.action_space = action_space
        self._obs, self._t = obs, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = int(self.np_random.integers(0, len(self._obs) - 64))
        return self._obs[self._t], {}

    def step(self, action):
        self._t += 1
        sign = float(np.sum(action)) - (3.0 if isinstance(self.action_space, spaces.Discrete) else 0.0)
        return self._obs[self._t], sign * float(self._obs[self._t, 0]) * 100, False, self._t % 32 == 0, {}


@pytest.fixture(scope="module")
def agents(real_rows):
    """A discrete PPO with a StandardScaler, and a Box PPO with a MinMaxScaler and VecNormalize."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        standard = StandardScaler().fit(real_rows.astype(np.float64))
        discrete = PPO("MlpPolicy", _Rows(standard.transform(real_rows).astype(np.float32), spaces.Discrete(7)),
                       n_steps=64, batch_size=64, n_epochs=1, seed=1, device="cpu").learn(128)
        minmax = MinMaxScaler(clip=True).fit(real_rows.astype(np.float64))
        venv = VecNormalize(DummyVecEnv([lambda: _Rows(minmax.transform(real_rows).astype(np.float32), BOX)]),
                            norm_reward=False)
        box = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=1, device="cpu").learn(128)
    return {"discrete": (discrete, standard, None), "box": (box, minmax, venv)}


def _seed_bundle(path: Path, model, scaler, vecnormalize=None, *, zip_bytes: bool = False, **extra) -> Path:
    """The seed's format: the live SB3 algorithm pickled inside the bundle dict (or its zip bytes)."""
    stored = model
    if zip_bytes:
        buf = io.BytesIO()
        model.save(buf)
        stored = buf.getvalue()
    bundle = {"model": stored, "scaler": scaler, "feature_names": NAMES, "action_space": model.action_space,
              "specialization": "trend", "performance_metrics": {"sharpe": np.float64(0.5)},
              "training_config": {"seed": 1, "algorithm": "PPO"}, "vecnormalize": vecnormalize}
    bundle.update(extra)
    path.write_bytes(pickle.dumps(bundle))
    return path


def _expected(model, scaler, venv, rows: np.ndarray) -> np.ndarray:
    """SB3 predict on the rows as the original objects normalise them (as parity.normalise_like_sb3)."""
    x = scaler.transform(rows.astype(np.float64))
    if venv is not None:
        rms = venv.obs_rms
        x = np.clip((x - rms.mean) / np.sqrt(rms.var + venv.epsilon), -venv.clip_obs, venv.clip_obs)
    return model.predict(x.astype(np.float32), deterministic=True)[0]


class _Reduce:
    """An object whose unpickling calls ``func(*args)``: the file's own code."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _poison_pickle(monkeypatch) -> None:
    """Make any real unpickling in this (the exporting) process fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("the exporting process unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


# --- refused by default, exported with the flag --------------------------------------


def test_pickled_sb3_object_is_refused_without_the_flag(agents, tmp_path, capsys):
    model, scaler, _ = agents["discrete"]
    path = _seed_bundle(tmp_path / "seed.pkl", model, scaler)
    with pytest.raises(UnsafePickleError, match="SB3 zip archive"):
        load_source(path)
    with pytest.raises(UnsafePickleError, match="SB3 zip archive"):
        export_model(path, tmp_path / "out")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "error: refused to unpickle global stable_baselines3" in err and "--trust-pickle" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["discrete", "box"])
def test_trusted_bundle_exports_with_parity_and_the_exporter_never_unpickles(case, agents, real_rows, tmp_path,
                                                                             monkeypatch, caplog):
    model, scaler, venv = agents[case]
    path = _seed_bundle(tmp_path / f"seed_{case}.pkl", model, scaler, venv)
    _poison_pickle(monkeypatch)
    with caplog.at_level("WARNING", logger="l2fast.export.trusted"):
        report = export_model(path, tmp_path / "out", trust_pickle=True, samples=SAMPLES)
    records = [r for r in caplog.records if r.name == "l2fast.export.trusted"]
    assert [r.levelname for r in records] == ["WARNING"]
    assert "runs any code the file carries, with your rights" in records[0].getMessage()
    monkeypatch.undo()

    manifest = json.loads(report.manifest_path.read_text())
    assert manifest["source"]["trust_pickle"] is True and manifest["source"]["kind"] == "pkl-bundle"
    assert manifest["feature_names"] == NAMES and manifest["algorithm"] == "PPO"
    assert manifest["parity"]["passed"]
    assert manifest["performance_metrics"] == {"sharpe": 0.5} and manifest["specialization"] == "trend"
    assert validate_models(tmp_path / "out") == {"passed": 1, "total": 1, "failures": []}

    exported = load_model(report.manifest_path)
    got = exported.predict(real_rows)
    want = _expected(model, scaler, venv, real_rows)
    if case == "discrete":
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(want)) > 1, "a constant policy would prove little"
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_trusted_bundle_of_zip_bytes_is_the_same_export(agents, tmp_path):
    # The flag accepts the modern format too: the same model, byte-equal ONNX.
    model, scaler, _ = agents["discrete"]
    safe = export_model(_seed_bundle(tmp_path / "a.pkl", model, scaler, zip_bytes=True), tmp_path / "safe",
                        samples=SAMPLES)
    trusted = export_model(_seed_bundle(tmp_path / "a.pkl", model, scaler), tmp_path / "trusted",
                           samples=SAMPLES, trust_pickle=True)
    assert safe.onnx_path.read_bytes() == trusted.onnx_path.read_bytes()


def test_command_line_flag_prints_the_warning_and_exports(agents, tmp_path, capsys):
    model, scaler, _ = agents["discrete"]
    path = _seed_bundle(tmp_path / "trend.pkl", model, scaler)
    code = main([str(path), "--out", str(tmp_path / "out"), "--samples", str(SAMPLES), "--trust-pickle"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err.count("warning: --trust-pickle:") == 1 and "runs any code the file carries" in err
    assert "trend:" in out and (tmp_path / "out" / "trend.onnx").is_file()


# --- the file's code runs in the child, and only there -------------------------------


def test_the_file_code_runs_in_the_child_only(agents, tmp_path, monkeypatch):
    model, scaler, _ = agents["discrete"]
    marker = tmp_path / "ran.json"
    code = ("import json, os, l2fast; l2fast.TOUCHED = True; os.environ['L2FAST_TOUCHED'] = '1'; "
            f"open({str(marker)!r}, 'w').write(json.dumps({{'pid': os.getpid(), "
            "'secret': os.environ.get('L2FAST_SECRET_PROBE'), 'cwd': os.getcwd()}))")
    path = _seed_bundle(tmp_path / "evil.pkl", model, scaler, payload=_Reduce(exec, code))
    monkeypatch.setenv("L2FAST_SECRET_PROBE", "do-not-leak")
    _poison_pickle(monkeypatch)
    report = export_model(path, tmp_path / "out", trust_pickle=True, samples=SAMPLES)
    assert report.onnx_path.is_file()

    # The flag trusts the file: its code did run, with the user's rights, but in another process,
    # without the parent's secrets, in a temporary folder since removed (the autouse fixture).
    ran = json.loads(marker.read_text())
    assert ran["pid"] != os.getpid() and ran["secret"] is None
    assert not Path(ran["cwd"]).exists()
    assert not hasattr(l2fast, "TOUCHED") and "L2FAST_TOUCHED" not in os.environ


def test_a_bundle_without_an_sb3_model_is_an_export_error(tmp_path):
    path = tmp_path / "b.pkl"
    path.write_bytes(pickle.dumps({"model": {"weights": [1, 2]}, "scaler": None}))
    with pytest.raises(ExportError, match=r"--trust-pickle: bundle 'model' is a builtins.dict, not an SB3"):
        load_source(path, trust_pickle=True)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ExportError, match="must be a dict"):
        load_source(path, trust_pickle=True)


def test_a_corrupt_pickle_is_an_export_error(agents, tmp_path):
    model, scaler, _ = agents["discrete"]
    raw = _seed_bundle(tmp_path / "c.pkl", model, scaler).read_bytes()
    path = tmp_path / "c.pkl"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ExportError, match="unpickling failed: .*(Error|pickle)"):
        load_source(path, trust_pickle=True)


def test_an_unsupported_scaler_is_refused_as_on_the_safe_path(agents, tmp_path):
    from sklearn.preprocessing import Normalizer

    model, _, _ = agents["discrete"]
    path = _seed_bundle(tmp_path / "n.pkl", model, Normalizer().fit(np.ones((3, N))))
    with pytest.raises(ExportError, match="unsupported scaler sklearn.preprocessing._data.Normalizer"):
        load_source(path, trust_pickle=True)


def test_a_crashing_child_is_an_export_error(tmp_path):
    path = tmp_path / "crash.pkl"
    path.write_bytes(pickle.dumps({"model": _Reduce(os._exit, 7)}))
    with pytest.raises(ExportError, match="exited with status 7 without a result"):
        load_trusted_bundle(path)
    path.write_bytes(pickle.dumps({"model": _Reduce(os.kill, 0, 9)}))  # its own process group
    with pytest.raises(ExportError, match="killed by signal 9"):
        load_trusted_bundle(path)


def test_a_child_over_its_time_is_killed_with_what_it_started(tmp_path):
    path = tmp_path / "slow.pkl"
    grandchild = tmp_path / "grandchild.pid"
    start = ("import subprocess, sys, time; "
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
             f"open({str(grandchild)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    path.write_bytes(pickle.dumps({"model": _Reduce(exec, start)}))
    began = time.monotonic()
    with pytest.raises(ExportError, match="took more than 5 s; the process was killed"):
        load_trusted_bundle(path, timeout=5)
    assert time.monotonic() - began < 30
    pid = int(grandchild.read_text())
    for _ in range(50):  # the kill is delivered; the zombie is reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child's own child {pid} outlived the timeout")


# --- the runtime never unpickles ------------------------------------------------------


def test_the_runtime_loads_and_runs_a_trusted_export_with_pickle_disabled(agents, real_rows, tmp_path):
    model, scaler, _ = agents["discrete"]
    report = export_model(_seed_bundle(tmp_path / "seed.pkl", model, scaler), tmp_path / "out",
                          trust_pickle=True, samples=SAMPLES)
    np.save(tmp_path / "rows.npy", real_rows[:500])
    want = _expected(model, scaler, None, real_rows[:500])
    code = (
        "import pickle, sys\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('the runtime unpickled something')\n"
        "pickle.load = pickle.loads = pickle.Unpickler = refuse\n"
        "sys.modules['cloudpickle'] = None\n"
        "import numpy as np\n"
        "from l2fast.models.loading import load_model\n"
        "import l2fast.engine\n"
        f"rows = np.load({str(tmp_path / 'rows.npy')!r}, allow_pickle=False)\n"
        f"model = load_model({str(report.manifest_path)!r})\n"
        "print(' '.join(str(int(a)) for a in model.predict(rows)))\n"
        "print(sorted(m for m in sys.modules if m.startswith('l2fast.export')))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    actions, exporter = out.splitlines()
    assert [int(a) for a in actions.split()] == want.tolist()
    assert exporter == "[]"


_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\s|c?import\s+([\w.]+))", re.M)
_UNPICKLERS = ("pickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "torch", "l2fast.export")


def _imports(path: Path) -> set[str]:
    """Every module a source imports, at any depth (Python by its syntax tree, Cython by its lines)."""
    text = path.read_text()
    if path.suffix != ".py":
        return {m.group(1) or m.group(2) for m in _IMPORT.finditer(text)}
    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_runtime_packages_never_import_pickle():
    # l2fast.models and l2fast.engine (Python and kernel sources) load ONNX + JSON only.
    sources = [p for stage in ("models", "engine")
               for p in [*(REPO / "l2fast" / stage).rglob("*.py"), *(REPO / "csrc" / "l2fast" / stage).rglob("*.pyx"),
                         *(REPO / "csrc" / "l2fast" / stage).rglob("*.pxd")]]
    assert len(sources) > 5
    found = sorted((p.name, name) for p in sources for name in _imports(p)
                   if any(name == u or name.startswith(f"{u}.") for u in _UNPICKLERS))
    assert found == []
    assert [p.name for p in sources if "allow_pickle=True" in p.read_text()] == []

"""Loading export sources: SB3 zips and .pkl bundles rebuilt without running their pickles."""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import json
import os
import pickle
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")
preprocessing = pytest.importorskip("sklearn.preprocessing")

from gymnasium import spaces  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

from l2fast.errors import ExportError, UnsafePickleError  # noqa: E402
from l2fast.export.sources import LoadedAgent, VecNormStats, iter_sources, load_source  # noqa: E402

N_FEATURES = 6
BOX = spaces.Box(low=np.array([-1.0, 0.0], np.float32), high=np.array([2.0, 3.0], np.float32))


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


class ToyEnv(gym.Env):
    """Random features; the reward depends on the action so training moves the weights."""

    def __init__(self, action_space=None, observation_space=None) -> None:
        self.observation_space = observation_space or spaces.Box(-np.inf, np.inf, (N_FEATURES,), np.float32)
        self.action_space = action_space or spaces.Discrete(7)
        self._t = 0

    def _obs(self):
        return self.observation_space.sample() if not isinstance(self.observation_space, spaces.Box) or \
            self.observation_space.dtype != np.float32 else \
            self.np_random.normal(size=self.observation_space.shape).astype(np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        a = float(np.sum(action)) - (3.0 if isinstance(self.action_space, spaces.Discrete) else 1.0)
        obs = self._obs()
        first = obs[0] if isinstance(obs, np.ndarray) else 0.0
        return obs, float(np.ravel(first)[0]) * a, False, self._t >= 50, {}


ON = dict(n_steps=64, batch_size=32, n_epochs=2)
OFF = dict(learning_starts=50, buffer_size=1_000, batch_size=32)
# id -> (algorithm, action space, constructor kwargs)
CASES = {
    "ppo-discrete": ("PPO", None, dict(ON, policy_kwargs=dict(net_arch=[16, 16], activation_fn=torch.nn.Tanh))),
    "ppo-box-separate": ("PPO", BOX, dict(ON, policy_kwargs=dict(
        net_arch=dict(pi=[8], vf=[16, 16]), activation_fn=torch.nn.ELU, share_features_extractor=False))),
    "ppo-box-sde": ("PPO", BOX, dict(ON, use_sde=True, policy_kwargs=dict(net_arch=[12], log_std_init=-1.0))),
    "a2c-discrete": ("A2C", None, dict(n_steps=8, policy_kwargs=dict(net_arch=[16], activation_fn=torch.nn.LeakyReLU))),
    "a2c-box": ("A2C", BOX, dict(n_steps=8, policy_kwargs=dict(
        net_arch=dict(pi=[8, 8], vf=[8]), activation_fn=torch.nn.GELU))),
    "dqn": ("DQN", None, dict(OFF, policy_kwargs=dict(net_arch=[32], activation_fn=torch.nn.ReLU))),
    "sac": ("SAC", BOX, dict(OFF, policy_kwargs=dict(net_arch=dict(pi=[16], qf=[16]), activation_fn=torch.nn.SiLU,
                                                    n_critics=1, share_features_extractor=True))),
    "td3": ("TD3", BOX, dict(OFF, policy_kwargs=dict(net_arch=[16, 8], activation_fn=torch.nn.Tanh))),
    "ddpg": ("DDPG", BOX, dict(OFF, policy_kwargs=dict(net_arch=dict(pi=[8], qf=[8]), activation_fn=torch.nn.Sigmoid))),
}


def _train(case: str, steps: int = 200):
    algorithm, action_space, kwargs = CASES[case]
    model = getattr(sb3, algorithm)("MlpPolicy", ToyEnv(action_space), seed=1, **kwargs)
    model.learn(steps)
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each case trained once and saved as ``<case>.zip``: {case: (model, path)}."""
    cache: dict[str, tuple[object, Path]] = {}
    folder = tmp_path_factory.mktemp("zips")

    def get(case: str):
        if case not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = _train(case)
            path = folder / f"{case}.zip"
            model.save(path)
            cache[case] = (model, path)
        return cache[case]

    return get


def _observations(n_rows: int = 2_000) -> np.ndarray:
    rng = np.random.default_rng(7)
    obs = rng.normal(scale=2.0, size=(n_rows, N_FEATURES))
    obs[::5] *= 1e4  # far outside the training range: exercises the action clipping
    return obs.astype(np.float32)


def _assert_same_predictions(original, agent: LoadedAgent) -> None:
    obs = _observations()
    expected, _ = original.predict(obs, deterministic=True)
    got, _ = agent.model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(got, expected)
    for i in range(40):
        np.testing.assert_array_equal(agent.model.predict(obs[i], deterministic=True)[0],
                                      original.predict(obs[i], deterministic=True)[0])


def _zip_bytes(model) -> bytes:
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def _rewrite_zip(raw: bytes, *, data=None, entries: dict[str, bytes | None] | None = None) -> bytes:
    """A copy of an SB3 zip with ``data`` edited by ``data(dict)`` and entries replaced/removed."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == "data" and data is not None:
                parsed = json.loads(content)
                data(parsed)
                content = json.dumps(parsed).encode()
            if entries and name in entries:
                if entries[name] is None:
                    continue
                content = entries[name]
            dst.writestr(name, content)
    return out.getvalue()


def _serialized(obj_bytes: bytes) -> dict:
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(obj_bytes).decode()}


def _bundle(model_bytes: bytes, **extra) -> dict:
    bundle = {"model": model_bytes, "scaler": None, "feature_names": None, "action_space": None,
              "specialization": "trend", "performance_metrics": {"sharpe": 1.25}, "training_config": {"seed": 1}}
    bundle.update(extra)
    return bundle


def _write(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_sb3_zip_round_trip_predicts_exactly_like_the_original(case, trained):
    original, path = trained(case)
    agent = load_source(path)
    algorithm, action_space, _ = CASES[case]
    assert agent.algorithm == algorithm
    assert type(agent.model).__name__ == algorithm
    assert agent.source_kind == "sb3-zip" and agent.name == case
    assert agent.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert agent.observation_size == N_FEATURES and agent.feature_names is None
    assert agent.scaler is None and agent.vecnormalize is None
    assert agent.action_space == (action_space or spaces.Discrete(7))
    assert not agent.model.policy.training
    assert next(agent.model.policy.parameters()).device.type == "cpu"
    want = original.policy.state_dict()
    got = agent.model.policy.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    _assert_same_predictions(original, agent)


def test_rebuilt_policy_keeps_architecture_settings(trained):
    agent = load_source(trained("ppo-box-separate")[1])
    policy = agent.model.policy
    assert not policy.share_features_extractor
    assert [m.out_features for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)] == [8]
    assert [m.out_features for m in policy.mlp_extractor.value_net if isinstance(m, torch.nn.Linear)] == [16, 16]
    assert any(isinstance(m, torch.nn.ELU) for m in policy.mlp_extractor.policy_net)
    sac = load_source(trained("sac")[1]).model.policy
    assert sac.critic.n_critics == 1 and sac.share_features_extractor
    assert any(isinstance(m, torch.nn.SiLU) for m in sac.actor.latent_pi)


def test_bundle_round_trip_with_scaler_names_metadata_and_vecnormalize(trained, tmp_path):
    original, _ = trained("ppo-discrete")
    rng = np.random.default_rng(0)
    scaler = preprocessing.StandardScaler().fit(rng.normal(size=(300, N_FEATURES)) * 5 + 2)
    names = [f"feat_{i}_1m" for i in range(N_FEATURES)]
    venv = VecNormalize(DummyVecEnv([ToyEnv]), clip_obs=4.0, epsilon=1e-6)
    venv.reset()
    for _ in range(20):
        venv.step(np.array([1]))
    bundle = _bundle(_zip_bytes(original), scaler=scaler, feature_names=names, action_space=7,
                     timeframes=("1m", "5m"), lookback=120, action_targets=np.linspace(-1, 1, 7),
                     vecnormalize=venv, training_config={"algorithm": "ppo", "seed": 1})
    path = _write(tmp_path / "trend_agent.pkl", bundle)
    agent = load_source(path)
    assert agent.name == "trend_agent" and agent.source_kind == "pkl-bundle" and agent.algorithm == "PPO"
    assert agent.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert agent.feature_names == names
    assert type(agent.scaler) is preprocessing.StandardScaler
    np.testing.assert_array_equal(agent.scaler.mean_, scaler.mean_)
    np.testing.assert_array_equal(agent.vecnormalize.obs_mean, venv.obs_rms.mean)
    np.testing.assert_array_equal(agent.vecnormalize.obs_var, venv.obs_rms.var)
    assert (agent.vecnormalize.clip_obs, agent.vecnormalize.epsilon) == (4.0, 1e-6)
    assert agent.specialization == "trend" and agent.timeframes == ["1m", "5m"] and agent.lookback == 120
    assert agent.action_targets == pytest.approx(list(np.linspace(-1, 1, 7)))
    assert agent.performance_metrics == {"sharpe": 1.25}
    _assert_same_predictions(original, agent)


@pytest.mark.parametrize("action_space", [
    {"type": "box", "low": [-1.0, 0.0], "high": [2.0, 3.0]},
    BOX,
    {"type": "box", "shape": [2]},
])
def test_bundle_action_space_may_be_a_dict_or_a_space(action_space, trained, tmp_path):
    original, _ = trained("sac")
    agent = load_source(_write(tmp_path / "b.pkl", _bundle(_zip_bytes(original), action_space=action_space)))
    assert agent.action_space == BOX and agent.algorithm == "SAC"


@pytest.mark.parametrize("scaler_cls", ["MinMaxScaler", "RobustScaler"])
def test_other_scalers_are_accepted(scaler_cls, trained, tmp_path):
    original, _ = trained("dqn")
    scaler = getattr(preprocessing, scaler_cls)().fit(np.random.default_rng(1).normal(size=(100, N_FEATURES)))
    agent = load_source(_write(tmp_path / "b.pkl", _bundle(_zip_bytes(original), scaler=scaler, action_space=7)))
    assert type(agent.scaler).__name__ == scaler_cls


def test_scaler_without_mean_is_fine_when_with_mean_is_false(trained, tmp_path):
    original, _ = trained("dqn")
    scaler = preprocessing.StandardScaler(with_mean=False).fit(np.random.default_rng(1).normal(size=(50, N_FEATURES)))
    assert scaler.mean_ is not None  # sklearn still records it; remove it to prove it is not needed
    scaler.mean_ = None
    agent = load_source(_write(tmp_path / "b.pkl", _bundle(_zip_bytes(original), scaler=scaler)))
    assert agent.scaler is not None


def test_scaler_feature_names_are_used_when_the_bundle_has_none(trained, tmp_path):
    pd = pytest.importorskip("pandas")
    original, _ = trained("dqn")
    cols = [f"c{i}" for i in range(N_FEATURES)]
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(50, N_FEATURES)), columns=cols)
    scaler = preprocessing.StandardScaler().fit(frame)
    agent = load_source(_write(tmp_path / "b.pkl", _bundle(_zip_bytes(original), scaler=scaler)))
    assert agent.feature_names == cols


def test_feature_names_argument_overrides_the_bundle(trained, tmp_path):
    original, _ = trained("dqn")
    path = _write(tmp_path / "b.pkl", _bundle(_zip_bytes(original), feature_names=list("abcdef")))
    assert load_source(path, feature_names=list("uvwxyz")).feature_names == list("uvwxyz")
    assert load_source(trained("dqn")[1], feature_names=tuple("uvwxyz")).feature_names == list("uvwxyz")


def test_vecnormalize_file_argument_is_loaded_safely(trained, tmp_path):
    venv = VecNormalize(DummyVecEnv([ToyEnv]), clip_obs=3.0)
    venv.reset()
    for _ in range(10):
        venv.step(np.array([2]))
    venv.save(tmp_path / "vecnormalize.pkl")
    agent = load_source(trained("ppo-discrete")[1], vecnormalize=tmp_path / "vecnormalize.pkl")
    assert isinstance(agent.vecnormalize, VecNormStats)
    np.testing.assert_array_equal(agent.vecnormalize.obs_mean, venv.obs_rms.mean)
    assert agent.vecnormalize.clip_obs == 3.0 and agent.vecnormalize.epsilon == venv.epsilon
    venv.norm_obs = False
    venv.save(tmp_path / "rewards_only.pkl")
    assert load_source(trained("ppo-discrete")[1], vecnormalize=tmp_path / "rewards_only.pkl").vecnormalize is None


def test_legacy_gym_and_numpy_1_space_pickles_are_understood(trained, tmp_path):
    original, zip_path = trained("sac")
    legacy = {}
    for key, space in (("observation_space", original.observation_space), ("action_space", original.action_space)):
        raw = pickle.dumps(space, protocol=2).replace(b"gymnasium.spaces", b"gym.spaces")
        raw = raw.replace(b"numpy._core.", b"numpy.core.")
        assert b"gym.spaces.box\nBox" in raw and b"numpy.core.multiarray" in raw
        legacy[key] = _serialized(raw)
    path = tmp_path / "legacy.zip"
    path.write_bytes(_rewrite_zip(zip_path.read_bytes(), data=lambda d: d.update(legacy)))
    agent = load_source(path)
    assert agent.action_space == BOX
    _assert_same_predictions(original, agent)


def test_iter_sources_lists_a_folder_sorted_or_the_file(tmp_path):
    for name in ("b.zip", "a.pkl", "c.txt", ".hidden.zip"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.zip").mkdir()
    assert iter_sources(tmp_path) == [tmp_path / "a.pkl", tmp_path / "b.zip"]
    assert iter_sources(tmp_path / "c.txt") == [tmp_path / "c.txt"]
    with pytest.raises(ExportError, match="no such file"):
        iter_sources(tmp_path / "missing")


# --- malicious pickles ----------------------------------------------------------------


class _Payload:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payload(kind: str, target: Path) -> tuple[object, str]:
    """A pickled object that creates ``target`` when naively unpickled, and the global it names."""
    if kind == "os.system":
        return _Payload(os.system, f"touch {target}"), f"{os.system.__module__}.system"
    if kind == "builtins.eval":
        return _Payload(builtins.eval, f"open({str(target)!r}, 'w').close()"), "builtins.eval"
    return _Payload(subprocess.Popen, ["touch", str(target)]), "subprocess.Popen"


KINDS = ["os.system", "builtins.eval", "subprocess.Popen"]


@pytest.mark.parametrize("kind", KINDS)
def test_malicious_bundle_is_refused_and_never_runs(kind, trained, tmp_path):
    target = tmp_path / "pwned"
    payload, qualname = _payload(kind, target)
    whole = _write(tmp_path / "whole.pkl", payload)
    nested = _write(tmp_path / "nested.pkl", _bundle(_zip_bytes(trained("dqn")[0]), scaler=payload))
    metadata = _write(tmp_path / "meta.pkl", _bundle(_zip_bytes(trained("dqn")[0]),
                                                     training_config={"callback": payload}))
    for path in (whole, nested, metadata):
        with pytest.raises(UnsafePickleError) as info:
            load_source(path)
        assert f"{info.value.module}.{info.value.name}" == qualname
        assert qualname in str(info.value) and str(path) in str(info.value)
    assert not target.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_malicious_vecnormalize_file_is_refused_and_never_runs(kind, trained, tmp_path):
    target = tmp_path / "pwned"
    payload, qualname = _payload(kind, target)
    plain = _write(tmp_path / "vn_plain.pkl", payload)
    venv = VecNormalize(DummyVecEnv([ToyEnv]))
    venv.metadata = {"render_modes": [], "hook": payload}  # inside an otherwise genuine file
    venv.save(tmp_path / "vn_real.pkl")
    for path in (plain, tmp_path / "vn_real.pkl"):
        with pytest.raises(UnsafePickleError, match=qualname):
            load_source(trained("ppo-discrete")[1], vecnormalize=path)
    bundle = _write(tmp_path / "b.pkl", _bundle(_zip_bytes(trained("ppo-discrete")[0]), vecnormalize=venv))
    with pytest.raises(UnsafePickleError, match=qualname):
        load_source(bundle)
    assert not target.exists()


@pytest.mark.parametrize("entry", ["observation_space", "action_space", "policy_kwargs", "policy_class"])
@pytest.mark.parametrize("kind", KINDS)
def test_malicious_entry_in_sb3_zip_data_is_refused_and_never_runs(kind, entry, trained, tmp_path):
    target = tmp_path / "pwned"
    payload, qualname = _payload(kind, target)
    evil = _serialized(pickle.dumps(payload))
    raw = _rewrite_zip(trained("ppo-discrete")[1].read_bytes(), data=lambda d: d.__setitem__(entry, evil))
    path = tmp_path / "evil.zip"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError) as info:
        load_source(path)
    assert f"{info.value.module}.{info.value.name}" == qualname and entry in str(info.value)
    bundle = _write(tmp_path / "evil.pkl", _bundle(raw))  # the same zip carried inside a bundle
    with pytest.raises(UnsafePickleError, match=qualname):
        load_source(bundle)
    assert not target.exists()


def test_code_entries_of_sb3_zip_data_are_never_unpickled(trained, tmp_path):
    target = tmp_path / "pwned"
    payload, _ = _payload("os.system", target)
    evil = _serialized(pickle.dumps(payload))
    original, zip_path = trained("ppo-discrete")

    def poison(data):
        for key in ("lr_schedule", "clip_range", "ep_info_buffer", "_last_obs", "rollout_buffer_class"):
            data[key] = evil

    path = tmp_path / "poisoned_schedules.zip"
    path.write_bytes(_rewrite_zip(zip_path.read_bytes(), data=poison))
    agent = load_source(path)
    assert not target.exists()
    _assert_same_predictions(original, agent)


def test_malicious_policy_weights_are_refused_by_weights_only_loading(trained, tmp_path):
    target = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"w": _payload("os.system", target)[0]}, buf)
    path = tmp_path / "evil_weights.zip"
    path.write_bytes(_rewrite_zip(trained("dqn")[1].read_bytes(), entries={"policy.pth": buf.getvalue()}))
    with pytest.raises(ExportError, match="policy.pth"):
        load_source(path)
    assert not target.exists()


def test_pickled_sb3_object_in_bundle_is_refused_with_advice(trained, tmp_path):
    original, _ = trained("dqn")
    path = _write(tmp_path / "b.pkl", _bundle(original.policy))
    with pytest.raises(UnsafePickleError, match="SB3 zip archive"):
        load_source(path)
    path = _write(tmp_path / "c.pkl", _bundle(torch.zeros(3)))
    with pytest.raises(UnsafePickleError, match="torch.*SB3 zip archive"):
        load_source(path)


# --- refusals -------------------------------------------------------------------------


def test_cnn_policy_is_refused(tmp_path):
    image = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    model = sb3.PPO("CnnPolicy", ToyEnv(observation_space=image), n_steps=8, batch_size=8)
    model.save(tmp_path / "cnn.zip")
    with pytest.raises(ExportError, match="CnnPolicy .*not supported"):
        load_source(tmp_path / "cnn.zip")


def test_dict_observations_are_refused(tmp_path):
    obs = spaces.Dict({"a": spaces.Box(-1, 1, (3,), np.float32), "b": spaces.Box(-1, 1, (2,), np.float32)})
    model = sb3.PPO("MultiInputPolicy", ToyEnv(observation_space=obs), n_steps=8, batch_size=8)
    raw = _zip_bytes(model)
    (tmp_path / "multi.zip").write_bytes(raw)
    with pytest.raises(ExportError, match="MultiInputPolicy \\(Dict observations\\) is not supported"):
        load_source(tmp_path / "multi.zip")
    dict_space = json.loads(zipfile.ZipFile(io.BytesIO(raw)).read("data"))["observation_space"]
    mlp = sb3.PPO("MlpPolicy", ToyEnv(), n_steps=8, batch_size=8)
    path = tmp_path / "dict_obs.zip"
    path.write_bytes(_rewrite_zip(_zip_bytes(mlp), data=lambda d: d.__setitem__("observation_space", dict_space)))
    with pytest.raises(ExportError, match="Dict observation space .*not supported"):
        load_source(path)


def test_non_flat_box_observations_are_refused(tmp_path):
    model = sb3.PPO("MlpPolicy", ToyEnv(observation_space=spaces.Box(-1, 1, (3, 4), np.float32)),
                    n_steps=8, batch_size=8)
    model.save(tmp_path / "grid.zip")
    with pytest.raises(ExportError, match=r"shape \(3, 4\) is not supported: only a flat"):
        load_source(tmp_path / "grid.zip")


@pytest.mark.parametrize("policy,message", [
    ("sb3_contrib.common.recurrent.policies RecurrentActorCriticPolicy", "recurrent policies .*not supported"),
    ("sb3_contrib.common.maskable.policies MaskableActorCriticPolicy", "action-masking .*not supported"),
    ("sb3_contrib.qrdqn.policies QRDQNPolicy", "sb3-contrib algorithms are not supported"),
    ("stable_baselines3.dqn.policies CnnPolicy", "CnnPolicy .*not supported"),
])
def test_unsupported_policy_classes_are_refused_by_name(policy, message, trained, tmp_path):
    module, name = policy.split()
    ref = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"."
    path = tmp_path / "other.zip"
    path.write_bytes(_rewrite_zip(trained("dqn")[1].read_bytes(),
                                  data=lambda d: d.__setitem__("policy_class", _serialized(ref))))
    with pytest.raises(ExportError, match=message):
        load_source(path)


def test_unsupported_activation_is_refused(trained, tmp_path):
    def swap(data):
        kwargs = data["policy_kwargs"]
        raw = base64.b64decode(kwargs[":serialized:"])
        kwargs[":serialized:"] = base64.b64encode(raw.replace(b"Tanh", b"Mish")).decode()

    path = tmp_path / "mish.zip"
    path.write_bytes(_rewrite_zip(trained("td3")[1].read_bytes(), data=swap))
    with pytest.raises(UnsafePickleError, match="torch.nn.modules.activation.Mish"):
        load_source(path)


def test_bundle_action_space_must_agree_with_the_model(trained, tmp_path):
    raw = _zip_bytes(trained("dqn")[0])
    for given, match in ((5, "Discrete\\(5\\).*Discrete\\(7\\)"), ({"type": "box", "low": [0], "high": [1]}, "box")):
        with pytest.raises(ExportError, match=match):
            load_source(_write(tmp_path / "b.pkl", _bundle(raw, action_space=given)))
    sac = _zip_bytes(trained("sac")[0])
    with pytest.raises(ExportError, match="high .* differs"):
        narrower = {"type": "box", "low": [-1, 0], "high": [1, 1]}
        load_source(_write(tmp_path / "c.pkl", _bundle(sac, action_space=narrower)))


def test_bundle_algorithm_must_fit_the_policy(trained, tmp_path):
    raw = _zip_bytes(trained("td3")[0])
    assert load_source(_write(tmp_path / "a.pkl", _bundle(raw, algorithm="DDPG"))).algorithm == "DDPG"
    with pytest.raises(ExportError, match="SAC.*TD3 or DDPG"):
        load_source(_write(tmp_path / "b.pkl", _bundle(raw, training_config={"algorithm": "SAC"})))


@pytest.mark.parametrize("damage,match", [
    (lambda raw: raw[: len(raw) // 2], "corrupt zip|truncated"),  # may expose the zip nested in policy.pth
    (lambda raw: b"PK\x03\x04" + b"\x00" * 40, "not an SB3 .zip|corrupt zip"),
    (lambda raw: b"garbage, not a model", "corrupt zip"),
    (lambda raw: _rewrite_zip(raw, entries={"data": None}), "no 'data' entry"),
    (lambda raw: _rewrite_zip(raw, entries={"policy.pth": None}), "no 'policy.pth' entry"),
    (lambda raw: _rewrite_zip(raw, entries={"data": b"{not json"}), "not valid JSON"),
    (lambda raw: _rewrite_zip(raw, entries={"policy.pth": b"\x00" * 64}), "policy.pth is not a readable"),
    (lambda raw: _rewrite_zip(raw, data=lambda d: d.pop("action_space")), "no action_space"),
])
def test_corrupt_zip_is_an_export_error_naming_the_file(damage, match, trained, tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(damage(trained("dqn")[1].read_bytes()))
    with pytest.raises(ExportError, match=match) as info:
        load_source(path)
    assert str(path) in str(info.value) and not isinstance(info.value, UnsafePickleError)


def test_weights_of_another_architecture_are_refused(trained, tmp_path):
    other = sb3.DQN("MlpPolicy", ToyEnv(), policy_kwargs=dict(net_arch=[5]), buffer_size=10)
    weights = zipfile.ZipFile(io.BytesIO(_zip_bytes(other))).read("policy.pth")
    path = tmp_path / "mixed.zip"
    path.write_bytes(_rewrite_zip(trained("dqn")[1].read_bytes(), entries={"policy.pth": weights}))
    with pytest.raises(ExportError, match="do not fit the network"):
        load_source(path)


def test_truncated_or_wrong_pkl_is_an_export_error(trained, tmp_path):
    raw = pickle.dumps(_bundle(_zip_bytes(trained("dqn")[0])), protocol=4)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ExportError, match="corrupt|truncated"):
        load_source(cut)
    venv = VecNormalize(DummyVecEnv([ToyEnv]))
    venv.save(tmp_path / "vecnormalize.pkl")
    with pytest.raises(ExportError, match="this is a saved VecNormalize, not a bundle"):
        load_source(tmp_path / "vecnormalize.pkl")
    for obj, match in (([1, 2], "must be a dict"), ({"scaler": None}, "no 'model'"),
                       ({"model": "model.zip"}, "bytes of an SB3 zip"), ({"model": b"not a zip"}, "corrupt zip")):
        with pytest.raises(ExportError, match=match):
            load_source(_write(tmp_path / "w.pkl", obj))
    with pytest.raises(ExportError, match="cannot read"):
        load_source(tmp_path / "missing.zip")


def test_feature_name_count_mismatch_names_both_numbers(trained, tmp_path):
    with pytest.raises(ExportError, match="5 feature names \\(given\\) but the observation has 6 features"):
        load_source(trained("dqn")[1], feature_names=list("abcde"))
    path = _write(tmp_path / "b.pkl", _bundle(_zip_bytes(trained("dqn")[0]), feature_names=list("abcdefg")))
    with pytest.raises(ExportError, match="7 feature names \\(in the bundle\\) but the observation has 6"):
        load_source(path)
    for bad, match in (("a,b,c,d,e,f", "list of names"), (list("aabcde"), "repeat"), (["a", "", "c", "d", "e", "f"],
                                                                                         "invalid name")):
        with pytest.raises(ExportError, match=match):
            load_source(trained("dqn")[1], feature_names=bad)


@pytest.mark.parametrize("scaler_cls,attr", [
    ("StandardScaler", "scale_"), ("StandardScaler", "mean_"), ("MinMaxScaler", "min_"),
    ("MinMaxScaler", "scale_"), ("RobustScaler", "center_"), ("RobustScaler", "scale_"),
])
def test_scaler_missing_a_fitted_attribute_is_refused(scaler_cls, attr, trained, tmp_path):
    scaler = getattr(preprocessing, scaler_cls)().fit(np.random.default_rng(3).normal(size=(40, N_FEATURES)))
    delattr(scaler, attr)
    path = _write(tmp_path / "b.pkl", _bundle(_zip_bytes(trained("dqn")[0]), scaler=scaler))
    with pytest.raises(ExportError, match=f"{scaler_cls} is missing its fitted attribute '{attr}'"):
        load_source(path)


def test_unfitted_or_mis_sized_scaler_is_refused(trained, tmp_path):
    raw = _zip_bytes(trained("dqn")[0])
    with pytest.raises(ExportError, match="missing its fitted attribute"):
        load_source(_write(tmp_path / "a.pkl", _bundle(raw, scaler=preprocessing.StandardScaler())))
    four = preprocessing.RobustScaler().fit(np.ones((5, 4)))
    with pytest.raises(ExportError, match="fitted on 4 features but the observation has 6"):
        load_source(_write(tmp_path / "b.pkl", _bundle(raw, scaler=four)))


def test_scaler_with_attributes_shadowing_its_methods_is_refused(trained, tmp_path):
    scaler = preprocessing.StandardScaler().fit(np.random.default_rng(3).normal(size=(40, N_FEATURES)))
    scaler.transform = np.ndarray  # an allowed callable standing in for the method
    path = _write(tmp_path / "b.pkl", _bundle(_zip_bytes(trained("dqn")[0]), scaler=scaler))
    with pytest.raises(ExportError, match="replace its methods: \\['transform'\\]"):
        load_source(path)


def test_vecnormalize_of_the_wrong_size_is_refused(trained, tmp_path):
    stats = VecNormStats(obs_mean=np.zeros(4), obs_var=np.ones(4), clip_obs=10.0, epsilon=1e-8)
    with pytest.raises(ExportError, match="cover 4 features .* observation has 6"):
        load_source(trained("dqn")[1], vecnormalize=stats)
    with pytest.raises(ExportError, match="expected a saved SB3 VecNormalize"):
        load_source(trained("dqn")[1], vecnormalize=_write(tmp_path / "vn.pkl", [1, 2, 3]))

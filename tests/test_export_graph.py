"""Exported graphs give SB3's deterministic action: every algorithm, head and normalisation.

Each case trains a tiny SB3 model for a few hundred steps, exports it through
``export_model`` (which itself refuses to write a graph that fails parity) and then checks
independently, through the runtime loader, that the ONNX action equals
``model.predict(obs, deterministic=True)`` after sklearn's own ``transform`` and SB3's own
``VecNormalize.normalize_obs``, on in-distribution and far-out-of-distribution raw features.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
onnx = pytest.importorskip("onnx")
pytest.importorskip("sklearn")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler  # noqa: E402
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402
from torch import nn  # noqa: E402

from l2fast.errors import ExportError  # noqa: E402
from l2fast.export import MissingFeatureNamesWarning, export_model  # noqa: E402
from l2fast.export.graph import build_graph  # noqa: E402
from l2fast.export.parity import box_tolerance, compare, onnx_actions, onnx_session  # noqa: E402
from l2fast.export.sources import LoadedAgent, VecNormStats  # noqa: E402
from l2fast.models._mlp import MlpForward, best_level  # noqa: E402
from l2fast.models.compiled import compile_members, plan_for  # noqa: E402
from l2fast.models.loading import load_model  # noqa: E402
from l2fast.models.manifest import default_action_targets  # noqa: E402
from l2fast.models.stacking import mlp_chain  # noqa: E402

from reference.mlp import forward as mlp_forward_ref  # noqa: E402

N_FEATURES = 6
RAW_MEAN = np.array([100.0, -3.0, 0.5, 2e4, 0.0, 55.0])
RAW_STD = np.array([20.0, 0.5, 0.1, 5e3, 1.0, 15.0])
SEVEN = spaces.Discrete(7)
UNIT_BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
WIDE_BOX = spaces.Box(np.array([0.0, -5.0], np.float32), np.array([100.0, 3.0], np.float32))


# SB3 trains and predicts on one torch thread (the machine's other core runs the suite's
# other work): tests/conftest.py's one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _ToyMarket(gym.Env):
    """Scaled-feature observations and a reward that follows feature 0, so training moves weights."""

    def __init__(self, action_space: spaces.Space, n: int = N_FEATURES) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.action_space = action_space
        self._rng = np.random.default_rng(0)
        self._obs = np.zeros(n, np.float32)
        self._t = 0

    def _draw(self) -> np.ndarray:
        self._obs = (self._rng.standard_normal(self.observation_space.shape) * 1.5 + 0.3).astype(np.float32)
        return self._obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action):
        if isinstance(self.action_space, spaces.Discrete):
            position = (int(action) - (self.action_space.n - 1) / 2) / max(1, self.action_space.n - 1)
        else:
            position = float(np.tanh(np.asarray(action, dtype=np.float64).ravel()[0]))
        reward = float(position * np.tanh(self._obs[0]))
        self._t += 1
        return self._draw(), reward, self._t >= 64, False, {}


class _Image(gym.Env):
    def __init__(self, space: spaces.Box) -> None:
        self.observation_space, self.action_space = space, SEVEN


class _NotFlat(BaseFeaturesExtractor):
    def __init__(self, observation_space, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.net = nn.Linear(observation_space.shape[0], features_dim)

    def forward(self, obs):
        return self.net(obs)


def _raw_training_data() -> np.ndarray:
    return np.random.default_rng(7).normal(RAW_MEAN, RAW_STD, (2000, N_FEATURES))


def _train(algo, action_space, *, policy_kwargs=None, clip_obs=None, steps=192, **kwargs):
    """A briefly trained model, and its VecNormalize (or None)."""
    env = DummyVecEnv([lambda: _ToyMarket(action_space)])
    venv = VecNormalize(env, norm_reward=False, clip_obs=clip_obs) if clip_obs is not None else None
    if algo in (PPO, A2C):
        kwargs.setdefault("n_steps", 64)
    if algo is PPO:
        kwargs.setdefault("batch_size", 64)
        kwargs.setdefault("n_epochs", 2)
    if algo in (DQN, SAC, TD3, DDPG):
        kwargs.update(learning_starts=64, buffer_size=2000)
        kwargs.setdefault("batch_size", 32)
    model = algo("MlpPolicy", venv or env, policy_kwargs=policy_kwargs or {}, seed=3, device="cpu", **kwargs)
    model.learn(steps)
    if venv is not None:
        venv.training = False
    return model, venv


def _agent(model, *, scaler=None, venv=None, names=True) -> LoadedAgent:
    vn = None
    if venv is not None:
        vn = VecNormStats(obs_mean=venv.obs_rms.mean.copy(), obs_var=venv.obs_rms.var.copy(),
                          clip_obs=float(venv.clip_obs), epsilon=float(venv.epsilon))
    return LoadedAgent(
        name=f"{type(model).__name__.lower()}_agent", algorithm=type(model).__name__, model=model,
        observation_size=N_FEATURES, action_space=model.action_space,
        feature_names=[f"feat_{i}" for i in range(N_FEATURES)] if names else None,
        scaler=scaler, vecnormalize=vn, source_path=Path("in_memory.zip"),
        source_sha256="0" * 64, source_kind="sb3-zip",
    )


def _observations(seed: int = 11) -> np.ndarray:
    """Raw float32 features: in distribution, then far outside it, then a few special rows."""
    rng = np.random.default_rng(seed)
    inside = rng.normal(RAW_MEAN, RAW_STD, (1500, N_FEATURES))
    sign = rng.choice([-1.0, 1.0], (600, N_FEATURES))
    far = RAW_MEAN + RAW_STD * sign * 10.0 ** rng.uniform(1, 3.5, (600, N_FEATURES))
    one_out = rng.normal(RAW_MEAN, RAW_STD, (300, N_FEATURES))
    one_out[np.arange(300), rng.integers(0, N_FEATURES, 300)] *= -1e3
    special = np.stack([np.zeros(N_FEATURES), RAW_MEAN, RAW_MEAN + 1e-3])
    return np.concatenate([inside, special, far, one_out]).astype(np.float32)


def _sb3_input(raw: np.ndarray, scaler, venv) -> np.ndarray:
    """What a FinRL pipeline feeds ``predict``: sklearn's transform, then SB3's own VecNormalize."""
    x = raw.astype(np.float64)
    if scaler is not None:
        x = scaler.transform(x)
    if venv is not None:
        return venv.normalize_obs(x)
    return x.astype(np.float32)


def _assert_same_actions(agent: LoadedAgent, loaded, raw: np.ndarray, x: np.ndarray) -> None:
    model = agent.model
    ours = loaded.predict(raw)
    ref, _ = model.predict(x, deterministic=True)
    if loaded.discrete:
        # A batch disagreement is re-checked row by row (how both run live): torch's batched
        # matmul may round a near-tie differently from the single-row one.
        for i in np.flatnonzero(ours != ref):
            assert loaded.act(raw[i]) == int(model.predict(x[i], deterministic=True)[0]), f"row {i}"
        return
    # SB3 leaves a squashed action unclipped, a rounding step outside the bounds at worst;
    # the graph clips, so it is compared with SB3's action clipped to the bounds.
    low, high = model.action_space.low, model.action_space.high
    ref = np.clip(ref.reshape(ours.shape), low, high)
    diff = np.abs(ours.astype(np.float64) - ref)
    assert np.all(diff <= box_tolerance(agent, ref, x)), f"max diff {diff.max()}"
    inside = np.abs(x).max(axis=1) <= 10.0
    half_range = float(np.max(high - low)) / 2
    assert diff[inside].max() <= 1e-5 * max(1.0, half_range)
    assert np.all(ours >= low) and np.all(ours <= high)


def _actor_linears(model) -> int:
    policy = model.policy
    if isinstance(model, (PPO, A2C)):
        modules = [policy.mlp_extractor.policy_net, policy.action_net]
    elif isinstance(model, DQN):
        modules = [policy.q_net.q_net]
    elif isinstance(model, SAC):
        modules = [policy.actor.latent_pi, policy.actor.mu]
    else:
        modules = [policy.actor.mu]
    return sum(isinstance(m, nn.Linear) for mod in modules for m in mod.modules())


CASES = {
    "ppo_discrete_default_standard": dict(algo=PPO, space=SEVEN, scaler=StandardScaler),
    "ppo_discrete_separate_relu_minmax_clip": dict(
        algo=PPO, space=SEVEN, scaler=functools.partial(MinMaxScaler, feature_range=(-1, 1), clip=True),
        policy_kwargs=dict(net_arch=dict(pi=[32, 16], vf=[8]), activation_fn=nn.ReLU, share_features_extractor=False)),
    "ppo_discrete_vecnormalize_clip": dict(algo=PPO, space=spaces.Discrete(3), clip_obs=2.0,
                                           policy_kwargs=dict(net_arch=[16], activation_fn=nn.LeakyReLU)),
    "ppo_box_silu_robust_vecnormalize": dict(algo=PPO, space=UNIT_BOX, scaler=RobustScaler, clip_obs=5.0,
                                             policy_kwargs=dict(activation_fn=nn.SiLU)),
    "ppo_box_gsde_squashed": dict(algo=PPO, space=WIDE_BOX, scaler=StandardScaler, use_sde=True,
                                  policy_kwargs=dict(squash_output=True, net_arch=[32, 32])),
    "a2c_discrete_elu_vecnormalize": dict(algo=A2C, space=SEVEN, clip_obs=10.0, n_steps=16,
                                          policy_kwargs=dict(activation_fn=nn.ELU, net_arch=[24, 24, 24])),
    "a2c_box_gelu_no_centering": dict(algo=A2C, space=WIDE_BOX, n_steps=16,
                                      scaler=functools.partial(StandardScaler, with_mean=False),
                                      policy_kwargs=dict(activation_fn=nn.GELU)),
    "dqn_leaky_robust_no_scaling": dict(
        algo=DQN, space=SEVEN, scaler=functools.partial(RobustScaler, with_scaling=False),
        policy_kwargs=dict(net_arch=[32, 32], activation_fn=nn.LeakyReLU)),
    "dqn_sigmoid_standard_no_std_vecnormalize": dict(
        algo=DQN, space=spaces.Discrete(5), scaler=functools.partial(StandardScaler, with_std=False), clip_obs=3.0,
        policy_kwargs=dict(net_arch=[16, 16], activation_fn=nn.Sigmoid)),
    "sac_standard_vecnormalize": dict(algo=SAC, space=WIDE_BOX, scaler=StandardScaler, clip_obs=10.0,
                                      policy_kwargs=dict(net_arch=[32, 32])),
    "td3_relu_minmax": dict(algo=TD3, space=WIDE_BOX, scaler=MinMaxScaler, policy_kwargs=dict(net_arch=[32, 16])),
    "ddpg_gelu_tanh_identity": dict(
        algo=DDPG, space=UNIT_BOX, scaler=StandardScaler,
        policy_kwargs=dict(net_arch=[16, 16], activation_fn=functools.partial(nn.GELU, approximate="tanh"))),
    "sac_identity_activation": dict(algo=SAC, space=UNIT_BOX,
                                    policy_kwargs=dict(net_arch=[8], activation_fn=nn.Identity)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exported_action_equals_sb3_predict_through_the_same_normalisation(case, tmp_path):
    spec = dict(CASES[case])
    algo, space = spec.pop("algo"), spec.pop("space")
    scaler_cls = spec.pop("scaler", None)
    scaler = scaler_cls().fit(_raw_training_data()) if scaler_cls else None
    model, venv = _train(algo, space, **spec)
    report = export_model(_agent(model, scaler=scaler, venv=venv), tmp_path, samples=3000)
    assert report.parity["passed"] and report.parity["samples"] == 3000

    proto = onnx.load(report.onnx_path)
    onnx.checker.check_model(proto, full_check=True)
    discrete = isinstance(space, spaces.Discrete)
    want_outputs = ["action", "q_values" if algo is DQN else "probs"] if discrete else ["action"]
    assert [o.name for o in proto.graph.output] == want_outputs  # no value / critic head
    assert sum(n.op_type == "Gemm" for n in proto.graph.node) == _actor_linears(model)

    loaded = load_model(report.manifest_path)
    raw = _observations()
    _assert_same_actions(_agent(model, scaler=scaler, venv=venv), loaded, raw, _sb3_input(raw, scaler, venv))

    # Dynamic batch: 1, 2 and 17 rows give the rows of the big batch.
    full = loaded.run(raw[:17])
    for rows in (1, 2, 17):
        part = loaded.run(raw[:rows])
        for name, values in part.items():
            np.testing.assert_allclose(values, full[name][:rows], rtol=1e-6, atol=1e-6)
    if discrete:
        assert full["action"].dtype == np.int64 and full["action"].shape == (17,)
        assert full[want_outputs[1]].shape == (17, space.n)
        if algo is not DQN:
            np.testing.assert_allclose(full["probs"].sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert full["action"].dtype == np.float32 and full["action"].shape == (17, space.shape[0])
    _assert_compiled_or_told_why(case, proto, loaded, raw)


# The exported graphs the compiled forward reads; the others keep onnxruntime (Clip in the
# preprocessing: MinMaxScaler(clip=True) and VecNormalize; LeakyReLU/ELU/SiLU/GELU, which
# the exporter writes as several nodes; Identity activations, which leave two Gemms back to back).
COMPILED_CASES = {"ppo_discrete_default_standard", "ppo_box_gsde_squashed", "td3_relu_minmax"}


def _assert_compiled_or_told_why(case: str, proto, loaded, raw: np.ndarray) -> None:
    """The exported member runs compiled after its load-time check, or says why it does not."""
    chain = mlp_chain(proto)
    n = loaded.observation_size
    space = loaded.manifest["action_space"]
    width = space["n"] if loaded.discrete else space["shape"][0]
    action = np.zeros(1, np.int64) if loaded.discrete else np.zeros((1, width), np.float32)
    scores = np.zeros((1, width), np.float32) if loaded.discrete else None
    forward, paths = compile_members([loaded], [chain], [np.arange(n)], np.zeros((1, n), np.float32),
                                     [(action, scores)], best_level())
    if chain is None:
        assert paths[0].path == "onnxruntime" and "not a plain MLP" in paths[0].reason
        assert case not in COMPILED_CASES
        return
    assert (paths[0].path, paths[0].reason) == ("compiled", None), case
    assert case in COMPILED_CASES or case not in CASES
    # And against the float64 twin, observation by observation.
    row = np.zeros((1, n), np.float32)
    forward = MlpForward(row, [plan_for(chain, np.arange(n), action, scores, loaded.action_bounds)], "baseline")
    for obs in raw[:50].astype(np.float32):
        row[0] = obs
        forward()
        want, want_scores = mlp_forward_ref(chain, obs)
        if loaded.discrete:
            np.testing.assert_allclose(scores[0], want_scores, rtol=1e-5, atol=1e-5)
        else:
            low, high = loaded.action_bounds
            np.testing.assert_allclose(action[0], np.clip(want, low, high), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_squashed_box_action_stays_within_bounds_that_unscaling_rounds_past(tmp_path, dtype):
    # At tanh = +1 SB3's unscaling gives low + (high - low), which rounds past high for
    # these bounds (float32: -5 + 3.4 = -1.5999999; float64: -0.3 + 0.4 = 0.10000000000000003,
    # and float32(0.1) > 0.1 too). onnxruntime's Tanh may also return -1.0000001 near -9.
    low, high = np.array([-5.0, -0.3], dtype), np.array([-1.6, 0.1], dtype)
    assert np.any(low + (high - low) > high)
    space = spaces.Box(low, high, dtype=dtype)
    model = TD3("MlpPolicy", DummyVecEnv([lambda: _ToyMarket(space)]), policy_kwargs=dict(net_arch=[4]),
                seed=3, device="cpu")
    # An untrained actor replaced by tanh(feature 0) on both dimensions: every machine
    # computes the same action, saturated at both ends of the sweep.
    linear = nn.Linear(N_FEATURES, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:, 0] = 1.0
        linear.bias.zero_()
    model.policy.actor.mu = nn.Sequential(linear, nn.Tanh())
    report = export_model(_agent(model), tmp_path, samples=2000)
    assert report.parity["passed"]

    raw = np.zeros((24_001, N_FEATURES), np.float32)
    raw[:, 0] = np.linspace(-12.0, 12.0, len(raw))
    # The graph's own output: the runtime loader would clip an unclipped graph too.
    ours = onnx_actions(onnx_session(report.onnx_path.read_bytes()), raw).astype(np.float64)
    assert np.all(ours >= low) and np.all(ours <= high)
    ref = np.clip(model.predict(raw, deterministic=True)[0], low, high)
    assert np.all(np.abs(ours - ref) <= box_tolerance(_agent(model), ref, raw))


def _box_parity(ours: np.ndarray, ref: np.ndarray):
    """The Box parity rule on hand-made actions; ``compare`` reads only the action space."""
    agent = SimpleNamespace(action_space=WIDE_BOX)
    return compare(agent, ours.astype(np.float32), ref, n_in=len(ours), net_input=np.zeros((len(ours), N_FEATURES)))


def test_box_parity_fails_an_exported_action_one_float32_step_outside_the_bounds():
    low, high = WIDE_BOX.low, WIDE_BOX.high
    up, down = np.float32(np.inf), np.float32(-np.inf)
    ours = np.stack([np.nextafter(high, up), np.nextafter(low, down)])
    # SB3 gives the bound itself: the difference is far inside the tolerance, so only the
    # bounds check can catch an action that left [low, high].
    report = _box_parity(ours, np.stack([high, low]).astype(np.float32))
    assert report.worst_ratio < 1.0
    assert not report.passed and report.mismatches == 4
    assert report.example.startswith(f"sample 0: onnx {ours[0].tolist()}")
    assert "bounds [[0.0, -5.0], [100.0, 3.0]]" in report.describe()


def test_box_parity_passes_an_exported_action_exactly_at_the_bounds():
    low, high = WIDE_BOX.low, WIDE_BOX.high
    ours = np.stack([high, low])
    # SB3's unscaling may round a step past the bound; it is compared clipped.
    beyond = np.stack([np.nextafter(high, np.float32(np.inf)), np.nextafter(low, np.float32(-np.inf))])
    for ref in (ours, beyond):
        report = _box_parity(ours, ref.astype(np.float32))
        assert report.passed and report.mismatches == 0 and report.max_abs_diff == 0.0


@pytest.fixture(scope="module")
def ppo_discrete():
    return _train(PPO, SEVEN, steps=64)[0]


@pytest.mark.parametrize("scaler", [
    StandardScaler(),
    StandardScaler(with_mean=False),
    MinMaxScaler(feature_range=(-2, 2), clip=True),
    RobustScaler(quantile_range=(10.0, 90.0)),
    RobustScaler(with_centering=False),
    None,
], ids=["standard", "standard_no_mean", "minmax_clip", "robust", "robust_no_centering", "none"])
def test_folded_normalisation_is_bit_identical_to_sklearn_then_vecnormalize(ppo_discrete, scaler):
    import onnxruntime as ort

    if scaler is not None:
        scaler.fit(_raw_training_data())
    rng = np.random.default_rng(5)
    venv = VecNormalize(DummyVecEnv([lambda: _ToyMarket(SEVEN)]), clip_obs=4.0, norm_reward=False)
    venv.obs_rms.mean = rng.normal(0, 2, N_FEATURES)
    venv.obs_rms.var = rng.uniform(0.01, 9, N_FEATURES)
    proto = build_graph(_agent(ppo_discrete, scaler=scaler, venv=venv))
    cast_out = next(n for n in proto.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT)
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(cast_out.output[0], onnx.TensorProto.FLOAT, ["N", N_FEATURES]))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    raw = _observations(seed=2)
    got = session.run([cast_out.output[0]], {"obs": raw})[0]
    np.testing.assert_array_equal(got, _sb3_input(raw, scaler, venv))


def test_near_tied_logits_pick_the_first_index_like_sb3(tmp_path):
    # Logits 1 ulp-ish apart collapse to equal probabilities in torch's Categorical, and
    # SB3's argmax then takes the first index; an argmax of the raw logits would not.
    model, _ = _train(PPO, SEVEN, steps=64)
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        bias = torch.tensor([0.018502112, -0.3, -0.2, 0.0, 0.018502121, -0.1, -0.4])
        model.policy.action_net.bias.copy_(bias)
    assert bias[4] > bias[0]
    x = np.zeros((1, N_FEATURES), np.float32)
    assert int(model.predict(x, deterministic=True)[0][0]) == 0
    report = export_model(_agent(model), tmp_path, samples=500)
    assert load_model(report.manifest_path).act(x[0]) == 0


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_other_opsets_export_with_parity(ppo_discrete, tmp_path, opset):
    report = export_model(_agent(ppo_discrete, scaler=StandardScaler().fit(_raw_training_data())), tmp_path,
                          opset=opset, samples=1000)
    proto = onnx.load(report.onnx_path)
    assert proto.opset_import[0].version == opset
    onnx.checker.check_model(proto, full_check=True)
    assert json.loads(report.manifest_path.read_text())["opset"] == opset


def test_unusable_opset_is_refused(ppo_discrete):
    with pytest.raises(ExportError, match="opset 12"):
        build_graph(_agent(ppo_discrete), opset=12)


def test_unsupported_layer_and_action_space_are_refused():
    model, _ = _train(PPO, SEVEN, steps=64, policy_kwargs=dict(activation_fn=nn.Softplus))
    with pytest.raises(ExportError, match="unsupported layer .*Softplus"):
        build_graph(_agent(model))
    model, _ = _train(PPO, spaces.MultiDiscrete([3, 3]), steps=64)
    with pytest.raises(ExportError, match="unsupported action space MultiDiscrete"):
        build_graph(_agent(model))


def test_cnn_policy_and_custom_features_extractor_are_refused():
    image = spaces.Box(0, 255, (36, 36, 3), np.uint8)
    cnn = PPO("CnnPolicy", DummyVecEnv([lambda: _Image(image)]), n_steps=64, batch_size=64, device="cpu")
    with pytest.raises(ExportError, match="only a flat Box"):
        build_graph(_agent(cnn))
    env = DummyVecEnv([lambda: _ToyMarket(SEVEN)])
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, device="cpu",
                policy_kwargs=dict(features_extractor_class=_NotFlat))
    with pytest.raises(ExportError, match="unsupported features extractor _NotFlat"):
        build_graph(_agent(model))


def test_parity_failure_aborts_and_writes_nothing(ppo_discrete, tmp_path, monkeypatch):
    import l2fast.export.graph as graph

    impostor, _ = _train(PPO, SEVEN, steps=64, policy_kwargs=dict(net_arch=[8]))
    real = graph.build_graph
    monkeypatch.setattr(graph, "build_graph", lambda agent, opset: real(_agent(impostor), opset=opset))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="parity check failed"):
        export_model(_agent(ppo_discrete), out, samples=500)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_feature_names_warn_and_become_obs_placeholders(ppo_discrete, tmp_path):
    with pytest.warns(MissingFeatureNamesWarning, match="obs_0..obs_5"):
        report = export_model(_agent(ppo_discrete, names=False), tmp_path, samples=200)
    manifest = json.loads(report.manifest_path.read_text())
    assert manifest["feature_names"] == [f"obs_{i}" for i in range(N_FEATURES)]
    assert manifest["action_targets"] == default_action_targets(7) == [-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1]


def test_failed_write_restores_the_previous_model(ppo_discrete, tmp_path, monkeypatch):
    import os

    first = export_model(_agent(ppo_discrete), tmp_path, samples=200, name="m")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the manifest, after the new ONNX file is already in place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(ExportError, match="nothing was written"):
        export_model(_agent(ppo_discrete, scaler=StandardScaler().fit(_raw_training_data())), tmp_path,
                     samples=200, name="m")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_model(first.manifest_path).name == "m"

"""Build the ONNX graph of a loaded agent straight from its torch weights.

The graph is written node by node with :mod:`onnx.helper` (Gemm + activation nodes), not
with ``torch.onnx.export``: there is no tracing, so nothing of SB3's sampling, critic or
Python-side post-processing can leak in or silently drop out, and the result is the
smallest graph onnxruntime can run.

Layout (input ``obs`` float32 ``[N, n_features]`` of RAW features, dynamic ``N``)::

    obs -> Cast(double) -> scaler -> VecNormalize (clip_obs) -> Cast(float)
        -> features extractor (flatten: nothing to do) -> policy MLP -> action head

The normalisation runs in float64 because that is the precision in which scikit-learn and
SB3's ``VecNormalize`` compute it before SB3 casts the result to float32: doing the same
operations in the same order (subtract, then divide by the stored scale, then clip) makes
the network's input bit-identical to what ``predict`` sees, so a discrete argmax can only
differ where torch and onnxruntime round the matrix products differently.

Heads:
    * PPO/A2C Discrete: ``probs`` = Softmax(logits), ``action`` = ArgMax(logits) (int64).
    * DQN: ``q_values`` and ``action`` = ArgMax(q_values) (int64).
    * PPO/A2C Box: the Gaussian mean (``tanh`` then unscaled when the policy squashes, as
      gSDE with ``squash_output`` does).
    * SAC: ``tanh`` of the mean action, unscaled to ``[low, high]``.
    * TD3/DDPG: the actor output (its last layer is already ``tanh``), unscaled.

    Every Box action is then clipped to ``[low, high]`` (bounds float32 cannot hold are
    rounded inward), unscaled or not: SB3 may emit a squashed action a rounding step
    outside its bounds, the graph never does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from l2fast.errors import ExportError

if TYPE_CHECKING:
    import onnx
    from gymnasium import spaces
    from stable_baselines3.common.policies import BasePolicy

    from l2fast.export.sources import LoadedAgent

#: Default ONNX opset of an export (``--opset``).
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax/ArgMax/Clip semantics used below are those of opset 13+.
INPUT_NAME = "obs"


class _Builder:
    """Accumulates nodes and initializers with unique, readable names."""

    def __init__(self, opset: int) -> None:
        from onnx import helper

        self.opset = opset
        self._helper = helper
        self.nodes: list = []
        self.initializers: list = []
        self._count: dict[str, int] = {}

    def _name(self, stem: str) -> str:
        n = self._count.get(stem, 0)
        self._count[stem] = n + 1
        return f"{stem}_{n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def scalar(self, stem: str, value: float, dtype: type = np.float32) -> str:
        return self.const(stem, np.array(value, dtype=dtype))

    def op(self, op_type: str, inputs: list[str], *, output: str | None = None, **attrs: Any) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(self._helper.make_node(op_type, inputs, [out], name=self._name(f"n_{op_type}"), **attrs))
        return out


def _logsumexp_last(b: _Builder, x: str) -> str:
    """ReduceLogSumExp over the last axis, kept (its axes became an input in opset 18)."""
    if b.opset >= 18:
        return b.op("ReduceLogSumExp", [x, b.const("axes", np.array([-1], dtype=np.int64))], keepdims=1)
    return b.op("ReduceLogSumExp", [x], axes=[-1], keepdims=1)


def _categorical_nodes(b: _Builder, logits: str) -> None:
    """``probs`` and ``action`` exactly as torch's ``Categorical(logits=...)`` mode.

    torch first normalises the logits (``logits - logsumexp(logits)``) and SB3 takes the
    argmax of the resulting probabilities, first index on ties. Two logits closer than
    float32's resolution at ``logsumexp`` collapse there into the same value, so taking
    ArgMax of the raw logits would pick the larger one where ``predict`` picks the first.
    """
    lse = _logsumexp_last(b, logits)  # onnxruntime computes max + log(sum(exp(x - max))), as torch does
    normalised = b.op("Sub", [logits, lse])
    probs = b.op("Softmax", [normalised], axis=-1, output="probs")
    b.op("ArgMax", [probs], axis=1, keepdims=0, output="action")


def _check_1d(values: object, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ExportError(f"{what} has {arr.size} values, expected {n} (the observation size)")
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{what} contains non-finite values")
    return arr


def _scaler_nodes(b: _Builder, x: str, scaler: object, n: int) -> str:
    """Apply a fitted sklearn scaler to double-precision ``x`` exactly as ``transform`` does."""
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    kind = type(scaler).__name__
    n_in = getattr(scaler, "n_features_in_", n)
    if n_in != n:
        raise ExportError(f"{kind} was fitted on {n_in} features but the policy observes {n}")
    try:
        if isinstance(scaler, StandardScaler):
            if scaler.with_mean:
                x = b.op("Sub", [x, b.const("scaler_mean", _check_1d(scaler.mean_, n, "StandardScaler.mean_"))])
            if scaler.with_std:
                x = b.op("Div", [x, b.const("scaler_scale", _check_1d(scaler.scale_, n, "StandardScaler.scale_"))])
            return x
        if isinstance(scaler, MinMaxScaler):
            x = b.op("Mul", [x, b.const("scaler_scale", _check_1d(scaler.scale_, n, "MinMaxScaler.scale_"))])
            x = b.op("Add", [x, b.const("scaler_min", _check_1d(scaler.min_, n, "MinMaxScaler.min_"))])
            if scaler.clip:
                lo, hi = (float(v) for v in scaler.feature_range)
                x = b.op("Clip", [x, b.scalar("scaler_lo", lo, np.float64), b.scalar("scaler_hi", hi, np.float64)])
            return x
        if isinstance(scaler, RobustScaler):
            if scaler.with_centering:
                x = b.op("Sub", [x, b.const("scaler_center", _check_1d(scaler.center_, n, "RobustScaler.center_"))])
            if scaler.with_scaling:
                x = b.op("Div", [x, b.const("scaler_scale", _check_1d(scaler.scale_, n, "RobustScaler.scale_"))])
            return x
    except AttributeError as exc:
        raise ExportError(f"{kind} is missing a fitted attribute ({exc}); is it fitted?") from exc
    raise ExportError(f"unsupported scaler {type(scaler).__module__}.{kind}: "
                      "expected StandardScaler, MinMaxScaler or RobustScaler")


def _normalisation_nodes(b: _Builder, agent: LoadedAgent) -> str:
    """Raw float32 ``obs`` -> the float32 tensor SB3's policy receives."""
    n = agent.observation_size
    if agent.scaler is None and agent.vecnormalize is None:
        return INPUT_NAME
    from onnx import TensorProto

    x = b.op("Cast", [INPUT_NAME], to=TensorProto.DOUBLE)
    if agent.scaler is not None:
        x = _scaler_nodes(b, x, agent.scaler, n)
    vn = agent.vecnormalize
    if vn is not None:
        mean = _check_1d(vn.obs_mean, n, "VecNormalize obs mean")
        var = _check_1d(vn.obs_var, n, "VecNormalize obs var")
        clip = float(vn.clip_obs)
        if not clip > 0 or float(vn.epsilon) < 0:
            raise ExportError(f"VecNormalize clip_obs={vn.clip_obs!r}, epsilon={vn.epsilon!r} are unusable")
        x = b.op("Sub", [x, b.const("vecnorm_mean", mean)])
        x = b.op("Div", [x, b.const("vecnorm_std", np.sqrt(var + float(vn.epsilon)))])
        x = b.op("Clip", [x, b.scalar("vecnorm_lo", -clip, np.float64), b.scalar("vecnorm_hi", clip, np.float64)])
    return b.op("Cast", [x], to=TensorProto.FLOAT)


def _module_nodes(b: _Builder, x: str, module: object, where: str) -> str:
    """Emit the nodes of a torch module made of Linear layers and elementwise activations."""
    from torch import nn

    if isinstance(module, nn.Sequential):
        for i, child in enumerate(module):
            x = _module_nodes(b, x, child, f"{where}[{i}]")
        return x
    if isinstance(module, (nn.Identity, nn.Flatten)):
        return x  # the input is already [N, features]
    if isinstance(module, nn.Linear):
        w = module.weight.detach().cpu().numpy().astype(np.float32)
        inputs = [x, b.const("W", w)]
        if module.bias is not None:
            inputs.append(b.const("B", module.bias.detach().cpu().numpy().astype(np.float32)))
        return b.op("Gemm", inputs, transB=1)
    if isinstance(module, nn.ReLU):
        return b.op("Relu", [x])
    if isinstance(module, nn.Tanh):
        return b.op("Tanh", [x])
    if isinstance(module, nn.Sigmoid):
        return b.op("Sigmoid", [x])
    if isinstance(module, nn.ELU):
        return b.op("Elu", [x], alpha=float(module.alpha))
    if isinstance(module, nn.LeakyReLU):
        return b.op("LeakyRelu", [x], alpha=float(module.negative_slope))
    if isinstance(module, nn.SiLU):
        return b.op("Mul", [x, b.op("Sigmoid", [x])])
    if isinstance(module, nn.Hardtanh):
        lo = b.scalar("hardtanh_lo", module.min_val)
        hi = b.scalar("hardtanh_hi", module.max_val)
        return b.op("Clip", [x, lo, hi])
    if isinstance(module, nn.GELU):
        if module.approximate == "tanh":
            # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = b.op("Mul", [b.op("Mul", [x, x]), x])
            inner = b.op("Add", [x, b.op("Mul", [cube, b.scalar("gelu_c", 0.044715)])])
            t = b.op("Tanh", [b.op("Mul", [inner, b.scalar("gelu_k", math.sqrt(2.0 / math.pi))])])
        else:
            # x * 0.5 * (1 + erf(x / sqrt(2))), torch's exact GELU
            t = b.op("Erf", [b.op("Div", [x, b.scalar("sqrt2", math.sqrt(2.0))])])
        one_plus = b.op("Add", [t, b.scalar("one", 1.0)])
        return b.op("Mul", [b.op("Mul", [x, b.scalar("half", 0.5)]), one_plus])
    raise ExportError(f"unsupported layer {type(module).__module__}.{type(module).__name__} at {where}: "
                      "only Linear layers and ReLU/Tanh/ELU/LeakyReLU/SiLU/GELU/Sigmoid/Identity "
                      "activations are supported")


def _check_extractor(extractor: object, where: str) -> None:
    from stable_baselines3.common.torch_layers import FlattenExtractor

    if not isinstance(extractor, FlattenExtractor):
        raise ExportError(f"unsupported features extractor {type(extractor).__name__} ({where}): "
                          "only MlpPolicy's FlattenExtractor on a flat Box observation is supported")


def _unscale_nodes(b: _Builder, x: str, space: spaces.Box) -> str:
    """``low + 0.5 * (a + 1) * (high - low)``, SB3's ``unscale_action`` in the space's dtype."""
    from onnx import TensorProto

    dtype: type[np.floating[Any]] = np.float64 if np.dtype(space.dtype) == np.float64 else np.float32
    low: np.ndarray[Any, np.dtype[np.floating[Any]]] = np.asarray(space.low, dtype=dtype)
    high: np.ndarray[Any, np.dtype[np.floating[Any]]] = np.asarray(space.high, dtype=dtype)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ExportError("a squashed policy (SAC/TD3/DDPG, gSDE with squash_output) needs finite action bounds")
    if dtype == np.float64:
        x = b.op("Cast", [x], to=TensorProto.DOUBLE)
    y = b.op("Mul", [b.op("Add", [x, b.scalar("one", 1.0, dtype)]), b.scalar("half", 0.5, dtype)])
    y = b.op("Mul", [y, b.const("act_range", high - low)])
    y = b.op("Add", [b.const("act_low", low), y])
    return b.op("Cast", [y], to=TensorProto.FLOAT) if dtype == np.float64 else y


def _box_action_nodes(b: _Builder, x: str, policy: BasePolicy, space: spaces.Box) -> None:
    """What ``BasePolicy.predict`` does to a Box action (unscale if squashed), then a clip.

    SB3 clips only an unsquashed action; it unscales a squashed one without clipping, and
    in float32 ``low + (high - low)`` can round past ``high`` (onnxruntime's ``Tanh`` may
    also return a value a rounding step beyond +-1). The graph clips every Box action to
    the bounds rounded inward to float32, so the action never leaves ``[low, high]``.
    """
    from l2fast.models.loading import float32_bounds

    if policy.squash_output:
        x = _unscale_nodes(b, x, space)
    try:
        low, high = float32_bounds(space.low, space.high)
    except ValueError as exc:
        raise ExportError(f"action space {space}: {exc}") from exc
    b.op("Max", [b.op("Min", [x, b.const("act_high", high)]), b.const("act_low", low)], output="action")


def _box_space(space: spaces.Box) -> int:
    shape = tuple(space.shape)
    if len(shape) != 1:
        raise ExportError(f"unsupported Box action shape {shape}: only 1-D Box actions are supported")
    return int(shape[0])


def _policy_nodes(b: _Builder, x: str, agent: LoadedAgent) -> list[tuple[str, int, list]]:
    """Emit the actor and its head; return the graph outputs as (name, elem type, shape)."""
    from gymnasium import spaces
    from onnx import TensorProto

    algo = agent.algorithm.upper()
    policy = agent.model.policy
    space = agent.action_space
    discrete = isinstance(space, spaces.Discrete)
    if not discrete and not isinstance(space, spaces.Box):
        raise ExportError(f"unsupported action space {type(space).__name__}: only Discrete and Box are supported")

    if algo in ("PPO", "A2C"):
        from stable_baselines3.common.policies import ActorCriticPolicy

        if not isinstance(policy, ActorCriticPolicy):
            raise ExportError(f"unsupported {algo} policy {type(policy).__name__}")
        _check_extractor(policy.pi_features_extractor, "policy.pi_features_extractor")
        latent = _module_nodes(b, x, policy.mlp_extractor.policy_net, "mlp_extractor.policy_net")
        head = _module_nodes(b, latent, policy.action_net, "action_net")
        if isinstance(space, spaces.Discrete):
            n = int(space.n)
            _categorical_nodes(b, head)
            return [("action", TensorProto.INT64, ["N"]), ("probs", TensorProto.FLOAT, ["N", n])]
        dim = _box_space(space)
        # gSDE with squash_output: the distribution's mode is tanh(mean).
        _box_action_nodes(b, b.op("Tanh", [head]) if policy.squash_output else head, policy, space)
        return [("action", TensorProto.FLOAT, ["N", dim])]

    if algo == "DQN":
        from stable_baselines3.dqn.policies import DQNPolicy

        if not isinstance(space, spaces.Discrete):
            raise ExportError("DQN needs a Discrete action space")
        if not isinstance(policy, DQNPolicy):
            raise ExportError(f"unsupported {algo} policy {type(policy).__name__}")
        q_net = policy.q_net
        _check_extractor(q_net.features_extractor, "q_net.features_extractor")
        q = _module_nodes(b, x, q_net.q_net, "q_net.q_net")
        b.op("Identity", [q], output="q_values")
        b.op("ArgMax", [q], axis=1, keepdims=0, output="action")
        n = int(space.n)
        return [("action", TensorProto.INT64, ["N"]), ("q_values", TensorProto.FLOAT, ["N", n])]

    if algo in ("SAC", "TD3", "DDPG"):
        from stable_baselines3.sac.policies import SACPolicy
        from stable_baselines3.td3.policies import TD3Policy

        if not isinstance(space, spaces.Box):
            raise ExportError(f"{algo} needs a Box action space")
        dim = _box_space(space)
        if algo == "SAC" and isinstance(policy, SACPolicy):
            _check_extractor(policy.actor.features_extractor, "actor.features_extractor")
            latent = _module_nodes(b, x, policy.actor.latent_pi, "actor.latent_pi")
            mean = _module_nodes(b, latent, policy.actor.mu, "actor.mu")
            squashed = b.op("Tanh", [mean])  # SquashedDiagGaussian's mode
        elif algo != "SAC" and isinstance(policy, TD3Policy):  # DDPG's policy is TD3's
            _check_extractor(policy.actor.features_extractor, "actor.features_extractor")
            squashed = _module_nodes(b, x, policy.actor.mu, "actor.mu")  # ends in Tanh
        else:
            raise ExportError(f"unsupported {algo} policy {type(policy).__name__}")
        _box_action_nodes(b, squashed, policy, space)
        return [("action", TensorProto.FLOAT, ["N", dim])]

    raise ExportError(f"unsupported algorithm {agent.algorithm!r}: expected PPO, A2C, DQN, SAC, TD3 or DDPG")


def ir_version_for(opset: int) -> int:
    """The oldest ONNX IR version that carries ``opset``, so older onnxruntimes load the file."""
    from onnx import helper

    for _release, ir, op, *_ in helper.VERSION_TABLE:
        if op >= opset:
            return int(ir)
    raise ExportError(f"opset {opset} is newer than this onnx package supports")


def build_graph(agent: LoadedAgent, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Build the checked ONNX model of ``agent``: raw features in, ``predict``'s action out.

    Args:
        agent: The loaded agent (weights on CPU, eval mode).
        opset: ONNX opset of the default domain (13 up to what the onnx package knows).

    Returns:
        The model, already validated by ``onnx.checker.check_model(full_check=True)``.

    Raises:
        ExportError: Unsupported policy, layer, action space or opset, or bad normalisation
            statistics.
    """
    import onnx
    from onnx import TensorProto, helper

    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise ExportError(f"opset {opset} is not supported: choose {MIN_OPSET}..{max_opset}")
    n = int(agent.observation_size)
    obs_space = agent.model.observation_space
    if tuple(getattr(obs_space, "shape", ()) or ()) != (n,):
        raise ExportError(f"unsupported observation space {obs_space}: only a flat Box of {n} features is supported")

    b = _Builder(opset)
    x = _normalisation_nodes(b, agent)
    outputs = _policy_nodes(b, x, agent)
    graph = helper.make_graph(
        b.nodes,
        f"l2fast_{agent.algorithm.lower()}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in outputs],
        initializer=b.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="l2fast.export",
        ir_version=ir_version_for(opset),
        doc_string=f"{agent.algorithm} agent {agent.name}: raw features in, deterministic action out",
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the generated ONNX graph failed onnx.checker: {exc}") from exc
    return model

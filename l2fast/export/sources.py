"""Load an agent to export, an SB3 ``.zip`` or a seed-format ``.pkl`` bundle, without running its pickles.

SB3's own ``load`` unpickles every entry of the zip's ``data`` with cloudpickle, which
runs whatever code the file carries. Here the model is rebuilt instead:

1. ``data`` is read as JSON; only ``policy_class``, ``observation_space``,
   ``action_space`` and ``policy_kwargs`` are unpickled, through the restricted
   unpickler of :mod:`l2fast.export.safe_pickle`. Schedules, buffers and every other
   entry are code or training state and are never unpickled.
2. The algorithm (PPO, A2C, DQN, SAC, TD3, DDPG) follows from the policy class and the
   plain JSON hyper-parameters (PPO vs A2C: PPO saves ``clip_range``/``n_epochs``; TD3 vs
   DDPG: DDPG's fixed ``policy_delay=1, target_noise_clip=0, target_policy_noise=0.1``).
   Both members of each pair share the policy class, so the guess only affects the
   label; a bundle's ``algorithm`` (top level or in ``training_config``) overrides it.
3. The algorithm is constructed from fresh, validated spaces and sanitised
   ``policy_kwargs`` (``net_arch``, ``activation_fn`` mapped from its name,
   ``share_features_extractor``, ``n_critics``, ``use_sde``, ...; optimizer settings are
   dropped, inference does not use them), then ``policy.pth`` is read with
   ``torch.load(weights_only=True)`` and loaded strictly into ``model.policy``.

A seed-format ``.pkl`` bundle is a dict, unpickled by the same restricted unpickler::

    {
        "model": bytes,                 # the SB3 zip archive: buf = io.BytesIO(); model.save(buf); buf.getvalue()
        "scaler": StandardScaler | MinMaxScaler | RobustScaler | None,   # fitted, applied to raw features
        "feature_names": [str, ...],    # ordered like the observation
        "action_space": int | dict | gymnasium space,  # 7, {"type": "discrete", "n": 7},
                                        # {"type": "box", "low": [...], "high": [...]}; must match the model
        "specialization": str,
        "performance_metrics": dict,
        "training_config": dict,
        # optional: "timeframes": [str], "lookback": int, "action_targets": [float],
        #           "vecnormalize": a pickled SB3 VecNormalize, or {"obs_mean", "obs_var", "clip_obs", "epsilon"},
        #           "algorithm": "PPO" | ...
    }

The model must be the zip bytes: a pickled SB3 algorithm object is refused (it can only
be rebuilt by running its pickle), unless the user trusts the file (``trust_pickle=True``,
``--trust-pickle``): then :mod:`l2fast.export.trusted` unpickles it in a separate,
short-lived process and hands back the bundle in this format for the same validation.

Resources: a source is a file somebody sent, so its sizes are judged before they cost
memory. A file over :data:`~l2fast.export.safe_pickle.MAX_SOURCE_BYTES` is refused
unread. Before a zip archive is decompressed (the SB3 archive, and ``policy.pth``, itself
a zip), its central directory must be at most :data:`MAX_CENTRAL_DIRECTORY_BYTES`, and
each member read must declare at most :data:`MAX_MEMBER_BYTES` uncompressed
(:data:`MAX_DATA_BYTES` for ``data``) and a compression ratio of at most
:data:`MAX_COMPRESSION_RATIO` (members under :data:`RATIO_FREE_BYTES` aside); members
are then read with a bound, so no declaration can make the read longer. Pickles go
through the allocation caps of :mod:`l2fast.export.safe_pickle`. Each refusal is an
:class:`~l2fast.errors.ExportError` naming the member and the size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from l2fast.errors import ExportError, UnsafePickleError
from l2fast.export.safe_pickle import (
    MAX_SOURCE_BYTES,
    GlobalRef,
    PickledRunningMeanStd,
    PickledSpace,
    PickledVecNormalize,
    read_bounded,
    safe_load,
    safe_loads,
)

if TYPE_CHECKING:
    import gymnasium
    import stable_baselines3
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler
    from stable_baselines3.common.policies import BasePolicy

    Scaler: TypeAlias = StandardScaler | MinMaxScaler | RobustScaler

__all__ = ["MAX_CENTRAL_DIRECTORY_BYTES", "MAX_COMPRESSION_RATIO", "MAX_DATA_BYTES", "MAX_MEMBER_BYTES",
           "MAX_SOURCE_BYTES", "RATIO_FREE_BYTES", "SUPPORTED_ALGORITHMS", "LoadedAgent", "VecNormStats",
           "iter_sources", "load_source"]

SUPPORTED_ALGORITHMS = ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG")
SOURCE_SUFFIXES = (".zip", ".pkl")

MAX_DATA_BYTES = 64 << 20
"""Largest uncompressed ``data`` entry of an SB3 archive: JSON of hyper-parameters, kilobytes."""
MAX_MEMBER_BYTES = 256 << 20
"""Largest uncompressed ``policy.pth`` (and all of its own members together): an MLP's
weights are kilobytes to a few MB."""
MAX_COMPRESSION_RATIO = 100
"""Highest uncompressed / compressed size of an archive member. SB3 stores its members
uncompressed and weights hardly compress; a zip bomb's ratio is near 1000."""
RATIO_FREE_BYTES = 1 << 20
"""Members up to this uncompressed size are exempt from the ratio (a small JSON may
compress well and costs nothing)."""
MAX_CENTRAL_DIRECTORY_BYTES = 1 << 20
"""Largest central directory of an archive (its list of members, parsed whole when the
archive is opened): an SB3 archive lists half a dozen members in well under a kilobyte."""
# Zip end records (APPNOTE 4.3.14-16): the end of central directory, and ZIP64's.
_EOCD, _EOCD_SIZE = b"PK\x05\x06", 22
_ZIP64_LOCATOR, _ZIP64_LOCATOR_SIZE = b"PK\x06\x07", 20
_ZIP64_RECORD, _ZIP64_RECORD_SIZE = b"PK\x06\x06", 56

# Policy class -> algorithm family, or the reason it is refused.
_ON_POLICY, _DQN, _SAC, _TD3 = "PPO/A2C", "DQN", "SAC", "TD3/DDPG"
_FAMILY_ALGORITHMS = {_ON_POLICY: ("PPO", "A2C"), _DQN: ("DQN",), _SAC: ("SAC",), _TD3: ("TD3", "DDPG")}
_CNN = "CnnPolicy (image observations through a CNN) is not supported: only MlpPolicy on a flat Box of features"
_MULTI = "MultiInputPolicy (Dict observations) is not supported: only MlpPolicy on a flat Box of features"
_POLICIES: dict[str, tuple[str | None, str | None]] = {
    "stable_baselines3.common.policies.ActorCriticPolicy": (_ON_POLICY, None),
    "stable_baselines3.common.policies.ActorCriticCnnPolicy": (None, _CNN),
    "stable_baselines3.common.policies.MultiInputActorCriticPolicy": (None, _MULTI),
}
for _mod, _family, _base in (("dqn", _DQN, "DQNPolicy"), ("sac", _SAC, "SACPolicy"), ("td3", _TD3, "TD3Policy")):
    _POLICIES[f"stable_baselines3.{_mod}.policies.{_base}"] = (_family, None)
    _POLICIES[f"stable_baselines3.{_mod}.policies.MlpPolicy"] = (_family, None)
    _POLICIES[f"stable_baselines3.{_mod}.policies.CnnPolicy"] = (None, _CNN)
    _POLICIES[f"stable_baselines3.{_mod}.policies.MultiInputPolicy"] = (None, _MULTI)

_ACTIVATIONS = {
    "torch.nn.modules.activation.ReLU": "ReLU",
    "torch.nn.modules.activation.ReLU6": "ReLU6",
    "torch.nn.modules.activation.Tanh": "Tanh",
    "torch.nn.modules.activation.Sigmoid": "Sigmoid",
    "torch.nn.modules.activation.ELU": "ELU",
    "torch.nn.modules.activation.LeakyReLU": "LeakyReLU",
    "torch.nn.modules.activation.SiLU": "SiLU",
    "torch.nn.modules.activation.GELU": "GELU",
    "torch.nn.modules.activation.Hardtanh": "Hardtanh",
    "torch.nn.modules.linear.Identity": "Identity",
}
_FLATTEN = "stable_baselines3.common.torch_layers.FlattenExtractor"
# Inference never touches the optimizer; its settings may name classes outside the allow-list.
_DROPPED_POLICY_KWARGS = ("device", "optimizer_class", "optimizer_kwargs")

_SCALER_FITTED = {
    "StandardScaler": (("with_mean", "mean_"), ("with_std", "scale_")),
    "MinMaxScaler": ((None, "min_"), (None, "scale_")),
    "RobustScaler": (("with_centering", "center_"), ("with_scaling", "scale_")),
}


@dataclass(frozen=True)
class VecNormStats:
    """The observation statistics of an SB3 ``VecNormalize``.

    ``predict`` sees ``clip((obs - obs_mean) / sqrt(obs_var + epsilon), -clip_obs, clip_obs)``.

    Attributes:
        obs_mean: float64 ``[n]`` running mean.
        obs_var: float64 ``[n]`` running variance.
        clip_obs: Bound of the normalised observation.
        epsilon: Added to the variance.
    """

    obs_mean: np.ndarray
    obs_var: np.ndarray
    clip_obs: float
    epsilon: float


@dataclass
class LoadedAgent:
    """An agent ready to export: the rebuilt SB3 model and everything around it.

    Attributes:
        name: Output name (source file stem by default).
        algorithm: ``"PPO"``, ``"A2C"``, ``"DQN"``, ``"SAC"``, ``"TD3"`` or ``"DDPG"``.
        model: The SB3 algorithm, weights loaded, eval mode, on CPU.
        observation_size: Number of raw features.
        action_space: ``gymnasium.spaces.Discrete`` (start 0) or a 1-D ``gymnasium.spaces.Box``.
        feature_names: Ordered feature names, or ``None`` when the source has none.
        scaler: A fitted sklearn StandardScaler, MinMaxScaler or RobustScaler, or ``None``.
        vecnormalize: VecNormalize statistics applied after the scaler, or ``None``.
        source_path: The file loaded.
        source_sha256: SHA-256 of that file.
        source_kind: ``"sb3-zip"`` or ``"pkl-bundle"``.
        specialization: The bundle's specialization.
        timeframes: The bundle's feature timeframes.
        lookback: Bars of history the features need.
        action_targets: Target position per discrete action, if the bundle gives them.
        performance_metrics: The bundle's metrics.
        training_config: The bundle's training configuration.
        trust_pickle: The bundle was unpickled with the real pickle in a separate
            process (``--trust-pickle``, :mod:`l2fast.export.trusted`).
    """

    name: str
    algorithm: str
    model: stable_baselines3.common.base_class.BaseAlgorithm
    observation_size: int
    action_space: gymnasium.spaces.Discrete | gymnasium.spaces.Box
    feature_names: list[str] | None
    scaler: Scaler | None
    vecnormalize: VecNormStats | None
    source_path: Path
    source_sha256: str
    source_kind: str
    specialization: str | None = None
    timeframes: list[str] | None = None
    lookback: int | None = None
    action_targets: list[float] | None = None
    performance_metrics: dict = field(default_factory=dict)
    training_config: dict = field(default_factory=dict)
    trust_pickle: bool = False


def iter_sources(path: str | Path) -> list[Path]:
    """The sources at ``path``: the file itself, or a folder's ``.zip``/``.pkl`` files, sorted.

    Raises:
        ExportError: ``path`` does not exist.
    """
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir()
                      if f.is_file() and f.suffix.lower() in SOURCE_SUFFIXES and not f.name.startswith("."))
    if p.is_file():
        return [p]
    raise ExportError(f"{p}: no such file or folder")


def load_source(path: str | Path, *, feature_names: Sequence[str] | None = None,
                vecnormalize: str | Path | VecNormStats | None = None,
                trust_pickle: bool = False) -> LoadedAgent:
    """Load an SB3 ``.zip`` or a ``.pkl`` bundle without running any code it carries.

    Args:
        path: The source file.
        feature_names: Ordered feature names, overriding the bundle's.
        vecnormalize: A file written by SB3's ``VecNormalize.save`` (or statistics),
            overriding the bundle's ``vecnormalize`` entry.
        trust_pickle: The user trusts the file: a ``.pkl`` bundle is unpickled with the
            real pickle in a separate process (:mod:`l2fast.export.trusted`, which runs
            the file's code), so its ``model`` may be a pickled SB3 algorithm. SB3 zips
            are read the safe way either way.

    Returns:
        The :class:`LoadedAgent`.

    Raises:
        UnsafePickleError: A pickled part names a global outside the allow-list.
        ExportError: Unreadable or corrupt file; unsupported algorithm, policy or space;
            feature names or statistics whose count differs from the observation size;
            a scaler missing a fitted attribute.
    """
    path = Path(path)
    raw = read_bounded(path, MAX_SOURCE_BYTES)
    sha256 = hashlib.sha256(raw).hexdigest()
    # Judge by the leading bytes: a bundle embeds a whole zip, so zipfile.is_zipfile, which
    # looks for the directory at the end, would take a bundle for an archive.
    suffix = path.suffix.lower()
    if raw[:4] == b"PK\x03\x04" or (suffix == ".zip" and raw[:1] != b"\x80"):
        kind, bundle = "sb3-zip", {}
        model, algorithm = _load_sb3_zip(raw, str(path))
    elif raw[:1] == b"\x80" or suffix == ".pkl":
        if trust_pickle:
            from l2fast.export.trusted import load_trusted_bundle

            bundle = load_trusted_bundle(path)
        else:
            bundle = _load_bundle(raw, str(path))
        kind = "pkl-bundle"
        model, algorithm = _load_sb3_zip(bundle["model"], f"{path} (bundle 'model')",
                                         hint=_algorithm_hint(bundle, str(path)))
    else:
        raise ExportError(f"{path}: not an SB3 .zip archive or a pickled .pkl bundle")
    source = str(path)
    n = int(model.observation_space.shape[0])
    action_space = model.action_space
    if "action_space" in bundle and bundle["action_space"] is not None:
        _check_bundle_action_space(bundle["action_space"], action_space, source)

    scaler = _check_scaler(bundle.get("scaler"), n, source)
    if feature_names is not None:
        names = _feature_names(feature_names, n, source, "given")
    elif bundle.get("feature_names") is not None:
        names = _feature_names(bundle["feature_names"], n, source, "in the bundle")
    elif scaler is not None and getattr(scaler, "feature_names_in_", None) is not None:
        names = _feature_names(scaler.feature_names_in_, n, source, "of the scaler's feature_names_in_")
    else:
        names = None

    if vecnormalize is not None:
        vn: VecNormStats | None
        if isinstance(vecnormalize, VecNormStats):
            vn = _check_vecnorm(vecnormalize, n, source)
        else:
            vn_path = Path(vecnormalize)
            vn = _vecnorm_stats(safe_load(vn_path), n, str(vn_path))
    else:
        vn = _vecnorm_stats(bundle.get("vecnormalize"), n, f"{source} (bundle 'vecnormalize')")

    targets = bundle.get("action_targets")
    return LoadedAgent(
        name=path.stem,
        algorithm=algorithm,
        model=model,
        observation_size=n,
        action_space=action_space,
        feature_names=names,
        scaler=scaler,
        vecnormalize=vn,
        source_path=path,
        source_sha256=sha256,
        source_kind=kind,
        specialization=_optional_str(bundle.get("specialization"), "specialization", source),
        timeframes=_optional_strs(bundle.get("timeframes"), "timeframes", source),
        lookback=_optional_int(bundle.get("lookback"), "lookback", source),
        action_targets=_optional_floats(targets, "action_targets", source),
        performance_metrics=_optional_dict(bundle.get("performance_metrics"), "performance_metrics", source),
        training_config=_optional_dict(bundle.get("training_config"), "training_config", source),
        trust_pickle=trust_pickle and kind == "pkl-bundle",
    )


# --- SB3 zip ------------------------------------------------------------------------


def _load_sb3_zip(raw: object, source: str, *, hint: str | None = None) -> tuple[Any, str]:
    """Rebuild the SB3 algorithm stored in zip bytes ``raw``; return it and its algorithm name."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ExportError(f"{source}: expected the bytes of an SB3 zip archive, got {type(raw).__name__}")
    try:
        archive = _open_archive(bytes(raw), source)
        names = set(archive.namelist())
        for required in ("data", "policy.pth"):
            if required not in names:
                raise ExportError(f"{source}: not an SB3 model archive (or a truncated one): no '{required}' entry")
        data_text = _read_member(archive, "data", MAX_DATA_BYTES, source)
        policy_bytes = _read_member(archive, "policy.pth", MAX_MEMBER_BYTES, source)
        if policy_bytes.startswith(b"PK\x03\x04"):
            # torch.save writes a zip too: torch.load would inflate what it declares.
            inner = _open_archive(policy_bytes, f"{source} (policy.pth)")
            _check_members(inner.infolist(), MAX_MEMBER_BYTES, f"{source} (policy.pth)")
    except ExportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{source}: corrupt zip archive ({type(exc).__name__}: {exc})") from exc
    try:
        data = json.loads(data_text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{source}: the 'data' entry is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{source}: the 'data' entry is not a JSON object")

    for key in ("policy_class", "observation_space", "action_space"):
        if key not in data:
            raise ExportError(f"{source}: not an SB3 model archive: 'data' has no {key}")
    policy_ref = _entry(data, "policy_class", source)
    family = _policy_family(policy_ref, source)
    algorithm = _algorithm(family, data, hint, source)
    obs_space = _observation_space(_entry(data, "observation_space", source), source)
    act_space = _action_space(_entry(data, "action_space", source), algorithm, source)
    policy_kwargs = _policy_kwargs(_entry(data, "policy_kwargs", source) if "policy_kwargs" in data else None,
                                   source)
    use_sde = data.get("use_sde", False)
    if not isinstance(use_sde, bool):
        raise ExportError(f"{source}: 'use_sde' in data is {use_sde!r}, expected true or false")
    model = _build_model(algorithm, family, obs_space, act_space, policy_kwargs, use_sde, source)
    _load_weights(model, policy_bytes, source)
    return model, algorithm


def _open_archive(raw: bytes, source: str) -> zipfile.ZipFile:
    """``raw`` as a zip archive, once its central directory is known to be small.

    ``zipfile`` parses the whole directory on opening, so its size is judged first: from
    the end record, or from the ZIP64 end record that ``zipfile`` prefers when a locator
    precedes the end record (torch writes one).
    """
    at = raw.rfind(_EOCD, max(0, len(raw) - _EOCD_SIZE - 0xFFFF))
    if at >= 0 and at + _EOCD_SIZE <= len(raw):
        (cd_size,) = struct.unpack_from("<I", raw, at + 12)
        record = at - _ZIP64_LOCATOR_SIZE - _ZIP64_RECORD_SIZE
        if raw[at - _ZIP64_LOCATOR_SIZE:at - _ZIP64_LOCATOR_SIZE + 4] == _ZIP64_LOCATOR and record >= 0 \
                and raw[record:record + 4] == _ZIP64_RECORD:
            cd_size = max(cd_size, struct.unpack_from("<Q", raw, record + 40)[0])
        if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
            raise ExportError(f"{source}: the archive's central directory is {cd_size} bytes, more than "
                              f"the {MAX_CENTRAL_DIRECTORY_BYTES}-byte limit")
    return zipfile.ZipFile(io.BytesIO(raw))


def _check_members(members: Sequence[zipfile.ZipInfo], limit: int, source: str) -> None:
    """Refuse members whose declared sizes pass ``limit`` (together) or the ratio, before any is inflated."""
    total = 0
    for info in members:
        total += info.file_size
        if total > limit:
            raise ExportError(f"{source}: member '{info.filename}' declares {info.file_size} bytes uncompressed "
                              f"({total} in all), more than the {limit}-byte limit")
        if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
            raise ExportError(f"{source}: member '{info.filename}' declares {info.file_size} bytes from "
                              f"{info.compress_size} compressed, a ratio over {MAX_COMPRESSION_RATIO} (a zip bomb?)")


def _read_member(archive: zipfile.ZipFile, name: str, limit: int, source: str) -> bytes:
    """One member's bytes: its declaration judged first, then read with a bound."""
    info = archive.getinfo(name)
    _check_members([info], limit, source)
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise ExportError(f"{source}: member '{name}' inflates past the {limit}-byte limit")
    return data


def _entry(data: dict, key: str, source: str) -> object:
    """One ``data`` entry: plain JSON as is, a ``:serialized:`` one through the safe unpickler."""
    item = data[key]
    if not (isinstance(item, dict) and ":serialized:" in item):
        return item
    encoded = item[":serialized:"]
    if not isinstance(encoded, str):
        raise ExportError(f"{source}: data[{key!r}] has a non-text ':serialized:' value")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ExportError(f"{source}: data[{key!r}] is not valid base64 ({exc})") from exc
    return safe_loads(raw, source=f"{source}: data[{key!r}]")


def _policy_family(ref: object, source: str) -> str:
    if not isinstance(ref, GlobalRef):
        raise ExportError(f"{source}: data['policy_class'] is not a policy class (got {type(ref).__name__})")
    if ref.module.startswith("sb3_contrib."):
        what = ref.name
        if "Recurrent" in what:
            reason = "recurrent policies (sb3-contrib RecurrentPPO) are not supported"
        elif "Maskable" in what:
            reason = "action-masking policies (sb3-contrib MaskablePPO) are not supported"
        else:
            reason = "sb3-contrib algorithms are not supported"
        raise ExportError(f"{source}: policy {ref.qualname}: {reason}; supported: "
                          f"{', '.join(SUPPORTED_ALGORITHMS)} with MlpPolicy")
    family, refusal = _POLICIES.get(ref.qualname, (None, f"policy class {ref.qualname} is not supported"))
    if refusal is not None:
        raise ExportError(f"{source}: {ref.name}: {refusal}")
    assert family is not None
    return family


def _algorithm(family: str, data: dict, hint: str | None, source: str) -> str:
    candidates = _FAMILY_ALGORITHMS[family]
    if hint is not None:
        if hint not in candidates:
            raise ExportError(f"{source}: the bundle says the algorithm is {hint}, but the saved policy "
                              f"belongs to {' or '.join(candidates)}")
        return hint
    if family == _ON_POLICY:
        if "cg_max_steps" in data:
            raise ExportError(f"{source}: TRPO (sb3-contrib) is not supported; supported: "
                              f"{', '.join(SUPPORTED_ALGORITHMS)}")
        return "PPO" if ("clip_range" in data or "n_epochs" in data) else "A2C"
    if family == _TD3:
        ddpg = (data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0
                and data.get("target_policy_noise") == 0.1)
        return "DDPG" if ddpg else "TD3"
    return candidates[0]


def _space(obj: object, what: str, source: str) -> Any:
    """A fresh gymnasium Box/Discrete built from validated pickled state (other kinds: the kind)."""
    from gymnasium import spaces

    if not isinstance(obj, PickledSpace):
        raise ExportError(f"{source}: the {what} is {type(obj).__name__}, not a gymnasium space")
    state = obj.state
    try:
        if obj.kind == "Box":
            dtype = np.dtype(state["dtype"])
            low = np.asarray(state["low"])
            high = np.asarray(state["high"])
            shape = tuple(int(d) for d in state.get("_shape", state.get("shape", low.shape)))
            if dtype.kind != "f" or low.dtype.kind not in "fiu" or high.dtype.kind not in "fiu":
                raise ValueError(f"dtype {dtype} (only float Boxes are supported)")
            if low.shape != shape or high.shape != shape:
                raise ValueError(f"low {low.shape} / high {high.shape} do not match shape {shape}")
            return spaces.Box(low=low.astype(dtype), high=high.astype(dtype), shape=shape, dtype=dtype)
        if obj.kind == "Discrete":
            n = state["n"]
            start = state.get("start", 0)
            if not isinstance(n, (int, np.integer)) or not isinstance(start, (int, np.integer)):
                raise ValueError(f"n={n!r}, start={start!r}")
            return spaces.Discrete(int(n), start=int(start))
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise ExportError(f"{source}: the {what} ({obj.kind}) is malformed: {exc}") from exc
    return obj.kind


def _observation_space(obj: object, source: str) -> Any:
    space = _space(obj, "observation space", source)
    if space == "Dict":
        raise ExportError(f"{source}: a Dict observation space (MultiInputPolicy) is not supported: "
                          "only a flat Box of features")
    if isinstance(space, str) or type(space).__name__ != "Box":
        kind = space if isinstance(space, str) else type(space).__name__
        raise ExportError(f"{source}: a {kind} observation space is not supported: only a flat Box of features")
    if len(space.shape) != 1:
        raise ExportError(f"{source}: a Box observation of shape {space.shape} is not supported: "
                          "only a flat (1-D) Box of features")
    if space.shape[0] < 1:
        raise ExportError(f"{source}: the observation space is empty")
    return space


def _action_space(obj: object, algorithm: str, source: str) -> Any:
    space = _space(obj, "action space", source)
    name = space if isinstance(space, str) else type(space).__name__
    if name == "Discrete":
        if int(space.start) != 0:
            raise ExportError(f"{source}: a Discrete action space with start={int(space.start)} is not supported: "
                              "only start=0")
        if int(space.n) < 1:
            raise ExportError(f"{source}: a Discrete action space needs n >= 1, got {int(space.n)}")
    elif name == "Box":
        if len(space.shape) != 1:
            raise ExportError(f"{source}: a Box action of shape {space.shape} is not supported: only 1-D Box actions")
    else:
        raise ExportError(f"{source}: a {name} action space is not supported: only Discrete and Box")
    needs = {"DQN": "Discrete", "SAC": "Box", "TD3": "Box", "DDPG": "Box"}.get(algorithm)
    if needs is not None and name != needs:
        raise ExportError(f"{source}: {algorithm} with a {name} action space: {algorithm} needs {needs}")
    return space


def _plain(value: object, where: str, source: str) -> object:
    """Plain JSON-like data (numpy scalars unwrapped); anything else is refused."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where, source) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}[{k!r}]", source) for k, v in value.items()}
    raise ExportError(f"{source}: unsupported value in policy_kwargs{where}: {value!r}")


def _layers(value: object, where: str, source: str) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise ExportError(f"{source}: policy_kwargs net_arch{where} must be a list of layer sizes, got {value!r}")
    sizes = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
            raise ExportError(f"{source}: policy_kwargs net_arch{where} has an invalid layer size {v!r}")
        sizes.append(int(v))
    return sizes


def _net_arch(value: object, source: str) -> object:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        if len(value) != 1:
            raise ExportError(f"{source}: net_arch {value!r} (shared layers before the actor/critic split, "
                              "SB3 < 1.8) is not supported")
        value = value[0]  # SB3 < 1.8 wrote [dict(pi=..., vf=...)]; SB3's load converts it the same way
    if isinstance(value, dict):
        unknown = set(value) - {"pi", "vf", "qf"}
        if unknown:
            raise ExportError(f"{source}: net_arch has unknown keys {sorted(unknown)}: expected pi, vf, qf")
        return {k: _layers(v, f"[{k!r}]", source) for k, v in value.items()}
    return _layers(value, "", source)


def _policy_kwargs(raw: object, source: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ExportError(f"{source}: policy_kwargs is {type(raw).__name__}, expected a dict")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ExportError(f"{source}: policy_kwargs has a non-text key {key!r}")
        if key in _DROPPED_POLICY_KWARGS:
            continue
        if key == "activation_fn":
            if not isinstance(value, GlobalRef) or value.qualname not in _ACTIVATIONS:
                raise ExportError(f"{source}: activation_fn {value!r} is not supported: "
                                  f"expected one of {', '.join(sorted(set(_ACTIVATIONS.values())))}")
            from torch import nn

            out[key] = getattr(nn, _ACTIVATIONS[value.qualname])
        elif key == "features_extractor_class":
            if not isinstance(value, GlobalRef) or value.qualname != _FLATTEN:
                name = value.name if isinstance(value, GlobalRef) else repr(value)
                raise ExportError(f"{source}: features extractor {name} is not supported: only MlpPolicy's "
                                  "FlattenExtractor on a flat Box of features")
            from stable_baselines3.common.torch_layers import FlattenExtractor

            out[key] = FlattenExtractor
        elif key == "features_extractor_kwargs":
            if value:
                raise ExportError(f"{source}: features_extractor_kwargs {value!r} are not supported "
                                  "(FlattenExtractor takes none)")
        elif key == "net_arch":
            out[key] = _net_arch(value, source)
        else:
            out[key] = _plain(value, f"[{key!r}]", source)
    return out


def _build_model(algorithm: str, family: str, obs_space: Any, act_space: Any, policy_kwargs: dict,
                 use_sde: bool, source: str) -> Any:
    """Construct the algorithm around the spaces, as SB3's ``load`` does, without its data."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.dqn.policies import DQNPolicy
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    policy_class: type[BasePolicy]
    if family == _ON_POLICY:
        policy_class = ActorCriticPolicy
    elif family == _DQN:
        policy_class = DQNPolicy
    elif family == _SAC:
        policy_class = SACPolicy
    else:
        policy_class = TD3Policy
    kwargs: dict[str, Any] = {"policy": policy_class, "env": None, "policy_kwargs": dict(policy_kwargs),
                              "device": "cpu", "verbose": 0, "_init_setup_model": False}
    if algorithm in ("PPO", "A2C", "SAC"):
        kwargs["use_sde"] = use_sde
    elif use_sde:
        raise ExportError(f"{source}: {algorithm} saved with use_sde=True, which {algorithm} does not support")
    if family == _TD3:
        # TD3 saves no n_critics (its default is 2), DDPG saves 1; state it so that the
        # network follows the file whichever of the two labels was chosen.
        kwargs["policy_kwargs"].setdefault("n_critics", 2)
    if family != _ON_POLICY:
        kwargs["buffer_size"] = 1  # the replay buffer is never used; do not reserve a million rows
    try:
        model = getattr(sb3, algorithm)(**kwargs)
        model.observation_space = obs_space
        model.action_space = act_space
        model.n_envs = 1
        if algorithm == "SAC":
            # "auto" would read it from the env we do not have; training-only, as in SB3's load.
            model.target_entropy = -float(np.prod(act_space.shape))
        model._setup_model()
    except Exception as exc:  # SB3/torch report bad settings with assorted exception types
        raise ExportError(f"{source}: cannot rebuild the {algorithm} policy from the saved settings "
                          f"{policy_kwargs!r}: {type(exc).__name__}: {exc}") from exc
    return model


def _load_weights(model: Any, policy_bytes: bytes, source: str) -> None:
    import torch

    try:
        state = torch.load(io.BytesIO(policy_bytes), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or refused files
        raise ExportError(f"{source}: policy.pth is not a readable weights-only torch state dict "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{source}: policy.pth is not a state dict of tensors")
    try:
        model.policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ExportError(f"{source}: the weights in policy.pth do not fit the network described by 'data': "
                          f"{detail[:600]}") from exc
    model.policy.set_training_mode(False)
    model.policy.eval()


# --- .pkl bundle --------------------------------------------------------------------


def _load_bundle(raw: bytes, source: str) -> dict:
    try:
        bundle = safe_loads(raw, source=source)
    except UnsafePickleError as exc:
        if exc.module.split(".")[0] in ("stable_baselines3", "sb3_contrib", "torch", "cloudpickle"):
            err = UnsafePickleError(exc.module, exc.name, source)
            err.args = ((f"{exc}. A .pkl bundle must carry the model as the bytes of an SB3 zip archive "
                         "(buf = io.BytesIO(); model.save(buf); bundle['model'] = buf.getvalue()), "
                         "not as a pickled SB3 or torch object"),)
            raise err from None
        raise
    if isinstance(bundle, PickledVecNormalize):
        raise ExportError(f"{source}: this is a saved VecNormalize, not a bundle: pass it as vecnormalize "
                          "(--vecnormalize) next to the model")
    if not isinstance(bundle, dict):
        raise ExportError(f"{source}: a .pkl bundle must be a dict with 'model', 'scaler', 'feature_names', ...; "
                          f"got {type(bundle).__name__}")
    if "model" not in bundle:
        raise ExportError(f"{source}: the bundle has no 'model' entry")
    if not isinstance(bundle["model"], (bytes, bytearray)):
        raise ExportError(f"{source}: bundle 'model' must be the bytes of an SB3 zip archive "
                          "(buf = io.BytesIO(); model.save(buf); buf.getvalue()), "
                          f"got {type(bundle['model']).__name__}")
    return bundle


def _algorithm_hint(bundle: dict, source: str) -> str | None:
    """The bundle's algorithm label: top-level ``algorithm`` (must be supported), else
    ``training_config["algorithm"]`` (ignored unless it names a supported algorithm)."""
    value = bundle.get("algorithm")
    if value is not None:
        if str(value).upper() not in SUPPORTED_ALGORITHMS:
            raise ExportError(f"{source}: the bundle's algorithm {value!r} is not supported: "
                              f"expected one of {', '.join(SUPPORTED_ALGORITHMS)}")
        return str(value).upper()
    config = bundle.get("training_config")
    if isinstance(config, dict) and isinstance(config.get("algorithm"), str):
        label = config["algorithm"].upper()
        return label if label in SUPPORTED_ALGORITHMS else None
    return None


def _check_bundle_action_space(given: object, actual: Any, source: str) -> None:
    """The bundle's ``action_space`` (int, dict or space) must describe the model's."""
    from gymnasium import spaces

    discrete = isinstance(actual, spaces.Discrete)
    described = f"Discrete({int(actual.n)})" if discrete else f"Box(shape={actual.shape})"
    n: Any = None  # from the bundle, checked below
    low = high = None
    if isinstance(given, PickledSpace):
        given = _space(given, "bundle action_space", source)
        if isinstance(given, str):
            raise ExportError(f"{source}: the bundle's action_space is a {given}, the model's is {described}")
    if isinstance(given, (int, np.integer)) and not isinstance(given, bool):
        kind, n = "discrete", int(given)
    elif isinstance(given, dict):
        kind = str(given.get("type", "discrete" if "n" in given else "box")).lower()
        n, low, high = given.get("n"), given.get("low"), given.get("high")
    elif isinstance(given, spaces.Discrete):
        kind, n = "discrete", int(given.n)
    elif isinstance(given, spaces.Box):
        kind, low, high = "box", given.low, given.high
    else:
        raise ExportError(f"{source}: the bundle's action_space {given!r} is neither an int, a dict nor a space")
    if kind == "discrete":
        if not discrete or n is None or int(n) != int(actual.n):
            raise ExportError(f"{source}: the bundle's action_space says Discrete({n}), the model's is {described}")
        return
    if kind != "box" or discrete:
        raise ExportError(f"{source}: the bundle's action_space says {kind}, the model's is {described}")
    for what, mine, theirs in (("low", low, actual.low), ("high", high, actual.high)):
        if mine is None:
            continue
        try:
            mine_arr = np.broadcast_to(np.asarray(mine, dtype=np.float64), actual.shape).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ExportError(f"{source}: the bundle's action_space {what} {mine!r} does not fit the model's "
                              f"{described}") from exc
        theirs_arr = np.asarray(theirs, dtype=np.float64).reshape(-1)
        # float32 bounds round-trip through float64 with float32 precision.
        if not np.allclose(mine_arr, theirs_arr, rtol=1e-6, atol=0):
            raise ExportError(f"{source}: the bundle's action_space {what} {mine_arr.tolist()} differs from "
                              f"the model's {theirs_arr.tolist()}")


def _check_scaler(scaler: Any, n: int, source: str) -> Scaler | None:
    """A fitted StandardScaler/MinMaxScaler/RobustScaler over ``n`` features, or ``None``."""
    if scaler is None:
        return None
    kind = type(scaler).__name__
    if type(scaler).__module__ != "sklearn.preprocessing._data" or kind not in _SCALER_FITTED:
        raise ExportError(f"{source}: unsupported scaler {type(scaler).__module__}.{kind}: "
                          "expected sklearn StandardScaler, MinMaxScaler or RobustScaler")
    # A genuine pickle holds only parameters and fitted arrays; an instance attribute named
    # like a method (say "transform") would replace that method with the pickle's object.
    shadowing = sorted(k for k in vars(scaler) if hasattr(type(scaler), k))
    if shadowing:
        raise ExportError(f"{source}: the {kind} carries attributes that would replace its methods: {shadowing}")
    n_in = getattr(scaler, "n_features_in_", None)
    if n_in is not None and int(n_in) != n:
        raise ExportError(f"{source}: the {kind} was fitted on {int(n_in)} features but the observation has {n}")
    for flag, attr in _SCALER_FITTED[kind]:
        if flag is not None:
            if not hasattr(scaler, flag):
                raise ExportError(f"{source}: the {kind} has no '{flag}' setting")
            if not getattr(scaler, flag):
                continue
        values = getattr(scaler, attr, None)
        if values is None:
            needed = f" (needed because {flag}=True)" if flag else ""
            raise ExportError(f"{source}: the {kind} is missing its fitted attribute '{attr}'{needed}: "
                              "was it fitted?")
        try:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ExportError(f"{source}: the {kind}'s '{attr}' is not numeric ({exc})") from exc
        if arr.size != n:
            raise ExportError(f"{source}: the {kind}'s '{attr}' has {arr.size} values but the observation has {n}")
        if not np.all(np.isfinite(arr)):
            raise ExportError(f"{source}: the {kind}'s '{attr}' contains non-finite values")
    if kind == "MinMaxScaler":
        if not hasattr(scaler, "clip"):
            scaler.clip = False  # pickles of sklearn < 0.24 predate clip; their transform never clipped
        if scaler.clip and not hasattr(scaler, "feature_range"):
            raise ExportError(f"{source}: the MinMaxScaler clips but has no 'feature_range'")
    return scaler


def _feature_names(names: object, n: int, source: str, what: str) -> list[str]:
    if isinstance(names, str):
        raise ExportError(f"{source}: feature names ({what}) must be a list of names, got the string {names!r}")
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, (list, tuple)):
        raise ExportError(f"{source}: feature names ({what}) must be a list of names, got {type(names).__name__}")
    out = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ExportError(f"{source}: feature names ({what}) contain an invalid name {name!r}")
        out.append(name)
    if len(out) != n:
        raise ExportError(f"{source}: {len(out)} feature names ({what}) but the observation has {n} features")
    dupes = sorted({x for x in out if out.count(x) > 1})
    if dupes:
        raise ExportError(f"{source}: feature names ({what}) repeat {dupes}")
    return out


def _check_vecnorm(stats: VecNormStats, n: int, source: str) -> VecNormStats:
    try:
        mean = np.asarray(stats.obs_mean, dtype=np.float64).reshape(-1)
        var = np.asarray(stats.obs_var, dtype=np.float64).reshape(-1)
        clip_obs, epsilon = float(stats.clip_obs), float(stats.epsilon)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{source}: VecNormalize statistics are not numeric ({exc})") from exc
    if mean.size != n or var.size != n:
        raise ExportError(f"{source}: VecNormalize statistics cover {mean.size} features (var: {var.size}) "
                          f"but the observation has {n}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0)):
        raise ExportError(f"{source}: VecNormalize mean/var contain non-finite or negative values")
    if not (np.isfinite(clip_obs) and clip_obs > 0 and np.isfinite(epsilon) and epsilon >= 0):
        raise ExportError(f"{source}: VecNormalize clip_obs={clip_obs!r}, epsilon={epsilon!r} are unusable")
    return VecNormStats(obs_mean=mean, obs_var=var, clip_obs=clip_obs, epsilon=epsilon)


def _vecnorm_stats(obj: object, n: int, source: str) -> VecNormStats | None:
    """VecNormStats from a pickled VecNormalize, a dict of statistics, or VecNormStats."""
    if obj is None:
        return None
    if isinstance(obj, VecNormStats):
        return _check_vecnorm(obj, n, source)
    if isinstance(obj, dict):
        try:
            mean, var = obj.get("obs_mean", obj.get("mean")), obj.get("obs_var", obj.get("var"))
            clip_obs, epsilon = obj.get("clip_obs", 10.0), obj.get("epsilon", 1e-8)
        except AttributeError as exc:
            raise ExportError(f"{source}: VecNormalize statistics dict is malformed ({exc})") from exc
        if mean is None or var is None:
            raise ExportError(f"{source}: VecNormalize statistics need 'obs_mean' and 'obs_var'")
        stats = VecNormStats(obs_mean=mean, obs_var=var, clip_obs=clip_obs, epsilon=epsilon)
        return _check_vecnorm(stats, n, source)
    if not isinstance(obj, PickledVecNormalize):
        raise ExportError(f"{source}: expected a saved SB3 VecNormalize, got {type(obj).__name__}")
    state = obj.state
    if not state.get("norm_obs", True):
        return None  # observations pass through unnormalised; only rewards were normalised
    rms = state.get("obs_rms")
    if isinstance(rms, dict):
        raise ExportError(f"{source}: VecNormalize over Dict observations is not supported: only a flat Box")
    if not isinstance(rms, PickledRunningMeanStd):
        raise ExportError(f"{source}: the VecNormalize has no observation statistics (obs_rms)")
    for key in ("clip_obs", "epsilon"):
        if key not in state:
            raise ExportError(f"{source}: the VecNormalize has no '{key}'")
    if "mean" not in rms.state or "var" not in rms.state:
        raise ExportError(f"{source}: the VecNormalize's obs_rms has no mean/var")
    return _check_vecnorm(VecNormStats(obs_mean=rms.state["mean"], obs_var=rms.state["var"],
                                       clip_obs=state["clip_obs"], epsilon=state["epsilon"]), n, source)


# --- bundle metadata ----------------------------------------------------------------


def _optional_str(value: object, key: str, source: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ExportError(f"{source}: bundle '{key}' must be text, got {type(value).__name__}")


def _optional_strs(value: object, key: str, source: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ExportError(f"{source}: bundle '{key}' must be a list of text, got {value!r}")


def _optional_int(value: object, key: str, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) >= 0:
        return int(value)
    raise ExportError(f"{source}: bundle '{key}' must be a non-negative integer, got {value!r}")


def _optional_floats(value: object, key: str, source: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    raise ExportError(f"{source}: bundle '{key}' must be a list of numbers, got {value!r}")


def _optional_dict(value: object, key: str, source: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise ExportError(f"{source}: bundle '{key}' must be a dict, got {type(value).__name__}")

"""Load exported agents (ONNX + manifest) and validate a folder of them.

Only the two files written by ``python -m l2fast.export`` are read: ``<name>.json`` (the
manifest, see :mod:`l2fast.manifest`) and ``<name>.onnx`` beside it. Nothing is unpickled
and neither torch nor stable-baselines3 is imported. The ONNX bytes are hashed and compared
with the manifest before onnxruntime sees them, and the session is built from those same
bytes, so a file swapped after the check is never run.

Sessions are single-threaded (one intra- and one inter-op thread, sequential execution,
all graph optimisations): the engine runs many small models per bar, where thread hand-off
would cost more than the arithmetic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2fast.errors import ModelLoadError
from l2fast.manifest import INPUT_NAME, decode_bound, validate_manifest

__all__ = ["LoadedModel", "load_model", "session_options", "validate_models"]


def session_options() -> Any:
    """onnxruntime session options used for every model (single-threaded, fully optimised)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def sha256_bytes(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class LoadedModel:
    """An exported agent ready to run: raw feature vector in, action out.

    Attributes:
        name: Model name (the file stem).
        manifest: The parsed, validated manifest.
        onnx_path: Path of the ONNX file.
        feature_names: Ordered input feature names.
        observation_size: Number of input features.
        discrete: True for a Discrete action space (``action`` is an int64 index).
        action_targets: Target position in [-1, 1] per discrete action (None for Box).
        output_names: ONNX output names, ``action`` first.
        session: The onnxruntime ``InferenceSession``.
    """

    __slots__ = ("name", "manifest", "onnx_path", "feature_names", "observation_size", "discrete",
                 "action_targets", "output_names", "session", "_row", "_binding", "_action")

    def __init__(self, name: str, manifest: dict, onnx_path: Path, session: Any) -> None:
        import onnxruntime as ort

        self.name = name
        self.manifest = manifest
        self.onnx_path = onnx_path
        self.session = session
        self.feature_names = tuple(manifest["feature_names"])
        self.observation_size = int(manifest["observation_size"])
        self.discrete = manifest["action_space"]["type"] == "discrete"
        targets = manifest["action_targets"]
        self.action_targets = tuple(float(t) for t in targets) if targets is not None else None
        self.output_names = tuple(manifest["outputs"])
        # Batch-1 fast path: the input row and the action output live in preallocated
        # buffers bound once, so a call copies n floats in and runs the graph, nothing else.
        self._row = np.zeros((1, self.observation_size), dtype=np.float32)
        if self.discrete:
            self._action = np.zeros((1,), dtype=np.int64)
        else:
            self._action = np.zeros((1, int(manifest["action_space"]["shape"][0])), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._row))
        binding.bind_ortvalue_output("action", ort.OrtValue.ortvalue_from_numpy(self._action))
        self._binding = binding

    def run(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch and return every output.

        Args:
            obs: Raw features, shape ``[N, observation_size]`` or ``[observation_size]``.

        Returns:
            ``{"action": ..., "probs"/"q_values": ...}`` with a leading batch axis.
        """
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.observation_size:
            raise ValueError(f"{self.name}: obs must have shape [N, {self.observation_size}], got {np.shape(obs)}")
        values = self.session.run(None, {INPUT_NAME: x})
        return dict(zip(self.output_names, values))

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch ``[N, observation_size]``: int64 ``[N]`` or float32 ``[N, d]``."""
        return self.run(obs)["action"]

    def act(self, features: np.ndarray) -> int | np.ndarray:
        """The action for ONE observation, through preallocated, pre-bound buffers.

        The buffers belong to this object, so calls must not overlap (one thread per
        model); :meth:`run` has no such restriction.

        Args:
            features: Raw feature vector of length ``observation_size`` (any float dtype).

        Returns:
            The action index (int) for a Discrete model, else a new float32 ``[d]`` array.
        """
        self._row[0] = features
        self.session.run_with_iobinding(self._binding)
        if self.discrete:
            return self._action.item()
        return self._action[0].copy()

    def target(self, features: np.ndarray) -> float:
        """Target position in [-1, 1] chosen by a Discrete model for one observation."""
        if self.action_targets is None:
            raise ValueError(f"{self.name}: a Box-action model has no discrete action targets")
        return self.action_targets[self.act(features)]

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, {self.manifest['algorithm']}, "
                f"{self.observation_size} features, outputs={list(self.output_names)})")


def _read_manifest(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: manifest is not valid JSON: {exc}") from exc
    problems = validate_manifest(manifest)
    if problems:
        raise ModelLoadError(f"{path}: invalid manifest: {'; '.join(problems)}")
    return manifest


def _check_io(session: Any, manifest: dict, where: str) -> None:
    """Compare the graph's inputs and outputs with what the manifest promises."""
    n = manifest["observation_size"]
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelLoadError(f"{where}: expected one input {INPUT_NAME!r}, found {[i.name for i in inputs]}")
    inp = inputs[0]
    if inp.type != "tensor(float)" or len(inp.shape) != 2 or inp.shape[1] != n or isinstance(inp.shape[0], int):
        raise ModelLoadError(f"{where}: input {INPUT_NAME!r} must be float [N, {n}] with a dynamic batch, "
                             f"found {inp.type} {inp.shape}")
    outputs = {o.name: o for o in session.get_outputs()}
    if list(outputs) != manifest["outputs"]:
        raise ModelLoadError(f"{where}: outputs {list(outputs)} differ from the manifest's {manifest['outputs']}")
    space = manifest["action_space"]
    if space["type"] == "discrete":
        want = {"action": ("tensor(int64)", 1, None)}
        want.update({name: ("tensor(float)", 2, space["n"]) for name in manifest["outputs"][1:]})
    else:
        want = {"action": ("tensor(float)", 2, space["shape"][0])}
    for name, (dtype, rank, last) in want.items():
        out = outputs[name]
        if out.type != dtype or len(out.shape) != rank or (last is not None and out.shape[-1] != last):
            raise ModelLoadError(f"{where}: output {name!r} is {out.type} {out.shape}, "
                                 f"expected {dtype} of rank {rank}" + (f" ending in {last}" if last else ""))


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".onnx":
        return p.with_suffix(".json"), p
    return p, p.with_suffix(".onnx")


def load_model(path: str | Path) -> LoadedModel:
    """Load an exported model from its manifest (``<name>.json``) or ONNX file path.

    Args:
        path: ``<name>.json`` or ``<name>.onnx``; the other file must sit beside it.

    Returns:
        The model, with a single-threaded onnxruntime session.

    Raises:
        ModelLoadError: Missing file, invalid manifest, ONNX SHA-256 differing from the
            manifest, ONNX that onnxruntime cannot load, or inputs/outputs that do not match.
    """
    import onnxruntime as ort

    json_path, onnx_path = _paths(path)
    manifest = _read_manifest(json_path)
    try:
        data = onnx_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{onnx_path}: cannot read ONNX file: {exc.strerror or exc}") from exc
    digest = sha256_bytes(data)
    if digest != manifest["onnx_sha256"]:
        raise ModelLoadError(f"{onnx_path}: SHA-256 {digest} does not match the manifest's "
                             f"{manifest['onnx_sha256']} (file modified or replaced)")
    try:
        session = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelLoadError(f"{onnx_path}: onnxruntime cannot load the model: {exc}") from exc
    _check_io(session, manifest, str(onnx_path))
    return LoadedModel(json_path.stem, manifest, onnx_path, session)


def _smoke_run(model: LoadedModel) -> None:
    """Run two rows of zeros and check shapes, dtypes and the action range."""
    out = model.run(np.zeros((2, model.observation_size), dtype=np.float32))
    action = out["action"]
    space = model.manifest["action_space"]
    if model.discrete:
        if action.shape != (2,) or not np.all((action >= 0) & (action < space["n"])):
            raise ModelLoadError(f"action {action!r} is not an index in [0, {space['n']})")
    else:
        low = np.array([decode_bound(v) for v in space["low"]])
        high = np.array([decode_bound(v) for v in space["high"]])
        if action.shape != (2, len(low)) or not np.all((action >= low) & (action <= high)):
            raise ModelLoadError(f"action {action!r} lies outside the action space bounds")


def _manifest_paths(path: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """The manifests to check under ``path``, and problems that are failures on their own."""
    if not path.exists():
        return [], [{"name": path.name, "reason": f"{path}: no such file or directory"}]
    if path.is_dir():
        manifests = sorted(path.glob("*.json"))
        problems = [{"name": p.stem, "reason": f"{p.name} has no manifest {p.stem}.json beside it"}
                    for p in sorted(path.glob("*.onnx")) if not p.with_suffix(".json").exists()]
        if not manifests and not problems:
            problems.append({"name": path.name, "reason": f"{path}: no exported models (<name>.json + <name>.onnx)"})
        return manifests, problems
    if path.suffix in (".json", ".onnx"):
        return [_paths(path)[0]], []
    return [], [{"name": path.name, "reason": f"{path}: not a directory, .json or .onnx file"}]


def validate_models(path: str | Path, *, known_features: Sequence[str] | None = None) -> dict[str, Any]:
    """Check every exported model under ``path``.

    Each model must load (:func:`load_model`: manifest schema, ONNX SHA-256, onnxruntime,
    input/output names and shapes), run on a zero batch, and use only feature names the
    technical core computes (``obs_*`` placeholders from an export without names fail).
    A missing path, an empty folder or an ONNX file without a manifest counts as one failed
    entry, so ``passed == total`` only when there is something to pass.

    Args:
        path: A folder of ``<name>.json`` + ``<name>.onnx`` pairs, or one of those files.
        known_features: Accepted feature names; defaults to
            ``l2fast.features.feature_names(TechnicalConfig())``.

    Returns:
        ``{"passed": int, "total": int, "failures": [{"name": str, "reason": str}, ...]}``.
    """
    manifests, failures = _manifest_paths(Path(path))
    total = len(manifests) + len(failures)
    if known_features is None:
        from l2fast.features import TechnicalConfig, feature_names

        known_features = feature_names(TechnicalConfig())
    known = set(known_features)
    for json_path in manifests:
        try:
            model = load_model(json_path)
            unknown = [f for f in model.feature_names if f not in known]
            if unknown:
                hint = (" (exported without feature names: re-export with --feature-names)"
                        if all(f.startswith("obs_") for f in unknown) else "")
                shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                raise ModelLoadError(f"feature names unknown to the technical core: {shown}{hint}")
            try:
                _smoke_run(model)
            except ModelLoadError:
                raise
            except Exception as exc:  # onnxruntime's own run-time errors
                raise ModelLoadError(f"running the model failed: {exc}") from exc
        except ModelLoadError as exc:
            failures.append({"name": json_path.stem, "reason": str(exc)})
    return {"passed": total - len(failures), "total": total, "failures": failures}

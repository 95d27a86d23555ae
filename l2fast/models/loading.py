"""Load exported agents (ONNX + manifest) and validate a folder of them.

Only the two files written by ``python -m l2fast.export`` are read: ``<name>.json`` (the
manifest, see :mod:`l2fast.models.manifest`) and ``<name>.onnx`` beside it. Nothing is unpickled
and neither torch nor stable-baselines3 is imported. The ONNX bytes are hashed and compared
with the manifest before onnxruntime sees them, and the session is built from those same
bytes, so a file swapped after the check is never run.

Signed models (optional): with the model key (:func:`l2fast.keys.load_key` with
``Purpose.MODEL``: a command's ``--model-key-file``, or ``$L2FAST_MODEL_KEY_FILE`` /
``$L2FAST_MODEL_KEY``) a member loads only when ``<name>.sig`` beside its manifest holds
:func:`model_signature` of the model's name and the manifest's exact bytes, checked
before the manifest is parsed. The manifest pins the ONNX file's SHA-256, so the tag
vouches for both files, and for their name (a signed model renamed into another's place
is refused). ``python -m l2fast.export --sign-key-file FILE`` writes the ``.sig`` at
export, ``python -m l2fast.export --sign DIR`` signs an exported folder. Without a key,
signatures are neither needed nor read (the shipped demo agents are unsigned).

Sessions are single-threaded (one intra- and one inter-op thread, sequential execution,
all graph optimisations): the engine runs many small models per bar, where thread hand-off
would cost more than the arithmetic.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from l2fast._files import FileTooLargeError, NotRegularFileError, UnreadableFileError, read_regular_file
from l2fast.config import L2Config
from l2fast.errors import ConfigError, InvalidInputError, ModelLoadError
from l2fast.keys import TAG_CHARS, Purpose, Signer, key_variables
from l2fast.models.manifest import INPUT_NAME, decode_bound, manifest_features, validate_manifest
from l2fast.models.observation import (
    ACCOUNT_FEATURES,
    name_timeframe,
    row_layout,
    split_lag,
    split_scaled,
    split_symbol,
    turbulence_timeframe,
)
from l2fast.technical.bars import parse_timeframe
from l2fast.technical.names import StockstatsFeature
from l2fast.technical.state import TechnicalConfig, feature_names, feature_warmups

__all__ = ["SIGNATURE_SUFFIX", "LoadedModel", "default_lookback", "float32_bounds", "load_model", "model_signature",
           "model_signer", "read_manifest", "session_options", "validate_models"]

SOURCE_SUFFIXES = (".pkl", ".zip")

MAX_MANIFEST_BYTES = 1 << 20
"""Largest manifest read (1 MiB): an export writes a few kB, so more is not a manifest."""

MAX_MANIFEST_DEPTH = 32
"""Deepest nesting of JSON arrays and objects a manifest may have (an export's is 3)."""

SIGNATURE_SUFFIX = ".sig"
"""Suffix of a model's detached signature, ``<name>.sig``: one line of 64 hex digits."""

# A tag and a newline (``\r\n`` too); a longer file is not one of ours.
_MAX_SIGNATURE_BYTES = TAG_CHARS + 2

_SIGNED_FORMAT = b"l2fast-model-signature-1\0"


def model_signer(signer: Signer | None) -> Signer | None:
    """``signer`` if it is the model key's (None passes).

    Raises:
        ConfigError: ``signer`` is not a :class:`~l2fast.keys.Signer` of purpose
            ``model``: another purpose's key must not vouch for models.
    """
    if signer is not None and (not isinstance(signer, Signer) or signer.purpose is not Purpose.MODEL):
        raise ConfigError(f"signer={signer!r}: models need the model key's signer "
                          "(l2fast.keys.load_key(Purpose.MODEL, file))")
    return signer


def model_signature(signer: Signer, name: str, manifest_bytes: bytes) -> str:
    """The signature of model ``name`` whose manifest file holds ``manifest_bytes``.

    The tag covers the name (the file stem) and the manifest's exact bytes, which pin the
    ONNX file's SHA-256 (``onnx_sha256``).
    """
    return signer.tag(_signed_message(name, manifest_bytes))


def _signed_message(name: str, manifest_bytes: bytes) -> bytes:
    return _SIGNED_FORMAT + name.encode("utf-8") + b"\0" + manifest_bytes


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


def float32_bounds(low: npt.ArrayLike, high: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds that keep a clipped float32 action inside the float64 ``[low, high]``.

    A bound float32 cannot hold exactly is rounded inward (``low`` up, ``high`` down), so
    ``low <= action <= high`` holds exactly for every action clipped to the result.
    Infinite bounds stay infinite.

    Raises:
        ValueError: No float32 value lies within ``[low, high]`` in some dimension.
    """
    lo = np.asarray(low, dtype=np.float64).reshape(-1)
    hi = np.asarray(high, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore"):  # a bound beyond float32's range becomes +-inf, then moves inward
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
    hi32 = np.where(hi32 > hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)
    empty = np.flatnonzero(lo32 > hi32)
    if empty.size:
        i = int(empty[0])
        raise ValueError(f"no float32 value lies within [{lo[i]!r}, {hi[i]!r}] (action dimension {i})")
    return lo32, hi32


def default_lookback(names: Sequence[str], technical: TechnicalConfig | None = None,
                     extras: Sequence[StockstatsFeature] = ()) -> int | None:
    """The warm-up of a manifest without ``lookback``: the largest its features need.

    Args:
        names: The model's feature names in the engine's input row
            (:attr:`LoadedModel.vector_names`; account features need no warm-up).
        technical: The technical config the names refer to (the defaults if None).
        extras: The stockstats features among them (:attr:`LoadedModel.extras`).

    Returns:
        The largest :func:`l2fast.technical.state.feature_warmups` value among ``names`` (1-minute
        bars), or None when a name is unknown to ``technical`` (such a model cannot run).
    """
    try:
        warmups = feature_warmups(technical if technical is not None else TechnicalConfig(), extras)
    except InvalidInputError:
        return None  # an extra on a timeframe ``technical`` lacks: the ensemble names it
    # The account state needs no warm-up, nor the turbulence index (0 until its window
    # fills, FinRL's value); a scaled feature, or another symbol's, has its base's.
    # A past value k bars back needs k more bars of its timeframe.
    warmups.update(dict.fromkeys(ACCOUNT_FEATURES, 0))
    lagged = [split_lag(split_symbol(split_scaled(n)[0])[0]) for n in names]
    warmups.update({b: 0 for b, _ in lagged if turbulence_timeframe(b) is not None})
    if not lagged or any(b not in warmups for b, _ in lagged):
        return None
    return max(warmups[b] + k * parse_timeframe(name_timeframe(b) or "1m") for b, k in lagged)


class LoadedModel:
    """An exported agent ready to run: raw feature vector in, action out.

    Attributes:
        name: Model name (the file stem).
        manifest: The parsed, validated manifest.
        onnx_path: Path of the ONNX file.
        feature_names: Ordered input feature names, as the manifest writes them.
        vector_names: The same features' names in the technical state's vector (the
            manifest's ``feature_namespace`` read by :func:`~l2fast.models.manifest.manifest_features`:
            ``ss:rsi_30_1h`` for a stockstats ``rsi_30`` on 1h, the name itself for l2fast's).
        extras: The stockstats features the model needs the technical state to compute.
        observation_size: Number of input features.
        discrete: True for a Discrete action space (``action`` is an int64 index).
        action_targets: Target position in [-1, 1] per discrete action (None for Box).
        action_bounds: float32 ``(low, high)`` of a Box action (None for Discrete); every
            Box action returned is clipped to them (see :func:`float32_bounds`).
        lookback: 1-minute bars the model needs before its first action (the manifest's,
            else :func:`default_lookback`; None when its features are unknown).
        output_names: ONNX output names, ``action`` first.
        session: The onnxruntime ``InferenceSession``.
    """

    __slots__ = ("name", "manifest", "onnx_path", "feature_names", "vector_names", "extras", "observation_size",
                 "discrete", "action_targets", "action_bounds", "lookback", "output_names", "session", "_row",
                 "_binding", "_action")

    def __init__(self, name: str, manifest: dict, onnx_path: Path, session: Any) -> None:
        import onnxruntime as ort

        self.name = name
        self.manifest = manifest
        self.onnx_path = onnx_path
        self.session = session
        self.feature_names = tuple(manifest["feature_names"])
        self.vector_names, self.extras = manifest_features(manifest)
        self.observation_size = int(manifest["observation_size"])
        self.discrete = manifest["action_space"]["type"] == "discrete"
        targets = manifest["action_targets"]
        self.action_targets = tuple(float(t) for t in targets) if targets is not None else None
        space = manifest["action_space"]
        self.action_bounds: tuple[np.ndarray, np.ndarray] | None = None
        if not self.discrete:
            self.action_bounds = float32_bounds([decode_bound(v) for v in space["low"]],
                                                [decode_bound(v) for v in space["high"]])
        self.lookback: int | None = manifest.get("lookback")
        self.output_names = tuple(manifest["outputs"])
        # Batch-1 fast path: the input row and the action output live in preallocated
        # buffers bound once, so a call copies n floats in and runs the graph, nothing else.
        self._row = np.zeros((1, self.observation_size), dtype=np.float32)
        if self.discrete:
            self._action = np.zeros((1,), dtype=np.int64)
        else:
            self._action = np.zeros((1, int(space["shape"][0])), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._row))
        binding.bind_ortvalue_output("action", ort.OrtValue.ortvalue_from_numpy(self._action))
        self._binding = binding

    def run(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch and return every output.

        Args:
            obs: Raw features, shape ``[N, observation_size]`` or ``[observation_size]``.

        Returns:
            ``{"action": ..., "probs"/"q_values": ...}`` with a leading batch axis; a Box
            action lies within :attr:`action_bounds`.
        """
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.observation_size:
            raise ValueError(f"{self.name}: obs must have shape [N, {self.observation_size}], got {np.shape(obs)}")
        out = dict(zip(self.output_names, self.session.run(None, {INPUT_NAME: x})))
        out["action"] = self._clip(out["action"])
        return out

    def _clip(self, action: np.ndarray) -> np.ndarray:
        # Graphs exported by l2fast clip already; one exported before they did (SB3's
        # unscaling can round a step past a bound) or written by hand may not.
        bounds = self.action_bounds
        return action if bounds is None else np.clip(action, *bounds)

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
            The action index (int) for a Discrete model, else a new float32 ``[d]`` array
            within :attr:`action_bounds`.
        """
        self._row[0] = features
        self.session.run_with_iobinding(self._binding)
        if self.discrete:
            return self._action.item()
        return self._clip(self._action[0])

    def target(self, features: np.ndarray) -> float:
        """Target position in [-1, 1] chosen by a Discrete model for one observation."""
        if self.action_targets is None:
            raise ValueError(f"{self.name}: a Box-action model has no discrete action targets")
        return self.action_targets[self.act(features)]

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, {self.manifest['algorithm']}, "
                f"{self.observation_size} features, outputs={list(self.output_names)})")


def _json_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays/objects in ``text`` nest deeper than ``limit``.

    A scan with a counter, not a parse, so no nesting depth can raise RecursionError;
    brackets inside strings do not count.
    """
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _read_signature(path: Path, owner: Path) -> bytes:
    """The bytes of the signature file ``path`` of the manifest ``owner`` (module docstring).

    Bounded and non-blocking (:func:`l2fast._files.read_regular_file`): a FIFO, a device
    such as /dev/zero or a huge file must not hang the loader or cost memory.
    """
    try:
        return read_regular_file(path, _MAX_SIGNATURE_BYTES, "signature")
    except FileTooLargeError:
        # Longer than a tag and a newline: not one of ours, so it does not verify.
        return b""
    except NotRegularFileError:
        raise ModelLoadError(f"signature {path.name} is not a regular file", owner) from None
    except UnreadableFileError as exc:
        raise ModelLoadError(f"cannot read signature: {exc.strerror}", owner) from exc


def _read_manifest_bytes(path: Path) -> bytes:
    try:
        return read_regular_file(path, MAX_MANIFEST_BYTES, "manifest")
    except NotRegularFileError as exc:
        if stat.S_ISDIR(exc.mode):
            # Said as the system says it when a folder is opened for reading.
            raise ModelLoadError(f"cannot read manifest: {os.strerror(errno.EISDIR)}", path) from None
        raise ModelLoadError(f"manifest {path.name} is not a regular file", path) from None
    except UnreadableFileError as exc:
        raise ModelLoadError(f"cannot read manifest: {exc.strerror}", path) from exc
    except FileTooLargeError:
        raise ModelLoadError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes; an export writes a few kB",
                             path) from None


def _parse_manifest(data: bytes, path: Path) -> dict:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"manifest is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                             "is it a binary file?", path) from exc
    if _json_depth_exceeds(text, MAX_MANIFEST_DEPTH):
        raise ModelLoadError(f"manifest nests arrays/objects deeper than {MAX_MANIFEST_DEPTH} levels", path)
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"manifest is not valid JSON: {exc}", path) from exc
    problems = validate_manifest(manifest)
    if problems:
        raise ModelLoadError(f"invalid manifest: {'; '.join(problems)}", path)
    return manifest


def read_manifest(path: str | Path) -> tuple[bytes, dict]:
    """The exact bytes and the parsed object of a manifest, with the loader's checks.

    Raises:
        ModelLoadError: The file resolves outside its folder, cannot be read, is larger
            than :data:`MAX_MANIFEST_BYTES`, nests deeper than :data:`MAX_MANIFEST_DEPTH`,
            is not UTF-8 JSON or fails the schema.
    """
    path = Path(path)
    _check_inside(path)
    data = _read_manifest_bytes(path)
    return data, _parse_manifest(data, path)


def _check_signature(json_path: Path, manifest_bytes: bytes, signer: Signer) -> None:
    """Refuse a manifest without a valid ``<name>.sig`` under ``signer`` (module docstring)."""
    sig_path = json_path.with_suffix(SIGNATURE_SUFFIX)
    file_variable, variable = key_variables(Purpose.MODEL)
    if not sig_path.exists() and not sig_path.is_symlink():
        raise ModelLoadError(f"not signed (no {sig_path.name} beside it) and a model key is configured "
                             f"({signer.source}): sign the folder with python -m l2fast.export --sign DIR "
                             f"--sign-key-file FILE, or load without the key (unset ${file_variable} / "
                             f"${variable})", json_path)
    _check_inside(sig_path)
    raw = _read_signature(sig_path, json_path)
    tag = raw.decode("latin-1").strip()
    if not signer.verify(_signed_message(json_path.stem, manifest_bytes), tag):
        raise ModelLoadError(f"signature mismatch ({sig_path.name}): the manifest was changed or renamed after "
                             f"signing, or signed with another model key than {signer.source}", json_path)


def _check_io(session: Any, manifest: dict, path: Path) -> None:
    """Compare the graph's inputs and outputs with what the manifest promises."""
    n = manifest["observation_size"]
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelLoadError(f"expected one input {INPUT_NAME!r}, found {[i.name for i in inputs]}", path)
    inp = inputs[0]
    if inp.type != "tensor(float)" or len(inp.shape) != 2 or inp.shape[1] != n or isinstance(inp.shape[0], int):
        raise ModelLoadError(f"input {INPUT_NAME!r} must be float [N, {n}] with a dynamic batch, "
                             f"found {inp.type} {inp.shape}", path)
    outputs = {o.name: o for o in session.get_outputs()}
    if list(outputs) != manifest["outputs"]:
        raise ModelLoadError(f"outputs {list(outputs)} differ from the manifest's {manifest['outputs']}", path)
    space = manifest["action_space"]
    if space["type"] == "discrete":
        want = {"action": ("tensor(int64)", 1, None)}
        want.update(dict.fromkeys(manifest["outputs"][1:], ("tensor(float)", 2, space["n"])))
    else:
        want = {"action": ("tensor(float)", 2, space["shape"][0])}
    for name, (dtype, rank, last) in want.items():
        out = outputs[name]
        if out.type != dtype or len(out.shape) != rank or (last is not None and out.shape[-1] != last):
            raise ModelLoadError(f"output {name!r} is {out.type} {out.shape}, expected {dtype} of rank {rank}"
                                 + (f" ending in {last}" if last else ""), path)


def _export_hint(path: Path) -> str:
    return f"export it with python -m l2fast.export {path} --out DIR"


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".onnx":
        return p.with_suffix(".json"), p
    if p.suffix == ".json":
        return p, p.with_suffix(".onnx")
    if p.suffix in SOURCE_SUFFIXES:
        raise ModelLoadError(f"a {p.suffix} source, not an exported model ({_export_hint(p)})", p)
    if p.is_dir():
        raise ModelLoadError("a folder, not <name>.json or <name>.onnx (FusedEnsemble.from_dir and "
                             "validate_models read folders)", p)
    raise ModelLoadError("not <name>.json or <name>.onnx, the files of an exported model", p)


def load_model(path: str | Path, *, technical: TechnicalConfig | None = None,
               signer: Signer | None = None) -> LoadedModel:
    """Load an exported model from its manifest (``<name>.json``) or ONNX file path.

    A manifest without ``lookback`` (or with null, as an export of a plain SB3 ``.zip``
    writes) gets :func:`default_lookback` of its feature names under ``technical``, written
    into :attr:`LoadedModel.manifest` and :attr:`LoadedModel.lookback`.

    Args:
        path: ``<name>.json`` or ``<name>.onnx``; the other file must sit beside it.
        technical: The technical config the feature names refer to (the defaults if None).
        signer: The model key's signer: the manifest must carry its signature
            (``<name>.sig``, module docstring). None: signatures are not read.

    Returns:
        The model, with a single-threaded onnxruntime session.

    Raises:
        ModelLoadError: Every failure, naming the file (``path`` attribute) and the reason:
            a path that is not a ``.json``/``.onnx`` file (a ``.pkl``/``.zip`` source, a
            folder), a missing or unreadable file, a manifest that is not UTF-8 JSON or
            fails the schema, ONNX SHA-256 differing from the manifest, ONNX that
            onnxruntime cannot load, or inputs/outputs that do not match; a ``.json``
            or ``.onnx`` that resolves (through a symlink) outside the model's folder; a
            manifest over :data:`MAX_MANIFEST_BYTES` or nested deeper than
            :data:`MAX_MANIFEST_DEPTH`; with ``signer``, a manifest that is not signed
            ("not signed") or whose signature does not verify ("signature mismatch").
        ConfigError: ``signer`` is another purpose's.
    """
    signer = model_signer(signer)
    json_path, onnx_path = _paths(path)
    try:
        return _load(json_path, onnx_path, technical, signer)
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(f"loading a model needs onnxruntime: {exc}", json_path) from exc
    except Exception as exc:  # the promise above holds for failures nobody anticipated too
        raise ModelLoadError(f"cannot load the model: {type(exc).__name__}: {exc}", json_path) from exc


def _check_inside(path: Path) -> None:
    """Refuse a model file that resolves (through symlinks) outside its models folder.

    Whoever may only add a symlink to the folder must not make the loader read, say,
    another user's files; a symlink to a file within the folder stays allowed.
    """
    folder = path.parent.resolve()
    target = path.resolve()
    if not target.is_relative_to(folder):
        raise ModelLoadError(f"resolves to {target}, outside the models folder {folder}", path)


def _load(json_path: Path, onnx_path: Path, technical: TechnicalConfig | None,
          signer: Signer | None) -> LoadedModel:
    import onnxruntime as ort

    _check_inside(json_path)
    _check_inside(onnx_path)
    manifest_bytes = _read_manifest_bytes(json_path)
    if signer is not None:
        _check_signature(json_path, manifest_bytes, signer)
    manifest = _parse_manifest(manifest_bytes, json_path)
    if manifest.get("lookback") is None:
        vector_names, extras = manifest_features(manifest)
        manifest["lookback"] = default_lookback(vector_names, technical, extras)
    try:
        data = onnx_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read ONNX file: {exc.strerror or exc}", onnx_path) from exc
    digest = sha256_bytes(data)
    if digest != manifest["onnx_sha256"]:
        raise ModelLoadError(f"SHA-256 {digest} does not match the manifest's {manifest['onnx_sha256']} "
                             "(file modified or replaced)", onnx_path)
    try:
        session = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelLoadError(f"onnxruntime cannot load the model: {exc}", onnx_path) from exc
    _check_io(session, manifest, onnx_path)
    try:
        return LoadedModel(json_path.stem, manifest, onnx_path, session)
    except ValueError as exc:  # Box bounds no float32 action can satisfy
        raise ModelLoadError(f"action_space: {exc}", json_path) from exc


def _smoke_run(model: LoadedModel) -> None:
    """Run two rows of zeros and check shapes, dtypes, finite outputs and the action range."""
    out = model.run(np.zeros((2, model.observation_size), dtype=np.float32))
    # NaN or inf among the graph's weights reaches its outputs (0 * inf is NaN too), while
    # ArgMax over NaN logits still returns a valid-looking index: check every float output.
    for name, value in out.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ModelLoadError(f"output {name!r} is not finite on a zero input ({value!r}): "
                                 "NaN or inf weights in the graph?")
    action = out["action"]
    space = model.manifest["action_space"]
    if model.discrete:
        if action.shape != (2,) or not np.all((action >= 0) & (action < space["n"])):
            raise ModelLoadError(f"action {action!r} is not an index in [0, {space['n']})")
    else:
        low = np.array([decode_bound(v) for v in space["low"]])
        high = np.array([decode_bound(v) for v in space["high"]])
        if action.shape != (2, len(low)) or not np.all((action >= low) & (action <= high)):
            raise ModelLoadError(f"action {action!r} is not within the action space bounds")


def _no_model(folder: Path) -> ModelLoadError:
    counts = {suffix: len(list(folder.glob(f"*{suffix}"))) for suffix in SOURCE_SUFFIXES}
    found = " and ".join(f"{n} {suffix}" for suffix, n in counts.items() if n)
    if not found:
        return ModelLoadError("no exported model (<name>.json + <name>.onnx)", folder)
    return ModelLoadError(f"no exported model (found {found} sources; export them with "
                          f"python -m l2fast.export {folder} --out DIR)", folder)


def _manifest_paths(path: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """The manifests to check under ``path``, and ONNX files without one (failures on their own)."""
    if path.is_dir():
        manifests = sorted(path.glob("*.json"))
        orphans = [{"name": p.stem, "reason": f"{p.name} has no manifest {p.stem}.json beside it"}
                   for p in sorted(path.glob("*.onnx")) if not p.with_suffix(".json").exists()]
        if not manifests and not orphans:
            raise _no_model(path)
        return manifests, orphans
    if not path.exists():
        raise ModelLoadError("no such file or directory", path)
    return [_paths(path)[0]], []


def validate_models(path: str | Path, *, technical: L2Config | TechnicalConfig | None = None,
                    signer: Signer | None = None) -> dict[str, Any]:
    """Check every exported model under ``path``.

    Each model must load (:func:`load_model`: manifest schema, ONNX SHA-256, onnxruntime,
    input/output names and shapes), run on a zero batch with finite outputs (NaN or inf
    weights fail), and use only feature names the
    technical core computes under ``technical`` (``obs_*`` placeholders from an export
    without names fail). An ONNX file without a manifest counts as one failed entry.

    Args:
        path: A folder of ``<name>.json`` + ``<name>.onnx`` pairs, or one of those files.
        technical: The config whose feature names the models may use: a whole
            :class:`~l2fast.config.L2Config` (e.g. ``L2Config.from_toml(file)``; its
            ``technical`` section is used) or a :class:`TechnicalConfig`; the defaults
            if None.
        signer: The model key's signer: an unsigned or mis-signed model fails (as
            :func:`load_model`). None: signatures are not read.

    Returns:
        ``{"passed": int, "total": int, "failures": [{"name": str, "reason": str}, ...]}``.

    Raises:
        ModelLoadError: ``path`` holds no exported model: it does not exist, is a folder
            without ``<name>.json``/``<name>.onnx`` (the message counts the ``.pkl``/``.zip``
            sources there and says how to export them), or is not such a file.
        ConfigError: ``technical`` is neither an ``L2Config``, a ``TechnicalConfig`` nor
            None, or ``signer`` is another purpose's.
    """
    signer = model_signer(signer)
    if isinstance(technical, L2Config):
        technical = technical.technical
    elif technical is not None and not isinstance(technical, TechnicalConfig):
        raise ConfigError(f"technical={technical!r}: expected an l2fast.config.L2Config or TechnicalConfig")
    manifests, failures = _manifest_paths(Path(path))
    total = len(manifests) + len(failures)
    for json_path in manifests:
        try:
            model = load_model(json_path, technical=technical, signer=signer)
            try:
                vector = feature_names(technical if technical is not None else TechnicalConfig(), model.extras)
                known = set(row_layout(vector, [model.vector_names]).names)
            except InvalidInputError as exc:  # a stockstats feature on a timeframe not configured
                raise ModelLoadError(str(exc)) from None
            unknown = [f for f, v in zip(model.feature_names, model.vector_names) if v not in known]
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

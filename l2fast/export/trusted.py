"""``--trust-pickle``: read a seed-format ``.pkl`` bundle whose model is a pickled SB3 object.

The safe path (:mod:`l2fast.export.sources`) refuses such a bundle, since a pickled
algorithm can only be rebuilt by running its pickle, and running a pickle runs whatever
code the file carries, with the user's rights. With the explicit opt-in the user vouches
for the file, and the pickle is run, but never in the exporting process (nor, ever, in the
runtime, which loads only ONNX + JSON):

1. A private temporary folder (mode 0700) is made, and a child process started: the same
   interpreter, isolated (``-I``: no ``PYTHON*`` variables, no user site, no current
   folder on the path), given the exporting process's module path, a small subset of the
   environment (no keys or tokens: :data:`CHILD_ENVIRONMENT`), the file and the folder,
   in its own session, with a timeout (:data:`DEFAULT_TIMEOUT`).
2. The child unpickles the bundle with the real :mod:`pickle` and writes what the safe
   path reads: the model re-saved with SB3's ``model.save`` as ``model.zip`` (zip bytes
   in the bundle are written as they are), and every other field as plain JSON in
   ``bundle.json``: the scaler as its class, ``get_params()`` and fitted arrays, a
   VecNormalize as its statistics, a space as the ``{"type": ...}`` dict of the bundle
   format, metadata as JSON values.
3. The parent reads those two files (size-bounded, JSON only: nothing it reads is a
   pickle), rebuilds the scaler from its parameters, and hands the bundle to the same
   validation, rebuild and parity check as any bundle; the manifest's ``source`` says
   ``"trust_pickle": true``.

A separate process keeps whatever the file's code does to the interpreter (patched
modules, threads, changed environment, open handles) out of the process that builds,
verifies and signs the export; it does not sandbox the file: the code runs with the
user's rights and can do anything the user can. Every failure of the child (a corrupt
pickle, a bundle without an SB3 model, a crash, the timeout) is an
:class:`~l2fast.errors.ExportError`; the temporary folder is removed in every case, and
the child's whole session is killed once it is done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from l2fast.errors import ExportError
from l2fast.export.safe_pickle import MAX_SOURCE_BYTES, read_bounded

__all__ = ["CHILD_ENVIRONMENT", "DEFAULT_TIMEOUT", "WARNING", "load_trusted_bundle"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
"""Seconds the child may take: importing torch and SB3 and re-saving a model takes seconds;
the margin is for a slow, busy machine."""
CHILD_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "SYSTEMROOT")
"""Variables the child inherits (the temporary folder is given as ``TMPDIR``). Model and
bus keys, tokens and everything else stay in the parent."""
WARNING = ("--trust-pickle: {path} is unpickled with the real pickle in a separate process: this runs "
           "any code the file carries, with your rights. Use it only on files you trust as you would a program.")
"""The warning logged (and printed by the command line) before a file is unpickled."""

_MODEL, _BUNDLE, _ERRORS = "model.zip", "bundle.json", "errors.txt"
_ERROR_MARK = "l2fast-trusted-error: "
_MAX_BUNDLE_JSON = 64 << 20
_MAX_ERROR_TAIL = 2_000
_SCALERS = ("StandardScaler", "MinMaxScaler", "RobustScaler")
_SCALER_MODULE = "sklearn.preprocessing._data"
# Fitted attributes of the three scalers (their transform reads a subset of these).
_SCALER_FITTED = ("mean_", "var_", "scale_", "min_", "data_min_", "data_max_", "data_range_", "center_",
                  "n_samples_seen_", "n_features_in_", "feature_names_in_")
_TUPLE_PARAMS = ("feature_range", "quantile_range")
# The child's entry: the parent's module path first, so it imports the l2fast (and SB3) the parent runs.
_CHILD_CODE = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
               "from l2fast.export.trusted import _child_main; sys.exit(_child_main(sys.argv[2:]))")


def load_trusted_bundle(path: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Unpickle the bundle at ``path`` in a child process; return it in the bundle format.

    Args:
        path: The ``.pkl`` bundle the user trusts.
        timeout: Seconds the child may run before it is killed.

    Returns:
        The bundle dict: ``model`` as SB3 zip bytes, ``scaler`` as a fitted sklearn
        scaler (rebuilt here from parameters) or None, ``vecnormalize`` as a statistics
        dict or None, the other fields as JSON values, for the usual validation.

    Raises:
        ExportError: The child failed (unreadable or corrupt pickle, no SB3 model in the
            bundle, a crash, the timeout), or wrote something unusable.
    """
    path = Path(path).absolute()
    logger.warning(WARNING.format(path=path))
    folder = Path(tempfile.mkdtemp(prefix="l2fast-trust-pickle-"))  # mkdtemp: mode 0700
    try:
        out = folder / "out"
        out.mkdir(mode=0o700)
        _run_child(path, out, folder, timeout)
        return _read_output(out, str(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child_command(path: Path, out: Path) -> list[str]:
    import l2fast

    root = str(Path(l2fast.__file__).resolve().parents[1])
    module_path = [root] + [p for p in sys.path if p and os.path.isabs(p) and p != root]
    return [sys.executable, "-I", "-c", _CHILD_CODE, json.dumps(module_path), str(path), str(out)]


def _run_child(path: Path, out: Path, folder: Path, timeout: float) -> None:
    env = {k: os.environ[k] for k in CHILD_ENVIRONMENT if k in os.environ}
    env["TMPDIR"] = str(folder)
    errors = folder / _ERRORS
    with open(errors, "wb") as err:
        try:
            proc = subprocess.Popen(_child_command(path, out), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    cwd=folder, env=env, start_new_session=True)
        except OSError as exc:
            raise ExportError(f"{path}: --trust-pickle could not start {sys.executable}: {exc}") from exc
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_session(proc.pid)
            proc.wait()
            raise ExportError(f"{path}: --trust-pickle: unpickling took more than {timeout:g} s; the process "
                              "was killed") from None
        finally:
            # Whatever the file's code left running in the child's session goes too.
            _kill_session(proc.pid)
    if code != 0:
        raise ExportError(f"{path}: --trust-pickle: {_child_failure(errors, code)}")


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child_failure(errors: Path, code: int) -> str:
    """The child's reason (its marked line), else how it ended and the tail of its output."""
    try:
        with open(errors, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - _MAX_ERROR_TAIL))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    marked = [line[len(_ERROR_MARK):] for line in text.splitlines() if line.startswith(_ERROR_MARK)]
    if marked:
        return marked[-1]
    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    tail = " ".join(text.split())[-500:]
    return f"the unpickling process {how} without a result" + (f": {tail}" if tail else "")


def _read_output(out: Path, source: str) -> dict:
    where = f"{source} (--trust-pickle)"
    try:
        bundle = json.loads(read_bounded(out / _BUNDLE, _MAX_BUNDLE_JSON))
    except ValueError as exc:
        raise ExportError(f"{where}: the unpickling process wrote unreadable JSON ({exc})") from exc
    if not isinstance(bundle, dict):
        raise ExportError(f"{where}: the unpickling process wrote no bundle")
    bundle["model"] = read_bounded(out / _MODEL, MAX_SOURCE_BYTES)
    bundle["scaler"] = _rebuild_scaler(bundle.get("scaler"), where)
    return bundle


def _rebuild_scaler(spec: object, source: str) -> Any:
    """A fitted sklearn scaler from the child's description (validated later like any bundle's)."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        raise ExportError(f"{source}: unusable scaler description {spec!r}")
    module, _, kind = spec["class"].rpartition(".")
    if module != _SCALER_MODULE or kind not in _SCALERS:
        raise ExportError(f"{source}: unsupported scaler {spec['class']}: "
                          "expected sklearn StandardScaler, MinMaxScaler or RobustScaler")
    from sklearn import preprocessing

    scaler = getattr(preprocessing, kind)()
    params, fitted = spec.get("params"), spec.get("fitted")
    if not isinstance(params, dict) or not isinstance(fitted, dict):
        raise ExportError(f"{source}: the {kind} description lacks its parameters or fitted values")
    unknown = sorted(set(params) - set(scaler.get_params()))
    if unknown or set(fitted) - set(_SCALER_FITTED):
        raise ExportError(f"{source}: the {kind} description has unknown fields "
                          f"{unknown + sorted(set(fitted) - set(_SCALER_FITTED))}")
    scaler.set_params(**{k: tuple(v) if k in _TUPLE_PARAMS and isinstance(v, list) else v
                         for k, v in params.items()})
    for name, value in fitted.items():
        if name == "feature_names_in_":
            value = np.asarray(value, dtype=object)
        elif isinstance(value, list):
            value = np.asarray(value, dtype=np.float64)
        setattr(scaler, name, value)
    return scaler


# --- the child ----------------------------------------------------------------------


class _Refused(Exception):
    """The bundle cannot be written in the bundle format; the message says why."""


def _child_main(argv: list[str]) -> int:
    """Unpickle ``argv[0]`` and write its model and fields into the folder ``argv[1]``."""
    try:
        _write_plain(Path(argv[0]), Path(argv[1]))
    except _Refused as exc:
        print(f"{_ERROR_MARK}{exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # the file's own code may raise anything
        detail = " ".join(str(exc).split())[:500]
        print(f"{_ERROR_MARK}unpickling failed: {type(exc).__name__}: {detail}", file=sys.stderr)
        return 3
    return 0


def _write_plain(source: Path, out: Path) -> None:
    import pickle

    with open(source, "rb") as fh:
        bundle = pickle.load(fh)  # the user vouched for this file (--trust-pickle)
    if not isinstance(bundle, dict):
        raise _Refused(f"a .pkl bundle must be a dict with 'model', 'scaler', 'feature_names', ...; "
                       f"got {type(bundle).__name__}")
    if "model" not in bundle:
        raise _Refused("the bundle has no 'model' entry")
    model = bundle["model"]
    if isinstance(model, (bytes, bytearray)):
        (out / _MODEL).write_bytes(bytes(model))
    else:
        from stable_baselines3.common.base_class import BaseAlgorithm

        if not isinstance(model, BaseAlgorithm):
            raise _Refused(f"bundle 'model' is a {type(model).__module__}.{type(model).__qualname__}, "
                           "not an SB3 algorithm (PPO, A2C, DQN, SAC, TD3, DDPG) or the bytes of its zip archive")
        model.save(out / _MODEL)
    plain = {str(k): _plain(v) for k, v in bundle.items() if k not in ("model", "scaler", "vecnormalize",
                                                                       "action_space")}
    plain["scaler"] = _scaler_description(bundle.get("scaler"))
    plain["vecnormalize"] = _vecnormalize_stats(bundle.get("vecnormalize"))
    plain["action_space"] = _space(bundle.get("action_space"))
    (out / _BUNDLE).write_text(json.dumps(plain), encoding="utf-8")


def _plain(value: Any) -> Any:
    """JSON values: numpy unwrapped, non-finite floats kept (JSON's NaN), other objects as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _scaler_description(scaler: Any) -> dict | None:
    if scaler is None:
        return None
    cls = type(scaler)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__ != _SCALER_MODULE or cls.__qualname__ not in _SCALERS:
        return {"class": name}  # refused by the parent, with the safe path's message
    fitted = {k: _plain(getattr(scaler, k)) for k in _SCALER_FITTED if getattr(scaler, k, None) is not None}
    return {"class": name, "params": _plain(scaler.get_params()), "fitted": fitted}


def _vecnormalize_stats(obj: Any) -> dict | None:
    if obj is None or isinstance(obj, dict):
        return _plain(obj)
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(obj, VecNormalize):
        raise _Refused(f"bundle 'vecnormalize' is a {type(obj).__name__}, expected a saved SB3 VecNormalize "
                       "or its statistics")
    if not obj.norm_obs:
        return None  # observations pass through unnormalised; only rewards were normalised
    if isinstance(obj.obs_rms, dict):
        raise _Refused("VecNormalize over Dict observations is not supported: only a flat Box")
    return {"obs_mean": _plain(obj.obs_rms.mean), "obs_var": _plain(obj.obs_rms.var),
            "clip_obs": float(obj.clip_obs), "epsilon": float(obj.epsilon)}


def _space(space: Any) -> Any:
    """The bundle format's action space: an int or dict as given, a space as its dict."""
    if space is None or isinstance(space, (int, dict, np.integer)):
        return _plain(space)
    kind = type(space).__name__
    if kind == "Discrete" and hasattr(space, "n"):
        if int(getattr(space, "start", 0)) != 0:
            raise _Refused(f"the bundle's action_space is Discrete starting at {space.start}: only 0 is supported")
        return {"type": "discrete", "n": int(space.n)}
    if kind == "Box" and hasattr(space, "low"):
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        # JSON's Infinity reads back as inf: an unbounded side stays unbounded.
        return {"type": "box", "low": low.reshape(-1).tolist(), "high": high.reshape(-1).tolist()}
    raise _Refused(f"the bundle's action_space {space!r} is neither an int, a dict nor a Discrete/Box space")


"""Export stable-baselines3 / FinRL agents to self-contained, verified ONNX models.

``export_model(source, out_dir)`` turns one source (an SB3 ``.zip``, a seed-format ``.pkl``
bundle, or an already loaded :class:`~l2fast.export.sources.LoadedAgent`) into
``<name>.onnx`` + ``<name>.json`` (the manifest, :mod:`l2fast.models.manifest`). The graph takes RAW
features and returns the action ``model.predict(obs, deterministic=True)`` would give after
the source's scaler and VecNormalize; the export aborts unless onnxruntime and SB3 agree on
``samples`` observations (:mod:`l2fast.export.parity`).

Writes are atomic: everything is computed in memory, staged in a temporary folder beside
``out_dir`` and renamed into place; on any failure nothing new is left in ``out_dir`` (and
files it replaced are restored). :func:`export_many` exports several sources or folders
all-or-nothing.

With the model key (``signer=``; the command line's ``--sign-key-file`` or
``$L2FAST_MODEL_KEY_FILE`` / ``$L2FAST_MODEL_KEY``) each model also gets ``<name>.sig``
(:mod:`l2fast.export.signing`), which a loader given the key requires; an export without
the key removes a ``<name>.sig`` left from an earlier export of that name (it would no
longer match).

Source files are read with the bounds of :mod:`l2fast.export.sources` (file size, each
archive member's declared size and compression ratio) and pickles with the allocation cap
of :mod:`l2fast.export.safe_pickle`, so a hostile file is refused before it costs memory.
A bundle whose model is a pickled SB3 object is refused unless the user trusts the file
(``trust_pickle=True``, ``--trust-pickle``): it is then unpickled in a separate,
short-lived process (:mod:`l2fast.export.trusted`), never in this one, and the manifest's
``source`` says ``"trust_pickle": true``.

An agent trained in FinRL's ``StockTradingEnv`` (``finrl=FinRLEnv(tickers=[...],
timeframe="1h")``, the command line's ``--finrl stocktrading``, or a bundle whose
``training_config["finrl"]`` holds the env's parameters) is exported with the env's
observation layout, cadence and action parameters in its manifest, after checking that the
agent's observation size and Box action fit the env (:mod:`l2fast.export.finrl`).

Needs the ``export`` extra (torch, stable-baselines3, gymnasium, onnx, scikit-learn,
tqdm); they are imported only when an export runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2fast.errors import ExportError
from l2fast.export.finrl import FinRLEnv, finrl_stocktrading_layout, resolve_finrl
from l2fast.export.graph import DEFAULT_OPSET
from l2fast.export.parity import DEFAULT_SAMPLES
from l2fast.export.signing import sign_models, signature_bytes
from l2fast.keys import Signer
from l2fast.models.loading import SIGNATURE_SUFFIX, model_signer
from l2fast.models.manifest import (
    SCHEMA_VERSION,
    default_action_targets,
    encode_bound,
    expected_outputs,
    validate_manifest,
)
from l2fast.technical.names import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from l2fast.export.sources import LoadedAgent, VecNormStats

__all__ = ["ExportReport", "FinRLEnv", "MissingFeatureNamesWarning", "export_many", "export_model",
           "finrl_stocktrading_layout", "sign_models"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MissingFeatureNamesWarning(UserWarning):
    """A model was exported with placeholder feature names ``obs_0..obs_{n-1}``."""


@dataclass
class ExportReport:
    """What one export wrote.

    Attributes:
        name: Model name (file stem of both outputs).
        onnx_path: The written ``<name>.onnx``.
        manifest_path: The written ``<name>.json``.
        parity: The manifest's parity object.
        seconds: Time to load, build and verify the model (library imports and writing
            excluded).
        signature_path: The written ``<name>.sig``, or None (exported without the key).
    """

    name: str
    onnx_path: Path
    manifest_path: Path
    parity: dict
    seconds: float
    signature_path: Path | None = None


@dataclass
class _Prepared:
    name: str
    onnx_bytes: bytes
    manifest_bytes: bytes
    parity: dict
    seconds: float


def _jsonable(value: Any) -> Any:
    """Bundle metadata as plain JSON (numpy scalars/arrays unwrapped, non-finite floats as text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import stable_baselines3
    import torch

    import l2fast

    return {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "l2fast": l2fast.__version__}


def _action_space(space: Any) -> dict:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    low = np.asarray(space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(space.high, dtype=np.float64).reshape(-1)
    return {"type": "box", "low": [encode_bound(v) for v in low], "high": [encode_bound(v) for v in high],
            "shape": [int(d) for d in space.shape]}


def _action_targets(space: dict, given: Sequence[float] | None, name: str) -> list[float] | None:
    if space["type"] != "discrete":
        if given is not None:
            raise ExportError(f"{name}: action_targets apply to discrete actions only")
        return None
    n = space["n"]
    if given is None:
        return default_action_targets(n)
    targets = [float(t) for t in given]
    if len(targets) != n or not all(-1.0 <= t <= 1.0 for t in targets):
        raise ExportError(f"{name}: action_targets must be {n} numbers in [-1, 1], got {list(given)!r}")
    return targets


def _resolve_agent(source: str | Path | LoadedAgent, feature_names: Sequence[str] | None,
                   vecnormalize: str | Path | VecNormStats | None, trust_pickle: bool) -> LoadedAgent:
    from l2fast.export.sources import LoadedAgent, load_source

    if not isinstance(source, LoadedAgent):
        return load_source(source, feature_names=feature_names, vecnormalize=vecnormalize,
                           trust_pickle=trust_pickle)
    if feature_names is not None:
        if len(feature_names) != source.observation_size:
            raise ExportError(f"{source.name}: {len(feature_names)} feature names given for "
                              f"{source.observation_size} observation features")
        source = dataclasses.replace(source, feature_names=list(feature_names))
    if vecnormalize is not None:
        raise ExportError("vecnormalize= applies to a source path; set LoadedAgent.vecnormalize instead")
    return source


@dataclass(frozen=True)
class _Layout:
    """How the manifest reads the observation: name space, timeframes and the FinRL env."""

    namespace: str = DEFAULT_NAMESPACE
    timeframe: str | None = None
    decision_timeframe: str | None = None
    finrl: dict | None = None


def _finrl_agent(agent: LoadedAgent, finrl: FinRLEnv | None, layout: _Layout,
                 names_given: bool) -> tuple[LoadedAgent, _Layout]:
    """The agent with FinRL's ``StockTradingEnv`` layout, when ``finrl`` or its bundle asks for it.

    ``finrl``'s fields override the bundle's ``training_config["finrl"]``, which overrides
    FinRL's defaults (:func:`~l2fast.export.finrl.resolve_finrl`).
    """
    from gymnasium import spaces

    bundle = (agent.training_config or {}).get("finrl")
    if finrl is None and bundle is None:
        return agent, layout
    where = str(agent.source_path)
    why = "finrl= (--finrl)" if finrl is not None else "the bundle's training_config['finrl']"
    if names_given or layout != _Layout():
        raise ExportError(f"{where}: {why} lays out the observation (feature names, name space, timeframe): "
                          "give no feature_names, feature_namespace or feature_timeframe with it")
    env = resolve_finrl(finrl, bundle, source=where)
    n, size = len(env.tickers or ()), env.state_space
    if agent.observation_size != size:
        raise ExportError(f"{where}: the agent observes {agent.observation_size} features but FinRL's "
                          f"StockTradingEnv with {n} ticker(s) and {len(env.indicators or ())} indicators has "
                          f"state_space 1 + 2*{n} + {len(env.indicators or ())}*{n} = {size}")
    space = agent.action_space
    if not isinstance(space, spaces.Box) or tuple(space.shape) != (n,):
        described = (f"Discrete({int(space.n)})" if isinstance(space, spaces.Discrete)
                     else f"Box of shape {tuple(space.shape)}")
        raise ExportError(f"{where}: the agent's action space is {described} but FinRL's StockTradingEnv with "
                          f"{n} ticker(s) acts with Box(-1, 1, ({n},)), one action per ticker")
    agent = dataclasses.replace(agent, feature_names=env.feature_names)
    return agent, _Layout("stockstats", env.timeframe, env.timeframe, env.manifest())


def _prepare(agent: LoadedAgent, *, opset: int, samples: int, name: str | None,
             action_targets: Sequence[float] | None, started: float, versions: dict[str, str],
             layout: _Layout) -> _Prepared:
    """Build, verify and describe one model in memory."""
    from l2fast.export.graph import build_graph
    from l2fast.export.parity import check_parity
    from l2fast.models.loading import sha256_bytes

    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", agent.name).lstrip("._-") or "model"
    elif not _SAFE_NAME.match(name):
        raise ExportError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (and start alphanumeric)")
    if not isinstance(samples, int) or samples < 1:
        raise ExportError(f"samples must be a positive integer, got {samples!r}")
    n = agent.observation_size
    names = list(agent.feature_names) if agent.feature_names is not None else None
    if names is None:
        names = [f"obs_{i}" for i in range(n)]
        warnings.warn(f"{name}: no feature names; exported as obs_0..obs_{n - 1}: the engine cannot use "
                      "this model until names are given (--feature-names)", MissingFeatureNamesWarning, stacklevel=3)
    elif len(names) != n:
        raise ExportError(f"{name}: {len(names)} feature names for {n} observation features")

    onnx_bytes = build_graph(agent, opset=opset).SerializeToString()
    parity = check_parity(agent, onnx_bytes, samples)
    if not parity.passed:
        raise ExportError(f"{name}: parity check failed, the ONNX graph disagrees with SB3 predict: "
                          f"{parity.describe()}")
    space = _action_space(agent.action_space)
    algorithm = agent.algorithm.upper()
    targets = action_targets if action_targets is not None else agent.action_targets
    source: dict[str, Any] = {"file": Path(agent.source_path).name, "sha256": agent.source_sha256,
                              "kind": agent.source_kind}
    if agent.trust_pickle:
        source["trust_pickle"] = True
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "algorithm": algorithm,
        "source": source,
        "onnx_sha256": sha256_bytes(onnx_bytes),
        "opset": opset,
        "feature_names": names,
        "observation_size": n,
        "action_space": space,
        "action_targets": _action_targets(space, targets, name),
        "outputs": expected_outputs(algorithm, space["type"]),
        "specialization": agent.specialization,
        "timeframes": list(agent.timeframes) if agent.timeframes is not None else None,
        "lookback": int(agent.lookback) if agent.lookback is not None else None,
        # Written only when set: a manifest of l2fast's own names stays as it was.
        **({"feature_namespace": layout.namespace} if layout.namespace != DEFAULT_NAMESPACE else {}),
        **({"feature_timeframe": layout.timeframe} if layout.timeframe is not None else {}),
        **({"decision_timeframe": layout.decision_timeframe} if layout.decision_timeframe is not None else {}),
        **({"finrl": layout.finrl} if layout.finrl is not None else {}),
        "performance_metrics": _jsonable(agent.performance_metrics or {}),
        "training_config": _jsonable(agent.training_config or {}),
        "versions": versions,
        "parity": parity.to_manifest(),
        "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    problems = validate_manifest(manifest)
    if problems:
        raise ExportError(f"{name}: the manifest would be invalid: {'; '.join(problems)}")
    text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    return _Prepared(name, onnx_bytes, text.encode("utf-8"), manifest["parity"], time.perf_counter() - started)


def _commit(out_dir: Path, prepared: Sequence[_Prepared], signer: Signer | None) -> list[ExportReport]:
    """Write every prepared model into ``out_dir`` atomically (all or nothing).

    With ``signer`` each model's ``.sig`` is written too; without, a stale one is removed.
    """

    out_dir = Path(out_dir).absolute()
    created_dir = not out_dir.exists()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output {out_dir} exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    placed: list[tuple[Path, Path | None]] = []  # (destination, backup of what it replaced)
    try:
        files: list[tuple[str, Path | None]] = []  # (file name, staged copy; None: remove it)
        for p in prepared:
            outputs: list[tuple[str, bytes | None]] = [(".onnx", p.onnx_bytes), (".json", p.manifest_bytes)]
            sig = signature_bytes(signer, p.name, p.manifest_bytes) if signer is not None else None
            outputs.append((SIGNATURE_SUFFIX, sig))
            for suffix, data in outputs:
                name = f"{p.name}{suffix}"
                if data is None:
                    files.append((name, None))
                    continue
                staged = staging / name
                with open(staged, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                files.append((name, staged))
        out_dir.mkdir(exist_ok=True)
        for name, staged_or_none in files:
            dest = out_dir / name
            backup = None
            if dest.exists():
                backup = staging / f"{name}.previous"
                shutil.copy2(dest, backup)
            elif staged_or_none is None:
                continue
            if staged_or_none is None:
                dest.unlink()
            else:
                os.replace(staged_or_none, dest)
            placed.append((dest, backup))
    except BaseException as exc:
        for dest, backup in reversed(placed):
            if backup is not None:
                os.replace(backup, dest)
            else:
                dest.unlink(missing_ok=True)
        if created_dir and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        if isinstance(exc, OSError):
            raise ExportError(f"writing into {out_dir} failed, nothing was written: {exc}") from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [ExportReport(p.name, out_dir / f"{p.name}.onnx", out_dir / f"{p.name}.json", p.parity, p.seconds,
                         out_dir / f"{p.name}{SIGNATURE_SUFFIX}" if signer is not None else None)
            for p in prepared]


def export_model(source: str | Path | LoadedAgent, out_dir: str | Path, *,
                 feature_names: Sequence[str] | None = None,
                 vecnormalize: str | Path | VecNormStats | None = None,
                 opset: int = DEFAULT_OPSET, samples: int = DEFAULT_SAMPLES, name: str | None = None,
                 action_targets: Sequence[float] | None = None, signer: Signer | None = None,
                 trust_pickle: bool = False, feature_namespace: str = DEFAULT_NAMESPACE,
                 feature_timeframe: str | None = None, finrl: FinRLEnv | None = None) -> ExportReport:
    """Export one agent to ``out_dir/<name>.onnx`` and ``out_dir/<name>.json``.

    Args:
        source: An SB3 ``.zip``, a seed-format ``.pkl`` bundle, or a ``LoadedAgent``.
        out_dir: Output folder (created if missing).
        feature_names: Ordered feature names, overriding the source's; without any the
            model is exported as ``obs_0..`` with a :class:`MissingFeatureNamesWarning`.
        vecnormalize: A saved SB3 ``VecNormalize`` file whose statistics are folded in.
        opset: ONNX opset (13 and up; default :data:`~l2fast.export.graph.DEFAULT_OPSET`).
        samples: Observations of the parity check.
        name: Output name; defaults to the source file stem.
        action_targets: Target position in [-1, 1] per discrete action; defaults to the
            bundle's, else evenly spaced from -1 to 1.
        signer: The model key's signer: ``<name>.sig`` is written too (module docstring).
        trust_pickle: The user trusts a ``.pkl`` source: it is unpickled with the real
            pickle in a separate process, which runs the file's code with the user's
            rights (:mod:`l2fast.export.trusted`), so its ``model`` may be a pickled SB3
            algorithm. Off, such a bundle is refused.
        feature_namespace: How the engine reads the feature names: ``"l2fast"`` (its own)
            or ``"stockstats"`` (FinRL's; :mod:`l2fast.technical.names`); written into the
            manifest when not ``"l2fast"``.
        feature_timeframe: The timeframe of stockstats names without a ``_<tf>`` suffix.
        finrl: The FinRL ``StockTradingEnv`` the agent was trained in
            (:class:`~l2fast.export.finrl.FinRLEnv`, e.g. ``FinRLEnv(tickers=["BTC/USDT"],
            timeframe="1h")``): the manifest gets its observation layout, cadence and action
            parameters (:mod:`l2fast.export.finrl`); fields left ``None`` come from the
            bundle's ``training_config["finrl"]``, else FinRL's defaults. A bundle carrying
            ``training_config["finrl"]`` is laid out so without it. Excludes
            ``feature_names``, ``feature_namespace`` and ``feature_timeframe``.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: Unreadable or unsupported source, bad feature names or scaler, failed
            parity, a FinRL env the agent does not fit (observation size, action space) or
            that is malformed, or a failed write (nothing is left in ``out_dir``).
        ConfigError: ``signer`` is another purpose's.
    """
    signer = model_signer(signer)
    versions = _versions()  # also imports torch & co. before the clock starts
    started = time.perf_counter()
    agent = _resolve_agent(source, feature_names, vecnormalize, trust_pickle)
    agent, layout = _finrl_agent(agent, finrl, _Layout(feature_namespace, feature_timeframe),
                                 feature_names is not None)
    prepared = _prepare(agent, opset=opset, samples=samples, name=name,
                        action_targets=action_targets, started=started, versions=versions, layout=layout)
    return _commit(Path(out_dir), [prepared], signer)[0]


def export_many(sources: str | Path | Iterable[str | Path], out_dir: str | Path, *,
                feature_names: Sequence[str] | None = None,
                vecnormalize: str | Path | None = None,
                opset: int = DEFAULT_OPSET, samples: int = DEFAULT_SAMPLES,
                progress: bool = True, signer: Signer | None = None,
                trust_pickle: bool = False, feature_namespace: str = DEFAULT_NAMESPACE,
                feature_timeframe: str | None = None, finrl: FinRLEnv | None = None) -> list[ExportReport]:
    """Export every ``.zip`` / ``.pkl`` source given or found in the given folders.

    All sources are built and verified first, then written together: if any fails, none
    is written. A progress bar (stderr) shows the sources as they are verified.

    Args:
        sources: Files and/or folders (a folder contributes its ``.zip`` and ``.pkl`` files).
        out_dir: Output folder.
        feature_names: Applied to every source (for one source, or sources sharing a layout).
        vecnormalize: Applied to every source.
        opset: ONNX opset.
        samples: Parity observations per model.
        progress: Show a tqdm progress bar.
        signer: The model key's signer: every model gets its ``<name>.sig``.
        trust_pickle: Every ``.pkl`` source is trusted (see :func:`export_model`).
        feature_namespace, feature_timeframe: Applied to every source (see :func:`export_model`).
        finrl: Applied to every source, each completed from its own bundle (see :func:`export_model`).

    Returns:
        One report per model, in source order.

    Raises:
        ExportError: No sources, duplicate output names, or any source failing (the
            message names it).
        ConfigError: ``signer`` is another purpose's.
    """
    signer = model_signer(signer)
    from tqdm import tqdm

    from l2fast.export.sources import iter_sources

    if isinstance(sources, (str, Path)):
        sources = [sources]
    paths = [p for s in sources for p in iter_sources(s)]
    if not paths:
        raise ExportError("no .zip or .pkl sources found")
    versions = _versions()
    prepared: list[_Prepared] = []
    seen: dict[str, Path] = {}
    for path in tqdm(paths, desc="export", unit="model", disable=not progress or len(paths) < 2):
        started = time.perf_counter()
        agent = _resolve_agent(path, feature_names, vecnormalize, trust_pickle)
        agent, layout = _finrl_agent(agent, finrl, _Layout(feature_namespace, feature_timeframe),
                                     feature_names is not None)
        p = _prepare(agent, opset=opset, samples=samples, name=None, action_targets=None, started=started,
                     versions=versions, layout=layout)
        if p.name in seen:
            raise ExportError(f"{path} and {seen[p.name]} would both be exported as {p.name!r}")
        seen[p.name] = Path(path)
        prepared.append(p)
    return _commit(Path(out_dir), prepared, signer)

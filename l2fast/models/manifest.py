"""The model manifest: the JSON file written beside every exported ``<name>.onnx``.

The manifest says what the ONNX graph is (algorithm, ordered feature names, action space,
what each discrete action means as a target position) and proves where it came from
(source file and ONNX SHA-256, library versions, the parity check that passed at export).
The runtime trusts an ONNX file only through its manifest: :func:`l2fast.models.loading.load_model`
refuses a model whose manifest fails :func:`validate_manifest` or whose ONNX bytes do not
hash to ``onnx_sha256``.

This module is runtime-side: it imports nothing beyond the standard library.

Example manifest (abridged)::

    {
      "schema_version": 1,
      "name": "trend_agent",
      "algorithm": "PPO",
      "source": {"file": "trend_agent.pkl", "sha256": "9f2c...", "kind": "pkl-bundle"},
      "onnx_sha256": "4b1a...",
      "opset": 17,
      "feature_names": ["ret_1_5m", "rsi_14_15m", "..."],
      "observation_size": 12,
      "action_space": {"type": "discrete", "n": 7},
      "action_targets": [-1.0, -0.6666666666666666, -0.3333333333333333, 0.0,
                         0.3333333333333333, 0.6666666666666666, 1.0],
      "outputs": ["action", "probs"],
      "specialization": "trend", "timeframes": ["5m", "15m", "1h"], "lookback": 1,
      "performance_metrics": {"sharpe": 0.8}, "training_config": {"total_timesteps": 200000},
      "versions": {"torch": "2.13.0", "stable_baselines3": "2.9.2", "onnx": "1.23.2",
                   "onnxruntime": "1.32.0", "l2fast": "0.1.0"},
      "parity": {"samples": 10000, "kind": "discrete", "discrete_agreement": 1.0,
                 "mismatches": 0, "passed": true},
      "exported_at": "2025-01-01T00:00:00Z"
    }

Box action bounds are numbers, or the strings ``"inf"`` / ``"-inf"`` for unbounded
dimensions (JSON has no infinity). The exported graph clips every Box action to them.

``feature_namespace`` (optional, default ``"l2fast"``) says how ``feature_names`` are read:
the technical state's own names, or ``"stockstats"``: the names FinRL gives stockstats'
indicators (``rsi_30_1h``, ``boll_ub``, ``close_30_sma``...), each with a timeframe suffix
or else ``feature_timeframe`` (optional, e.g. ``"1h"``); see :mod:`l2fast.technical.names`.

``feature_names`` may also name the account state of the member's symbol (``cash``,
``holdings``, ``position_fraction``, ``unrealized_pnl``), FinRL's turbulence index
(``turbulence_<tf>``), a past value (``<feature>[-k]``: k closed bars of its timeframe back)
and, in a multi-asset member, another symbol's value (``<feature>[-k]@<SYMBOL>``), in
either name space (:mod:`l2fast.models.observation`). ``feature_scales`` (optional) maps
feature names to a factor > 0 the engine multiplies them by (FinRL's 2^-12 cash and similar
conventions).

``decision_timeframe`` (optional, e.g. ``"1h"``; null or absent: every 1-minute bar) is the
member's cadence: it acts on the bar that closes a bar of that timeframe, and between two
decisions its last vote stands (:mod:`l2fast.engine`).

``finrl`` (optional) carries the FinRL environment the agent was trained in (``env``,
``tickers``, ``hmax``, ``buy_cost_pct``, ``sell_cost_pct``, ``initial_amount``, anything
else as written by ``python -m l2fast.export --finrl``); with it the member's Box action is
read with FinRL's action semantics (shares = ``int(action * hmax)``, sells capped by the
holdings, buys by the cash): the quantity it requests, which sizing and the risk gate may
only reduce.

``lookback`` (1-minute bars the model needs before its first action, at most
:data:`MAX_LOOKBACK`) may be null or absent, as in an export of a plain SB3 ``.zip``:
:func:`l2fast.models.loading.load_model` then sets it to the largest warm-up of the model's
feature names under the runtime's technical config (:func:`l2fast.technical.state.feature_warmups`).
"""

# No ``from __future__ import annotations``: TypedDict sees NotRequired only in evaluated
# annotations (Python 3.11 counts a string "NotRequired[...]" as required), and
# OPTIONAL_KEYS is read from Manifest.__optional_keys__.
import math
import re
from typing import Any, Literal, NotRequired, TypedDict

from l2fast.config import is_symbol
from l2fast.errors import InvalidInputError
from l2fast.models.observation import (
    ACCOUNT_FEATURES,
    SYMBOL_MARK,
    check_lags,
    check_scales,
    check_symbols,
    is_turbulence,
    member_symbols,
    scaled_name,
    split_lag,
    split_symbol,
    turbulence_name,
)
from l2fast.technical.bars import parse_timeframe
from l2fast.technical.names import DEFAULT_NAMESPACE, NAMESPACES, StockstatsFeature, resolve_features

SCHEMA_VERSION = 1
ALGORITHMS = ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG")
SOURCE_KINDS = ("sb3-zip", "pkl-bundle")
#: The FinRL environments whose action semantics the engine reproduces.
FINRL_ENVS = ("stocktrading",)
#: Largest ``finrl.hmax``: its float32 product with an action stays exact in whole shares.
MAX_HMAX = 2 ** 24
INPUT_NAME = "obs"

MAX_LOOKBACK = 14_400
"""Largest ``lookback`` a manifest may give: 10 days of 1-minute bars. The technical core's
default warm-ups stay far below it (959 bars for a 14-period 1h ATR); beyond it a model
would wait days before its first vote, which only a wrong or hostile manifest asks for."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SourceInfo(TypedDict):
    """Where the model came from.

    ``trust_pickle`` is present, true, when the bundle was unpickled with the real pickle in
    a separate process at export (``--trust-pickle``, :mod:`l2fast.export.trusted`).
    """

    file: str
    sha256: str
    kind: Literal["sb3-zip", "pkl-bundle"]
    trust_pickle: NotRequired[bool]


class DiscreteSpace(TypedDict):
    """``{"type": "discrete", "n": 7}``."""

    type: Literal["discrete"]
    n: int


class BoxSpace(TypedDict):
    """``{"type": "box", "low": [...], "high": [...], "shape": [d]}``."""

    type: Literal["box"]
    low: list[float | str]
    high: list[float | str]
    shape: list[int]


class ParityInfo(TypedDict, total=False):
    """The export-time comparison of onnxruntime against SB3 ``predict(deterministic=True)``."""

    samples: int
    in_distribution: int
    out_of_distribution: int
    kind: Literal["discrete", "box"]
    discrete_agreement: float
    mismatches: int
    max_abs_diff: float
    tolerance: float
    passed: bool


class Versions(TypedDict):
    """Library versions used by the export."""

    torch: str
    stable_baselines3: str
    onnx: str
    onnxruntime: str
    l2fast: str


class FinRLInfo(TypedDict):
    """The FinRL environment the agent was trained in (``training_config["finrl"]`` of a bundle).

    ``buy_cost_pct`` and ``sell_cost_pct`` give one fraction per ticker; more keys (the
    indicators, ``reward_scaling``, ``turbulence_threshold``...) may ride along.
    """

    env: Literal["stocktrading"]
    tickers: list[str]
    hmax: int
    buy_cost_pct: list[float]
    sell_cost_pct: list[float]
    initial_amount: float


class Manifest(TypedDict):
    """The full manifest; see the module docstring for an example."""

    schema_version: int
    name: str
    algorithm: str
    source: SourceInfo
    onnx_sha256: str
    opset: int
    feature_names: list[str]
    observation_size: int
    action_space: DiscreteSpace | BoxSpace
    action_targets: list[float] | None
    outputs: list[str]
    specialization: str | None
    timeframes: list[str] | None
    lookback: NotRequired[int | None]
    feature_namespace: NotRequired[str]
    feature_timeframe: NotRequired[str | None]
    feature_scales: NotRequired[dict[str, float]]
    decision_timeframe: NotRequired[str | None]
    finrl: NotRequired[FinRLInfo]
    performance_metrics: dict[str, Any]
    training_config: dict[str, Any]
    versions: Versions
    parity: ParityInfo
    exported_at: str


OPTIONAL_KEYS = tuple(k for k in Manifest.__annotations__ if k in Manifest.__optional_keys__)
"""Keys a manifest may omit (``NotRequired`` in :class:`Manifest`): a missing ``lookback``
is null, for which the loader computes a default (:func:`l2fast.models.loading.default_lookback`)."""
REQUIRED_KEYS = tuple(k for k in Manifest.__annotations__ if k not in OPTIONAL_KEYS)


def default_action_targets(n: int) -> list[float]:
    """Target positions in [-1, 1] for ``n`` discrete actions, evenly spaced from short to long.

    For ``n = 7``: ``-1, -2/3, -1/3, 0, 1/3, 2/3, 1``. Each value is one correctly rounded
    division, so ``-2/3`` is exactly the float ``-2/3``. A single action maps to ``0``.

    Raises:
        ValueError: ``n`` is not a positive integer.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n == 1:
        return [0.0]
    return [(2 * i - (n - 1)) / (n - 1) for i in range(n)]


DEFAULT_ACTION_TARGETS = default_action_targets
"""Alias of :func:`default_action_targets` (``DEFAULT_ACTION_TARGETS(7)``)."""


def expected_outputs(algorithm: str, action_type: str) -> list[str]:
    """The ONNX output names an export of ``algorithm`` with this action type carries, in order."""
    if action_type == "discrete":
        return ["action", "q_values" if algorithm == "DQN" else "probs"]
    return ["action"]


def encode_bound(value: float) -> float | str:
    """A Box bound as JSON: a finite number, or ``"inf"`` / ``"-inf"``."""
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def decode_bound(value: float | str) -> float:
    """Inverse of :func:`encode_bound` (``float`` parses ``"inf"`` and ``"-inf"``)."""
    return float(value)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _check_action_space(space: object, problems: list[str]) -> str | None:
    if not isinstance(space, dict):
        problems.append("action_space must be an object")
        return None
    kind = space.get("type")
    if kind == "discrete":
        if not (_is_int(space.get("n")) and space["n"] >= 1):
            problems.append(f"action_space.n must be a positive integer, got {space.get('n')!r}")
        return kind
    if kind == "box":
        shape = space.get("shape")
        if not (isinstance(shape, list) and len(shape) == 1 and _is_int(shape[0]) and shape[0] >= 1):
            problems.append(f"action_space.shape must be [d] with d >= 1, got {shape!r}")
            return kind
        bounds = {}
        for key in ("low", "high"):
            vals = space.get(key)
            if not (isinstance(vals, list) and len(vals) == shape[0]
                    and all(_is_num(v) or v in ("inf", "-inf") for v in vals)):
                problems.append(f"action_space.{key} must be {shape[0]} numbers (or \"inf\"/\"-inf\")")
            else:
                bounds[key] = [decode_bound(v) for v in vals]
        if len(bounds) == 2 and any(lo > hi for lo, hi in zip(bounds["low"], bounds["high"])):
            problems.append("action_space.low exceeds action_space.high")
        return kind
    problems.append(f"action_space.type must be \"discrete\" or \"box\", got {kind!r}")
    return None


def manifest_features(manifest: dict) -> tuple[tuple[str, ...], tuple[StockstatsFeature, ...]]:
    """A valid manifest's features as the technical state's names, and the extras they need.

    :func:`~l2fast.technical.names.resolve_features` of its ``feature_names`` in its
    ``feature_namespace`` (default l2fast's own) and ``feature_timeframe``.
    """
    names = manifest["feature_names"]
    timeframe = manifest.get("feature_timeframe")
    parts = [(*split_lag(lagged), symbol) for lagged, symbol in map(split_symbol, names)]
    vector = {base: row for base, _, _ in parts if (row := turbulence_name(base, timeframe)) is not None}
    technical = list(dict.fromkeys(base for base, _, _ in parts if base not in ACCOUNT_FEATURES and base not in vector))
    resolved, extras = resolve_features(technical, manifest.get("feature_namespace", DEFAULT_NAMESPACE), timeframe)
    vector.update(zip(technical, resolved))
    scales = manifest.get("feature_scales") or {}
    out = []
    for name, (base, k, symbol) in zip(names, parts):
        row = vector.get(base, base) + (f"[-{k}]" if k else "")
        out.append(scaled_name(row if symbol is None else f"{row}{SYMBOL_MARK}{symbol}", scales.get(name, 1.0)))
    return tuple(out), extras


def _check_finrl(info: object, kind: str | None, m: dict, problems: list[str]) -> None:
    """Problems of a manifest's ``finrl`` block (FinRL's action semantics need a Box action)."""
    if not isinstance(info, dict):
        problems.append("finrl must be an object")
        return
    if info.get("env") not in FINRL_ENVS:
        problems.append(f"finrl.env must be one of {', '.join(FINRL_ENVS)}, got {info.get('env')!r}")
    tickers = info.get("tickers")
    if not (isinstance(tickers, list) and tickers and all(isinstance(t, str) and is_symbol(t) for t in tickers)
            and len(set(tickers)) == len(tickers)):
        problems.append(f"finrl.tickers must be a non-empty list of distinct symbols like 'BTC/USDT', got {tickers!r}")
        tickers = None
    elif len(tickers) > 1 and not member_symbols(m):
        problems.append(f"finrl: {len(tickers)} tickers, but no feature names its symbol: a multi-asset member "
                        f"writes <feature>@<SYMBOL> (close@{tickers[0]}, ...)")
    hmax = info.get("hmax")
    if not (isinstance(hmax, int) and _is_int(hmax) and 1 <= hmax <= MAX_HMAX):
        problems.append(f"finrl.hmax must be an integer in [1, {MAX_HMAX}], got {hmax!r}")
    for key in ("buy_cost_pct", "sell_cost_pct"):
        costs = info.get(key)
        if not (isinstance(costs, list) and all(_is_num(c) and 0.0 <= c < 1.0 for c in costs)
                and (tickers is None or len(costs) == len(tickers))):
            problems.append(f"finrl.{key} must give one fraction in [0, 1) per ticker, got {costs!r}")
    amount = info.get("initial_amount")
    if not (isinstance(amount, (int, float)) and _is_num(amount) and amount > 0):
        problems.append(f"finrl.initial_amount must be a number > 0, got {amount!r}")
    if kind is not None and kind != "box":
        problems.append("finrl needs a box action space (one action per ticker)")
    elif kind == "box" and tickers is not None and m["action_space"].get("shape") != [len(tickers)]:
        problems.append(f"finrl: action_space.shape must be [{len(tickers)}] (one action per ticker), "
                        f"got {m['action_space'].get('shape')!r}")


def validate_manifest(manifest: object) -> list[str]:
    """Check a parsed manifest against the schema.

    Args:
        manifest: The object read from ``<name>.json``.

    Returns:
        One human-readable line per problem; empty when the manifest is valid.
    """
    if not isinstance(manifest, dict):
        return [f"manifest must be a JSON object, got {type(manifest).__name__}"]
    problems: list[str] = []
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    m = manifest
    if "schema_version" in m and m["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {m['schema_version']!r} is not supported (expected {SCHEMA_VERSION})")
    if "name" in m and not (isinstance(m["name"], str) and _NAME.match(m["name"])):
        problems.append(f"name must be a file-name-safe string, got {m['name']!r}")
    algorithm = m.get("algorithm")
    if "algorithm" in m and algorithm not in ALGORITHMS:
        problems.append(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if "source" in m:
        src = m["source"]
        if not (isinstance(src, dict) and isinstance(src.get("file"), str)
                and isinstance(src.get("sha256"), str) and _SHA256.match(src["sha256"])
                and src.get("kind") in SOURCE_KINDS and src.get("trust_pickle", True) is True):
            problems.append("source must be {file: str, sha256: 64 lowercase hex, kind: sb3-zip|pkl-bundle} "
                            "(and trust_pickle: true, if present)")
    if "onnx_sha256" in m and not (isinstance(m["onnx_sha256"], str) and _SHA256.match(m["onnx_sha256"])):
        problems.append("onnx_sha256 must be 64 lowercase hex digits")
    if "opset" in m and not (_is_int(m["opset"]) and m["opset"] >= 13):
        problems.append(f"opset must be an integer >= 13, got {m['opset']!r}")

    names = m.get("feature_names")
    if "feature_names" in m:
        if not (isinstance(names, list) and names and all(isinstance(s, str) and s for s in names)):
            problems.append("feature_names must be a non-empty list of non-empty strings")
            names = None
        elif len(set(names)) != len(names):
            dups = sorted({s for s in names if names.count(s) > 1})
            problems.append(f"feature_names has duplicates: {', '.join(dups)}")
    if "observation_size" in m:
        size = m["observation_size"]
        if not (_is_int(size) and size >= 1):
            problems.append(f"observation_size must be a positive integer, got {size!r}")
        elif isinstance(names, list) and len(names) != size:
            problems.append(f"observation_size is {size} but there are {len(names)} feature_names")

    kind = _check_action_space(m["action_space"], problems) if "action_space" in m else None
    if "action_targets" in m:
        targets = m["action_targets"]
        if kind == "discrete":
            n = m["action_space"].get("n")
            if not (isinstance(targets, list) and all(_is_num(t) and -1.0 <= t <= 1.0 for t in targets)):
                problems.append("action_targets must be a list of numbers in [-1, 1]")
            elif _is_int(n) and len(targets) != n:
                problems.append(f"action_targets has {len(targets)} values for {n} discrete actions")
        elif kind == "box" and targets is not None:
            problems.append("action_targets must be null for a box action space")
    if "outputs" in m and kind is not None and algorithm in ALGORITHMS:
        want = expected_outputs(algorithm, kind)
        if m["outputs"] != want:
            problems.append(f"outputs must be {want} for {algorithm} with {kind} actions, got {m['outputs']!r}")

    if m.get("specialization") is not None and not isinstance(m["specialization"], str):
        problems.append("specialization must be a string or null")
    tfs = m.get("timeframes")
    if tfs is not None and not (isinstance(tfs, list) and all(isinstance(t, str) and t for t in tfs)):
        problems.append("timeframes must be a list of strings or null")
    namespace = m.get("feature_namespace", DEFAULT_NAMESPACE)
    timeframe = m.get("feature_timeframe")
    if namespace not in NAMESPACES:
        problems.append(f"feature_namespace must be one of {', '.join(NAMESPACES)}, got {namespace!r}")
    elif timeframe is not None and not isinstance(timeframe, str):
        problems.append(f"feature_timeframe must be a timeframe string such as '1h' or null, got {timeframe!r}")
    elif isinstance(names, list) and all(isinstance(n, str) for n in names):
        try:
            bases = dict.fromkeys(split_lag(split_symbol(n)[0])[0] for n in names)
            resolve_features([n for n in bases if n not in ACCOUNT_FEATURES and not is_turbulence(n)],
                             namespace, timeframe)
        except InvalidInputError as exc:
            problems.append(str(exc))
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        problems.extend(check_lags(names))
        problems.extend(check_symbols(m))
    if "feature_scales" in m and isinstance(names, list):
        problems.extend(check_scales(m["feature_scales"], names))
    decision_tf = m.get("decision_timeframe")
    if decision_tf is not None:
        try:
            if not isinstance(decision_tf, str):
                raise TypeError
            parse_timeframe(decision_tf)
        except (TypeError, ValueError, InvalidInputError):
            problems.append(f"decision_timeframe must be a timeframe string such as '1h' or null, got {decision_tf!r}")
    if "finrl" in m:
        _check_finrl(m["finrl"], kind, m, problems)
    lookback = m.get("lookback")
    if lookback is not None and not (_is_int(lookback) and 1 <= lookback <= MAX_LOOKBACK):
        problems.append(f"lookback must be an integer in [1, {MAX_LOOKBACK}] (1-minute bars) or null, "
                        f"got {lookback!r}")
    for key in ("performance_metrics", "training_config"):
        if key in m and not isinstance(m[key], dict):
            problems.append(f"{key} must be an object")
    if "versions" in m:
        v = m["versions"]
        if not (isinstance(v, dict) and all(isinstance(v.get(k), str) for k in Versions.__annotations__)):
            problems.append(f"versions must give {', '.join(Versions.__annotations__)} as strings")
    if "parity" in m:
        p = m["parity"]
        if not isinstance(p, dict) or not _is_int(p.get("samples")) or not isinstance(p.get("passed"), bool):
            problems.append("parity must be an object with samples (int) and passed (bool)")
        elif not p["passed"]:
            problems.append("parity.passed is false: the ONNX graph disagrees with the source model")
        elif "discrete_agreement" not in p and "max_abs_diff" not in p:
            problems.append("parity must report discrete_agreement or max_abs_diff")
    if "exported_at" in m and not isinstance(m["exported_at"], str):
        problems.append("exported_at must be an ISO 8601 UTC string")
    return problems

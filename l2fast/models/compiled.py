"""Plain-MLP members run by the compiled forward, each checked against onnxruntime at load.

A member whose graph :func:`l2fast.models.stacking.mlp_chain` recognises (what the
exporter writes for SB3's MLP policies: the scaler's Cast/Sub/Div/Cast, Gemm layers with
Tanh/ReLU/Sigmoid, a categorical, DQN or float32 Box head) gets a plan for
:class:`l2fast.models._mlp.MlpForward` built from that same reading of its initializers.
Before it is used, the plan runs alone on :data:`CHECK_ROWS` observations generated
deterministically from the graph's own feature statistics (the scaler's centre and
spread, 75 % within the training distribution and 25 % four spreads wide, as the export's
parity check draws them) and is compared with the member's onnxruntime session:

- discrete actions equal (a disagreement with the batched run is re-checked on a batch of
  one, the engine's call, as the export's parity check does), ties to the first maximum;
- probabilities within :data:`SCORE_TOLERANCE` absolute (Q-values: relative to
  ``max(1, |q|)``);
- Box actions within the export's rule (:data:`l2fast.export.parity.BOX_TOLERANCE`).

A member that is not a plain MLP, or fails the check, stays on onnxruntime; its
:class:`MemberPath` says why, and the reason is logged at WARNING.

The level (``baseline``, ``avx2``, ``avx512``) is the widest this CPU runs, unless
``$L2FAST_MLP_LEVEL`` names a lower one (read when the ensemble loads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2fast.errors import ConfigError
from l2fast.models._mlp import LEVELS, MlpForward, MlpHead, MlpPrefixOp, best_level
from l2fast.models.stacking import MlpChain

__all__ = ["CHECK_ROWS", "LEVEL_VARIABLE", "SCORE_TOLERANCE", "MemberPath", "MemberPlan", "check_rows",
           "compile_members", "level_from_env", "plan_for"]

logger = logging.getLogger("l2fast.models")

LEVEL_VARIABLE = "L2FAST_MLP_LEVEL"
CHECK_ROWS = 4096
"""Observations each compiled member is checked on at load."""
SCORE_TOLERANCE = 1e-5
BOX_TOLERANCE = 1e-5  # l2fast.export.parity.BOX_TOLERANCE (not imported: the export stage is optional)
_OUT_OF_DISTRIBUTION_SHARE = 0.25
_OUT_OF_DISTRIBUTION_SPREADS = 4.0
_ONNX_DOUBLE, _ONNX_FLOAT = 11, 1
_NOT_PLAIN = ("not a plain MLP (the exporter's scaler, Gemm layers with Tanh/ReLU/Sigmoid, and its categorical, "
              "DQN or float32 Box head)")
_PREFIX_OPS = {op: int(MlpPrefixOp[f"PRE_{op.upper()}"]) for op in ("Sub", "Div", "Mul", "Add")}
_ROUND_F32 = int(MlpPrefixOp["PRE_ROUND_F32"])
_HEADS = {head: int(MlpHead[f"HEAD_{head.upper()}"]) for head in ("categorical", "argmax", "box")}


@dataclass
class MemberPlan:
    """One member as :class:`~l2fast.models._mlp.MlpForward` takes it (see its docstring)."""

    columns: np.ndarray
    prefix: tuple[tuple[int, np.ndarray | None], ...]
    layers: tuple[tuple[np.ndarray, np.ndarray, str], ...]
    head: int
    unscale: tuple[Any, ...] | None
    clips: tuple[tuple[np.ndarray, np.ndarray], ...]
    action: np.ndarray
    scores: np.ndarray | None


@dataclass(frozen=True)
class MemberPath:
    """Which path a member's inference takes, and why.

    Attributes:
        name: The member.
        path: ``"compiled"`` (its plan passed the load-time check) or ``"onnxruntime"``.
        reason: Why it stays on onnxruntime (None when compiled).
        rows: Observations it was checked on (0 when not a plain MLP).
        max_score_diff: Largest |compiled - onnxruntime| of its probabilities or Q-values
            (Box: of its action) over those rows.
    """

    name: str
    path: str
    reason: str | None = None
    rows: int = 0
    max_score_diff: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as :meth:`TacticalSignalGenerator.metrics` reports them."""
        return {"path": self.path, "reason": self.reason, "rows": self.rows, "max_score_diff": self.max_score_diff}


def level_from_env() -> str:
    """The compiled forward's level: ``$L2FAST_MLP_LEVEL`` if set, else the CPU's widest.

    Raises:
        ConfigError: The variable names no level, or one this CPU does not run.
    """
    wanted = os.environ.get(LEVEL_VARIABLE, "").strip()
    if not wanted:
        return best_level()
    if wanted not in LEVELS or LEVELS.index(wanted) > LEVELS.index(best_level()):
        raise ConfigError(f"${LEVEL_VARIABLE}={wanted!r}: expected one of "
                          f"{LEVELS[:LEVELS.index(best_level()) + 1]} on this CPU")
    return wanted


def plan_for(chain: MlpChain, columns: np.ndarray, action: np.ndarray, scores: np.ndarray | None,
             bounds: tuple[np.ndarray, np.ndarray] | None = None) -> MemberPlan | str:
    """The plan of a recognised member writing into ``action``/``scores``, or why there is none.

    Args:
        chain: The member's graph read by :func:`~l2fast.models.stacking.mlp_chain`.
        columns: Its columns of the shared row.
        action: Its action output (int64 ``[1]`` or float32 ``[1, d]``).
        scores: Its probabilities or Q-values output (float32 ``[1, n]``), None for Box.
        bounds: A Box member's float32 bounds, clipped to after the graph's own clip (as
            the fused graph and :class:`~l2fast.models.loading.LoadedModel` do).
    """
    prefix: list[tuple[int, np.ndarray | None]] = []
    dtype: type[np.floating[Any]] = np.float32
    for op, arg in chain.prefix:
        if op == "Cast":
            if arg not in (_ONNX_DOUBLE, _ONNX_FLOAT):
                return f"a Cast to ONNX type {arg} in the preprocessing"
            if arg == _ONNX_FLOAT and dtype != np.float32:
                prefix.append((_ROUND_F32, None))
            dtype = np.float64 if arg == _ONNX_DOUBLE else np.float32
            continue
        if arg.dtype != dtype:
            return f"a {op} of {arg.dtype} on {np.dtype(dtype)} in the preprocessing"
        prefix.append((_PREFIX_OPS[op], arg.astype(np.float64)))
        if dtype == np.float32:
            # A float32 step: computed in float64 from float32 operands, then rounded, is the
            # correctly rounded float32 result.
            prefix.append((_ROUND_F32, None))
    if dtype != np.float32:
        return "the preprocessing does not end in float32"
    layers = tuple((w, b, act or "Identity") for w, b, act in chain.layers)
    clips = chain.clips + ((bounds,) if chain.head == "box" and bounds is not None else ())
    return MemberPlan(np.asarray(columns, dtype=np.int64), tuple(prefix), layers, _HEADS[chain.head],
                      chain.unscale, clips, action, scores)


def check_rows(chain: MlpChain, n: int = CHECK_ROWS, seed: int = 14) -> np.ndarray:
    """``n`` raw float32 observations for ``chain``'s member, from its scaler's statistics.

    The centre and spread of each feature are read off the preprocessing (Sub: centre,
    Div: spread, Mul: 1/spread, Add after Mul: the MinMaxScaler's offset); without a
    scaler they are 0 and 1. The first row is all zeros; 75 % of the others are within
    the distribution, 25 % four spreads wide (deterministic: ``seed``).
    """
    n_in = chain.layers[0][0].shape[1]
    centre, spread = np.zeros(n_in), np.ones(n_in)
    for op, arg in chain.prefix:
        if op == "Sub":
            centre = np.asarray(arg, dtype=np.float64)
        elif op == "Div":
            spread = np.abs(np.asarray(arg, dtype=np.float64))
        elif op == "Mul":
            spread = 1.0 / np.maximum(np.abs(np.asarray(arg, dtype=np.float64)), 1e-300)
        elif op == "Add":
            centre = -np.asarray(arg, dtype=np.float64) * spread
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, n_in))
    wide = rng.random(n) < _OUT_OF_DISTRIBUTION_SHARE
    z[wide] *= _OUT_OF_DISTRIBUTION_SPREADS
    rows = (centre + spread * z).astype(np.float32)
    rows[0] = 0.0
    return rows


def _network_input(chain: MlpChain, rows: np.ndarray) -> np.ndarray:
    """The layers' input for ``rows`` (float64 sketch of the preprocessing: for the Box tolerance)."""
    x = rows.astype(np.float64)
    for op, arg in chain.prefix:
        if op == "Sub":
            x = x - arg
        elif op == "Div":
            x = x / arg
        elif op == "Mul":
            x = x * arg
        elif op == "Add":
            x = x + arg
    return x


def _check(model: Any, chain: MlpChain, level: str, rows: np.ndarray) -> tuple[str | None, float]:
    """Run ``chain``'s plan alone on ``rows`` and compare with ``model``'s onnxruntime session."""
    n_in = rows.shape[1]
    row = np.zeros((1, n_in), dtype=np.float32)
    box = chain.head == "box"
    action = np.zeros((1, chain.n_actions), np.float32) if box else np.zeros(1, np.int64)
    scores = None if box else np.zeros((1, chain.n_actions), np.float32)
    plan = plan_for(chain, np.arange(n_in), action, scores, model.action_bounds)
    if isinstance(plan, str):
        return plan, 0.0
    forward = MlpForward(row, [plan], level)
    ours_action = np.zeros((len(rows), chain.n_actions) if box else len(rows), action.dtype)
    ours_scores = None if box else np.zeros((len(rows), chain.n_actions), np.float32)
    for k in range(len(rows)):
        row[0] = rows[k]
        forward()
        ours_action[k] = action[0]
        if ours_scores is not None and scores is not None:
            ours_scores[k] = scores[0]
    ref = model.run(rows)
    if box:
        ref_action = ref["action"].astype(np.float64)
        low, high = model.action_bounds
        half = np.where(np.isfinite(high.astype(np.float64) - low), (high.astype(np.float64) - low) / 2, 0.0)
        magnitude = np.abs(_network_input(chain, rows)).max(axis=1, keepdims=True)
        tol = BOX_TOLERANCE * np.maximum(np.maximum(1.0, np.abs(ref_action)), half) * np.maximum(1.0, magnitude / 10)
        diff = np.abs(ours_action - ref_action)
        worst = float(diff.max())
        if not np.all(diff <= tol):
            return f"Box action differs from onnxruntime by {worst:.3g}, beyond the export tolerance", worst
        return None, worst
    ref_scores = ref[model.output_names[1]].astype(np.float64)
    assert ours_scores is not None
    diff = np.abs(ours_scores - ref_scores)
    scale = 1.0 if chain.head == "categorical" else np.maximum(1.0, np.abs(ref_scores))
    worst = float(diff.max())
    if not np.all(diff <= SCORE_TOLERANCE * scale):
        return f"{model.output_names[1]} differ from onnxruntime by {worst:.3g} (tolerance {SCORE_TOLERANCE:g})", worst
    for k in map(int, np.flatnonzero(ours_action != ref["action"])):
        # As the export's parity check: a batch rounds differently from one row; the
        # engine runs one row.
        single = model.session.run(["action"], {"obs": rows[k:k + 1]})[0]
        if int(single[0]) != int(ours_action[k]):
            return (f"action {int(ours_action[k])} where onnxruntime picks {int(single[0])} "
                    f"(observation {k} of {len(rows)})"), worst
    return None, worst


def compile_members(members: Sequence[Any], chains: Sequence[MlpChain | None], columns: Sequence[np.ndarray],
                    row: np.ndarray, outputs: Sequence[tuple[np.ndarray, np.ndarray | None]],
                    level: str) -> tuple[MlpForward | None, tuple[MemberPath, ...]]:
    """Check each recognised member and build the forward of those that pass.

    Args:
        members: The loaded members (:class:`~l2fast.models.loading.LoadedModel`).
        chains: Per member, its graph read by ``mlp_chain`` (None: not a plain MLP).
        columns: Per member, its columns of ``row``.
        row: The shared float32 ``[1, F]`` input.
        outputs: Per member, the ``(action, scores)`` arrays its compiled outputs go to.
        level: The forward's level (:func:`level_from_env`).

    Returns:
        The forward over the members that passed, in member order (None if none did), and
        every member's :class:`MemberPath`.
    """
    plans: list[MemberPlan] = []
    paths: list[MemberPath] = []
    for model, chain, cols, (action, scores) in zip(members, chains, columns, outputs):
        reason: str | None
        if chain is None:
            reason, rows, worst = _NOT_PLAIN, 0, 0.0
        else:
            rows = CHECK_ROWS
            try:
                reason, worst = _check(model, chain, level, check_rows(chain, rows))
            except Exception as exc:  # onnxruntime's run errors and a plan the kernel refuses
                reason, worst = f"the load-time check failed: {type(exc).__name__}: {exc}", 0.0
        if reason is None:
            plan = plan_for(chain, cols, action, scores, model.action_bounds) if chain is not None else None
            assert isinstance(plan, MemberPlan)
            plans.append(plan)
            paths.append(MemberPath(model.name, "compiled", None, rows, worst))
        else:
            logger.warning("ensemble member %s runs on onnxruntime: %s", model.name, reason)
            paths.append(MemberPath(model.name, "onnxruntime", reason, rows, worst))
    return (MlpForward(row, plans, level) if plans else None), tuple(paths)

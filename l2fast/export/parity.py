"""Parity: the exported graph must give the action SB3's ``predict`` gives.

Observations are drawn in RAW feature units. Most come from the training distribution as
far as the source reveals it (the scaler's mean/scale, centre/IQR or min/max, else the
VecNormalize running mean/variance, else a standard normal); a share lies far outside it
(10 to 10,000 spreads away, on all features or on a few) to exercise scaler clipping,
``clip_obs``, saturated activations and the action clip.

The reference path is the one a FinRL pipeline runs: the float32 raw features in float64,
``scaler.transform``, VecNormalize's ``clip((obs - mean) / sqrt(var + eps))``, cast to
float32, ``model.predict(obs, deterministic=True)``. The graph runs in onnxruntime with the
runtime's own session options.

Both sides run the whole sample as one batch. A discrete disagreement is then re-checked
one observation at a time (SB3 ``predict`` on the single observation, onnxruntime on a
batch of one, which is how the engine calls it): torch's matrix products round differently
for a batch than for one row, so on a near-tie of two logits ``predict`` on a batch can
disagree with ``predict`` on the same row alone. The batch-one answers are the ones
compared; ``single_row_rechecks`` in the report counts how many were needed.

Rules: Discrete, every action equal. Box: every action within ``[low, high]`` exactly
(the graph clips; SB3's ``predict`` does not clip a squashed action, which float32
unscaling can put a rounding step outside the bounds), and per element, with ``sb3``
clipped to the bounds as the graph does::

    |onnx - sb3| <= 1e-5 * max(1, |sb3|, (high - low) / 2) * max(1, max|x| / 10)

where ``x`` is the normalised observation the network sees. For an action in [-1, 1] and a
network input within +-10 (every in-distribution sample, and every sample once
VecNormalize's default ``clip_obs`` applies) this is the plain ``1e-5`` absolute bound. It
widens only where float32 itself cannot deliver ``1e-5``: large actions or action ranges
(a squashed action is unscaled by ``(high - low) / 2``, which scales float32's resolution of
``tanh`` with it) and unclipped network inputs thousands of units out, where the matrix
products cancel large terms and their rounding depends on the summation order. In both
cases SB3's own ``predict`` on one row differs from ``predict`` on a batch by as much.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from l2fast.errors import ExportError

if TYPE_CHECKING:
    import onnxruntime as ort

    from l2fast.export.sources import LoadedAgent

OUT_OF_DISTRIBUTION_SHARE = 0.25

#: Default number of observations of the parity check (the exporter's ``--samples``).
DEFAULT_SAMPLES = 10_000
BOX_TOLERANCE = 1e-5


@dataclass
class ParityReport:
    """Outcome of a parity check; ``to_manifest()`` is what the manifest stores.

    Attributes:
        samples: Observations compared.
        in_distribution: Of which drawn from the training distribution.
        out_of_distribution: Of which drawn far outside it.
        kind: ``"discrete"`` or ``"box"``.
        passed: True when the rule held on every sample.
        discrete_agreement: Share of equal actions (Discrete).
        mismatches: Number of differing actions (Discrete), or elements over tolerance or
            outside the bounds (Box).
        single_row_rechecks: Discrete batch disagreements re-checked one observation at a
            time (each is a mismatch only if it persists there).
        max_abs_diff: Largest absolute action difference (Box).
        max_abs_diff_in_distribution: The same over the in-distribution samples only.
        tolerance: The Box rule's base tolerance (``1e-5``).
        worst_ratio: Largest difference divided by its element's tolerance (<= 1 passes).
        example: First failing observation index and both actions, when failed.
    """

    samples: int
    in_distribution: int
    out_of_distribution: int
    kind: Literal["discrete", "box"]
    passed: bool
    discrete_agreement: float | None = None
    mismatches: int = 0
    single_row_rechecks: int | None = None
    max_abs_diff: float | None = None
    max_abs_diff_in_distribution: float | None = None
    tolerance: float | None = None
    worst_ratio: float | None = None
    example: str | None = None

    def to_manifest(self) -> dict:
        """The manifest's ``parity`` object (unset fields dropped)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """One line for errors and logs."""
        if self.kind == "discrete":
            text = (f"{self.mismatches} of {self.samples} discrete actions differ "
                    f"(agreement {self.discrete_agreement:.6f})")
        else:
            text = (f"max abs diff {self.max_abs_diff:.3g} ({self.max_abs_diff_in_distribution:.3g} in distribution), "
                    f"worst diff/tolerance {self.worst_ratio:.3g}")
        return text + (f"; first: {self.example}" if self.example else "")


def _spread_ok(spread: np.ndarray) -> np.ndarray:
    spread = np.asarray(spread, dtype=np.float64)
    return np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)


def training_distribution(agent: LoadedAgent) -> tuple[np.ndarray, np.ndarray]:
    """Centre and spread (one standard deviation) of the raw features, as far as known."""
    n = agent.observation_size
    s = agent.scaler
    center, spread = np.zeros(n), np.ones(n)
    if s is not None:  # one of the three scalers (sources._check_scaler)
        name = type(s).__name__
        if name == "StandardScaler":
            if s.with_mean:
                center = np.asarray(s.mean_, dtype=np.float64)
            if s.with_std:
                spread = np.asarray(s.scale_, dtype=np.float64)
            elif getattr(s, "var_", None) is not None:
                spread = np.sqrt(np.asarray(s.var_, dtype=np.float64))
        elif name == "MinMaxScaler":
            lo, hi = np.asarray(s.data_min_, dtype=np.float64), np.asarray(s.data_max_, dtype=np.float64)
            center, spread = (lo + hi) / 2, (hi - lo) / 4
        elif name == "RobustScaler":
            if s.with_centering:
                center = np.asarray(s.center_, dtype=np.float64)
            if s.with_scaling:
                spread = np.asarray(s.scale_, dtype=np.float64) / 1.349  # IQR of a normal = 1.349 sigma
    elif agent.vecnormalize is not None:
        center = np.asarray(agent.vecnormalize.obs_mean, dtype=np.float64)
        spread = np.sqrt(np.asarray(agent.vecnormalize.obs_var, dtype=np.float64))
    center = np.where(np.isfinite(center), center, 0.0)
    return center, _spread_ok(spread)


def sample_observations(agent: LoadedAgent, samples: int, *, seed: int = 0) -> tuple[np.ndarray, int]:
    """Draw ``samples`` raw float32 observations; return them and how many are in-distribution."""
    rng = np.random.default_rng(seed)
    n = agent.observation_size
    center, spread = training_distribution(agent)
    n_out = int(round(samples * OUT_OF_DISTRIBUTION_SHARE)) if samples >= 4 else 0
    n_in = samples - n_out
    inside = center + spread * rng.standard_normal((n_in, n))
    # Far out: every feature 10..10^4 spreads away on half the rows; on the other half an
    # in-distribution row with one to three features pushed out.
    far = center + spread * rng.choice([-1.0, 1.0], (n_out, n)) * 10.0 ** rng.uniform(1, 4, (n_out, n))
    few = center + spread * rng.standard_normal((n_out, n))
    for row in range(n_out // 2, n_out):
        cols = rng.choice(n, size=min(n, int(rng.integers(1, 4))), replace=False)
        far[row] = few[row]
        sign = rng.choice([-1.0, 1.0], cols.size)
        far[row, cols] = center[cols] + spread[cols] * sign * 10.0 ** rng.uniform(1, 4, cols.size)
    obs = np.concatenate([inside, far]).astype(np.float32)
    return obs, n_in


def normalise_like_sb3(agent: LoadedAgent, raw: np.ndarray) -> np.ndarray:
    """Raw float32 features -> the float32 observation the SB3 model was trained on."""
    x = np.asarray(raw, dtype=np.float64)
    if agent.scaler is not None:
        with warnings.catch_warnings():
            # A scaler fitted on a DataFrame warns about the missing column names.
            warnings.simplefilter("ignore", UserWarning)
            x = np.asarray(agent.scaler.transform(x), dtype=np.float64)
    vn = agent.vecnormalize
    if vn is not None:
        x = np.clip((x - vn.obs_mean) / np.sqrt(vn.obs_var + vn.epsilon), -vn.clip_obs, vn.clip_obs)
    return x.astype(np.float32)


def onnx_session(model_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime session on the serialized graph, with the runtime's session options."""
    import onnxruntime as ort

    from l2fast.models.loading import session_options

    return ort.InferenceSession(model_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"])


def onnx_actions(session: ort.InferenceSession, raw: np.ndarray) -> np.ndarray:
    """The graph's ``action`` output on raw observations ``[N, n]``."""
    return session.run(["action"], {"obs": np.ascontiguousarray(raw, dtype=np.float32)})[0]


def box_tolerance(agent: LoadedAgent, ref: np.ndarray, net_input: np.ndarray) -> np.ndarray:
    """Per-element tolerance of the Box rule (see the module docstring).

    Raises:
        ExportError: The agent's action space is not a Box.
    """
    from gymnasium import spaces

    space = agent.action_space
    if not isinstance(space, spaces.Box):
        raise ExportError(f"{agent.name}: the Box tolerance needs a Box action space, not {type(space).__name__}")
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    half_range = np.where(np.isfinite(high - low), (high - low) / 2, 0.0)
    scale = np.maximum(np.maximum(1.0, np.abs(ref)), half_range)
    magnitude = np.abs(net_input.astype(np.float64)).max(axis=1, keepdims=True)
    return BOX_TOLERANCE * scale * np.maximum(1.0, magnitude / 10.0)


def compare(agent: LoadedAgent, ours: np.ndarray, ref: np.ndarray, n_in: int, net_input: np.ndarray,
            rechecks: int = 0) -> ParityReport:
    """Apply the parity rule to the graph's actions ``ours`` and SB3's ``ref``.

    Args:
        agent: The exported agent.
        ours: onnxruntime's ``action`` output.
        ref: SB3's ``predict(deterministic=True)`` actions (Box: clipped here to the bounds).
        n_in: The first ``n_in`` samples are in-distribution.
        net_input: The normalised observations both networks saw.
        rechecks: Discrete rows already re-checked one observation at a time.
    """
    from gymnasium import spaces

    samples = len(ours)
    common = {"samples": samples, "in_distribution": n_in, "out_of_distribution": samples - n_in}
    if isinstance(agent.action_space, spaces.Discrete):
        ref = ref.reshape(samples).astype(np.int64)
        bad = np.flatnonzero(ours != ref)
        example = f"sample {bad[0]}: onnx {ours[bad[0]]}, sb3 {ref[bad[0]]}" if bad.size else None
        return ParityReport(kind="discrete", passed=bad.size == 0, discrete_agreement=1.0 - bad.size / samples,
                            mismatches=int(bad.size), single_row_rechecks=rechecks, example=example, **common)
    low = np.asarray(agent.action_space.low, dtype=np.float64)
    high = np.asarray(agent.action_space.high, dtype=np.float64)
    ref = np.clip(ref.reshape(ours.shape).astype(np.float32), low, high)
    wide = ours.astype(np.float64)
    diff = np.abs(wide - ref)
    both_nan = np.isnan(ours) & np.isnan(ref)
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    ratio = diff / box_tolerance(agent, ref, net_input)
    bad = (ratio > 1.0) | (wide < low) | (wide > high)
    bad_rows = np.flatnonzero(bad.any(axis=1))
    example = None
    if bad_rows.size:
        r = bad_rows[0]
        example = (f"sample {r}: onnx {ours[r].tolist()}, sb3 clipped to the bounds {ref[r].tolist()}, "
                   f"bounds [{low.tolist()}, {high.tolist()}]")
    return ParityReport(kind="box", passed=bad_rows.size == 0, max_abs_diff=float(diff.max()),
                        max_abs_diff_in_distribution=float(diff[:n_in].max()) if n_in else 0.0,
                        tolerance=BOX_TOLERANCE, worst_ratio=float(ratio.max()),
                        mismatches=int(bad.sum()), example=example, **common)


def check_parity(agent: LoadedAgent, model_bytes: bytes, samples: int = DEFAULT_SAMPLES, *,
                 seed: int = 0) -> ParityReport:
    """Compare the serialized ONNX graph with SB3 on ``samples`` drawn observations."""
    from gymnasium import spaces

    raw, n_in = sample_observations(agent, samples, seed=seed)
    net_input = normalise_like_sb3(agent, raw)
    session = onnx_session(model_bytes)
    ours = onnx_actions(session, raw)
    ref = np.asarray(agent.model.predict(net_input, deterministic=True)[0])
    rechecks = 0
    if isinstance(agent.action_space, spaces.Discrete):
        ref = ref.reshape(-1).astype(np.int64)
        for i in np.flatnonzero(ours != ref):
            ours[i] = onnx_actions(session, raw[i : i + 1])[0]
            ref[i] = int(agent.model.predict(net_input[i], deterministic=True)[0])
            rechecks += 1
    return compare(agent, ours, ref, n_in, net_input, rechecks)

"""Votes, consensus and confidence: the ensemble and the technical indicators fused into one side.

One :class:`Voter` per symbol. On every bar it takes the ensemble members' ONNX outputs,
the regime's weight multipliers and (for the timeframes whose bar closed) the technical
state's feature vector, and returns a :class:`VoteResult`: the side, target position,
confidence, consensus, alignment, every member's vote and every timeframe's technical
vote, and the gate that allowed or denied the signal with its numbers. The per-bar work
runs in the compiled kernels of :mod:`l2fast.decision._voting`, which the engine calls
directly; this module validates parameters and translates Python inputs.

Every named setting below is a key of ``[model]`` or ``[model.vote]``
(:class:`~l2fast.config.ModelConfig`, :class:`~l2fast.config.VoteConfig`), whose values,
defaults and ranges the shipped ``l2fast/data/l2fast.toml`` lists.

Notation: ``sgn_d(x) = +1 if x > d, -1 if x < -d, else 0`` with ``d = dead_band``;
``clip(x) = min(max(x, -1), 1)``. A number that is NaN or infinite is
"unavailable": it is skipped, never propagated.

Members (one per ensemble model, at most 8)
    A discrete member (PPO/A2C ``probs``, DQN ``q_values``) with chosen action ``a``:
    target ``t_i = action_targets[a]`` (the manifest's mapping, in [-1, 1]) and confidence
    ``conf_i = min(max(probs[a], 0), 1)``, or for ``q_values`` the softmax probability of
    the chosen action, ``conf_i = 1 / sum_j exp((q_j - q_a) / temperature)`` (``temperature =
    q_temperature``). A continuous member: ``t_i = clip(action[0])``, ``conf_i = |t_i|``.
    Its side is ``s_i = sgn_d(t_i)``. A member is left out of the bar (its failure counter
    and reason are recorded) when the caller flags its run as failed, when one of its
    scores (discrete) or its action (continuous) is non-finite, or when a discrete action
    index is outside ``[0, n_actions)``.

Weights
    ``r_i = weight_i * multiplier_i`` (config weight times the regime's multiplier) for the
    live members, 0 for the others; ``R = sum r_i``; ``w_i = r_i / R``. No live member (or
    ``R = 0``): no model vote, the result is a hold with gate ``NO_MODEL_VOTE``.

Model score
    ``weighted`` voting: ``m = sum w_i t_i``, the weighted mean target position.
    ``majority`` voting: ``m = sum w_i s_i``, the weighted share of buy votes minus the
    weighted share of sell votes.

Technical votes, per timeframe, advanced once per closed bar of that timeframe from its
block of the feature vector (``t`` counts the timeframe's bars from 0)
    - ``rsi_level``: +1 if RSI < ``rsi_oversold``, -1 if RSI > ``rsi_overbought``,
      else 0 (the RSI is the technical state's ``rsi_index``-th period).
    - ``rsi_divergence``: among the bars ``t - W .. t - 1`` (``W = divergence_window``)
      with a finite close and RSI, ``j`` has the lowest close and ``k`` the highest (the
      latest on ties). +1 (bullish) if ``close_t < close_j`` and ``rsi_t > rsi_j`` and
      ``t - j >= divergence_min_gap``: price makes a lower low, RSI a higher low.
      -1 (bearish) if ``close_t > close_k`` and ``rsi_t < rsi_k`` and ``t - k >=
      divergence_min_gap``. Else 0; unavailable while ``t < W`` or if no such bar exists.
    - ``macd_cross``: +1 if ``hist_{t-1} <= 0 < hist_t``, -1 if ``hist_{t-1} >= 0 >
      hist_t``, else 0 (MACD histogram; ``t - 1`` is the timeframe's previous bar).
    - ``macd_histogram``: ``(sign(hist_t) + sign(hist_t - hist_{t-1})) / 2``: side and slope.
    - ``bb_pctb``: +1 if %b < ``pctb_low``, -1 if %b > ``pctb_high``, else 0.
    - ``bb_squeeze``: bar ``t`` is a squeeze when ``t >= S - 1`` and ``width_t <= (1 +
      squeeze_tolerance) * min(width_{t-S+1} .. width_t)`` (``S = squeeze_window``:
      Bollinger's band width at its lowest). The vote is +1 if %b > 1
      (close above the upper band) or -1 if %b < 0 when the latest squeeze is at most
      ``squeeze_memory`` bars before ``t``, else 0; unavailable while ``t < S``.
    - ``patterns``: ``clip(sum_p pattern_weights[p] * cdl_p / 100 / pattern_scale)`` over
      the patterns with a non-zero weight (TA-Lib gives +-100, or +-80 for engulfing and
      harami with one matching body end). By default the directional, reliable ones weigh
      1: engulfing, hammer, hanging man, inverted hammer, shooting star, piercing, dark
      cloud cover, morning star, evening star, three white soldiers, three black crows; the
      doji family, harami, harami cross, marubozu and spinning top weigh 0. ``pattern_scale``
      is the summed signal giving a full vote. Unavailable if a weighted pattern is.
    - ``sr_breakout``: the support/resistance breakout flag: +1 up through a level, -1 down.
    The timeframe's vote is ``v_k = sum_c a_c x_c / sum_c a_c`` over its available
    components ``x_c`` with a positive weight ``a_c`` (``component_weights``);
    unavailable if there is none.

Fusion
    Technical score ``tech = sum_k b_k v_k / sum_k b_k`` over the timeframes with a vote
    (``b_k = timeframe_weights``), 0 if none.
    Fused score ``score = (1 - lambda) * m + lambda * tech`` (``lambda =
    technical_weight``); ``direction = sgn_d(score)``.
    Consensus ``C = sum w_i [s_i = direction]``: the weighted agreement with the side.
    Model confidence ``M = sum w_i conf_i [s_i = direction] / C`` (0 if ``C = 0``): the
    mean confidence of the members that agree.
    Technical agreement ``T = (1 + direction * tech) / 2``: 1 when every technical vote
    backs the side, 0.5 when they are neutral, 0 when they all oppose it.
    Alignment ``A = sum_k b_k [sgn_d(v_k) = direction] / sum_k b_k`` over the timeframes
    with a vote (0 if none): the weighted share of timeframes pointing the same way.
    Confidence ``= (g_m M + g_t T + g_a A) / (g_m + g_t + g_a)`` with
    ``confidence_weights`` ``g`` (``model``, ``technical``, ``alignment``).
    Target position ``= sum w_i t_i [s_i = direction] / C``, the mean target of the
    agreeing members (0 if ``C = 0`` or ``direction = 0``).

Gates, in this order (the first failing one is :attr:`VoteResult.gate`; all are listed)
    ``NO_MODEL_VOTE``: no live member with a positive weight. ``NO_DIRECTION``:
    ``|score| <= dead_band``. Then ``LOW_CONSENSUS``: ``C < consensus_threshold``;
    ``LOW_CONFIDENCE``: ``confidence < confidence_threshold``; ``LOW_ALIGNMENT``:
    ``A < alignment_threshold``. These three compare with a slack of 1e-9, so a
    share equal to the threshold in decimal (3 of 5 equal members against 0.6) passes
    despite rounding. ``side = direction`` when every gate passes, else 0 (hold).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from l2fast.config import FrozenDict, ModelConfig, TechnicalConfig, VoteConfig
from l2fast.decision._voting import (
    COMPONENTS,
    MAX_ACTIONS,
    MAX_MEMBERS,
    MAX_TIMEFRAMES,
    MEMBER_KINDS,
    MEMBER_STATUSES,
    VoterCore,
)
from l2fast.errors import ConfigError, InvalidInputError
from l2fast.models.manifest import default_action_targets
from l2fast.technical._candles import CANDLESTICK_PATTERNS
from l2fast.technical._features import FIRST_RSI_SLOT, MAX_RSI_PERIODS

__all__ = [
    "COMPONENTS",
    "DEFAULT_PATTERN_WEIGHTS",
    "MemberSpec",
    "MemberVote",
    "TimeframeVote",
    "VoteResult",
    "Voter",
    "VotingParams",
]

MemberKind = Literal["probs", "q_values", "continuous"]

#: Default weight of each candlestick pattern in the ``patterns`` vote (the config's).
DEFAULT_PATTERN_WEIGHTS: Mapping[str, float] = VoteConfig().pattern_weights
_ACTIONS = {1: "buy", -1: "sell", 0: "hold"}
_SIDE_OF = {name: side for side, name in _ACTIONS.items()}


# ---------------------------------------------------------------------------------------
# validation helpers (ConfigError naming the parameter and its value)


def _number(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
            lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}={value!r}: must be a number")
    v = float(value)
    ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
    if not ok:
        if hi is None:
            rule = f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else "finite"
        else:
            rule = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"{name}={value!r}: must be {rule}")
    return v


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= int(value) <= hi:
        raise ConfigError(f"{name}={value!r}: must be an integer in [{lo}, {hi}]")
    return int(value)


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# ---------------------------------------------------------------------------------------
# parameters


# Every default of the vote is the config's (its one owner): MemberSpec and VotingParams
# take them as their field defaults, so that a bare VotingParams(members) votes like the engine.
_MODEL = ModelConfig()
_VOTE = _MODEL.vote
_TECHNICAL = TechnicalConfig()
# VotingParams' fields from model.vote; the Q-value temperature is each MemberSpec's.
_VOTE_FIELDS = tuple(f.name for f in fields(VoteConfig) if f.name != "q_temperature")


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member as the voter sees it.

    Attributes:
        name: The member's name (its manifest name, the key of ``model.weights``).
        kind: ``"probs"`` (PPO/A2C discrete), ``"q_values"`` (DQN) or ``"continuous"``
            (Box action: its first dimension is the target position, clipped to [-1, 1]).
        weight: Config weight, >= 0.
        action_targets: Discrete kinds: the target position of each action, in [-1, 1]
            (1 to 32 actions); empty for ``"continuous"``.
        temperature: Softmax temperature of ``q_values`` (> 0; ``model.vote.q_temperature``);
            Q-values' scale is the reward's, so a temperature matching it makes the
            confidence meaningful.
    """

    name: str
    kind: MemberKind
    weight: float
    action_targets: tuple[float, ...] = ()
    temperature: float = _VOTE.q_temperature

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name={self.name!r}: must be a non-empty string")
        where = f"members[{self.name!r}]"
        if self.kind not in MEMBER_KINDS:
            raise ConfigError(f"{where}.kind={self.kind!r}: must be one of {', '.join(MEMBER_KINDS)}")
        _set(self, "weight", _number(f"{where}.weight", self.weight, 0.0))
        _set(self, "temperature", _number(f"{where}.temperature", self.temperature, 0.0, lo_open=True))
        targets = tuple(self.action_targets)
        if self.kind == "continuous":
            if targets:
                raise ConfigError(f"{where}.action_targets: must be empty for a continuous member")
        elif not 1 <= len(targets) <= MAX_ACTIONS:
            raise ConfigError(f"{where}.action_targets: give 1 to {MAX_ACTIONS} targets, got {len(targets)}")
        _set(self, "action_targets", tuple(
            _number(f"{where}.action_targets[{i}]", t, -1.0, 1.0) for i, t in enumerate(targets)))

    @property
    def n_actions(self) -> int:
        """Number of discrete actions (0 for a continuous member)."""
        return len(self.action_targets)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], weight: float, *,
                      temperature: float = _VOTE.q_temperature) -> MemberSpec:
        """The member described by a model manifest (see :mod:`l2fast.models.manifest`).

        Discrete action spaces use the manifest's ``action_targets`` (evenly spaced from
        -1 to 1 when absent); DQN gives ``"q_values"``, other algorithms ``"probs"``.
        """
        space = manifest["action_space"]
        if space["type"] == "box":
            return cls(manifest["name"], "continuous", weight, (), temperature)
        targets = manifest.get("action_targets") or default_action_targets(int(space["n"]))
        kind: MemberKind = "q_values" if manifest["algorithm"] == "DQN" else "probs"
        return cls(manifest["name"], kind, weight, tuple(targets), temperature)


@dataclass(frozen=True)
class VotingParams:
    """Every parameter of the vote (formulas: the module docstring).

    The defaults and range rules are those of the config: ``voting``, the thresholds,
    ``technical_weight`` and ``confidence_weights`` are :class:`~l2fast.config.ModelConfig`'s,
    the finer settings :class:`~l2fast.config.VoteConfig`'s (``[model.vote]``), the
    timeframes and RSI periods :class:`~l2fast.config.TechnicalConfig`'s.

    Attributes:
        members: The ensemble, 1 to 8 :class:`MemberSpec` with distinct names; at least
            one weight must be positive.
        timeframes: The technical state's timeframes, in its order (1 to 8).
        n_rsi: RSI periods per timeframe block of the feature vector (the candlestick
            slots follow them), 1 to 4.
        rsi_index: Which of those RSI periods the RSI votes use (0: the first).
        voting: ``"weighted"`` or ``"majority"``.
        consensus_threshold, confidence_threshold, alignment_threshold: Gates, in [0, 1].
        technical_weight: ``lambda``, share of the technical score in the fused score.
        dead_band: Scores within ``[-dead_band, dead_band]`` are side 0, in [0, 1).
        confidence_weights: ``{"model", "technical", "alignment"}`` weights (>= 0, sum > 0);
            missing keys take the config's.
        timeframe_weights: Weight of each timeframe in the technical score and alignment
            (stored for every timeframe; a missing one weighs 1).
        component_weights: Weight of each technical component (:data:`COMPONENTS`);
            missing ones take the config's.
        pattern_weights: Weight of each candlestick pattern (TA-Lib names, e.g.
            ``"CDLENGULFING"``); missing ones take :data:`DEFAULT_PATTERN_WEIGHTS`.
        pattern_scale: Summed pattern signal (units of 100) that gives a full vote, > 0.
        rsi_oversold, rsi_overbought: RSI levels, ``0 <= oversold < overbought <= 100``.
        pctb_low, pctb_high: %b levels of the ``bb_pctb`` vote, ``low <= high``.
        divergence_window: Bars searched for the prior low/high (1 to 127).
        divergence_min_gap: Bars between that prior extreme and the current bar (>= 1).
        squeeze_window: Bars of the band-width minimum (2 to 127).
        squeeze_tolerance: Squeeze when the width is within this fraction of the minimum.
        squeeze_memory: Bars after a squeeze during which a close outside the bands counts.

    Raises:
        ConfigError: A parameter is out of range (its name and value are given).
    """

    members: tuple[MemberSpec, ...]
    timeframes: tuple[str, ...] = _TECHNICAL.timeframes
    n_rsi: int = len(_TECHNICAL.rsi_periods)
    rsi_index: int = _VOTE.rsi_index
    voting: Literal["weighted", "majority"] = _MODEL.voting
    consensus_threshold: float = _MODEL.consensus_threshold
    confidence_threshold: float = _MODEL.confidence_threshold
    alignment_threshold: float = _MODEL.alignment_threshold
    technical_weight: float = _MODEL.technical_weight
    dead_band: float = _VOTE.dead_band
    confidence_weights: Mapping[str, float] = field(default_factory=dict)
    timeframe_weights: Mapping[str, float] = field(default_factory=dict)
    component_weights: Mapping[str, float] = field(default_factory=dict)
    pattern_weights: Mapping[str, float] = field(default_factory=dict)
    pattern_scale: float = _VOTE.pattern_scale
    rsi_oversold: float = _VOTE.rsi_oversold
    rsi_overbought: float = _VOTE.rsi_overbought
    pctb_low: float = _VOTE.pctb_low
    pctb_high: float = _VOTE.pctb_high
    divergence_window: int = _VOTE.divergence_window
    divergence_min_gap: int = _VOTE.divergence_min_gap
    squeeze_window: int = _VOTE.squeeze_window
    squeeze_tolerance: float = _VOTE.squeeze_tolerance
    squeeze_memory: int = _VOTE.squeeze_memory

    def __post_init__(self) -> None:
        members = tuple(self.members)
        if not 1 <= len(members) <= MAX_MEMBERS:
            raise ConfigError(f"members: give 1 to {MAX_MEMBERS} members, got {len(members)}")
        for m in members:
            if not isinstance(m, MemberSpec):
                raise ConfigError(f"members: {m!r} is not a MemberSpec")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ConfigError(f"members: duplicate names in {names}")
        if not any(m.weight > 0 for m in members):
            raise ConfigError(f"members: every weight is zero ({', '.join(names)})")
        _set(self, "members", members)

        tfs = tuple(self.timeframes)
        if not 1 <= len(tfs) <= MAX_TIMEFRAMES or len(set(tfs)) != len(tfs) or not all(
                isinstance(t, str) and t for t in tfs):
            raise ConfigError(f"timeframes={self.timeframes!r}: give 1 to {MAX_TIMEFRAMES} distinct names")
        _set(self, "timeframes", tfs)
        _set(self, "n_rsi", _int("n_rsi", self.n_rsi, 1, MAX_RSI_PERIODS))

        # The range rules are the config's: the sections validate, this copies their values.
        model = ModelConfig(
            voting=self.voting, consensus_threshold=self.consensus_threshold,
            confidence_threshold=self.confidence_threshold, alignment_threshold=self.alignment_threshold,
            technical_weight=self.technical_weight, confidence_weights=self.confidence_weights)
        for name in ("voting", "consensus_threshold", "confidence_threshold", "alignment_threshold",
                     "technical_weight", "confidence_weights"):
            _set(self, name, getattr(model, name))
        vote = VoteConfig(**{name: getattr(self, name) for name in _VOTE_FIELDS})
        for name in _VOTE_FIELDS:
            _set(self, name, getattr(vote, name))
        _int("rsi_index", self.rsi_index, 0, self.n_rsi - 1)
        for tf in vote.timeframe_weights:
            if tf not in tfs:
                raise ConfigError(f"timeframe_weights[{tf!r}]: unknown (known: {', '.join(tfs)})")
        _set(self, "timeframe_weights", FrozenDict({tf: vote.timeframe_weight(tf) for tf in tfs}))

    @property
    def block_size(self) -> int:
        """Features per timeframe block of the technical state's vector."""
        return FIRST_RSI_SLOT + self.n_rsi + len(CANDLESTICK_PATTERNS)

    @classmethod
    def from_config(cls, model: ModelConfig, manifests: Mapping[str, Mapping[str, Any]],
                    technical: TechnicalConfig | None = None, **overrides: Any) -> VotingParams:
        """The parameters of an engine configuration.

        Args:
            model: ``[model]``: members and weights (in ``model.weights`` order), voting,
                thresholds, ``technical_weight`` and ``[model.vote]``.
            manifests: The manifest of every member, by name.
            technical: ``[technical]``: timeframes and RSI periods (defaults if None).
            **overrides: Any other :class:`VotingParams` field.

        Raises:
            ConfigError: A member has no manifest, or a parameter is out of range.
        """
        technical = technical or _TECHNICAL
        members = []
        for name, weight in model.weights.items():
            if name not in manifests:
                raise ConfigError(f"model.weights.{name}: no manifest for this member")
            members.append(MemberSpec.from_manifest(manifests[name], weight,
                                                    temperature=model.vote.q_temperature))
        kwargs: dict[str, Any] = {
            "members": tuple(members), "timeframes": technical.timeframes,
            "n_rsi": len(technical.rsi_periods), "voting": model.voting,
            "consensus_threshold": model.consensus_threshold,
            "confidence_threshold": model.confidence_threshold,
            "alignment_threshold": model.alignment_threshold,
            "technical_weight": model.technical_weight,
            "confidence_weights": dict(model.confidence_weights),
            **{name: getattr(model.vote, name) for name in _VOTE_FIELDS},
        }
        kwargs.update(overrides)
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class MemberVote:
    """One member's vote on one bar (all numbers 0 when it was left out)."""

    name: str
    status: str          # "ok", "run_failed", "non_finite" or "bad_action"
    side: int            # +1, 0, -1
    target: float        # target position in [-1, 1]
    confidence: float    # in [0, 1]
    weight: float        # normalised over the live members

    @property
    def failed(self) -> bool:
        """True when the member was left out of this bar's vote."""
        return self.status != "ok"


@dataclass(frozen=True)
class TimeframeVote:
    """One timeframe's technical vote: NaN where unavailable (warm-up)."""

    timeframe: str
    vote: float
    components: Mapping[str, float]


@dataclass(frozen=True)
class VoteResult:
    """The outcome of one bar's vote (see the module docstring for every number).

    Attributes:
        side: +1 buy, -1 sell, 0 hold, after the gates.
        direction: The fused side before the gates.
        gate: ``"PASS"`` or the first failing gate's code.
        gates: Codes of every failing gate.
        thresholds: ``consensus``, ``confidence``, ``alignment`` thresholds and ``dead_band``.
        summary: The vote as the kernel's one dict form gives it (``vote_dict`` in
            ``l2fast.decision._voting``), the engine's ``reasoning["vote"]``: see :meth:`reasoning`.
    """

    side: int
    direction: int
    gate: str
    gates: tuple[str, ...]
    target: float
    score: float
    model_score: float
    technical_score: float
    model_confidence: float
    technical_agreement: float
    consensus: float
    alignment: float
    confidence: float
    n_live: int
    n_timeframes_live: int
    members: tuple[MemberVote, ...]
    timeframes: tuple[TimeframeVote, ...]
    thresholds: Mapping[str, float]
    summary: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def action(self) -> str:
        """``"buy"``, ``"sell"`` or ``"hold"``."""
        return _ACTIONS[self.side]

    @property
    def denials(self) -> tuple[dict[str, Any], ...]:
        """Every failing gate as ``{"code": ..., <its numbers>}``, in gate order."""
        numbers: dict[str, Callable[[], dict[str, Any]]] = {
            "NO_MODEL_VOTE": lambda: {"failed": {m.name: m.status for m in self.members if m.failed}},
            "NO_DIRECTION": lambda: {"score": self.score, "dead_band": self.thresholds["dead_band"]},
            "LOW_CONSENSUS": lambda: {"consensus": self.consensus, "threshold": self.thresholds["consensus"]},
            "LOW_CONFIDENCE": lambda: {"confidence": self.confidence, "threshold": self.thresholds["confidence"]},
            "LOW_ALIGNMENT": lambda: {"alignment": self.alignment, "threshold": self.thresholds["alignment"]},
        }
        # A gate added to the kernel without its numbers here fails loudly (KeyError), not
        # as another gate's numbers.
        return tuple({"code": code, **numbers[code]()} for code in self.gates)

    def reasoning(self) -> dict[str, Any]:
        """The JSON-safe dict of the vote, as a signal's ``reasoning["vote"]`` carries it.

        ``direction`` (``"buy"``, ``"sell"``, ``"hold"``), ``score``, ``model_score``,
        ``technical_score``, ``consensus``, ``confidence``, ``model_confidence``,
        ``technical_agreement``, ``alignment``, ``target`` (None where not finite),
        ``gates`` (the failing gates' codes), ``members`` (``{name: {"status", "side",
        "target", "confidence", "weight"}}``) and ``timeframes`` (``{timeframe: vote or
        None}``). A fresh copy: changing it changes nothing here.
        """
        return copy.deepcopy(dict(self.summary))


# ---------------------------------------------------------------------------------------
# the voter


class Voter:
    """The vote of one symbol: members, technical votes, fusion and gates.

    Args:
        params: The vote's parameters.

    Example::

        voter = Voter(VotingParams.from_config(cfg.model, manifests, cfg.technical))
        mask = state.update(ts, o, h, l, c, v)              # a TechnicalState
        result = voter.vote({"trend_agent": trend.run(obs), ...},
                            state.values, cfg.model.regime_multipliers["trending"], updated=mask)
    """

    def __init__(self, params: VotingParams) -> None:
        if not isinstance(params, VotingParams):
            raise InvalidInputError(f"params={params!r}: expected a VotingParams")
        self.params = params
        self._core = VoterCore(params)
        self._names = tuple(m.name for m in params.members)
        self._ncols = max(1, max(m.n_actions for m in params.members))
        self._thresholds = FrozenDict({
            "consensus": params.consensus_threshold, "confidence": params.confidence_threshold,
            "alignment": params.alignment_threshold, "dead_band": params.dead_band})

    @property
    def members(self) -> tuple[str, ...]:
        """Member names, in parameter order."""
        return self._names

    def update_technical(self, features: Any, updated: int = -1) -> int:
        """Advance the technical votes of the timeframes whose bar closed.

        Args:
            features: The technical state's feature vector (``TechnicalState.values``).
            updated: The mask ``TechnicalState.update`` returned (bit i: timeframe i
                closed a bar); -1 advances every timeframe (one bar of each).

        Returns:
            The timeframes advanced, as a mask.
        """
        return self._core.technical(features, updated)

    def vote(self, member_outputs: Mapping[str, Any] | Sequence[Any], technical_features: Any = None,
             regime_multipliers: Mapping[str, float] | Sequence[float] | None = None, *,
             updated: int = -1) -> VoteResult:
        """Vote on one bar.

        Args:
            member_outputs: Per member (by name, or a sequence in member order): its ONNX
                outputs as a mapping (``{"action": ..., "probs": ...}``, ``{"action": ...,
                "q_values": ...}`` or ``{"action": [x, ...]}``; a leading batch axis of 1
                is fine), or None when its run failed. Non-finite numbers leave the member
                out of this bar; they are not an error.
            technical_features: If given, the feature vector to advance the technical votes
                with first (see :meth:`update_technical` and ``updated``).
            regime_multipliers: Weight multiplier per member (by name, or in order; a
                missing name is 1.0); None: all 1.0.
            updated: Timeframe mask for ``technical_features``.

        Raises:
            InvalidInputError: An output is malformed (missing key, wrong length, a
                non-integer discrete action), a multiplier is negative or non-finite, or
                the feature vector has the wrong length. Nothing has changed.
        """
        n = len(self._names)
        failed = np.zeros(n, dtype=np.bool_)
        actions = np.zeros(n, dtype=np.int64)
        values = np.zeros(n)
        scores = np.zeros((n, self._ncols))
        for i, out in enumerate(self._ordered(member_outputs, "member_outputs", required=True)):
            self._parse(i, out, failed, actions, values, scores)
        mult = np.array(self._ordered(regime_multipliers, "regime_multipliers", required=False), dtype=np.float64)
        for i, x in enumerate(mult):
            if not (math.isfinite(x) and x >= 0):
                raise InvalidInputError(f"regime_multipliers[{self._names[i]!r}]={float(x)!r}: must be finite and >= 0")
        if technical_features is not None:
            features = np.ascontiguousarray(technical_features, dtype=np.float64)
            if features.shape != (self._core.n_features,):
                raise InvalidInputError(f"technical_features: expected {self._core.n_features} values, "
                                        f"got shape {features.shape}")
            self._core.technical(features, updated)
        return self._result(self._core.vote(failed, actions, values, scores, mult))

    def _ordered(self, given: Any, what: str, *, required: bool) -> list[Any]:
        """``given`` as a list in member order (mapping by name, or a sequence)."""
        n = len(self._names)
        if given is None:
            if required:
                raise InvalidInputError(f"{what}: required")
            return [1.0] * n
        if isinstance(given, Mapping):
            unknown = [k for k in given if k not in self._names]
            if unknown:
                raise InvalidInputError(f"{what}: unknown members {unknown} (members: {', '.join(self._names)})")
            if required:
                missing = [k for k in self._names if k not in given]
                if missing:
                    raise InvalidInputError(f"{what}: missing members {missing} (None marks a failed run)")
                return [given[k] for k in self._names]
            return [given.get(k, 1.0) for k in self._names]
        items = list(given)
        if len(items) != n:
            raise InvalidInputError(f"{what}: {len(items)} entries for {n} members")
        return items

    def _parse(self, i: int, out: Any, failed: np.ndarray, actions: np.ndarray, values: np.ndarray,
               scores: np.ndarray) -> None:
        spec = self.params.members[i]
        where = f"member_outputs[{spec.name!r}]"
        if out is None:
            failed[i] = True
            return
        if not isinstance(out, Mapping) or "action" not in out:
            raise InvalidInputError(f"{where}: expected a mapping with an 'action' output, or None")
        action = self._array(f"{where}['action']", out["action"])
        if action.size < 1:
            raise InvalidInputError(f"{where}['action']: empty")
        if spec.kind == "continuous":
            values[i] = action[0]
            return
        if action.size != 1:
            raise InvalidInputError(f"{where}['action']: one discrete action expected, got {action.size}")
        if spec.kind not in out:
            raise InvalidInputError(f"{where}: missing the {spec.kind!r} output")
        row = self._array(f"{where}[{spec.kind!r}]", out[spec.kind])
        if row.size != spec.n_actions:
            raise InvalidInputError(f"{where}[{spec.kind!r}]: {row.size} values for {spec.n_actions} actions")
        scores[i, : spec.n_actions] = row
        a = float(action[0])
        if not math.isfinite(a):
            # A non-finite action is a non-finite output like a NaN score: the kernel
            # leaves the member out with that reason.
            scores[i, 0] = math.nan
        elif a != int(a):
            raise InvalidInputError(f"{where}['action']={a!r}: a discrete action is an integer index")
        else:
            actions[i] = int(a)

    @staticmethod
    def _array(where: str, value: Any) -> np.ndarray:
        try:
            return np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{where}={value!r}: not numeric") from None

    def _timeframe_votes(self, raw: Sequence[Mapping[str, Any]]) -> tuple[TimeframeVote, ...]:
        return tuple(TimeframeVote(tf, r["vote"], FrozenDict(zip(COMPONENTS, r["components"])))
                     for tf, r in zip(self.params.timeframes, raw))

    def _result(self, r: dict[str, Any]) -> VoteResult:
        """The typed result over the kernel's vote dict (the one dict form of a vote)."""
        def num(x: float | None) -> float:
            return math.nan if x is None else x

        members = tuple(MemberVote(name, m["status"], m["side"], m["target"], m["confidence"], m["weight"])
                        for name, m in r["members"].items())
        direction = _SIDE_OF[r["direction"]]
        gates = tuple(r["gates"])
        # The kernel's own rules: the side is the direction unless a gate fails, the gate
        # is the first failing one, and a member or timeframe is live when it voted.
        return VoteResult(
            side=0 if gates else direction, direction=direction, gate=gates[0] if gates else "PASS",
            gates=gates, **{k: num(r[k]) for k in (
                "target", "score", "model_score", "technical_score", "model_confidence",
                "technical_agreement", "consensus", "alignment", "confidence")},
            n_live=sum(m.status == "ok" for m in members),
            n_timeframes_live=sum(v is not None for v in r["timeframes"].values()), members=members,
            # The vote copied the technical votes it used; nothing has advanced them since.
            timeframes=self.technical_votes(), thresholds=self._thresholds, summary=r)

    def technical_votes(self) -> tuple[TimeframeVote, ...]:
        """The latest technical vote of every timeframe."""
        return self._timeframe_votes(self._core.technical_votes())

    @property
    def failures(self) -> dict[str, int]:
        """Bars each member was left out of the vote."""
        return dict(zip(self._names, self._core.failures))

    @property
    def last_failures(self) -> dict[str, str | None]:
        """Each member's latest failure reason (None: never failed)."""
        return {name: MEMBER_STATUSES[s] if s else None for name, s in zip(self._names, self._core.last_failures)}

    def reset(self) -> None:
        """Forget the technical memory and the failure counters."""
        self._core.reset()

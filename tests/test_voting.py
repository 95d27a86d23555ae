"""Votes, consensus and confidence: every rule against hand-computed values, properties, and
the compiled kernel against its pure-Python twin (random inputs and the real BTC stream)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from l2fast.config import ModelConfig, TechnicalConfig
from l2fast.decision._voting import GATE_CODES
from l2fast.decision.voting import COMPONENTS, DEFAULT_PATTERN_WEIGHTS, MemberSpec, Voter, VotingParams
from l2fast.errors import ConfigError, InvalidInputError
from l2fast.models.manifest import default_action_targets
from l2fast.technical.state import TechnicalState, feature_names

from reference import Unchecked
from reference.voting import VoterRef, vote_dict

# Slot of each feature inside one timeframe block, from the technical state's own names.
_NAMES = feature_names(TechnicalConfig())
BLOCK = len(_NAMES) // 4
SLOT = {name[: -len("_1m")]: i for i, name in enumerate(_NAMES[:BLOCK])}

TREND = MemberSpec("trend", "probs", 0.4, (-1.0, 0.0, 1.0))
MEAN_REVERT = MemberSpec("mean_revert", "q_values", 0.35, (-1.0, 0.0, 1.0))
VOLATILITY = MemberSpec("volatility", "continuous", 0.25)
MEMBERS = (TREND, MEAN_REVERT, VOLATILITY)


def block(close=100.0, rsi=50.0, hist=0.0, pctb=0.5, width=0.02, sr=0.0, **patterns) -> np.ndarray:
    """One timeframe block: neutral values unless given (patterns by lower-case name)."""
    b = np.zeros(BLOCK)
    b[SLOT["close"]] = close
    b[SLOT["rsi_14"]] = rsi
    b[SLOT["macd_hist"]] = hist
    b[SLOT["bb_pctb"]] = pctb
    b[SLOT["bb_width"]] = width
    b[SLOT["sr_breakout"]] = sr
    for name, value in patterns.items():
        b[SLOT[f"cdl_{name}"]] = value
    return b


def one_tf(**kw) -> Voter:
    """A voter over the 1m timeframe only."""
    return Voter(VotingParams(MEMBERS, timeframes=("1m",), **kw))


def components(voter: Voter, b: np.ndarray) -> dict[str, float]:
    voter.update_technical(b)
    return dict(voter.technical_votes()[0].components)


def buy(conf=0.9):
    """Discrete outputs choosing action 2 (target +1) with probability ``conf``."""
    return {"action": 2, "probs": [(1 - conf) / 2, (1 - conf) / 2, conf]}


def sell(conf=0.9):
    return {"action": 0, "probs": [conf, (1 - conf) / 2, (1 - conf) / 2]}


def q_buy(q=5.0):
    """Q-values choosing action 2 (target +1)."""
    return {"action": 2, "q_values": [0.0, 0.0, q]}


def q_sell(q=5.0):
    return {"action": 0, "q_values": [q, 0.0, 0.0]}


def probs_members(*weights: float) -> tuple[MemberSpec, ...]:
    return tuple(MemberSpec(f"m{i}", "probs", w, (-1.0, 0.0, 1.0)) for i, w in enumerate(weights))


def tf_features(*rsis: float) -> np.ndarray:
    """A 4-timeframe vector whose first bar votes +0.25 (RSI 25) or -0.25 (RSI 75) per timeframe.

    On a first bar four components are available (rsi_level, bb_pctb, patterns,
    sr_breakout): only rsi_level is non-zero, so the vote is +-1/4.
    """
    return np.concatenate([block(rsi=r) for r in rsis])


# ----------------------------------------------------------------------- technical rules


def test_rsi_level_votes_buy_below_30_sell_above_70():
    v = one_tf()
    assert components(v, block(rsi=25.0))["rsi_level"] == 1.0
    assert components(v, block(rsi=75.0))["rsi_level"] == -1.0
    assert components(v, block(rsi=50.0))["rsi_level"] == 0.0
    assert components(v, block(rsi=30.0))["rsi_level"] == 0.0   # strict thresholds
    assert math.isnan(components(v, block(rsi=math.nan))["rsi_level"])


def _divergence_stream(closes, rsis, **kw):
    v = one_tf(divergence_window=5, divergence_min_gap=2, **kw)
    return [components(v, block(close=c, rsi=r))["rsi_divergence"] for c, r in zip(closes, rsis)]


def test_bullish_divergence_lower_low_in_price_higher_low_in_rsi():
    # Bar 6: close 94 undercuts the window's low (95 at bar 2) while RSI 35 > 30.
    out = _divergence_stream([100, 98, 95, 97, 99, 98, 94], [50, 40, 30, 45, 55, 50, 35])
    assert all(math.isnan(x) for x in out[:5])       # t < window
    assert out[5] == 0.0
    assert out[6] == 1.0


def test_bearish_divergence_higher_high_in_price_lower_high_in_rsi():
    out = _divergence_stream([100, 102, 105, 103, 101, 102, 106], [50, 60, 70, 55, 45, 50, 65])
    assert out[6] == -1.0


def test_no_divergence_when_rsi_confirms_the_new_low_or_the_low_is_too_recent():
    assert _divergence_stream([100, 98, 95, 97, 99, 98, 94], [50, 40, 30, 45, 55, 50, 25])[6] == 0.0
    # The prior low is the previous bar (gap 1 < min_gap 2).
    assert _divergence_stream([100, 99, 98, 97, 96, 95, 94], [50, 40, 30, 20, 15, 10, 35])[6] == 0.0
    # Bar 0 (close 90, RSI 20) left the 5-bar window: the prior low is 96 at bar 4 (RSI 40),
    # which RSI 30 confirms; against bar 0 it would have been a divergence.
    assert _divergence_stream([90, 99, 98, 97, 96, 97, 89], [20, 50, 50, 50, 40, 50, 30])[6] == 0.0


def test_macd_cross_and_histogram_sign_and_slope():
    v = one_tf()
    first = components(v, block(hist=-0.2))
    assert math.isnan(first["macd_cross"]) and math.isnan(first["macd_histogram"])
    c = components(v, block(hist=0.1))         # -0.2 -> 0.1: crosses up, positive and rising
    assert (c["macd_cross"], c["macd_histogram"]) == (1.0, 1.0)
    c = components(v, block(hist=0.05))        # positive but falling
    assert (c["macd_cross"], c["macd_histogram"]) == (0.0, 0.0)
    c = components(v, block(hist=-0.1))        # crosses down, negative and falling
    assert (c["macd_cross"], c["macd_histogram"]) == (-1.0, -1.0)
    c = components(v, block(hist=-0.05))       # negative and rising
    assert (c["macd_cross"], c["macd_histogram"]) == (0.0, 0.0)
    c = components(v, block(hist=0.0))         # touching zero is not a cross yet ...
    assert c["macd_cross"] == 0.0 and c["macd_histogram"] == 0.5
    assert components(v, block(hist=0.2))["macd_cross"] == 1.0   # ... leaving it upwards is


def test_percent_b_votes_against_closes_outside_the_bands():
    v = one_tf()
    assert components(v, block(pctb=-0.1))["bb_pctb"] == 1.0
    assert components(v, block(pctb=1.2))["bb_pctb"] == -1.0
    assert components(v, block(pctb=0.0))["bb_pctb"] == 0.0
    assert components(v, block(pctb=1.0))["bb_pctb"] == 0.0


def _squeeze_stream(widths, pctbs):
    v = one_tf(squeeze_window=5, squeeze_tolerance=0.05, squeeze_memory=3)
    return [components(v, block(width=w, pctb=p))["bb_squeeze"] for w, p in zip(widths, pctbs)]


def test_squeeze_then_close_above_the_upper_band_is_a_bullish_breakout():
    # Bar 4's width 0.02 is the 5-bar minimum (a squeeze); bar 5 closes above the band.
    out = _squeeze_stream([0.05, 0.05, 0.05, 0.05, 0.02, 0.04], [0.5] * 5 + [1.3])
    assert all(math.isnan(x) for x in out[:5])
    assert out[5] == 1.0


def test_squeeze_then_close_below_the_lower_band_is_a_bearish_breakout():
    assert _squeeze_stream([0.05, 0.05, 0.05, 0.05, 0.02, 0.04], [0.5] * 5 + [-0.2])[5] == -1.0


def test_close_outside_the_bands_without_a_recent_squeeze_is_no_breakout():
    # Widening bands: never within 5% of the window's minimum after the window fills.
    assert _squeeze_stream([0.01, 0.02, 0.03, 0.04, 0.05, 0.06], [0.5] * 5 + [1.3])[5] == 0.0
    # Squeeze at bar 4, breakout at bar 8: 4 bars later > squeeze_memory 3.
    out = _squeeze_stream([0.05, 0.05, 0.05, 0.05, 0.02, 0.04, 0.05, 0.06, 0.07], [0.5] * 8 + [1.3])
    assert out[8] == 0.0
    out = _squeeze_stream([0.05, 0.05, 0.05, 0.05, 0.02, 0.04, 0.05, 0.06], [0.5] * 7 + [1.3])
    assert out[7] == 1.0   # 3 bars later: still counts


def test_pattern_votes_sum_the_reliable_patterns_scaled():
    v = one_tf()
    assert components(v, block(engulfing=100.0))["patterns"] == 1.0
    assert components(v, block(engulfing=-80.0))["patterns"] == -0.8
    assert components(v, block(hammer=100.0, shootingstar=-100.0))["patterns"] == 0.0
    assert components(v, block(doji=100.0, spinningtop=-100.0))["patterns"] == 0.0   # weight 0
    assert components(v, block(hammer=100.0, morningstar=100.0, engulfing=100.0))["patterns"] == 1.0
    scaled = one_tf(pattern_scale=2.0)
    assert components(scaled, block(piercing=100.0))["patterns"] == 0.5
    assert components(scaled, block(piercing=100.0, **{"3whitesoldiers": 100.0}))["patterns"] == 1.0
    assert DEFAULT_PATTERN_WEIGHTS["CDLDOJI"] == 0.0 and DEFAULT_PATTERN_WEIGHTS["CDLENGULFING"] == 1.0


def test_support_resistance_breakout_votes_its_direction():
    v = one_tf()
    assert components(v, block(sr=1.0))["sr_breakout"] == 1.0
    assert components(v, block(sr=-1.0))["sr_breakout"] == -1.0
    assert components(v, block(sr=0.0))["sr_breakout"] == 0.0


def test_timeframe_vote_is_the_weighted_mean_of_available_components():
    # First bar: divergence, MACD and squeeze are unavailable; rsi_level +1, sr +1, rest 0.
    v = one_tf()
    v.update_technical(block(rsi=25.0, sr=1.0))
    assert v.technical_votes()[0].vote == pytest.approx((1 + 0 + 0 + 1) / 4)
    w = one_tf(component_weights={"rsi_level": 3.0, "patterns": 0.0})
    w.update_technical(block(rsi=25.0, sr=1.0))
    assert w.technical_votes()[0].vote == pytest.approx((3 + 0 + 1) / 5)
    n = one_tf()
    n.update_technical(np.full(BLOCK, np.nan))
    assert math.isnan(n.technical_votes()[0].vote)


def test_only_the_timeframes_in_the_mask_advance():
    v = Voter(VotingParams(MEMBERS))
    v.update_technical(tf_features(25, 25, 25, 25))
    v.update_technical(tf_features(75, 75, 75, 75), updated=0b0100)
    assert [t.components["rsi_level"] for t in v.technical_votes()] == [1.0, 1.0, -1.0, 1.0]


# ----------------------------------------------------------------------- members


def test_member_targets_and_confidences_from_probs_q_values_and_continuous_actions():
    mr = MemberSpec("mean_revert", "q_values", 0.35, (-1.0, 0.0, 1.0), temperature=2.0)
    v = Voter(VotingParams((TREND, mr, VOLATILITY), timeframes=("1m",)))
    r = v.vote({"trend": {"action": [1], "probs": [[0.2, 0.7, 0.1]]},
                "mean_revert": {"action": 2, "q_values": [1.0, 2.0, 3.0]},
                "volatility": {"action": [[1.7, -5.0]]}})
    trend, rev, vol = r.members
    assert (trend.target, trend.confidence, trend.side) == (0.0, 0.7, 0)
    q = np.array([1.0, 2.0, 3.0]) / 2.0
    assert rev.target == 1.0 and rev.confidence == pytest.approx(np.exp(q[2]) / np.exp(q).sum(), rel=1e-14)
    assert (vol.target, vol.confidence, vol.side) == (1.0, 1.0, 1)
    r = v.vote([sell(), {"action": 0, "q_values": [1.0, 0.0, 0.0]}, {"action": -0.03}])
    assert (r.members[2].target, r.members[2].confidence, r.members[2].side) == (-0.03, 0.03, 0)


def test_member_specs_from_manifests():
    ppo = {"name": "trend", "algorithm": "PPO", "action_space": {"type": "discrete", "n": 7},
           "action_targets": default_action_targets(7)}
    dqn = {"name": "mr", "algorithm": "DQN", "action_space": {"type": "discrete", "n": 3}, "action_targets": None}
    sac = {"name": "vol", "algorithm": "SAC", "action_space": {"type": "box", "low": [-1], "high": [1], "shape": [1]},
           "action_targets": None}
    assert MemberSpec.from_manifest(ppo, 0.4) == MemberSpec("trend", "probs", 0.4, tuple(default_action_targets(7)))
    assert MemberSpec.from_manifest(dqn, 0.35) == MemberSpec("mr", "q_values", 0.35, (-1.0, 0.0, 1.0))
    assert MemberSpec.from_manifest(sac, 0.25) == MemberSpec("vol", "continuous", 0.25)
    model = ModelConfig(weights={"trend": 0.4, "mr": 0.35, "vol": 0.25}, regime_multipliers={})
    params = VotingParams.from_config(model, {"trend": ppo, "mr": dqn, "vol": sac}, dead_band=0.1)
    assert [m.name for m in params.members] == ["trend", "mr", "vol"]
    assert (params.consensus_threshold, params.confidence_threshold, params.alignment_threshold) == (0.6, 0.7, 0.7)
    assert params.technical_weight == 0.3 and params.dead_band == 0.1 and params.block_size == BLOCK
    with pytest.raises(ConfigError, match="model.weights.vol: no manifest"):
        VotingParams.from_config(model, {"trend": ppo, "mr": dqn})


def test_failed_member_is_left_out_and_weights_renormalised():
    v = Voter(VotingParams(MEMBERS, technical_weight=0.0))
    r = v.vote({"trend": {"action": 2, "probs": [0.1, np.nan, 0.9]},
                "mean_revert": {"action": 0, "q_values": [0.0, 0.0, 0.0]},
                "volatility": {"action": [0.5]}})
    trend, rev, vol = r.members
    assert trend.status == "non_finite" and trend.failed and (trend.weight, trend.target) == (0.0, 0.0)
    assert rev.weight == pytest.approx(0.35 / 0.6) and vol.weight == pytest.approx(0.25 / 0.6)
    assert r.n_live == 2
    assert r.model_score == pytest.approx((0.35 * -1.0 + 0.25 * 0.5) / 0.6)
    v.vote([None, {"action": 7, "q_values": [0.0, 0.0, 0.0]}, {"action": [np.inf]}])
    assert v.failures == {"trend": 2, "mean_revert": 1, "volatility": 1}
    assert v.last_failures == {"trend": "run_failed", "mean_revert": "bad_action", "volatility": "non_finite"}


def test_all_members_failing_gives_no_model_vote():
    v = Voter(VotingParams(MEMBERS))
    v.update_technical(tf_features(25, 25, 25, 25))
    r = v.vote([None, {"action": 1, "q_values": [np.nan, 0.0, 0.0]}, {"action": [np.nan]}])
    assert (r.side, r.direction, r.gate, r.action) == (0, 0, "NO_MODEL_VOTE", "hold")
    assert r.denials == ({"code": "NO_MODEL_VOTE",
                          "failed": {"trend": "run_failed", "mean_revert": "non_finite", "volatility": "non_finite"}},)
    assert r.technical_score == 0.25 and r.confidence == 0.0 and r.consensus == 0.0
    # A zero-weight regime for the only live member is no model vote either.
    r = v.vote([buy(), None, None], regime_multipliers={"trend": 0.0})
    assert r.gate == "NO_MODEL_VOTE"


# ----------------------------------------------------------------------- voting and fusion


def test_weighted_and_majority_voting_can_disagree():
    outs = [{"action": 2, "probs": [0.0, 0.0, 1.0]}, {"action": 0, "q_values": [1.0, 0.0, 0.0]},
            {"action": [0.1]}]
    # trend +1 (0.4), mean_revert -1 (0.35), volatility +0.1 (0.25)
    w = Voter(VotingParams(MEMBERS, technical_weight=0.0)).vote(outs)
    m = Voter(VotingParams(MEMBERS, technical_weight=0.0, voting="majority")).vote(outs)
    assert w.model_score == pytest.approx(0.4 - 0.35 + 0.025)      # 0.075: buy
    assert m.model_score == pytest.approx(0.4 - 0.35 + 0.25)       # 0.3: buy
    outs[2] = {"action": [-0.2]}
    w = Voter(VotingParams(MEMBERS, technical_weight=0.0)).vote(outs)
    m = Voter(VotingParams(MEMBERS, technical_weight=0.0, voting="majority")).vote(outs)
    assert w.model_score == pytest.approx(0.4 - 0.35 - 0.05) and w.direction == 0   # 0.0: no direction
    assert m.model_score == pytest.approx(0.4 - 0.35 - 0.25) and m.direction == -1  # -0.2: sell
    assert w.gate == "NO_DIRECTION" and w.denials[0]["dead_band"] == 0.05


def test_regime_multipliers_scale_the_weights():
    v = Voter(VotingParams(MEMBERS, technical_weight=0.0))
    r = v.vote([buy(), q_sell(), {"action": [0.0]}], regime_multipliers={"trend": 1.5, "mean_revert": 0.5})
    total = 0.4 * 1.5 + 0.35 * 0.5 + 0.25
    assert [m.weight for m in r.members] == pytest.approx([0.6 / total, 0.175 / total, 0.25 / total])
    assert r.model_score == pytest.approx((0.6 - 0.175) / total)


def test_all_gates_pass_with_confident_agreeing_members_and_aligned_timeframes():
    v = Voter(VotingParams(MEMBERS))
    r = v.vote([buy(0.9), {"action": 2, "q_values": [0.0, 0.0, 10.0]}, {"action": [1.0]}],
               tf_features(25, 25, 25, 25))
    m_conf = (0.4 * 0.9 + 0.35 / (2 * np.exp(-10.0) + 1) + 0.25 * 1.0) / 1.0
    tech = 0.25
    assert r.technical_score == tech and r.alignment == 1.0 and r.consensus == 1.0
    assert r.score == pytest.approx(0.7 * 1.0 + 0.3 * tech)
    assert r.model_confidence == pytest.approx(m_conf)
    assert r.technical_agreement == pytest.approx((1 + tech) / 2)
    assert r.confidence == pytest.approx(0.5 * m_conf + 0.25 * (1 + tech) / 2 + 0.25 * 1.0)
    assert (r.side, r.gate, r.gates, r.target, r.action) == (1, "PASS", (), 1.0, "buy")
    json.dumps(r.reasoning(), allow_nan=False)


def test_consensus_gate_denies_with_its_numbers():
    v = Voter(VotingParams(probs_members(0.5, 0.3, 0.2), technical_weight=0.0, consensus_threshold=0.75,
                           confidence_threshold=0.0, alignment_threshold=0.0))
    r = v.vote([buy(), sell(), buy()])
    assert r.direction == 1 and r.consensus == pytest.approx(0.7)
    assert (r.side, r.gate, r.gates) == (0, "LOW_CONSENSUS", ("LOW_CONSENSUS",))
    assert r.denials == ({"code": "LOW_CONSENSUS", "consensus": r.consensus, "threshold": 0.75},)
    assert r.target == 1.0   # mean target of the agreeing members, reported even when denied


def test_consensus_exactly_at_the_threshold_passes():
    # 3 of 5 equal members: 0.6 in decimal, a hair below in binary sums.
    v = Voter(VotingParams(probs_members(*[0.2] * 5), technical_weight=0.0, confidence_threshold=0.0,
                           alignment_threshold=0.0))
    r = v.vote([buy(), buy(), buy(), sell(), sell()])
    assert r.consensus == pytest.approx(0.6) and r.gate == "PASS" and r.side == 1


def test_confidence_gate_denies_with_its_numbers():
    # M = 0.6, T = 0.5 (no technical vote), A = 0: confidence = 0.5*0.6 + 0.25*0.5 = 0.425.
    v = Voter(VotingParams(MEMBERS, alignment_threshold=0.0))
    r = v.vote([buy(0.6), {"action": 2, "q_values": [0.0, 0.0, 0.0]}, {"action": [0.6]}],
               regime_multipliers=[1.0, 0.0, 1.0])
    assert r.model_confidence == pytest.approx(0.6) and r.confidence == pytest.approx(0.425)
    assert (r.side, r.gates) == (0, ("LOW_CONFIDENCE",))
    assert r.denials == ({"code": "LOW_CONFIDENCE", "confidence": r.confidence, "threshold": 0.7},)


def test_alignment_gate_denies_with_its_numbers():
    v = Voter(VotingParams(MEMBERS, confidence_threshold=0.0))
    outs = [buy(), q_buy(), {"action": [1.0]}]
    r = v.vote(outs, tf_features(25, 25, 75, 75))   # 2 of 4 timeframes agree
    assert r.technical_score == 0.0 and r.alignment == 0.5
    assert (r.side, r.gates) == (0, ("LOW_ALIGNMENT",))
    assert r.denials == ({"code": "LOW_ALIGNMENT", "alignment": 0.5, "threshold": 0.7},)
    v = Voter(VotingParams(MEMBERS, confidence_threshold=0.0))
    r = v.vote(outs, tf_features(25, 25, 25, 75))   # 3 of 4
    assert r.alignment == 0.75 and r.side == 1 and r.technical_score == pytest.approx(0.125)


def test_timeframe_weights_weigh_the_alignment_and_the_technical_score():
    v = Voter(VotingParams(MEMBERS, timeframe_weights={"1h": 3.0}, confidence_threshold=0.0))
    r = v.vote([buy(), q_buy(), {"action": [1.0]}], tf_features(25, 25, 25, 75))
    assert r.alignment == pytest.approx(3 / 6)
    assert r.technical_score == pytest.approx((0.25 * 3 - 0.25 * 3) / 6)
    assert r.gates == ("LOW_ALIGNMENT",)


def test_every_failing_gate_is_listed_in_order():
    v = Voter(VotingParams(probs_members(0.5, 0.3, 0.2), technical_weight=0.0, consensus_threshold=0.75))
    r = v.vote([buy(0.5), sell(), buy(0.5)])
    assert r.gate == "LOW_CONSENSUS" and r.gates == ("LOW_CONSENSUS", "LOW_CONFIDENCE", "LOW_ALIGNMENT")
    assert [d["code"] for d in r.denials] == list(r.gates)


# ----------------------------------------------------------------------- validation and state


@pytest.mark.parametrize("kwargs,message", [
    ({"squeeze_window": 200}, "squeeze_window=200: must be an integer in \\[2, 127\\]"),
    ({"divergence_min_gap": 30}, "divergence_min_gap=30"),
    ({"rsi_oversold": 70.0}, "model.vote.rsi_oversold=70.0: must be < model.vote.rsi_overbought"),
    ({"component_weights": {"rsi": 1.0}}, "model.vote.component_weights.rsi: unknown"),
    ({"pattern_weights": {"CDLHAMMER": -1.0}}, "model.vote.pattern_weights.CDLHAMMER=-1.0: must be >= 0"),
    ({"confidence_weights": {"model": 0, "technical": 0, "alignment": 0}}, "confidence_weights"),
    ({"timeframe_weights": {"4h": 1.0}}, "timeframe_weights\\['4h'\\]: unknown"),
    ({"voting": "unanimous"}, "voting='unanimous'"),
    ({"consensus_threshold": 1.5}, "consensus_threshold=1.5: must be in \\[0, 1\\]"),
    ({"dead_band": 1.0}, "dead_band=1.0"),
    ({"rsi_index": 2}, "rsi_index=2"),
    ({"members": probs_members(*[0.1] * 9)}, "members: give 1 to 8"),
    ({"members": probs_members(0.0, 0.0)}, "every weight is zero"),
])
def test_invalid_parameters_are_rejected_naming_them(kwargs, message):
    kwargs = {"members": MEMBERS, **kwargs}
    with pytest.raises(ConfigError, match=message):
        VotingParams(**kwargs)


def test_invalid_member_specs_are_rejected():
    with pytest.raises(ConfigError, match="kind='logits'"):
        MemberSpec("a", "logits", 1.0, (0.0,))
    with pytest.raises(ConfigError, match="action_targets\\[1\\]=1.5"):
        MemberSpec("a", "probs", 1.0, (0.0, 1.5))
    with pytest.raises(ConfigError, match="temperature=0"):
        MemberSpec("a", "q_values", 1.0, (0.0,), temperature=0)
    with pytest.raises(ConfigError, match="weight=-1"):
        MemberSpec("a", "continuous", -1)


@pytest.mark.parametrize("outputs,mult,message", [
    ([{"action": 2, "probs": [0.5, 0.5]}, buy(), {"action": [0.1]}], None, "2 values for 3 actions"),
    ([{"probs": [0.1, 0.1, 0.8]}, buy(), {"action": [0.1]}], None, "'action' output"),
    ([buy(), {"action": 1, "probs": [0, 1, 0]}, {"action": [0.1]}], None, "missing the 'q_values'"),
    ([buy(), {"action": [1, 2], "q_values": [0, 1, 0]}, {"action": [0.1]}], None, "one discrete action"),
    ([{"action": 1.5, "probs": [0, 1, 0]}, buy(), {"action": [0.1]}], None, "integer index"),
    ([buy(), q_buy()], None, "2 entries for 3 members"),
    ({"trend": buy()}, None, "missing members"),
    ([buy(), q_buy(), {"action": [0.1]}], {"trnd": 1.0}, "unknown members"),
    ([buy(), q_buy(), {"action": [0.1]}], [1.0, -1.0, 1.0], "must be finite and >= 0"),
    ([buy(), q_buy(), {"action": [0.1]}], [1.0, np.nan, 1.0], "must be finite and >= 0"),
])
def test_malformed_inputs_raise_and_leave_the_state_untouched(outputs, mult, message):
    v = Voter(VotingParams(MEMBERS))
    v.update_technical(tf_features(25, 25, 25, 25))
    before = repr(v.technical_votes())
    with pytest.raises(InvalidInputError, match=message):
        v.vote(outputs, tf_features(75, 75, 75, 75), mult)
    assert repr(v.technical_votes()) == before and v.failures == {"trend": 0, "mean_revert": 0, "volatility": 0}
    with pytest.raises(InvalidInputError, match="technical_features"):
        v.vote([buy(), q_buy(), {"action": [0.1]}], np.zeros(5))


def test_reset_forgets_technical_memory_and_counters():
    v = Voter(VotingParams(MEMBERS))
    fresh = v.technical_votes()
    v.vote([None, None, None], tf_features(25, 25, 25, 25))
    assert v.failures["trend"] == 1
    v.reset()
    assert v.failures == {"trend": 0, "mean_revert": 0, "volatility": 0}
    assert repr(v.technical_votes()) == repr(fresh)


def test_flat_series_gives_finite_votes_and_no_breakout():
    state = TechnicalState()
    v = Voter(VotingParams(MEMBERS))
    for i in range(6100):   # past the 1h squeeze window (100 bars)
        mask = state.update(1_699_999_200_000 + i * 60_000, 50.0, 50.0, 50.0, 50.0, 1.0)
        v.update_technical(state.values, mask)
    for tf in v.technical_votes():
        assert math.isfinite(tf.vote)
        assert tf.components["bb_squeeze"] == 0.0 and tf.components["bb_pctb"] == 0.0
    r = v.vote([buy(), q_buy(), {"action": [1.0]}])
    assert all(math.isfinite(x) for x in (r.confidence, r.alignment, r.technical_score))


# ----------------------------------------------------------------------- properties


def _random_block(rng: np.random.Generator) -> np.ndarray:
    b = rng.normal(0.0, 1.0, BLOCK)
    b[SLOT["close"]] = 100 + rng.integers(-5, 6)           # ties in the divergence window
    b[SLOT["rsi_14"]] = rng.uniform(0, 100)
    b[SLOT["macd_hist"]] = rng.choice([-0.5, 0.0, 0.5]) * rng.uniform()
    b[SLOT["bb_pctb"]] = rng.uniform(-0.5, 1.5)
    b[SLOT["bb_width"]] = rng.choice([0.01, 0.02, 0.03, 0.05])
    b[SLOT["sr_breakout"]] = rng.integers(-1, 2)
    first_cdl = SLOT["cdl_doji"]
    b[first_cdl:] = rng.choice([0, 0, 0, 80, -80, 100, -100], BLOCK - first_cdl)
    b[rng.random(BLOCK) < 0.03] = np.nan
    return b


_score = st.floats(-1e6, 1e6) | st.sampled_from([np.nan, np.inf, -np.inf])
_prob = st.floats(0.0, 1.0) | st.sampled_from([np.nan])


@st.composite
def ensembles(draw):
    n = draw(st.integers(1, 8))
    members, outputs, mults = [], [], []
    for i in range(n):
        kind = draw(st.sampled_from(["probs", "q_values", "continuous"]))
        weight = draw(st.floats(0.0, 10.0))
        if kind == "continuous":
            members.append(MemberSpec(f"m{i}", kind, weight))
            out = {"action": [draw(st.floats(-3.0, 3.0) | st.sampled_from([np.nan, np.inf]))]}
        else:
            k = draw(st.integers(1, 7))
            targets = tuple(draw(st.lists(st.floats(-1.0, 1.0), min_size=k, max_size=k)))
            members.append(MemberSpec(f"m{i}", kind, weight, targets, draw(st.floats(0.01, 100.0))))
            scores = draw(st.lists(_prob if kind == "probs" else _score, min_size=k, max_size=k))
            out = {"action": draw(st.integers(-1, k)), kind: scores}
        outputs.append(None if draw(st.booleans()) and draw(st.booleans()) else out)
        mults.append(draw(st.floats(0.0, 3.0)))
    if not any(m.weight > 0 for m in members):
        members[0] = MemberSpec(members[0].name, members[0].kind, 1.0, members[0].action_targets,
                                members[0].temperature)
    voting = draw(st.sampled_from(["weighted", "majority"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bars = np.array([np.concatenate([_random_block(rng) for _ in range(4)]) for _ in range(draw(st.integers(1, 40)))])
    return members, outputs, mults, voting, bars


def _voted(members, outputs, mults, voting, bars):
    """Vote after streaming ``bars`` of technical features (all timeframes each bar)."""
    v = Voter(VotingParams(tuple(members), voting=voting, divergence_window=5, squeeze_window=5))
    for row in bars[:-1]:
        v.update_technical(row)
    return v.vote(outputs, bars[-1], mults)


_UNIT = ("confidence", "consensus", "alignment", "model_confidence", "technical_agreement")
_NUMBERS = _UNIT + ("target", "score", "model_score", "technical_score")


@settings(max_examples=150, deadline=None)
@given(ensembles())
def test_outputs_are_finite_and_shares_within_unit_interval(case):
    members, outputs, mults, voting, bars = case
    r = _voted(members, outputs, mults, voting, bars)
    for name in _NUMBERS:
        assert math.isfinite(getattr(r, name)), name
    for name in _UNIT:
        assert 0.0 <= getattr(r, name) <= 1.0, name
    assert abs(r.target) <= 1.0 and abs(r.model_score) <= 1.0 and abs(r.technical_score) <= 1.0
    for m, spec, out in zip(r.members, members, outputs):
        assert all(math.isfinite(x) for x in (m.target, m.confidence, m.weight))
        assert 0.0 <= m.confidence <= 1.0 and -1.0 <= m.target <= 1.0
        if out is None:
            assert m.status == "run_failed"
        elif not np.isfinite(out["action"] if spec.kind == "continuous" else out[spec.kind]).all():
            assert m.status == "non_finite"   # a non-finite output never reaches the vote
    if r.gate != "NO_MODEL_VOTE":
        assert sum(m.weight for m in r.members) == pytest.approx(1.0)
    json.dumps(r.reasoning(), allow_nan=False)


def _near_a_threshold(r) -> bool:
    th = r.thresholds
    return any(abs(a - b) < 1e-9 for a, b in (
        (abs(r.score), th["dead_band"]), (r.consensus, th["consensus"]), (r.confidence, th["confidence"]),
        (r.alignment, th["alignment"]))) or any(abs(abs(m.target) - th["dead_band"]) < 1e-12 for m in r.members)


@settings(max_examples=100, deadline=None)
@given(ensembles(), st.randoms(use_true_random=False))
def test_permuting_members_with_their_weights_changes_nothing(case, rnd):
    members, outputs, mults, voting, bars = case
    order = list(range(len(members)))
    rnd.shuffle(order)
    a = _voted(members, outputs, mults, voting, bars)
    b = _voted([members[i] for i in order], [outputs[i] for i in order], [mults[i] for i in order], voting, bars)
    assume(not _near_a_threshold(a))
    for name in _NUMBERS:
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9, abs=1e-12), name
    assert (a.side, a.direction, a.gates) == (b.side, b.direction, b.gates)
    by_name = {m.name: m for m in b.members}
    for m in a.members:
        assert by_name[m.name].status == m.status
        assert by_name[m.name].weight == pytest.approx(m.weight, rel=1e-9, abs=1e-15)


# ----------------------------------------------------------------------- kernel vs reference


def _same(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), where
        else:
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15), where
    else:
        assert a == b, where


def test_kernel_matches_reference_on_random_streams():
    rng = np.random.default_rng(7)
    gate_names = dict(GATE_CODES)
    members = (MemberSpec("p", "probs", 0.4, (-1.0, -0.5, 0.0, 0.5, 1.0)),
               MemberSpec("q", "q_values", 0.35, (-1.0, 0.0, 1.0), temperature=0.5),
               MemberSpec("c", "continuous", 0.25), MemberSpec("p2", "probs", 0.1, (-1.0, 1.0)))
    for voting in ("weighted", "majority"):
        params = VotingParams(members, voting=voting, divergence_window=6, divergence_min_gap=2, squeeze_window=5,
                              squeeze_memory=3, timeframe_weights={"1h": 2.0}, pattern_scale=1.5,
                              component_weights={"macd_histogram": 0.5}, consensus_threshold=0.5,
                              confidence_threshold=0.5, alignment_threshold=0.5)
        voter, ref = Voter(params), VoterRef(params)
        core = voter._core
        names = tuple(m.name for m in members)
        for _ in range(1500):
            features = np.concatenate([_random_block(rng) for _ in range(4)])
            mask = int(rng.integers(0, 16)) | 1
            core.technical(features, mask)
            ref.technical(features, mask)
            failed = rng.random(4) < 0.1
            actions = rng.integers(-1, 6, 4)
            values = rng.uniform(-1.5, 1.5, 4)
            scores = rng.dirichlet(np.ones(5), 4)
            scores[1, :3] = rng.normal(0, 2, 3)
            scores[rng.random((4, 5)) < 0.02] = np.nan
            values[rng.random(4) < 0.05] = np.nan
            mult = rng.uniform(0, 2, 4)
            got = core.vote(failed, actions, values, scores, mult)
            want = ref.vote(list(failed), list(actions), list(values), scores.tolist(), list(mult))
            _same(got, vote_dict(want, names, params.timeframes), voting)
            # The struct's fields the dict leaves out, as the front end derives them.
            r = voter._result(got)
            assert (r.side, r.gate, r.n_live, r.n_timeframes_live) == (
                want["side"], gate_names.get(want["gate"], "PASS"), want["n_live"], want["n_timeframes_live"])
            _same([tuple(t.components.values()) for t in r.timeframes],
                  [t["components"] for t in want["timeframes"]], voting)
        assert list(core.failures) == ref.failures and list(core.last_failures) == ref.last_failures


def test_technical_votes_match_reference_on_real_btc_stream(btc_1m_head):
    d = {k: v[:12_000] for k, v in btc_1m_head.items()}
    state = TechnicalState()
    params = VotingParams(MEMBERS)
    voter, ref = Voter(params), VoterRef(params)
    seen = np.zeros((4, len(COMPONENTS)))
    for i in range(len(d["ts"])):
        mask = state.update(int(d["ts"][i]), d["open"][i], d["high"][i], d["low"][i], d["close"][i],
                            d["volume"][i])
        features = state.values
        voter.update_technical(features, mask)
        ref.technical(features.tolist(), mask)
        if mask & 1:
            got = voter.technical_votes()
            for k, tf in enumerate(got):
                want = ref.tfs[k]
                _same(tf.vote, want.vote, f"bar {i} {tf.timeframe}")
                _same(list(tf.components.values()), [want.components[c] for c in COMPONENTS],
                      f"bar {i} {tf.timeframe}")
                seen[k] += np.nan_to_num(np.abs(list(tf.components.values()))) > 0
    # Every rule fired on the 1m and 5m timeframes of the real stream.
    assert (seen[:2] > 0).all(), seen


def test_reasoning_is_a_fresh_copy_of_the_one_dict_form():
    v = Voter(VotingParams(MEMBERS))
    r = v.vote([buy(), q_buy(), {"action": [1.0]}], tf_features(25, 25, 25, 75))
    first = r.reasoning()
    assert list(first) == ["direction", "score", "model_score", "technical_score", "consensus", "confidence",
                           "model_confidence", "technical_agreement", "alignment", "target", "gates", "members",
                           "timeframes"]
    assert first["direction"] == "buy" and first["gates"] == list(r.gates)
    assert list(first["members"]) == list(v.members)
    assert first["timeframes"] == {t.timeframe: t.vote for t in r.timeframes}
    first["members"]["trend"]["weight"] = -1.0
    assert r.reasoning()["members"]["trend"]["weight"] == r.members[0].weight


@pytest.mark.parametrize("overrides, field", [
    ({"members": MEMBERS * 3}, "members"),
    ({"members": ()}, "members"),
    ({"members": (SimpleNamespace(name="wide", kind="probs", weight=1.0, temperature=1.0,
                                  action_targets=(0.0,) * 33),)}, "action_targets"),
    ({"timeframes": ("1m",) * 9}, "timeframes"),
    ({"rsi_index": 4}, "rsi_index"),
    ({"divergence_window": 10**6}, "divergence_window"),
])
def test_the_voting_kernel_refuses_unvalidated_parameters_beyond_its_arrays(overrides, field):
    # The kernel reads its parameters by attribute; its arrays' bounds are checked whoever
    # built them, so a section that skipped validation gets a typed error, not a bad write.
    from l2fast.decision._voting import VoterCore

    with pytest.raises(InvalidInputError, match=field):
        VoterCore(Unchecked(VotingParams(MEMBERS), **overrides))

"""Pure-Python twin of :mod:`l2fast.decision._voting`, written from the formulas in
:mod:`l2fast.decision.voting`'s docstring: whole histories kept in lists, windows rescanned each bar.

:class:`VoterRef` takes the same arrays as :meth:`l2fast.decision._voting.VoterCore.vote` and
returns the VoteResult struct's fields as a dict (codes as integers); :func:`vote_dict` turns
that into the kernel's one dict form of a vote, what ``VoterCore.vote`` returns, so the two
can be streamed side by side.
"""

from __future__ import annotations

import math
from typing import Any

from l2fast.decision._voting import COMPONENTS, GATE_CODES, MEMBER_STATUSES
from l2fast.technical._candles import CANDLESTICK_PATTERNS
from l2fast.technical._features import FIRST_RSI_SLOT, SLOT_NAMES

SLACK = 1e-9

# Slots of one timeframe block.
CLOSE, MACD_HIST, BB_PCTB, BB_WIDTH, SR_BREAKOUT = (
    SLOT_NAMES.index(name) for name in ("close", "macd_hist", "bb_pctb", "bb_width", "sr_breakout"))


def finite(x: float) -> bool:
    return math.isfinite(x)


def side_of(x: float, band: float) -> int:
    return 1 if x > band else (-1 if x < -band else 0)


def sign(x: float) -> float:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def clip(x: float, lo: float = -1.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def vote_dict(result: dict[str, Any], members: tuple[str, ...], timeframes: tuple[str, ...]) -> dict[str, Any]:
    """Twin of the kernel's ``vote_dict``: :meth:`VoterRef.vote`'s result as a signal's
    ``reasoning["vote"]`` (numbers that are not finite become None)."""
    def opt(x: float) -> float | None:
        return x if finite(x) else None

    return {
        "direction": {1: "buy", -1: "sell", 0: "hold"}[result["direction"]],
        **{k: opt(result[k]) for k in ("score", "model_score", "technical_score", "consensus", "confidence",
                                       "model_confidence", "technical_agreement", "alignment", "target")},
        "gates": [name for bit, name in GATE_CODES if bit and result["gates"] & bit],
        "members": {name: {"status": MEMBER_STATUSES[m["status"]], "side": m["side"], "target": m["target"],
                           "confidence": m["confidence"], "weight": m["weight"]}
                    for name, m in zip(members, result["members"])},
        "timeframes": {tf: opt(t["vote"]) for tf, t in zip(timeframes, result["timeframes"])},
    }


class TimeframeRef:
    """The technical vote of one timeframe, one closed bar at a time."""

    def __init__(self, params: Any) -> None:
        self.p = params
        self.closes: list[float] = []
        self.rsis: list[float] = []
        self.hists: list[float] = []
        self.widths: list[float] = []
        self.squeezes: list[int] = []
        self.components = dict.fromkeys(COMPONENTS, math.nan)
        self.vote = math.nan

    def step(self, block: list[float]) -> None:
        p = self.p
        t = len(self.closes)
        close, rsi = block[CLOSE], block[FIRST_RSI_SLOT + p.rsi_index]
        hist, pctb, width = block[MACD_HIST], block[BB_PCTB], block[BB_WIDTH]
        c = {}

        c["rsi_level"] = math.nan if not finite(rsi) else (
            1.0 if rsi < p.rsi_oversold else -1.0 if rsi > p.rsi_overbought else 0.0)

        c["rsi_divergence"] = math.nan
        window = [j for j in range(max(0, t - p.divergence_window), t)
                  if finite(self.closes[j]) and finite(self.rsis[j])]
        if finite(close) and finite(rsi) and t >= p.divergence_window and window:
            low = min(self.closes[j] for j in window)
            high = max(self.closes[j] for j in window)
            j = max(i for i in window if self.closes[i] == low)
            k = max(i for i in window if self.closes[i] == high)
            if close < low and rsi > self.rsis[j] and t - j >= p.divergence_min_gap:
                c["rsi_divergence"] = 1.0
            elif close > high and rsi < self.rsis[k] and t - k >= p.divergence_min_gap:
                c["rsi_divergence"] = -1.0
            else:
                c["rsi_divergence"] = 0.0

        prev = self.hists[-1] if self.hists else math.nan
        if finite(hist) and finite(prev):
            c["macd_cross"] = 1.0 if prev <= 0 < hist else (-1.0 if prev >= 0 > hist else 0.0)
            c["macd_histogram"] = (sign(hist) + sign(hist - prev)) / 2
        else:
            c["macd_cross"] = c["macd_histogram"] = math.nan

        c["bb_pctb"] = math.nan if not finite(pctb) else (
            1.0 if pctb < p.pctb_low else -1.0 if pctb > p.pctb_high else 0.0)

        c["bb_squeeze"] = math.nan
        if finite(pctb) and t >= p.squeeze_window:
            recent = [s for s in self.squeezes if t - s <= p.squeeze_memory]
            c["bb_squeeze"] = (1.0 if pctb > 1 else -1.0 if pctb < 0 else 0.0) if recent else 0.0
        if finite(width) and t >= p.squeeze_window - 1:
            span = [w for w in self.widths[t - p.squeeze_window + 1:] + [width] if finite(w)]
            if width <= (1 + p.squeeze_tolerance) * min(span):
                self.squeezes.append(t)

        used = [(p.pattern_weights[name], block[FIRST_RSI_SLOT + p.n_rsi + i])
                for i, name in enumerate(CANDLESTICK_PATTERNS) if p.pattern_weights[name] != 0]
        if all(finite(x) for _, x in used):
            c["patterns"] = clip(sum(w * x for w, x in used) / 100 / p.pattern_scale)
        else:
            c["patterns"] = math.nan

        sr = block[SR_BREAKOUT]
        c["sr_breakout"] = clip(sr) if finite(sr) else math.nan

        live = [(p.component_weights[name], c[name]) for name in COMPONENTS
                if p.component_weights[name] > 0 and finite(c[name])]
        den = sum(w for w, _ in live)
        self.vote = sum(w * x for w, x in live) / den if den > 0 else math.nan
        self.components = c
        self.closes.append(close)
        self.rsis.append(rsi)
        self.hists.append(hist)
        self.widths.append(width)


class VoterRef:
    """Members, technical votes, fusion and gates (see :mod:`l2fast.decision.voting`)."""

    def __init__(self, params: Any) -> None:
        self.p = params
        self.tfs = [TimeframeRef(params) for _ in params.timeframes]
        self.failures = [0] * len(params.members)
        self.last_failures = [0] * len(params.members)

    def technical(self, features: list[float], updated: int = -1) -> None:
        size = self.p.block_size
        for i, tf in enumerate(self.tfs):
            if updated & (1 << i):
                tf.step(list(features[i * size:(i + 1) * size]))

    def member(self, i: int, failed: bool, action: int, value: float, scores: list[float]) -> tuple:
        """``(status, target, confidence)`` of member ``i``."""
        spec = self.p.members[i]
        if failed:
            return "run_failed", 0.0, 0.0
        if spec.kind == "continuous":
            if not finite(value):
                return "non_finite", 0.0, 0.0
            target = clip(value)
            return "ok", target, abs(target)
        row = list(scores[:spec.n_actions])
        if not all(finite(s) for s in row):
            return "non_finite", 0.0, 0.0
        if not 0 <= action < spec.n_actions:
            return "bad_action", 0.0, 0.0
        if spec.kind == "probs":
            conf = clip(row[action], 0.0, 1.0)
        else:
            top = max(row)
            e = [math.exp((q - top) / spec.temperature) for q in row]
            conf = e[action] / sum(e)
        return "ok", spec.action_targets[action], conf

    def vote(self, failed: list[bool], actions: list[int], values: list[float], scores: list[list[float]],
             multipliers: list[float]) -> dict[str, Any]:
        p = self.p
        members = []
        raw = []
        for i, spec in enumerate(p.members):
            status, target, conf = self.member(i, bool(failed[i]), int(actions[i]), float(values[i]),
                                               [float(s) for s in scores[i]])
            if status != "ok":
                self.failures[i] += 1
                self.last_failures[i] = MEMBER_STATUSES.index(status)
            members.append({"status": MEMBER_STATUSES.index(status), "side": side_of(target, p.dead_band),
                            "target": target, "confidence": conf})
            raw.append(spec.weight * multipliers[i] if status == "ok" else 0.0)
        total = sum(raw)

        tf_votes = [(p.timeframe_weights[name], tf.vote) for name, tf in zip(p.timeframes, self.tfs)
                    if finite(tf.vote)]
        tden = sum(b for b, _ in tf_votes)
        tech = sum(b * v for b, v in tf_votes) / tden if tden > 0 else 0.0
        result: dict[str, Any] = {
            "n_live": sum(m["status"] == 0 for m in members), "n_timeframes_live": len(tf_votes),
            "technical_score": tech,
            "timeframes": [{"vote": tf.vote, "components": tuple(tf.components[c] for c in COMPONENTS)}
                           for tf in self.tfs],
            "members": members,
        }
        if not total > 0:
            for m in members:
                m["weight"] = 0.0
            result.update(side=0, direction=0, gate=1, gates=1, target=0.0, score=0.0, model_score=0.0,
                          model_confidence=0.0, technical_agreement=0.0, consensus=0.0, alignment=0.0,
                          confidence=0.0)
            return result

        for m, r in zip(members, raw):
            m["weight"] = r / total
        if p.voting == "weighted":
            model = sum(r * m["target"] for m, r in zip(members, raw)) / total
        else:
            model = sum(r * m["side"] for m, r in zip(members, raw)) / total
        score = (1 - p.technical_weight) * model + p.technical_weight * tech
        direction = side_of(score, p.dead_band)
        agreeing = [(m, r) for m, r in zip(members, raw) if m["status"] == 0 and m["side"] == direction]
        agree = sum(r for _, r in agreeing)
        consensus = agree / total
        model_conf = sum(r * m["confidence"] for m, r in agreeing) / agree if agree > 0 else 0.0
        target = sum(r * m["target"] for m, r in agreeing) / agree if agree > 0 and direction != 0 else 0.0
        agreement = (1 + direction * tech) / 2
        aligned = sum(b for b, v in tf_votes if side_of(v, p.dead_band) == direction)
        alignment = aligned / tden if tden > 0 else 0.0
        g = p.confidence_weights
        confidence = ((g["model"] * model_conf + g["technical"] * agreement + g["alignment"] * alignment)
                      / (g["model"] + g["technical"] + g["alignment"]))

        gates = 0
        if direction == 0:
            gates = 2
        else:
            if consensus < p.consensus_threshold - SLACK:
                gates |= 4
            if confidence < p.confidence_threshold - SLACK:
                gates |= 8
            if alignment < p.alignment_threshold - SLACK:
                gates |= 16
        first = next((bit for bit, _ in GATE_CODES if gates & bit), 0)
        result.update(side=direction if gates == 0 else 0, direction=direction, gate=first, gates=gates,
                      target=target, score=score, model_score=model, model_confidence=model_conf,
                      technical_agreement=agreement, consensus=consensus, alignment=alignment,
                      confidence=confidence)
        return result

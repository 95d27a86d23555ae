"""Pure-Python twin of :mod:`l2fast.engine._telemetry`, written from the rules in _telemetry.pxd.

It keeps every latency observation and derives buckets and quantiles from them (the
kernel keeps only bucket counts), so the tests compare two different computations of the
same dict.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

# The stage names are the kernel's (names, not behaviour).
from l2fast.engine._telemetry import STAGE_NAMES

#: Latency bucket bounds (ns): 4, 5, 6, 7 times 2**6 .. 2**27, then 2**30 (4 * 2**28).
LATENCY_BOUNDS_NS = tuple(m << s for s in range(6, 28) for m in (4, 5, 6, 7)) + (1 << 30,)
CONF_BUCKETS = 10


def latency_bucket(ns: int) -> int:
    """The first bucket whose bound is >= ns (``len(LATENCY_BOUNDS_NS)``: above them all)."""
    return bisect_left(LATENCY_BOUNDS_NS, ns)


def confidence_bucket(confidence: float) -> int:
    """``floor(10 * confidence)`` in double arithmetic, kept within the 10 buckets."""
    return min(math.floor(confidence * CONF_BUCKETS), CONF_BUCKETS - 1) if confidence > 0 else 0


class MetricsRecorderRef:
    """The same counters as :class:`l2fast.engine._telemetry.MetricsRecorder` (no validation)."""

    def __init__(self, code_names: Sequence[str], member_names: Sequence[str]) -> None:
        self.code_names = tuple(code_names)
        self.member_names = tuple(member_names)
        self.observations: list[list[int]] = [[] for _ in STAGE_NAMES]
        self.sides = {"buy": 0, "sell": 0, "hold": 0}
        self.codes = [0] * len(self.code_names)
        self.confidences: list[float] = []
        self.conf_sum = 0.0
        self.cons_sum = 0.0
        n = len(self.member_names)
        self.member_votes, self.member_agree, self.member_failures = [0] * n, [0] * n, [0] * n

    def latency(self, stage: int, ns: int) -> None:
        self.observations[stage].append(ns)

    def signal(self, side: int, code: int) -> None:
        self.sides[{1: "buy", -1: "sell", 0: "hold"}[side]] += 1
        self.codes[code] += 1

    def vote(self, confidence: float, consensus: float) -> None:
        self.confidences.append(confidence)
        self.conf_sum += confidence
        self.cons_sum += consensus

    def member(self, k: int, failed: bool, member_side: int, direction: int) -> None:
        if failed:
            self.member_failures[k] += 1
        else:
            self.member_votes[k] += 1
            self.member_agree[k] += direction != 0 and member_side == direction

    def quantile(self, stage: int, q: float) -> float:
        """The bucket bound (s) of the observation of rank max(1, ceil(q n)); the largest
        observation above the last bound; NaN without observations."""
        values = sorted(self.observations[stage])
        if not values:
            return math.nan
        x = values[max(1, math.ceil(q * len(values))) - 1]
        k = latency_bucket(x)
        return (LATENCY_BOUNDS_NS[k] if k < len(LATENCY_BOUNDS_NS) else values[-1]) / 1e9

    def _stage(self, stage: int) -> dict[str, Any]:
        values = self.observations[stage]
        buckets = [[bound / 1e9, sum(1 for x in values if x <= bound)] for bound in LATENCY_BOUNDS_NS]
        buckets.append([math.inf, len(values)])
        quantiles = {f"p{round(q * 100)}_s": self.quantile(stage, q) for q in (0.50, 0.95, 0.99)}
        return {"count": len(values), "sum_s": sum(values) / 1e9, "max_s": max(values, default=0) / 1e9,
                "buckets": buckets, **{k: None if math.isnan(v) else v for k, v in quantiles.items()}}

    def as_dict(self) -> dict[str, Any]:
        votes = len(self.confidences)
        hist = [0] * CONF_BUCKETS
        for c in self.confidences:
            hist[confidence_bucket(c)] += 1
        members = {
            name: {"votes": self.member_votes[k], "agree": self.member_agree[k],
                   "agreement": self.member_agree[k] / self.member_votes[k] if self.member_votes[k] else None,
                   "failures": self.member_failures[k]}
            for k, name in enumerate(self.member_names)
        }
        return {
            "bars": sum(self.sides.values()),
            "signals": dict(self.sides),
            "codes": {name: n for name, n in zip(self.code_names, self.codes) if n},
            "votes": votes,
            "confidence": {"mean": self.conf_sum / votes if votes else None, "sum": self.conf_sum, "buckets": hist},
            "consensus": {"mean": self.cons_sum / votes if votes else None, "sum": self.cons_sum},
            "members": members,
            "latency": {name: self._stage(k) for k, name in enumerate(STAGE_NAMES)},
        }

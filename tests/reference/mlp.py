"""Pure-Python twin of :mod:`l2fast.models._mlp`: one member's forward in float64, row by row.

Written from the ONNX semantics of the exporter's graphs (l2fast/export/graph.py), not from
the kernel: the preprocessing in float64 with float32 rounding wherever the graph's working
type is float32, then every layer, activation and head in float64 with exact ``tanh`` and
``exp``. The kernel differs from it by float32 arithmetic and the tanh approximation, which
the tests bound.
"""

from __future__ import annotations

import math

import numpy as np

from l2fast.models.stacking import MlpChain

_DOUBLE, _FLOAT = 11, 1


def _activation(act: str | None, v: float) -> float:
    if act == "Tanh":
        return math.tanh(v)
    if act == "Relu":
        return max(v, 0.0)
    if act == "Sigmoid":
        return 1.0 / (1.0 + math.exp(-v))
    return v


def network_input(chain: MlpChain, raw: np.ndarray) -> list[float]:
    """The float32 values the first layer sees for one raw float32 observation."""
    x = [float(v) for v in np.asarray(raw, dtype=np.float32)]
    single = True
    for op, arg in chain.prefix:
        if op == "Cast":
            if arg == _FLOAT:
                x = [float(np.float32(v)) for v in x]
            single = arg == _FLOAT
            continue
        c = [float(v) for v in arg]
        if op == "Sub":
            x = [a - b for a, b in zip(x, c)]
        elif op == "Div":
            x = [a / b for a, b in zip(x, c)]
        elif op == "Mul":
            x = [a * b for a, b in zip(x, c)]
        else:
            x = [a + b for a, b in zip(x, c)]
        if single:
            x = [float(np.float32(v)) for v in x]
    return x


def forward(chain: MlpChain, raw: np.ndarray) -> tuple[int | list[float], list[float] | None]:
    """``(action, scores)`` of one observation: the action index and the probabilities or
    Q-values of a discrete head, or ``(box action, None)``."""
    x = network_input(chain, raw)
    for w, b, act in chain.layers:
        x = [_activation(act, float(b[j]) + sum(float(w[j, i]) * x[i] for i in range(len(x))))
             for j in range(w.shape[0])]
    if chain.head == "box":
        y = x
        if chain.unscale is not None:
            one, half, rng, low = chain.unscale
            y = [float(low[i]) + (v + one) * half * float(rng[i]) for i, v in enumerate(y)]
        for lo, hi in chain.clips:
            y = [max(min(v, float(hi[i])), float(lo[i])) for i, v in enumerate(y)]
        return y, None
    if chain.head == "categorical":
        top = max(x)
        total = sum(math.exp(v - top) for v in x)
        scores = [math.exp(v - top) / total for v in x]
    else:
        scores = x
    return scores.index(max(scores)), scores

"""Pure-Python twin of :mod:`l2fast.technical._turbulence`, written from the definition.

FinRL 0.3.7's turbulence index, one date at a time, with none of the kernel's arithmetic:
the window is kept as a list of return rows and re-summed exactly each date
(``math.fsum``, two passes), and the quadratic form ``d pinv(C) d'`` is found by a
symmetric elimination with full pivoting instead of an eigen-decomposition: a pivot
<= 1e-15 times the largest diagonal entry ends it (the rest of the matrix is then
numerically zero), so for a ``d`` in C's range, always so on real data and for constant
prices, it equals the pseudo-inverse's form.
"""

from __future__ import annotations

import math
from collections import deque

# numpy 2.x's default pinv cutoff, relative to the largest singular value.
RCOND = 1e-15


def quadratic_form(cov: list[list[float]], d: list[float]) -> float:
    """``d pinv(cov) d'`` for a symmetric PSD ``cov`` by LDL' with full (diagonal) pivoting."""
    n = len(d)
    a = [row[:] for row in cov]
    x = d[:]
    order = list(range(n))
    scale = max((abs(a[i][i]) for i in range(n)), default=0.0)
    total = 0.0
    while order:
        p = max(order, key=lambda i: a[i][i])
        pivot = a[p][p]
        if pivot <= RCOND * scale:
            break
        order.remove(p)
        # Eliminate p: the Schur complement and the matching update of d.
        total += x[p] * x[p] / pivot
        for i in order:
            f = a[i][p] / pivot
            x[i] -= f * x[p]
            for j in order:
                a[i][j] -= f * a[p][j]
    return total


class TurbulenceRef:
    """FinRL's turbulence of N assets' closes; see :class:`l2fast.technical.indicators.Turbulence`."""

    def __init__(self, n_assets: int, window: int = 252) -> None:
        self.n_assets = n_assets
        self.window = window
        self.rows: deque[list[float]] = deque(maxlen=window)
        self.prev: list[float] | None = None
        self.steps = 0
        self.positives = 0

    def update(self, closes: list[float]) -> float:
        """One date's closes in, that date's turbulence out."""
        if self.prev is None:
            self.prev = list(closes)
            self.steps = 1
            return 0.0
        r = [c / p - 1.0 for c, p in zip(closes, self.prev)]
        self.prev = list(closes)
        t = 0.0
        if self.steps >= self.window:
            m = len(self.rows)
            cols = list(zip(*self.rows))
            mean = [math.fsum(col) / m for col in cols]
            dev = [[v - mu for v in col] for col, mu in zip(cols, mean)]
            cov = [[math.fsum(a * b for a, b in zip(dj, dk)) / (m - 1) for dk in dev] for dj in dev]
            t = quadratic_form(cov, [ri - mu for ri, mu in zip(r, mean)])
            if t > 0.0:
                self.positives += 1
                if self.positives <= 2:
                    t = 0.0
            else:
                t = 0.0
        self.rows.append(r)
        self.steps += 1
        return t

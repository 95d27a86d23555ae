"""Stage 3 of a bar's path: votes fused into a side, sized, and passed through the risk gate.

- :mod:`l2fast.decision.voting`: member, technical and multi-timeframe votes, consensus and
  confidence.
- :mod:`l2fast.decision.sizing`: fractional Kelly, volatility targeting, risk parity,
  correlation.
- :mod:`l2fast.decision.risk`: stops, take-profits, daily and exposure limits, accounting.

The ``_``-prefixed modules are the compiled kernels (sources in ``csrc/l2fast/decision/``).
"""

"""Stage 1 of a bar's path: validation, aggregation, indicators, patterns and levels.

- :mod:`l2fast.technical.bars`: bar validation, gap accounting, multi-timeframe aggregation,
  CSV loading.
- :mod:`l2fast.technical.indicators`: the incremental indicators and patterns, one class each.
- :mod:`l2fast.technical.state`: :class:`~l2fast.technical.state.TechnicalState`, every
  timeframe's features in one call per bar, and the feature names models reference.

The ``_``-prefixed modules are the compiled kernels (sources in ``csrc/l2fast/technical/``).
"""

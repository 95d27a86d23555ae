"""The engine: every stage in one compiled call per bar, and its crash-safe state.

- :mod:`l2fast.engine.generator`: :class:`~l2fast.engine.generator.TacticalSignalGenerator`,
  L3's decisions and the bars in, one signal for L1 per bar.
- :mod:`l2fast.engine.snapshot`: snapshot and restore of everything the engine learnt.

The ``_``-prefixed modules are the compiled kernels (sources in ``csrc/l2fast/engine/``):
``_engine`` (the per-bar step), ``_snapshot`` (state codecs) and ``_telemetry`` (the
engine's counters and latency histograms).
"""

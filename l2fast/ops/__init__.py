"""Operating a running engine: Prometheus metrics and the live dashboard.

- :mod:`l2fast.ops.monitoring`: the engine's metrics for Prometheus and the dashboard.
- :mod:`l2fast.ops.dashboard`: the terminal dashboard.
"""

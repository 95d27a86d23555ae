"""Operating a running engine: Prometheus metrics and the live dashboard.

- :mod:`l2fast.ops.monitoring`: the engine's metrics for Prometheus and the dashboard.
- :mod:`l2fast.ops.dashboard`: the terminal dashboard.
"""

# The dashboard's defaults live here, not in l2fast.ops.dashboard, so that the CLI shows
# them in its help without rich (an optional extra) installed.
#: Seconds between two reads of Redis by ``python -m l2fast dashboard`` (``--refresh``).
DASHBOARD_REFRESH_S = 2.0
#: Bars between two redraws of the dashboard during a replay (``--dashboard-every``).
DASHBOARD_EVERY = 1_000

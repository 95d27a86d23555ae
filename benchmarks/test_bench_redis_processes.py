"""Redis end to end in the deployed layout: publisher, L2 worker and signal reader as three processes.

``test_bench_redis.py`` runs the three roles on one event loop, where their costs add up;
a desk runs them as separate processes (``python -m l2fast publish``, ``worker``,
``signals``), so that the worker's throughput is what bounds the stream. Each round
streams ``BARS`` bars through a loopback ``redis-server`` (the 2 cores shared by Redis and
the three processes); the time per bar is the round's time over ``BARS``, from the
publisher's release until the worker has handled every bar and the reader has read every
signal. Starting the processes, warming the engines and building the bars is untimed
setup (``redis_processes.Pipeline``). Two groups: the worker's default (actionable
signals: orders and holds carrying stops) and every signal published.

The issue's target, 20,000 bars/s (50 us per bar), is reported beside each gate; the gate
sits near half of the lowest ratio measured against the same three roles written with
redis-py alone.
"""

from __future__ import annotations

import pytest

pytest.importorskip("redis")

from redis_processes import Pipeline, expected_signals
from test_bench_redis import redis_url  # noqa: F401  (the module's Redis server fixture)

GROUP = "redis end to end per bar, three processes"
BARS = 20_000
ROUNDS = 3
MODES = ("actionable", "all")
# Measured 0.90-1.09x with actionable signals (41-49 us per bar: 20,300-24,500 bars/s; the
# worker busy all the time, the engine 22-30 us of it) and 1.39-1.78x with every signal
# (73-92 us against 125-130 us; all four processes short of CPU) on the 2-core
# development machine.
GATE = 0.45
TARGET = 1.0
OURS_TARGET_S = 50e-6


@pytest.fixture(scope="module")
def expected() -> dict[str, int]:
    return {mode: expected_signals(BARS, mode) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["l2fast.bus (redis), 3 processes", "redis-py loop, 3 processes"])
def test_redis_three_processes(bench, redis_url: str, expected: dict[str, int], impl: str,  # noqa: F811
                               mode: str) -> None:
    which = "ours" if impl.startswith("l2fast") else "plain"
    group = f"{GROUP}, {mode} signals"
    if which == "ours":
        b = bench(group, impl, calls=BARS, ours_target_s=OURS_TARGET_S)
    else:
        b = bench(group, impl, gate=GATE, target=TARGET, calls=BARS)
    pipelines: list[Pipeline] = []

    def setup() -> tuple[tuple[Pipeline], dict]:
        while pipelines:
            pipelines.pop().close()
        pipelines.append(Pipeline(which, redis_url, BARS, mode, expected[mode]))
        return (pipelines[-1],), {}

    try:
        b.pedantic(Pipeline.run, setup=setup, rounds=ROUNDS)
    finally:
        while pipelines:
            pipelines.pop().close()

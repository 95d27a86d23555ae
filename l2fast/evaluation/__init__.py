"""Evaluating the engine offline: replay, a paper L1, the backtest and its report.

- :mod:`l2fast.evaluation.replay`: recorded bars through the engine and a paper L1.
- :mod:`l2fast.evaluation.paper`: the paper execution layer.
- :mod:`l2fast.evaluation.backtest`: :func:`~l2fast.evaluation.backtest.run_benchmark`, the
  honest walk over a test period against baselines.
- :mod:`l2fast.evaluation.performance`: trading and signal metrics (pure functions).
- :mod:`l2fast.evaluation.report`: the backtest's Markdown, JSON and plots.
- :mod:`l2fast.evaluation.synthetic`: seeded synthetic bars for demos and tests.
"""

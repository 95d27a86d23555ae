"""Recipes that train, validate and export l2fast's shipped demo agents.

Run ``python -m training.train_agents`` from the repository root (see ``training/README.md``).
These scripts need the ``export`` extra (torch, stable-baselines3, gymnasium,
scikit-learn); the l2fast runtime never imports them.
"""

"""l2fast: the tactical layer (L2) of a three-layer crypto trading system.

The per-bar work runs in a compiled Cython core (the ``_``-prefixed
extension modules of ``l2fast.technical``, ``l2fast.decision`` and ``l2fast.engine``). There is no
pure-Python fallback: importing l2fast without the built extension fails loudly.
"""

from __future__ import annotations

try:
    from l2fast.technical import _averages  # noqa: F401  (probe the build)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "l2fast's compiled core (e.g. l2fast.technical._averages) is missing or was built for another "
        "Python. Build it with `pip install .` (or `pip install -e .` in a checkout); "
        "there is no pure-Python fallback."
    ) from exc

__version__ = "0.1.0"

__all__ = [
    "L2Config",
    "StrategicDecision",
    "TacticalSignal",
    "TacticalSignalGenerator",
    "__version__",
    "validate_models",
]

# Public name -> defining module. Loaded on first use: onnxruntime and numpy are imported
# only when model code is first needed, keeping `import l2fast` light.
_LAZY = {
    "L2Config": "l2fast.config",
    "StrategicDecision": "l2fast.signals",
    "TacticalSignal": "l2fast.signals",
    "TacticalSignalGenerator": "l2fast.engine.generator",
    "validate_models": "l2fast.models.loading",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'l2fast' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""l2fast: the tactical layer (L2) of a three-layer crypto trading system.

The per-bar work runs in a compiled Cython core (``l2fast._core``). There is no
pure-Python fallback: importing l2fast without the built extension fails loudly.
"""

from __future__ import annotations

try:
    from l2fast._core import averages as _averages  # noqa: F401  (probe the build)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "l2fast's compiled core (l2fast._core) is missing or was built for another "
        "Python. Build it with `pip install .` (or `pip install -e .` in a checkout); "
        "there is no pure-Python fallback."
    ) from exc

__version__ = "0.1.0"

__all__ = ["__version__", "validate_models"]


def __getattr__(name: str) -> object:
    # onnxruntime loads only when model code is first used, keeping `import l2fast` light.
    if name == "validate_models":
        from l2fast.models import validate_models

        return validate_models
    raise AttributeError(f"module 'l2fast' has no attribute {name!r}")

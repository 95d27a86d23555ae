"""The compiled kernels sit below the Python layer: they import nothing of it but the errors.

The Python layer validates and hands the kernels plain values, typed buffers and
duck-typed config sections; a kernel importing ``l2fast.config`` (or any other Python
module of l2fast) would make the layers depend on each other both ways.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"
KERNEL_SOURCES = sorted(CSRC.rglob("*.pyx")) + sorted(CSRC.rglob("*.pxd"))
# A Python-level import of an l2fast module at any indentation (``cimport`` does not match).
PY_IMPORT = re.compile(r"^\s*(?:from\s+(l2fast[\w.]*)\s+import\s|import\s+(l2fast[\w.]*))", re.M)
ALLOWED = re.compile(r"l2fast\.errors|l2fast\.\w+\._\w+|l2fast\._\w+")


def _kernel_modules() -> list[str]:
    return [".".join(p.relative_to(CSRC).with_suffix("").parts) for p in sorted(CSRC.rglob("*.pyx"))]


def test_the_kernel_sources_exist():
    assert len(KERNEL_SOURCES) > 20, f"no kernel sources under {CSRC}"


@pytest.mark.parametrize("source", KERNEL_SOURCES, ids=lambda p: str(p.relative_to(CSRC)))
def test_a_kernel_imports_only_kernels_and_errors(source: Path):
    text = source.read_text()
    imported = [m.group(1) or m.group(2) for m in PY_IMPORT.finditer(text)]
    assert [name for name in imported if not ALLOWED.fullmatch(name)] == []


def test_importing_every_kernel_loads_no_python_module_of_l2fast_but_the_errors():
    # In a fresh interpreter: the package's own __init__ is lazy, so whatever else of
    # l2fast is loaded after importing the kernels was pulled in by a kernel.
    modules = _kernel_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "kernels = set(" + repr(modules) + ")\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('l2fast') and m not in kernels)\n"
        "print('\\n'.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    stage_packages = {"l2fast", "l2fast.technical", "l2fast.decision", "l2fast.engine", "l2fast.models"}
    assert sorted(set(out) - stage_packages) == ["l2fast.errors"]

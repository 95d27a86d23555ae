"""Build the compiled core: every csrc/l2fast/<stage>/_<name>.pyx becomes l2fast.<stage>._<name>.

The kernels live beside the Python layer of the stage they serve (csrc/ mirrors l2fast/).

Set ``L2FAST_DEBUG=1`` to turn bounds, initialisation and None checks back on, and
``L2FAST_MODULES=a,b`` to build only those modules (a developer's quick rebuild).
"""

import hashlib
import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("L2FAST_DEBUG", "0") not in ("", "0")

ONLY = {m for m in os.environ.get("L2FAST_MODULES", "").split(",") if m}

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# No -ffast-math and no -march=native: results must stay bit-identical to TA-Lib's
# plain IEEE arithmetic, and FMA contraction would change the last bits.
COMPILE_ARGS = ["-O0", "-g"] if DEBUG else ["-O3", "-ffp-contract=off"]

# Engine snapshots hold raw struct bytes, valid only for the same state layout: a hash of
# every .pxd (the structs' contract) is compiled in, and a snapshot records it.
LAYOUT_HASH = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(Path("csrc").rglob("*.pxd")))
).hexdigest()[:16]

extensions = [
    Extension(
        ".".join(pyx.relative_to("csrc").with_suffix("").parts),
        [str(pyx)],
        include_dirs=[np.get_include(), "csrc"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("L2F_LAYOUT_HASH", f'"{LAYOUT_HASH}"')],
        extra_compile_args=COMPILE_ARGS,
    )
    for pyx in sorted(Path("csrc").rglob("*.pyx"))
    if not ONLY or pyx.stem.lstrip("_") in ONLY
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        compiler_directives=DIRECTIVES,
        build_dir="build/cython-debug" if DEBUG else "build/cython",
    )
)

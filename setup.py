"""Builds the one C extension, manygil._native (process-wide channels, blocks, locks).

Its sources are split by object kind (src/manygil/_native_*.c, as CPython's
Modules/_sqlite/), share one internal header (_native.h), and reach the operating
system only through the platform layer (mg_platform.c/.h).
"""

import sys
from glob import glob

from setuptools import Extension, setup

if sys.platform == "win32":  # MSVC
    flags = ["/O2", "/std:c11", "/W3"]
else:
    # -fvisibility=hidden: the files' shared functions stay inside the extension (only
    # PyInit__native, marked by PyMODINIT_FUNC, is exported).
    flags = ["-O2", "-std=c11", "-Wall", "-fvisibility=hidden"]

setup(
    ext_modules=[
        Extension(
            "manygil._native",
            sources=sorted(glob("src/manygil/_native_*.c")) + ["src/manygil/_copier.c", "src/manygil/mg_platform.c"],
            depends=sorted(glob("src/manygil/*.h")),
            extra_compile_args=flags,
        )
    ]
)

"""Build the Cython fast paths in src/_fastpath/.

One extension per .pyx file. Per-module C sources and libraries are declared in
the .pyx itself with ``# distutils:`` comments, so adding a module never means
editing this file.

Environment switches:
  STORAGE_NODE_DEBUG=1   build with -O0 -g and Cython's line tracing off/asserts on
  STORAGE_NODE_CFLAGS    extra compiler flags (appended)
  STORAGE_NODE_ONLY=a,b  build only these modules (while developing one of them)
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("STORAGE_NODE_DEBUG") == "1"
cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
cflags += ["-Wno-unused-function", "-Wno-deprecated-declarations"]
cflags += os.environ.get("STORAGE_NODE_CFLAGS", "").split()

ONLY = set(filter(None, os.environ.get("STORAGE_NODE_ONLY", "").split(",")))

extensions = []
for pyx in sorted(glob.glob("src/_fastpath/*.pyx")):
    stem = os.path.splitext(os.path.basename(pyx))[0]
    if ONLY and stem not in ONLY:
        continue
    name = "_fastpath." + stem
    extensions.append(
        Extension(
            name,
            [pyx],
            include_dirs=["src/_fastpath", numpy.get_include()],
            extra_compile_args=cflags,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        include_path=["src/_fastpath"],
    ),
)

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

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("STORAGE_NODE_DEBUG") == "1"
# -g0 in a normal build: Python's own CFLAGS carry -g, whose debug info would name
# the compiler's and Python's header directories inside every .so; the built
# modules name nothing outside the repository.
cflags = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
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
            # relative, and no numpy headers (no module cimports numpy): Cython
            # records the include directories in each generated .c
            include_dirs=["src/_fastpath"],
            extra_compile_args=cflags,
        )
    )

class BuildExt(build_ext):
    """The interpreter's link command may carry ``-Wl,-rpath,<its lib directory>``
    (a pyenv build does): our modules link none of Python's libraries, so it goes,
    and a built module names no directory of the machine that built it."""

    def build_extensions(self):
        for attr in ("linker_so", "linker_so_cxx"):
            command = getattr(self.compiler, attr, None)
            if command:
                setattr(self.compiler, attr,
                        [arg for arg in command if not arg.startswith("-Wl,-rpath")])
        super().build_extensions()


setup(
    cmdclass={"build_ext": BuildExt},
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

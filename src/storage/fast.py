"""Pick the compiled fast paths, or their pure-Python twins.

Every module in ``_fastpath`` has a twin in ``storage.pure`` with the same names,
signatures and exceptions. The compiled one is used unless the environment says
``STORAGE_NODE_PURE=1`` (for debugging). A missing extension is an ImportError,
never a silent fallback.
"""
import importlib
import os

PURE = os.environ.get("STORAGE_NODE_PURE") == "1"


def load(name):
    """Return the module ``name`` from ``_fastpath`` (or ``storage.pure`` when PURE)."""
    package = "storage.pure" if PURE else "_fastpath"
    return importlib.import_module(f"{package}.{name}")

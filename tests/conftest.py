import importlib

import pytest


def twin_params(name):
    """pytest params running a test against the compiled module and its twin."""
    return [
        pytest.param(f"_fastpath.{name}", id="fast"),
        pytest.param(f"storage.pure.{name}", id="pure"),
    ]


def import_twin(modname):
    return importlib.import_module(modname)

"""Every compiled module in ``_fastpath`` has its pure-Python twin in ``storage.pure``
with the same public names (``storage.fast.load`` picks one or the other)."""
import importlib
import pathlib
import types

import pytest

FASTPATH = pathlib.Path(__file__).resolve().parent.parent / "src" / "_fastpath"
MODULES = sorted(p.stem for p in FASTPATH.glob("*.pyx"))


def api(module):
    """The names ``module`` exports: its ``__all__``, else its public functions and
    classes (a module without ``__all__`` also shows what it imported)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [k for k, v in vars(module).items() if not k.startswith("_")
                 and callable(v) and not isinstance(v, types.ModuleType)
                 and getattr(v, "__module__", module.__name__) == module.__name__]
    return {name: getattr(module, name) for name in names}


def test_the_modules_are_found():
    assert {"getcore", "lane", "replylog", "httphead", "swapframe"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_has_a_twin_with_the_same_names(name):
    fast = api(importlib.import_module(f"_fastpath.{name}"))
    pure = api(importlib.import_module(f"storage.pure.{name}"))
    calls = {k for k, v in fast.items() if callable(v)}
    assert calls == {k for k, v in pure.items() if callable(v)}
    for key in set(fast) & set(pure) - calls:  # constants: the same values
        assert fast[key] == pure[key], key

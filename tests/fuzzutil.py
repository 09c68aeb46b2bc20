"""The fuzz targets of fuzz/, loaded for smoke runs: each defines TestOneInput and needs
nothing but the code it fuzzes (atheris only when run as a script)."""
import importlib.util
import pathlib

FUZZ_DIR = pathlib.Path(__file__).resolve().parent.parent / "fuzz"


def load_fuzz_target(name):
    """The module fuzz/<name>.py (e.g. "fuzz_rsmc"), imported without atheris."""
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

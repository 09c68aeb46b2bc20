"""Where the shared conformance material lives: ``shared/`` beside the repository (as in
CI's clone), else the workplace's ``/work/shared``."""
import pathlib

_BESIDE = pathlib.Path(__file__).resolve().parents[2] / "shared"
SHARED = _BESIDE if _BESIDE.exists() else pathlib.Path("/work/shared")
EC_VECTORS = SHARED / "vectors" / "ec"

"""Where the tests' reference material lives: in the repository, under tests/vectors/.

The EC vectors (tests/vectors/ec/) were made with pyeclib by tests/vectors/regenerate.py,
which also checks them (``--check``). Their inputs are not stored: ``ec_input`` makes
them from the manifest's ``input_rule``. No test reads anything outside the repository.
"""
import hashlib
import pathlib

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"
EC_VECTORS = VECTORS / "ec"


def ec_input(size):
    """The ``size`` bytes the EC vectors encode: shake_256(b"oio-ec-vector-<size>")."""
    return hashlib.shake_256(b"oio-ec-vector-%d" % size).digest(size) if size else b""


def ec_vector_input(entry):
    """The input of a manifest entry (a segment, or the metachunk), checked against the
    SHA-256 the manifest pins."""
    data = ec_input(entry["input_size"])
    assert hashlib.sha256(data).hexdigest() == entry["input_sha256"], entry["input_file"]
    return data

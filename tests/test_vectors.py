"""The test suite stands on its own: its reference material is in the repository,
regenerable with pyeclib, and no test, benchmark or fuzz target reads a path outside
the repository."""
import hashlib
import json
import pathlib
import re
import sys

import pytest
from paths import EC_VECTORS, VECTORS

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(VECTORS))

import regenerate  # noqa: E402


def test_ec_vectors_are_in_the_repository():
    assert EC_VECTORS.resolve().is_relative_to(REPO / "tests")
    manifest = json.loads((EC_VECTORS / "manifest.json").read_text())
    entries = [f for seg in manifest["segments"] for f in seg["fragments"]]
    entries += manifest["metachunk"]["chunks"]
    assert len(entries) == 6 * 9 + 9
    for entry in entries:
        data = (EC_VECTORS / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]


def test_regenerate_reproduces_the_committed_bytes():
    made_by = json.loads((EC_VECTORS / "manifest.json").read_text())["generator"]
    if regenerate.generator() != made_by:  # another liberasurecode writes other headers
        pytest.skip(f"installed: {regenerate.generator()}; the vectors': {made_by}")
    files = regenerate.build()
    assert len(files) == 6 * 9 + 9 + 1
    assert regenerate.differences(files, EC_VECTORS) == []


# what reaching out of the repository looks like in a path expression: an absolute
# path into the development machine's work area, the specs folder beside the
# repository, or a climb above it from a file inside (the folder names are joined in,
# so this file names no such path itself)
_WORK_AREA, _SPECS = "work", "shared"
OUTSIDE = re.compile("|".join([
    r"""["']/%s/""" % _WORK_AREA,
    r"""["']\.\./%s""" % _SPECS,
    r"parents\[[2-9]\]",
    r"""/ *["']%s["']""" % _SPECS]))


def test_nothing_reads_outside_the_repository():
    sources = [p for top in ("tests", "bench", "fuzz") for p in (REPO / top).rglob("*")
               if p.suffix in (".py", ".sh", ".tmpl") and p != pathlib.Path(__file__)]
    assert len(sources) > 20
    offenders = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
                 for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert offenders == []

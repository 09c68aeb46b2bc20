"""Regenerate the EC conformance vectors in tests/vectors/ec/ with pyeclib.

    .venv/bin/python tests/vectors/regenerate.py           # rewrite tests/vectors/ec/
    .venv/bin/python tests/vectors/regenerate.py --check   # compare only; exit 1 on a difference

pyeclib (the ``test`` extra: its wheel bundles liberasurecode; a source build needs
Debian's ``liberasurecode-dev``) encodes each input with ``ECDriver(k=6, m=3,
ec_type="liberasurecode_rs_vand", chksum_type="none")``:

- ``seg_<size>.frag<i>``: the 9 fragments of one segment of ``size`` bytes, for sizes
  0, 1, 100, 4096, 1 MiB and 1 MiB + 7;
- ``metachunk.chunk_0.<i>``: chunk i of a 2621563-byte object cut into 1 MiB segments,
  fragment i of every segment appended in turn (OpenIO's EC layout);
- ``manifest.json``: sizes, SHA-256 (and MD5 for chunks) of every file, the 80-byte
  header of every fragment, the generator matrix, and the decodes checked here.

Inputs are not stored: each is ``shake_256(b"oio-ec-vector-%d" % size)`` of its size
(``paths.ec_input``), which the manifest's ``input_rule`` states and its SHA-256
pins. The files are byte for byte those of the shared conformance set they came from.
"""
import argparse
import hashlib
import importlib.metadata
import json
import pathlib
import sys

from pyeclib.ec_iface import ECDriver
import pyeclib_c

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from paths import EC_VECTORS, ec_input  # noqa: E402

K, M = 6, 3
EC_TYPE = "liberasurecode_rs_vand"
SEGMENT_SIZES = (0, 1, 100, 4096, 1 << 20, (1 << 20) + 7)
SEGMENT = 1 << 20  # bytes of object data per EC segment (OpenIO's default)
METACHUNK_SIZE = 2621563
LOST_PATTERNS = ((0, 1, 2), (3, 4, 5), (0, 4, 8), (6, 7, 8), (1, 5, 7))
METACHUNK_KEPT = (1, 2, 3, 5, 6, 8)
HEADER = 80  # bytes of liberasurecode's fragment header
INPUT_RULE = ("input = hashlib.shake_256(b'oio-ec-vector-%d' % size).digest(size)  "
              "(empty for size 0)")
GF = "GF(2^16), primitive polynomial 0x1100b, symbols = little-endian uint16 words"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def generator_rows(driver):
    """The k x (k + m) generator matrix, one row per fragment: encode the k unit
    vectors (one 16-bit symbol per data block) and read each fragment's first symbol."""
    rows = [[0] * K for _ in range(K + M)]
    for column in range(K):
        data = bytearray(2 * K)
        data[2 * column] = 1
        for index, fragment in enumerate(driver.encode(bytes(data))):
            rows[index][column] = int.from_bytes(fragment[HEADER:HEADER + 2], "little")
    return rows


def segment_vectors(driver, size, files):
    """The manifest entry of one segment; its fragment files go into ``files``."""
    data = ec_input(size)
    fragments = driver.encode(data)
    entry = {"input_size": size, "input_file": f"seg_{size}.input",
             "input_sha256": sha256(data),
             "blocksize": driver.get_metadata(fragments[0], formatted=True)["size"],
             "fragment_size": len(fragments[0]), "fragments": []}
    for index, fragment in enumerate(fragments):
        name = f"seg_{size}.frag{index}"
        files[name] = fragment
        entry["fragments"].append({"index": index, "file": name, "size": len(fragment),
                                   "sha256": sha256(fragment),
                                   "header_hex": fragment[:HEADER].hex()})
    entry["decode_3_missing_ok"] = {
        "missing_" + "_".join(map(str, lost)):
            driver.decode([f for i, f in enumerate(fragments) if i not in lost]) == data
        for lost in LOST_PATTERNS}
    return entry


def metachunk_vectors(driver, files):
    """The manifest entry of the object cut into 1 MiB segments, 9 chunk files."""
    data = ec_input(METACHUNK_SIZE)
    segments = [driver.encode(data[at:at + SEGMENT]) for at in range(0, len(data), SEGMENT)]
    chunks = [b"".join(fragments[index] for fragments in segments)
              for index in range(K + M)]
    entry = {"input_file": "metachunk.input", "input_size": len(data),
             "input_sha256": sha256(data), "input_md5": hashlib.md5(data).hexdigest(),
             "ec_segment_size": SEGMENT, "ec_fragment_size": len(segments[0][0]),
             "chunks": []}
    for index, chunk in enumerate(chunks):
        name = f"metachunk.chunk_0.{index}"
        files[name] = chunk
        entry["chunks"].append({"pos": f"0.{index}", "file": name, "size": len(chunk),
                                "sha256": sha256(chunk),
                                "md5": hashlib.md5(chunk).hexdigest()})
    decoded = b"".join(driver.decode([fragments[i] for i in METACHUNK_KEPT])
                       for fragments in segments)
    entry["decode_from_chunks_" + "_".join(map(str, METACHUNK_KEPT)) + "_ok"] = \
        decoded == data
    return entry


def generator():
    """What makes the vectors here: pyeclib's and liberasurecode's versions (the
    latter is written in every fragment header) and the driver's parameters."""
    return (f"pyeclib {importlib.metadata.version('pyeclib')}, liberasurecode version "
            f"0x{pyeclib_c.get_liberasurecode_version():06x}, "
            f"ECDriver(k={K}, m={M}, ec_type='{EC_TYPE}', chksum_type='none')")


def build():
    """-> {file name: bytes} of the whole vector set, manifest.json included."""
    driver = ECDriver(k=K, m=M, ec_type=EC_TYPE, chksum_type="none")
    files = {}
    manifest = {
        "generator": generator(),
        "input_rule": INPUT_RULE, "k": K, "m": M, "gf": GF,
        "generator_matrix_rows": generator_rows(driver),
        "segments": [segment_vectors(driver, size, files) for size in SEGMENT_SIZES],
        "metachunk": metachunk_vectors(driver, files),
    }
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    return files


def differences(files, directory):
    """Names whose bytes differ from ``directory``'s, and files there not generated."""
    out = [name for name, data in sorted(files.items())
           if not (directory / name).is_file() or (directory / name).read_bytes() != data]
    out += sorted(p.name for p in directory.glob("*") if p.name not in files)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing them")
    parser.add_argument("--dir", type=pathlib.Path, default=EC_VECTORS,
                        help="where the vectors are (default: tests/vectors/ec)")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        changed = differences(files, args.dir)
        for name in changed:
            print(f"differs: {name}", file=sys.stderr)
        print(f"{len(files) - len(changed)} of {len(files)} files identical")
        return 1 if changed else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.dir / name).write_bytes(data)
    print(f"wrote {len(files)} files to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``storage-node ec put|get|rebuild|check``: EC objects over RAWX nodes.

    storage-node ec put FILE|- --nodes URL,URL,... [--nodes-file F] [-o DESC]
    storage-node ec get DESC [-o OUT] [--range A-B]
    storage-node ec rebuild DESC [--pos N.i ...] [--to URL | --nodes ...] [-o NEWDESC]
    storage-node ec check DESC

``put`` prints the object's description (JSON) that the others take back
(a file, or - for stdin); ``rebuild`` updates it in place unless -o says
otherwise. Exit status: 0 done, 1 the operation failed (or check found bad
chunks, or some chunk could not be rebuilt), 2 bad arguments or description.
"""
import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.I)


def parse_size(text):
    """'100M', '64MiB', '1048576' -> bytes (K/M/G/T are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = match.group(2).lower()
    return int(match.group(1)) * (1024 ** " kmgt".index(unit or " "))


class Progress:
    """A one-line progress bar on a TTY stream, redrawn at most 10 times/s."""

    WIDTH = 30

    def __init__(self, total, label, stream):
        self.total = total
        self.label = label
        self.stream = stream
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, nbytes):
        self.done += nbytes
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            self._draw(now)

    def _draw(self, now):
        rate = self.done / max(now - self.started, 1e-6) / (1 << 20)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * self.WIDTH)
            text = f"{self.label} [{bar:<{self.WIDTH}}] {frac * 100:5.1f}% "
        else:
            text = f"{self.label} "
        text += f"{self.done / (1 << 20):.1f} MiB {rate:.1f} MiB/s"
        self.stream.write("\r" + text)
        self.stream.flush()

    def close(self):
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


def _progress(args, total, label):
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    return Progress(total, label, sys.stderr) if enabled else None


def read_nodes(args):
    """Node URLs from --nodes (repeatable, comma-separated) and --nodes-file
    (one per line, # comments)."""
    from storage.ec.placement import normalize_url
    urls = []
    for item in args.nodes or ():
        urls += [u for u in item.split(",") if u.strip()]
    if args.nodes_file:
        with open(args.nodes_file, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    urls.append(line)
    seen = []
    for url in urls:
        url = normalize_url(url)
        if url not in seen:
            seen.append(url)
    return seen


def _load_desc(path):
    from storage.ec.description import load
    if path == "-":
        return load(sys.stdin.read())
    with open(path, encoding="utf-8") as f:
        return load(f.read())


def _write_desc(desc, path):
    from storage.ec.description import dumps
    if path in (None, "-"):
        sys.stdout.write(dumps(desc))
        sys.stdout.flush()
    else:
        _write_desc_atomically(desc, path)


def _write_desc_atomically(desc, path):
    """Replace the file at ``path`` by the description in one rename: a
    reader sees the old one or the new one, whole."""
    from storage.ec.description import dumps
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ec-desc-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(desc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _own_messages():
    """The commands say on stderr what went wrong; keep the library's own
    warnings (the same news) off it unless the caller set up logging."""
    ec_log = logging.getLogger("storage.ec")
    if not any(isinstance(h, logging.NullHandler) for h in ec_log.handlers):
        ec_log.addHandler(logging.NullHandler())


def _note(message):
    print(f"storage-node ec: {message}", file=sys.stderr)


def _fail(message, status=EXIT_FAILED):
    print(f"storage-node ec: {message}", file=sys.stderr)
    return status


# -- put -----------------------------------------------------------------------
def cmd_put(args):
    _own_messages()
    from storage.ec import writer
    nodes = read_nodes(args)
    if len(nodes) < 9:
        return _fail(f"need at least 9 distinct nodes (--nodes/--nodes-file), got {len(nodes)}",
                     EXIT_USAGE)
    if args.file == "-":
        stream, total, name = sys.stdin.buffer, None, "stdin"
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as exc:
            return _fail(f"cannot open {args.file}: {exc.strerror}", EXIT_USAGE)
        total, name = os.fstat(stream.fileno()).st_size, os.path.basename(args.file)
    progress = _progress(args, total, "put")
    problems = []
    try:
        desc = writer.put(stream, nodes, path=args.path or name, account=args.account,
                          container=args.container, chunk_size=args.chunk_size,
                          storage_policy=args.policy, chksum_type=args.chksum,
                          library_version=args.library_version, timeout=args.timeout,
                          progress=progress, problems=problems)
    except (writer.WriteError, OSError) as exc:
        return _fail(f"put failed: {exc}")
    finally:
        if progress is not None:
            progress.close()
        if stream is not sys.stdin.buffer:
            stream.close()
        for problem in problems:
            _note(problem)
    _write_desc(desc, args.output)
    return EXIT_OK


# -- get -----------------------------------------------------------------------
def _parse_range(text, size):
    match = re.match(r"^(\d*)-(\d*)$", text or "")
    if not match or match.group(0) == "-":
        raise ValueError(f"range {text!r} is not A-B, A- or -N")
    a, b = match.groups()
    if not a:
        n = int(b)
        return max(size - n, 0), size - 1
    return int(a), (int(b) if b else size - 1)


def cmd_get(args):
    _own_messages()
    from storage.ec import reader
    try:
        desc = _load_desc(args.description)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    size = desc["size"]
    try:
        start, end = _parse_range(args.range, size) if args.range else (0, size - 1)
        if args.range and (start > end or (start >= size and size) or (size == 0 and start)):
            raise ValueError(f"range {args.range} is not satisfiable for {size} bytes")
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    to_file = args.output not in (None, "-")
    out = open(args.output, "wb") if to_file else sys.stdout.buffer
    progress = _progress(args, max(0, min(end, size - 1) - start + 1), "get")
    failed = None
    problems = []
    try:
        for piece in reader.read(desc, start, end, timeout=args.timeout, verify=args.verify,
                                 progress=progress, problems=problems):
            out.write(piece)
        out.flush()
    except (reader.ECReadError, OSError) as exc:
        failed = exc
    finally:
        if progress is not None:
            progress.close()
        if to_file:
            out.close()
    for problem in problems:    # chunks the bytes were decoded without
        _note(f"left out {problem}")
    if failed is not None:
        if to_file:     # never leave wrong or partial bytes behind
            os.unlink(args.output)
        return _fail(f"get failed: {failed}")
    return EXIT_OK


# -- rebuild -------------------------------------------------------------------
def _wanted(args, desc):
    """[((metachunk, index), state)] to rebuild: --pos as given (state None),
    or every chunk ``check`` finds bad."""
    from storage.ec import rebuild
    if not args.pos:
        return [(tuple(int(x) for x in r["pos"].split(".")), r["state"])
                for r in rebuild.check(desc, timeout=args.timeout) if r["state"] != "ok"]
    wanted = [tuple(int(x) for x in p.split(".")) for p in args.pos]
    if any(len(w) != 2 for w in wanted):
        raise ValueError
    return [(w, None) for w in dict.fromkeys(wanted)]


def cmd_rebuild(args):
    _own_messages()
    from storage.ec import rebuild
    from storage.ec.description import chunk_of
    try:
        desc = _load_desc(args.description)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    output = args.output or args.description
    if output == "-" and args.description == "-" and not args.output:
        return _fail("a description read from stdin needs -o FILE (or -o - for stdout)",
                     EXIT_USAGE)
    nodes = read_nodes(args)
    try:
        wanted = _wanted(args, desc)
    except ValueError:
        return _fail(f"--pos takes N.i (metachunk.index), got {args.pos}", EXIT_USAGE)
    if not wanted:
        _note("every chunk is fine, nothing to rebuild")
    if args.to and len(wanted) > 1:
        return _fail("--to names one node: rebuild one --pos at a time with it", EXIT_USAGE)
    if not args.to and wanted and not nodes:
        return _fail("say where to rebuild: --to URL, or --nodes/--nodes-file listing spares",
                     EXIT_USAGE)
    bad = {pos for pos, state in wanted if state is not None}     # not to be read
    dead = {}
    failed = 0
    for (number, index), state in wanted:
        try:
            mc = desc["metachunks"][number]
            old = dict(chunk_of(mc, index))
        except (IndexError, ValueError) as exc:
            failed += 1
            _fail(f"rebuild of {number}.{index} failed: {exc}")
            continue
        targets = [args.to] if args.to else rebuild.spares(desc, number, nodes)
        progress = _progress(args, mc["chunk_size"], f"rebuild {number}.{index}")
        known_dead = set(dead)
        try:
            chunk = rebuild.rebuild(desc, number, index, targets, same_id=args.same_id,
                                    exclude={i for n, i in bad if n == number} - {index},
                                    dead=dead, timeout=args.timeout, progress=progress)
        except rebuild.RebuildError as exc:
            failed += 1
            _fail(f"rebuild of {number}.{index} failed: {exc}"
                  + ("" if targets else "; no spare: every node listed holds a chunk of "
                     f"metachunk {number}, list more nodes"))
            continue
        finally:
            if progress is not None:
                progress.close()
            for node in set(dead) - known_dead:
                _note(f"target {node} skipped: {dead[node]}")
        bad.discard((number, index))
        if output != "-":       # a re-run resumes from here: no rebuilt chunk is orphaned
            try:
                _write_desc_atomically(desc, output)
            except OSError as exc:
                rebuild.delete_chunk(chunk["url"], args.timeout)
                chunk.update(old)
                return _fail(f"cannot write the description to {output}: {exc}; "
                             f"chunk {number}.{index} not rebuilt")
        _note(f"rebuilt {chunk['pos']} as {chunk['url']}")
        if old["url"] != chunk["url"] and state not in ("unreachable", "missing"):
            error = rebuild.delete_chunk(old["url"], args.timeout)
            _note(f"removed the old copy {old['url']}" if error is None else
                  f"could not remove the old copy {old['url']}: {error}")
    if output == "-":
        _write_desc(desc, "-")
    return EXIT_FAILED if failed else EXIT_OK


# -- check ---------------------------------------------------------------------
def cmd_check(args):
    _own_messages()
    from storage.ec import rebuild
    try:
        desc = _load_desc(args.description)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    results = rebuild.check(desc, timeout=args.timeout)
    bad = [r for r in results if r["state"] != "ok"]
    per_mc = {}
    for r in bad:
        per_mc[r["metachunk"]] = per_mc.get(r["metachunk"], 0) + 1
    readable = all(count <= desc["m"] for count in per_mc.values())
    report = {"chunks": len(results), "ok": len(results) - len(bad), "bad": bad,
              "readable": readable}
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return EXIT_OK if not bad else EXIT_FAILED


# -- argparse ------------------------------------------------------------------
def _common(p, nodes=False):
    p.add_argument("--timeout", type=float, default=30.0, help="socket timeout, seconds")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    if nodes:
        p.add_argument("--nodes", action="append", metavar="URL[,URL...]",
                       help="RAWX node URLs (repeatable, comma-separated)")
        p.add_argument("--nodes-file", metavar="FILE",
                       help="a file listing node URLs (http://host:port), one a line, "
                       "# starts a comment")


def add_subparser(subparsers):
    """Register ``ec`` and its sub-commands on a subparsers object; each
    sets ``func`` to a callable(args) returning an exit status."""
    from storage.ec.writer import DEFAULT_CHUNK_SIZE
    ec = subparsers.add_parser("ec", help="erasure-coded objects over RAWX nodes",
                               description="Store, read, rebuild and check EC objects "
                                           "(liberasurecode_rs_vand, k=6, m=3, OpenIO layout).")
    sub = ec.add_subparsers(dest="ec_command", required=True)

    put = sub.add_parser("put", help="store a file; print its description (JSON)",
                         description="Store a file on the 9 best of the listed nodes for "
                         "each metachunk (rendezvous order); the other nodes are spares. A "
                         "node that refuses or fails mid-upload is replaced by the next one; "
                         "the put fails only when fewer than 9 live nodes remain (or, reading "
                         "a pipe, when more than 3 chunks of a metachunk fail mid-upload), and "
                         "then deletes the chunks it stored.")
    put.add_argument("file", help="input file, or - for stdin")
    _common(put, nodes=True)
    put.add_argument("-o", "--output", help="write the description here (default stdout)")
    put.add_argument("--path", help="object name (default: the file's name)")
    put.add_argument("--account", default="acct")
    put.add_argument("--container", default="cont")
    put.add_argument("--policy", help="storage policy name (default EC6+3)")
    put.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE,
                     help="data bytes per chunk, e.g. 100M (metachunk = 6 x this, whole MiB)")
    put.add_argument("--chksum", choices=("none", "inline_crc32"), default="none",
                     help="fragment checksum (OpenIO default: none)")
    put.add_argument("--library-version", type=lambda s: int(s, 0), default=0x010800,
                     help="liberasurecode version written in headers (default 0x010800)")
    put.set_defaults(func=cmd_put)

    get = sub.add_parser("get", help="read an object (or a byte range) back")
    get.add_argument("description", help="description file from put, or -")
    _common(get)
    get.add_argument("-o", "--output", help="output file (default stdout)")
    get.add_argument("--range", help="bytes A-B (inclusive), A- or -N")
    get.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                     help="check each chunk against its hash before using it (its node "
                     "re-hashes it), leave out those that do not match, and check whole "
                     "metachunks against their MD5 (default). --no-verify trusts the "
                     "chunks: no hash is checked, so the bytes of a corrupt chunk are "
                     "returned as they are, with exit status 0 (only fragment headers, "
                     "and payload CRC32s if the object has them, are still checked)")
    get.set_defaults(func=cmd_get)

    reb = sub.add_parser("rebuild", help="regenerate lost chunks on another node",
                         description="Rebuild each bad chunk (check's verdict, or --pos) onto "
                         "the best spare: a listed node holding no chunk of its metachunk, in "
                         "rendezvous order; a spare that fails is skipped for the next. The "
                         "description is updated after each chunk, so a re-run resumes; the "
                         "old copy is then deleted (unless it is missing or its node is "
                         "unreachable).")
    reb.add_argument("description", help="description file from put, or -")
    _common(reb, nodes=True)
    reb.add_argument("--pos", action="append", metavar="N.i",
                     help="chunk to rebuild (repeatable; default: every chunk check finds bad)")
    reb.add_argument("--to", metavar="URL", help="node to rebuild onto (default: a spare "
                     "from --nodes by rendezvous order)")
    reb.add_argument("--same-id", action="store_true", help="keep the chunk id "
                     "(default: a new id)")
    reb.add_argument("-o", "--output", help="write the updated description here (default: "
                     "update DESCRIPTION in place), after each chunk rebuilt, by an atomic "
                     "rename; - prints it once at the end")
    reb.set_defaults(func=cmd_rebuild)

    chk = sub.add_parser("check", help="HEAD every chunk with hash checking; report bad ones")
    chk.add_argument("description", help="description file from put, or -")
    _common(chk)
    chk.set_defaults(func=cmd_check)
    return ec


def main(argv=None):
    """Run ``ec`` sub-commands on their own: main(["put", ...])."""
    parser = argparse.ArgumentParser(prog="storage-node")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ec"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

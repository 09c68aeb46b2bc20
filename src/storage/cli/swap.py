"""``storage-node swap``: a node's file groups over SWAP (spec/swap.md).

    storage-node swap stat   HOST:PORT PATH...            one line: path kind size mtime
    storage-node swap get    HOST:PORT PATH [-o FILE]     the bytes (stdout by default)
    storage-node swap put    HOST:PORT LOCALFILE PATH     LOCALFILE '-' is stdin
    storage-node swap ls     HOST:PORT DIR [-l]           one name a line
    storage-node swap rm     HOST:PORT PATH...            one line: path deleted|emptied|...
    storage-node swap groups HOST:PORT                    uuid namespace
    storage-node swap peers  HOST:PORT                    address port

Every action takes ``-u USER[:PASSWORD]`` (without ``:PASSWORD`` the password comes
from STORAGE_NODE_PASSWORD or a prompt) or ``--peer`` (an address the node lists in
``swap_peers``: no login), ``--group chunks|files`` (or a namespace or UUID; default
chunks), ``--tls`` / ``--cafile`` / ``--plaintext-after-auth`` and ``--timeout``.
get and put draw a progress bar on stderr when it is a terminal (or with
``--progress``); stat and ls print JSON with ``--json``.

Exit status: 0 on success, 1 when the node refused or something failed (stat: a path
not found; rm: a path that was not there or still is; a directory the node keeps,
emptied, as the chunks group keeps its hashed directories, counts as done), 2 for bad
usage.
"""
import argparse
import json
import os
import ssl
import sys
import time
from datetime import UTC, datetime

from storage.cli.common import UsageError, credentials
from storage.swap import PathKind
from storage.swap.client import DEFAULT_PORT, SwapClient, SwapError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
KIND_NAMES = {PathKind.FILE: "file", PathKind.DIRECTORY: "directory",
              PathKind.NOT_FOUND: "not-found", PathKind.NOT_LOCAL: "not-local"}
PRESENT = (PathKind.FILE, PathKind.DIRECTORY)


def _fail(message, status=EXIT_FAILED):
    print(f"storage-node swap: {message}", file=sys.stderr)
    return status


def parse_address(text):
    """'HOST:PORT', '[V6]:PORT' or 'HOST' (port 9123) -> (host, port); UsageError."""
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] not in ("", ":"):
            raise UsageError(f"not HOST:PORT: {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise UsageError(f"not HOST:PORT (an IPv6 address goes in brackets): {text!r}")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def kind_name(kind):
    return KIND_NAMES.get(kind, str(int(kind)))


def mtime_text(ms):
    """Milliseconds since the epoch -> ISO 8601 UTC; '-' for 0 (not found)."""
    if not ms:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def details_json(rec):
    return {"path": rec.path, "kind": kind_name(rec.kind), "size": rec.size,
            "mtime": rec.mtime}


class ByteProgress:
    """'<label> 12.0/40.0 MiB 30% 8.1 MiB/s' on one line of ``stream``, redrawn in
    place at most ten times a second; ``total`` None when unknown."""

    def __init__(self, stream, label, total=None):
        self.stream = stream
        self.label = label
        self.total = total
        self.start = self.drawn = time.monotonic()
        self.done = 0

    def __call__(self, done):
        self.done = done
        now = time.monotonic()
        if now - self.drawn >= 0.1:
            self.drawn = now
            self._draw(now)

    def _draw(self, now):
        mib = self.done / (1 << 20)
        rate = mib / max(now - self.start, 1e-6)
        if self.total:
            text = (f"{mib:.1f}/{self.total / (1 << 20):.1f} MiB "
                    f"{100 * self.done // self.total}%")
        else:
            text = f"{mib:.1f} MiB"
        self.stream.write(f"\r\x1b[K{self.label} {text} {rate:.1f} MiB/s")
        self.stream.flush()

    def finish(self):
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


def _progress(args, label, total=None):
    wanted = args.progress if args.progress is not None else sys.stderr.isatty()
    return ByteProgress(sys.stderr, label, total) if wanted else None


def open_client(args):
    """The connected, authenticated client the arguments describe. Raises
    UsageError or SwapError."""
    host, port = parse_address(args.address)
    if args.peer and args.user:
        raise UsageError("-u and --peer exclude each other")
    if not args.peer and not args.user:
        raise UsageError("-u USER[:PASSWORD] is required (or --peer)")
    tls = args.tls or args.cafile is not None
    if args.plaintext_after_auth and (not tls or args.peer):
        raise UsageError("--plaintext-after-auth needs --tls and a login")
    user = password = None
    if args.user:
        user, password = credentials(args.user)
    context = None
    if tls:
        try:
            context = ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load --cafile {args.cafile}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    client = SwapClient.connect(host, port, timeout=args.timeout, ssl_context=context,
                                peer=args.peer)
    if not args.peer:
        client.authenticate(user, password, plaintext=args.plaintext_after_auth)
    return client


def cmd_stat(client, args):
    records = client.stat(args.group, args.paths)
    if args.json:
        print(json.dumps([details_json(r) for r in records], indent=1))
    else:
        for r in records:
            print(f"{r.path} {kind_name(r.kind)} {r.size} {mtime_text(r.mtime)}")
    return EXIT_OK if all(r.kind in PRESENT for r in records) else EXIT_FAILED


def cmd_ls(client, args):
    [info] = client.stat(args.group, [args.dir])
    if info.kind != PathKind.DIRECTORY:
        return _fail(f"{args.dir}: {kind_name(info.kind)}, not a directory")
    names = sorted(client.ls(args.group, args.dir))
    if not args.long:
        if args.json:
            print(json.dumps(names, indent=1))
        else:
            for name in names:
                print(name)
        return EXIT_OK
    base = args.dir.rstrip("/")
    records = client.stat(args.group, [f"{base}/{n}" if base else n for n in names])
    if args.json:
        print(json.dumps([{**details_json(r), "name": n} for n, r in zip(names, records)],
                         indent=1))
    else:
        for name, r in zip(names, records):
            print(f"{name} {kind_name(r.kind)} {r.size} {mtime_text(r.mtime)}")
    return EXIT_OK


def cmd_rm(client, args):
    status = EXIT_OK
    for removal in client.rm_many(args.group, args.paths):
        if removal.outcome not in ("deleted", "emptied"):
            status = EXIT_FAILED
        print(f"{removal.path} {removal.outcome}", flush=True)
    return status


def cmd_get(client, args):
    progress = _progress(args, f"get {args.path}")
    if progress is not None:
        [info] = client.stat(args.group, [args.path])
        left = max(info.size - args.offset, 0)
        progress.total = min(left, args.length) if args.length > 0 else left
    if args.output in (None, "-"):
        result = client.get(args.group, args.path, sys.stdout.buffer, args.offset,
                            args.length, progress)
        sys.stdout.buffer.flush()
    else:
        # the file appears whole or not at all
        tmp = f"{args.output}.swap-{os.getpid()}.part"
        try:
            with open(tmp, "wb") as out:
                result = client.get(args.group, args.path, out, args.offset, args.length,
                                    progress)
            os.replace(tmp, args.output)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        print(f"{args.output} {result.size} {result.md5}")
    if progress is not None:
        progress.finish()
    return EXIT_OK


def cmd_put(client, args):
    if args.local == "-":
        stream, total = sys.stdin.buffer, None
    else:
        try:
            stream = open(args.local, "rb")  # noqa: SIM115 (the with below closes it)
        except OSError as exc:
            return _fail(f"cannot read {args.local}: {exc.strerror}")
        total = os.fstat(stream.fileno()).st_size
    progress = _progress(args, f"put {args.path}", total)
    with stream:
        result = client.put(args.group, args.path, stream, progress)
    if progress is not None:
        progress.finish()
    print(f"{args.path} {result.size} {result.md5}")
    return EXIT_OK


def cmd_groups(client, args):
    for g in client.list_groups():
        print(f"{g.uuid} {g.namespace}" + ("" if g.local else " inactive"))
    return EXIT_OK


def cmd_peers(client, args):
    for host, port in client.peers():
        print(f"{host} {port}")
    return EXIT_OK


def run(args):
    try:
        client = open_client(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SwapError as exc:
        return _fail(str(exc))
    try:
        return args.action(client, args)
    except SwapError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # a path the format cannot carry
        return _fail(str(exc), EXIT_USAGE)
    except BrokenPipeError:  # `swap get ... | head`: no traceback at exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        client.close()


def add_subparser(subparsers):
    swap = subparsers.add_parser(
        "swap", help="read and write a node's file groups over SWAP",
        description="Talk SWAP (the binary inter-node protocol) to a node's "
                    "swap_listen address. Exit 0 on success, 1 on failure, 2 on bad usage.")
    actions = swap.add_subparsers(dest="swap_action", required=True, metavar="ACTION")
    common = _common_options()

    def action(name, func, help):
        p = actions.add_parser(name, parents=[common], help=help, description=help)
        p.add_argument("address", metavar="HOST:PORT",
                       help=f"the node's swap_listen address (port {DEFAULT_PORT} if none)")
        p.set_defaults(func=run, action=func)
        return p

    p = action("stat", cmd_stat, "kind, size and mtime of paths (one frame for all)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="a JSON list of records")

    p = action("get", cmd_get, "stream a file to stdout or -o FILE")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (whole or not at all)")
    p.add_argument("--offset", type=_count, default=0, help="first byte (default 0)")
    p.add_argument("--length", type=_count, default=0,
                   help="bytes at most (default 0: to the end)")
    _progress_option(p)

    p = action("put", cmd_put, "write a local file (or '-', stdin) to PATH")
    p.add_argument("local", metavar="LOCALFILE")
    p.add_argument("path", metavar="PATH")
    _progress_option(p)

    p = action("ls", cmd_ls, "the names in a directory")
    p.add_argument("dir", metavar="DIR", help="a directory ('/' is the group's root)")
    p.add_argument("-l", "--long", action="store_true", help="kind, size and mtime too")
    p.add_argument("--json", action="store_true", help="a JSON list")

    p = action("rm", cmd_rm, "delete paths (directories recursively)")
    p.add_argument("paths", nargs="+", metavar="PATH")

    action("groups", cmd_groups, "the node's file groups: uuid namespace")
    action("peers", cmd_peers, "the node's swap_peers: address port")


def _count(text):
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _progress_option(p):
    p.add_argument("--progress", action="store_true", default=None,
                   help="a progress bar on stderr even when it is not a terminal")


def _common_options():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-u", "--user", metavar="USER[:PASSWORD]",
                        help="credentials (password from STORAGE_NODE_PASSWORD or a "
                             "prompt when absent)")
    common.add_argument("--peer", action="store_true",
                        help="no login: this address is in the node's swap_peers")
    common.add_argument("--group", default="chunks",
                        help="chunks, files, or a namespace or UUID (default chunks)")
    common.add_argument("--tls", action="store_true", help="TLS from the first byte")
    common.add_argument("--cafile", metavar="PEM",
                        help="CA certificates that verify the node (implies --tls)")
    common.add_argument("--plaintext-after-auth", action="store_true",
                        help="shut TLS down after the login and go on in plaintext")
    common.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the node at any step (default 60)")
    return common

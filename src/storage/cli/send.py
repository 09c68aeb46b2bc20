"""``storage-node send``: push chunks to another cluster (a legacy SEND per chunk).

    storage-node send --target HOST:PORT --cluster NAME -u USER[:PASSWORD] URL|ID...

Each argument is a chunk URL (``http://node:port/CHUNKID``: that node sends it) or a
bare chunk id, sent by ``--node`` (default the embedded default's 127.0.0.1:6009).
Without ``:PASSWORD`` the password comes from ``STORAGE_NODE_PASSWORD`` or a prompt.
One line per chunk on stdout: ``<ID> <code> <reason>``; a progress line on stderr
(when it is a terminal, or with --progress). Exit status: 0 when every chunk ended
201 (stored) or 409 (already there), 1 otherwise, 2 for bad arguments.
"""
import sys
from urllib.parse import urlsplit

from storage.cli.common import Counter, UsageError, credentials
from storage.rawx.meta import valid_chunk_id
from storage.send.client import SendClient, SendError
from storage.send.route import parse_target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_NODE = "http://127.0.0.1:6009"


def _fail(message, status=EXIT_USAGE):
    print(f"storage-node send: {message}", file=sys.stderr)
    return status


def split_chunk(item, default_node):
    """A chunk argument -> (node URL, CHUNKID); ValueError when it is neither a chunk
    URL nor a chunk id."""
    if "://" in item:
        parts = urlsplit(item)
        chunk_id = parts.path.strip("/")
        if parts.scheme != "http" or not parts.netloc or not valid_chunk_id(chunk_id):
            raise ValueError(f"not a chunk URL: {item!r}")
        return f"http://{parts.netloc}", chunk_id.upper()
    if not valid_chunk_id(item):
        raise ValueError(f"not a chunk id (24 to 64 hex digits): {item!r}")
    return default_node, item.upper()


def cmd_send(args):
    try:
        parse_target(args.target)
    except Exception as exc:
        return _fail(str(exc))
    try:
        user, password = credentials(args.user)
    except UsageError as exc:
        return _fail(str(exc))
    try:
        chunks = [split_chunk(item, args.node) for item in args.chunks]
    except ValueError as exc:
        return _fail(str(exc))
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    counter = Counter(len(chunks), sys.stderr, "sent") if progress and len(chunks) > 1 \
        else None
    clients = {}
    failures = 0
    try:
        for node, chunk_id in chunks:
            client = clients.get(node)
            if client is None:
                client = clients[node] = SendClient(node, user, password, args.timeout)
            try:
                result = client.send(chunk_id, args.target, args.cluster, args.remote_auth)
                code, reason, ok = result.code, result.reason, result.ok
            except SendError as exc:
                code, reason, ok = 0, str(exc), False
            failures += not ok
            line = f"{chunk_id} {code}" + (f" {reason}" if reason else "")
            if counter is not None:
                counter.clear()
            print(line, flush=True)
            if counter is not None:
                counter.add(failed=not ok)
    finally:
        for client in clients.values():
            client.close()
    return EXIT_OK if not failures else EXIT_FAILED


def add_subparser(subparsers):
    send = subparsers.add_parser(
        "send", help="push chunks to another cluster (SEND)",
        description="Ask a node to push each chunk to a node of another cluster "
                    "(a legacy SEND). Exit status 0 only if every chunk ended 201 or 409.")
    send.add_argument("chunks", nargs="+", metavar="URL|ID",
                      help="http://node:port/CHUNKID, or a chunk id sent by --node")
    send.add_argument("--target", required=True, metavar="HOST:PORT",
                      help="a node (or reverse proxy) of the destination cluster")
    send.add_argument("--cluster", required=True, metavar="NAME",
                      help="the destination cluster's name (its namespace)")
    send.add_argument("-u", "--user", required=True, metavar="USER[:PASSWORD]",
                      help="admin credentials (password from STORAGE_NODE_PASSWORD or "
                           "a prompt when absent)")
    send.add_argument("--node", default=DEFAULT_NODE,
                      help=f"the node that sends bare chunk ids (default {DEFAULT_NODE})")
    send.add_argument("--remote-auth", metavar="USER:PASSWORD",
                      help="credentials for the destination (Castor-System-Auth)")
    send.add_argument("--timeout", type=float, default=3600.0,
                      help="seconds to wait for one chunk's outcome (default 3600)")
    send.add_argument("--progress", action="store_true", default=None,
                      help="a progress line on stderr even when it is not a terminal")
    send.set_defaults(func=cmd_send)

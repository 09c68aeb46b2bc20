"""``storage-node rsmc``: remote management of a node (spec rsmc.md).

    storage-node rsmc HOST:PORT receive [--base /] [-f FILE] "URL [DEST]"...
    storage-node rsmc HOST:PORT send    [--base /] [-f FILE] "ID URL"...
    storage-node rsmc HOST:PORT erase   [--base /] [-f FILE] ID...
    storage-node rsmc HOST:PORT info    URL|ID
    storage-node rsmc HOST:PORT log     [--backup N] [-o FILE]

Each list argument is one list line of the request (quote it when it holds a space);
``-f FILE`` adds one per line (``#`` comments). Lists go in requests of at most
``--batch`` objects, with a progress line on a terminal. Results: a table (object,
code, reason) or ``--json``. ``-u USER[:PASSWORD]`` gives credentials (needed when the
node's management port is not on loopback). Exit status: 0 when every object
succeeded (2xx), 1 otherwise, 2 for bad arguments.
"""
import json
import sys

from storage.cli.common import Counter, UsageError, credentials
from storage.config import ConfigError, parse_listen
from storage.rsmc.client import RsmcClient, RsmcProtocolError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LIST_COMMANDS = {"receive": "RECEIVE", "send": "SEND", "erase": "ERASE"}


def _fail(message, status=EXIT_USAGE):
    print(f"storage-node rsmc: {message}", file=sys.stderr)
    return status


def _items(args):
    items = [item.strip() for item in args.items if item.strip()]
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                for line in f:
                    line = line.split("#", 1)[0].strip()
                    if line:
                        items.append(line)
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if not items:
        raise UsageError("no objects given")
    return items


def _client(args):
    try:
        host, port = parse_listen(args.node, "HOST:PORT")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not port:
        raise UsageError("HOST:PORT needs a port")
    user = password = None
    if args.user:
        user, password = credentials(args.user)
    return RsmcClient(host, port, user, password, timeout=args.timeout)


def _print_results(results, as_json, stream=sys.stdout):
    if as_json:
        json.dump([{"object": name, "code": code, "reason": reason}
                   for name, code, reason in results], stream, indent=1)
        stream.write("\n")
        return
    width = max([len(name) for name, _, _ in results] + [6])
    for name, code, reason in results:
        stream.write(f"{name:<{width}}  {code}  {reason}\n")


def cmd_list(args):
    try:
        if not 1 <= args.batch <= 10_000:
            raise UsageError("--batch must be 1 to 10000")
        items = _items(args)
        client = _client(args)
    except UsageError as exc:
        return _fail(str(exc))
    command = LIST_COMMANDS[args.rsmc_command]
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    counter = Counter(len(items), sys.stderr, args.rsmc_command) if progress else None
    results = []
    try:
        for start in range(0, len(items), args.batch):
            batch = items[start:start + args.batch]
            reply = client.request(command, args.base, batch)
            # object lines come in request order, one per list line; a request
            # refused as a whole has none: its code is every object's
            objects = list(reply.objects) + [None] * (len(batch) - len(reply.objects))
            for item, found in zip(batch, objects):
                name = item.split()[0]
                results.append(found or (name, reply.code, reply.reason))
            if counter is not None:
                counter.add(len(batch), sum(1 for r in results[-len(batch):]
                                            if not 200 <= r[1] < 300))
            if reply.code in (401, 403, 413, 400, 501) and not reply.objects:
                results += [(i.split()[0], reply.code, reply.reason)
                            for i in items[start + len(batch):]]
                break
    except RsmcProtocolError as exc:
        return _fail(str(exc), EXIT_FAILED)
    finally:
        client.close()
    _print_results(results, args.json)
    return EXIT_OK if all(200 <= code < 300 for _, code, _ in results) else EXIT_FAILED


def cmd_info(args):
    try:
        client = _client(args)
    except UsageError as exc:
        return _fail(str(exc))
    try:
        reply = client.request("INFO", args.target)
    except RsmcProtocolError as exc:
        return _fail(str(exc), EXIT_FAILED)
    finally:
        client.close()
    properties = [line.split(": ", 1) for line in
                  reply.payload.decode("latin-1").splitlines() if ": " in line]
    if args.json:
        json.dump({"object": args.target, "code": reply.code, "reason": reply.reason,
                   "properties": dict(properties)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif 200 <= reply.code < 300:
        for name, value in properties:
            print(f"{name}: {value}")
    else:
        name, code, reason = (reply.objects or [(args.target, reply.code, reply.reason)])[0]
        print(f"{name} {code} {reason}", file=sys.stderr)
    return EXIT_OK if 200 <= reply.code < 300 else EXIT_FAILED


def cmd_log(args):
    try:
        client = _client(args)
    except UsageError as exc:
        return _fail(str(exc))
    try:
        if args.backup:
            reply = client.request("GET", f"server.log.{args.backup}")
        else:
            reply = client.request("LOG")
    except RsmcProtocolError as exc:
        return _fail(str(exc), EXIT_FAILED)
    finally:
        client.close()
    if not 200 <= reply.code < 300:
        name, code, reason = (reply.objects or [("log", reply.code, reply.reason)])[0]
        print(f"{name} {code} {reason}", file=sys.stderr)
        return EXIT_FAILED
    if args.output:
        with open(args.output, "wb") as f:
            f.write(reply.payload)
    else:
        sys.stdout.buffer.write(reply.payload)
        sys.stdout.flush()
    return EXIT_OK


def add_subparser(subparsers):
    rsmc = subparsers.add_parser(
        "rsmc", help="remote management of a node (RSMC)",
        description="Manage a node's chunks through its RSMC port (rsmc_listen).")
    rsmc.add_argument("node", metavar="HOST:PORT", help="the node's rsmc_listen address")
    sub = rsmc.add_subparsers(dest="rsmc_command", required=True)

    def common(parser):
        parser.add_argument("-u", "--user", metavar="USER[:PASSWORD]",
                            help="admin credentials (password from STORAGE_NODE_PASSWORD "
                                 "or a prompt when absent)")
        parser.add_argument("--timeout", type=float, default=3600.0,
                            help="seconds to wait for a reply (default 3600)")
        parser.add_argument("--json", action="store_true", help="results as JSON")

    helps = {"receive": ("fetch chunks from other nodes", "URL [DEST]"),
             "send": ("push local chunks to other nodes", "ID URL"),
             "erase": ("delete local chunks", "ID")}
    for name, (text, metavar) in helps.items():
        parser = sub.add_parser(name, help=text)
        parser.add_argument("items", nargs="*", metavar=metavar,
                            help="one list line each (quote it when it holds a space)")
        parser.add_argument("-f", "--file", help="more list lines, one per line")
        parser.add_argument("--base", default="/", help="the base path (default /)")
        parser.add_argument("--batch", type=int, default=500,
                            help="objects per request (default 500, at most 10000)")
        parser.add_argument("--progress", action="store_true", default=None,
                            help="a progress line on stderr even when not a terminal")
        common(parser)
        parser.set_defaults(func=cmd_list)
    info = sub.add_parser("info", help="a chunk's metadata (local id or chunk URL)")
    info.add_argument("target", metavar="URL|ID")
    common(info)
    info.set_defaults(func=cmd_info)
    log = sub.add_parser("log", help="the node's request log, or a backup of it")
    log.add_argument("--backup", type=int, metavar="N", help="server.log.N instead")
    log.add_argument("-o", "--output", help="write it here (default stdout)")
    common(log)
    log.set_defaults(func=cmd_log)

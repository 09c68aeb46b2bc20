"""The ``storage-node`` command line: ``serve`` here, one module per other command
group (``ec``, ``send``, ``rsmc``, ``swap``, ``feeds``)."""
import argparse
import logging
import sys

from storage import accesslog
from storage import config as configmod
from storage.instance import AlreadyServed
from storage.volume import VolumeError

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def setup_logging(config):
    """The error log on stderr. The access log is not ``logging``'s: each worker
    writes its own (``storage.accesslog``)."""
    root = logging.getLogger()
    root.handlers[:] = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(config.log_level)


def cmd_serve(args):
    from storage.http.tls import TlsSetupError
    from storage.server import serve
    overrides = {} if args.workers is None else {"workers": args.workers}
    try:
        config = configmod.load(args.config, overrides)
    except configmod.ConfigError as exc:
        print(f"storage-node: configuration error: {exc}", file=sys.stderr)
        return 2
    problem = accesslog.check(config.access_log)
    if problem:  # the workers open it: say so now rather than watch them die
        print(f"storage-node: configuration error: {problem}", file=sys.stderr)
        return 2
    setup_logging(config)
    try:
        return serve(config, args.config, overrides)
    except TlsSetupError as exc:
        print(f"storage-node: configuration error: {exc}", file=sys.stderr)
        return 2
    except VolumeError as exc:
        print(f"storage-node: {exc}", file=sys.stderr)
        return 2
    except configmod.ConfigError as exc:  # a file it names changed since the check
        print(f"storage-node: configuration error: {exc}", file=sys.stderr)
        return 2
    except AlreadyServed as exc:  # a second node on a served address or volume
        print(f"storage-node: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"storage-node: cannot listen on {config.listen}: {exc.strerror}",
              file=sys.stderr)
        return 1


def build_parser():
    parser = argparse.ArgumentParser(prog="storage-node",
                                     description="A RAWX-compatible storage node.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the chunk service in the foreground")
    serve.add_argument("-f", "--config", help="oio-rawx configuration file "
                       "(default: embedded, 127.0.0.1:6009, ./data/rawx)")
    serve.add_argument("--workers", type=int, help="override the workers directive")
    serve.set_defaults(func=cmd_serve)
    from storage.cli import ec, feeds, rsmc, send, swap
    ec.add_subparser(sub)
    send.add_subparser(sub)
    rsmc.add_subparser(sub)
    swap.add_subparser(sub)
    feeds.add_subparser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C before the node had its own handlers
        return 130


if __name__ == "__main__":
    sys.exit(main())

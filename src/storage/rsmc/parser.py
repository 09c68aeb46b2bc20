"""The RSMC request parser: sans-I/O, fed bytes, returns whole requests.

Grammar (spec rsmc.md, "Configuration and framing details (pinned)"):

    <COMMAND> <argument> RSMP/1.0      (LOG: ``LOG RSMP/1.0``)
    <header lines: "Name: value">
    <empty line>
    [for RECEIVE, SEND, ERASE: list lines, then an empty line]

Lines end with CRLF or LF. ``GET server.log.N RSMP/1.0`` (a backup of the request
log) has the shape of INFO. Several requests may follow each other on a connection.

``feed(data)`` returns events: each whole ``Request``, and last an ``RsmcError(code,
reason)`` when the bytes go wrong: 400 for a malformed line, 413 for a head or a list
over ``max_bytes`` or a list of more than ``max_items`` objects, 501 for an unknown
command. The requests before an error are still good. After an error the parser
stays failed (every later feed returns the error again): the connection answers and
closes, since it cannot find the next request's start reliably.
"""
import re

VERSION = "RSMP/1.0"
LIST_COMMANDS = frozenset({"RECEIVE", "SEND", "ERASE"})
KNOWN = LIST_COMMANDS | {"INFO", "LOG", "GET"}
MAX_BYTES = 1 << 20  # a head, and a list, each
MAX_ITEMS = 10_000
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_FIELD = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*\Z")
_TEXT = re.compile(r"[\x20-\x7e\x80-\xff\t]*\Z")  # no control bytes but HTAB


class RsmcError(Exception):
    """A request that cannot be served as a whole: ``code`` and a one-line ``reason``."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Request:
    """A whole request: ``command`` (upper case), ``argument`` (str, "" for LOG),
    ``headers`` {lower-case name: value}, ``fields`` [(lower name, value)] in order,
    ``items``: the list lines (str), [] for commands without a list."""

    __slots__ = ("command", "argument", "headers", "fields", "items")

    def __init__(self, command, argument, fields, items):
        self.command = command
        self.argument = argument
        self.fields = fields
        self.headers = {}
        for name, value in fields:
            self.headers[name] = value if name not in self.headers \
                else self.headers[name] + ", " + value
        self.items = items

    def __repr__(self):
        return f"<Request {self.command} {self.argument!r} {len(self.items)} items>"


_HEAD, _LIST = 0, 1


class RequestParser:
    """``feed(data)`` -> the events complete so far: Requests, then an RsmcError if
    the bytes go wrong (the parser is then failed for good: ``error``)."""

    def __init__(self, max_bytes=MAX_BYTES, max_items=MAX_ITEMS):
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.error = None
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already searched for a line end
        self._state = _HEAD
        self._section = 0  # bytes of the current head or list so far
        self._line_no = 0
        self._command = None
        self._fields = []
        self._items = []

    @property
    def buffered(self):
        """Bytes received that belong to no complete request yet."""
        return len(self._buf)

    @property
    def idle(self):
        """True between requests (nothing of a next request received)."""
        return not self._buf and self._state == _HEAD and self._command is None

    def feed(self, data):
        if self.error is not None:
            return [self.error]
        self._buf += data
        out = []
        try:
            while True:
                line = self._next_line()
                if line is None:
                    break
                request = self._take(line)
                if request is not None:
                    out.append(request)
        except RsmcError as exc:
            self.error = exc
            self._buf.clear()
            out.append(exc)
        return out

    def _next_line(self):
        """The next line without its end (str, latin-1), or None for more bytes."""
        end = self._buf.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(self._buf)
            if self._section + len(self._buf) > self.max_bytes:
                raise RsmcError(413, self._too_big())
            return None
        raw = bytes(self._buf[:end])
        del self._buf[:end + 1]
        self._scan = 0
        self._section += end + 1
        if self._section > self.max_bytes:
            raise RsmcError(413, self._too_big())
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        line = raw.decode("latin-1")
        if not _TEXT.match(line):
            raise RsmcError(400, "control character in a request line")
        return line

    def _too_big(self):
        what = "list" if self._state == _LIST else "request head"
        return f"{what} over {self.max_bytes} bytes"

    def _take(self, line):
        if self._state == _LIST:
            if line == "":
                return self._done()
            if len(self._items) >= self.max_items:
                raise RsmcError(413, f"list of more than {self.max_items} objects")
            self._items.append(line.strip())
            return None
        if self._command is None:
            if line == "" and self._section <= 2:  # stray empty lines between requests
                self._section = 0
                return None
            self._command = self._command_line(line)
            return None
        if line == "":
            if self._command[0] in LIST_COMMANDS:
                self._state = _LIST
                self._section = 0
                return None
            return self._done()
        match = _FIELD.match(line)
        if not match:
            raise RsmcError(400, "malformed header line")
        self._fields.append((match.group(1).lower(), match.group(2)))
        return None

    @staticmethod
    def _command_line(line):
        parts = line.split()
        if not parts:
            raise RsmcError(400, "empty command line")
        command = parts[0]
        if not _TOKEN.match(command):
            raise RsmcError(400, "malformed command")
        if parts[-1] != VERSION or len(parts) < 2:
            raise RsmcError(400, f"the command line must end with {VERSION}")
        command = command.upper()
        arguments = parts[1:-1]
        if command not in KNOWN:
            raise RsmcError(501, f"unknown command {parts[0][:40]}")
        if command == "LOG":
            if arguments:
                raise RsmcError(400, "LOG takes no argument")
            return command, ""
        if len(arguments) != 1:
            raise RsmcError(400, f"{command} takes one argument")
        return command, arguments[0]

    def _done(self):
        (command, argument), fields, items = self._command, self._fields, self._items
        self._command, self._fields, self._items = None, [], []
        self._state = _HEAD
        self._section = 0
        return Request(command, argument, fields, items)

"""What the application answers a request with, and what the access log and the
counters know of an exchange: ``Reply`` (bytes, a ``FileBody`` sent with sendfile, or a
``StreamBody`` produced piece by piece), ``BlockingReply`` (built by an I/O thread),
``TaskReply`` (decided by a long task while the client gets keep-alive newlines) and
``Exchange``."""

SMALL_FILE = 64 << 10  # up to this size a file body is read and sent with the head


class StreamBody:
    """A reply body produced piece by piece (e.g. decompressed from a chunk file):
    ``read(n)`` returns up to ``n`` bytes (b"" only if the source ended early);
    ``release()`` is called when done. ``remaining`` bytes are announced."""

    __slots__ = ("read", "remaining", "release", "pending")

    def __init__(self, read, length, release):
        self.read = read
        self.remaining = length
        self.release = release
        self.pending = b""  # read but not yet sent


STREAM_PIECE = 256 << 10  # bytes a StreamBody is asked for per send


class FileBody:
    """Part of an open file to send with sendfile; ``release()`` is called when done."""

    __slots__ = ("fd", "offset", "remaining", "release")

    def __init__(self, fd, offset, length, release):
        self.fd = fd
        self.offset = offset
        self.remaining = length
        self.release = release


class Reply:
    """A response: status, [(name, value)] headers, and a bytes ``body`` or a ``file``
    (FileBody or StreamBody).
    ``length`` overrides Content-Length (HEAD replies); ``close`` ends the connection."""

    __slots__ = ("status", "headers", "body", "file", "length", "close", "reason", "fields")

    def __init__(self, status, headers=(), body=b"", file=None, length=None, close=False,
                 reason="", fields=b""):
        self.status = status
        self.headers = headers
        self.fields = fields  # pre-encoded header lines (see response.encode_fields)
        self.body = body
        self.file = file
        self.length = length
        self.close = close
        self.reason = reason


class BlockingReply:
    """A reply that takes blocking work to build (hash a whole chunk, inflate up to a
    range): ``job()`` runs on an I/O thread and returns the Reply, so a worker's loop
    never stalls on it. ``job`` owns what it uses (it closes its files)."""

    __slots__ = ("job",)

    def __init__(self, job):
        self.job = job


class Exchange:
    """What the access log and the counters need to know about one request."""

    __slots__ = ("request", "started", "ttfb", "bytes_in", "bytes_out", "status", "kind",
                 "reason", "reqid", "account", "bucket")

    def __init__(self, request, started):
        self.request = request
        self.started = started
        self.ttfb = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = 0
        self.kind = "other"
        self.reason = ""
        self.reqid = ""
        self.account = None
        self.bucket = None


class TaskOutcome:
    """How a ``TaskReply`` ended: the status, the body lines (str, each sent with a
    trailing newline; the last one is what line-reading clients look at), the
    trailer fields [(name, value)], and ``headers`` [(name, value)] for the head when
    it was not sent yet."""

    __slots__ = ("status", "lines", "trailers", "headers")

    def __init__(self, status, lines=(), trailers=(), headers=()):
        self.status = status
        self.lines = list(lines)
        self.trailers = list(trailers)
        self.headers = list(headers)


class TaskWait:
    """What a stepped task's ``run`` returns when it is not finished: run it again in
    ``after`` seconds (its thread is free meanwhile). ``headers`` [(name, value)],
    when given, go out now in a 200 head (the head is sent at once)."""

    __slots__ = ("after", "headers")

    def __init__(self, after, headers=None):
        self.after = after
        self.headers = headers


class TaskReply:
    """A reply decided by a long blocking task (SEND) that runs on the worker's
    transfer threads while the client waits.

    ``run(progress)`` runs on a transfer thread and returns a ``TaskOutcome``, or a
    ``TaskWait`` to be run again later (a task that waits for others' work). It
    calls ``progress()`` (from its thread) once the outcome cannot be known before
    the reply must start (a transfer began): the head goes out then with status 200,
    as it does after ``interval`` seconds without an outcome. Until then an outcome
    carries its own status in the status line. The body is chunked: a newline chunk
    every ``interval`` seconds, then the outcome's lines and trailers. ``cancel()``
    is called on the loop thread when the client leaves or the connection times
    out; ``run`` must then end soon, leaving nothing half done. ``headers``
    [(name, value)] and ``fields`` (encoded header lines) go in the head. A ``light``
    task's steps are short and run on the I/O threads instead of the transfer
    threads, which long transfers may hold."""

    __slots__ = ("run", "cancel", "headers", "fields", "interval", "light")

    def __init__(self, run, cancel, headers=(), fields=b"", interval=5.0, light=False):
        self.run = run
        self.cancel = cancel
        self.headers = headers
        self.fields = fields
        self.interval = interval
        self.light = light

"""The access log: one line per request in oio-rawx's layout, buffered per worker and
written by whole lines.

Operators keep access logs on, so a line must cost about what nginx's does. Each
worker has one buffer (``_fastpath.accesslog.LogBuffer``). The line is made where
the reply is made: the compiled GET path (``getcore``) formats it in C straight into
the buffer, the Python path formats it here (``format_line``, the layout's one
definition; the compiled path writes the same bytes). The buffer goes out in one
``write()`` of whole lines when it passes ``FLUSH_BYTES``, every ``FLUSH_INTERVAL``
seconds from the worker's loop, and at exit. The file is opened with ``O_APPEND``,
so the lines of several workers interleave but never split; a worker that crashes
loses at most its last ``FLUSH_INTERVAL`` of lines.

SIGUSR1 reopens the file, as nginx does for logrotate: the master forwards it to
the workers, and each one writes out what it holds to the old file, then opens the
path again (``open_log``) and goes on: every line is in the old or the new file,
once. ``access_log -`` writes to stderr the same way; ``off`` makes no ``AccessLog``.
"""
import logging
import os

from storage.fast import load

accesslog = load("accesslog")
log = logging.getLogger(__name__)

FLUSH_BYTES = 64 << 10  # written out once this much is buffered
FLUSH_INTERVAL = 0.2  # seconds between two writes: what a crash may lose at most
LAYOUT = ("%d access INF - %s %s %s %d %d %d %d - %s %s http %d put:%d get:%d del:%d "
          "account:%s bucket:%s\n")


def open_log(path):
    """Open the access log file ``path`` for appending (created 0644 if missing) ->
    its file descriptor. The one place the file is opened: by each worker as it
    starts, and again on SIGUSR1."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def check(path):
    """Why the workers could not open ``path`` (an error message), or None. It opens
    nothing: the file is created by the first worker that logs."""
    if path in ("-", "off"):
        return None
    target = path if os.path.exists(path) else os.path.dirname(path) or "/"
    if os.path.isdir(path):
        return f"access_log: {path} is a directory"
    if not os.path.isdir(os.path.dirname(path) or "/"):
        return f"access_log: no directory {os.path.dirname(path)}"
    if not os.access(target, os.W_OK):
        return f"access_log: cannot write {target}"
    return None


def text(value):
    """An account or bucket as the line shows it (``-`` when unknown)."""
    if not value:
        return "-"
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def format_line(pid, host, peer, method, status, micros, bytes_out, bytes_in, reqid, path,
                ttfb, put, get, delete, account, bucket):
    """One access line (bytes, newline included). Strings are written as UTF-8."""
    return (LAYOUT % (pid, host, peer, method, status, micros, bytes_out, bytes_in,
                      reqid or "-", path, ttfb, put, get, delete, text(account),
                      text(bucket))).encode("utf-8", "backslashreplace")


class AccessLog:
    """A worker's access log: ``target`` is a file path or ``-`` (stderr). The lines
    go to ``buffer`` (``write()`` here, or the compiled path's own)."""

    def __init__(self, target):
        self.path = None if target == "-" else target
        self.fd = 2 if self.path is None else open_log(self.path)
        self.buffer = accesslog.LogBuffer(self.fd, FLUSH_BYTES)
        self.reopen_wanted = False  # set by the SIGUSR1 handler, acted upon by flush()
        self._loop = None
        self._dropped = 0

    @classmethod
    def from_config(cls, config):
        """The worker's access log, or None for ``access_log off``."""
        return None if config.access_log == "off" else cls(config.access_log)

    def write(self, line):
        """Append one line (bytes, from ``format_line``)."""
        self.buffer.add(line)

    def start(self, loop):
        """Flush every FLUSH_INTERVAL from ``loop`` (and reopen when asked to)."""
        self._loop = loop
        loop.call_later(FLUSH_INTERVAL, self._tick)

    def _tick(self):
        self.flush()
        if self._loop is not None:
            self._loop.call_later(FLUSH_INTERVAL, self._tick)

    def flush(self):
        if self.reopen_wanted:
            self.reopen_wanted = False
            self.reopen()
        self.buffer.flush()
        if self.buffer.dropped != self._dropped:
            log.error("access log %s: %d lines lost: %s", self.path or "(stderr)",
                      self.buffer.dropped - self._dropped, os.strerror(self.buffer.error))
            self._dropped = self.buffer.dropped

    def reopen(self):
        """Write out what is buffered to the file open now, then open the path again
        (logrotate renamed it): no line lost, none written twice. On a failure the
        lines keep going to the file open now."""
        if self.path is None:
            return
        try:
            fd = open_log(self.path)
        except OSError as exc:
            log.error("access log: cannot reopen %s: %s", self.path, exc.strerror)
            return
        os.close(self.buffer.reopen(fd))
        self.fd = fd

    def close(self):
        """Write out the last lines and close the file (at the worker's exit)."""
        self._loop = None
        self.flush()
        if self.path is not None and self.fd >= 0:
            self.buffer.reopen(2)  # nothing is buffered: only never write to a closed fd
            os.close(self.fd)
            self.fd = -1

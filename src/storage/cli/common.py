"""What the admin commands share: credentials and a progress line."""
import getpass
import os

PASSWORD_ENV = "STORAGE_NODE_PASSWORD"


class UsageError(Exception):
    """Bad arguments: the command exits 2 with this message."""


def credentials(spec):
    """'USER[:PASSWORD]' -> (user, password); without ':PASSWORD' the password comes
    from STORAGE_NODE_PASSWORD, else a prompt (UsageError when neither gives one)."""
    user, sep, password = spec.partition(":")
    if not user:
        raise UsageError("-u needs USER[:PASSWORD]")
    if not sep:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            try:
                password = getpass.getpass(f"password for {user}: ")
            except (EOFError, KeyboardInterrupt):
                raise UsageError("no password") from None
    return user, password


class Counter:
    """'<label> 12/40 (2 failed)' on one line of ``stream``, redrawn in place
    ('<label> 12 (2 failed)' when ``total`` is None: not known in advance)."""

    def __init__(self, total, stream, label="done"):
        self.total = total
        self.stream = stream
        self.label = label
        self.done = self.failed = 0

    def add(self, count=1, failed=0):
        self.done += count
        self.failed += failed
        note = f" ({self.failed} failed)" if self.failed else ""
        of = "" if self.total is None else f"/{self.total}"
        self.stream.write(f"\r\x1b[K{self.label} {self.done}{of}{note}")
        if self.total is not None and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()

    def clear(self):
        """Before a line of output on the same terminal."""
        self.stream.write("\r\x1b[K")

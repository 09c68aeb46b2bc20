"""Pure-Python twin of ``_fastpath.accesslog``: a worker's access log buffer, whole
lines in, whole lines out in one ``write()`` (see the compiled module)."""
import errno
import os

__all__ = ["LogBuffer"]

HELD_LIMITS = 16  # a descriptor that keeps saying EAGAIN holds this many limits


class LogBuffer:
    def __init__(self, fd, limit=65536):
        if fd < 0:
            raise ValueError("fd must be a file descriptor")
        if limit < 1:
            raise ValueError("limit must be positive")
        self._out = fd
        self.limit = limit
        self._buf = bytearray()
        self.lines = 0
        self.dropped = 0
        self.error = 0

    @property
    def fd(self):
        return self._out

    def __len__(self):
        return len(self._buf)

    def add(self, line):
        """Append one or more whole lines (bytes-like, ending in a newline)."""
        line = memoryview(line).cast("B")
        if not line.nbytes:
            return
        if line[-1] != 10:
            raise ValueError("an access line ends with a newline")
        self._buf += line
        self.lines += line.tobytes().count(b"\n")
        if len(self._buf) >= self.limit:
            self.flush()

    def flush(self):
        """Write out every buffered line -> bytes written."""
        buf = self._buf
        done = 0
        while done < len(buf):
            try:
                wrote = os.write(self._out, memoryview(buf)[done:])
                if wrote > 0:
                    done += wrote
                    continue
                err = 0
            except InterruptedError:
                continue
            except BlockingIOError:
                if len(buf) < HELD_LIMITS * self.limit:
                    del buf[:done]
                    return done
                err = errno.EAGAIN
            except OSError as exc:
                err = exc.errno
            self.dropped += buf[done:].count(b"\n")
            self.error = err
            break
        buf.clear()
        return done

    def reopen(self, fd):
        """Write out what is buffered, then log to ``fd`` -> the previous descriptor."""
        if fd < 0:
            raise ValueError("fd must be a file descriptor")
        self.flush()
        old, self._out = self._out, fd
        return old

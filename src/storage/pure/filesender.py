"""Pure-Python twin of ``_fastpath.filesender``: big file replies finished on a thread.

The same life cycle: ``submit()`` adds the socket to the thread's epoll set, the thread
sends a piece each time the socket drains, a finished job is queued and an eventfd
(``fileno()``) wakes the loop when the queue was empty, ``completed()`` hands back
``(token, sent, errno)`` oldest first, ``close()`` completes the rest with ECANCELED.
"""
import errno
import os
import select
import threading

__all__ = ["FileSender"]


class _Job:
    __slots__ = ("sockfd", "filefd", "offset", "remaining", "sent", "err", "done", "token")

    def __init__(self, sockfd, filefd, offset, count, token):
        self.sockfd = sockfd
        self.filefd = filefd
        self.offset = offset
        self.remaining = count
        self.sent = 0
        self.err = 0
        self.done = False
        self.token = token

    def pump(self):
        """Send what the socket takes; -> True once the job is over."""
        while self.remaining > 0:
            try:
                moved = os.sendfile(self.sockfd, self.filefd, self.offset, self.remaining)
            except InterruptedError:
                continue
            except BlockingIOError:
                return False
            except OSError as exc:
                self.err = exc.errno
                return True
            if moved == 0:
                self.err = errno.EIO
                return True
            self.offset += moved
            self.remaining -= moved
            self.sent += moved
        return True


class FileSender:
    def __init__(self):
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._done_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._lock = threading.Lock()
        self._active = {}  # sockfd -> job
        self._completed = []
        self._count = 0
        self._stopping = False
        self.running = True
        self._thread = threading.Thread(target=self._run, name="filesender", daemon=True)
        self._thread.start()

    def fileno(self):
        if self._done_fd < 0:
            raise ValueError("sender closed")
        return self._done_fd

    def __len__(self):
        return self._count

    def submit(self, sockfd, filefd, offset, count, token):
        if not self.running:
            raise ValueError("sender closed")
        if count <= 0 or offset < 0:
            raise ValueError("nothing to send")
        if sockfd < 0:
            raise OSError(errno.EBADF, "cannot hand the socket to the sender")
        job = _Job(sockfd, filefd, offset, count, token)
        with self._lock:
            if sockfd in self._active:
                raise FileExistsError(errno.EEXIST, "the socket is in the sender already")
            self._active[sockfd] = job
            self._count += 1
        try:
            self._epoll.register(sockfd, select.EPOLLOUT)
        except OSError:
            with self._lock:
                del self._active[sockfd]
                self._count -= 1
            raise

    def _run(self):
        while True:
            try:
                events = self._epoll.poll(-1, 64)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return
            for fd, _ in events:
                if fd == self._wake:
                    try:
                        os.eventfd_read(self._wake)
                    except BlockingIOError:
                        pass
                    if self._stopping:
                        return
                    continue
                job = self._active.get(fd)
                if job is not None and not job.done and job.pump():
                    self._finish(job)
                job = None  # a waiting thread must not keep the last token alive

    def _finish(self, job):
        try:
            self._epoll.unregister(job.sockfd)
        except (OSError, ValueError, KeyError):
            pass
        with self._lock:
            self._active.pop(job.sockfd, None)
            job.done = True
            was_empty = not self._completed
            self._completed.append(job)
        if was_empty:
            os.eventfd_write(self._done_fd, 1)

    def completed(self):
        if self._done_fd >= 0:
            try:
                os.eventfd_read(self._done_fd)
            except BlockingIOError:
                pass
        with self._lock:
            taken, self._completed = self._completed, []
        self._count -= len(taken)
        return [(job.token, job.sent, job.err) for job in taken]

    def close(self):
        if not self.running:
            return
        self.running = False
        self._stopping = True
        os.eventfd_write(self._wake, 1)
        self._thread.join()
        for job in list(self._active.values()):
            job.err = errno.ECANCELED
            self._finish(job)

    def __del__(self):
        if getattr(self, "running", False):
            self.close()
        for fd in (getattr(self, "_wake", -1), getattr(self, "_done_fd", -1)):
            if fd >= 0:
                os.close(fd)
        epoll = getattr(self, "_epoll", None)
        if epoll is not None:
            epoll.close()

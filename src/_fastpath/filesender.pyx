"""Finish big file replies on a C thread: sendfile whenever the socket drains.

A worker's loop sends a file body with sendfile until the socket is full. Waiting for
the socket to drain and sending the next piece, about every 2 MiB on loopback, is a
loop wake-up that runs Python code with cold caches (the client's copies flushed
them): on an 8 MiB GET those wake-ups cost more CPU than everything else the worker
does for the request. ``FileSender`` takes over such a body instead: ``submit()``
adds the socket to the sender thread's own epoll set (one epoll_ctl, the thread is not
woken for it); the thread, which never touches a Python object, sends a piece each
time the socket drains. A finished body (sent, or failed: the errno) is queued and
the loop is woken through an eventfd (``fileno()``) only when the queue was empty;
``completed()`` hands back ``(token, sent, errno)`` for each, in order.

The caller must not close the socket or the file while their job runs. To cut a
job short (a timeout, a shutdown), shut the socket down: the next send fails and
the job completes with that error. ``close()`` stops the thread and completes what
is left with ECANCELED. The pure-Python twin is ``storage.pure.filesender``.
"""
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.errno cimport EAGAIN, EINTR, EIO, errno
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_create(pthread_t *thread, const void *attr, void *(*start)(void *) noexcept nogil,
                       void *arg)
    int pthread_join(pthread_t thread, void **retval)
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)

cdef extern from "<sys/epoll.h>" nogil:
    cdef union epoll_data:
        void *ptr
        int fd
        uint64_t u64
    cdef struct epoll_event:
        unsigned int events
        epoll_data data
    enum: EPOLLOUT
    enum: EPOLL_CTL_ADD
    enum: EPOLL_CTL_DEL
    enum: EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

cdef extern from "<sys/eventfd.h>" nogil:
    enum: EFD_NONBLOCK
    enum: EFD_CLOEXEC
    int eventfd(unsigned int initval, int flags)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t sendfile(int out_fd, int in_fd, long *offset, size_t count)

cdef extern from "<errno.h>":
    enum: ECANCELED

__all__ = ["FileSender"]

cdef enum:
    _BATCH = 64


cdef struct Job:
    int sockfd
    int filefd
    long offset
    size_t remaining
    size_t sent
    int err
    bint done
    PyObject *token
    Job *prev    # the active list (jobs in the epoll set)
    Job *next    # the active list, then the completed list


cdef struct Shared:
    int epfd
    int wake_fd     # the thread's own wake-up (stop)
    int done_fd     # the loop's: completed jobs wait
    bint stopping
    pthread_mutex_t lock
    Job *active
    Job *completed  # newest first
    Py_ssize_t count


cdef bint _pump(Job *job) noexcept nogil:
    """Send what the socket takes; -> True once the job is over (all sent or failed)."""
    cdef ssize_t r
    while job.remaining > 0:
        r = sendfile(job.sockfd, job.filefd, &job.offset, job.remaining)
        if r > 0:
            job.remaining -= r
            job.sent += r
        elif r == 0:  # the file ended before its announced length
            job.err = EIO
            return True
        elif errno == EINTR:
            continue
        elif errno == EAGAIN:
            return False
        else:
            job.err = errno
            return True
    return True


cdef void _unlink_active(Shared *s, Job *job) noexcept nogil:
    if job.prev != NULL:
        job.prev.next = job.next
    else:
        s.active = job.next
    if job.next != NULL:
        job.next.prev = job.prev
    job.prev = job.next = NULL


cdef void _finish(Shared *s, Job *job) noexcept nogil:
    """Move a job from the active list to the completed one; wake the loop if needed."""
    cdef uint64_t one = 1
    cdef bint was_empty
    epoll_ctl(s.epfd, EPOLL_CTL_DEL, job.sockfd, NULL)
    pthread_mutex_lock(&s.lock)
    _unlink_active(s, job)
    job.done = True
    was_empty = s.completed == NULL
    job.next = s.completed
    s.completed = job
    pthread_mutex_unlock(&s.lock)
    if was_empty:
        write(s.done_fd, &one, 8)


cdef void *_run(void *arg) noexcept nogil:
    cdef Shared *s = <Shared *>arg
    cdef epoll_event events[_BATCH]
    cdef int n, i
    cdef uint64_t count
    cdef Job *job
    while True:
        n = epoll_wait(s.epfd, events, _BATCH, -1)
        if n < 0:
            if errno == EINTR:
                continue
            return NULL  # EBADF/EINVAL: only if the set was torn down under us
        for i in range(n):
            job = <Job *>events[i].data.ptr
            if job == NULL:  # the wake-up fd: stop
                read(s.wake_fd, &count, 8)
                if s.stopping:
                    return NULL
                continue
            if not job.done and _pump(job):
                _finish(s, job)


cdef class FileSender:
    """One worker's file-body sender thread (see the module docstring)."""

    cdef Shared *s
    cdef pthread_t thread
    cdef bint running

    def __cinit__(self):
        cdef epoll_event ev
        cdef int rc
        self.s = <Shared *>calloc(1, sizeof(Shared))
        if self.s == NULL:
            raise MemoryError()
        self.s.epfd = self.s.wake_fd = self.s.done_fd = -1
        pthread_mutex_init(&self.s.lock, NULL)
        self.s.epfd = epoll_create1(EPOLL_CLOEXEC)
        self.s.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.s.done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.s.epfd < 0 or self.s.wake_fd < 0 or self.s.done_fd < 0:
            raise OSError(errno, "cannot create the sender's epoll or eventfds")
        ev.events = 1  # EPOLLIN
        ev.data.ptr = NULL
        if epoll_ctl(self.s.epfd, EPOLL_CTL_ADD, self.s.wake_fd, &ev) < 0:
            raise OSError(errno, "cannot watch the sender's wake-up fd")
        rc = pthread_create(&self.thread, NULL, _run, self.s)
        if rc != 0:
            raise OSError(rc, "cannot start the sender thread")
        self.running = True

    def fileno(self):
        """An eventfd that is readable while completed jobs wait for ``completed()``."""
        if self.s.done_fd < 0:
            raise ValueError("sender closed")
        return self.s.done_fd

    def __len__(self):
        """Jobs submitted and not yet handed back by ``completed()``."""
        return self.s.count

    def submit(self, int sockfd, int filefd, long offset, long count, token):
        """Send ``count`` bytes of ``filefd`` from ``offset`` to the non-blocking socket
        ``sockfd``, on the sender thread; ``token`` comes back with the result."""
        cdef Job *job
        cdef epoll_event ev
        cdef int err
        if not self.running:
            raise ValueError("sender closed")
        if count <= 0 or offset < 0:
            raise ValueError("nothing to send")
        job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.sockfd = sockfd
        job.filefd = filefd
        job.offset = offset
        job.remaining = count
        job.token = <PyObject *>token
        Py_INCREF(token)
        pthread_mutex_lock(&self.s.lock)
        job.next = self.s.active
        if job.next != NULL:
            job.next.prev = job
        self.s.active = job
        self.s.count += 1
        pthread_mutex_unlock(&self.s.lock)
        ev.events = EPOLLOUT  # level-triggered: fires at once if the socket has room
        ev.data.ptr = job
        if epoll_ctl(self.s.epfd, EPOLL_CTL_ADD, sockfd, &ev) < 0:
            err = errno
            pthread_mutex_lock(&self.s.lock)
            _unlink_active(self.s, job)
            self.s.count -= 1
            pthread_mutex_unlock(&self.s.lock)
            Py_XDECREF(job.token)
            free(job)
            raise OSError(err, "cannot hand the socket to the sender")

    def completed(self):
        """[(token, bytes sent, errno or 0)] of the jobs finished since the last call,
        oldest first."""
        cdef uint64_t count
        cdef Job *job
        cdef Job *taken
        cdef Job *older = NULL
        cdef list out = []
        if self.s.done_fd >= 0:
            read(self.s.done_fd, &count, 8)  # reset before taking: no wake-up is lost
        pthread_mutex_lock(&self.s.lock)
        taken = self.s.completed
        self.s.completed = NULL
        pthread_mutex_unlock(&self.s.lock)
        while taken != NULL:  # newest first: reverse
            job = taken
            taken = job.next
            job.next = older
            older = job
        while older != NULL:
            job = older
            older = job.next
            token = <object>job.token  # a new reference
            Py_XDECREF(job.token)  # the one submit() took
            out.append((token, job.sent, job.err))
            free(job)
            self.s.count -= 1
        return out

    def close(self):
        """Stop the thread; jobs still running complete with ECANCELED (collect them
        with ``completed()``). Safe to call twice."""
        cdef uint64_t one = 1
        cdef Job *job
        if not self.running:
            return
        self.running = False
        self.s.stopping = True
        write(self.s.wake_fd, &one, 8)
        with nogil:
            pthread_join(self.thread, NULL)
        while self.s.active != NULL:
            job = self.s.active
            job.err = ECANCELED
            _finish(self.s, job)

    def __dealloc__(self):
        cdef Job *job
        cdef Job *nxt
        cdef uint64_t one = 1
        cdef int head
        if self.s == NULL:
            return
        if self.running:
            self.running = False
            self.s.stopping = True
            write(self.s.wake_fd, &one, 8)
            with nogil:
                pthread_join(self.thread, NULL)
        for head in range(2):
            job = self.s.active if head == 0 else self.s.completed
            while job != NULL:
                nxt = job.next
                Py_XDECREF(job.token)
                free(job)
                job = nxt
        if self.s.epfd >= 0:
            close(self.s.epfd)
        if self.s.wake_fd >= 0:
            close(self.s.wake_fd)
        if self.s.done_fd >= 0:
            close(self.s.done_fd)
        pthread_mutex_destroy(&self.s.lock)
        free(self.s)
        self.s = NULL

"""One node per listen address and per volume: the locks a master holds for its life.

SO_REUSEPORT lets every socket of the same user join a port's group, so a second node
started on a served address would bind without an error and the kernel would split the
connections between two nodes with different volumes. Three checks prevent it:

- **an address lock**: an abstract unix socket named after the address
  (``@storage-node:<host>:<port>``). Only one process can bind a name; the name goes
  away with the last descriptor, so a node killed by SIGKILL leaves nothing behind.
  Two nodes starting at the same moment cannot both get it.
- **a probe**: before binding a fresh address, a TCP socket *without* SO_REUSEPORT is
  bound to it (SO_REUSEADDR only, so connections in TIME_WAIT do not count). Linux
  refuses that bind (EADDRINUSE) while any socket listens on the port, whatever its
  options, so it also finds a listener that is not a storage-node (oio-rawx, nginx).
- **a volume lock**: an ``flock`` on ``<docroot>/.storage-node.lock``, a name the chunk
  listing never shows (chunk names are hex ids; see ``FsChunkRepo.list_chunks``). The
  kernel drops an ``flock`` with its last descriptor, hence on SIGKILL too.

The master holds the three for its life; the workers close their copies, so the
master's death frees them at once. SIGHUP's in-place re-exec hands the descriptors
over with the listening sockets (``NodeLocks.handover`` / ``adopt``): the same locks
stay held across the reload, and a reload that moves the node takes the new ones
before it re-executes (or is refused).
"""
import errno
import fcntl
import logging
import os
import socket
import stat
import time

from storage.volume import VolumeError

log = logging.getLogger(__name__)

LOCK_NAME = ".storage-node.lock"  # in the docroot; never a chunk id (not hex)
ADDRESS_PREFIX = "storage-node:"
PROBE_WAIT = 2.0  # seconds a busy port is retried: the workers of a node just killed
PROBE_STEP = 0.05


class AlreadyServed(RuntimeError):
    """Another process serves this address or this volume; str() says which."""


def address_text(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe(host, port, wait=PROBE_WAIT):
    """Raise AlreadyServed if a socket listens on host:port (any process, any options).
    A busy port is retried for ``wait`` seconds: the workers of a node killed a moment
    ago still hold their sockets until their own SIGKILL lands."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        if time.monotonic() >= deadline:
            raise AlreadyServed(f"{address_text(host, port)} is already served by another "
                                "process")
        time.sleep(PROBE_STEP)


class NodeLocks:
    """The address and volume locks a master holds, by key: ("address", name) for an
    address lock, ("volume", st_dev, st_ino) for a volume lock file."""

    def __init__(self):
        self.held = {}  # key -> socket or file descriptor (int)

    # ---- taking them ---------------------------------------------------------------
    def claim_address(self, host, port, fresh=True):
        """Hold the lock of host:port (port 0: nothing to lock), and with ``fresh`` (we
        have no socket there yet) probe it. -> the key, or None. Raises AlreadyServed."""
        if not port:
            return None
        name = ADDRESS_PREFIX + address_text(host, port)
        key = ("address", name)
        if key not in self.held:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind("\0" + name)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise AlreadyServed(f"another storage-node serves "
                                        f"{address_text(host, port)}") from None
                raise
            self.held[key] = sock
        if fresh:
            probe(host, port)
        return key

    def claim_volume(self, docroot):
        """Hold the flock of ``docroot``'s lock file (created, with the docroot, when
        missing) and write our pid in it. -> the key. Raises AlreadyServed, VolumeError."""
        path = os.path.join(docroot, LOCK_NAME)
        try:
            os.makedirs(docroot, mode=0o755, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise VolumeError(f"cannot lock volume {docroot} ({path}): {exc.strerror}") \
                from None
        info = os.fstat(fd)
        key = ("volume", info.st_dev, info.st_ino)
        if key in self.held:
            os.close(fd)
            return key
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise AlreadyServed(f"another storage-node{by} serves the volume {docroot}") \
                from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.held[key] = fd
        return key

    def claim(self, config, fresh_addresses=()):
        """Every lock ``config`` needs: its volume, its listen address and its TLS
        address; ``fresh_addresses`` ((host, port) we have no socket on) are probed.
        -> the set of keys. Raises AlreadyServed (nothing new is kept then)."""
        before = set(self.held)
        try:
            keys = {self.claim_volume(config.docroot)}
            addresses = [(config.listen_host, config.listen_port)]
            if config.tls_enabled:
                addresses.append((config.tls_host, config.tls_port))
            for host, port in addresses:
                keys.add(self.claim_address(host, port, (host, port) in fresh_addresses))
        except BaseException:
            self.keep(before)
            raise
        keys.discard(None)
        return keys

    # ---- across fork and exec ------------------------------------------------------
    def keep(self, keys):
        """Release every lock whose key is not in ``keys``."""
        for key in list(self.held):
            if key not in keys:
                _close(self.held.pop(key))

    def close_in_child(self):
        """In a forked worker: drop the copies (the master alone holds the locks)."""
        for held in self.held.values():
            _close(held)
        self.held = {}

    def handover(self):
        """Make the descriptors survive exec; -> their numbers, for ``adopt``."""
        fds = []
        for held in self.held.values():
            fd = held.fileno() if isinstance(held, socket.socket) else held
            os.set_inheritable(fd, True)
            fds.append(fd)
        return fds

    def handover_failed(self):
        """The exec did not happen: the descriptors go back to close-on-exec."""
        for held in self.held.values():
            os.set_inheritable(held.fileno() if isinstance(held, socket.socket) else held,
                               False)

    def adopt(self, fds):
        """Take over the descriptors a reloading master handed over (``handover``)."""
        for fd in fds:
            try:
                info = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISSOCK(info.st_mode):
                sock = socket.socket(fileno=fd)
                sock.set_inheritable(False)
                name = sock.getsockname()
                if sock.family == socket.AF_UNIX and isinstance(name, bytes) \
                        and name.startswith(b"\0" + ADDRESS_PREFIX.encode()):
                    self.held[("address", name[1:].decode())] = sock
                else:
                    sock.close()
            elif stat.S_ISREG(info.st_mode):
                os.set_inheritable(fd, False)
                self.held[("volume", info.st_dev, info.st_ino)] = fd
            else:
                os.close(fd)


def _close(held):
    if isinstance(held, socket.socket):
        held.close()
    else:
        os.close(held)

"""Processes: a master that binds, forks one worker per core and supervises them; each
worker runs an event loop over its own SO_REUSEPORT listening socket.

Signals: SIGTERM stops accepting, lets in-flight requests finish (bounded by
``shutdown_timeout``) and exits 0; SIGINT does the same with a short grace.
"""
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import time

from storage import events, volume
from storage.http.connection import Connection
from storage.loop import READ, EventLoop
from storage.offload import Offloader
from storage.rawx.app import RawxApp
from storage.repo import FsChunkRepo
from storage.stats import SharedStats

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
SIGINT_GRACE = 1.0
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def bind_sockets(host, port, count):
    """``count`` listening sockets on one address with SO_REUSEPORT (the kernel spreads
    connections over them). Port 0 picks a free port for all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.listen(1024)
        sock.setblocking(False)
        socks.append(sock)
    return socks


class Listener:
    def __init__(self, sock, worker):
        self.sock = sock
        self.worker = worker
        self.closed = False

    def fileno(self):
        return self.sock.fileno()

    def on_readable(self):
        for _ in range(64):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving the others
                log.error("accept failed: %s", exc)
                return
            self.worker.accepted(conn, peer)

    def close(self):
        self.closed = True


class Worker:
    """One process: an event loop, the chunk repository, the RAWX application."""

    def __init__(self, config, index, sock, stats):
        self.config = config
        self.index = index
        self.buffer = bytearray(config.buffer_size)
        self.stopping = False
        self.connections = set()
        self.loop = EventLoop()
        self.stats = stats.row(index)
        self.probe = volume.LivenessProbe(config.docroot, config.probe_interval)
        repo = FsChunkRepo(config.docroot, config.hash_width, config.hash_depth, config.fsync,
                           config.fsync_dir, config.fallocate)
        self.events = events.from_config(config)  # after fork: it owns a thread
        self.app = RawxApp(config, repo, self.stats, volume=self.probe, events=self.events)
        self.listener = Listener(sock, self)
        self.offloader = None
        if config.io_threads:
            self.offloader = Offloader(self.loop, config.io_threads, config.buffer_size)
        self._shutdown_at = None
        self._signal = None

    def accepted(self, sock, peer):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn = Connection(sock, peer_text, self.loop, self.app, self)
        self.connections.add(conn)
        self.stats.gauge_add("connections", 1)

    def connection_closed(self, conn):
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.gauge_add("connections", -1)

    def _on_signal(self, signum, frame):
        self._signal = signum  # acted upon by the loop, never inside the handler

    def _probe(self):
        self.probe.run_once()
        self.loop.call_later(self.config.probe_interval, self._probe)

    def _tick(self):
        if self._signal is not None and not self.stopping:
            grace = SIGINT_GRACE if self._signal == signal.SIGINT else \
                self.config.shutdown_timeout
            self._begin_shutdown(grace)
        if self.stopping:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            if not self.connections or time.monotonic() >= self._shutdown_at:
                for conn in list(self.connections):
                    conn.close()
                if self.offloader is not None:
                    self.offloader.close()
                if self.events is not None:
                    self.events.close(1.0)
                self.loop.stop()
                return
        self.loop.call_later(0.1 if self.stopping else 0.25, self._tick)

    def _begin_shutdown(self, grace):
        self.stopping = True
        self._shutdown_at = time.monotonic() + grace
        self.loop.unregister(self.listener)
        self.listener.sock.close()

    def run(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.loop.register(self.listener, READ)
        self.probe.run_once()
        self.loop.call_later(self.config.probe_interval, self._probe)
        self.loop.call_later(0.25, self._tick)
        self.loop.run()
        self.loop.close()


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Master:
    """Binds, forks the workers, respawns a worker that dies, forwards stop signals."""

    def __init__(self, config):
        self.config = config
        self.children = {}  # pid -> worker index
        self.stop_signal = None
        self.socks = []
        self.stats = None

    def start(self):
        volume.prepare(self.config)
        count = self.config.worker_count
        self.socks = bind_sockets(self.config.listen_host, self.config.listen_port, count)
        port = self.socks[0].getsockname()[1]
        self.config = dataclasses.replace(self.config, listen_port=port)
        self.stats = SharedStats(count)

    def _spawn(self, index):
        # Stop signals stay blocked across fork until the worker has its own handlers:
        # one landing in between would run the master's handler in the child and be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            raise
        if pid == 0:
            code = 0
            self.children.clear()
            try:
                _die_with_parent()
                for i, sock in enumerate(self.socks):
                    if i != index:
                        sock.close()
                worker = Worker(self.config, index, self.socks[index], self.stats)
                profile_dir = os.environ.get("STORAGE_NODE_PROFILE")
                if profile_dir:  # debugging aid: cProfile stats per worker, dumped at exit
                    import cProfile
                    cProfile.runctx("worker.run()", globals(), {"worker": worker},
                                    os.path.join(profile_dir, f"worker-{index}.prof"))
                else:
                    worker.run()
            except BaseException:
                log.exception("worker %d crashed", index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _on_signal(self, signum, frame):
        self.stop_signal = signum
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def run(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for index in range(len(self.socks)):
            self._spawn(index)
        print(f"storage-node listening on http://{self.config.listen} "
              f"(namespace {self.config.namespace}, docroot {self.config.docroot}, "
              f"{len(self.socks)} workers)", flush=True)
        recent_deaths = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            index = self.children.pop(pid, None)
            if index is None or self.stop_signal is not None:
                continue
            log.error("worker %d (pid %d) exited with status %d; restarting", index, pid,
                      os.waitstatus_to_exitcode(status))
            now = time.monotonic()
            recent_deaths = [t for t in recent_deaths if now - t < 10] + [now]
            if len(recent_deaths) > 5:
                log.critical("workers keep dying; stopping the node")
                self._on_signal(signal.SIGTERM, None)
                return 1
            self._spawn(index)
        for sock in self.socks:
            sock.close()
        return 0


def serve(config):
    """Run the node in the foreground until SIGTERM/SIGINT. Returns the exit status."""
    master = Master(config)
    master.start()
    return master.run()

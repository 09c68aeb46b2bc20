"""Processes: a master that binds, forks one worker per core and supervises them; each
worker runs an event loop over its own SO_REUSEPORT listening socket (and its own TLS
socket when ``tls_rawx_url`` is set). With ``feeds_config``, the master also forks the
feeds delivery process (``storage.feeds.deliver``), supervised and reloaded like a
worker.

Signals: SIGTERM stops accepting, lets in-flight requests finish (bounded by
``shutdown_timeout``) and exits 0; SIGINT does the same with a short grace. SIGUSR1
is forwarded to the workers, which reopen the access log file (``storage.accesslog``).

SIGHUP restarts the node without downtime. The master checks the configuration file
again (syntax, volume lock, TLS files; on any error it logs and keeps running as it
is), then re-executes itself in place (same pid, new code, new configuration) with the
listening sockets inherited. The new image forks new workers on the very same sockets,
waits until they serve, then sends SIGTERM to the old workers, which stop accepting
and finish their in-flight requests. No queued connection is lost: the sockets never
close, and the kernel hands their queues to whichever worker accepts first.

One node per address and per volume (``storage.instance``): the master holds an
address lock and a volume lock for its life, and probes a fresh address before it
binds it, so a second node on the same address or docroot fails at start. The locks
are handed over with the sockets on SIGHUP.
"""
import ctypes
import dataclasses
import importlib.util
import logging
import os
import signal
import socket
import sys
import time

from storage import accesslog, auth, events, feeds, instance, volume
from storage import config as configmod
from storage.http import lane, tls
from storage.http.connection import Connection
from storage.loop import READ, EventLoop
from storage.offload import Offloader
from storage.rawx.app import RawxApp
from storage.repo import FsChunkRepo
from storage.rsmc import logs as rsmc_logs
from storage.rsmc.commands import RsmcNode, parse_peers
from storage.rsmc.connection import RsmcConnection, RsmcService
from storage.swap import groups as swap_groups
from storage.swap.connection import SwapConnection, SwapService
from storage.swap.connection import parse_peers as parse_swap_peers
from storage.stats import SharedStats

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
SIGINT_GRACE = 1.0
MASTER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
                  signal.SIGUSR1}
INHERIT_ENV = "STORAGE_NODE_INHERIT"  # sockets and old workers handed over on SIGHUP
DELIVERY = -1  # the children table's index of the feeds delivery process
READY_TIMEOUT = 30.0  # seconds new workers get to come up before a reload gives up


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
    """A listening socket on the worker's loop; ``accept(sock, peer, tls_context)``
    makes the connection object (HTTP by default)."""

    def __init__(self, sock, worker, tls_context=None, accept=None):
        self.sock = sock
        self.worker = worker
        self.tls_context = tls_context
        self.accept = accept or worker.accepted
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
            self.accept(conn, peer, self.tls_context)

    def close(self):
        self.closed = True


class Worker:
    """One process: an event loop, the chunk repository, the RAWX application."""

    def __init__(self, config, index, sock, stats, tls_sock=None, tls_context=None,
                 ready_fd=None, admin=None, rsmc_sock=None, swap_sock=None):
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
        self.access = accesslog.AccessLog.from_config(config)  # None: access_log off
        self.feeds = feeds.from_config(config)  # after fork: its own queue connection
        self.app = RawxApp(config, repo, self.stats, volume=self.probe, events=self.events,
                           admin=admin, access=self.access, feeds=self.feeds)
        self.listeners = [Listener(sock, self)]
        if tls_sock is not None:
            self.listeners.append(Listener(tls_sock, self, tls_context))
        if rsmc_sock is not None:
            self.rsmc = rsmc_service(config, repo, self.events, admin, self.feeds)
            self.listeners.append(Listener(rsmc_sock, self, accept=self.accepted_rsmc))
        if swap_sock is not None:
            self.swap = swap_service(config, repo, self.events, admin, self.feeds)
            self.listeners.append(Listener(swap_sock, self, accept=self.accepted_swap))
        self.ready_fd = ready_fd
        self.lane = None  # keep-alive connections the compiled path serves alone
        if self.app.fast_get is not None and config.http_keepalive and lane.enabled():
            self.lane = lane.GetLane(self, self.app.fast_get)
        self.offloader = None
        if config.io_threads:
            self.offloader = Offloader(self.loop, config.io_threads, config.buffer_size)
        # SEND transfers: threads of their own (send_concurrency), so that long
        # transfers never take the I/O threads uploads need
        self.transfers = Offloader(self.loop, config.send_concurrency, 0, name="transfer",
                                   max_pending=config.send_concurrency + config.send_queue)
        self._shutdown_at = None
        self._signal = None

    def accepted(self, sock, peer, tls_context=None):
        """An HTTP connection (TLS on the TLS listener)."""
        if tls_context is None:
            self._admit(sock, peer, lambda s, p: Connection(s, p, self.loop, self.app, self))
        else:
            self._admit(sock, peer, lambda s, p: tls.TlsConnection(s, p, self.loop, self.app,
                                                                   self, tls_context))

    def accepted_rsmc(self, sock, peer, tls_context=None):
        self._admit(sock, peer, lambda s, p: RsmcConnection(s, p, self.loop, self, self.rsmc))

    def accepted_swap(self, sock, peer, tls_context=None):
        self._admit(sock, peer, lambda s, p: SwapConnection(s, p, self.loop, self, self.swap))

    def _admit(self, sock, peer, make):
        """An accepted socket: non-blocking, no Nagle delay (every protocol here answers
        requests), its connection made by ``make(sock, peer text)`` and counted."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.connections.add(make(sock, peer_text))
        self.stats.gauge_add("connections", 1)

    def connection_closed(self, conn):
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.gauge_add("connections", -1)

    def _on_signal(self, signum, frame):
        self._signal = signum  # acted upon by the loop, never inside the handler

    def _on_reopen(self, signum, frame):
        if self.access is not None:
            self.access.reopen_wanted = True  # acted upon by its next flush

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
                self.transfers.close()
                if self.events is not None:
                    self.events.close(1.0)
                if self.feeds is not None:
                    self.feeds.close()
                self.loop.stop()
                return
        self.loop.call_later(0.1 if self.stopping else 0.25, self._tick)

    def _begin_shutdown(self, grace):
        self.stopping = True
        self._shutdown_at = time.monotonic() + grace
        for listener in self.listeners:
            self.loop.unregister(listener)
            listener.sock.close()

    def run(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        for listener in self.listeners:
            self.loop.register(listener, READ)
        self.probe.run_once()
        if self.ready_fd is not None:  # tell the master we serve
            try:
                os.write(self.ready_fd, b"r")
            except OSError:
                pass
            os.close(self.ready_fd)
            self.ready_fd = None
        self.loop.call_later(self.config.probe_interval, self._probe)
        self.loop.call_later(0.25, self._tick)
        if self.access is not None:
            self.access.start(self.loop)
        try:
            self.loop.run()
        finally:
            if self.access is not None:
                self.access.close()  # the last lines
        if self.lane is not None:
            self.lane.close()
        self.loop.close()


def rsmc_service(config, repo, events, admin, feeds=None):
    """What a worker's RSMC connections share (spec rsmc.md)."""
    log_path = config.access_log if config.access_log not in ("-", "off") else None
    node = RsmcNode(config, repo, events, parse_peers(config.rsmc_peers), log_path,
                    config.rsmc_log_keep, config.send_timeout, feeds=feeds)
    return RsmcService(node, admin, not config.rsmc_on_loopback,
                       f"storage-node {config.service_id or config.listen}")


def swap_service(config, repo, events, admin, feeds=None):
    """What a worker's SWAP sessions share (spec swap.md)."""
    context = None
    if config.swap_tls:
        context = tls.server_context(config.tls_cert_file, config.tls_key_file)
    return SwapService(config, swap_groups.make_groups(config, repo),
                       swap_groups.partition_uuid(config),
                       parse_swap_peers(config.swap_peers), admin, context, events,
                       feeds=feeds)


def prepare_feeds_queue(config):
    """Create the feeds queue (schema, WAL mode) before the workers open it; a volume
    where it cannot live stops the node at start (VolumeError)."""
    try:
        feeds.FeedQueue(config.docroot, durable=config.fsync).close()
    except Exception as exc:  # sqlite3.Error, OSError
        raise volume.VolumeError(f"feeds queue on {config.docroot}: {exc}") from None
    if any(feed.kind == "s3backup" for feed in config.feeds) \
            and importlib.util.find_spec("boto3") is None:
        log.warning("s3backup feeds need boto3, which is not installed: their chunks "
                    "are queued, and delivered once it is")


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _parse_inherit(text):
    """'plain=3,4;tls=5,6;old=120,121;locks=7,8' (what a reloading master hands over)
    -> dict."""
    found = {}
    for part in filter(None, text.split(";")):
        name, _, values = part.partition("=")
        found[name] = [int(v) for v in values.split(",") if v]
    return found


def _same_address(sock, host, port):
    name = sock.getsockname()
    return name[0] == host and (port == 0 or name[1] == port)


def _inherited_at(fds, host, port):
    """Whether the inherited listening sockets ``fds`` are bound to host:port."""
    if not fds:
        return False
    sock = socket.socket(fileno=fds[0])
    try:
        return _same_address(sock, host, port)
    finally:
        sock.detach()  # _listen adopts it


def _single_socket(directive, host, port, inherited_fds):
    """The listening socket of an admin protocol (RSMC, SWAP; None when ``host`` is
    empty: off): the inherited one if it is bound to host:port, else a new one. One
    socket, no SO_REUSEPORT: a second node on the address fails to bind
    (AlreadyServed), and every worker accepts on it."""
    for fd in inherited_fds:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        if host and _same_address(sock, host, port):
            sock.setblocking(False)
            return sock
        sock.close()  # moved or turned off by the reload
    if not host:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise instance.AlreadyServed(f"cannot listen on {directive} {address}: "
                                     f"{exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _listen(host, port, count, inherited_fds):
    """``count`` listening sockets on host:port, adopting the inherited ones first (a
    reload keeps them, and their queues, open). Inherited sockets bound elsewhere (the
    address changed) are closed here; the old workers drain their own copies."""
    socks = []
    for fd in inherited_fds:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        sock.setblocking(False)
        socks.append(sock)
    if socks and not _same_address(socks[0], host, port):
        log.warning("listen address changed to %s:%d; the old address stops accepting",
                    host, port)
        for sock in socks:
            sock.close()
        socks = []
    if not socks:
        return bind_sockets(host, port, count)
    if len(socks) > count:
        log.warning("keeping %d workers: fewer workers take a full restart", len(socks))
    elif len(socks) < count:
        socks += bind_sockets(host, socks[0].getsockname()[1], count - len(socks))
    return socks


class Master:
    """Binds, forks the workers, respawns a worker that dies, forwards stop signals,
    and re-executes itself on SIGHUP (see the module docstring)."""

    def __init__(self, config, config_path=None, overrides=None):
        self.config = config
        self.config_path = config_path  # None: the embedded default
        self.overrides = overrides or {}
        self.cwd = os.getcwd()
        self.children = {}  # pid -> worker index
        self.old_workers = set()  # the previous image's workers, draining after a reload
        self.stop_signal = None
        self.exit_code = 0
        self.socks = []
        self.tls_socks = []
        self.tls_context = None
        self.stats = None
        self.admin = None  # auth.AdminAuth, made before fork (workers share its state)
        self.locks = instance.NodeLocks()  # one node per address and per volume
        self.lock_keys = set()
        self.rsmc_sock = None  # the RSMC listener every worker accepts on
        self.swap_sock = None  # the SWAP listener, the same way
        self._ready_r = self._ready_w = None
        self._awaiting_ready = 0
        self._handoff_deadline = None

    def start(self):
        config = self.config
        inherited = _parse_inherit(os.environ.pop(INHERIT_ENV, ""))
        self.locks.adopt(inherited.get("locks", ()))
        fresh = [(config.listen_host, config.listen_port)]
        if _inherited_at(inherited.get("plain", ()), *fresh[0]):
            fresh = []  # our own sockets are there: nothing to probe
        if config.tls_enabled and not _inherited_at(inherited.get("tls", ()),
                                                    config.tls_host, config.tls_port):
            fresh.append((config.tls_host, config.tls_port))
        self.lock_keys = self.locks.claim(config, fresh)
        self.locks.keep(self.lock_keys)  # a reload that moved the node frees the old ones
        if not inherited:  # a start, not a SIGHUP reload
            try:
                rsmc_logs.rotate_access_log(config)
            except OSError as exc:
                log.error("cannot rotate the access log %s: %s", config.access_log,
                          exc.strerror)
        volume.prepare(config)
        if config.feeds_config:
            prepare_feeds_queue(config)
        if config.tls_enabled:
            self.tls_context = tls.server_context(config.tls_cert_file, config.tls_key_file)
        self.old_workers = set(inherited.get("old", ()))
        self.socks = _listen(config.listen_host, config.listen_port, config.worker_count,
                             inherited.get("plain", ()))
        config = dataclasses.replace(config, listen_port=self.socks[0].getsockname()[1])
        if config.tls_enabled:
            self.tls_socks = _listen(config.tls_host, config.tls_port, len(self.socks),
                                     inherited.get("tls", ()))
            config = dataclasses.replace(config, tls_port=self.tls_socks[0].getsockname()[1])
            # a worker serves one plain and one TLS socket
            self.socks += bind_sockets(config.listen_host, config.listen_port,
                                       len(self.tls_socks) - len(self.socks))
        else:
            for fd in inherited.get("tls", ()):
                os.close(fd)  # TLS turned off by the reload
        self.rsmc_sock = _single_socket("rsmc_listen", config.rsmc_host, config.rsmc_port,
                                        inherited.get("rsmc", ()))
        if self.rsmc_sock is not None:
            config = dataclasses.replace(config, rsmc_port=self.rsmc_sock.getsockname()[1])
        self.swap_sock = _single_socket("swap_listen", config.swap_host, config.swap_port,
                                        inherited.get("swap", ()))
        if self.swap_sock is not None:
            config = dataclasses.replace(config, swap_port=self.swap_sock.getsockname()[1])
        self.config = config
        self.stats = SharedStats(len(self.socks))
        if config.admin_htdigest:
            # one nonce secret and one nonce-count table for every worker: a nonce any
            # worker issued is good on all of them, and replays are seen by all
            self.admin = auth.AdminAuth(auth.load_htdigest(config.admin_htdigest),
                                        auth.new_secret(), auth.ReplayTable())

    def _spawn(self, index):
        # The master keeps its signals blocked (it waits for them with sigtimedwait); the
        # worker unblocks them once it has its own handlers.
        pid = os.fork()
        if pid == 0:
            code = 0
            self.children.clear()
            try:
                _die_with_parent()
                self.locks.close_in_child()
                os.close(self._ready_r)
                for i, sock in enumerate(self.socks + self.tls_socks):
                    if i != index and i != len(self.socks) + index:
                        sock.close()
                tls_sock = self.tls_socks[index] if self.tls_socks else None
                worker = Worker(self.config, index, self.socks[index], self.stats,
                                rsmc_sock=self.rsmc_sock, swap_sock=self.swap_sock,
                                tls_sock=tls_sock, tls_context=self.tls_context,
                                ready_fd=self._ready_w, admin=self.admin)
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

    def _spawn_delivery(self):
        """Fork the feeds delivery process (storage.feeds.deliver)."""
        pid = os.fork()
        if pid == 0:
            self.children.clear()
            try:
                _die_with_parent()
                self.locks.close_in_child()
                os.close(self._ready_r)
                os.close(self._ready_w)
                for sock in self.socks + self.tls_socks + self._admin_socks():
                    sock.close()
            except BaseException:
                log.exception("feeds delivery process: setup failed")
                os._exit(1)
            from storage.feeds import deliver
            # a feed added by this reload is backfilled once the old workers, which
            # record for the old feeds, are gone
            deliver.run_process(self.config, older=tuple(self.old_workers))  # no return
        self.children[pid] = DELIVERY

    def _stop(self, signum):
        if self.stop_signal is None:
            self.stop_signal = signum
        self._forward(signum)

    def _forward(self, signum):
        for pid in list(self.children) + list(self.old_workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self, recent_deaths):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.old_workers:
                self.old_workers.discard(pid)
                if not self.old_workers:
                    log.info("reload complete: the old workers are gone")
                continue
            index = self.children.pop(pid, None)
            if index is None or self.stop_signal is not None:
                continue
            what = "the feeds delivery process" if index == DELIVERY else f"worker {index}"
            log.error("%s (pid %d) exited with status %d; restarting", what, pid,
                      os.waitstatus_to_exitcode(status))
            now = time.monotonic()
            recent_deaths[:] = [t for t in recent_deaths if now - t < 10] + [now]
            if len(recent_deaths) > 5:
                log.critical("workers keep dying; stopping the node")
                self.exit_code = 1
                self._stop(signal.SIGTERM)
                continue
            if index == DELIVERY:
                self._spawn_delivery()
            else:
                self._spawn(index)

    def _check_ready(self):
        """During a reload: once every new worker serves, stop the old ones."""
        if not self.old_workers or self._awaiting_ready <= 0:
            return
        try:
            self._awaiting_ready -= len(os.read(self._ready_r, 256))
        except BlockingIOError:
            pass
        if self._awaiting_ready <= 0:
            log.info("new workers serve; stopping %d old workers", len(self.old_workers))
            for pid in self.old_workers:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        elif time.monotonic() > self._handoff_deadline:
            log.error("new workers did not come up within %ds; the old ones keep serving",
                      READY_TIMEOUT)
            self._awaiting_ready = 0

    def _reload(self):
        """SIGHUP: validate the configuration, then re-execute in place."""
        if self.stop_signal is not None:
            return
        try:
            config = configmod.load(self.config_path, self.overrides, self.cwd)
            volume.check_lock(config)
            if config.tls_enabled:
                tls.server_context(config.tls_cert_file, config.tls_key_file)
            # a reload that moves the node takes the new address or volume first
            current = self.config
            fresh = [(host, port) for host, port, now in (
                (config.listen_host, config.listen_port,
                 (current.listen_host, current.listen_port)),
                (config.tls_host, config.tls_port, (current.tls_host, current.tls_port)))
                if host and port and (host, port) != now]
            self.locks.claim(config, fresh)
        except (configmod.ConfigError, volume.VolumeError, tls.TlsSetupError,
                instance.AlreadyServed) as exc:
            log.error("reload refused, the node keeps its running configuration: %s", exc)
            return
        socks = self.socks + self.tls_socks + self._admin_socks()
        old = list(self.children) + list(self.old_workers)
        handover = "plain={};tls={};old={};locks={};rsmc={};swap={}".format(
            ",".join(str(sock.fileno()) for sock in self.socks),
            ",".join(str(sock.fileno()) for sock in self.tls_socks),
            ",".join(str(pid) for pid in old),
            ",".join(str(fd) for fd in self.locks.handover()),
            self.rsmc_sock.fileno() if self.rsmc_sock else "",
            self.swap_sock.fileno() if self.swap_sock else "")
        env = dict(os.environ)
        env[INHERIT_ENV] = handover
        argv = [sys.executable] + sys.orig_argv[1:]
        log.info("reloading: re-executing %s", " ".join(argv))
        for sock in socks:
            sock.set_inheritable(True)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, argv, env)
        except OSError as exc:
            log.error("reload failed, the node keeps running: cannot execute %s: %s",
                      sys.executable, exc)
            for sock in socks:
                sock.set_inheritable(False)
            self.locks.handover_failed()
            self.locks.keep(self.lock_keys)

    def run(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        self._ready_r, self._ready_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        for index in range(len(self.socks)):
            self._spawn(index)
        if self.config.feeds_config:  # even with no feed: it drops the rows of old ones
            self._spawn_delivery()
        self._awaiting_ready = len(self.socks)
        self._handoff_deadline = time.monotonic() + READY_TIMEOUT
        tls_text = f" and https://{self.config.tls_listen}" if self.tls_socks else ""
        if self.rsmc_sock is not None:
            tls_text += f" and rsmc {self.config.rsmc_listen}"
        if self.swap_sock is not None:
            tls_text += f" and swap {self.config.swap_listen}"
        print(f"storage-node listening on http://{self.config.listen}{tls_text} "
              f"(namespace {self.config.namespace}, docroot {self.config.docroot}, "
              f"{len(self.socks)} workers)", flush=True)
        recent_deaths = []
        while self.children or self.old_workers:
            waiting = self.old_workers and self._awaiting_ready > 0
            info = signal.sigtimedwait(MASTER_SIGNALS, 0.05 if waiting else 1.0)
            self._check_ready()
            if info is None:
                continue
            if info.si_signo == signal.SIGCHLD:
                self._reap(recent_deaths)
            elif info.si_signo == signal.SIGHUP:
                self._reload()
            elif info.si_signo == signal.SIGUSR1:  # reopen the access log
                self._forward(signal.SIGUSR1)
            else:
                self._stop(info.si_signo)
        for sock in self.socks + self.tls_socks + self._admin_socks():
            sock.close()
        return self.exit_code

    def _admin_socks(self):
        return [sock for sock in (self.rsmc_sock, self.swap_sock) if sock is not None]


def serve(config, config_path=None, overrides=None):
    """Run the node in the foreground until SIGTERM/SIGINT. Returns the exit status."""
    master = Master(config, config_path, overrides)
    master.start()
    return master.run()

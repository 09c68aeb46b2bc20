"""Start and stop the two servers of the HTTP load benchmark on 127.0.0.1.

`NginxServer` renders `nginx.conf.tmpl` into its own temp dir (never the system
config) and runs Debian's nginx in the foreground; `NodeServer` runs our
`storage-node serve -f CONF`. Both are context managers: leaving the block stops
the process group they started (SIGTERM, then SIGKILL after a grace period).
"""

import hashlib
import http.client
import os
import re
import select
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NGINX_TEMPLATE = os.path.join(HERE, "nginx.conf.tmpl")
NODE_BIN = os.path.join(REPO, ".venv", "bin", "storage-node")
READY_RE = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, proc, timeout):
    """Wait until 127.0.0.1:port accepts connections; fail if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


def stop_process(proc, grace=5.0):
    """Stop a process started with start_new_session=True, and its group."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Workers that outlive their master still belong to the group we made.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def nginx_modules_off():
    """Names of the http temp-path modules nginx was built without."""
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    return {m for m in ("proxy", "fastcgi", "uwsgi", "scgi") if "--without-http_%s_module" % m in out}


def render_nginx_conf(prefix, docroot, port, workers=2, access_log=None):
    """The text of nginx.conf for an instance rooted at `prefix`; `access_log` a file
    (nginx's default combined format, one write per request) or None (off)."""
    off = nginx_modules_off() if shutil.which("nginx") else set()
    temps = ["%s_temp_path %s/%s;" % (m, prefix, m)
             for m in ("proxy", "fastcgi", "uwsgi", "scgi") if m not in off]
    # As root, nginx workers default to `nobody`, who cannot write our 0700
    # temp dirs; run them as the same user as our node.
    user_line = "user root root;" if os.geteuid() == 0 else ""
    with open(NGINX_TEMPLATE) as f:
        tmpl = string.Template(f.read())
    text = tmpl.substitute(user_line=user_line, prefix=prefix, docroot=docroot,
                           port=port, temp_paths="\n    ".join(temps),
                         access_log=access_log or "off")
    return text.replace("worker_processes 2;", "worker_processes %d;" % workers)


class NginxServer:
    """Debian's nginx serving `docroot` with WebDAV PUT, from `prefix` (a dir)."""

    name = "nginx"

    def __init__(self, prefix, docroot, workers=2, start_timeout=10.0, access_log=False):
        self.prefix = prefix
        self.docroot = docroot
        self.workers = workers
        self.start_timeout = start_timeout
        # the access log file when logging (access_log True), else None
        self.access_path = os.path.join(prefix, "access.log") if access_log else None
        self.port = None
        self.proc = None

    def url_path(self, chunk_id):
        """nginx keeps the files at our node's `ABC/ABC...` layout."""
        return "/%s/%s" % (chunk_id[:3], chunk_id)

    def file_path(self, chunk_id):
        return os.path.join(self.docroot, chunk_id[:3], chunk_id)

    def start(self):
        os.makedirs(self.docroot, exist_ok=True)
        os.makedirs(os.path.join(self.prefix, "client_body"), exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(render_nginx_conf(self.prefix, self.docroot, self.port, self.workers,
                                    self.access_path))
        log = open(os.path.join(self.prefix, "stderr.log"), "wb")
        try:
            self.proc = subprocess.Popen(["nginx", "-p", self.prefix, "-c", conf],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        try:
            wait_port(self.port, self.proc, self.start_timeout)
        except Exception:
            self.stop()
            raise RuntimeError("nginx did not start: %s" % self.log_tail())
        return self

    def log_tail(self, n=2000):
        text = b""
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.prefix, name), "rb") as f:
                    text += f.read()[-n:]
            except OSError:
                pass
        return text.decode("utf-8", "replace")

    def stop(self):
        stop_process(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class NodeServer:
    """Our `storage-node serve -f CONF`, RAWX config in `prefix`, chunks in `docroot`."""

    name = "ours"

    def __init__(self, prefix, docroot, workers=2, start_timeout=20.0, binary=NODE_BIN,
                 extra_conf=(), access_log=False, port=None):
        self.prefix = prefix
        self.fixed_port = port  # None: a free one at each start
        self.docroot = docroot
        self.workers = workers
        self.start_timeout = start_timeout
        self.access_path = os.path.join(prefix, "access.log") if access_log else None
        self.binary = binary
        self.extra_conf = tuple(extra_conf)
        self.port = None
        self.proc = None

    def url_path(self, chunk_id):
        return "/" + chunk_id

    def file_path(self, chunk_id):
        # hash_width 3, hash_depth 1: the RAWX defaults (rawx.md section 3).
        return os.path.join(self.docroot, chunk_id[:3], chunk_id)

    def start(self):
        os.makedirs(self.docroot, exist_ok=True)
        self.port = self.fixed_port or free_port()
        conf = os.path.join(self.prefix, "rawx.conf")
        # the access log as nginx's (nginx.conf.tmpl): off, or a file for the rows that
        # measure what a log line costs each side
        lines = ["listen 127.0.0.1:%d" % self.port, "namespace OPENIO",
                 "docroot %s" % self.docroot, "workers %d" % self.workers,
                 "access_log %s" % (self.access_path or "off")]
        lines += list(self.extra_conf)
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(self.prefix, "node.log")
        self.proc = subprocess.Popen([self.binary, "serve", "-f", conf],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        """Read stdout until the ready line, then hand it to a log-draining thread."""
        import threading

        deadline = time.monotonic() + self.start_timeout
        seen = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    break
                seen += data
                m = READY_RE.search(seen)
                if m:
                    if int(m.group(1)) != self.port:
                        raise RuntimeError("node listens on %s, asked %d" % (m.group(1), self.port))
                    break
            elif self.proc.poll() is not None:
                break
        else:
            raise RuntimeError("node not ready after %.0f s: %r" % (self.start_timeout, seen[-2000:]))
        if not READY_RE.search(seen):
            raise RuntimeError("node exited (%s): %r" % (self.proc.poll(), seen[-2000:]))
        # Keep draining stdout (the access log may go there) so the node never
        # blocks on a full pipe; the text goes to a file for post-mortems.
        log = open(self.log_path, "wb")
        log.write(seen)

        def drain():
            with log:
                for line in iter(lambda: self.proc.stdout.read1(65536), b""):
                    log.write(line)

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def stop(self):
        stop_process(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def process_tree(pid):
    """pid and all its descendants, found by scanning /proc (parents first)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or ')': fields start after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(children.get(p, ())))
    return out


def cpu_seconds(pid):
    """User + system CPU seconds used so far by pid and its descendants (threads
    included; a process that exits between the scan and the read counts nothing)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            with open("/proc/%d/stat" % p, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


def memory_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, or None when it is gone."""
    vals = {}
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith((b"VmRSS:", b"VmHWM:")):
                    vals[line[:5]] = int(line.split()[1])
    except (OSError, ValueError):
        return None
    if len(vals) < 2:
        return None
    return vals[b"VmRSS"], vals[b"VmHWM"]


def admin_htdigest(directory, password, user="admin"):
    """Write an htdigest file giving ``user`` admin rights on a node (realm CAStor
    administrator); -> its path, for the node's admin_htdigest directive."""
    path = os.path.join(directory, "admin.htdigest")
    ha1 = hashlib.md5(f"{user}:CAStor administrator:{password}".encode()).hexdigest()
    with open(path, "w") as f:
        f.write(f"{user}:CAStor administrator:{ha1}\n")
    return path


def run_in_tmp(name, body):
    """``body(tmp)`` in a fresh temp dir, removed afterwards: the exit status of a
    benchmark script (0, or 1 with one line on stderr when it raised)."""
    tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
    try:
        body(tmp)
    except Exception as exc:
        print(f"{name}: failed: {exc!r}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ---- chunks for the node-to-node benchmarks (load_send, load_rsmc, load_swap, ...) ----
CHUNK_META = {
    "X-oio-Chunk-Meta-Content-Storage-Policy": "SINGLE",
    "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1",
    "X-oio-Chunk-Meta-Chunk-Pos": "0",
    "X-oio-Chunk-Meta-Full-Path": "acct/cont/obj/1/0123456789ABCDEF0123456789ABCDEF",
}


def request(port, method, path, body=None, headers=None, conn=None):
    """One request to 127.0.0.1:port (on ``conn`` if given): (status, body)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def fill(node, ids, size):
    """PUT a chunk of ``size`` random bytes under each id (each body different), on one
    keep-alive connection."""
    piece = os.urandom(size)
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
    try:
        for i, cid in enumerate(ids):
            body = piece[:-8] + i.to_bytes(8, "big")
            status, _ = request(node.port, "PUT", "/" + cid, body, CHUNK_META, conn=conn)
            assert status == 201, status
    finally:
        conn.close()


def clear(node, ids):
    """DELETE each id (missing ones too), on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
    try:
        for cid in ids:
            request(node.port, "DELETE", "/" + cid, conn=conn)
    finally:
        conn.close()


def curl_copy(src, dst, ids):
    """Copy chunks as an operator would script it: ``curl GET src | curl PUT dst``, one
    pair of processes per chunk, one chunk after the other."""
    meta = " ".join(f"-H '{k}: {v}'" for k, v in CHUNK_META.items())
    for cid in ids:
        cmd = (f"curl -sSf http://127.0.0.1:{src.port}/{cid} | "
               f"curl -sSf -o /dev/null -X PUT -T - {meta} http://127.0.0.1:{dst.port}/{cid}")
        subprocess.run(cmd, shell=True, check=True)

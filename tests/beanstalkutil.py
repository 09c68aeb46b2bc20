"""A real beanstalkd for tests: a process on a free 127.0.0.1 port, and a tiny client
that reads jobs back."""
import shutil
import signal
import socket
import subprocess
import time

BEANSTALKD = shutil.which("beanstalkd")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Beanstalkd:
    """A beanstalkd process on a fixed 127.0.0.1 port that can be killed and restarted."""

    def __init__(self, port, binlog=None, max_job_size=None):
        self.port = port
        self.args = [BEANSTALKD, "-l", "127.0.0.1", "-p", str(port)]
        if binlog is not None:
            self.args += ["-b", str(binlog)]
        if max_job_size is not None:
            self.args += ["-z", str(max_job_size)]
        self.proc = None

    def start(self):
        assert self.proc is None
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        assert wait_for(up, 5.0), "beanstalkd did not start"

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(5)
            self.proc = None


def beanstalkd_servers():
    """Generator for a fixture: yields make(start=True, **kwargs), kills all at the end."""
    servers = []

    def make(start=True, **kwargs):
        server = Beanstalkd(free_port(), **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server
    yield make
    for server in servers:
        server.kill()



class Client:
    """Just enough beanstalk protocol to read jobs back."""

    def __init__(self, port, tube="oio"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        assert self.command(f"watch {tube}") == b"WATCHING 2"
        assert self.command("ignore default") == b"WATCHING 1"

    def close(self):
        self.sock.close()

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "beanstalkd closed the connection"
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, size):
        while len(self.buf) < size:
            data = self.sock.recv(65536)
            assert data, "beanstalkd closed the connection"
            self.buf += data
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def command(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def _reserved(self, reply):
        if reply == b"TIMED_OUT":
            return None
        word, job_id, size = reply.split()
        assert word == b"RESERVED", reply
        body = self.exactly(int(size) + 2)
        assert body.endswith(b"\r\n")
        return int(job_id), body[:-2]

    def stats_job(self, job_id):
        reply = self.command(f"stats-job {job_id}")
        word, size = reply.split()
        assert word == b"OK", reply
        text = self.exactly(int(size) + 2).decode()
        return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)

    def take(self, count, timeout=0):
        """Reserve and delete up to ``count`` jobs (a delete rides with the next
        reserve); stops at the first reserve that times out (0: when no job is ready).
        Returns the bodies."""
        bodies = []
        reply = self.command(f"reserve-with-timeout {timeout}")
        while True:
            job = self._reserved(reply)
            if job is None:
                return bodies
            bodies.append(job[1])
            if len(bodies) == count:
                assert self.command(f"delete {job[0]}") == b"DELETED"
                return bodies
            self.sock.sendall(f"delete {job[0]}\r\nreserve-with-timeout {timeout}\r\n".encode())
            assert self.line() == b"DELETED"
            reply = self.line()

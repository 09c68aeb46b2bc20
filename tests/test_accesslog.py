"""The access log: the buffer (_fastpath.accesslog and its twin) writes whole lines in
one write(), and storage.accesslog opens, formats, flushes and reopens."""
import errno
import fcntl
import os
import stat

import pytest

from conftest import import_twin, twin_params
from storage import accesslog
from storage.config import parse_text

LINE = b"4242 access INF - h p GET 200 1 2 0 - r /x http 1 put:0 get:0 del:0 account:- bucket:-\n"


@pytest.fixture(params=twin_params("accesslog"))
def mod(request):
    return import_twin(request.param)


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / "access.log"
    fd = accesslog.open_log(str(path))
    yield path, fd
    os.close(fd)


# ---- the buffer ------------------------------------------------------------------------
def test_lines_wait_for_a_flush(mod, logfile):
    path, fd = logfile
    buffer = mod.LogBuffer(fd, 1 << 20)
    buffer.add(LINE)
    buffer.add(bytearray(LINE))
    assert len(buffer) == 2 * len(LINE) and buffer.lines == 2
    assert path.read_bytes() == b""
    assert buffer.flush() == 2 * len(LINE)
    assert path.read_bytes() == LINE * 2 and len(buffer) == 0
    assert buffer.flush() == 0


def test_a_full_buffer_goes_out_in_one_write(mod, logfile):
    path, fd = logfile
    buffer = mod.LogBuffer(fd, 10 * len(LINE))
    for _ in range(9):
        buffer.add(LINE)
    assert path.read_bytes() == b""
    buffer.add(LINE)  # the limit: all ten at once
    assert path.read_bytes() == LINE * 10 and len(buffer) == 0


def test_only_whole_lines(mod, logfile):
    _, fd = logfile
    buffer = mod.LogBuffer(fd)
    with pytest.raises(ValueError):
        buffer.add(b"no newline")
    buffer.add(b"")
    assert len(buffer) == 0 and buffer.lines == 0
    with pytest.raises(ValueError):
        mod.LogBuffer(-1)
    with pytest.raises(ValueError):
        mod.LogBuffer(fd, 0)


def test_a_long_line_grows_the_buffer(mod, logfile):
    path, fd = logfile
    buffer = mod.LogBuffer(fd, 1 << 20)
    long_line = b"x" * 300_000 + b"\n"
    for _ in range(3):
        buffer.add(long_line)
    buffer.add(LINE)
    buffer.flush()
    assert path.read_bytes() == long_line * 3 + LINE


def test_reopen_writes_out_first(mod, tmp_path, logfile):
    path, fd = logfile
    buffer = mod.LogBuffer(fd)
    buffer.add(b"old\n")
    new_path = tmp_path / "new.log"
    new_fd = accesslog.open_log(str(new_path))
    try:
        assert buffer.reopen(new_fd) == fd and buffer.fd == new_fd
        buffer.add(b"new\n")
        buffer.flush()
        assert path.read_bytes() == b"old\n" and new_path.read_bytes() == b"new\n"
    finally:
        os.close(new_fd)


def test_a_failed_write_drops_and_counts(mod, tmp_path):
    fd = os.open(str(tmp_path / "ro"), os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        buffer = mod.LogBuffer(fd)
        buffer.add(LINE * 3)
        buffer.flush()
        assert buffer.dropped == 3 and buffer.error == errno.EBADF and len(buffer) == 0
        buffer.add(LINE)
        buffer.flush()
        assert buffer.dropped == 4
    finally:
        os.close(fd)


def test_a_full_pipe_keeps_the_lines_for_later(mod):
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
        fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: a small pipe
        buffer = mod.LogBuffer(w, 1 << 20)
        for _ in range(100):
            buffer.add(LINE)
        written = buffer.flush()
        assert 0 < written < 100 * len(LINE) and buffer.dropped == 0
        got = os.read(r, 1 << 20)
        while len(buffer):
            buffer.flush()
            got += os.read(r, 1 << 20)
        assert got == LINE * 100
    finally:
        os.close(r)
        os.close(w)


def test_workers_appending_never_split_a_line(mod, tmp_path):
    """Several processes, each flushing big batches of whole lines to one O_APPEND
    file: every line comes out whole."""
    path = tmp_path / "shared.log"
    pids = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                fd = accesslog.open_log(str(path))
                buffer = mod.LogBuffer(fd, 50_000)
                line = (f"{n} " + "x" * (100 + 37 * n) + "\n").encode()
                for _ in range(3000):
                    buffer.add(line)
                buffer.flush()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 4 * 3000
    for line in lines:
        n, _, text = line.partition(" ")
        assert text == "x" * (100 + 37 * int(n))


# ---- the file, the line, the worker's log -------------------------------------------------
def test_open_log_appends_and_creates_0644(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"before\n")
    fd = accesslog.open_log(str(path))
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"after\n")
        assert path.read_bytes() == b"before\nafter\n"
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert flags & os.O_APPEND and fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)
    fd = accesslog.open_log(str(tmp_path / "new.log"))
    os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "new.log").st_mode) == 0o644 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_check_names_what_workers_could_not_open(tmp_path):
    assert accesslog.check("-") is None and accesslog.check("off") is None
    assert accesslog.check(str(tmp_path / "a.log")) is None
    assert not (tmp_path / "a.log").exists()  # nothing created
    assert "no directory" in accesslog.check(str(tmp_path / "nowhere" / "a.log"))
    assert "is a directory" in accesslog.check(str(tmp_path))


def test_format_line_is_the_reference_layout():
    line = accesslog.format_line(4242, "127.0.0.1:6009", "127.0.0.1:51234", "PUT", 201, 1843,
                                 0, 5, "rid-1", "/C0FFEE01", 1790, 1, 0, 0, b"acct", "cont")
    assert line == (b"4242 access INF - 127.0.0.1:6009 127.0.0.1:51234 PUT 201 1843 0 5 - "
                    b"rid-1 /C0FFEE01 http 1790 put:1 get:0 del:0 account:acct bucket:cont\n")
    line = accesslog.format_line(1, "h\xe9", "p", "GET", 200, 1, 2, 0, "", "/x", 1, 0, 0, 0,
                                 None, b"\xff")
    assert line == ("1 access INF - h\xe9 p GET 200 1 2 0 - - /x http 1 put:0 get:0 del:0 "
                    "account:- bucket:\ufffd\n").encode()


def config_with(access_log):
    return parse_text("listen 127.0.0.1:6009\nnamespace OPENIO\ndocroot /srv\n"
                 f"access_log {access_log}\n")


class FakeLoop:
    def __init__(self):
        self.timers = []

    def call_later(self, delay, callback):
        self.timers.append((delay, callback))


def test_worker_log_flushes_on_its_timer_and_reopens(tmp_path):
    path = tmp_path / "access.log"
    log = accesslog.AccessLog.from_config(config_with(path))
    loop = FakeLoop()
    log.start(loop)
    [(delay, tick)] = loop.timers
    assert delay == accesslog.FLUSH_INTERVAL
    log.write(LINE)
    assert path.read_bytes() == b""
    tick()
    assert path.read_bytes() == LINE and len(loop.timers) == 2  # and again later
    log.write(b"before rotation\n")
    os.rename(path, tmp_path / "access.log.1")  # logrotate
    log.reopen_wanted = True  # SIGUSR1
    log.write(b"after rotation\n")  # buffered before the reopen: the old file's
    tick()
    log.write(b"new\n")
    log.close()
    assert (tmp_path / "access.log.1").read_bytes() == LINE + b"before rotation\n" \
        b"after rotation\n"
    assert path.read_bytes() == b"new\n"


def test_a_failed_reopen_keeps_the_old_file(tmp_path, caplog):
    sub = tmp_path / "logs"
    sub.mkdir()
    path = sub / "access.log"
    log = accesslog.AccessLog(str(path))
    os.rename(sub, tmp_path / "moved")
    log.reopen_wanted = True
    log.write(LINE)
    log.flush()
    assert "cannot reopen" in caplog.text
    log.close()
    assert (tmp_path / "moved" / "access.log").read_bytes() == LINE


def test_lost_lines_are_reported(tmp_path, caplog):
    log = accesslog.AccessLog(str(tmp_path / "access.log"))
    os.close(log.fd)
    fd = os.open(str(tmp_path / "ro"), os.O_RDONLY | os.O_CREAT)  # takes the same number
    try:
        assert fd == log.fd
        log.write(LINE)
        log.flush()
        assert "1 lines lost" in caplog.text
    finally:
        os.close(fd)


def test_off_and_stderr(capfd):
    assert accesslog.AccessLog.from_config(config_with("off")) is None
    log = accesslog.AccessLog.from_config(config_with("-"))
    log.write(LINE)
    assert capfd.readouterr().err == ""
    log.close()
    assert capfd.readouterr().err == LINE.decode()

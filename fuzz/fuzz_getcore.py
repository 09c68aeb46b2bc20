"""Fuzz target: the compiled GET/HEAD path (``_fastpath.getcore``) against its pure-Python
twin (``storage.pure.getcore``) and the Python path's Range reader.

Run with atheris (``make fuzz``):  python fuzz/fuzz_getcore.py -runs=20000
``TestOneInput`` needs nothing but the modules, so tests import it and smoke-run it
over hypothesis inputs without atheris installed.

The first byte is the control byte, the next two pick a chunk size; the rest is
  1. a Range header value, read by both twins' ``parse_range`` and by
     ``storage.rawx.ranges.parse_range`` against that size: all three must agree,
     except that the twins raise OverflowError (both of them) for a number of more
     than 18 digits;
  2. a request head (as is, or put after a valid request line, or as the Range value
     or the target of a GET/HEAD of a chunk, as the control byte says), served by both
     GetCore twins over real TCP socket pairs on 127.0.0.1 (made once, at import) on a
     tiny docroot whose chunks both twins remember. Both must return the same code,
     leave the same attributes and counters, send the same bytes (Date masked) and
     write the same access line (timings masked; ``storage.accesslog.format_line``'s
     words, each twin into its own twin of the log buffer); a declined head sends
     nothing and logs nothing; a served body is the file's bytes (or the range named
     in Content-Range); the only exception allowed is ValueError for an ``n`` out of
     the buffer, from both;
  3. the same head sent on a connection each twin's ``Lane`` holds: both twins must
     report the same, send the same bytes, log the same line and count the same; a
     head handed back is handed back whole with nothing sent or logged, and a head
     the lane answers is one the core answered in 2, with the same bytes.
Anything else is a crash.
"""
import atexit
import fcntl
import os
import re
import socket
import sys
import tempfile

from _fastpath import accesslog as fast_log
from _fastpath import getcore as fast
from _fastpath import lane as fast_lane
from storage.http.response import encode_fields
from storage.pure import accesslog as pure_log
from storage.pure import getcore as pure
from storage.pure import lane as pure_lane
from storage.rawx.ranges import parse_range as reference_range
from storage.stats import INDEX, SharedStats

HOST = "127.0.0.1:6009"
SMALL_FILE = 1024  # a lower threshold than the node's, so that sendfile runs too
CHUNKS = {  # chunk id -> body; the last one is on disk but never remembered
    "0123456789ABCDEF" * 4: bytes(range(256)) * 2 + b"tail",
    "FEDCBA9876543210" * 3: bytes((i * 7) & 0xFF for i in range(3000)),
    "00FF" * 16: b"not remembered",
}
IDS = list(CHUNKS)
DATE = re.compile(rb"\r\nDate: [^\r\n]*\r\n")
LENGTH = re.compile(rb"\r\nContent-Length: (\d+)\r\n")
SPAN = re.compile(rb"\r\nContent-Range: bytes (\d+)-(\d+)/(\d+)\r\n")
SCALES = (1, 1, 1000, 10 ** 13)  # sizes up to 6.5e17: what a file can be


def _docroot():
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-getcore-")
    atexit.register(tmp.cleanup)
    for cid, body in CHUNKS.items():
        os.makedirs(os.path.join(tmp.name, cid[:3]), exist_ok=True)
        with open(os.path.join(tmp.name, cid[:3], cid), "wb") as f:
            f.write(body)
    return tmp


def _socket_pair():
    """(server side, non-blocking as a worker holds it; client side)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


class Twin:
    """One GetCore implementation with its own counters and socket pair."""

    def __init__(self, mod, lanes, root):
        self.mod = mod
        self.lanes = lanes
        self.stats = SharedStats(1)
        row = self.stats.row(0)
        self.core = mod.GetCore((root, 3, 1), (HOST,), row.values, dict(INDEX, base=row.base),
                                SMALL_FILE, 8)
        for n, cid in enumerate(IDS[:2]):
            st = os.stat(os.path.join(root, cid[:3], cid))
            fields = encode_fields([("X-Oio-Chunk-Meta-Chunk-Id", cid),
                                    ("X-Oio-Chunk-Meta-Chunk-Size", str(st.st_size))])
            # the second chunk has no stored hash: a HEAD of it is declined
            self.core.remember(cid, st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size,
                               fields, n == 0, "acct", "cont%d" % n)
        self.server, self.client = _socket_pair()
        self.lane = lanes.Lane(self.core, bytearray(1 << 16), 8192, 60.0, 60.0)
        self.member, self.member_client = _socket_pair()
        # the access lines: through a pipe, read back after each request
        self.log_r, self.log_w = os.pipe()
        fcntl.fcntl(self.log_r, fcntl.F_SETFL, os.O_NONBLOCK)
        self.log = (fast_log if mod is fast else pure_log).LogBuffer(self.log_w, 1 << 20)
        self.core.log_to(self.log, 7)

    def lines(self):
        """The access lines written since the last call, timings masked."""
        self.log.flush()
        data = b""
        try:
            while True:
                data += os.read(self.log_r, 1 << 16)
        except BlockingIOError:
            pass
        out = []
        for line in data.decode("utf-8").splitlines():
            fields = line.split(" ")
            assert len(fields) >= 21 and fields[-2].startswith("account:"), line
            # the timings: 8th from the left, 6th from the right (a request id may
            # hold spaces; the host, the peer and the account here cannot)
            fields[8] = fields[-6] = "T"
            out.append(" ".join(fields))
        return out

    def through_lane(self, head, keep_ok):
        """``head`` on the lane's member connection -> (what the lane reported,
        bytes on the wire, counters)."""
        fd = self.member.fileno()
        if fd not in self.lane:
            self.lane.adopt(fd, "owner", "fuzz:2")  # it left (handed back or closed)
        self.lane.keep_alive_ok = keep_ok
        lines = self.log.lines
        self.member_client.sendall(head)
        out = []
        for _ in range(400):  # until something is reported, or a reply is out
            _, out = self.lane.wait(0.005)
            if out or (self.log.lines > lines and not self.lane.busy(fd)):
                break
        if out:
            assert len(out) == 1 and out[0][0] == "owner", out
            _, code, payload = out[0]
            if code == self.lanes.HANDBACK:
                self._nothing_sent(self.member_client)
                assert self.lines() == [], "a head handed back was logged"
                return (code, payload), b"", self._counters()
            assert code == self.lanes.CLOSE and payload is None, out
        else:
            code = "served"
        [line] = self.lines()
        wire = self._read_reply(line.split(" ")[6] == "HEAD", self.member_client)
        return (code, line), wire, self._counters()

    def serve(self, buf, n, keep_ok):
        """-> (code, attributes, bytes on the wire, counters); ("error", type) for an
        exception the core may raise (ValueError: n out of the buffer)."""
        try:
            code = self.core.serve(self.server.fileno(), buf, n, keep_ok, "fuzz:1")
        except ValueError as exc:
            self._nothing_sent()
            assert self.lines() == []
            return ("error", type(exc).__name__), None, b"", self._counters()
        core = self.core
        if code == self.mod.DECLINED:
            self._nothing_sent()
            assert self.lines() == [], "a declined head was logged"
            return code, None, b"", self._counters()
        if code == self.mod.PENDING:
            core = self._finish(core.pending)  # its attributes, final bytes_out
        wire = self._read_reply(core.kind == "head")
        req = core.request
        attrs = (core.status, core.keep_alive, core.kind, core.reqid, core.account,
                 core.bucket, core.bytes_out, req.method, req.path, req.headers,
                 tuple(self.lines()))
        return code, attrs, wire, self._counters()

    def close(self):
        self.server.close()
        self.client.close()
        self.lane.close()
        self.member.close()
        self.member_client.close()
        os.close(self.log_r)
        os.close(self.log_w)

    def _counters(self):
        return {k: v for k, v in self.stats.totals().items() if not k.startswith("req.time")}

    def _nothing_sent(self, client=None):
        client = client or self.client
        client.setblocking(False)
        try:
            got = client.recv(1)
        except BlockingIOError:
            got = None
        finally:
            client.settimeout(5)
        assert got is None, "a declined or refused head sent bytes"

    def _finish(self, reply):
        """Send what a PENDING reply left, as the loop would on writable events (the
        replies here fit the socket buffers) -> the finished reply."""
        self.server.setblocking(True)
        try:
            assert reply.resume(self.server.fileno()) == self.mod.DONE
        finally:
            self.server.setblocking(False)
        assert reply.finished and reply.remaining == 0
        return reply

    def _read_reply(self, head_only, client=None):
        client = client or self.client
        data = b""
        while b"\r\n\r\n" not in data:
            got = client.recv(65536)
            assert got, "the client side closed"
            data += got
        end = data.index(b"\r\n\r\n") + 4
        size = int(LENGTH.search(data[:end]).group(1))
        want = end + (0 if head_only else size)
        while len(data) < want:
            got = client.recv(65536)
            assert got, "the client side closed"
            data += got
        assert len(data) == want, "bytes after the reply"
        return data


ROOT = _docroot()
TWINS = (Twin(fast, fast_lane, ROOT.name), Twin(pure, pure_lane, ROOT.name))


def check_ranges(value, size):
    """The twins' parse_range against the Python path's, on str and on bytes."""
    want = reference_range(value, size)
    for arg in (value, value.encode("latin-1")):
        outcomes = []
        for mod in (fast, pure):
            try:
                outcomes.append(mod.parse_range(arg, size))
            except OverflowError:
                outcomes.append(OverflowError)
        if outcomes[0] is OverflowError or outcomes[1] is OverflowError:
            assert outcomes == [OverflowError, OverflowError], (value, size, outcomes)
            assert any(len(d) > 18 for d in re.findall("[0-9]+", value)), value
        else:
            assert outcomes == [want, want], (value, size, outcomes, want)


def build_head(ctl, rest):
    """The request head a connection would hand the core, from the input."""
    cid = IDS[((ctl >> 2) & 3) % 3].encode()
    method = b"HEAD" if ctl & 0x10 else b"GET"
    mode = ctl & 3
    if mode == 0:
        return rest
    if mode == 1:
        head = method + b" /" + cid + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" + rest
    elif mode == 2:
        head = method + b" /" + cid + b" HTTP/1.1\r\nHost: " + HOST.encode() \
            + b"\r\nRange: " + rest + b"\r\n"
    else:
        head = method + b" " + rest + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
    return head + b"\r\n"


def check_reply(attrs, wire):
    """A served reply is the chunk's bytes, framed as the core says."""
    head, _, body = wire.partition(b"\r\n\r\n")
    status, kind, path = attrs[0], attrs[2], attrs[8]
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    cid = path.lstrip("/").upper()
    content = CHUNKS[cid]
    assert cid != IDS[2], "a chunk never remembered was served"
    length = int(LENGTH.search(head + b"\r\n").group(1))
    if kind == "head":
        assert status == 200 and body == b"" and length == len(content)
        return
    span = SPAN.search(head + b"\r\n")
    if status == 206:
        first, last, total = map(int, span.groups())
        assert total == len(content) and body == content[first:last + 1]
        value = attrs[9].get("range", "")
        assert reference_range(value, len(content)) == (first, last - first + 1), value
    else:
        assert status == 200 and span is None and body == content
        assert reference_range(attrs[9].get("range", ""), len(content)) is None
    assert length == len(body) and attrs[6] == len(body)


def TestOneInput(data):
    if len(data) < 3:
        return
    data = bytes(data)
    ctl = data[0]
    size = int.from_bytes(data[1:3], "big") * SCALES[data[1] >> 6]
    rest = data[3:4000]
    check_ranges(rest.decode("latin-1"), size)
    head = build_head(ctl, rest)
    pad = bytes(data[2] & 0x3F)
    buf = (bytearray, bytes, memoryview)[data[2] % 3](head + pad)
    n = len(head)
    if ctl & 0x20 and data[1] & 1:
        n = len(head) + len(pad) + 1 + data[2] % 2  # out of the buffer: ValueError
    elif ctl & 0x20 and data[1] & 2:
        n = -1 - data[2] % 3
    keep_ok = not ctl & 0x40
    got, want = (twin.serve(buf, n, keep_ok) for twin in TWINS)
    code, attrs, wire, counters = got
    wire_masked = DATE.sub(b"\r\nDate: -\r\n", wire)
    other = (want[0], want[1], DATE.sub(b"\r\nDate: -\r\n", want[2]), want[3])
    if (code, attrs, wire_masked, counters) != other:
        raise AssertionError(f"fast and pure disagree on {head!r} (n={n})\n"
                             f"fast: {(code, attrs, wire, counters)}\npure: {want}")
    if code == fast.DONE:
        check_reply(attrs, wire)
    if head and n == len(head):
        check_lane(head, keep_ok, code, wire_masked)


def check_lane(head, keep_ok, code, wire):
    """The head through both twins' lanes, against each other and against the core's
    own answer (``code``, ``wire`` with Date masked)."""
    got, want = (twin.through_lane(head, keep_ok) for twin in TWINS)
    masked = [(g[0], DATE.sub(b"\r\nDate: -\r\n", g[1]), g[2]) for g in (got, want)]
    if masked[0] != masked[1]:
        raise AssertionError(f"fast and pure lanes disagree on {head!r}\n"
                             f"fast: {got}\npure: {want}")
    (reported, payload), lane_wire, _ = masked[0]
    if reported == fast_lane.HANDBACK:
        assert payload == head, (payload, head)
    else:
        assert code == fast.DONE and lane_wire == wire, (head, code)
        assert payload.split(" ")[5] == "fuzz:2", payload


if __name__ == "__main__":
    import atheris

    # the modules are already imported: instrument what is loaded so libFuzzer sees
    # coverage (the pure twin's branches mirror the compiled core's)
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()

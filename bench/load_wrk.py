"""Run wrk against one URL and parse its report (GET rows of bench/load.py)."""

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
# wrk prints sizes with binary prefixes (format_binary: 1024-based).
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass
class WrkResult:
    """One wrk run. Latencies in milliseconds, transfer in bytes/s (headers included)."""

    requests: int
    seconds: float
    req_per_s: float
    transfer_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: dict = field(default_factory=dict)

    @property
    def errors(self):
        return self.non_2xx + sum(self.socket_errors.values())


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError("bad wrk duration %r" % text)
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def _bytes(text):
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text)
    if not m:
        raise ValueError("bad wrk size %r" % text)
    return float(m.group(1)) * _SIZE_UNITS[m.group(2)]


def parse_wrk(text):
    """Parse the output of `wrk --latency` into a WrkResult (ValueError if incomplete)."""
    pct = dict(re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$", text, re.M))
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    tps = re.search(r"^Transfer/sec:\s+(\S+)", text, re.M)
    if not (done and rps and tps and "50" in pct and "99" in pct):
        raise ValueError("incomplete wrk output:\n" + text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    errs = {}
    if sock:
        errs = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups())))
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1e3,
        req_per_s=float(rps.group(1)),
        transfer_per_s=_bytes(tps.group(1)),
        p50_ms=_ms(pct["50"]),
        p99_ms=_ms(pct["99"]),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=errs,
    )


def range_script(first, last):
    """A wrk Lua script that sends `Range: bytes=first-last` on every request."""
    return 'wrk.method = "GET"\nwrk.headers["Range"] = "bytes=%d-%d"\n' % (first, last)


def run_wrk(url, duration, connections=16, threads=2, script=None, timeout_s=10,
            wrk="wrk"):
    """Run wrk for `duration` seconds against `url`; `script` is Lua source or None."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("load only goes to 127.0.0.1: %r" % url)
    args = [wrk, "-t%d" % threads, "-c%d" % connections, "-d%ds" % max(1, int(duration)),
            "--timeout", "%ds" % timeout_s, "--latency"]
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        if script is not None:
            path = os.path.join(tmp, "script.lua")
            with open(path, "w") as f:
                f.write(script)
            args += ["-s", path]
        args.append(url)
        # wrk stops by itself after -d; the extra margin bounds a stuck run.
        proc = subprocess.run(args, capture_output=True, text=True,
                              timeout=duration + timeout_s + 30)
    if proc.returncode != 0:
        raise RuntimeError("wrk failed (%d): %s" % (proc.returncode, proc.stderr.strip()))
    return parse_wrk(proc.stdout)

"""The load benchmark's own logic: wrk parsing, the PUT client, RSS sampling, nginx config.

Runs against a tiny threaded http.server on 127.0.0.1 (and against Debian's
nginx + wrk when installed); every run is a fraction of a second.
"""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))

import load  # noqa: E402
import load_put  # noqa: E402
import load_rss  # noqa: E402
import load_servers  # noqa: E402
import load_wrk  # noqa: E402

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:41234/00800000
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    61.95ms   30.12ms 401.00ms   70.00%
    Req/Sec    72.40     20.10   120.00     65.00%
  Latency Distribution
     50%  850.00us
     75%   70.10ms
     90%   95.00ms
     99%    1.20s
  724 requests in 5.01s, 5.66GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    144.51
Transfer/sec:      1.13GB
"""


def test_parse_wrk_units_and_errors():
    res = load_wrk.parse_wrk(WRK_OUTPUT)
    assert res.requests == 724
    assert res.seconds == pytest.approx(5.01)
    assert res.req_per_s == pytest.approx(144.51)
    assert res.transfer_per_s == pytest.approx(1.13 * (1 << 30))
    assert res.p50_ms == pytest.approx(0.85)
    assert res.p99_ms == pytest.approx(1200.0)
    assert res.non_2xx == 4
    assert res.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert res.errors == 7


def test_parse_wrk_rejects_truncated_output():
    with pytest.raises(ValueError):
        load_wrk.parse_wrk(WRK_OUTPUT.split("Requests/sec")[0])


def test_run_wrk_refuses_other_hosts():
    with pytest.raises(ValueError):
        load_wrk.run_wrk("http://10.0.0.1:80/", 1)


def test_percentile_is_nearest_rank():
    stats = load_put.PutStats(latencies=[i / 1000.0 for i in range(1, 101)])
    assert stats.percentile_ms(50) == pytest.approx(50.0)
    assert stats.percentile_ms(99) == pytest.approx(99.0)
    assert stats.percentile_ms(100) == pytest.approx(100.0)


def test_chunk_ids_are_unique_upper_hex():
    ids = {load_put.chunk_id("F1234567", p, c, s)
           for p in range(2) for c in range(3) for s in range(4)}
    assert len(ids) == 24
    for cid in ids:
        assert len(cid) == 64 and cid == cid.upper() and int(cid, 16) >= 0


def test_make_body_is_deterministic_and_sized():
    a = load_put.make_body(100_000, seed=3)
    assert len(a) == 100_000 and a == load_put.make_body(100_000, seed=3)
    assert a != load_put.make_body(100_000, seed=4)


def test_rawx_head_carries_the_mandatory_headers():
    plan = load_put.PutPlan(8080, "rawx", 1234, (201,), "F0000000")
    cid = load_put.chunk_id("F0000000", 0, 0, 7)
    head = load_put.request_head(plan, cid, "AB" * 16).decode()
    assert head.startswith("PUT /%s HTTP/1.1\r\n" % cid) and head.endswith("\r\n\r\n")
    for h in ("Content-Length: 1234", "X-oio-Chunk-Meta-Content-Storage-Policy: SINGLE",
              "X-oio-Chunk-Meta-Content-Chunk-Method: plain/cca=md5",
              "X-oio-Chunk-Meta-Chunk-Pos: 0",
              "X-oio-Chunk-Meta-Full-Path: ACCT/CONT/obj/1/%s" % cid[-32:],
              "X-oio-Chunk-Meta-Chunk-Hash: " + "AB" * 16):
        assert "\r\n%s\r\n" % h in head


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Keep-alive PUT sink: records (path, md5 of body, Chunk-Hash header)."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        with srv.lock:
            srv.seen.append((self.path, hashlib.md5(body).hexdigest().upper(),
                             self.headers.get("X-oio-Chunk-Meta-Chunk-Hash")))
            srv.count += 1
            status = srv.status_for(srv.count)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        if srv.close_every and srv.count % srv.close_every == 0:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def sink():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.daemon_threads = True
    srv.lock, srv.seen, srv.count = threading.Lock(), [], 0
    srv.status_for = lambda n: 201
    srv.close_every = 0
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_put_threads_send_every_byte_and_stop_at_budget(sink):
    sink.close_every = 4  # the client must reconnect when told to close
    plan = load_put.PutPlan(sink.server_address[1], "rawx", 50_000, (201,), "F00000AA")
    stats = load_put.run_put_threads(plan, conns=3, duration=5.0, max_requests=10, timeout=5)
    assert (stats.ok, stats.errors) == (10, 0)
    assert stats.statuses == {201: 10}
    assert stats.bytes_sent == 500_000 and len(stats.latencies) == 10
    assert len(sink.seen) == 10
    md5 = hashlib.md5(load_put.make_body(50_000)).hexdigest().upper()
    assert all(got == md5 and sent == md5 for _, got, sent in sink.seen)
    paths = [p for p, _, _ in sink.seen]
    assert len(set(paths)) == 10 and sorted(paths) == sorted("/" + i for i in stats.ids)


def test_put_counts_bad_statuses(sink):
    sink.status_for = lambda n: 409 if n % 2 else 201
    plan = load_put.PutPlan(sink.server_address[1], "dav", 1000, (201, 204), "F00000BB")
    stats = load_put.run_put_threads(plan, conns=2, duration=5.0, max_requests=8, timeout=5)
    assert stats.ok + stats.errors == 8
    assert stats.statuses == {201: 4, 409: 4} and stats.errors == 4
    assert all(p.startswith("/F00/F00000BB") for p, _, _ in sink.seen)


def test_put_load_across_processes(sink):
    plan = load_put.PutPlan(sink.server_address[1], "dav", 20_000, (201,), "F00000CC")
    stats = load_put.run_put_load(plan, procs=2, conns=2, duration=5.0, max_requests=7,
                                  timeout=5)
    assert (stats.ok, stats.errors) == (7, 0)
    assert len(set(stats.ids)) == 7 and stats.req_per_s > 0 and stats.mb_per_s > 0


def test_rss_row_samples_the_server_process(sink):
    plan = load_put.PutPlan(sink.server_address[1], "rawx", 100_000, (201,), "F00000DD")
    stats, peaks = load_rss.run_rss_row(plan, os.getpid(), uploads=4, timeout=5,
                                        interval=0.01)
    assert (stats.ok, stats.errors) == (4, 0) and len(sink.seen) == 4
    assert os.getpid() in peaks.hwm_kib and peaks.samples >= 2
    assert peaks.peak_mib([os.getpid()]) > 1.0


def test_process_tree_finds_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = load_servers.process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert load_rss.workers_of(os.getpid(), [os.getpid(), child.pid]) == [child.pid]
        rss, hwm = load_servers.memory_kib(child.pid)
        assert 0 < rss <= hwm
    finally:
        child.kill()
        child.wait()
    assert load_servers.memory_kib(child.pid) is None


def test_prune_tree_only_removes_tagged_files(tmp_path):
    (tmp_path / "F12").mkdir()
    (tmp_path / "F12" / "F1234567AB").write_bytes(b"x")
    (tmp_path / "F12" / "F1234567CD.pending").write_bytes(b"x")
    (tmp_path / "000").mkdir()
    (tmp_path / "000" / "0000").write_bytes(b"keep")
    assert load.prune_tree(str(tmp_path), ("F1234567",)) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["0000"]


def test_judge_ratios_and_rss():
    rows = {r.key: r for r in load.ROWS}
    m = load.Measure
    verdict = load.judge(rows["get_4k"], {"ours": m(400, 1, 1, 2), "nginx": m(1000, 9, 1, 2)})
    assert verdict == ("0.40x", ">= 0.35x req/s", "pass")
    verdict = load.judge(rows["get_8m"], {"ours": m(9, 90, 1, 2), "nginx": m(9, 100, 1, 2)})
    assert verdict[0] == "0.90x" and verdict[2] == "FAIL"
    # with repeats, the paired ratio (median of ours/nginx per repeat) decides
    verdict = load.judge(rows["get_8m"], {"ours": m(9, 90, 1, 2, paired=0.96),
                                          "nginx": m(9, 100, 1, 2)})
    assert verdict == ("0.96x paired", ">= 0.95x MB/s", "pass")
    verdict = load.judge(rows["get_8m"], {"ours": m(9, 100, 1, 2, paired=0.9),
                                          "nginx": m(9, 100, 1, 2)})
    assert verdict[2] == "FAIL"
    errs = {"ours": m(9, 100, 1, 2, errors=1), "nginx": m(9, 100, 1, 2)}
    assert load.judge(rows["get_8m"], errs)[2] == "FAIL"
    rss = {"ours": m(1, 1, 1, 1, peak_mib=120.0), "nginx": m(1, 1, 1, 1, peak_mib=5.0)}
    assert load.judge(rows["rss"], rss)[2] == "FAIL"
    rss["ours"].peak_mib = 40.0
    assert load.judge(rows["rss"], rss) == ("40.0 MiB/worker (nginx 5.0)",
                                            "< 100 MiB/worker", "pass")


def test_nginx_conf_has_the_benchmark_settings(tmp_path):
    text = load_servers.render_nginx_conf(str(tmp_path), str(tmp_path / "root"), 4321)
    for needle in ("worker_processes 2;", "sendfile on;", "tcp_nopush on;", "access_log off;",
                   "listen 127.0.0.1:4321;", "dav_methods PUT DELETE;",
                   "create_full_put_path on;", "client_max_body_size 0;",
                   "client_body_temp_path %s/client_body;" % tmp_path,
                   "pid %s/nginx.pid;" % tmp_path, "root %s;" % (tmp_path / "root")):
        assert needle in text
    assert "$" not in text


def test_logged_rows_and_nginx_access_log(tmp_path):
    """Every GET and PUT row has a twin measured with both access logs on."""
    rows = {r.key: r for r in load.ROWS}
    for key in ("get_4k", "get_1m", "get_8m", "get_range", "put_1m", "put_8m"):
        twin = rows[key + "_log"]
        assert twin.logged and not rows[key].logged
        assert (twin.kind, twin.size, twin.byte_range) == (rows[key].kind, rows[key].size,
                                                           rows[key].byte_range)
    assert rows["get_4k_log"].target == 0.9
    log = str(tmp_path / "access.log")
    text = load_servers.render_nginx_conf(str(tmp_path), str(tmp_path / "root"), 4321,
                                          access_log=log)
    assert "access_log %s;" % log in text and "access_log off;" not in text


def _have_dav_nginx():
    if not shutil.which("nginx"):
        return False
    return "http_dav_module" in subprocess.run(["nginx", "-V"], capture_output=True,
                                               text=True).stderr


needs_nginx = pytest.mark.skipif(not _have_dav_nginx(),
                                 reason="no Debian nginx with dav (bench/setup.sh installs it)")


@needs_nginx
def test_nginx_serves_puts_and_ranges(tmp_path):
    body = load_put.make_body(600_000, seed=9)
    srv = load_servers.NginxServer(str(tmp_path), str(tmp_path / "root"))
    with srv:
        plan = load_put.PutPlan(srv.port, "dav", len(body), (201, 204), "F00000EE")
        stats = load_put.run_put_threads(plan, conns=2, duration=5.0, max_requests=4,
                                         timeout=5)
        assert (stats.ok, stats.errors) == (4, 0)
        cid = stats.ids[0]
        with open(srv.file_path(cid), "rb") as f:
            assert f.read() == load_put.make_body(len(body))
        os.makedirs(os.path.dirname(srv.file_path("0" * 64)))
        with open(srv.file_path("0" * 64), "wb") as f:
            f.write(body)
        status, got = load.fetch(srv.port, srv.url_path("0" * 64), (1000, 500_999))
        assert status == 206 and got == body[1000:501_000]
        if shutil.which("wrk"):
            url = "http://127.0.0.1:%d%s" % (srv.port, srv.url_path("0" * 64))
            res = load_wrk.run_wrk(url, 1, connections=2, threads=1,
                                   script=load_wrk.range_script(0, 9))
            assert res.requests > 0 and res.errors == 0
        pid = srv.proc.pid
    assert srv.proc.returncode is not None
    assert load_servers.memory_kib(pid) is None


def test_median_measure_prefers_clean_runs():
    row = {r.key: r for r in load.ROWS}["get_1m"]
    m = load.Measure
    runs = [m(1, 300.0, 1, 2), m(1, 100.0, 1, 2), m(1, 900.0, 1, 2, errors=2, note="boom"),
            m(1, 200.0, 1, 2)]
    med = load.median_measure(row, runs)
    assert med.mb_s == 200.0 and med.errors == 2 and "boom" in med.note
    assert load.median_measure(row, runs[:1]) is runs[0]


def test_cpu_seconds_counts_the_descendants():
    """A child that burns CPU shows in its parent's tree, not in an idle child's."""
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n" \
           "print('done', flush=True)\ntime.sleep(30)"
    busy = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert busy.stdout.readline() == b"done\n"
        assert load_servers.cpu_seconds(busy.pid) >= 0.35
        assert load_servers.cpu_seconds(idle.pid) < 0.3
        assert load_servers.cpu_seconds(os.getpid()) >= \
            load_servers.cpu_seconds(busy.pid) + load_servers.cpu_seconds(idle.pid)
    finally:
        for child in (busy, idle):
            child.kill()
            child.wait()
    assert load_servers.cpu_seconds(busy.pid) == 0  # gone: nothing to count


def test_median_cpu_and_paired_ratio():
    row = {r.key: r for r in load.ROWS}["get_8m"]
    m = load.Measure
    ours = [m(1, 90.0, 1, 2, cpu_ms=1.2), m(1, 50.0, 1, 2, cpu_ms=1.0),
            m(1, 99.0, 1, 2, cpu_ms=3.0)]
    nginx = [m(1, 100.0, 1, 2, cpu_ms=0.9), m(1, 50.0, 1, 2, cpu_ms=0.8),
             m(1, 100.0, 1, 2, cpu_ms=0.7)]
    assert load.median_measure(row, ours).cpu_ms == 1.2
    # the ratio of medians says 0.90x; each repeat pairs 0.90, 1.00, 0.99
    assert load.paired_ratio(row, ours, nginx) == pytest.approx(0.99)
    ours[1].errors = 1
    assert load.paired_ratio(row, ours, nginx) == pytest.approx(0.90)
    assert load.paired_ratio(row, ours[:1], nginx[:1]) is None


def test_table_shows_cpu_per_request():
    row = {r.key: r for r in load.ROWS}["get_8m"]
    m = load.Measure
    text = load.render_table([row], {"get_8m": {"ours": m(1, 95.0, 1, 2, cpu_ms=1.234),
                                                "nginx": m(1, 100.0, 1, 2)}}, ["# t"])
    line = [x for x in text.splitlines() if x.startswith("| GET 8 MiB")][0]
    assert "| 1.23 / - |" in line and "| 0.95x |" in line

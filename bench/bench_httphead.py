"""HTTP/1.x request-head parsing: the compiled parser next to its pure twin.

    .venv/bin/python -m pytest bench/bench_httphead.py --benchmark-enable -q

Compare the fast and pure rows of each group (a ratio; absolute times on a shared
machine are noise). ``main()`` prints the ratios from a quick timeit run
(``--smoke``: 10 calls each, to check that it still runs).
"""
import sys
import timeit

import pytest

from _fastpath import httphead as fast
from storage.pure import httphead as pure

TWINS = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure")]
CHUNK_ID = "0123456789ABCDEF" * 4

# what wrk sends for `wrk -t1 -c8 http://127.0.0.1:6009/<chunk id>`
WRK_GET = (f"GET /{CHUNK_ID} HTTP/1.1\r\n"
           "Host: 127.0.0.1:6009\r\n\r\n").encode("latin-1")

# an OpenIO client's chunk upload: 12 fields
OIO_PUT = (f"PUT /{CHUNK_ID} HTTP/1.1\r\n"
           "Host: 127.0.0.1:6009\r\n"
           "Accept-Encoding: identity\r\n"
           "Content-Length: 1048576\r\n"
           "X-oio-req-id: 3B1E5F0A2C4D6E8F9A0B1C2D3E4F5061\r\n"
           "X-oio-chunk-meta-container-id: " + "ABCDEF0123456789" * 4 + "\r\n"
           "X-oio-chunk-meta-content-id: 0011223344556677889900AABBCCDDEEFF\r\n"
           "X-oio-chunk-meta-content-path: my%2Fobject\r\n"
           "X-oio-chunk-meta-content-version: 1712345678901234\r\n"
           "X-oio-chunk-meta-content-storage-policy: THREECOPIES\r\n"
           "X-oio-chunk-meta-content-chunk-method: plain/nb_copy=3\r\n"
           f"X-oio-chunk-meta-chunk-id: {CHUNK_ID}\r\n"
           "X-oio-chunk-meta-chunk-pos: 0\r\n"
           "\r\n").encode("latin-1")

HEADS = {"wrk GET": WRK_GET, "OpenIO PUT, 12 fields": OIO_PUT}


@pytest.mark.parametrize("mod", TWINS)
@pytest.mark.parametrize("name", sorted(HEADS))
def test_parse_head(benchmark, mod, name):
    benchmark.group = f"parse_head: {name}"
    data = HEADS[name]
    req = benchmark(mod.parse_head, data)
    assert req.target == "/" + CHUNK_ID


@pytest.mark.parametrize("mod", TWINS)
def test_find_head_end(benchmark, mod):
    benchmark.group = "find_head_end: OpenIO PUT head + 4 KiB of body"
    buf = bytearray(OIO_PUT + bytes(4096))
    assert benchmark(mod.find_head_end, buf) == len(OIO_PUT)


def main():
    smoke = "--smoke" in sys.argv  # does it still run: 10 calls, no autorange
    for name, data in HEADS.items():
        rows = {}
        for label, mod in (("fast", fast), ("pure", pure)):
            timer = timeit.Timer(lambda: mod.parse_head(data))
            number = 10 if smoke else timer.autorange()[0]
            rows[label] = min(timer.repeat(1 if smoke else 5, number)) / number * 1e6
        print(f"parse_head {name:24} fast {rows['fast']:6.2f} us  pure {rows['pure']:6.2f} us"
              f"  pure/fast {rows['pure'] / rows['fast']:5.1f}x")


if __name__ == "__main__":
    main()

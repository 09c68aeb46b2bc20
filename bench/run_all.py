"""Run every benchmark of the project in one go (what `make bench` calls).

1. bench/bench_ec.py, if present, as a script (first: it measures two-core scaling);
2. bench/load.py: the HTTP load comparison, our node vs nginx (median of three
   alternating runs per row and server);
3. bench/load_send.py: SEND between two local nodes vs curl GET | curl PUT;
4. bench/load_rsmc.py: RSMC RECEIVE of many chunks vs curl GET | curl PUT;
5. bench/load_swap.py: SWAP stat and stream vs HTTP HEAD and GET on the same node;
6. bench/load_feeds.py: PUT 1 MiB with three feeds vs none, and a replication feed's
   drain rate vs curl GET | curl PUT;
7. bench/load_restore.py: ``feeds restore`` from a moto S3 bucket with 1 and 4
   threads vs a boto3 get_object + PUT loop;
8. pytest micro-benchmarks under bench/ (test_*.py, and bench_*.py files holding
   test functions), if any, with --benchmark-enable.

Each step runs in its own process; a failing step does not stop the next one.
The exit status is the worst of the steps (1 if any failed or missed a target).

    .venv/bin/python bench/run_all.py [--quick] [--only get_4k,put_1m] [--skip-micro]
    .venv/bin/python bench/run_all.py --smoke   # does every benchmark still run? seconds

``--smoke`` runs every step in its smoke mode (``--smoke`` to the scripts, the pytest
micro-benchmarks once each, not timed) and also the ``main()`` of every other bench
script that has one: tests/test_bench_smoke.py runs these very steps.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def steps(args, out_dir=None):
    """The (name, argv) steps to run, in order (``out_dir``: see smoke_steps)."""
    if args.smoke:
        return smoke_steps(out_dir)
    py = sys.executable
    load = [py, os.path.join(HERE, "load.py")]
    if args.quick:
        load.append("--quick")
    else:
        # three alternating runs per row and server, the median kept: one 5 s run
        # against a fixed target failed now and then on this shared machine (PUT
        # 8 MiB: 1.34x, 1.02x, then 0.72x in three make bench runs of one code)
        load += ["--repeat", "3"]
    if args.only:
        load += ["--only", args.only]
    if args.only_load:
        return [("load", load)]
    out = []
    # first, on idle cores: its two-thread scaling target needs both (right after
    # load.py the load average is still about 4)
    ec = os.path.join(HERE, "bench_ec.py")
    if os.path.exists(ec):
        out.append(("bench_ec", [py, ec] + (["--quick"] if args.quick and _takes_quick(ec)
                                            else [])))
    out.append(("load", load))
    send = os.path.join(HERE, "load_send.py")
    out.append(("load_send", [py, send] + (["--quick"] if args.quick else [])))
    rsmc = os.path.join(HERE, "load_rsmc.py")
    out.append(("load_rsmc", [py, rsmc] + (["--quick"] if args.quick else [])))
    swap_bench = os.path.join(HERE, "load_swap.py")
    out.append(("load_swap", [py, swap_bench] + (["--quick"] if args.quick else [])))
    feeds_bench = os.path.join(HERE, "load_feeds.py")
    out.append(("load_feeds", [py, feeds_bench] + (["--quick"] if args.quick else [])))
    restore_bench = os.path.join(HERE, "load_restore.py")
    out.append(("load_restore", [py, restore_bench] + (["--quick"] if args.quick else [])))
    micro = micro_files()
    if micro and not args.skip_micro:
        out.append(("micro", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "--benchmark-enable"] + micro))
    return out


def smoke_steps(out_dir=None):
    """(name, argv) of every benchmark in its smoke mode: each script with a main()
    (``if __name__ == "__main__"``) with ``--smoke``, then the pytest micro-benchmarks
    run once each. ``out_dir`` receives load.py's report instead of bench/out/."""
    py = sys.executable
    out = []
    for path in sorted(glob.glob(os.path.join(HERE, "*.py"))):
        name = os.path.basename(path)
        if name == "run_all.py" or not _has_main(path):
            continue
        argv = [py, path, "--smoke"]
        if name == "load.py" and out_dir:
            argv += ["--out", os.path.join(out_dir, "load-smoke.md")]
        out.append((name[:-3], argv))
    micro = micro_files()
    if micro:
        out.append(("micro", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "--benchmark-disable"] + micro))
    return out


def _has_main(script):
    with open(script, encoding="utf-8", errors="replace") as f:
        return re.search(r"^if __name__ == .__main__.:", f.read(), re.M) is not None


def micro_files():
    """pytest-benchmark modules under bench/, as paths relative to the repo.

    pytest only collects test_*.py from a directory by default, so the
    bench_*.py modules that hold test functions are named explicitly.
    """
    names = sorted(glob.glob(os.path.join(HERE, "test_*.py")))
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            if re.search(r"^def test_", f.read(), re.M):
                names.append(path)
    return [os.path.relpath(n, REPO) for n in names]


def _takes_quick(script):
    """Whether a bench script documents a --quick option (passed on only then)."""
    with open(script, encoding="utf-8", errors="replace") as f:
        return "--quick" in f.read()


def main(argv=None):
    p = argparse.ArgumentParser(description="Run all benchmarks.")
    p.add_argument("--quick", action="store_true", help="1 s per load row; --quick to others")
    p.add_argument("--only", default="", help="load rows to run (see bench/load.py --help)")
    p.add_argument("--only-load", action="store_true", help="just the HTTP load comparison")
    p.add_argument("--skip-micro", action="store_true", help="no pytest micro-benchmarks")
    p.add_argument("--smoke", action="store_true",
                   help="every benchmark in its smoke mode: does it still run? (seconds)")
    args = p.parse_args(argv)
    if not args.smoke:
        settle()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        return run_steps(steps(args, out_dir=tmp))


def idle_fraction(seconds=1.0):
    """The fraction of all CPUs' time spent idle over the next ``seconds``."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(total1 - total0, 1)


def settle(wanted=0.9, limit=60.0):
    """Before the first step (bench_ec's two-thread scaling needs both cores): write
    out dirty pages (what ran before, often GBs of PUTs, is still being flushed) and
    wait, at most ``limit`` seconds, until a second passes with the CPUs idle."""
    started = time.monotonic()
    os.sync()
    idle = idle_fraction()
    while idle < wanted and time.monotonic() - started < limit:
        idle = idle_fraction()
    print("== settle: %.0f s (sync, then CPUs %.0f%% idle over 1 s)"
          % (time.monotonic() - started, idle * 100), flush=True)


def run_steps(todo):
    """Run (name, argv) steps in turn from the repo; -> 1 if any failed, else 0."""
    worst = 0
    summary = []
    for name, cmd in todo:
        print("== %s: %s" % (name, " ".join(cmd)), flush=True)
        t0 = time.monotonic()
        rc = subprocess.run(cmd, cwd=REPO).returncode
        summary.append("%s: exit %d in %.0f s" % (name, rc, time.monotonic() - t0))
        worst = max(worst, 1 if rc else 0)
    print("== summary\n" + "\n".join(summary), flush=True)
    return worst


if __name__ == "__main__":
    sys.exit(main())

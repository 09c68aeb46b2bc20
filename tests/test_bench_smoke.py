"""Every benchmark still runs: each bench script's main() with ``--smoke`` and the
pytest micro-benchmarks once each, as ``bench/run_all.py --smoke`` runs them.

A smoke run measures nothing; it fails when a benchmark is broken (an API it uses
changed, a setup step crashed), so `make test` catches that before `make bench`.
Each step takes seconds: our node only, tiny rows, a few samples.
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import run_all  # noqa: E402

STEP_TIMEOUT = 180  # seconds; a smoke step takes a few (a hang is a failure too)
STEP_NAMES = [name for name, _ in run_all.smoke_steps()]


def test_every_script_with_a_main_has_a_smoke_step():
    scripts = sorted(p.stem for p in (REPO / "bench").glob("*.py")
                     if p.name != "run_all.py"
                     and re.search(r"^if __name__ == .__main__.:", p.read_text(), re.M))
    assert scripts and set(scripts) <= set(STEP_NAMES)
    assert "micro" in STEP_NAMES
    for script in scripts:  # each one documents its smoke mode
        assert "--smoke" in (REPO / "bench" / f"{script}.py").read_text(), script


def test_run_all_smoke_runs_the_smoke_steps(tmp_path):
    args = argparse.Namespace(smoke=True)
    assert run_all.steps(args, out_dir=str(tmp_path)) == run_all.smoke_steps(str(tmp_path))
    load = dict(run_all.smoke_steps(str(tmp_path)))["load"]
    assert load[-2:] == ["--out", str(tmp_path / "load-smoke.md")]  # not bench/out/


@pytest.mark.parametrize("name", STEP_NAMES)
def test_smoke(name, tmp_path):
    argv = dict(run_all.smoke_steps(str(tmp_path)))[name]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n" \
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_setup_says_what_it_installs_and_why(tmp_path):
    """Without nginx and wrk on PATH and without root, bench/setup.sh names each
    package and its purpose, then stops before installing anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\ntouch {tmp_path}/apt-ran\n")
    for tool in ("id", "apt-get"):
        os.chmod(bin_dir / tool, 0o755)
    proc = subprocess.run(["/bin/bash", str(REPO / "bench" / "setup.sh")],
                          env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert "nginx-light: nginx with the WebDAV module" in proc.stdout
    assert "wrk: the HTTP client that drives the GET rows" in proc.stdout
    assert "apt-get install --no-install-recommends nginx-light wrk" in proc.stdout
    assert "need root" in proc.stderr
    assert not (tmp_path / "apt-ran").exists()

# Two commands on a fresh machine: `make run` and `make test`.
# Each bootstraps .venv and builds the Cython extensions when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYX := $(wildcard src/_fastpath/*.pyx src/_fastpath/*.pxd src/_fastpath/*.c src/_fastpath/*.h)

.PHONY: run test bench fuzz build clean
.DEFAULT_GOAL := run

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=77" wheel "Cython>=3.0"
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

$(VENV)/.built: $(VENV)/.installed $(PYX)
	$(PY) setup.py -q build_ext --inplace -j 2
	touch $@

build: $(VENV)/.built

run: build
	$(VENV)/bin/storage-node serve

test: build
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: build
	bash bench/setup.sh
	$(PY) bench/run_all.py

fuzz: build
	$(PY) -m pip install -q atheris
	@for f in fuzz/fuzz_*.py; do echo "== $$f"; $(PY) $$f -runs=20000 -max_len=4096 || exit 1; done

clean:
	rm -rf build src/_fastpath/*.c src/_fastpath/*.so src/*.egg-info $(VENV)

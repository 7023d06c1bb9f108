# pyllm: `make test` and `make run` work on a fresh machine with Python 3.9+ and a C compiler.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
THREADS ?=

.PHONY: install test run bench fetch clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# (Re)build the C extension whenever a source or the build script changes.
$(STAMP): $(PY) setup.py pyproject.toml pyllm/_build.py $(wildcard csrc/*.c csrc/*.h)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

install: $(STAMP)

test: install
	$(PY) -m pytest -q

fetch: install
	$(PY) -m pyllm.fetch

run: install
	$(PY) -m pyllm.run $(if $(THREADS),-t $(THREADS))

bench: install
	$(PY) tools/bench.py $(if $(THREADS),--threads $(THREADS))

clean:
	rm -rf build dist *.egg-info pyllm/_core*.so pyllm/_core.c .pytest_cache $(VENV)

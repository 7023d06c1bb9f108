# pyllm: `make test` and `make run` work on a fresh machine with Python 3.10+ and a C compiler.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
THREADS ?=

.PHONY: install test run bench bench-serve soak fetch clean selftest check-arm fuzz

$(PY):
	$(PYTHON) -m venv $(VENV)

# The C core's sources, as pyllm/_build.py lists them.
CSRC := csrc/model.c csrc/team.c csrc/ops.c $(addprefix csrc/kernels/,dispatch.c ref.c x86.c arm.c)

# (Re)build the C extension whenever a source or the build script changes.
$(STAMP): $(PY) setup.py pyproject.toml pyllm/_build.py $(CSRC) $(wildcard csrc/*.h csrc/kernels/*.h)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

install: $(STAMP)

test: install
	$(PY) -m pytest -q

fetch: install
	$(VENV)/bin/pyllm fetch

# From a terminal: chat with the model. Otherwise (CI, a pipe, no terminal): answer PROMPT once.
PROMPT ?= What is the capital of France? Answer in one sentence.
run: install
	@if [ -t 0 ]; then $(VENV)/bin/pyllm run $(if $(THREADS),-t $(THREADS)); \
	else printf '%s\n' "$(PROMPT)" | $(VENV)/bin/pyllm run --chat $(if $(THREADS),-t $(THREADS)); fi

# pyllm on the default model; llama.cpp on the same GGUF too when llama-cpp-python is installed.
bench: install
	$(PY) tools/bench.py --gguf "$$($(VENV)/bin/pyllm fetch --gguf -q)" $(if $(THREADS),--threads $(THREADS))

# A longer fuzzing campaign than the test suite's (tests/fuzzing.py): FUZZ_CASES mutated inputs of
# each format under FUZZ_SEED; prints a table of outcomes per format and fails on any defect.
FUZZ_CASES ?= 2000
FUZZ_SEED  ?= 1
fuzz: install
	$(PY) tests/fuzzing.py run --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)

# The server against llama.cpp's llama-server on the default model's GGUF (tools/bench_serve.py).
bench-serve: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[server,test]'
	$(PY) tools/bench_serve.py --gguf "$$($(VENV)/bin/pyllm fetch --gguf -q)"

# 10 minutes of 16 streaming clients on `pyllm serve`, some leaving early; then no errors, every KV
# block returned, memory flat (tools/soak.py).
soak: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[server,test]'
	$(PY) tools/soak.py --minutes $(or $(SOAK_MINUTES),10)

clean:
	rm -rf build dist *.egg-info pyllm/_core*.so pyllm/_core.c .pytest_cache $(VENV)

# The C kernels alone, every SIMD family against the portable one (native, and aarch64 under qemu:
# needs gcc-aarch64-linux-gnu and qemu-user).
selftest:
	mkdir -p build
	$(CC) -O2 -std=c11 -pthread -Wall -Wextra tests/c/kernel_selftest.c $(CSRC) -lm -o build/selftest
	build/selftest

check-arm:
	mkdir -p build
	aarch64-linux-gnu-gcc -O2 -std=c11 -pthread -Wall -Wextra -static tests/c/kernel_selftest.c $(CSRC) -lm -o build/selftest-arm
	qemu-aarch64 build/selftest-arm

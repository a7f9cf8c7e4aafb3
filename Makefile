# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv if needed and installs what it needs. Torch is pinned by default
# (a CPU build is fast to install here); override e.g. `make test TORCH_SPEC='torch==2.11.0'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
DEPS := pyproject.toml plugins/rlscale_minatar/pyproject.toml

.PHONY: install demo test lint clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) $(DEPS)
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,ray]" -e plugins/rlscale_minatar
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/rlscale demo

# The report's rendering test uses Debian's headless Chromium; install it where we can
# (root with apt-get), else that one test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  timeout 600 sh -c 'apt-get update -qq && apt-get install -y -qq chromium >/dev/null' ; } || \
	  echo "note: chromium not installed; the report rendering test will skip"

# Tests run in TEST_WORKERS processes (pytest-xdist), each test module in one of them (its
# module-scoped fixtures are built once); TEST_WORKERS=0 runs them in this process. torch
# gets one thread per process unless OMP_NUM_THREADS says otherwise: two workers at two
# threads each on two cores spin against each other (BENCHMARKS.md, "Load, threads").
TEST_WORKERS ?= 2

test: install chromium
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m "not gpu" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope) --durations=15 tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info

# lrsearch front door. `make demo` and `make test` create .venv if needed and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, pinned, so pip never resolves an unpinned (multi-GB CUDA) build by
# accident. Override for your hardware, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
# An existing torch in the venv is kept as it is.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.lrsearch-installed

.PHONY: install demo test test-distributed test-slow test-load lint bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev,lightning,transformers,lrfree,ray,slurm]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lrsearch run studies/quickstart.toml

# pytest's own exit code is kept in .pytest-rc (make turns every failure into 2), so that
# .ci/run can tell "no tests collected" (5) from failing tests. The default suite runs on every
# core (pytest-xdist, at most 4 processes; `make test PYTEST_JOBS=0` runs it in one process).
PYTEST_JOBS ?= auto --maxprocesses 4
test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS)); rc=$$?; echo $$rc > .pytest-rc; exit $$rc

# Its tests mostly wait (restarts, outages, heartbeats): two at a time fit two cores.
DIST_JOBS ?= 2
test-distributed: $(STAMP)
	$(BIN)/python -m pytest -q -m "(postgres or process) and not load and not slow" -n $(DIST_JOBS) --dist worksteal --durations=8; rc=$$?; echo $$rc > .pytest-rc; exit $$rc

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-load: $(STAMP)
	$(BIN)/python -m pytest -q -s -m load

lint: $(STAMP)
	$(BIN)/ruff check lrsearch tests examples
	$(BIN)/ruff format --check lrsearch tests examples
	$(BIN)/mypy lrsearch

bench: $(STAMP)
	$(BIN)/lrsearch bench --quick --out bench-report

# On a CUDA host: a short char-transformer study at GPU size, measured (docs/gpu.md).
# Options: make gpu-check GPU_CHECK_ARGS="--trials 8 --minutes 10"
gpu-check: $(STAMP)
	$(BIN)/python -m lrsearch.harness.gpu_check --out docs/gpu.md $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache lrsearch.egg-info

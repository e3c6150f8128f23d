# Two commands do everything on a fresh machine with Python >= 3.10:
#   make demo   set up, then train lenet5 on the built-in digits and report test accuracy
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch pinned only when it is missing: here it resolves to the local CPU wheel; an unpinned
# torch would pull gigabytes of CUDA packages.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test test-all lint

$(VENV)/.ready: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev,detection,explain,coco]"
	touch $@

setup: $(VENV)/.ready

demo: setup
	$(VENV)/bin/cnnzoo demo

test: setup
	$(PY) -m pytest -n 2 -q

test-all: setup
	$(PY) -m pytest -n 2 -q -m ""

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

# Every target bootstraps the virtual environment first: CPU torch (a bare `pip install torch` would pull a
# multi-GB CUDA build), then the package with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sb3-safeq-installed

.PHONY: demo test lint format clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch>=2.3,<2.14"
	$(BIN)/pip install --quiet -e ".[tests]"
	touch $(STAMP)

# The main job: train SafeSupportQ on safe cliff walking, print the final return and the training unsafe visits.
demo: $(STAMP)
	$(BIN)/python examples/train_cliff_walking.py

# The test suite (the command CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check sb3_safeq tests examples benchmarks
	$(BIN)/ruff format --check sb3_safeq tests examples benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix sb3_safeq tests examples benchmarks
	$(BIN)/ruff format sb3_safeq tests examples benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

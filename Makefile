# Every target bootstraps the virtual environment first: CPU torch (a bare `pip install torch` from PyPI would pull a
# multi-GB CUDA build; tools/install_torch.py switches to PyTorch's CPU index when it would), then the package with
# its test extras. `make test TORCH=default` installs whatever the package index serves instead (CUDA builds on PyPI).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.sb3-safeq-installed
DOCS_STAMP := $(VENV)/.sb3-safeq-docs-installed

.PHONY: demo test lint types format docs clean

$(STAMP): setup.cfg pyproject.toml tools/install_torch.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python tools/install_torch.py --variant $(TORCH)
	$(BIN)/pip install --quiet -e ".[tests]"
	touch $(STAMP)

# The docs extra (Sphinx, MyST, the theme) on top of the test install, once.
$(DOCS_STAMP): $(STAMP) setup.cfg
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

# The main job: train SafeSupportQ on safe cliff walking, print the final return and the training unsafe visits.
demo: $(STAMP)
	$(BIN)/python examples/train_cliff_walking.py

# The test suite (the command CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 tests

# docs/conf.py by name: on the folder, ruff would also reformat the Python blocks of the Markdown pages.
lint: $(STAMP)
	$(BIN)/ruff check sb3_safeq tests examples benchmarks tools docs/conf.py
	$(BIN)/ruff format --check sb3_safeq tests examples benchmarks tools docs/conf.py

# Static types of the package (mypy; its settings are in pyproject.toml).
types: $(STAMP)
	$(BIN)/mypy sb3_safeq

# The documentation site (Sphinx + MyST, docs/conf.py) into docs/_build/html; every warning is an error. -E rereads
# every page: autodoc does not notice docstring changes, and an incremental build would not repeat old warnings.
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -b html docs docs/_build/html

format: $(STAMP)
	$(BIN)/ruff check --fix sb3_safeq tests examples benchmarks docs/conf.py
	$(BIN)/ruff format sb3_safeq tests examples benchmarks docs/conf.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache docs/_build

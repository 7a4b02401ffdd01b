# Two commands on a fresh machine with Python 3.11:
#   make demo   train a model on bundled data with keras-lopt and with Adam, compare, plot
#   make test   run the default test suite (`make test-slow` runs the long ones, the end-to-end
#               meta-training and evaluation runs; CI runs both)
# Both create or reuse the virtual environment .venv and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow benchmark clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev,examples,train]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python examples/compare_with_adam.py --output-dir demo_output

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=15

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow --durations=5

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output

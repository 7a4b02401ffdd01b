# Two commands on a fresh machine with Python 3.11:
#   make demo   train a model on bundled data with Adam, cosine Adam and keras-lopt, compare, plot
#               (in .venv-demo: the optimizer and the example's scikit-learn and matplotlib only)
#   make test   run the default test suite (`make test-slow` runs the long ones, the end-to-end
#               meta-training and evaluation runs; CI runs both), in .venv with every extra
# Each creates or reuses its virtual environment and installs what it needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed

.PHONY: demo test test-slow benchmark clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev,examples,train]"
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install --quiet ".[examples]"
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/python examples/compare_with_adam.py --output-dir demo_output

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=15

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow --durations=5

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) build dist *.egg-info demo_output

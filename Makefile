# `make demo` and `make test` each create .venv if missing, install the project, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pnn demo --out demo_results

# two pytest workers (pytest-xdist): the suite is mostly compilation and small arrays, so two
# processes keep two cores busy (about 7 min instead of 9.5 on a 2-core machine)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) demo_results

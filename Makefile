# clapnb: two commands on a fresh machine (needs python3 >= 3.10 and make).
#   make run   install everything into .venv, then execute every notebook offline, in order
#   make test  install everything into .venv, then run the whole test suite (notebooks included)
# `make lab` starts JupyterLab on the notebooks.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build of torch, installed first so that nothing pulls CUDA wheels (Colab brings its own torch).
TORCH  ?= torch==2.13.0
# Notebooks and tests run offline unless told otherwise: `make run OFFLINE=0` lets "auto" go online.
OFFLINE ?= 1

.PHONY: install run test lab clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: install
	CLAPNB_OFFLINE=$(OFFLINE) $(PY) scripts/run_notebooks.py

test: install
	CLAPNB_OFFLINE=$(OFFLINE) $(PY) -m pytest

lab: install
	$(PY) -m jupyter lab notebooks/

clean:
	rm -rf $(VENV) executed .pytest_cache

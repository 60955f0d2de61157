# clapnb: two commands on a fresh machine (needs python3 >= 3.10 and make).
#   make run   install everything into .venv, then execute every notebook offline, in order
#   make test  install everything into .venv, then run the whole test suite (notebooks included)
# `make rehearse` runs the online course against a local mirror (CI runs it after the tests).
# `make lab` starts JupyterLab on the notebooks.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build of torch, installed first so that nothing pulls CUDA wheels (Colab brings its own torch).
TORCH  ?= torch==2.13.0
# The model code of the real CLAPs, installed WITHOUT their declared dependencies (they pin
# numpy<2 and old transformers; pyproject.toml declares what their code really imports).
MODEL_CODE := laion-clap==1.1.7 msclap==1.3.4
# Notebooks and tests run offline unless told otherwise: `make run OFFLINE=0` lets "auto" go online.
OFFLINE ?= 1
# extra arguments for JupyterLab, e.g. `make lab LAB_ARGS=--allow-root` in a container
LAB_ARGS ?=

.PHONY: install run test rehearse lab clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[lab,test]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_CODE)
	touch $@

run: install
	CLAPNB_OFFLINE=$(OFFLINE) $(PY) scripts/run_notebooks.py

test: install
	CLAPNB_OFFLINE=$(OFFLINE) $(PY) -m pytest

# the online course, rehearsed against a local mirror from a wheel in a fresh numpy-2 venv
rehearse: install
	$(PY) scripts/rehearse.py --python $(PYTHON) --torch "$(TORCH)"

lab: install
	CLAPNB_OFFLINE=$(OFFLINE) $(PY) -m jupyter lab notebooks/ $(LAB_ARGS)

clean:
	rm -rf $(VENV) executed build .pytest_cache

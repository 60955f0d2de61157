# clapnb: two commands on a fresh machine (needs python3 >= 3.10 and make).
#   make run   install everything into .venv, then execute every notebook offline, in order
#   make test  install everything into .venv, then run the whole test suite (notebooks included)
# `make rehearse` runs the online course against a local mirror (CI runs it after the tests).
# `make lab` starts JupyterLab on the notebooks (offline too; LAB_ARGS=--allow-root as root).
# `make site` builds a static site of the executed course in build/site (README: "A static site").

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch, installed first so that nothing else picks its build (Colab brings its own torch). On the
# course's CI machines this resolves to a local CPU build; from PyPI on Linux it is the multi-GB
# CUDA build. For PyTorch's own CPU wheels (the quoting passes the whole value through):
#   make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0
# The model code of the real CLAPs, installed WITHOUT their declared dependencies (they pin
# numpy<2 and old transformers; pyproject.toml declares what their code really imports).
MODEL_CODE := laion-clap==1.1.7 msclap==1.3.4
# Notebooks and tests run offline unless told otherwise: `make run OFFLINE=0` lets "auto" go online.
OFFLINE ?= 1
# extra arguments for JupyterLab, e.g. `make lab LAB_ARGS=--allow-root` in a container
LAB_ARGS ?=

.PHONY: install run test rehearse lab site clean

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

# the executed course as static HTML in build/site: takes executed/ copies that are newer
# than their notebook (`make run` writes them), executes the others
site: install
	CLAPNB_OFFLINE=$(OFFLINE) $(PY) scripts/build_site.py

clean:
	rm -rf $(VENV) executed build .pytest_cache

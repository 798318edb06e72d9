# The two commands a newcomer needs:
#   make lab    install, start the cluster (`ckalab up`) and open JupyterLab on the welcome notebook
#   make test   install, build or reuse the control-plane binaries, run every test on a real cluster
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install binaries lab test bench notebooks clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

binaries: install
	$(BIN)/python -m ckalab.cluster.local

lab: install
	$(BIN)/ckalab up
	. ./$(VENV)/bin/activate && eval "$$(ckalab env)" && \
	  jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/00-welcome.ipynb

notebooks: install   # regenerate notebooks/*.ipynb from notebooks/_source/*.md
	$(BIN)/python notebooks/_source/build.py

test: install binaries
	$(BIN)/ckalab validate
	@if [ -f tools/check_notebooks.py ]; then $(BIN)/python tools/check_notebooks.py; fi
	$(BIN)/pytest tests

bench: install binaries
	$(BIN)/python bench/bench.py

clean-venv:
	rm -rf $(VENV)

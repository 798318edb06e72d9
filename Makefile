# The two commands a newcomer needs:
#   make lab    install, start the cluster (`ckalab up`) and open JupyterLab on the welcome notebook
#   make test   install, build or reuse the control-plane binaries (and the real nodes' when
#               CKALAB_REAL_NODES=1), run every test on a real cluster
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Test workers, each with its own cluster; a module's tests stay on one worker. On real nodes
# (CKALAB_TEST_NODES=real) four: the control-plane labs mostly wait out API server restarts; with
# three workers the two cores were idle 58 % of the time while they ran, with four 35 %
# (docs/real-nodes.md).
TEST_WORKERS ?= $(if $(filter real,$(CKALAB_TEST_NODES)),4,3)

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

# JupyterLab's root is the learner's copy of the notebooks ($CKALAB_HOME/notebooks, made by
# `ckalab notebooks`): saving never touches the checkout and the build sources stay out of sight.
# default_url is also the URL JupyterLab prints, so that link lands on the welcome notebook.
lab: install
	$(BIN)/ckalab up
	. ./$(VENV)/bin/activate && eval "$$(ckalab env)" && dir="$$(ckalab notebooks)" && \
	  jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) --ServerApp.root_dir="$$dir" \
	    --LabApp.default_url=/lab/tree/00-welcome.ipynb

notebooks: install   # regenerate notebooks/*.ipynb from notebooks/_source/*.md
	$(BIN)/python notebooks/_source/build.py

test: install binaries
	$(BIN)/ckalab validate
	$(BIN)/python tools/check_notebooks.py
	$(BIN)/python tools/schema_table.py --check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=40 tests

bench: install binaries
	$(BIN)/python bench/bench.py

clean-venv:
	rm -rf $(VENV)

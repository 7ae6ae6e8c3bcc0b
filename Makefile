# Two commands for a newcomer: `make demo` (the main job, offline) and `make test`.
# Everything runs from a local .venv made with plain venv + pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One install stamp per extra: `make demo` needs the core only, `make lab` adds JupyterLab,
# `make dashboard` Voila, `make test` the test tools (none of them pulls in the others).
STAMP = $(VENV)/.stnviz-$(1)
OUT ?= out
# Jupyter's token: a fresh random one per `make lab` / `make dashboard` unless STNVIZ_TOKEN is set.
# Only this specific name is read (a generic TOKEN in the environment, say a CI secret, is never
# used or printed), and an empty value is refused: it would switch authentication off.
# It reaches the server through the environment only (scripts/serve.py passes it on as
# JUPYTER_TOKEN): never pasted into a shell line, never on the server's command line (/proc).
ifeq ($(origin STNVIZ_TOKEN),undefined)
STNVIZ_TOKEN := $(shell $(PYTHON) -c "import secrets; print(secrets.token_hex(16))")
endif
ifeq ($(origin STNVIZ_TOKEN),command line)
# `make lab STNVIZ_TOKEN='a$$b'`: the value as typed, not make-expanded
override STNVIZ_TOKEN := $(value STNVIZ_TOKEN)
endif
export STNVIZ_TOKEN
PORT ?= 8888
# serve.py checks the token and the port, prints the URL the server really listens on, then runs it.
SERVE = '$(PYTHON)' scripts/serve.py --port '$(PORT)'

.PHONY: install test demo lab dashboard bench clean notebook-filter

install: $(call STAMP,core) notebook-filter

# Notebooks run in JupyterLab keep their outputs in the working copy; git compares and stores them
# stripped (scripts/strip_notebook.py, the clean filter that .gitattributes names), so a Run All and
# an autosave leave the repository clean. Only in a git checkout; cheap, so every target runs it.
notebook-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config filter.stnviz-notebook.clean '$(PYTHON) scripts/strip_notebook.py' && \
		git config filter.stnviz-notebook.smudge cat; \
	fi

$(VENV)/.stnviz-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install -e ".$(if $(filter core,$*),,[$*])"
	touch $@

test: $(call STAMP,test) notebook-filter
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(call STAMP,core)
	$(PY) -m stnviz demo --out $(OUT)

lab: $(call STAMP,lab) notebook-filter
	$(SERVE) --path /lab --name JupyterLab -- '$(VENV)/bin/jupyter' lab --ip=127.0.0.1 --no-browser \
		--ServerApp.port_retries=0 --ServerApp.root_dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# The explorer and inspector as a page without code (Voila); Ctrl-C stops it and its kernels.
# --template=stnviz (share/jupyter/voila/templates/stnviz): Voila's lab page without its CDN links.
# --Voila.auto_token=True: Voila's identity provider takes the token from JUPYTER_TOKEN.
dashboard: $(call STAMP,dashboard) notebook-filter
	JUPYTER_PATH='$(CURDIR)/share/jupyter' $(SERVE) --path / --name Dashboard -- \
		'$(VENV)/bin/voila' notebooks/dashboard.ipynb --template=stnviz \
		--no-browser --Voila.ip=127.0.0.1 --Voila.port_retries=0 --Voila.auto_token=True \
		--MappingKernelManager.cull_idle_timeout=300 --MappingKernelManager.cull_interval=60

bench: $(call STAMP,core)
	$(PY) bench/run.py --out bench/results

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache

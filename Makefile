# label-audit: two commands.
#   make demo [ARGS=--no-app]   build the demo dataset, score it, open the App
#   make test                   install what the tests need and run the suite
# Both create or reuse a virtual environment ($(VENV)); it is rebuilt only
# when pyproject.toml changes (the stamp file is keyed by its hash).

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PY := $(VENV)/bin/python
DEPS_HASH := $(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.label-audit-deps-$(DEPS_HASH)

.PHONY: demo test env

env: $(STAMP)
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
	@$(PY) -m label_audit.database

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23" "setuptools>=77" wheel
	$(PY) -m pip install -q -e ".[test,offline,bench]"
	@rm -f $(VENV)/.label-audit-deps-*
	@touch $@

demo: env
	$(PY) -m label_audit.demo $(ARGS)

test: env
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

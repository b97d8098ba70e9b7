# `make demo` and `make test` each do the whole set-up first (apt packages, venv, install); see README.
VENV ?= .venv

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/elasticast demo

test: setup
	$(VENV)/bin/python -m pytest -q

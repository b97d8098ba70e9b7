# `make demo` and `make test` each do the whole set-up first (apt packages, venv, install); see README.
VENV ?= .venv

.PHONY: setup demo demo-resolution test docs pages
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/python -m examples.demo

# After `make demo` (reuses its data and models in runs/demo): mixed-resolution and avg-pool ElasticAST, against C.
demo-resolution: setup
	$(VENV)/bin/python -m examples.demo --axis resolution

test: setup
	$(VENV)/bin/python -m pytest -q  # includes tests/test_docs.py: `mkdocs build --strict` and every runnable block of the guides

# The documentation site into site/ (strict: a broken link or reference fails), and the benchmark pages from records/.
docs: setup
	$(VENV)/bin/python -m mkdocs build --strict --site-dir site

pages: setup
	$(VENV)/bin/python -m benchmarks.pages

# `make demo` and `make test` each do the whole set-up first (apt packages, venv, install); see README.
VENV ?= .venv

.PHONY: setup demo demo-resolution demo-events test docs pages
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/python -m examples.demo

# After `make demo` (reuses its data and models in runs/demo): mixed-resolution and avg-pool ElasticAST, against C.
demo-resolution: setup
	$(VENV)/bin/python -m examples.demo --axis resolution

# Sound events: generated scenes, a tiny multi-label model trained, calibrated and scored (PSDS, event/segment F1).
demo-events: setup
	$(VENV)/bin/python -m examples.scenes

test: setup
	$(VENV)/bin/python -m pytest -q  # includes tests/test_docs.py: `mkdocs build --strict` and every runnable block of the guides

# The documentation site into site/ (strict: a broken link or reference fails), and the benchmark pages from records/.
docs: setup
	$(VENV)/bin/python -m mkdocs build --strict --site-dir site

pages: setup
	$(VENV)/bin/python -m benchmarks.pages

# `make run`: the whole exercise, headless.  `make test`: the test suite.
# Both set up .venv and data/ on first use (see setup.sh).
PYTHON ?= .venv/bin/python
SETUP := .venv/.installed

.PHONY: run test data notebooks figures lint clean

$(SETUP): pyproject.toml
	sh setup.sh --venv --no-data

data/dataset.json: | $(SETUP)
	sh setup.sh --venv --synthetic

data: data/dataset.json

run: $(SETUP) data/dataset.json
	$(PYTHON) scripts/run_exercise.py

test: $(SETUP)
	$(PYTHON) -m pytest -q

notebooks: $(SETUP)
	$(PYTHON) scripts/build_notebooks.py

figures: $(SETUP)
	$(PYTHON) scripts/make_figures.py

lint: $(SETUP)
	$(PYTHON) -m ruff check pix2pixhd tests scripts solution.py

clean:
	rm -rf results runs .pytest_cache

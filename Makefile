# charon: `make demo` runs the embedded default, `make test` runs lint, types and tests (with coverage).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint types pytest schema schema-check bench image-router images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/charon demo

test: lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check services tests bench

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term

schema: $(STAMP)
	$(BIN)/python -m charon.schema --write

schema-check: $(STAMP)
	$(BIN)/python -m charon.schema --check

image-router:
	bash .ci/build-router-image.sh

images:
	bash .ci/build-router-image.sh --with-worker

bench: $(STAMP)
	$(BIN)/python bench/bench_router.py
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

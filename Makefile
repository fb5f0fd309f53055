# make run   create .venv, install, migrate, run web + workers on SQLite (http://127.0.0.1:$PORT)
# make test  create .venv if needed, install, run the tests
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8000
BIN    := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	LLMQUEUE_DEMO_ENDPOINT=1 $(BIN)/python manage.py llmqueue_bootstrap --demo-url http://127.0.0.1:$(PORT)/demo/v1
	LLMQUEUE_DEMO_ENDPOINT=1 $(BIN)/python manage.py llmqueue_serve --port $(PORT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports

bench: $(VENV)/.installed
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .local db.sqlite3 db.sqlite3-wal db.sqlite3-shm

# Switchyard: `make run` (web + worker on embedded SQLite, with demo data) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test venv lint migrations-check bench bench-scale clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@echo ""
	@echo "  Switchyard is starting at http://$(HOST):$(PORT)/  (Ctrl-C stops web and worker)"
	@echo "  API docs: http://$(HOST):$(PORT)/api/docs   Admin: http://$(HOST):$(PORT)/admin/"
	@echo ""
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho start -f Procfile -p $(PORT)

test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

migrations-check: venv
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf var/work var/test-*.sqlite3*

bench: venv
	$(PY) bench/engine.py

bench-scale: venv
	$(PY) bench/scale_out.py

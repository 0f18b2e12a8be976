# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing and
# reinstall only when pyproject.toml changed since the last install (the stamp file records that).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trainforge train --config configs/classification_digits.yaml

test: $(STAMP)
	$(PY) -m ruff check trainforge tests examples bench
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check trainforge tests examples bench

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/import_time.py
	$(PY) bench/defaults.py
	$(PY) bench/data.py

clean:
	rm -rf $(VENV) build *.egg-info

# Two entry points (see README): `make demo` and `make test`. Everything else is a helper target.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

# torch with 2 threads stalls under CPU contention unless OpenMP threads sleep when idle.
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONDONTWRITEBYTECODE ?= 1

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24,<26" "setuptools>=68,<81" wheel
	$(PIP) install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/provatar demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/bench_generation.py

clean:
	rm -rf $(VENV) .pytest_cache

# Every target builds the venv first, so `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench package clean

venv: $(STAMP)

$(STAMP): requirements.txt functions/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: venv
	$(PY) -m devstack $(ARGS)

test: venv
	$(PY) -m pytest $(ARGS)

# The gate CI runs before the tests: ruff (style, bugbear, imports) and mypy (strict for shared/ and
# functions/, what ships); both are configured in pyproject.toml and walk the whole tree.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

# The performance benchmarks (bench/, docs/performance.md); not part of the tests. ARGS=--quick for a smoke run.
bench: venv
	$(PY) -m bench $(ARGS)

# serverless package (offline) + cfn-lint + the unzipped size of what ships.
package: venv
	bash scripts/ci_package_check.sh

clean:
	rm -rf $(VENV) .pytest_cache build

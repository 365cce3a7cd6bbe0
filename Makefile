# Every target builds the venv first, so `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A second, small venv: the function's runtime (functions/requirements.txt), boto3, pytest and moto only.
RT_VENV ?= .venv-runtime
RT_PY := $(RT_VENV)/bin/python
RT_STAMP := $(RT_VENV)/.installed
# What the tests of shared/ and functions/ must not need (training's stack); checked absent from that venv.
TRAINING_MODULES := tensorflow keras lightgbm sklearn onnx tf2onnx

.PHONY: venv demo test test-runtime lint bench package soak clean batch-dist batch-submit-check

venv: $(STAMP)

$(STAMP): requirements.txt requirements-runtime.txt functions/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: venv
	$(PY) -m devstack $(ARGS)

test: venv
	$(PY) -m pytest $(ARGS)

$(RT_STAMP): requirements-runtime.txt functions/requirements.txt
	$(PYTHON) -m venv $(RT_VENV)
	$(RT_PY) -m pip install --quiet --upgrade pip
	$(RT_PY) -m pip install --quiet -r requirements-runtime.txt
	touch $(RT_STAMP)

# The unit and functional tests in that venv: those of shared/ and functions/ pass with the function's runtime
# alone; tests marked `training` skip there, saying so.
test-runtime: $(RT_STAMP)
	@$(RT_PY) -c 'import importlib.util as u, sys; extra = [m for m in sys.argv[1:] if u.find_spec(m)]; \
		sys.exit(f"$(RT_VENV) is not the runtime alone: it has {extra}" if extra else 0)' $(TRAINING_MODULES)
	$(RT_PY) -m pytest tests/unit tests/functional $(ARGS)

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

# Batch scoring on Spark: the code zip for --py-files and the packed environment for
# --archives (build/batch/), then a spark-submit on local[2] that uses exactly those (needs Java 17).
batch-dist: venv
	$(PY) -m batch.dist

batch-submit-check: batch-dist
	$(PY) -m batch.submit_check

clean:
	rm -rf $(VENV) $(RT_VENV) .pytest_cache build

# Fault soak of the local stack: every input gets exactly one result under S3 faults,
# a worker SIGKILL, duplicates and poison messages. CI: make soak ARGS="--frames 150".
soak: venv
	$(PY) -m devstack.soak $(ARGS)

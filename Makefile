# Two set-up commands; each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow doctest docs demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## make demo: create .venv, install, train the CPU preset of MuLAN on digits and print its test bpd beside baselines.
demo: $(STAMP)
	$(BIN)/python examples/demo.py --workdir runs/demo

## make test: create .venv, install the package with its test extras, run the fast tests (no `slow` marker).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q --durations=15

## make test-slow: the tests marked `slow` (fresh interpreters, long statistics); .ci/run calls it after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m slow -o addopts="-ra" --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests collected"; exit 0; fi; exit $$rc

## make doctest: run the examples in the docstrings of the package (pytest --doctest-modules); .ci/run calls it.
doctest: $(STAMP)
	JAX_COMPILATION_CACHE_DIR="$(CURDIR)/.jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.5 \
		$(BIN)/python -m pytest -n 2 -q --doctest-modules mulan_ppl -o addopts="-ra" --durations=5

## make docs: build the HTML documentation with Sphinx into docs/_build/html; any warning fails the build.
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -E -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache docs/_build

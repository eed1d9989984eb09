# Everything a newcomer, an instructor or CI runs goes through here.
# `make test` works on a fresh clone: it creates .venv, installs requirements.txt, runs all tests.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# nbval compares every cell's output with the committed one (times, paths and addresses sanitized; a cell
# marked NBVAL_IGNORE_OUTPUT is only run). The committed outputs are the full grid's: a reduced grid
# (BHRA_GRID=ci) can only be run, so it gets --nbval-lax (cells marked NBVAL_CHECK_OUTPUT still compared).
NBVAL_MODE := $(if $(filter-out full,$(BHRA_GRID)),--nbval-lax,--nbval)
NBVAL  := $(NBVAL_MODE) --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

.PHONY: install test test-core notebooks twins bench lab clean exercises check-exercise

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(STAMP)

# Every notebook re-executed by nbval (the documentation is the test), and beside it the unit and
# parity tests and the paper profile's code path on a Llama-3.2-1B-shaped model (paper-smoke, below).
# The notebooks' training runs on both cores, but building the base model, evaluation and analysis
# leave one idle, and the other two fill it (a test's outcome never depends on the time it takes).
# Their logs follow the notebooks'. Every part runs whatever another reports; any failure fails `make test`.
test: install
	@mkdir -p build
	@$(PY) -m lab.smoke > build/paper-smoke.log 2>&1 & smoke=$$!; \
	$(PY) -m pytest tests -p no:cacheprovider > build/unit-tests.log 2>&1 & unit=$$!; \
	$(PY) -m pytest $(NOTEBOOKS) $(NBVAL) -p no:cacheprovider; nb=$$?; \
	wait $$unit; unit=$$?; echo "--- unit tests (pytest tests), exit $$unit:"; cat build/unit-tests.log; \
	wait $$smoke; rc=$$?; echo "--- paper-smoke (python -m lab.smoke), exit $$rc:"; cat build/paper-smoke.log; \
	echo "make test: notebooks exit $$nb, unit tests exit $$unit, paper-smoke exit $$rc"; \
	test $$unit -eq 0 -a $$rc -eq 0 -a $$nb -eq 0

# Unit tests without training or notebooks (tests marked `slow` are left out): the quick loop.
test-core: install
	$(PY) -m pytest tests -m "not slow" -p no:cacheprovider -x -q

# Execute every notebook (offline profile). Copies go to build/notebooks, so the committed
# notebooks stay as they are; `make notebooks REFRESH=1` rewrites them in place instead.
notebooks: install
ifdef REFRESH
	$(PY) notebooks/execute.py --inplace $(NOTEBOOKS)
else
	$(PY) notebooks/execute.py --output-dir build/notebooks $(NOTEBOOKS)
endif

# Percent-format text twins of the notebooks (notebooks/py/), so a change shows as a readable diff;
# tests/docs/test_twins.py fails when a twin is out of date.
twins: install
	$(PY) notebooks/twins.py

# Step time, peak memory and merged-inference latency of every method against PEFT
# (benchmarks/README.md; BENCH_ARGS="--preset llama-3.2-1b" on a GPU: the paper profile's float32 + bf16 autocast).
bench: install
	$(PY) benchmarks/bench.py --preset cpu $(BENCH_ARGS)

# The paper profile's data, once, on a machine with hub access: commonsense_170k, the eight test sets,
# MetaMathQA (first 40k) and GSM8K test, written in the LLM-Adapters layout under data/LLM-Adapters.
data: install
	$(PY) -m lab.data $(DATA_ARGS)

# The paper profile's real code path (every method: train -> merge -> save/reload -> evaluate, and one
# continual pass) on Llama-3.2-1B's config with 1 layer and random weights: CPU, a few minutes.
# BHRA_SMOKE_LAYERS=16 make paper-smoke on a GPU: the full size, its step time and peak memory.
paper-smoke: install
	$(PY) -m lab.smoke

# The offline base model is committed (lab/offline_base/): the same weights on every machine. After a change of
# its recipe (a generator in lab/offline.py), rebuild it here (one thread) and commit it.
base: install
	$(PY) -c "from lab.offline import ship_base; print(ship_base())"

.PHONY: data paper-smoke base

lab: install
	$(VENV)/bin/jupyter lab notebooks/

# Build outputs and caches only: a student's work in student/ is never deleted here.
clean:
	rm -rf build .cache
	@test ! -d student || echo "kept student/ (your exercise solutions); remove it yourself if you mean to"


# Exercises: a student copy of the repo in student/ (git ignores it) with every marked solution
# region of core/ and lab/ replaced by a NotImplementedError stub (in the notebooks' displayed
# source too); then the tests of lesson N against it.
exercises: install
	$(PY) course/exercises.py student

check-exercise: install
	@test -n "$(N)" || (echo "usage: make check-exercise N=<lesson number 1-7>"; exit 2)
	@test -d student || $(PY) course/exercises.py student
	cd student && ../$(PY) -m pytest tests -m exercise$(N) -p no:cacheprovider -q

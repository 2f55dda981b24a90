# mwsis developer and user entry points. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# spconv flavour: cpu (default) or gpu (CUDA 12 build)
SPCONV ?= cpu
STAMP := $(VENV)/.installed-$(SPCONV)
DATA ?= out/synthetic
PRESET ?= tiny
FRAMES ?= 8
SEED ?= 0
WORKERS ?= 2

.PHONY: install test pseudolabels synth viz bench clean help

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -e ".[dev,$(SPCONV)]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install mwsis editable with its dev tools

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest -q tests

synth: $(STAMP)  ## generate synthetic driving scenes into $(DATA) (PRESET, FRAMES, SEED, WORKERS)
	$(BIN)/mwsis synth --preset $(PRESET) --frames $(FRAMES) --seed $(SEED) --workers $(WORKERS) --out $(DATA)
	$(BIN)/mwsis info $(DATA)

pseudolabels: synth  ## the main job: pseudo labels for $(DATA) (today: the synthetic dataset; label stages: issue 3)

viz: synth  ## pictures of the first frame of $(DATA) into $(DATA)/viz
	$(BIN)/mwsis viz frame $(DATA) $$($(BIN)/mwsis info $(DATA) --json | $(BIN)/python -c "import json,sys; print(json.load(sys.stdin)['frame_ids'][0])") --out $(DATA)/viz

bench: $(STAMP)  ## benchmarks, JSON into bench/results/
	mkdir -p bench/results
	NUMBA_NUM_THREADS=1 $(BIN)/python bench/bench_synth.py --out bench/results/synth.json
	$(BIN)/python bench/bench_store.py --out bench/results/store.json

clean:  ## remove generated data (keeps .venv)
	rm -rf out bench/results

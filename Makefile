# mwsis developer and user entry points. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# spconv flavour: cpu (default) or gpu (CUDA 12 build)
SPCONV ?= cpu
STAMP := $(VENV)/.installed-$(SPCONV)
# `make pseudolabels DATA=path` labels your dataset; without DATA it renders SYNTH_DATA first
DATA ?=
SYNTH_DATA ?= out/synthetic-waymo
PRESET ?= waymo
FRAMES ?= 8
SEED ?= 0
WORKERS ?= 2
LABEL_DATA = $(or $(DATA),$(SYNTH_DATA))
# extra options of `mwsis slurm pseudolabels`, e.g. SLURM_ARGS="--partition=cpu --time=02:00:00"
SLURM_ARGS ?=

RUN3D ?= out/runs/train3d
CONFIG3D ?= configs/train3d-tiny.yaml
RUN2D ?= out/runs/train2d
CONFIG2D ?= configs/train2d-tiny.yaml
REPORT ?= out/report

.PHONY: install test pseudolabels synth viz bench gpu-check train-3d train-2d experiment-3d experiment-2d report slurm-pseudolabels clean help

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24"
	# the cpu and gpu spconv builds install the same module: drop the other flavour's first
	$(BIN)/python -m pip uninstall -y $(if $(filter gpu,$(SPCONV)),spconv,spconv-cu126) >/dev/null 2>&1 || true
	$(BIN)/python -m pip install -e ".[dev,formats,viz,$(SPCONV)]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install mwsis editable with its dev tools

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest -q tests

synth: $(STAMP)  ## render synthetic driving scenes into SYNTH_DATA (PRESET=waymo|tiny FRAMES SEED WORKERS)
	$(BIN)/mwsis synth --preset $(PRESET) --frames $(FRAMES) --frames-per-sequence 2 --seed $(SEED) \
		--workers $(WORKERS) --out $(SYNTH_DATA)
	$(BIN)/mwsis info $(SYNTH_DATA)

pseudolabels: $(STAMP)  ## the main job: all pseudo-label stages on DATA (default: render SYNTH_DATA first), quality table
	$(if $(DATA),,$(MAKE) --no-print-directory synth)
	$(BIN)/mwsis pseudolabels --data $(LABEL_DATA) --workers $(WORKERS)

slurm-pseudolabels: $(STAMP)  ## the same stages as SLURM array jobs on DATA or SYNTH_DATA (SLURM_ARGS="--partition=P ...")
	$(if $(DATA),,$(MAKE) --no-print-directory synth)
	$(BIN)/mwsis slurm pseudolabels --data $(LABEL_DATA) $(SLURM_ARGS)

viz: $(STAMP)  ## pictures (ground truth and every stage's labels) of the first frame of DATA or SYNTH_DATA
	$(BIN)/mwsis viz frame $(LABEL_DATA) $$($(BIN)/mwsis info $(LABEL_DATA) --json | \
		$(BIN)/python -c "import json,sys; print(json.load(sys.stdin)['first_frame_id'])") --out $(LABEL_DATA)/viz

train-3d: $(STAMP)  ## train the 3D segmentor on SPG labels of DATA (default: the synthetic dataset; CONFIG3D, RUN3D)
	$(if $(DATA),,$(MAKE) --no-print-directory synth)
	$(BIN)/mwsis pseudolabels --data $(LABEL_DATA) --stages spg --no-eval --workers $(WORKERS)
	$(BIN)/mwsis train-3d --data $(LABEL_DATA) --labels spg --out $(RUN3D) --config $(CONFIG3D) --resume
	$(BIN)/mwsis eval-3d --run $(RUN3D) --data $(LABEL_DATA) --json $(RUN3D)/eval.json

train-2d: $(STAMP)  ## train the 2D segmenter on DATA's boxes (default: the synthetic dataset; CONFIG2D, RUN2D)
	$(if $(DATA),,$(MAKE) --no-print-directory synth)
	$(BIN)/mwsis train-2d --data $(LABEL_DATA) --out $(RUN2D) --config $(CONFIG2D) --resume
	$(BIN)/mwsis eval-2d --run $(RUN2D) --data $(LABEL_DATA) --json $(RUN2D)/eval.json

report: $(STAMP)  ## one HTML page in REPORT: label quality of DATA (default: the synthetic dataset), RUN3D/RUN2D when trained
	$(if $(DATA),,$(MAKE) --no-print-directory synth)
	$(BIN)/mwsis report --data $(LABEL_DATA) --out $(REPORT) \
		$$(for r in $(RUN3D) $(RUN2D); do test -f $$r/config.yaml && echo --runs $$r; done)

# the CPU regime every experiment measures in (configs/cpu-bench.yaml: data, seeds, both trainers)
EXPERIMENT_CONFIG ?= configs/cpu-bench.yaml

experiment-2d: $(STAMP)  ## not in CI: Table-5 rows (full supervision, BoxInst, +IPG, +CSCS), 2 seeds -> docs/experiments/experiment-2d.json
	NUMBA_NUM_THREADS=1 $(BIN)/python bench/experiment_2d.py --out out/experiment-2d --config $(EXPERIMENT_CONFIG)

experiment-3d: $(STAMP)  ## not in CI: Table-4 rows (full supervision, CCL, SPG, +PVC, +RSC, labels), 2 seeds -> docs/experiments/experiment-3d.json
	NUMBA_NUM_THREADS=1 $(BIN)/python bench/experiment_3d.py --out out/experiment-3d --config $(EXPERIMENT_CONFIG)

gpu-check:  ## on a GPU machine: CUDA spconv, paper-size 3D/2D training steps (bf16) and SAM ViT-B -> bench/results/gpu-check.json
	$(MAKE) install SPCONV=gpu
	mkdir -p bench/results
	$(BIN)/python bench/gpu_check.py --out bench/results/gpu-check.json

bench: $(STAMP)  ## benchmarks on one core, JSON into bench/results/
	mkdir -p bench/results
	NUMBA_NUM_THREADS=1 $(BIN)/python bench/bench_synth.py --out bench/results/synth.json
	NUMBA_NUM_THREADS=1 $(BIN)/python bench/bench_ccl.py --out bench/results/ccl.json
	NUMBA_NUM_THREADS=1 $(BIN)/mwsis bench --json bench/results/pseudolabels.json

clean:  ## remove generated data (keeps .venv)
	rm -rf out bench/results

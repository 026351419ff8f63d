# layerprune — the two commands of the README:
#   make demo   fetch everything, export SmolLM2-135M, run the pruning pipeline, print results
#   make test   fetch ONNX Runtime and the test tools, run every test
# Everything fetched or built lands in build/ (ignored) and target/.

PYTHON ?= python3
BUILD := build

# A recipe that fails after writing its target (a stage that wrote its table and then failed, an
# export that wrote its manifest and then failed its check) removes it: else the next make takes
# it, newer than its inputs, for done. What must survive a failure is no target: evaluate's
# checkpoints (*.partial.parquet), the plan and frontier caches, make tasks' tables.
.DELETE_ON_ERROR:
CARGO ?= cargo
CARGO_FLAGS ?=
BIN := $(or $(CARGO_TARGET_DIR),target)/debug

# The settings, pinned versions (ORT_VERSION, ...) and plan methods Make and Snakemake share.
include pipelines/settings.mk

# A model folder given without a name (make demo MODEL_DIR=models/mine) is named after its
# folder, so its run (build/runs/mine) does not replace the default model's. A name that would
# meet another target's run folder, or a run another model folder made, is refused before
# anything runs (pipelines/runs.mk).
ifneq ($(filter command line environment,$(origin MODEL_DIR)),)
ifeq ($(origin MODEL_NAME),file)
MODEL_NAME := $(notdir $(abspath $(MODEL_DIR)))
MODEL_NAMED_AFTER_FOLDER := 1
endif
endif

# A comma and a space, for $(subst) on lists given either way.
comma := ,
empty :=
space := $(empty) $(empty)
# The pruned model is the recommended plan at K_PRUNED blocks, one of the KS the plans are
# made for: refused before anything runs rather than after every plan.
ifneq ($(filter demo quantize quantize-bench,$(MAKECMDGOALS)),)
ifeq ($(filter $(K_PRUNED),$(subst $(comma), ,$(KS))),)
$(error K_PRUNED=$(K_PRUNED) is not one of KS=$(KS): the pruned model is the recommended plan at one of the KS)
endif
endif

ORT_LIB := $(BUILD)/ort-cpu/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)
ORT_GPU_LIB := $(BUILD)/ort-gpu/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)
export ORT_DYLIB_PATH ?= $(abspath $(ORT_LIB))

VENV_EXPORT := $(BUILD)/venv-export
VENV_TEST := $(BUILD)/venv-test
VENV_WORKFLOW := $(BUILD)/venv-workflow

.PHONY: all build test test-rust test-python test-workflow test-export lint demo bench results ort \
        ort-gpu venv-export venv-test venv-workflow workflow clean help

# make help: the main targets and the settings most used (README.md has the whole table; every
# setting is in pipelines/settings.mk or the pipelines/*.mk that reads it).
define HELP_TEXT
Usage: make TARGET [SETTING=value ...]

Main targets (README.md, docs/pipeline.md):
  demo                  fetch, export SmolLM2-135M, run every method, print the results
  test                  every test (test-rust, test-python, test-workflow); test-export,
                        test-bench: the exporter's and the GPU benchmark's (need torch)
  prune MODEL=... K=N   prune your Hugging Face folder or GGUF file (or MAX_PPL_RATIO=1.5)
  results               every method at k = 3, 6, 9, table and figures (results-docs: into docs/)
  tasks                 zero-shot accuracy of the full model and every plan (tasks-crosscheck)
  frontier              quality against LLM evaluations (frontier-pairs, frontier-windows;
                        frontier-docs: into docs/)
  exact-frontier        every method against the exact optimum of a 12-block game
                        (exact-frontier-pairs; exact-frontier-docs: into docs/)
  exact-game            the exact 12-player game and every estimator's error against it
  bench, bench-model    evaluate's speed against PyTorch (bench-gpu: on a GPU host; rehearse-gpu:
                        the GPU recipe's device call, here on the CPU)
  quantize              int8 / int4 models (quantize-then-prune, quantize-bench)
  model                 fetch and export MODEL_NAME (smollm2-135m, gemma3-270m)
  workflow              the pipeline on Snakemake (SNAKEMAKE_ARGS="--config shards=4")
  build, lint, fuzz     cargo build; fmt, clippy and doc; the long fuzz run
  ort, ort-gpu          ONNX Runtime (CPU, CUDA) from PyPI
  clean                 remove build/ and target/
  help                  this list

Settings most used, with their values now (defaults: pipelines/settings.mk):
  MODEL_NAME=$(MODEL_NAME)  MODEL_DIR=$(MODEL_DIR)  RUN=$(RUN)
  CALIB_TEXT=$(CALIB_TEXT)  EVAL_TEXT=$(EVAL_TEXT)  (empty: the LAMBADA passages,
    CALIB_DOCUMENTS=$(CALIB_DOCUMENTS) EVAL_DOCUMENTS=$(EVAL_DOCUMENTS))
  CALIB_WINDOWS=$(CALIB_WINDOWS) EVAL_WINDOWS=$(EVAL_WINDOWS) SEQ_LEN=$(SEQ_LEN) BOS=$(BOS) SEED=$(SEED)
  MASKS=$(MASKS) STRATA=$(STRATA) KS=$(KS) K_PRUNED=$(K_PRUNED) SURROGATE_RIDGE=$(SURROGATE_RIDGE) ADAPTIVE_BUDGET=$(ADAPTIVE_BUDGET)
  METHODS=$(METHODS)
  DEVICE=$(DEVICE) (cpu, cuda, cuda:N) THREADS=$(THREADS) (0: every core)
  EVALUATE_FLAGS=$(EVALUATE_FLAGS) (given whole: the stages' --device, --threads, runtime flags)
  make prune: MODEL=$(MODEL) K=$(K) MAX_PPL_RATIO=$(MAX_PPL_RATIO)
  make results: RESULTS_METHODS=$(RESULTS_METHODS)
  make frontier: FRONTIER_KS=$(FRONTIER_KS) FRONTIER_METHODS=$(FRONTIER_METHODS) FRONTIER_SEEDS=$(FRONTIER_SEEDS)
  make exact-game: EXACT=$(EXACT) EXACT_FIXED=$(EXACT_FIXED) EXACT_WINDOWS=$(EXACT_WINDOWS)
endef
export HELP_TEXT
help:
	@printf '%s\n' "$$HELP_TEXT"

all: build

build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins

# --- ONNX Runtime from the PyPI wheel (ort's own binary download cannot work here) ---------
ort: $(ORT_LIB)
$(ORT_LIB): | tools/fetch/fetch_wheel.py
	$(PYTHON) tools/fetch/fetch_wheel.py onnxruntime==$(ORT_VERSION) $(BUILD)/ort-cpu onnxruntime/capi/libonnxruntime.so
	test -f $@

# The CUDA build: use with ORT_DYLIB_PATH=$(abspath $(ORT_GPU_LIB)) and --device cuda.
ort-gpu: $(ORT_GPU_LIB)
$(ORT_GPU_LIB): | tools/fetch/fetch_wheel.py
	$(PYTHON) tools/fetch/fetch_wheel.py onnxruntime-gpu==$(ORT_VERSION) $(BUILD)/ort-gpu onnxruntime/capi/
	test -f $@

# --- Python environments ------------------------------------------------------------------
# The exporter's (torch, transformers; ~5.5 GB): only for exporting models and benchmarks.
venv-export: $(VENV_EXPORT)/.complete
$(VENV_EXPORT)/.complete: tools/export/requirements.txt
	$(PYTHON) -m venv $(VENV_EXPORT)
	$(VENV_EXPORT)/bin/pip install --quiet --upgrade pip
	$(VENV_EXPORT)/bin/pip install --quiet -r tools/export/requirements.txt -r tools/bench/requirements.txt
	touch $@

# The tests' (pyarrow, pandas, DuckDB): checks that other tools read our Parquet unchanged.
venv-test: $(VENV_TEST)/.complete
$(VENV_TEST)/.complete: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV_TEST)
	$(VENV_TEST)/bin/pip install --quiet -r tests/python/requirements.txt
	touch $@

# Snakemake and its Slurm plugin (pipelines/Snakefile), with what the workflow tests read.
venv-workflow: $(VENV_WORKFLOW)/.complete
$(VENV_WORKFLOW)/.complete: tests/workflow/requirements.txt tests/workflow/constraints.txt
	$(PYTHON) -m venv $(VENV_WORKFLOW)
	$(VENV_WORKFLOW)/bin/pip install --quiet -r tests/workflow/requirements.txt -c tests/workflow/constraints.txt
	touch $@

# --- Tests ----------------------------------------------------------------------------------
test: test-rust test-python test-workflow

test-rust: ort
	$(CARGO) test $(CARGO_FLAGS) --workspace

test-python: venv-test
	rm -rf $(BUILD)/samples
	# Built with the whole workspace, so features unify as in `cargo test --workspace` and
	# nothing is rebuilt.
	$(CARGO) build $(CARGO_FLAGS) --workspace --examples
	$(BIN)/examples/write_samples $(BUILD)/samples
	LAYERPRUNE_SAMPLES=$(abspath $(BUILD)/samples) $(VENV_TEST)/bin/python -m pytest -q tests/python

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(CARGO_FLAGS) --workspace --no-deps

clean:
	rm -rf $(BUILD) target

# --- The pipeline (stages, configuration and the demo) ----------------------------------------
include pipelines/layerprune.mk
include pipelines/models.mk
include pipelines/benchmarks.mk
include pipelines/quantize.mk
include pipelines/tasks.mk
include pipelines/frontier.mk
include pipelines/fuzz.mk
include pipelines/prune.mk
# It checks the run folders all the others name.
include pipelines/runs.mk
# Last: it refuses the settings a goal would ignore.
include pipelines/ignored.mk

# The exporter's own tests (need torch: the exporter's environment), with the stages that run
# what it exports (after the includes: $(STAGES) is defined there).
test-export: venv-export ort $(STAGES)
	LAYERPRUNE_BIN=$(abspath $(BIN)) $(VENV_EXPORT)/bin/python -m pytest -q tools/export/tests

# --- The same pipeline on Snakemake (pipelines/Snakefile; docs/pipeline.md, docs/scaling.md) ---
# The workflow's tests on the tiny fixture: shards, sampling rounds, a killed shard, dry runs.
test-workflow: venv-workflow ort $(STAGES)
	LAYERPRUNE_BIN=$(abspath $(BIN)) $(VENV_WORKFLOW)/bin/python -m pytest -q tests/workflow

# make workflow SNAKEMAKE_ARGS="--config shards=4": the pipeline on this machine.
SNAKEMAKE_ARGS ?=
workflow: venv-workflow
	$(VENV_WORKFLOW)/bin/snakemake -s pipelines/Snakefile --profile pipelines/profiles/local $(SNAKEMAKE_ARGS)

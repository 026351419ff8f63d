# Measurements behind docs/benchmarks.md. Included by the top-level Makefile.

# --- make bench: evaluate's speed against the published approach and the GEMM rate ------------
BENCH := $(BUILD)/bench
# WikiText-2 test beside the project when present (the reference perplexity is on it), else
# the held-out LAMBADA passages.
WIKITEXT := ../shared/data/wikitext-2-raw/test.txt
BENCH_SOURCE := $(if $(wildcard $(WIKITEXT)),--text $(WIKITEXT),--lambada $(LAMBADA) --documents 2500:)
BENCH_MASKS ?= 50

# Settings stamps (layerprune.mk): the bench folder serves whichever model MODEL_DIR names
# (make quantize-bench measures the quantized models on its tokens and masks).
# The model folder and the text read (WikiText-2 when present, else the LAMBADA passages) by what
# they are (INPUTS of settings_stamp_at): order-only prerequisites.
BENCH_TEXT := $(or $(wildcard $(WIKITEXT)),$(LAMBADA))
$(eval $(call settings_stamp_at,$(BENCH)/.settings/tokens,$(MODEL_PATH_STAMPED) $(BENCH_SOURCE) $(BOS),,$(MODEL_INPUT) $(BENCH_TEXT)))
$(eval $(call settings_stamp_at,$(BENCH)/.settings/masks,$(MODEL_PATH_STAMPED) $(BENCH_MASKS),,$(MODEL_INPUT)))

$(BENCH)/tokens.parquet: $(BENCH)/.settings/tokens | $(BIN)/prepare-tokens $(MODEL_INPUT) $(BENCH_TEXT)
	@mkdir -p $(BENCH)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) $(BENCH_SOURCE) --windows 10 --seq-len 128 \
	  --bos $(BOS) --mode consecutive --out $@

# The same 50 random masks with 2–9 of the 30 blocks removed for every contender.
$(BENCH)/masks.parquet: $(BENCH)/.settings/masks | $(BIN)/sample-masks $(MODEL_INPUT)
	@mkdir -p $(BENCH)
	$(BIN)/sample-masks --model $(MODEL_DIR) --strata 2,3,4,5,6,7,8,9 --stratified-masks $(BENCH_MASKS) \
	  --seed 1 --out $@

# PyTorch runs the GGUF the model was exported from (MODEL_GGUF, by MODEL_NAME: the models the
# project fetches; another model is refused before anything runs, pipelines/models.mk).
# On the CPU: torch_baseline.py and its GEMM rate run there, so with evaluate on CUDA the report's
# ratios would compare a GPU with a CPU. make bench-gpu compares on the GPU.
ifneq ($(filter bench bench-model,$(MAKECMDGOALS)),)
ifeq ($(DEVICE_KIND),cuda)
$(error make $(filter bench bench-model,$(MAKECMDGOALS)) times evaluate against PyTorch and the GEMM rate on the CPU (tools/bench/torch_baseline.py), so with --device $(MODEL_DEVICE) its ratios would compare a GPU with a CPU: on a GPU run make bench-gpu (docs/benchmarks.md §5))
endif
endif
bench: $(ORT_STAGE_LIB) venv-export $(BENCH)/tokens.parquet $(BENCH)/masks.parquet $(MODEL_GGUF) | $(BIN)/evaluate
	rm -f $(BENCH)/full.parquet $(BENCH)/masks-eval*.parquet
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(BENCH)/tokens.parquet --out $(BENCH)/full.parquet --quiet $(EVALUATE_FLAGS)
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet \
	  --out $(BENCH)/masks-eval.parquet --summary $(BENCH)/rust.json --quiet $(EVALUATE_FLAGS)
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet \
	  --out $(BENCH)/masks-eval-noreuse.parquet --summary $(BENCH)/rust-noreuse.json --no-prefix-reuse \
	  --quiet $(EVALUATE_FLAGS)
	$(VENV_EXPORT)/bin/python tools/bench/torch_baseline.py --gguf $(MODEL_GGUF) \
	  --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet --out $(BENCH)/torch.json
	$(VENV_EXPORT)/bin/python tools/bench/report.py $(BENCH) $(MODEL_DIR)

# --- make bench-gpu: evaluate on CUDA against the PyTorch loops, random weights of real shapes ---
# One run of under 10 minutes on a GPU host (docs/benchmarks.md, §5 "On a GPU"): SmolLM2-135M fp32 and
# fp16, TinyLlama-1.1B fp16, a Llama-2-7B shape in bf16; writes docs/results/gpu-bench.csv and
# $(BENCH_GPU)/gpu-bench.md. Needs ORT_DYLIB_PATH = the onnxruntime-gpu library (and the CUDA
# libraries on LD_LIBRARY_PATH), torch with CUDA, transformers and onnx, and the stage binaries in
# BENCH_GPU_BIN: on a host without cargo, binaries built elsewhere (BENCH_GPU_BIN=their folder);
# when it is this workspace's own target folder they are built first. `make bench-gpu
# BENCH_GPU_DEVICE=cpu BENCH_GPU_SHAPES=tiny` runs it anywhere in seconds (as make test-bench does).
# Then tools/bench/gpu_families.py: fused attention on the device for every architecture that has
# it (tiny models in bf16, fp16 on the CPU, against float32; $(BENCH_GPU)/families.md); and
# tools/bench/gpu_race.py (first): adaptive removal raced and not inside apply-prune on the
# BENCH_GPU_RACE_SHAPE the benchmark exported (its fused folder where there is one; a shape of
# distinct blocks), seconds per LLM evaluation of each ($(BENCH_GPU)/race.md).
BENCH_GPU := $(BUILD)/bench-gpu
BENCH_GPU_BIN ?= $(BIN)
BENCH_GPU_PYTHON ?= $(if $(wildcard $(VENV_EXPORT)/bin/python),$(VENV_EXPORT)/bin/python,python3)
BENCH_GPU_DEVICE ?= cuda
BENCH_GPU_SHAPES ?= gpu
# The committed GPU results take CUDA runs only: the CSV has no device column, and a CPU smoke
# run's rows would read as a GPU's.
BENCH_GPU_CSV ?= $(if $(filter cuda%,$(BENCH_GPU_DEVICE)),docs/results/gpu-bench.csv,$(BENCH_GPU)/gpu-bench.csv)
BENCH_GPU_FLAGS ?=
BENCH_GPU_RACE_SHAPE ?= $(if $(findstring tiny,$(BENCH_GPU_SHAPES)),tiny,smollm2-135m-fp32)
# The library the benchmark's stages load: it runs the model on BENCH_GPU_DEVICE, not DEVICE, so
# unless ORT_DYLIB_PATH is given (the GPU recipe's unpacked one) the build of that device, fetched
# first (`make ort-gpu`'s for CUDA); the CPU build's, loaded for CUDA, failed every contender.
BENCH_GPU_ORT_LIB := $(if $(filter file,$(origin ORT_DYLIB_PATH)),$(call ort_library_of,$(BENCH_GPU_DEVICE)))
ifneq ($(BENCH_GPU_ORT_LIB),)
bench-gpu: ORT_DYLIB_PATH = $(abspath $(BENCH_GPU_ORT_LIB))
endif

bench-gpu: $(if $(filter $(BIN),$(BENCH_GPU_BIN)),$(BIN)/evaluate $(BIN)/apply-prune) $(BENCH_GPU_ORT_LIB)
	PYTHONUNBUFFERED=1 $(BENCH_GPU_PYTHON) tools/bench/gpu_bench.py --device $(BENCH_GPU_DEVICE) \
	  --shapes $(BENCH_GPU_SHAPES) --bin $(BENCH_GPU_BIN) --work $(BENCH_GPU) --csv $(BENCH_GPU_CSV) \
	  --markdown $(BENCH_GPU)/gpu-bench.md --json $(BENCH_GPU)/gpu-bench.json $(BENCH_GPU_FLAGS)
	PYTHONUNBUFFERED=1 $(BENCH_GPU_PYTHON) tools/bench/gpu_race.py --device $(BENCH_GPU_DEVICE) \
	  --bin $(BENCH_GPU_BIN) --bench-shape $(BENCH_GPU)/$(BENCH_GPU_RACE_SHAPE) --work $(BENCH_GPU)/race \
	  --json $(BENCH_GPU)/race.json --markdown $(BENCH_GPU)/race.md
	PYTHONUNBUFFERED=1 $(BENCH_GPU_PYTHON) tools/bench/gpu_families.py --device $(BENCH_GPU_DEVICE) \
	  --dtype $(if $(filter cpu,$(BENCH_GPU_DEVICE)),fp16,bf16) --bin $(BENCH_GPU_BIN) --work $(BENCH_GPU)/families \
	  --json $(BENCH_GPU)/families.json --markdown $(BENCH_GPU)/families.md

# The GPU recipe's last device call (tools/bench/gpu_device_run.sh, docs/benchmarks.md §5)
# rehearsed here on the CPU, from what tools/bench/gpu_prepare.sh packs (the stripped binaries,
# onnxruntime-gpu's library in parts, whose CPU provider runs here): unpacking, the benchmark, GPTQ,
# the race, fused attention in fp16; what the device call would bring back in
# $(BUILD)/rehearse-gpu. Its settings are the docs' command's, read from docs/benchmarks.md by
# tools/bench/gpu_recipe.py (none set here: a pattern or budget wrong in the recipe then shows
# here), but for the device (cpu) and the shapes (each the tiny shape of its dtype, C_<shape>
# carried over, the race's k scaled); a step that fails, or settings over a device call, fail it.
# Works in /tmp as the device call does (/tmp/ortparts, /tmp/ort, /tmp/bench-gpu, /tmp/families).
# Needs ../shared (gpu-bundle) and the exporter's environment.
rehearse-gpu: venv-export
	bash tools/bench/gpu_prepare.sh
	rm -rf /tmp/ortparts /tmp/ort /tmp/bench-gpu /tmp/families /tmp/race $(BUILD)/rehearse-gpu
	mkdir -p $(BUILD)/rehearse-gpu
	PATH=$(abspath $(VENV_EXPORT))/bin:$$PATH OUT=$(abspath $(BUILD))/rehearse-gpu \
	  python3 tools/bench/gpu_recipe.py rehearse

# The benchmark scripts' tests: gpu_bench.py end to end on the CPU with the tiny shape, and
# gpu_families.py on a few fixtures.
test-bench: venv-export ort $(STAGES)
	LAYERPRUNE_BIN=$(abspath $(BIN)) $(VENV_EXPORT)/bin/python -m pytest -q tools/bench/tests

# --- make exact-game: a game small enough to solve exactly, and every estimator against it ------
# 12 players: blocks 16–27 of SmolLM2's 30. Blocks 0–2 and 28–29 are the ones whose single
# removal is catastrophic (utility < 0.35), which no method removes; the deep middle is where
# every method prunes. A contiguous range lets the 16 fixed blocks in front run once per batch.
# One folder per model (MODEL_NAME), as make bench-model's.
EXACT ?= $(BUILD)/exact-game-$(MODEL_NAME)
EXACT_FIXED ?= 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,28,29
EXACT_WINDOWS ?= 2

# Settings stamps (layerprune.mk): the model folder and the LAMBADA passages (by what they are:
# order-only prerequisites), the windows and BOS of the tokens, the players, and the device the
# game is measured on.
$(eval $(call settings_stamp_at,$(EXACT)/.settings/tokens,$(MODEL_PATH_STAMPED) $(EXACT_WINDOWS) $(BOS),,$(MODEL_INPUT) $(LAMBADA)))
$(eval $(call settings_stamp_at,$(EXACT)/.settings/masks,$(MODEL_PATH_STAMPED) $(EXACT_FIXED),,$(MODEL_INPUT)))
$(eval $(call settings_stamp_at,$(EXACT)/.settings/device,$(MODEL_RUNTIME)))

$(EXACT)/tokens.parquet: $(EXACT)/.settings/tokens | $(BIN)/prepare-tokens $(MODEL_INPUT) $(LAMBADA)
	@mkdir -p $(EXACT)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) --lambada $(LAMBADA) --documents 0:2500 \
	  --windows $(EXACT_WINDOWS) --seq-len 128 --bos $(BOS) --mode random --seed 0 --out $@

$(EXACT)/masks.parquet: $(EXACT)/.settings/masks | $(BIN)/sample-masks $(MODEL_INPUT)
	@mkdir -p $(EXACT)
	$(BIN)/sample-masks --model $(MODEL_DIR) --enumerate --fixed $(EXACT_FIXED) --out $@

# Checkpointed as the demo's evaluations.parquet (pipelines/layerprune.mk, `evaluate_checkpointed`).
$(EXACT)/evaluations.parquet: $(EXACT)/masks.parquet $(EXACT)/tokens.parquet $(EXACT)/.settings/device | $(BIN)/evaluate $(BIN)/inspect
	$(call evaluate_checkpointed,--model $(MODEL_DIR) --tokens $(EXACT)/tokens.parquet --masks $< --chunk 256 \
	  $(EVALUATE_FLAGS) --summary $(EXACT)/summary.json,$<)

$(EXACT)/accuracy/summary.md: $(EXACT)/evaluations.parquet
	$(CARGO) build $(CARGO_FLAGS) --workspace --examples
	$(BIN)/examples/estimator_accuracy \
	  --evaluations $< --seeds 10 --out $(dir $@)

$(EXACT)/accuracy/rmse.svg: $(EXACT)/accuracy/summary.md $(call tool_sources,report/plots.py) | venv-report
	$(VENV_REPORT)/bin/python tools/report/plots.py estimator-rmse $(EXACT)/accuracy/results.csv $@

exact-game: $(ORT_STAGE_LIB) $(EXACT)/accuracy/summary.md $(EXACT)/accuracy/rmse.svg
	cat $(EXACT)/accuracy/summary.md

.PHONY: bench bench-gpu rehearse-gpu test-bench exact-game

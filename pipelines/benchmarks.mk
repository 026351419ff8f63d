# Measurements behind docs/benchmarks.md. Included by the top-level Makefile.

# --- make bench: evaluate's speed against the published approach and the GEMM rate ------------
BENCH := $(BUILD)/bench
# WikiText-2 test beside the project when present (the reference perplexity is on it), else
# the held-out LAMBADA passages.
WIKITEXT := ../shared/data/wikitext-2-raw/test.txt
BENCH_SOURCE := $(if $(wildcard $(WIKITEXT)),--text $(WIKITEXT),--lambada $(LAMBADA) --documents 2500:)
BENCH_MASKS ?= 50

$(BENCH)/tokens.parquet: $(MODEL_DIR)/manifest.json $(LAMBADA) | $(BIN)/prepare-tokens
	@mkdir -p $(BENCH)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) $(BENCH_SOURCE) --windows 10 --length 128 \
	  --mode consecutive --out $@

# The same 50 random masks with 2–9 of the 30 blocks removed for every contender.
$(BENCH)/masks.parquet: $(MODEL_DIR)/manifest.json | $(BIN)/sample-masks
	@mkdir -p $(BENCH)
	$(BIN)/sample-masks --model $(MODEL_DIR) --removed 2,3,4,5,6,7,8,9 --masks $(BENCH_MASKS) \
	  --seed 1 --out $@

bench: ort venv-export $(BENCH)/tokens.parquet $(BENCH)/masks.parquet | $(BIN)/evaluate
	rm -f $(BENCH)/full.parquet $(BENCH)/masks-eval*.parquet
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(BENCH)/tokens.parquet --out $(BENCH)/full.parquet --quiet
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet \
	  --out $(BENCH)/masks-eval.parquet --summary $(BENCH)/rust.json --quiet $(EVALUATE_FLAGS)
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet \
	  --out $(BENCH)/masks-eval-noreuse.parquet --summary $(BENCH)/rust-noreuse.json --no-prefix-reuse \
	  --quiet $(EVALUATE_FLAGS)
	$(VENV_EXPORT)/bin/python tools/bench/torch_baseline.py --gguf $(SMOLLM2_GGUF) \
	  --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet --out $(BENCH)/torch.json
	$(VENV_EXPORT)/bin/python tools/bench/report.py $(BENCH) $(MODEL_DIR)

# --- make exact-game: a game small enough to solve exactly, and every estimator against it ------
# 12 players: blocks 16–27 of SmolLM2's 30. Blocks 0–2 and 28–29 are the ones whose single
# removal is catastrophic (utility < 0.35), which no method removes; the deep middle is where
# every method prunes. A contiguous range lets the 16 fixed blocks in front run once per batch.
EXACT := $(BUILD)/exact-game
EXACT_FIXED ?= 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,28,29
EXACT_WINDOWS ?= 2

$(EXACT)/tokens.parquet: $(MODEL_DIR)/manifest.json $(LAMBADA) | $(BIN)/prepare-tokens
	@mkdir -p $(EXACT)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) --lambada $(LAMBADA) --documents 0:2500 \
	  --windows $(EXACT_WINDOWS) --length 128 --mode random --seed 0 --out $@

$(EXACT)/masks.parquet: $(MODEL_DIR)/manifest.json | $(BIN)/sample-masks
	@mkdir -p $(EXACT)
	$(BIN)/sample-masks --model $(MODEL_DIR) --enumerate --fixed $(EXACT_FIXED) --out $@

$(EXACT)/evaluations.parquet: $(EXACT)/masks.parquet $(EXACT)/tokens.parquet | $(BIN)/evaluate
	$(BIN)/evaluate --model $(MODEL_DIR) --tokens $(EXACT)/tokens.parquet --masks $< --chunk 256 \
	  $(EVALUATE_FLAGS) --out $@ --summary $(EXACT)/summary.json

$(EXACT)/accuracy/summary.md: $(EXACT)/evaluations.parquet
	$(CARGO) build $(CARGO_FLAGS) --workspace --examples
	$(BIN)/examples/estimator_accuracy \
	  --evaluations $< --seeds 10 --out $(dir $@)

$(EXACT)/accuracy/rmse.svg: $(EXACT)/accuracy/summary.md | venv-report
	$(VENV_REPORT)/bin/python tools/report/plots.py estimator-rmse $(EXACT)/accuracy/results.csv $@

exact-game: ort $(EXACT)/accuracy/summary.md $(EXACT)/accuracy/rmse.svg
	cat $(EXACT)/accuracy/summary.md

.PHONY: bench exact-game

# make frontier: the quality-vs-budget frontier of every selection method (docs/results.md).
# Included by the top-level Makefile. Each calibration set is CALIB_WINDOWS random windows of
# the calibration passages drawn with its own seed; every method chooses on each set alone and
# its plans are measured on held-out text no method sees: the held-out LAMBADA passages always,
# and WikiText-2 test when it is beside the project. Caches in the run folder make a killed
# run resume where it stopped; the table and plot are written into the run folder
# (`make frontier-docs` copies them into docs/).

FRONTIER_RUN ?= $(BUILD)/runs/frontier-$(MODEL_NAME)
# The calibration sets, by the seed each is drawn with (prepare-tokens --seed).
FRONTIER_SEEDS ?= 0 1 2
FRONTIER_KS ?= 3,6,9
FRONTIER_BUDGETS ?= least,0.25sleb,0.5sleb,sleb,2000
FRONTIER_HELDOUT_WINDOWS ?= 40
# The methods played (frontier --methods, e.g. leave-one-out,adaptive; empty: every one) and
# the quadratic-surrogate Shapley method's (surrogate-shapley) stratified masks (0: not run).
FRONTIER_METHODS ?=
FRONTIER_SHAPLEY_MASKS ?= 200
# Whether the frontier plays any of the methods $(1) (every method when FRONTIER_METHODS is
# empty); a setting of a method it does not play is left out, as `frontier` refuses one.
# Spaces or commas between the methods, as METHODS takes them; `frontier` takes commas.
FRONTIER_METHOD_LIST = $(strip $(call method_list,$(FRONTIER_METHODS)))
frontier_plays = $(or $(if $(FRONTIER_METHOD_LIST),,all),$(filter $(1),$(FRONTIER_METHOD_LIST)))
FRONTIER_METHOD_FLAGS = $(if $(FRONTIER_METHOD_LIST),--methods $(subst $(space),$(comma),$(FRONTIER_METHOD_LIST))) \
  $(if $(call frontier_plays,adaptive adaptive-raced),--budgets $(FRONTIER_BUDGETS)) \
  $(if $(call frontier_plays,surrogate-shapley),--shapley-masks $(FRONTIER_SHAPLEY_MASKS))
FRONTIER_CALIB := $(foreach s,$(FRONTIER_SEEDS),$(FRONTIER_RUN)/calib-$(s).parquet)
FRONTIER_HELDOUT := $(if $(wildcard $(WIKITEXT)),$(FRONTIER_RUN)/heldout-wikitext2.parquet) \
  $(FRONTIER_RUN)/heldout-lambada_heldout.parquet

# The frontier's texts are fixed, so that its tables compare: CALIB_TEXT or EVAL_TEXT given to it
# would be ignored without a word, and are refused.
FRONTIER_GOALS := frontier frontier-windows frontier-pairs exact-frontier exact-frontier-pairs
ifneq ($(filter $(FRONTIER_GOALS),$(MAKECMDGOALS)),)
$(foreach text,CALIB_TEXT EVAL_TEXT,$(if $(filter command line,$(origin $(text))),\
  $(error make $(firstword $(filter $(FRONTIER_GOALS),$(MAKECMDGOALS))): $(text) is not read here: the frontier draws its calibration sets from the LAMBADA passages and measures plans on the held-out passages and WikiText-2 (docs/results.md); make demo or make prune take a text of your own)))
endif
# A setting of a method FRONTIER_METHODS leaves out is not passed on, so giving one is refused
# (make frontier's: make exact-frontier plays every method, and FRONTIER_METHODS is refused there,
# pipelines/ignored.mk).
ifneq ($(filter frontier,$(MAKECMDGOALS)),)
# A method by its old name (FRONTIER_METHODS=shapley) is refused naming the new one, as frontier
# refuses it, before the calibration sets are drawn. shapley is the one renamed method the
# frontier plays: another old name (published) is unknown to it, as its new name is.
$(call check_renamed,$(filter shapley,$(call method_list,$(FRONTIER_METHODS))),FRONTIER_METHODS)
$(foreach setting,FRONTIER_BUDGETS:adaptive$(comma)adaptive-raced FRONTIER_SHAPLEY_MASKS:surrogate-shapley,\
  $(eval frontier_setting := $(firstword $(subst :, ,$(setting))))\
  $(if $(and $(filter command line,$(origin $(frontier_setting))),$(if $(call frontier_plays,$(call method_list,$(word 2,$(subst :, ,$(setting))))),,no)),\
    $(error make: $(frontier_setting)=$($(frontier_setting)) is a setting of a method FRONTIER_METHODS=$(FRONTIER_METHODS) does not play; leave it out)))
endif

# $(call calibration_set,SEED,OUT): the calibration windows of one set, as the frontier draws them.
calibration_set = $(BIN)/prepare-tokens --model $(MODEL_DIR) --lambada $(LAMBADA) \
  --documents $(CALIB_DOCUMENTS) --windows $(CALIB_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) \
  --mode random --seed $(1) --out $(2)

# Settings stamps (layerprune.mk): what the calibration sets and the held-out windows are drawn
# with (each set's seed is in its name), and the kind of device. When the tokens change, the
# caches measured on the old ones go too (frontier refuses a cache of other tokens or another
# model); a cache measured on another device or with other runtime flags frontier starts again
# itself (--replace-cache-measured-otherwise), replacing the file once it has measured something,
# so a CUDA request that fails keeps the old measurements.
FRONTIER_CACHES = $(FRONTIER_RUN)/cache-$(1)-*.parquet
# The model folder, the LAMBADA passages and WikiText-2 (when present) are identified by what they
# are, not only their path (INPUTS of settings_stamp_at): order-only prerequisites below.
FRONTIER_WIKITEXT = $(wildcard $(WIKITEXT))
$(eval $(call settings_stamp_at,$(FRONTIER_RUN)/.settings/calib,$(MODEL_PATH_STAMPED) $(CALIB_DOCUMENTS) $(CALIB_WINDOWS) $(SEQ_LEN) $(BOS),rm -f $(call FRONTIER_CACHES,calibration);,$(MODEL_INPUT) $(LAMBADA)))
$(eval $(call settings_stamp_at,$(FRONTIER_RUN)/.settings/heldout,$(MODEL_PATH_STAMPED) $(EVAL_DOCUMENTS) $(FRONTIER_HELDOUT_WINDOWS) $(SEQ_LEN) $(BOS),rm -f $(call FRONTIER_CACHES,heldout);,$(MODEL_INPUT) $(LAMBADA) $(FRONTIER_WIKITEXT)))
$(eval $(call settings_stamp_at,$(FRONTIER_RUN)/.settings/device,$(MODEL_RUNTIME)))

$(FRONTIER_RUN)/calib-%.parquet: $(FRONTIER_RUN)/.settings/calib | $(BIN)/prepare-tokens $(MODEL_INPUT) $(LAMBADA)
	@mkdir -p $(FRONTIER_RUN)
	$(call calibration_set,$*,$@)

$(FRONTIER_RUN)/heldout-lambada_heldout.parquet: $(FRONTIER_RUN)/.settings/heldout | $(BIN)/prepare-tokens $(MODEL_INPUT) $(LAMBADA)
	@mkdir -p $(FRONTIER_RUN)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) --lambada $(LAMBADA) --documents $(EVAL_DOCUMENTS) \
	  --windows $(FRONTIER_HELDOUT_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) --mode consecutive --out $@

$(FRONTIER_RUN)/heldout-wikitext2.parquet: $(FRONTIER_RUN)/.settings/heldout | $(BIN)/prepare-tokens $(MODEL_INPUT) $(WIKITEXT)
	@mkdir -p $(FRONTIER_RUN)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) --text $(WIKITEXT) \
	  --windows $(FRONTIER_HELDOUT_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) --mode consecutive --out $@

frontier: $(ORT_STAGE_LIB) venv-report $(FRONTIER_CALIB) $(FRONTIER_HELDOUT) $(FRONTIER_RUN)/.settings/device | $(BIN)/frontier
	$(BIN)/frontier --model $(MODEL_DIR) $(foreach s,$(FRONTIER_SEEDS),--calibration c$(s)=$(FRONTIER_RUN)/calib-$(s).parquet) \
	  $(foreach h,$(FRONTIER_HELDOUT),--heldout $(patsubst heldout-%.parquet,%,$(notdir $(h)))=$(h)) \
	  --k $(FRONTIER_KS) $(FRONTIER_METHOD_FLAGS) $(EVALUATE_FLAGS) --out-dir $(FRONTIER_RUN) \
	  --replace-cache-measured-otherwise
	$(VENV_REPORT)/bin/python tools/report/frontier.py $(FRONTIER_RUN)/frontier.csv --out $(FRONTIER_RUN)/frontier.md \
	  --plot $(FRONTIER_RUN)/frontier.svg

# The project's copy of the numbers (docs/results.md quotes it), refreshed on purpose.
# The default model's copies are docs/results/frontier.*; another model's carry its name
# (docs/results/frontier-gemma3-270m.md), so one never overwrites the other.
FRONTIER_DOCS_SUFFIX = $(if $(filter smollm2-135m,$(MODEL_NAME)),,-$(MODEL_NAME))
FRONTIER_DOCS_NAME = frontier$(FRONTIER_DOCS_SUFFIX)
frontier-docs: $(FRONTIER_RUN)/frontier.csv
	mkdir -p docs/results docs/img
	cp $(FRONTIER_RUN)/frontier.csv docs/results/$(FRONTIER_DOCS_NAME).csv
	cp $(FRONTIER_RUN)/frontier.md docs/results/$(FRONTIER_DOCS_NAME).md
	cp $(FRONTIER_RUN)/frontier.svg docs/img/$(FRONTIER_DOCS_NAME).svg

# make frontier-windows (after make frontier): calibration tokens or LLM evaluations. The same
# frontier with calibration sets of 20 windows (every method but the Shapley one; adaptive, raced
# and not, at ¼, ½ and 1 × SLEB's cost) and of 40 (leave-one-out and adaptive, raced and not, at
# ¼ of SLEB's cost, k = 6, 9: SLEB's path alone would cost four times the 10-window run), then
# the three side by side at
# their compute, LLM evaluations × windows (tools/report/calibration_windows.py; docs/results.md,
# "Calibration tokens or LLM evaluations"). FRONTIER_WINDOWS_BASE is the CALIB_WINDOWS run.
FRONTIER_WINDOWS_BASE ?= $(FRONTIER_RUN)/frontier.csv
FRONTIER_WINDOWS_TABLE = $(FRONTIER_RUN)-windows.md
frontier-windows: $(ORT_STAGE_LIB) venv-report
	$(MAKE) frontier FRONTIER_RUN=$(FRONTIER_RUN)-w20 CALIB_WINDOWS=20 FRONTIER_BUDGETS=0.25sleb,0.5sleb,sleb \
	  FRONTIER_METHODS=block-influence,angular,reverse,leave-one-out,sleb,adaptive,adaptive-raced
	$(MAKE) frontier FRONTIER_RUN=$(FRONTIER_RUN)-w40 CALIB_WINDOWS=40 FRONTIER_BUDGETS=0.25sleb FRONTIER_KS=6,9 \
	  FRONTIER_METHODS=leave-one-out,adaptive,adaptive-raced
	$(VENV_REPORT)/bin/python tools/report/calibration_windows.py $(CALIB_WINDOWS)=$(FRONTIER_WINDOWS_BASE) \
	  20=$(FRONTIER_RUN)-w20/frontier.csv 40=$(FRONTIER_RUN)-w40/frontier.csv --out $(FRONTIER_WINDOWS_TABLE)

frontier-windows-docs: $(FRONTIER_WINDOWS_TABLE)
	mkdir -p docs/results
	cp $(FRONTIER_WINDOWS_TABLE) docs/results/calibration-windows$(FRONTIER_DOCS_SUFFIX).md
	cp $(FRONTIER_RUN)-w20/frontier.csv docs/results/frontier-w20$(FRONTIER_DOCS_SUFFIX).csv
	cp $(FRONTIER_RUN)-w40/frontier.csv docs/results/frontier-w40$(FRONTIER_DOCS_SUFFIX).csv

# make frontier-pairs (after make frontier): whether the frontier's held-out differences between
# methods are more than the held-out windows' noise. Every plan of FRONTIER_PAIRS_CSV is evaluated
# on each held-out text with each window's NLL, then each method's plans are paired with SLEB's
# window by window (tools/report/frontier_pairs.py; docs/results.md). FRONTIER_PAIRS_CSV may be
# the committed docs/results/frontier.csv, whose held-out token tables `make frontier` made.
FRONTIER_PAIRS_CSV ?= $(FRONTIER_RUN)/frontier.csv
FRONTIER_PAIRS_TABLE = $(FRONTIER_RUN)/frontier-pairs.md
FRONTIER_PAIRS_TEXTS = $(patsubst heldout-%.parquet,%,$(notdir $(FRONTIER_HELDOUT)))

$(FRONTIER_RUN)/pairs-%.parquet: $(FRONTIER_PAIRS_CSV) $(FRONTIER_RUN)/heldout-%.parquet $(FRONTIER_RUN)/.settings/device \
  $(call tool_sources,report/frontier_pairs.py) | $(BIN)/evaluate $(BIN)/inspect $(ORT_STAGE_LIB) $(VENV_REPORT)/.complete
	$(VENV_REPORT)/bin/python tools/report/frontier_pairs.py masks $(FRONTIER_PAIRS_CSV) \
	  --manifest $(MODEL_DIR)/manifest.json > $@.masks
	$(call evaluate_checkpointed,--model $(MODEL_DIR) --tokens $(FRONTIER_RUN)/heldout-$*.parquet $(EVALUATE_FLAGS) \
	  $$(cat $@.masks) --quiet,$@.masks)
	rm -f $@.masks

frontier-pairs: $(foreach t,$(FRONTIER_PAIRS_TEXTS),$(FRONTIER_RUN)/pairs-$(t).parquet) | $(VENV_REPORT)/.complete
	$(VENV_REPORT)/bin/python tools/report/frontier_pairs.py table $(FRONTIER_PAIRS_CSV) \
	  $(foreach t,$(FRONTIER_PAIRS_TEXTS),--heldout $(t)=$(FRONTIER_RUN)/pairs-$(t).parquet) --out $(FRONTIER_PAIRS_TABLE)

frontier-pairs-docs: $(FRONTIER_PAIRS_TABLE)
	mkdir -p docs/results
	cp $(FRONTIER_PAIRS_TABLE) docs/results/$(FRONTIER_DOCS_NAME)-pairs.md

# make exact-frontier: every selection method against the exact optimum of a real game. The
# game is `make exact-game`'s 12 players (EXACT_FIXED: blocks 16–27 of SmolLM2's 30, the others
# kept) on the frontier's calibration set c0 (CALIB_WINDOWS windows; EXACT_FRONTIER_SET picks
# the set), all 4,096 masks measured once (~25 minutes on 2 cores). The frontier then plays
# every method at every k through that table as its cache, measuring nothing again, and the
# exact Shapley and Banzhaf values (of −NLL and of the published utility) give one-shot plans.
# tools/report/exact_frontier.py finds the optimum at each k and every plan's gap to it
# (docs/results.md, "Against the exact optimum"). Gemma 3 270M's game, blocks 6–16 on its set
# c1, where the frontier found SLEB's path missing the best plan (2,048 masks, ~50 minutes: its
# 262k-token head runs for every mask):
#   make exact-frontier MODEL_NAME=gemma3-270m EXACT_FIXED=0,1,2,3,4,5,17 EXACT_FRONTIER_SET=1 \
#     EXACT_FRONTIER_KS=1,2,3,4,5,6,7,8,9,10
# `make exact-frontier-pairs` (with the same variables) then measures every plan on held-out
# text and pairs it with SLEB's window by window (make frontier-pairs, in $(EXACT_FRONTIER_RUN)/heldout).
# SmolLM2's early blocks 3–13 on set c1 (2,048 masks, ~26 minutes):
#   make exact-frontier EXACT_FRONTIER_RUN=build/runs/exact-frontier-smollm2-135m-blocks-3-13 \
#     EXACT_FIXED=0,1,2,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29 EXACT_FRONTIER_SET=1 \
#     EXACT_FRONTIER_KS=1,2,3,4,5,6,7,8,9,10 \
#     EXACT_FRONTIER_DOCS_NAME=exact-frontier-smollm2-135m-blocks-3-13
EXACT_FRONTIER_RUN ?= $(BUILD)/runs/exact-frontier-$(MODEL_NAME)
EXACT_FRONTIER_KS ?= 1,2,3,4,5,6,7,8,9,10,11
EXACT_FRONTIER_SET ?= 0
EXACT_FRONTIER_TOKENS = $(EXACT_FRONTIER_RUN)/calib-$(EXACT_FRONTIER_SET).parquet
EXACT_FRONTIER_BUDGETS ?= $(FRONTIER_BUDGETS)
EXACT_FRONTIER_GAME = $(EXACT_FRONTIER_RUN)/evaluations.parquet
EXACT_FRONTIER_VALUES = neg-nll utility
# The name of the run's copies in docs/results (another game of the same model needs its own).
EXACT_FRONTIER_DOCS_NAME ?= exact-frontier$(FRONTIER_DOCS_SUFFIX)

# Settings stamps (pipelines/layerprune.mk): the game (players, tokens; the model folder and the
# LAMBADA passages by what they are) and what is played on it.
$(eval $(call settings_stamp_at,$(EXACT_FRONTIER_RUN)/.settings/game,$(MODEL_PATH_STAMPED) $(EXACT_FIXED) \
  $(CALIB_DOCUMENTS) $(CALIB_WINDOWS) $(SEQ_LEN) $(BOS) $(EXACT_FRONTIER_SET),,$(MODEL_INPUT) $(LAMBADA)))
$(eval $(call settings_stamp_at,$(EXACT_FRONTIER_RUN)/.settings/plans,$(EXACT_FRONTIER_KS) \
  $(EXACT_FRONTIER_BUDGETS) $(FRONTIER_SHAPLEY_MASKS)))
$(eval $(call settings_stamp_at,$(EXACT_FRONTIER_RUN)/.settings/device,$(MODEL_RUNTIME)))

$(EXACT_FRONTIER_TOKENS): $(EXACT_FRONTIER_RUN)/.settings/game | $(BIN)/prepare-tokens $(MODEL_INPUT) $(LAMBADA)
	@mkdir -p $(EXACT_FRONTIER_RUN)
	$(call calibration_set,$(EXACT_FRONTIER_SET),$@)

$(EXACT_FRONTIER_RUN)/masks.parquet: $(EXACT_FRONTIER_RUN)/.settings/game | $(BIN)/sample-masks $(MODEL_INPUT)
	@mkdir -p $(EXACT_FRONTIER_RUN)
	$(BIN)/sample-masks --model $(MODEL_DIR) --enumerate --fixed $(EXACT_FIXED) --out $@

# Checkpointed as the demo's evaluations.parquet (pipelines/layerprune.mk, `evaluate_checkpointed`).
$(EXACT_FRONTIER_GAME): $(EXACT_FRONTIER_RUN)/masks.parquet $(EXACT_FRONTIER_TOKENS) $(EXACT_FRONTIER_RUN)/.settings/device \
                        | $(BIN)/evaluate $(BIN)/inspect $(ORT_STAGE_LIB)
	$(call evaluate_checkpointed,--model $(MODEL_DIR) --tokens $(EXACT_FRONTIER_TOKENS) --masks $< \
	  --chunk 256 $(EVALUATE_FLAGS) --summary $(EXACT_FRONTIER_RUN)/summary.json,$<)

# The frontier's cache starts as the enumerated table, so every mask any method asks for is read.
$(EXACT_FRONTIER_RUN)/frontier.csv: $(EXACT_FRONTIER_GAME) $(EXACT_FRONTIER_RUN)/.settings/plans | $(BIN)/frontier $(ORT_STAGE_LIB)
	@mkdir -p $(EXACT_FRONTIER_RUN)/run
	cp $< $(EXACT_FRONTIER_RUN)/run/cache-calibration-c$(EXACT_FRONTIER_SET).parquet
	$(BIN)/frontier --model $(MODEL_DIR) --calibration c$(EXACT_FRONTIER_SET)=$(EXACT_FRONTIER_TOKENS) \
	  --fixed $(EXACT_FIXED) --k $(EXACT_FRONTIER_KS) --budgets $(EXACT_FRONTIER_BUDGETS) \
	  --shapley-masks $(FRONTIER_SHAPLEY_MASKS) $(EVALUATE_FLAGS) --out-dir $(EXACT_FRONTIER_RUN)/run
	cp $(EXACT_FRONTIER_RUN)/run/frontier.csv $@

# The exact Shapley and Banzhaf values of the game, with value −NLL or the published utility,
# and the one-shot plans they imply (the k lowest removed).
$(EXACT_FRONTIER_RUN)/scores-%.parquet: $(EXACT_FRONTIER_GAME) | $(BIN)/shapley
	$(BIN)/shapley --evaluations $< --estimator exact-shapley --value $* --threads $(STAGE_THREADS) --out $@

$(EXACT_FRONTIER_RUN)/plans-exact-shapley-%.parquet: $(EXACT_FRONTIER_RUN)/scores-%.parquet $(EXACT_FRONTIER_RUN)/.settings/plans | $(BIN)/apply-prune
	$(BIN)/apply-prune --scores $< --estimator exact-shapley --k $(EXACT_FRONTIER_KS) --out $@

$(EXACT_FRONTIER_RUN)/plans-exact-banzhaf-%.parquet: $(EXACT_FRONTIER_RUN)/scores-%.parquet $(EXACT_FRONTIER_RUN)/.settings/plans | $(BIN)/apply-prune
	$(BIN)/apply-prune --scores $< --estimator exact-banzhaf --k $(EXACT_FRONTIER_KS) --out $@

EXACT_FRONTIER_INDICES = $(foreach i,shapley banzhaf,$(foreach v,$(EXACT_FRONTIER_VALUES),$(i)-$(v)))
.SECONDARY: $(foreach v,$(EXACT_FRONTIER_VALUES),$(EXACT_FRONTIER_RUN)/scores-$(v).parquet)
EXACT_FRONTIER_TABLE = $(EXACT_FRONTIER_RUN)/exact-frontier.md
# The report's script is a prerequisite: a changed one writes the table again (it reads tables only).
$(EXACT_FRONTIER_TABLE): $(EXACT_FRONTIER_RUN)/frontier.csv $(call tool_sources,report/exact_frontier.py) \
  $(foreach i,$(EXACT_FRONTIER_INDICES),$(EXACT_FRONTIER_RUN)/plans-exact-$(i).parquet) | $(VENV_REPORT)/.complete
	$(VENV_REPORT)/bin/python tools/report/exact_frontier.py --game $(EXACT_FRONTIER_GAME) \
	  --frontier $< \
	  $(foreach i,shapley banzhaf,$(foreach v,$(EXACT_FRONTIER_VALUES),\
	    --plans "exact $(i), value $(v)=$(EXACT_FRONTIER_RUN)/plans-exact-$(i)-$(v).parquet")) \
	  --out $@ --csv $(EXACT_FRONTIER_RUN)/exact-frontier.csv

exact-frontier: $(ORT_STAGE_LIB) venv-report $(EXACT_FRONTIER_TABLE)

exact-frontier-docs: $(EXACT_FRONTIER_TABLE)
	mkdir -p docs/results
	cp $(EXACT_FRONTIER_TABLE) docs/results/$(EXACT_FRONTIER_DOCS_NAME).md
	cp $(EXACT_FRONTIER_RUN)/exact-frontier.csv docs/results/$(EXACT_FRONTIER_DOCS_NAME).csv

# The plans of the exact frontier on the frontier's held-out texts, each paired with SLEB's
# window by window: make frontier-pairs on this run's frontier.csv, its held-out token tables and
# evaluations in $(EXACT_FRONTIER_RUN)/heldout. A sub-make, so the game's variables given here
# (EXACT_FIXED, EXACT_FRONTIER_SET, …) are the ones its frontier.csv is checked against.
exact-frontier-pairs: $(EXACT_FRONTIER_RUN)/frontier.csv
	$(MAKE) frontier-pairs FRONTIER_RUN=$(EXACT_FRONTIER_RUN)/heldout FRONTIER_PAIRS_CSV=$<

exact-frontier-pairs-docs: exact-frontier-pairs
	mkdir -p docs/results
	cp $(EXACT_FRONTIER_RUN)/heldout/frontier-pairs.md docs/results/$(EXACT_FRONTIER_DOCS_NAME)-pairs.md

.PHONY: frontier frontier-docs frontier-windows frontier-windows-docs frontier-pairs frontier-pairs-docs \
  exact-frontier exact-frontier-docs exact-frontier-pairs exact-frontier-pairs-docs

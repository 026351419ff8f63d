# make prune MODEL=<Hugging Face folder or .gguf file> K=<blocks to remove>: your own model,
# pruned by the recommended method in one command (docs/your-model.md). MAX_PPL_RATIO=<R> instead
# of K removes as many blocks as keep the calibration perplexity within R times the full model's
# (MAX_PPL_RATIO_SE=<Z>: by Z standard errors of the calibration windows), chosen by SLEB raced
# over the calibration windows (PRUNE_SEARCH below). Included by the
# top-level Makefile after pipelines/layerprune.mk, whose text sources (CALIB_*, EVAL_*, SEQ_LEN,
# SEED: the demo's defaults, LAMBADA passages unless CALIB_TEXT / EVAL_TEXT), EVALUATE_FLAGS
# (DEVICE, THREADS) and method rows (RECOMMENDED_METHOD's with ADAPTIVE_BUDGET, PLAN_ARGS_sleb-raced) it uses.
#
# The run folder PRUNE_OUT (default build/runs/prune-<name of MODEL>; a name taken from MODEL whose
# run another model made is refused, pipelines/runs.mk):
#   model/                        the full model as a layered ONNX folder (export_layered.py)
#   tokens-calib.parquet          calibration tokens; the plan is chosen on them only
#   evaluations-calib.parquet     every mask measured on them, kept for the next K or ratio
#   tokens-eval.parquet           held-out tokens; full-eval.parquet: the full model on them
#   k<K>/plan-calibration.parquet the chosen plan, measured on the calibration tokens (with
#                                 MAX_PPL_RATIO=R the folder is ratio<R>/, with
#                                 MAX_PPL_RATIO_SE=Z ratio<R>-se<Z>/, here and below)
#   k<K>/plan.parquet             the same plan, measured on the held-out tokens
#   k<K>/pruned/                  the pruned layered ONNX folder, written from plan-calibration.parquet
#                                 (new held-out tokens do not write it again); pruned-eval.parquet:
#                                 its evaluation
#   k<K>/pruned-hf/               the pruned Hugging Face checkpoint (tools/export/prune_hf.py)
#   k<K>/pruned-generator.onnx    one ONNX decoder with a KV cache, made from pruned-hf/ for
#                                 generating text (tools/export/export_generator.py; the
#                                 architectures of PRUNE_GENERATOR_TYPES below)
#   k<K>/pruned.gguf              for a GGUF MODEL: the pruned GGUF file, its kept tensors as they
#                                 are in MODEL (tools/export/prune_gguf.py), for llama.cpp
#   k<K>/llama-cpp-prune-layers.txt   the removed blocks for `llama-quantize --prune-layers`
#   k<K>/summary.txt              the summary the goal prints (removed blocks, perplexities with
#                                 their ranges and the texts they are on, rival, files, next steps),
#                                 kept; k<K>/summary.json: the same facts, machine-readable
# Every step depends on a settings stamp (PRUNE_OUT/.settings/<step>), as in layerprune.mk, so
# changed settings redo what they affect and nothing else.

MODEL ?=
PRUNE_GOAL := $(filter prune,$(MAKECMDGOALS))
# A MODEL in the environment (a habit of llama.cpp's users) is make prune's alone: for any other
# goal it is set aside, so that the rules below, read whatever the goal, name no path of it (a
# colon in it stopped every goal with "target pattern contains no '%'").
ifeq ($(PRUNE_GOAL)$(origin MODEL),environment)
MODEL :=
endif
K ?=
MAX_PPL_RATIO ?=
MAX_PPL_RATIO_SE ?=
# The run's name and folder; PRUNE_EXPORT_FLAGS are added to export_layered.py (e.g. --dtype bf16
# with DEVICE=cuda),
# PRUNE_GENERATOR_FLAGS to export_generator.py (e.g. --dtype fp16; its default is fp32). The name
# is the folder's or file's own, of MODEL resolved (`dir/.` named the run folder `prune-.`).
PRUNE_NAME ?= $(patsubst %.gguf,%,$(notdir $(abspath $(MODEL))))
PRUNE_OUT ?= $(BUILD)/runs/prune-$(PRUNE_NAME)
PRUNE_EXPORT_FLAGS ?=
PRUNE_GENERATOR_FLAGS ?=

# export_generator.py's architectures: the KV-cache decoder is made for a Hugging Face folder whose
# config.json names one of them, or a GGUF file whose header does (as transformers loads it: report.py
# layers); the others, GPT-2, GPT-NeoX, Mamba and Mamba-2, are pruned without it. A GGUF file whose
# header cannot be read is left to the exporter to refuse. PRUNE_GENERATOR=0 skips it,
# PRUNE_GENERATOR=1 asks for it whatever the architecture.
PRUNE_GENERATOR_TYPES = llama mistral qwen2 qwen3 gemma gemma2 gemma3_text phi phi3 olmo2 granite stablelm starcoder2 cohere
# MODEL, read below by the shell, as the Makefile checks its other paths (refuse_unusable_paths),
# where make prune runs (a MODEL in the environment is no other goal's concern).
$(if $(PRUNE_GOAL),$(call refuse_unusable_paths,MODEL,command environment))
# The model's blocks, the key they are under, the blocks bound to their position and its
# model_type (report.py layers), read once: from a Hugging Face config.json (a multimodal
# model's text_config), or from a GGUF file's header; empty where neither can be read (a GGUF
# file left to the exporter to refuse, naming the problem) or make prune does not run.
PRUNE_LAYERS := $(if $(and $(PRUNE_GOAL),$(MODEL)),$(shell $(PYTHON) tools/prune/report.py layers \
  $(if $(filter %.gguf,$(MODEL)),--gguf '$(MODEL)',--config '$(patsubst %/,%,$(MODEL))/config.json') 2>/dev/null))
PRUNE_MODEL_TYPE := $(if $(filter %.gguf,$(MODEL)),$(or $(word 4,$(PRUNE_LAYERS)),gguf),$(if $(wildcard $(patsubst %/,%,$(MODEL))/config.json),$(shell \
  grep -o '"model_type" *: *"[^"]*"' $(patsubst %/,%,$(MODEL))/config.json | head -n 1 | sed 's/.*"\([^"]*\)"$$/\1/')))
PRUNE_GENERATOR ?= $(if $(filter gguf $(PRUNE_GENERATOR_TYPES),$(PRUNE_MODEL_TYPE)),1,0)

PRUNE_MODEL_DIR = $(PRUNE_OUT)/model
# Every mask measured on the calibration tokens, kept across runs (apply-prune --cache): another K,
# MAX_PPL_RATIO or ADAPTIVE_BUDGET, or a run killed part-way, re-runs none of them. Removed
# when the calibration tokens are made again with other windows (they, or the model, changed), and
# when what the model runs on changes as its rows record it (the device stamp below).
PRUNE_CACHE = $(PRUNE_OUT)/evaluations-calib.parquet
# What chooses how many blocks go (K, or the most within MAX_PPL_RATIO), and the plan's folder.
# The ratio and its margin as numbers (1.20 and 1.2 are one choice, one folder); a margin of 0
# standard errors is apply-prune's default, no margin (not a folder ratio1.5-se0 of its own).
number_text = $(if $(1),$(shell v=$$(LC_ALL=C printf '%.15g' '$(1)' 2>/dev/null) && printf '%s' "$$v" || printf '%s' '$(1)'))
PRUNE_RATIO := $(call number_text,$(MAX_PPL_RATIO))
PRUNE_RATIO_SE := $(filter-out 0,$(call number_text,$(MAX_PPL_RATIO_SE)))
PRUNE_RATIO_FLAGS = --max-ppl-ratio $(PRUNE_RATIO)$(if $(PRUNE_RATIO_SE), --max-ppl-ratio-se $(PRUNE_RATIO_SE))
PRUNE_CHOICE = $(if $(MAX_PPL_RATIO),ratio$(PRUNE_RATIO)$(if $(PRUNE_RATIO_SE),-se$(PRUNE_RATIO_SE)),k$(K))
PRUNE_CHOICE_FLAGS = $(if $(MAX_PPL_RATIO),$(PRUNE_RATIO_FLAGS),--k $(K))
PRUNE_PLAN_DIR = $(PRUNE_OUT)/$(PRUNE_CHOICE)
# The method that chooses, by its row of settings.mk's method table, and its arguments. For K
# blocks the recommended method (RECOMMENDED_METHOD: adaptive removal raced over the calibration
# windows, at most ADAPTIVE_BUDGET evaluations, SLEB's cost by default). For
# MAX_PPL_RATIO, which tries two k or more, SLEB raced over the calibration windows: on
# SmolLM2-135M and Gemma 3 270M it found SLEB's plans in every search, for 63-72 % of SLEB's
# evaluations (docs/results.md, "Choosing k by a perplexity ratio"); with an
# ADAPTIVE_BUDGET of the user's, the recommended method at that budget for each k tried.
PRUNE_SEARCH = $(if $(and $(MAX_PPL_RATIO),$(filter file,$(origin ADAPTIVE_BUDGET))),sleb-raced,$(RECOMMENDED_METHOD))
PRUNE_PLAN_ARGS = $(strip $(PLAN_ARGS_$(PRUNE_SEARCH)) $(if $(PRUNE_POSITION_BOUND),--fixed $(PRUNE_POSITION_BOUND)))
PRUNE_IS_GGUF = $(filter %.gguf,$(MODEL))
# MODEL as one absolute path (`dir/`, `./dir` and `/abs/dir` are one model: the stamps below
# compare it as text).
PRUNE_MODEL_PATH = $(abspath $(patsubst %/,%,$(MODEL)))
PRUNE_SOURCE = $(if $(PRUNE_IS_GGUF),--gguf,--model) $(PRUNE_MODEL_PATH)
# The files of a Hugging Face folder the export reads, whose change redoes it: the config, the
# weights (export_layered.py's WEIGHT_PATTERNS) and every file transformers builds the tokenizer
# from (its TOKENIZER_FILES: tokenizer.json, a SentencePiece *.model, a BPE vocab.json and
# merges.txt; and the special tokens of tokenizer_config.json, special_tokens_map.json,
# added_tokens.json), which the layered folder's tokenizer.json is written from (a tokenizer of
# merges.txt changed was not seen, and the old results were printed). PRUNE_HF_FILES: those
# prune_hf.py alone carries into the checkpoint (the generation config, the chat templates and
# its PROCESSOR_FILES), small files identified by their content in the checkpoint's stamp.
# tests/workflow/test_prune.py checks that the two lists cover the tools' own, read from their source.
PRUNE_SOURCE_FILES = config.json *.safetensors *.bin *.index.json tokenizer.json tokenizer_config.json \
  special_tokens_map.json added_tokens.json *.model vocab.json merges.txt vocab.txt
PRUNE_HF_FILES = generation_config.json chat_template.jinja chat_template.json additional_chat_templates/*.jinja \
  preprocessor_config.json processor_config.json video_preprocessor_config.json
PRUNE_SOURCE_DEPS = $(if $(PRUNE_IS_GGUF),$(MODEL),$(wildcard $(addprefix $(patsubst %/,%,$(MODEL))/,$(PRUNE_SOURCE_FILES))))
PRUNE_HF_SOURCE_DEPS = $(if $(PRUNE_IS_GGUF),,$(wildcard $(addprefix $(patsubst %/,%,$(MODEL))/,$(PRUNE_HF_FILES))))
# The source files' sizes, times and inodes, in the export's and the checkpoint's stamps: weights
# replaced by older files (mv, cp -p, rsync -a, tar x keep their times, which Make alone
# compares) are a new model. Read only when MODEL is set (a stat per file, not a hash of
# gigabytes). Each file by its name in the folder: MODEL spelled another way (../m, ./../m) is the
# same model.
PRUNE_SOURCE_STAT = $(if $(PRUNE_SOURCE_DEPS),$(shell cd $(dir $(firstword $(PRUNE_SOURCE_DEPS))) && \
  stat -L -c '%n %s %Y %i' $(notdir $(PRUNE_SOURCE_DEPS)) 2>/dev/null))
# The blocks (PRUNE_LAYERS), to refuse a K the model cannot lose before anything runs (where they
# cannot be read, apply-prune refuses it, after the export); read under the key transformers
# does (GPT-2's n_layer; a GGUF's ARCH.block_count), which the refusal names.
PRUNE_NUM_BLOCKS = $(word 1,$(PRUNE_LAYERS))
PRUNE_NUM_BLOCKS_KEY = $(word 2,$(PRUNE_LAYERS))
# Blocks the checkpoint ties to their position (Qwen3-VL's first blocks, after which its vision
# tower's deepstack features are added by position: report.py's position_bound_blocks): every
# plan keeps them, or the pruned checkpoint would add an image's features after other blocks.
PRUNE_POSITION_BOUND = $(filter-out -,$(word 3,$(PRUNE_LAYERS)))

# The device the stages run the model on: MODEL_DEVICE (layerprune.mk, EVALUATE_FLAGS' --device).
PRUNE_EXPORT_DTYPE = $(call flag_value,--dtype,$(PRUNE_EXPORT_FLAGS))
# Mamba's block graphs hold its scan unrolled for one window length (export_layered.py's
# FIXED_LENGTH_MODEL_TYPES, --fixed-seq-len, default 128), which the windows must have: the export
# is given SEQ_LEN, unless PRUNE_EXPORT_FLAGS sets a length (which must then be SEQ_LEN); a GGUF
# file's architecture is read from its header (PRUNE_MODEL_TYPE).
PRUNE_FIXED_LENGTH_TYPES = mamba mamba2
PRUNE_FIXED_SEQ_LEN = $(call flag_value,--fixed-seq-len,$(PRUNE_EXPORT_FLAGS))
PRUNE_EXPORT_ARGS = $(strip $(PRUNE_EXPORT_FLAGS) $(if $(filter $(PRUNE_FIXED_LENGTH_TYPES),$(PRUNE_MODEL_TYPE)),\
  $(if $(PRUNE_FIXED_SEQ_LEN),,--fixed-seq-len $(SEQ_LEN))))

# Refuse a missing or wrong MODEL or K before anything runs (also for `make -n prune`).
ifneq ($(filter prune,$(MAKECMDGOALS)),)
ifeq ($(strip $(MODEL)),)
$(error make prune: set MODEL=path/to/hf-folder or MODEL=path/to/model.gguf, and K=number of blocks to remove or MAX_PPL_RATIO=ratio)
endif
ifneq ($(words $(MODEL)),1)
$(error make prune: MODEL='$(MODEL)': a path with spaces is not supported)
endif
ifeq ($(wildcard $(MODEL)),)
$(error make prune: MODEL=$(MODEL) does not exist)
endif
# A folder named *.gguf was taken for a GGUF file, and the exporter said it did not exist. A
# Hugging Face folder of that name is given with its slash (MODEL=dir.gguf/: no GGUF file then).
ifneq ($(and $(PRUNE_IS_GGUF),$(wildcard $(MODEL)/.)),)
$(error make prune: MODEL=$(MODEL) is a folder, not a GGUF file$(if $(wildcard $(MODEL)/config.json),: a Hugging Face model folder whose name ends in .gguf is given with a slash after it (MODEL=$(MODEL)/)))
endif
# The texts, as MODEL: a missing one was Make's "No rule to make target", once other steps had run.
$(foreach v,CALIB_TEXT EVAL_TEXT,$(if $($(v)),$(if $(wildcard $($(v))),\
  $(if $(wildcard $($(v))/.),$(error make prune: $(v)=$($(v)) is a folder, not a text file)),\
  $(error make prune: $(v)=$($(v)) does not exist))))
ifeq ($(PRUNE_IS_GGUF),)
ifeq ($(wildcard $(patsubst %/,%,$(MODEL))/config.json),)
# A layered folder (export_layered.py's, the demo's build/models/*) is what the stages run, not
# what make prune starts from: it writes the pruned checkpoint and GGUF from the source's files.
ifneq ($(wildcard $(patsubst %/,%,$(MODEL))/manifest.json),)
$(error make prune: MODEL=$(MODEL) is a layerprune layered export (it holds manifest.json), not a checkpoint: make prune needs the source it was exported from, a Hugging Face model folder or a .gguf file, because it exports that itself and writes the pruned Hugging Face checkpoint and GGUF from it. Give that as MODEL; or prune the layered folder by hand, choosing on calibration tokens and measuring on held-out ones (prepare-tokens makes both): apply-prune --method adaptive --budget sleb --race-se 3 --k $(or $(K),K) --model $(MODEL) --tokens tokens-calib.parquet --out plan-calibration.parquet, then apply-prune --method from-plan --plans plan-calibration.parquet --k $(or $(K),K) --model $(MODEL) --tokens tokens-eval.parquet --out plan.parquet --pruned-out pruned/ (docs/pipeline.md, "By hand"))
endif
$(error make prune: MODEL=$(MODEL) is neither a .gguf file nor a Hugging Face model folder (no config.json)$(if $(filter-out %.gguf,$(shell printf '%s' '$(MODEL)' | tr A-Z a-z)),,: a GGUF file's name ends in .gguf in lower case: rename it or give a link so named))
endif
endif
ifneq ($(strip $(MAX_PPL_RATIO)),)
ifneq ($(strip $(K)),)
$(error make prune: set K=number of blocks to remove or MAX_PPL_RATIO=ratio, not both)
endif
ifneq ($(shell printf '%s' '$(MAX_PPL_RATIO)' | grep -Ex '[0-9]+(\.[0-9]+)?' | awk '$$1 > 1'),$(MAX_PPL_RATIO))
$(error make prune: MAX_PPL_RATIO='$(MAX_PPL_RATIO)' must be a number above 1: the calibration perplexity allowed, as a multiple of the full model's (1.5 = 50 % higher))
endif
ifneq ($(shell printf '%s' '$(MAX_PPL_RATIO_SE)' | grep -Ex '[0-9]+(\.[0-9]+)?'),$(MAX_PPL_RATIO_SE))
$(error make prune: MAX_PPL_RATIO_SE='$(MAX_PPL_RATIO_SE)' must be a number of standard errors, 0 or more (2: the ratio met by two standard errors of the calibration windows))
endif
else
ifneq ($(strip $(MAX_PPL_RATIO_SE)),)
$(error make prune: MAX_PPL_RATIO_SE is a margin on MAX_PPL_RATIO; set MAX_PPL_RATIO=ratio too)
endif
ifeq ($(strip $(K)),)
$(error make prune: set K=number of blocks to remove, or MAX_PPL_RATIO=ratio to remove as many as keep the calibration perplexity within that multiple of the full model's)
endif
ifneq ($(shell printf '%s' '$(K)' | grep -Ex '[1-9][0-9]*'),$(K))
$(error make prune: K='$(K)' must be the number of blocks to remove, a positive integer such as 8 (without a sign or a leading zero))
endif
ifneq ($(strip $(PRUNE_NUM_BLOCKS)),)
ifeq ($(shell [ $(K) -lt $(PRUNE_NUM_BLOCKS) ] && echo ok),)
$(error make prune: K=$(K), but MODEL=$(MODEL) has $(PRUNE_NUM_BLOCKS) blocks ($(PRUNE_NUM_BLOCKS_KEY) in its $(if $(PRUNE_IS_GGUF),header,config.json)) and one must stay: K is at most $(shell echo $$(($(PRUNE_NUM_BLOCKS) - 1))))
endif
endif
endif
# PRUNE_GENERATOR is 0 or 1: any other value (yes, true) skipped the decoder without a word.
ifneq ($(words $(PRUNE_GENERATOR))$(filter-out 0 1,$(PRUNE_GENERATOR)),1)
$(error make prune: PRUNE_GENERATOR='$(PRUNE_GENERATOR)' must be 0 (no ONNX decoder with a KV cache) or 1 (the decoder whatever the architecture); left out, it is made for the architectures export_generator.py supports)
endif
# ONNX Runtime's CPU provider has no bfloat16 kernels (Trilu, among others): a bf16 folder would be
# exported, then refused by the first evaluation.
ifeq ($(PRUNE_EXPORT_DTYPE)/$(DEVICE_KIND),bf16/cpu)
$(error make prune: PRUNE_EXPORT_FLAGS asks for --dtype bf16, but the model would run on the CPU (DEVICE=cpu), whose ONNX Runtime has no bfloat16 kernels: run it on a GPU (DEVICE=cuda), or on the CPU leave --dtype out (fp32) or use --dtype fp16)
endif
ifneq ($(and $(filter $(PRUNE_FIXED_LENGTH_TYPES),$(PRUNE_MODEL_TYPE)),$(PRUNE_FIXED_SEQ_LEN)),)
ifneq ($(PRUNE_FIXED_SEQ_LEN),$(SEQ_LEN))
$(error make prune: PRUNE_EXPORT_FLAGS exports MODEL=$(MODEL) ($(PRUNE_MODEL_TYPE)) for windows of exactly $(PRUNE_FIXED_SEQ_LEN) tokens (--fixed-seq-len), but SEQ_LEN=$(SEQ_LEN): set SEQ_LEN=$(PRUNE_FIXED_SEQ_LEN), or leave --fixed-seq-len out (make prune then exports for SEQ_LEN))
endif
endif
# GPT-2 with scale_attn_by_inverse_layer_idx scales each block's attention by its index, which a
# pruned checkpoint renumbers: prune_hf.py refuses it, and would only after the export and the plan.
ifeq ($(PRUNE_IS_GGUF),)
ifneq ($(shell grep -Eq '"scale_attn_by_inverse_layer_idx" *: *true' $(patsubst %/,%,$(MODEL))/config.json 2>/dev/null && echo yes),)
$(error make prune: MODEL=$(MODEL) sets scale_attn_by_inverse_layer_idx in its config.json: each block's attention is scaled by 1 / (its index + 1), which deleting blocks renumbers, so no pruned Hugging Face checkpoint can keep it (tools/export/prune_hf.py refuses it))
endif
endif
endif

# MODEL and K are make prune's: the other goals that run a model would ignore them without a
# word (they run MODEL_DIR, and take their k from settings of their own), so they refuse them.
K_GOALS_KS := demo results results-plans tasks task-plans quantize-then-prune
K_GOALS_FRONTIER := frontier frontier-windows frontier-pairs
K_GOALS_EXACT := exact-frontier exact-frontier-pairs
MODEL_DIR_GOALS := $(K_GOALS_KS) $(K_GOALS_FRONTIER) $(K_GOALS_EXACT) quantize quantize-bench \
  exact-game bench bench-model model
MODEL_DIR_GOAL = $(firstword $(filter $(MODEL_DIR_GOALS),$(MAKECMDGOALS)))
# What the goal takes instead of K.
K_INSTEAD = $(strip \
  $(if $(filter $(K_GOALS_KS),$(MODEL_DIR_GOAL)),KS=$(KS) (the k of the plans) and K_PRUNED=$(K_PRUNED) (the k of the pruned model the demo writes),\
  $(if $(filter $(K_GOALS_FRONTIER),$(MODEL_DIR_GOAL)),FRONTIER_KS=$(FRONTIER_KS),\
  $(if $(filter $(K_GOALS_EXACT),$(MODEL_DIR_GOAL)),EXACT_FRONTIER_KS=$(EXACT_FRONTIER_KS),\
  no k at all))))
ifeq ($(filter prune,$(MAKECMDGOALS)),)
ifneq ($(MODEL_DIR_GOAL),)
ifeq ($(origin MODEL),command line)
$(error make $(MODEL_DIR_GOAL): MODEL=$(MODEL) is read by make prune only; this goal runs a layered model folder, MODEL_DIR=path (tools/export writes one), or a fetched one by MODEL_NAME)
endif
ifeq ($(origin K),command line)
$(error make $(MODEL_DIR_GOAL): K=$(K) is read by make prune only; this goal takes $(K_INSTEAD))
endif
endif
endif

# $(call prune_stamp,NAME,VALUES[,INPUTS]): layerprune.mk's settings stamp, in the run folder
# PRUNE_OUT (INPUTS: the files read, identified by what they are: the exported model folder and the
# text, order-only prerequisites of the tokens, so a model exported again unchanged, after a new
# export_layered.py or the source's weights touched, remakes nothing and keeps PRUNE_CACHE).
prune_stamp = $(call settings_stamp_at,$(PRUNE_OUT)/.settings/$(1),$(2),,$(3))

# The export's and the generator's flags as stamped: `--flag=value` written `--flag value`
# (flags_among, layerprune.mk, as EVALUATE_FLAGS' are), so that the two spellings of one flag
# (`--dtype=bf16`, `--dtype bf16`) are one export (a run stamped with `=` before 2026-12-07 is
# exported again once).
PRUNE_EXPORT_ARGS_STAMPED = $(call flags_among,,all,$(PRUNE_EXPORT_ARGS))
PRUNE_GENERATOR_FLAGS_STAMPED = $(call flags_among,,all,$(PRUNE_GENERATOR_FLAGS))
$(eval $(call prune_stamp,export,$(strip $(PRUNE_SOURCE) $(PRUNE_EXPORT_ARGS_STAMPED) $(PRUNE_SOURCE_STAT))))
# The kind of device and the runtime flags (MODEL_RUNTIME, layerprune.mk) are in the token stamps although the tokens do
# not depend on them: everything measured on the tokens does, so a new kind or flag measures it all
# again. The tokens themselves come out the same, so their rule keeps the cache of evaluations
# (keep_cache.sh compares the model and the tokens, not what the rows were measured on), whose rows
# apply-prune starts again (--replace-cache-measured-otherwise: `its rows were measured on cpu,
# this run measures on cpu, graph optimization basic`), replacing the file only once it has
# measured something, so a CUDA request that fails keeps the old measurements (as the demo's
# plan cache, layerprune.mk). The device stamp, of MODEL_RUNTIME, what the rows record as
# evaluated_on, is order-only for the plan's rule; the token stamps say what is measured again.
$(eval $(call prune_stamp,tokens-calib,$(CALIB_SOURCE_STAMPED) $(CALIB_WINDOWS) $(SEQ_LEN) $(BOS) $(SEED) $(MODEL_RUNTIME),$(PRUNE_MODEL_DIR)/manifest.json $(CALIB_INPUT)))
$(eval $(call prune_stamp,tokens-eval,$(EVAL_SOURCE_STAMPED) $(EVAL_WINDOWS) $(SEQ_LEN) $(BOS) $(MODEL_RUNTIME),$(PRUNE_MODEL_DIR)/manifest.json $(EVAL_INPUT)))
$(eval $(call settings_stamp_at,$(PRUNE_OUT)/.settings/device,$(MODEL_RUNTIME)))
$(eval $(call prune_stamp,plan-$(PRUNE_CHOICE),$(PRUNE_PLAN_ARGS)))
# The checkpoint is written from the source's files themselves, not from the export: their
# sizes, times and inodes as the export's stamp has them (a tokenizer file removed or replaced by
# an older one, whose export came out the same, kept the old checkpoint's tokenizer), and
# PRUNE_HF_FILES by their content, and by their names: one of two removed leaves the other's
# identity unchanged, which the stamp would otherwise take for no change.
PRUNE_HF_SOURCE_NAMES = $(patsubst $(patsubst %/,%,$(MODEL))/%,%,$(PRUNE_HF_SOURCE_DEPS))
$(eval $(call prune_stamp,hf-$(PRUNE_CHOICE),$(strip $(PRUNE_SOURCE) $(PRUNE_SOURCE_STAT) $(PRUNE_HF_SOURCE_NAMES)),$(PRUNE_HF_SOURCE_DEPS)))
$(eval $(call prune_stamp,generator-$(PRUNE_CHOICE),$(strip $(PRUNE_GENERATOR_FLAGS_STAMPED))))

# The full model as a layered ONNX folder, checked against transformers by the exporter. The
# model folders and the checkpoint below are renamed into place whole: their manifest.json (and
# config.json) is kept if make is interrupted or fails after that (.PRECIOUS), and the pruned
# folder's rule clears one an older make left without its manifest (pipelines/layerprune.mk,
# the demo's pruned folder, says why).
.PRECIOUS: $(PRUNE_MODEL_DIR)/manifest.json $(PRUNE_PLAN_DIR)/pruned/manifest.json $(PRUNE_PLAN_DIR)/pruned-hf/config.json \
           $(PRUNE_PLAN_DIR)/pruned.gguf
# The runtime flags first, in the stages' own words (as the Snakefile does at load): a flag the
# device cannot have (--cuda-graphs on the CPU) was refused by the first evaluate, after an
# export that takes an 8B model a long run and 32 GB. EVALUATE_FLAGS' one other flag that every
# stage it reaches takes, --no-verify, is no runtime flag: the check would refuse it.
$(PRUNE_MODEL_DIR)/manifest.json: $(PRUNE_SOURCE_DEPS) $(call tool_sources,export/export_layered.py) $(PRUNE_OUT)/.settings/export | $(VENV_EXPORT)/.complete $(ORT_LIB) $(BIN)/evaluate
	$(BIN)/evaluate check-runtime-flags $(filter-out --no-verify,$(EVALUATE_FLAGS))
	$(VENV_EXPORT)/bin/python tools/export/export_layered.py $(PRUNE_SOURCE) --out $(PRUNE_MODEL_DIR) \
	  $(PRUNE_EXPORT_ARGS) --force

$(PRUNE_OUT)/tokens-calib.parquet: $(PRUNE_OUT)/.settings/tokens-calib | $(BIN)/prepare-tokens $(BIN)/inspect $(PRUNE_MODEL_DIR)/manifest.json $(CALIB_INPUT)
	$(call new_calibration_tokens,$(PRUNE_CACHE),$(PRUNE_MODEL_DIR),$(CALIB_SOURCE) \
	  --windows $(CALIB_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) --mode random --seed $(SEED))

$(PRUNE_OUT)/tokens-eval.parquet: $(PRUNE_OUT)/.settings/tokens-eval | $(BIN)/prepare-tokens $(PRUNE_MODEL_DIR)/manifest.json $(EVAL_INPUT)
	$(BIN)/prepare-tokens --model $(PRUNE_MODEL_DIR) $(EVAL_SOURCE) \
	  --windows $(EVAL_WINDOWS) --seq-len $(SEQ_LEN) --bos $(BOS) --mode consecutive --out $@

$(PRUNE_OUT)/full-eval.parquet: $(PRUNE_OUT)/tokens-eval.parquet | $(BIN)/evaluate $(BIN)/inspect $(ORT_STAGE_LIB)
	$(call evaluate_checkpointed,--model $(PRUNE_MODEL_DIR) --tokens $< $(EVALUATE_FLAGS) --quiet)

# PRUNE_SEARCH (raced adaptive removal, at most ADAPTIVE_BUDGET LLM evaluations; raced SLEB for a
# ratio) chooses on the calibration tokens; the chosen plan is then written as the pruned layered
# folder, and measured on the held-out tokens, in two steps: the folder is written from the plan
# as chosen without running the model (from-plan without --tokens), so new held-out tokens
# (EVAL_*) measure the plan again but write neither the folder nor anything made from it.
# The plan table is one apply-prune call's, so it holds one method's plans, and the later steps
# take its plan at K without naming the method (with MAX_PPL_RATIO its one plan, without a k):
# a race drops masks only after its first windows (--race-windows, default 3), so with no more
# CALIB_WINDOWS than those apply-prune races nothing and records the plan under the unraced
# method's name (adaptive, sleb), which asking for adaptive-raced by name refused after the
# choice (`no plan removes 1 blocks with method adaptive-raced`). The summary reads the method
# from the table too.
$(PRUNE_PLAN_DIR)/plan-calibration.parquet: $(PRUNE_OUT)/tokens-calib.parquet $(PRUNE_OUT)/.settings/plan-$(PRUNE_CHOICE) | $(BIN)/apply-prune $(ORT_STAGE_LIB) \
    $(PRUNE_OUT)/.settings/device
	@mkdir -p $(dir $@)
	@# A refused or failed choice leaves no empty plan folder behind. One killed (kill -9) leaves
	@# its output's lock file (.NAME.lock, crates/core/src/lock.rs), which holds no lock but kept
	@# rmdir from removing the folder: it is removed under the lock (flock -n), so never while
	@# another run of this plan holds it (a second run is refused at once, and fails here too).
	@# Interrupted (Ctrl-C reaches the whole process group, this shell too, which then died
	@# before the `||`), the shell's trap does the same once apply-prune has stopped.
	trap '$(PRUNE_CHOICE_CLEANUP); exit 130' INT TERM HUP; \
	$(BIN)/apply-prune $(PRUNE_PLAN_ARGS) $(PRUNE_CHOICE_FLAGS) --model $(PRUNE_MODEL_DIR) $(EVALUATE_FLAGS) \
	  --tokens $< --cache $(PRUNE_CACHE) --replace-cache-measured-otherwise --out $@ || { $(PRUNE_CHOICE_CLEANUP); exit 1; }

PRUNE_CHOICE_CLEANUP = { ! command -v flock >/dev/null || flock -n $(PRUNE_PLAN_LOCK) rm -f $(PRUNE_PLAN_LOCK) 2>/dev/null; \
  rmdir $(PRUNE_PLAN_DIR) 2>/dev/null; }

PRUNE_PLAN_LOCK = $(PRUNE_PLAN_DIR)/.plan-calibration.parquet.lock
PRUNE_FROM_PLAN = --method from-plan --plans $(PRUNE_PLAN_DIR)/plan-calibration.parquet \
  $(if $(K),--k $(K)) --model $(PRUNE_MODEL_DIR)
$(PRUNE_PLAN_DIR)/pruned/manifest.json: $(PRUNE_PLAN_DIR)/plan-calibration.parquet | $(BIN)/apply-prune
	@sh pipelines/clear_stale_model_folder.sh $(dir $@)
	$(BIN)/apply-prune $(PRUNE_FROM_PLAN) $(strip $(call evaluate_flags_among,--threads,keep)) --pruned-out $(dir $@) --overwrite

# The saved summary of the plan as last measured goes first: the goal writes it again at the end
# (a failed or interrupted run leaves none beside numbers it no longer states).
$(PRUNE_PLAN_DIR)/plan.parquet: $(PRUNE_PLAN_DIR)/plan-calibration.parquet $(PRUNE_OUT)/tokens-eval.parquet | $(BIN)/apply-prune $(ORT_STAGE_LIB)
	rm -f $(PRUNE_SUMMARY_FILES)
	$(BIN)/apply-prune $(PRUNE_FROM_PLAN) --tokens $(PRUNE_OUT)/tokens-eval.parquet $(EVALUATE_FLAGS) --out $@

# The written folder itself, run on the held-out tokens.
$(PRUNE_PLAN_DIR)/pruned-eval.parquet: $(PRUNE_PLAN_DIR)/pruned/manifest.json $(PRUNE_OUT)/tokens-eval.parquet | $(BIN)/evaluate $(BIN)/inspect $(ORT_STAGE_LIB)
	$(call evaluate_checkpointed,--model $(dir $<) --tokens $(PRUNE_OUT)/tokens-eval.parquet $(EVALUATE_FLAGS) \
	  --quiet)

# The same blocks deleted from the source model: a Hugging Face checkpoint that transformers
# (and lm-eval, vLLM, ...) loads as an ordinary model. Made from the plan as chosen
# (plan-calibration.parquet, taken as apply-prune --method from-plan takes it above): plan.parquet
# holds the same blocks measured on the held-out tokens, and new held-out settings (EVAL_*)
# change nothing in the checkpoint, nor then in the generator made from it.
$(PRUNE_PLAN_DIR)/pruned-hf/config.json: $(PRUNE_PLAN_DIR)/plan-calibration.parquet $(PRUNE_SOURCE_DEPS) $(call tool_sources,export/prune_hf.py) $(PRUNE_OUT)/.settings/hf-$(PRUNE_CHOICE) | $(VENV_EXPORT)/.complete
	@# The decoder in this folder was made from the checkpoint about to be replaced: with
	@# PRUNE_GENERATOR=0 nothing would make it again, and it would stay beside the new plan, another
	@# plan's blocks (its file records none to tell them apart by). The pruned GGUF file, of the same
	@# plan, goes too: made again after this checkpoint, not left beside it if that fails.
	rm -f $(PRUNE_PLAN_DIR)/pruned-generator.onnx $(PRUNE_PLAN_DIR)/pruned-generator.onnx.*.data \
	  $(PRUNE_PLAN_DIR)/pruned.gguf $(PRUNE_SUMMARY_FILES)
	$(VENV_EXPORT)/bin/python tools/export/prune_hf.py $(PRUNE_SOURCE) --plans $< \
	  $(if $(K),--k $(K)) --out $(dir $@) --force

# The pruned checkpoint as one ONNX decoder with a KV cache (the onnxruntime-genai / optimum
# layout): the layered folder and its merged file have no cache, so no runtime generates text
# with them. The tool checks its greedy generation against transformers' before writing it.
$(PRUNE_PLAN_DIR)/pruned-generator.onnx: $(PRUNE_PLAN_DIR)/pruned-hf/config.json $(call tool_sources,export/export_generator.py) $(PRUNE_OUT)/.settings/generator-$(PRUNE_CHOICE) | $(VENV_EXPORT)/.complete
	$(VENV_EXPORT)/bin/python tools/export/export_generator.py --model $(dir $<) --out $@ \
	  $(PRUNE_GENERATOR_FLAGS) --force

# From a GGUF file, the same blocks deleted from it: a GGUF file again, each kept tensor's bytes
# as they are (no second quantization), read back by transformers and checked against the source
# with the blocks deleted in memory before it is put in place. From the plan as chosen, as the
# checkpoint above, and from the source's file itself (the checkpoint's stamp: its path, size,
# time and inode). An earlier plan's file goes first (and with the checkpoint's rewriting, above,
# which is why it is made after the checkpoint, also under -j): a failed or interrupted run leaves
# none beside the new plan. The pattern a Gemma file states is computed in the exporter (its GGUF
# reading), so the file depends on it too.
$(PRUNE_PLAN_DIR)/pruned.gguf: $(PRUNE_PLAN_DIR)/plan-calibration.parquet $(PRUNE_SOURCE_DEPS) $(call tool_sources,export/prune_gguf.py) $(PRUNE_OUT)/.settings/hf-$(PRUNE_CHOICE) | $(VENV_EXPORT)/.complete $(PRUNE_PLAN_DIR)/pruned-hf/config.json
	rm -f $@
	$(VENV_EXPORT)/bin/python tools/export/prune_gguf.py --gguf $(PRUNE_MODEL_PATH) --plans $< \
	  $(if $(K),--k $(K)) --out $@ --force

# For llama.cpp: the removed blocks, 0-based, comma-separated (`llama-quantize --prune-layers`).
$(PRUNE_PLAN_DIR)/llama-cpp-prune-layers.txt: $(PRUNE_PLAN_DIR)/pruned/manifest.json $(call tool_sources,prune/report.py)
	$(PYTHON) tools/prune/report.py llama-cpp --model $(PRUNE_MODEL_DIR) --pruned $(dir $<) --out $@

PRUNE_GENERATOR_OUT = $(if $(filter 1,$(PRUNE_GENERATOR)),$(PRUNE_PLAN_DIR)/pruned-generator.onnx)
# A GGUF MODEL is pruned as a GGUF file too, but for a Gemma 2 or 3 27B (46 or 62 blocks), whose
# attention scale llama.cpp tells by its block count: pruned, it would run another model
# (prune_gguf.py refuses it; pruned/ and pruned-hf/ keep the scale).
PRUNE_GGUF_27B = gemma2:46 gemma3_text:62
PRUNE_GGUF_OUT = $(if $(and $(PRUNE_IS_GGUF),$(filter-out $(PRUNE_GGUF_27B),$(PRUNE_MODEL_TYPE):$(firstword $(PRUNE_LAYERS)))),$(PRUNE_PLAN_DIR)/pruned.gguf)
# The summary kept beside the plan (report.py summary writes both, the text it prints and the
# same facts as JSON).
PRUNE_SUMMARY_FILES = $(PRUNE_PLAN_DIR)/summary.txt $(PRUNE_PLAN_DIR)/summary.json

# The goal's own recipe only prints the summary, and keeps it as PRUNE_SUMMARY_FILES: they are
# written there rather than by a rule of their own because what they say also reads what no
# prerequisite covers (the run's other plan folders, for "older here"; MODEL as spelled), and
# report.py rewrites a file only when its content changed, so a run with nothing to do prints the
# summary and rewrites nothing. Under `make -q` (QUESTION_ONLY, layerprune.mk) its
# lines expand to nothing, which Make does not count as something to do, so that `make -q prune`
# exits 0 after a finished run (a phony goal with a recipe is never up to date to -q). With one
# file as CALIB_TEXT and EVAL_TEXT (ONE_TEXT_FILE, Makefile), the summary says that its perplexity
# on EVAL_TEXT is not held out (the tokens differ, random and consecutive windows, so its refusal of
# a plan measured on the tokens it was chosen on does not apply).
prune: $(ORT_STAGE_LIB) $(PRUNE_OUT)/full-eval.parquet $(PRUNE_PLAN_DIR)/plan.parquet $(PRUNE_PLAN_DIR)/pruned-eval.parquet \
       $(PRUNE_PLAN_DIR)/pruned-hf/config.json \
       $(PRUNE_GENERATOR_OUT) $(PRUNE_GGUF_OUT) $(PRUNE_PLAN_DIR)/llama-cpp-prune-layers.txt | $(VENV_EXPORT)/.complete
	$(if $(QUESTION_ONLY),,@$(VENV_EXPORT)/bin/python tools/prune/report.py summary --run $(PRUNE_OUT) --plan-dir $(PRUNE_PLAN_DIR) \
	  --source $(MODEL) $(if $(MAX_PPL_RATIO),$(PRUNE_RATIO_FLAGS)) $(if $(ONE_TEXT_FILE),--one-text $(ONE_TEXT_FILE)) \
	  $(if $(PRUNE_GENERATOR_OUT),--generator $(PRUNE_GENERATOR_OUT)))

.PHONY: prune

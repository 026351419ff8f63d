# Quantized models (docs/quantization.md). Included by the top-level Makefile after
# settings.mk, layerprune.mk and benchmarks.mk, whose settings (KS, K_PRUNED, SEED,
# SURROGATE_RIDGE; MODEL_DIR, RUN, EVALUATE_FLAGS, BENCH) it uses.
#
#   make quantize                       int8, int4/32 and int4/128 of the model, and of the
#                                       demo's pruned model (prune → quantize)
#   make quantize-then-prune            the Shapley pipeline run on the int4 model, and its
#                                       pruned model (quantize → evaluate → … → prune)
#   make quantize-bench                 every model's perplexity and evaluate's masks/s on the
#                                       bench tokens and masks (summaries in $(QUANT)/bench/)

QUANT := $(BUILD)/quant/$(MODEL_NAME)
QUANT_SCHEMES ?= int8 int4-32 int4-128
# The scheme the Shapley pipeline is rerun on for quantize-then-prune.
QUANT_FIRST ?= int4-32
QUANT_ARGS_int8 := --scheme int8
QUANT_ARGS_int4-32 := --scheme int4 --group-size 32
QUANT_ARGS_int4-128 := --scheme int4 --group-size 128
# A scheme without its QUANT_ARGS_<scheme> reached quantize without --scheme, which refused it
# (clap: "--scheme <SCHEME>" not provided) once the models before it were made: refused first,
# naming the schemes there are.
QUANT_KNOWN := $(patsubst QUANT_ARGS_%,%,$(filter QUANT_ARGS_%,$(.VARIABLES)))
# $(call check_schemes,VARIABLE,GOALS): VARIABLE's schemes, for a command naming one of GOALS.
check_schemes = $(if $(filter $(2),$(MAKECMDGOALS)),$(foreach s,$($(1)),$(if $(QUANT_ARGS_$(s)),,\
  $(error $(1)=$($(1)): no scheme "$(s)" (QUANT_ARGS_<scheme> in pipelines/quantize.mk): $(QUANT_KNOWN)))))
$(call check_schemes,QUANT_SCHEMES,quantize quantize-bench)
$(call check_schemes,QUANT_FIRST,quantize-then-prune)

$(BIN)/quantize:
	$(CARGO) build $(CARGO_FLAGS) -p quantize
# Phony but under `make -q`, as the other stages (pipelines/layerprune.mk).
ifeq ($(QUESTION_ONLY),)
.PHONY: $(BIN)/quantize
endif

# Settings stamps (layerprune.mk): the model folder the full model's quantizations are made
# from (QUANT is named after MODEL_NAME alone), and the quantized run's own.
$(eval $(call settings_stamp_at,$(QUANT)/.settings/model,$(MODEL_PATH_STAMPED),,$(MODEL_INPUT)))
$(eval $(call settings_stamp_at,$(QUANT)/.settings/device,$(MODEL_RUNTIME)))
# Each scheme's quantize arguments (QUANT_ARGS_<scheme>, `--flag=value` as `--flag value`), a
# stamp per scheme, so that new arguments quantize that scheme's models again and no other's
# (until 2026-12-07 they were in no stamp: changing them remade nothing). Folders made before
# then take the new stamp, dated as the oldest of them, when the arguments are this file's
# (nothing recorded a command line's): quantized again, the full model's folder would have
# measured every mask of the quantized run again.
QUANT_STAMPED_SCHEMES := $(sort $(QUANT_SCHEMES) $(QUANT_FIRST))
quant_scheme_args = $(strip $(call flags_among,,all,$(QUANT_ARGS_$(1))))
quant_scheme_folders = $(QUANT)/full-$(1)/manifest.json $(QUANT)/pruned-k$(K_PRUNED)-$(1)/manifest.json
$(foreach s,$(QUANT_STAMPED_SCHEMES),$(eval $(call settings_stamp_at,$(QUANT)/.settings/scheme-$(s),$(call quant_scheme_args,$(s)),,,\
  $(if $(filter file,$(origin QUANT_ARGS_$(s))),ls -1tr $(call quant_scheme_folders,$(s)) 2>/dev/null | head -n 1))))
# The demo's pruned folder the pruned models are quantized from, by its path and identity (its
# manifest's hash, which another plan changes): QUANT is named after the model alone, so another
# RUN, or another plan's folder put there with its old time, remakes them. (Until 2026-12-07 they
# were compared by time alone: a RUN whose pruned folder was older kept them, and `make
# quantize-bench` measured the previous run's plan.) The folder is order-only: its stamp records
# what it is, so one written again unchanged quantizes nothing again.
# Quantized folders made before the stamp (2026-12-07) take it, dated as the oldest of them, when
# each records the folder's model id as its source (pipelines/made_from.py quantized).
QUANT_PRUNED_SOURCE := $(RUN)/pruned-k$(K_PRUNED)
$(eval $(call settings_stamp_at,$(QUANT)/.settings/pruned-k$(K_PRUNED),$(call stamped_path,$(QUANT_PRUNED_SOURCE)),,\
  $(QUANT_PRUNED_SOURCE)/manifest.json,$(PYTHON) pipelines/made_from.py quantized $(QUANT_PRUNED_SOURCE) \
  $(foreach s,$(QUANT_STAMPED_SCHEMES),$(QUANT)/pruned-k$(K_PRUNED)-$(s))))

# The full model, quantized (the model folder order-only: its stamp records what it is). Each
# model folder here is renamed into place whole: its manifest is kept if make is interrupted or
# fails after that (.PRECIOUS), and a folder an older make left without it is cleared first
# (pipelines/layerprune.mk, the demo's pruned folder, says why).
.PRECIOUS: $(QUANT)/full-%/manifest.json $(QUANT)/pruned-k$(K_PRUNED)-%/manifest.json
$(QUANT)/full-%/manifest.json: $(QUANT)/.settings/model $(QUANT)/.settings/scheme-% | $(BIN)/quantize $(MODEL_INPUT)
	@mkdir -p $(QUANT)
	@sh pipelines/clear_stale_model_folder.sh $(dir $@)
	$(BIN)/quantize --model $(MODEL_DIR) --out $(dir $@) $(QUANT_ARGS_$*) --threads $(STAGE_THREADS) --overwrite

# prune → quantize: the demo's pruned model (the recommended method's plan, K_PRUNED blocks),
# quantized.
$(QUANT)/pruned-k$(K_PRUNED)-%/manifest.json: $(QUANT)/.settings/pruned-k$(K_PRUNED) $(QUANT)/.settings/scheme-% \
                                            | $(BIN)/quantize $(QUANT_PRUNED_SOURCE)/manifest.json
	@mkdir -p $(QUANT)
	@sh pipelines/clear_stale_model_folder.sh $(dir $@)
	$(BIN)/quantize --model $(QUANT_PRUNED_SOURCE) --out $(dir $@) $(QUANT_ARGS_$*) --threads $(STAGE_THREADS) --overwrite

# quantize → evaluate → surrogate → Shapley → prune: the same masks and calibration tokens as
# the float run, valued on the quantized model; checkpointed and stamped as the float run is
# (a table of other masks, or a killed run's part, is never taken for this one). The tables it
# reads from RUN (masks, calibration tokens; the evaluation tokens the plan is measured on) are
# order-only, stamped by RUN's path and their identity (their content's hash), as the pruned folder
# above: QRUN is named after the model and scheme alone, so another RUN, or other tables in it,
# measure again (the stamp, newer, drops a checkpoint of the old ones), and a table touched or
# made again unchanged does not. (Until 2026-12-07 they were compared by time alone: a RUN whose
# tables were older than QRUN's kept the previous run's measurements.) A table made before these
# stamps takes its stamp, dated as the table, when what it records it was measured from is RUN's
# tables now (pipelines/made_from.py: the evaluations exactly RUN's masks, measured on its
# calibration tokens; the plan measured on its evaluation tokens): the stamps' upgrade measures
# nothing again, and `make -n` lists nothing after it, also where RUN or build/quant had been copied
# with their times kept (cp -a: new ctimes; until 2026-12-07 it listed `:` for each such stamp on
# every run: layerprune.mk, stamp_update).
QRUN := $(QUANT)/run-$(QUANT_FIRST)
$(eval $(call settings_stamp_at,$(QRUN)/.settings/surrogates,$(SEED) $(SURROGATE_RIDGE)))
$(eval $(call settings_stamp_at,$(QRUN)/.settings/device,$(MODEL_RUNTIME)))
$(eval $(call settings_stamp_at,$(QRUN)/.settings/calibration,$(call stamped_path,$(RUN)),,\
  $(RUN)/masks.parquet $(RUN)/tokens-calib.parquet,$(PYTHON) pipelines/made_from.py evaluations $(BIN) \
  $(QRUN)/evaluations.parquet $(RUN)/masks.parquet $(RUN)/tokens-calib.parquet))
$(eval $(call settings_stamp_at,$(QRUN)/.settings/tokens-eval,$(call stamped_path,$(RUN)),,$(RUN)/tokens-eval.parquet,\
  $(PYTHON) pipelines/made_from.py plan $(BIN) $(QRUN)/pruned-k$(K_PRUNED)-plan.parquet $(RUN)/tokens-eval.parquet))
# The stages made_from.py runs (order-only, as for the tables): built before the stamps, so that a
# fresh BIN, or cargo linking them again under -j, never has the check fail and the table measured
# again.
$(QRUN)/.settings/calibration $(QRUN)/.settings/tokens-eval: | $(BIN)/evaluate $(BIN)/inspect
$(QRUN)/evaluations.parquet: $(QUANT)/full-$(QUANT_FIRST)/manifest.json $(QRUN)/.settings/calibration \
                             $(QRUN)/.settings/device | $(BIN)/evaluate $(BIN)/inspect $(RUN)/masks.parquet \
                             $(RUN)/tokens-calib.parquet
	$(call evaluate_checkpointed,--model $(dir $<) --tokens $(RUN)/tokens-calib.parquet \
	  --masks $(RUN)/masks.parquet $(EVALUATE_FLAGS),$(RUN)/masks.parquet)

$(QRUN)/surrogate-quadratic.json: $(QRUN)/evaluations.parquet $(QRUN)/.settings/surrogates | $(BIN)/fit-surrogate
	$(BIN)/fit-surrogate --evaluations $< --value nll-increase --kind quadratic \
	  --keep quadratic --ridge-alpha $(SURROGATE_RIDGE) --folds 5 --seed $(SEED) --threads $(STAGE_THREADS) \
	  --metrics $(QRUN)/surrogate-quadratic-metrics.parquet --out $@

$(QRUN)/scores-shapley.parquet: $(QRUN)/surrogate-quadratic.json $(QRUN)/.settings/surrogates | $(BIN)/shapley
	$(BIN)/shapley --surrogate $< --evaluations $(QRUN)/evaluations.parquet --masks $(RUN)/masks.parquet \
	  --estimator surrogate-shapley --threads $(STAGE_THREADS) --out $@

# The pruned folder is written by a run of apply-prune that runs no model (no --tokens: the
# K_PRUNED lowest Shapley values are the plan whatever text measures it), so it depends on the
# scores alone, as the demo's pruned folder on its plan (layerprune.mk, PRUNED): a new evaluation
# text only measures the plan again ($(QRUN)/pruned-k$(K_PRUNED)-plan.parquet, the same one-shot
# choice from the same scores), and does not write the folder again, nor what is made from it.
# (The quantized model is order-only: the scores were measured on it, so it is older than they.)
QRUN_PRUNE = --scores $(QRUN)/scores-shapley.parquet --estimator surrogate-shapley --k $(K_PRUNED) \
  --model $(QUANT)/full-$(QUANT_FIRST)
# (Kept, and cleared when left without its manifest, as the quantized folders above.)
.PRECIOUS: $(QRUN)/pruned-k$(K_PRUNED)/manifest.json
$(QRUN)/pruned-k$(K_PRUNED)/manifest.json: $(QRUN)/scores-shapley.parquet | $(BIN)/apply-prune $(QUANT)/full-$(QUANT_FIRST)/manifest.json
	@sh pipelines/clear_stale_model_folder.sh $(dir $@)
	$(BIN)/apply-prune $(QRUN_PRUNE) $(strip $(call evaluate_flags_among,--threads,keep)) --pruned-out $(dir $@) --overwrite

$(QRUN)/pruned-k$(K_PRUNED)-plan.parquet: $(QRUN)/scores-shapley.parquet $(QRUN)/.settings/tokens-eval \
                                          $(QRUN)/.settings/device | $(BIN)/apply-prune $(QUANT)/full-$(QUANT_FIRST)/manifest.json \
                                          $(RUN)/tokens-eval.parquet
	$(BIN)/apply-prune $(QRUN_PRUNE) --tokens $(RUN)/tokens-eval.parquet $(EVALUATE_FLAGS) --out $@

# Perplexity on the bench tokens (WikiText-2 when present) and masks/s on the bench masks. The
# bench tables (benchmarks.mk) are order-only, stamped by BENCH's path and their identity (their
# content's hash), as RUN's tables above: a table made again unchanged (a newer time) measures
# nothing again, and another one put in place with an older time measures again what reads it
# (until 2026-12-07 they were compared by time alone, both ways wrong). The tokens' stamp guards
# every summary (the masks too are measured on them), the masks' only the masks/s ones. Summaries
# made before these stamps take them, dated as the oldest summary, when every table beside one
# (evaluate --out) was measured on BENCH's tokens (and, for the masks' stamp, holds exactly its
# masks) and on its model, and the summary is that table's run's (pipelines/made_from.py bench),
# so the upgrade measures nothing again. Only the summaries quantize-bench makes are checked: one
# left in bench/ by another K_PRUNED or a scheme dropped from QUANT_SCHEMES, measured on older
# tokens, had every summary measured again.
QUANT_MODELS := $(foreach s,$(QUANT_SCHEMES),full-$(s) pruned-k$(K_PRUNED)-$(s))
QUANT_BENCH_OUTPUTS = $(foreach m,$(QUANT_MODELS),$(QUANT)/bench/$(m)-full.json) \
                      $(foreach s,$(QUANT_SCHEMES),$(QUANT)/bench/full-$(s)-masks.json)
QUANT_BENCH_SUMMARIES = $(wildcard $(QUANT_BENCH_OUTPUTS))
$(eval $(call settings_stamp_at,$(QUANT)/.settings/bench-tokens,$(call stamped_path,$(BENCH)),,$(BENCH)/tokens.parquet,\
  $(PYTHON) pipelines/made_from.py bench $(BIN) $(BENCH)/tokens.parquet - $(QUANT_BENCH_SUMMARIES)))
$(eval $(call settings_stamp_at,$(QUANT)/.settings/bench-masks,$(call stamped_path,$(BENCH)),,$(BENCH)/masks.parquet,\
  $(PYTHON) pipelines/made_from.py bench $(BIN) $(BENCH)/tokens.parquet $(BENCH)/masks.parquet \
  $(filter %-masks.json,$(QUANT_BENCH_SUMMARIES))))
# A summary is a timing of every mask: its table is removed first (as `make bench` does), since
# evaluate resumes a table of the same model and tokens, measuring only the masks it lacks and
# keeping the union (until 2026-12-07 other bench masks gave masks/s of the new masks alone, over
# a table that was not the bench's masks).
# (The stages made_from.py runs: order-only, as for the quantized run's stamps above.)
$(QUANT)/.settings/bench-tokens $(QUANT)/.settings/bench-masks: | $(BIN)/evaluate $(BIN)/inspect
$(QUANT)/bench/%-full.json: $(QUANT)/%/manifest.json $(QUANT)/.settings/bench-tokens $(QUANT)/.settings/device \
                           | $(BIN)/evaluate $(BENCH)/tokens.parquet
	@mkdir -p $(dir $@)
	rm -f $(QUANT)/bench/$*-full.parquet
	$(BIN)/evaluate --model $(dir $<) --tokens $(BENCH)/tokens.parquet $(EVALUATE_FLAGS) \
	  --out $(QUANT)/bench/$*-full.parquet --summary $@ --overwrite --quiet

$(QUANT)/bench/%-masks.json: $(QUANT)/%/manifest.json $(QUANT)/.settings/bench-tokens $(QUANT)/.settings/bench-masks \
                            $(QUANT)/.settings/device | $(BIN)/evaluate $(BENCH)/tokens.parquet $(BENCH)/masks.parquet
	@mkdir -p $(dir $@)
	rm -f $(QUANT)/bench/$*-masks.parquet
	$(BIN)/evaluate --model $(dir $<) --tokens $(BENCH)/tokens.parquet --masks $(BENCH)/masks.parquet \
	  $(EVALUATE_FLAGS) --out $(QUANT)/bench/$*-masks.parquet --summary $@ --overwrite --quiet

quantize: $(ORT_STAGE_LIB) $(foreach m,$(QUANT_MODELS),$(QUANT)/$(m)/manifest.json)
quantize-then-prune: $(ORT_STAGE_LIB) $(QRUN)/pruned-k$(K_PRUNED)/manifest.json $(QRUN)/pruned-k$(K_PRUNED)-plan.parquet
quantize-bench: $(ORT_STAGE_LIB) $(QUANT_BENCH_OUTPUTS)

.PHONY: quantize quantize-then-prune quantize-bench

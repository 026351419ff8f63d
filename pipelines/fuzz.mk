# make fuzz: the long run of the readers' mutation fuzzers (crates/*/tests/fuzz.rs;
# docs/reliability.md): tables, manifests, the graphs a model folder's check and quantize read,
# surrogate files, tokenizers, text corpora (JSON lines, Arrow streams) and task files. `make
# test` already runs them with a few hundred mutations each; this target gives each reader
# FUZZ_SECONDS of wall clock (default 10 minutes; the table reader's time is shared by its seven
# table kinds; the readers of one crate run side by side, so the run takes about 10 minutes a
# crate, six crates), or, when FUZZ_ITERATIONS is given, that many mutations per kind instead.
# FUZZ_SEED picks the sequence of mutants; every mutant that hangs or panics a reader, or that
# reaches a decoder panic the table reader caught, is kept in FUZZ_KEEP for a regression file
# in crates/tables/tests/data/. The dev profile builds dependencies at opt-level 2, so no
# release build is needed. Included by the top-level Makefile.

FUZZ_SECONDS ?= 600
FUZZ_ITERATIONS ?=
FUZZ_SEED ?= 15
FUZZ_KEEP ?= $(BUILD)/fuzz

.PHONY: fuzz
fuzz:
	@mkdir -p $(FUZZ_KEEP)
	LAYERPRUNE_FUZZ_SECONDS=$(FUZZ_SECONDS) LAYERPRUNE_FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) \
	LAYERPRUNE_FUZZ_SEED=$(FUZZ_SEED) LAYERPRUNE_FUZZ_KEEP=$(abspath $(FUZZ_KEEP)) \
	  $(CARGO) test $(CARGO_FLAGS) -p layerprune-tables -p layerprune-model -p layerprune-surrogate \
	  -p layerprune-quantize -p layerprune-data -p layerprune-tasks \
	  --test fuzz -- --nocapture

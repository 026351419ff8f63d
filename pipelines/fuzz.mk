# make fuzz: the long run of the readers' mutation fuzzers (tables, manifests, surrogate files)
# (crates/tables/tests/fuzz.rs; docs/reliability.md, "Tables"). `make test` already runs it
# with 300 mutations per table kind; this target runs FUZZ_ITERATIONS per kind from seed
# FUZZ_SEED (about 0.2 ms per mutation; the dev profile builds dependencies at opt-level 2,
# so no release build is needed) and keeps every mutant that hangs or panics a reader in
# FUZZ_KEEP, for a regression file in crates/tables/tests/data/. Included by the top-level
# Makefile.

FUZZ_ITERATIONS ?= 100000
FUZZ_SEED ?= 15
FUZZ_KEEP ?= $(BUILD)/fuzz

.PHONY: fuzz
fuzz:
	@mkdir -p $(FUZZ_KEEP)
	LAYERPRUNE_FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) LAYERPRUNE_FUZZ_SEED=$(FUZZ_SEED) \
	LAYERPRUNE_FUZZ_KEEP=$(abspath $(FUZZ_KEEP)) \
	  $(CARGO) test $(CARGO_FLAGS) -p layerprune-tables -p layerprune-model -p layerprune-surrogate \
	  --test fuzz -- --nocapture

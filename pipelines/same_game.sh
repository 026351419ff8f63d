#!/bin/sh
# pipelines/same_game.sh INSPECT CACHE MODEL TOKENS: exits 0 when the cache of LLM evaluations
# CACHE is of the game of the model folder MODEL on the token table TOKENS (its model id and
# dataset id, as `INSPECT --json` gives them, are theirs), 1 otherwise (no cache, one another
# model or token table measured, or a file inspect cannot read). Make's and Snakemake's
# calibration-token rules keep the cache only then (`... || rm -f CACHE`): a failed run,
# settings changed and put back, or a model exported again unchanged keep hours of
# measurements, and a new model with the same tokenizer does not inherit the old one's.
inspect=$1 cache=$2 model=$3 tokens=$4
# The ids in `INSPECT --json` of what is given (one file, with inspect's flags before it).
ids() {
  "$inspect" --json "$@" 2>/dev/null | grep -oE '"(model|dataset)_id": *"[0-9a-f]+"' | tr -d ' '
}
kept=$(ids "$cache" | sort)
# The model's id is its manifest's hash: --no-verify spares hashing every graph and weight file
# (some 20 s on a 7B model), which the stages do when they open it.
now=$({ ids --no-verify "$model"; ids "$tokens"; } | sort)
[ -n "$kept" ] && [ "$kept" = "$now" ]

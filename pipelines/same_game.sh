#!/bin/sh
# pipelines/same_game.sh INSPECT CACHE MODEL TOKENS: exits 0 when the cache of LLM evaluations
# CACHE is of the game of the model folder MODEL on the token table TOKENS (its model id and
# dataset id, as `INSPECT --json` gives them, are theirs), 1 otherwise (no cache, one another
# model or token table measured, or a file inspect cannot read). Make's and Snakemake's
# calibration-token rules keep the cache only then (`... || rm -f CACHE`): a failed run,
# settings changed and put back, or a model exported again unchanged keep hours of
# measurements, and a new model with the same tokenizer does not inherit the old one's.
inspect=$1 cache=$2 model=$3 tokens=$4
ids() {
  for file in "$@"; do "$inspect" --json "$file" 2>/dev/null; done |
    grep -oE '"(model|dataset)_id": *"[0-9a-f]+"' | tr -d ' ' | sort
}
kept=$(ids "$cache")
[ -n "$kept" ] && [ "$kept" = "$(ids "$model" "$tokens")" ]

#!/bin/sh
# pipelines/keep_cache.sh INSPECT CACHE MODEL TOKENS: keeps the cache of LLM evaluations CACHE
# only when it is of the game of the model folder MODEL on the token table TOKENS (its model id
# and dataset id, as `INSPECT --json` gives them, are theirs), and removes it otherwise (one
# another model or token table measured, or a file inspect cannot read as a table). Make's and
# Snakemake's calibration-token rules run it after writing TOKENS: a failed run, settings
# changed and put back, or a model exported again unchanged keep hours of measurements, and a
# new model with the same tokenizer does not inherit the old one's. Where the ids of MODEL or
# TOKENS cannot be read (INSPECT missing or failing on them), it says so and exits 2, the cache
# left as it is: a broken tool must not cost those hours.
inspect=$1 cache=$2 model=$3 tokens=$4
[ -e "$cache" ] || exit 0
# The ids in `INSPECT --json` of what is given (one file, with inspect's flags before it).
ids() {
  "$inspect" --json "$@" 2>/dev/null | grep -oE '"(model|dataset)_id": *"[0-9a-f]+"' | tr -d ' '
}
# The model's id is its manifest's hash: --no-verify spares hashing every graph and weight file
# (some 20 s on a 7B model), which the stages do when they open it.
model_id=$(ids --no-verify "$model")
dataset_id=$(ids "$tokens")
if [ -z "$model_id" ] || [ -z "$dataset_id" ]; then
  echo "pipelines/keep_cache.sh: $inspect could not read the ids of $model and $tokens;" \
       "$cache is kept as it is (make build builds inspect)" >&2
  exit 2
fi
kept=$(ids "$cache" | sort)
now=$(printf '%s\n%s\n' "$model_id" "$dataset_id" | sort)
if [ "$kept" != "$now" ]; then
  rm -f "$cache"
fi

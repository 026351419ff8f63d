#!/bin/sh
# pipelines/clear_stale_model_folder.sh FOLDER: run by the rules that write the model folder
# FOLDER (Make's `apply-prune --pruned-out` and `quantize --out` rules, Snakemake's
# pruned_model) just before their stage. The stages build a model folder beside FOLDER and
# rename it into place whole, its manifest.json with it, so a FOLDER without its manifest.json is
# no stage's work in progress: it is what a make before 2026-12-07 left when interrupted or
# failing after the rename (it deleted its target, the manifest, of a complete folder), or what
# Snakemake leaves when it removes a job's output (the manifest) before running the job again.
# The stage refuses such a folder for good (`--overwrite replaces only a model folder`), so it
# is removed here, but only when it holds nothing but what the stages write into a model
# folder: graphs (*.onnx), tokenizer.json and weights/ of plain files. Anything else there (a
# user's files, a Hugging Face checkpoint or a text given as an input) is refused, named and
# left as it is (exit 1). A missing FOLDER, a link, or a folder with a manifest.json is left to
# the stage (its --overwrite replaces a model folder and refuses anything else), as is a FOLDER
# that is not a folder of that name in its parent (one ending in `.` or `..`, or `/`).
# (Every trailing slash dropped: with one left, `link/` is the link's target to test and find.)
folder=$1
while :; do
  case $folder in
    */) folder=${folder%/} ;;
    *) break ;;
  esac
done
[ -n "$folder" ] && [ -d "$folder" ] && [ ! -L "$folder" ] || exit 0
# (Its parent resolved, joined with its name: a path that resolves elsewhere is left as it is.)
case $folder in
  */*) parent=${folder%/*} name=${folder##*/} ;;
  *) parent=. name=$folder ;;
esac
resolved_parent=$(readlink -f -- "${parent:-/}") && resolved=$(readlink -f -- "$folder") || exit 0
[ "$resolved" = "${resolved_parent%/}/$name" ] || exit 0
if [ -e "$folder/manifest.json" ] || [ -L "$folder/manifest.json" ]; then
  exit 0
fi
# What is not a model folder's (paths relative to FOLDER: its own name may hold find's wildcards;
# in -path a `*` also matches `/`, hence the `! -path` of the deeper levels).
if ! other=$(CDPATH= cd -- "$folder" && find . -mindepth 1 ! \( \
    \( -type f -path './*.onnx' ! -path './*/*' \) \
    -o \( -type f -path ./tokenizer.json \) \
    -o \( -type d -path ./weights \) \
    -o \( -type f -path './weights/*' ! -path './weights/*/*' \) \) -print); then
  echo "pipelines/clear_stale_model_folder.sh: cannot list $folder, which has no manifest.json;" \
       "it is left as it is" >&2
  exit 1
fi
if [ -n "$other" ]; then
  first=$(printf '%s\n' "$other" | head -n 1)
  echo "pipelines/clear_stale_model_folder.sh: $folder has no manifest.json and holds what no model" \
       "folder holds (${first#./}): it is not a model folder this pipeline wrote, and is left as it" \
       "is; move or remove it, then run again" >&2
  exit 1
fi
rm -rf "$folder" || exit 1
echo "pipelines/clear_stale_model_folder.sh: removed $folder, a model folder without its" \
     "manifest.json (left so by an interrupted make, or by Snakemake removing the job's output)," \
     "to write it again" >&2

#!/bin/sh
# pipelines/evaluate_shard.sh WORK FINISHED OUTPUT PREVIOUS FORCED MASKS TOKENS MODEL SETTINGS EVALUATE...
# One shard job of pipelines/Snakefile (rule evaluate_shard): runs `EVALUATE... --out <working
# file>`, which checkpoints and resumes, then keeps the finished table and moves it to OUTPUT.
# A script rather than the rule's text: Snakemake reruns a job whose command text changed (its
# `code` trigger), and with it every job after the shards (the plans of the methods that run the
# model, the surrogates), so a change of how the files are handled here reruns nothing. What is
# measured, the evaluate command line EVALUATE..., stays in the rule's text.
#   WORK      RUN/shards/.r<round>-<I>-of-<N>: the working files, WORK.<digest>.work.parquet
#   FINISHED  RUN/shards/finished/r<round>-<I>-of-<N>: the finished tables, FINISHED.<digest>.parquet
#   OUTPUT    the rule's output, RUN/shards/r<round>-<I>-of-<N>.parquet
#   PREVIOUS  the previous round's output of this shard (a later round), or empty
#   FORCED    empty, or the id of the Snakemake run whose command line forced this job (the same
#             for a retry of the job in that run: Slurm's `retries`)
#   MASKS TOKENS MODEL SETTINGS   what pipelines/shard_digest.sh digests
#
# The files are named by the digests of the shard's inputs (pipelines/shard_digest.sh, newest
# scheme first), so a stale one, or one measured on another kind of device, is never resumed.
# Not forced, a job resumes its working file, else starts from its finished table, else from
# PREVIOUS (a mask keeps its shard when masks are appended, so a later round evaluates only its
# new masks): a job rerun with the same inputs (incomplete, its command changed, its output
# removed) measures nothing again. A job with no file of its own digest takes the newest it has
# (run folders made before a digest's scheme changed), a working file before a finished table.
# Forced, it measures again: it resumes only a working file of its own forcing run (a retry
# resumes its last checkpoint: WORK.<digest>.forced holds the run's id), and takes no finished
# table; those stay in place until it has finished, so a forced job that fails leaves the last
# good table (and a run that does not force it resumes the forced job's checkpoint, measured
# since the force). Once finished, a job that measured since a force (forced, or resuming a
# forced job's checkpoint: WORK.<digest>.forced still there) also removes the working files and
# finished tables of this shard's later rounds: they started from the table it replaces, and
# taken by a later round that reruns (its input is new) they would carry the old rows of this
# round's masks into the final table. (The working file has one name, forced or not: evaluate records it in the table.)
# In every case the files of other digests, and copies cut short, are removed only once the job
# has finished: a job that fails before (a CUDA request on a machine without a GPU) leaves the
# tables of the settings before.
set -eu
work_prefix=$1 shard=$2 output=$3 previous=$4 forced=$5
digests=$(sh "$(dirname "$0")/shard_digest.sh" "$6" "$7" "$8" "$9")
shift 9
newest=${digests%% *}
work=$work_prefix.$newest.work.parquet
finished=$shard.$newest.parquet
start=$previous
remeasured=$forced
if [ -n "$forced" ]; then
    # The working file is this forcing run's when WORK.<digest>.forced names the run; else it is
    # of before (a run killed before it was forced), removed. The finished tables stay.
    forcing=$work_prefix.$newest.forced
    if [ ! -e "$work" ] || [ "$(cat "$forcing" 2>/dev/null)" != "$forced" ]; then
        rm -f "$work"
        printf '%s\n' "$forced" > "$forcing"
    fi
else
    for digest in $digests; do
        if [ ! -e "$work" ] && [ -e "$work_prefix.$digest.work.parquet" ]; then
            mv "$work_prefix.$digest.work.parquet" "$work"
        fi
    done
    # A forced job's checkpoint (its marker still there: it failed, or was killed) holds rows
    # measured since the force: finished here, it is a re-measurement. (With no working file,
    # the finished table taken is the one the later rounds started from.)
    if [ -e "$work_prefix.$newest.forced" ] && [ -e "$work" ]; then remeasured=resumed; fi
    for digest in $digests; do
        if [ -e "$shard.$digest.parquet" ]; then start=$shard.$digest.parquet; break; fi
    done
fi
# Copied under another name and renamed, so that a copy cut short (a kill, a full disk) is never
# taken for a working file to resume.
if [ ! -e "$work" ] && [ -n "$start" ]; then
    cp "$start" "$work.copying"
    mv "$work.copying" "$work"
fi
"$@" --out "$work"
# The finished table is linked (no second copy on disk) before the move, so a kill between the
# two leaves it (the output is Snakemake's to remove).
mkdir -p "${shard%/*}"
if ! ln -f "$work" "$finished" 2>/dev/null; then
    cp "$work" "$finished.copying"
    mv "$finished.copying" "$finished"
fi
# A measurement since a force (this job's, or the forced checkpoint it resumed: a forced job that
# failed, finished by a run that does not force it) replaces the table this shard's later rounds
# started from: their files go here, before the move and before the marker goes, so that a job
# killed before they are gone leaves the marker and its checkpoint, and the run that finishes the
# shard removes them.
if [ -n "$remeasured" ]; then
    name=${shard##*/}           # r<round>-<I>-of-<N>
    round=${name%%-*}
    round=${round#r}
    rest=${name#*-}             # <I>-of-<N>
    for file in "${work_prefix%/*}"/.r*-"$rest".* "${shard%/*}"/r*-"$rest".*; do
        base=${file##*/}
        base=${base#.}
        base=${base#r}
        later=${base%%-*}
        case $later in '' | *[!0-9]*) continue ;; esac
        case $base in "$later-$rest".*) ;; *) continue ;; esac
        if [ "$later" -gt "$round" ]; then rm -f "$file"; fi
    done
fi
mv "$work" "$output"
for stale in "$work_prefix".*.work.parquet "$work_prefix".*.work.parquet.copying "$work_prefix".*.forced \
    "$shard".*.parquet*; do
    if [ "$stale" != "$finished" ]; then rm -f "$stale"; fi
done

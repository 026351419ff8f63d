#!/usr/bin/env bash
# The last device call of the GPU recipe (docs/benchmarks.md §5): gathers the onnxruntime-gpu
# part(s) this call carried into /tmp/ortparts (the earlier calls put the others there), checks
# them against build/gpu/ortgpu.manifest (gpu_prepare.sh; carried with the binaries), unpacks
# the library, and runs tools/bench/gpu_bench.py with its CSV, Markdown and JSON written straight
# into $OUT after every contender, so a call cut short still brings back what it measured. Settings by environment: T hard limit of the benchmark (s), B last shape start (s),
# D last contender start (s), ST limit of one stage (s; some four times the slowest contender,
# the 7B shape's first, so that one hanging on the device costs little), C the contenders to run besides the
# default (a regular expression; empty: all), C_<shape> those of one shape instead (the shape's
# key with '-' and '.' as '_', e.g. C_llama2_7b_bf16: gpu_bench.py --shape-contenders), SHAPES
# (gpu_bench.py --shapes), MASKS (--masks);
# then GPTQ with its calibration passes on CUDA against the CPU within G seconds (0: not run);
# then a race timed inside apply-prune (tools/bench/gpu_race.py) within R seconds (0: not run);
# then tools/bench/gpu_families.py within F seconds (0: not run). T + G + R + F and some 15 s of
# unpacking must fit the call (at most 600 s): the defaults are the recipe's, 330 + 60 + 60 + 110.
# DEV (cuda) is the device of all four; `DEV=cpu SHAPES=tiny GPTQ_SHAPE=tiny RACE_SHAPE=tiny` rehearses the
# whole call on a machine without a GPU (onnxruntime-gpu's library runs the CPU provider too),
# as `make rehearse-gpu` does with the recipe's own settings (tools/bench/gpu_recipe.py), so that
# a bug here or in the recipe costs no device time.
#
# What comes back: the device tool returns at most 8 files from $OUT (16 MiB each, named in
# letters, digits, '.', '_' and '-'), so this writes exactly these 8 and nothing else there:
# device.log (every step's output in order: the parts, the library, the GPU, the versions, the
# benchmark's log, GPTQ's, the race's, the families'; each step ends with a line "exit N (step)"),
# gpu-bench.csv, gpu-bench.md, gpu-bench.json, race.json, race.md, families.json, families.md.
# It ends with status 4 where $OUT holds more (a rehearsal then fails on what would be lost).
#
# SCRATCH (/tmp) holds the work folders (bench-gpu, race, families, gptq-1, gptq-2) and ORTPARTS
# (/tmp/ortparts, where build/gpu/unpack.sh reads the parts) the parts: both for tests only.
set -uo pipefail
DEV=${DEV:-cuda}
T=${T:-330} B=${B:-250} D=${D:-310} ST=${ST:-60} G=${G:-60} R=${R:-60} F=${F:-110}
SCRATCH=${SCRATCH:-/tmp}
ORTPARTS=${ORTPARTS:-/tmp/ortparts}
LOG=$OUT/device.log
STARTED=$(date +%s)
: > "$LOG"
# Appends its input to device.log and shows it.
log() { tee -a "$LOG"; }
step() { echo "[device_run $(( $(date +%s) - STARTED )) s] $*" | log; }
if [ $(( T + G + R + F + 15 )) -gt 600 ]; then
  echo "note: T + G + R + F + 15 s of unpacking = $(( T + G + R + F + 15 )) s, over a device call's 600 s:" \
    "on a device the last steps would be cut" | log
fi

step "gathering onnxruntime-gpu's parts in $ORTPARTS"
# The parts this call carried, if any (the last call may carry only the binaries).
mkdir -p "$ORTPARTS" && { ! compgen -G "build/gpu/ortgpu.part-*" >/dev/null || cp build/gpu/ortgpu.part-* "$ORTPARTS/"; }
ls -la "$ORTPARTS" 2>&1 | log
# Every part of the bundle, as build/gpu/ortgpu.manifest (gpu_prepare.sh; the last call carries
# it) names them with their sizes: a machine given back between the calls (it stays warm 30 s)
# keeps only what this call carried, and the parts found alone cannot tell that the highest one
# is missing (the last call's, where it did not carry it) or that one was cut short; unpacking
# would then fail on a truncated stream. Every such part is named here, before any step.
manifest=build/gpu/ortgpu.manifest
if [ ! -f "$manifest" ]; then
  echo "no $manifest: gpu_prepare.sh writes it beside the parts, and the last call carries it" \
    "(docs/benchmarks.md §5); without it the parts missing here cannot be told" | log
  echo "exit 3 (unpack)" | log
  exit 3
fi
expected=() missing="" resized="" unreadable=""
while read -r name size rest; do
  [ -z "$name" ] && continue
  if ! [[ $name =~ ^ortgpu\.part-[0-9]+$ && $size =~ ^[0-9]+$ && -z $rest ]]; then
    unreadable="$unreadable '$name $size $rest'"
    continue
  fi
  expected+=("$name")
  if [ ! -f "$ORTPARTS/$name" ]; then
    missing="$missing $name"
  elif [ "$(stat -c %s "$ORTPARTS/$name")" != "$size" ]; then
    resized="$resized $name ($(stat -c %s "$ORTPARTS/$name") bytes, not $size)"
  fi
done < "$manifest"
# A part the bundle does not have (an earlier gpu_prepare.sh's, split otherwise, on a machine kept
# warm) would be joined into the stream by unpack.sh (it reads every ortgpu.part-*): removed.
for path in "$ORTPARTS"/ortgpu.part-*; do
  [ -e "$path" ] || continue
  if [[ " ${expected[*]} " != *" ${path##*/} "* ]]; then
    echo "removed ${path##*/} from $ORTPARTS: not one of the bundle's parts ($manifest)" | log
    rm -f "$path"
  fi
done
if [ ${#expected[@]} = 0 ] || [ -n "$missing$resized$unreadable" ]; then
  bundle="the bundle has ${#expected[@]} ($manifest${unreadable:+, unreadable lines:$unreadable})"
  echo "onnxruntime-gpu's parts incomplete in $ORTPARTS: $bundle${missing:+; missing:$missing}${resized:+; of another size:$resized}:" \
    "the machine was given back between the calls (it stays warm 30 s after one), a call was skipped" \
    "or its part was not the one gpu_prepare.sh wrote last; send every part again, back to back" \
    "(gpu_prepare.sh printed the calls)" | log
  echo "exit 3 (unpack)" | log
  exit 3
fi
# unpack.sh prints the variables to export; where it fails it prints none, and an ORT_DYLIB_PATH
# from the caller's environment (a rehearsal's CPU library) must not stand in for it.
unset ORT_DYLIB_PATH
exports=$(bash build/gpu/unpack.sh 2>>"$LOG") || {
  echo "unpacking onnxruntime-gpu failed (build/gpu/unpack.sh, the parts in $ORTPARTS)" | log
  echo "exit 3 (unpack)" | log
  exit 3
}
eval "$exports"
if [ -z "${ORT_DYLIB_PATH:-}" ] || [ ! -f "$ORT_DYLIB_PATH" ]; then
  echo "build/gpu/unpack.sh named no onnxruntime library (ORT_DYLIB_PATH='${ORT_DYLIB_PATH:-}')" | log
  echo "exit 3 (unpack)" | log
  exit 3
fi
# The stage binaries gpu_prepare.sh packed (with Python's lzma, as unpack.sh: the host may lack xz).
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
  build/gpu/bin.tar.xz build/gpu/bin 2>&1 | log
if [ "${PIPESTATUS[0]}" != 0 ]; then
  echo "unpacking the stage binaries failed (build/gpu/bin.tar.xz)" | log
  echo "exit 3 (unpack)" | log
  exit 3
fi
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH" | log
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | log
python3 -c "import torch, transformers, onnx; print(torch.__version__, transformers.__version__, onnx.__version__)" \
  2>&1 | log
export PYTHONUNBUFFERED=1

step "gpu_bench.py within T=$T s"
# Each C_<shape> as gpu_bench.py's --shape-contenders (which refuses a name that is no shape's):
# the lowercase names only, as the shapes' keys are, so that a host's own C_INCLUDE_PATH, say, is
# not taken for one.
shape_picks=()
for name in $(compgen -v C_ || true); do
  [[ $name =~ ^C_[a-z0-9_]+$ ]] && shape_picks+=(--shape-contenders "${name#C_}=${!name}")
done
timeout "$T" python3 tools/bench/gpu_bench.py --bin build/gpu/bin --device "$DEV" \
  --shapes "${SHAPES:-gpu}" --work "$SCRATCH/bench-gpu" \
  --csv "$OUT/gpu-bench.csv" --markdown "$OUT/gpu-bench.md" --json "$OUT/gpu-bench.json" \
  --budget-seconds "$B" --deadline-seconds "$D" --stage-timeout "$ST" --masks "${MASKS:-50}" \
  --contenders "${C:-}" "${shape_picks[@]}" 2>&1 | log
echo "exit ${PIPESTATUS[0]} (gpu_bench)" | log

# Then `quantize --method gptq` on the 135M fp32 shape the bench exported (GPTQ_SHAPE), its
# calibration passes (and the block graphs' own second-moment GEMMs, TF32 off) on DEV and on the
# CPU: the times, and each quantized model's NLL on the bench tokens through the CPU provider.
W=$SCRATCH/bench-gpu/${GPTQ_SHAPE:-smollm2-135m-fp32}
if [ "$G" != 0 ] && [ -f "$W/model/manifest.json" ]; then
  step "GPTQ within G=$G s"
  timeout "$G" bash -c '
    W=$1 DEV=$2 SCRATCH=$3
    mask=$(python3 -c "import json,sys; print(\"1\" * json.load(open(sys.argv[1]))[\"num_blocks\"])" "$W/model/manifest.json")
    # Each run its own folder and table (a rehearsal runs the CPU twice). A run that fails
    # does not stop the other, but the step exits 1: the loop alone exited with its last pass,
    # and a GPTQ on the device that failed logged "exit 0".
    failed=0
    for run in "1 $DEV" "2 cpu"; do
      set -- $run
      device=$2 q=$SCRATCH/gptq-$1
      start=$(date +%s%N)
      build/gpu/bin/quantize --model "$W/model" --out "$q" --scheme int4 --method gptq \
        --tokens "$W/tokens.parquet" --device "$device" --overwrite \
        || { echo "quantize --device $device failed"; failed=1; continue; }
      echo "gptq --device $device: $(( ($(date +%s%N) - start) / 1000000 )) ms"
      rm -f "$q.parquet"
      build/gpu/bin/evaluate --model "$q" --tokens "$W/tokens.parquet" --mask "$mask" \
        --out "$q.parquet" --quiet || { echo "evaluate of the --device $device model failed"; failed=1; }
    done
    exit $failed' _ "$W" "$DEV" "$SCRATCH" 2>&1 | log
  echo "exit ${PIPESTATUS[0]} (gptq)" | log
elif [ "$G" != 0 ]; then
  echo "no $W/model: the bench did not export the ${GPTQ_SHAPE:-smollm2-135m-fp32} shape (SHAPES), GPTQ not run" | log
fi

# Then a race timed inside apply-prune (tools/bench/gpu_race.py): adaptive removal raced over the
# calibration windows and not, k = RACE_K (6), two budgets each, on RACE_SHAPE's folder from the
# benchmark (its fused one where there is one; a shape of distinct blocks: the 1.1B and 7B shapes
# are one block repeated, where a race has nothing to drop), seconds per counted LLM evaluation of
# each; R bounds it (s; a fifth of it the warm-up and each apply-prune), 0 skips it.
if [ "$R" != 0 ]; then
  step "gpu_race.py within R=$R s"
  timeout "$R" python3 tools/bench/gpu_race.py --bin build/gpu/bin --device "$DEV" \
    --bench-shape "$SCRATCH/bench-gpu/${RACE_SHAPE:-smollm2-135m-fp32}" --k "${RACE_K:-6}" --work "$SCRATCH/race" \
    --json "$OUT/race.json" --markdown "$OUT/race.md" --timeout "$(( R / 5 ))" 2>&1 | log
  echo "exit ${PIPESTATUS[0]} (gpu_race)" | log
fi

# Then fused attention on DEV for every architecture that has it (tiny models, bf16 — fp16 on the
# CPU, whose provider has no bf16 node — against float32 on the CPU; about 5 s each): F bounds it
# (s), 0 skips it; no fixture starts in its last 25 s.
if [ "$F" != 0 ]; then
  step "gpu_families.py within F=$F s"
  dtype=bf16
  [ "$DEV" = cpu ] && dtype=fp16
  deadline=$(( F > 26 ? F - 25 : 1 ))
  timeout "$F" python3 tools/bench/gpu_families.py --bin build/gpu/bin --device "$DEV" --dtype "$dtype" \
    --work "$SCRATCH/families" --json "$OUT/families.json" --markdown "$OUT/families.md" \
    --deadline-seconds "$deadline" 2>&1 | log
  echo "exit ${PIPESTATUS[0]} (gpu_families)" | log
fi
step "done"

# What the device tool would leave behind (at most 8 files come back).
count=$(find "$OUT" -type f | wc -l)
odd=$(find "$OUT" -mindepth 1 | sed "s|^$OUT/||" | grep -v '^[A-Za-z0-9._-]*$' || true)
if [ "$count" -gt 8 ] || [ -n "$odd" ]; then
  echo "\$OUT holds $count files ($(find "$OUT" -type f -printf '%f ')) ${odd:+and names the device tool refuses ($odd)}:" \
    "the device tool brings back at most 8, named in letters, digits, '.', '_' and '-'" | log
  exit 4
fi

#!/usr/bin/env bash
# The last device call of the GPU recipe (docs/benchmarks.md §5): gathers the onnxruntime-gpu
# part(s) this call carried into /tmp/ortparts (the earlier calls put the others there),
# unpacks the library, and runs tools/bench/gpu_bench.py with its CSV, Markdown and JSON written
# straight into $OUT after every contender, so a call cut short still brings back what it
# measured. Settings by environment: T hard limit of the benchmark (s), B last shape start (s),
# D last contender start (s), ST limit of one stage (s), C the contenders to run besides the
# default (a regular expression; empty: all), SHAPES (gpu_bench.py --shapes), MASKS (--masks);
# then GPTQ with its calibration passes on CUDA against the CPU within G seconds (0: not run);
# then a race timed inside apply-prune (tools/bench/gpu_race.py) within R seconds (0: not run);
# then tools/bench/gpu_families.py within F seconds (0: not run). T + G + R + F must fit the call.
# DEV (cuda) is the device of all four; `DEV=cpu SHAPES=tiny GPTQ_SHAPE=tiny RACE_SHAPE=tiny` rehearses the
# whole call on a machine without a GPU (onnxruntime-gpu's library runs the CPU provider too),
# as `make rehearse-gpu` does, so that a bug here costs no device time.
set -uo pipefail
DEV=${DEV:-cuda}
# The parts this call carried, if any (the last call may carry only the binaries).
mkdir -p /tmp/ortparts && { ! compgen -G "build/gpu/ortgpu.part-*" >/dev/null || cp build/gpu/ortgpu.part-* /tmp/ortparts/; }
ls -la /tmp/ortparts > "$OUT/parts.txt"
eval "$(bash build/gpu/unpack.sh)" || { echo "unpacking onnxruntime-gpu failed"; exit 3; }
# The stage binaries gpu_prepare.sh packed (with Python's lzma, as unpack.sh: the host may lack xz).
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
  build/gpu/bin.tar.xz build/gpu/bin || { echo "unpacking the stage binaries failed"; exit 3; }
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH" | tee -a "$OUT/parts.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >> "$OUT/parts.txt" 2>&1
python3 -c "import torch, transformers, onnx; print(torch.__version__, transformers.__version__, onnx.__version__)" \
  >> "$OUT/parts.txt" 2>&1
export PYTHONUNBUFFERED=1
timeout "${T:-480}" python3 tools/bench/gpu_bench.py --bin build/gpu/bin --device "$DEV" \
  --shapes "${SHAPES:-gpu}" --work /tmp/bench-gpu \
  --csv "$OUT/gpu-bench.csv" --markdown "$OUT/gpu-bench.md" --json "$OUT/gpu-bench.json" \
  --budget-seconds "${B:-290}" --deadline-seconds "${D:-420}" --stage-timeout "${ST:-120}" --masks "${MASKS:-50}" \
  --contenders "${C:-}" 2>&1 | tee "$OUT/bench-gpu.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/bench-gpu.log"
# Then `quantize --method gptq` on the 135M fp32 shape the bench exported (GPTQ_SHAPE), its
# calibration passes (and the block graphs' own second-moment GEMMs, TF32 off) on DEV and on the
# CPU: the times, and each quantized model's NLL on the bench tokens through the CPU provider.
# G bounds it (s, 90).
W=/tmp/bench-gpu/${GPTQ_SHAPE:-smollm2-135m-fp32}
if [ "${G:-90}" != 0 ] && [ -f "$W/model/manifest.json" ]; then
  timeout "${G:-90}" bash -c '
    W=$1 DEV=$2
    mask=$(python3 -c "import json,sys; print(\"1\" * json.load(open(sys.argv[1]))[\"num_blocks\"])" "$W/model/manifest.json")
    # Each run its own folder and table (a rehearsal runs the CPU twice).
    for run in "1 $DEV" "2 cpu"; do
      set -- $run
      device=$2 q=/tmp/gptq-$1
      start=$(date +%s%N)
      build/gpu/bin/quantize --model "$W/model" --out "$q" --scheme int4 --method gptq \
        --tokens "$W/tokens.parquet" --device "$device" --overwrite || { echo "quantize --device $device failed"; continue; }
      echo "gptq --device $device: $(( ($(date +%s%N) - start) / 1000000 )) ms"
      rm -f "$q.parquet"
      build/gpu/bin/evaluate --model "$q" --tokens "$W/tokens.parquet" --mask "$mask" \
        --out "$q.parquet" --quiet || echo "evaluate of the --device $device model failed"
    done' _ "$W" "$DEV" 2>&1 | tee "$OUT/gptq.log"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/gptq.log"
elif [ "${G:-90}" != 0 ]; then
  echo "no $W/model: the bench did not export the ${GPTQ_SHAPE:-smollm2-135m-fp32} shape (SHAPES), GPTQ not run" | tee "$OUT/gptq.log"
fi

# Then a race timed inside apply-prune (tools/bench/gpu_race.py): adaptive removal raced over the
# calibration windows and not, k = RACE_K (6), two budgets each, on RACE_SHAPE's folder from the
# benchmark (its fused one where there is one; a shape of distinct blocks: the 1.1B and 7B shapes
# are one block repeated, where a race has nothing to drop), seconds per counted LLM evaluation of
# each; R bounds it (s, 60; a fifth of it each apply-prune), 0 skips it.
if [ "${R:-60}" != 0 ]; then
  timeout "${R:-60}" python3 tools/bench/gpu_race.py --bin build/gpu/bin --device "$DEV" \
    --bench-shape "/tmp/bench-gpu/${RACE_SHAPE:-smollm2-135m-fp32}" --k "${RACE_K:-6}" --work /tmp/race \
    --json "$OUT/race.json" --markdown "$OUT/race.md" --timeout "$(( ${R:-60} / 5 ))" 2>&1 | tee "$OUT/race.log"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/race.log"
fi

# Then fused attention on DEV for every architecture that has it (tiny models, bf16 — fp16 on the
# CPU, whose provider has no bf16 node — against float32 on the CPU; about 5 s each): F bounds it
# (s, 200), 0 skips it.
if [ "${F:-200}" != 0 ]; then
  dtype=bf16
  [ "$DEV" = cpu ] && dtype=fp16
  timeout "${F:-200}" python3 tools/bench/gpu_families.py --bin build/gpu/bin --device "$DEV" --dtype "$dtype" \
    --work /tmp/families --json "$OUT/families.json" --markdown "$OUT/families.md" \
    --deadline-seconds "$(( ${F:-200} - 25 ))" 2>&1 | tee "$OUT/families.log"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/families.log"
fi

#!/usr/bin/env bash
# Everything the GPU recipe (docs/benchmarks.md §5) needs before its first device call, from the
# project root: the three stage binaries stripped into build/gpu/bin, and onnxruntime-gpu's
# libraries (../shared/tools/gpu-bundle) as 58 MiB parts build/gpu/ortgpu.part-0 … part-3, so
# that three calls carry a part each and the fourth the last part with the binaries, each under
# the device tool's 64 MiB with the 4 MB working tree.
set -euo pipefail
cargo build -p prepare-tokens -p sample-masks -p evaluate
mkdir -p build/gpu/bin
for stage in prepare-tokens sample-masks evaluate; do
  strip -o "build/gpu/bin/$stage" "target/debug/$stage"
done
if [ ! -f build/gpu/unpack.sh ] || ! ls build/gpu/ortgpu.part-* >/dev/null 2>&1; then
  ../shared/tools/gpu-bundle build/gpu
fi
joined=$(mktemp)
trap 'rm -f "$joined"' EXIT
cat build/gpu/ortgpu.part-* > "$joined"
rm -f build/gpu/ortgpu.part-*
split -b 58m -d -a 1 "$joined" build/gpu/ortgpu.part-
ls -la build/gpu build/gpu/bin

#!/usr/bin/env bash
# Everything the GPU recipe (docs/benchmarks.md §5) needs before its first device call, from the
# project root: the four stage binaries it runs, stripped and packed into build/gpu/bin.tar.xz
# (13 MB; 60 MB unpacked), and onnxruntime-gpu's libraries (../shared/tools/gpu-bundle) as
# 58 MiB parts build/gpu/ortgpu.part-0 … part-3, so that three calls carry a part each and the
# fourth the last part with the binaries, each under the device tool's 64 MiB with the 4 MB
# working tree. gpu_device_run.sh unpacks the binaries into build/gpu/bin.
set -euo pipefail
stages="prepare-tokens sample-masks evaluate quantize"
cargo build $(printf -- '-p %s ' $stages)
staged=$(mktemp -d)
trap 'rm -rf "$staged"' EXIT
for stage in $stages; do
  strip -o "$staged/$stage" "target/debug/$stage"
done
mkdir -p build/gpu
rm -rf build/gpu/bin
tar -cJf build/gpu/bin.tar.xz -C "$staged" .
if [ ! -f build/gpu/unpack.sh ] || ! ls build/gpu/ortgpu.part-* >/dev/null 2>&1; then
  ../shared/tools/gpu-bundle build/gpu
fi
joined=$(mktemp)
trap 'rm -rf "$staged" "$joined"' EXIT
cat build/gpu/ortgpu.part-* > "$joined"
rm -f build/gpu/ortgpu.part-*
split -b 58m -d -a 1 "$joined" build/gpu/ortgpu.part-
ls -la build/gpu

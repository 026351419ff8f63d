#!/usr/bin/env bash
# Everything the GPU recipe (docs/benchmarks.md §5) needs before its first device call, from the
# project root: the five stage binaries it runs, stripped and packed into build/gpu/bin.tar.xz
# (about 17 MB; apply-prune joined the four of 13 MB for gpu_race.py), and onnxruntime-gpu's libraries (../shared/tools/gpu-bundle) as
# parts build/gpu/ortgpu.part-0, part-1, … for as few device calls as can carry them beside the
# working tree (the device tool sends the tree with every call, 64 MiB in all; the tree grew
# from 4 to 7 MB and a 58 MiB part no longer fitted, 2026-12-05), the load spread evenly over
# those calls so that each has a few MiB to spare: each call but the last carries a part and
# the last one the last part with the binaries and build/gpu/ortgpu.manifest (the parts' names
# and sizes, from which the device call names every part missing); it prints the calls.
# gpu_device_run.sh unpacks the binaries into build/gpu/bin.
set -euo pipefail
stages="prepare-tokens sample-masks evaluate quantize apply-prune"
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
# What every call sends besides its carried files: tracked and untracked-not-ignored files (a
# tracked file deleted in the tree counts nothing). Sized before the parts are touched, so that a
# refusal leaves them as they were.
mib=$((1024 * 1024))
call_bytes=$((64 * mib))
tree_bytes=$(git ls-files -z --cached --others --exclude-standard \
  | { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
# A MiB to spare for the call's own framing; at most 10 parts (split's one-digit suffixes).
max_mib=$(( (call_bytes - tree_bytes) / mib - 1 ))
bundle_bytes=$(cat build/gpu/ortgpu.part-* | wc -c)
if [ "$max_mib" -lt 1 ]; then
  echo "gpu_prepare: the working tree ($tree_bytes bytes) leaves no room in a device call of 64 MiB;" \
    "make the tree smaller" >&2
  exit 1
fi
# As few calls as carry the parts, the binaries and unpack.sh, their load spread evenly: each call
# then has a few MiB to spare beside the tree (which others' edits may grow between this and the
# calls; a part sized to the last MiB was refused in run 3), and the last one's part with the
# binaries is no larger than the others.
payload=$(( bundle_bytes + $(stat -c %s build/gpu/bin.tar.xz) + $(stat -c %s build/gpu/unpack.sh) ))
calls=$(( (payload + max_mib * mib - 1) / (max_mib * mib) ))
part_mib=$(( (payload + calls * mib - 1) / (calls * mib) ))
if [ $(( (bundle_bytes + part_mib * mib - 1) / (part_mib * mib) )) -gt 10 ]; then
  echo "gpu_prepare: the working tree ($tree_bytes bytes) leaves ${max_mib} MiB a device call: " \
    "onnxruntime-gpu ($bundle_bytes bytes) would need more than 10 parts; make the tree smaller" >&2
  exit 1
fi
joined=$(mktemp)
trap 'rm -rf "$staged" "$joined"' EXIT
cat build/gpu/ortgpu.part-* > "$joined"
rm -f build/gpu/ortgpu.part-* build/gpu/ortgpu.manifest
split -b "${part_mib}m" -d -a 1 "$joined" build/gpu/ortgpu.part-
# The bundle's parts, a line each with its size in bytes, carried by the last call: the parts
# found on the device cannot tell that the highest-numbered one (the last call's) is missing or
# that one was cut short, and gpu_device_run.sh names every such part from this before unpacking.
# (Its few bytes come out of the MiB each call keeps to spare; the last call's size below counts it.)
(cd build/gpu && for part in ortgpu.part-*; do echo "$part $(stat -c %s "$part")"; done) > build/gpu/ortgpu.manifest
ls -la build/gpu
parts=(build/gpu/ortgpu.part-*)
last=${parts[${#parts[@]} - 1]}
last_call=$(( $(stat -c %s "$last") + $(stat -c %s build/gpu/bin.tar.xz) + $(stat -c %s build/gpu/unpack.sh) \
  + $(stat -c %s build/gpu/ortgpu.manifest) ))
fits=$(( last_call + tree_bytes + mib <= call_bytes ))
echo "The device calls, back to back (working tree $((tree_bytes / 1024)) KiB, parts of $part_mib MiB):"
for part in "${parts[@]}"; do
  [ "$part" = "$last" ] && [ "$fits" = 1 ] && break
  # The listing shows at once a part lost with a machine given back between the calls.
  echo "  run carry=[$part]  command: mkdir -p /tmp/ortparts && cp $part /tmp/ortparts/ && ls -l /tmp/ortparts"
done
if [ "$fits" = 1 ]; then
  echo "  run carry=[$last, build/gpu/unpack.sh, build/gpu/bin.tar.xz, build/gpu/ortgpu.manifest]  command: … bash tools/bench/gpu_device_run.sh"
else
  # gpu_device_run.sh copies the parts it finds in build/gpu; /tmp/ortparts has them all.
  echo "  run carry=[build/gpu/unpack.sh, build/gpu/bin.tar.xz, build/gpu/ortgpu.manifest]  command: … bash tools/bench/gpu_device_run.sh"
fi

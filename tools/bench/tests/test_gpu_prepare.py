"""tools/bench/gpu_prepare.sh, what the GPU recipe's device calls carry, in a stand-in project
root: stand-in `cargo` and `strip` on PATH, stand-in stage binaries, a bundle already there (so
../shared/tools/gpu-bundle is not run) and a large sparse untracked file that leaves a device call
room for only a few MiB, so that the bundle is split into several parts. Needs no build and no
network.
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "bench" / "gpu_prepare.sh"
STAGES = ("prepare-tokens", "sample-masks", "evaluate", "quantize", "apply-prune")
MIB = 1024 * 1024


def test_the_parts_are_recorded_with_their_sizes_and_the_last_call_carries_the_record(tmp_path):
    """gpu_device_run.sh can name a missing part only from the bundle's own record of its parts:
    the parts found on the device cannot tell that the highest one is missing. gpu_prepare.sh
    writes build/gpu/ortgpu.manifest (each part and its size) as it splits the bundle, and the
    last call it prints carries it."""
    root = tmp_path / "root"
    (root / "target" / "debug").mkdir(parents=True)
    for stage in STAGES:
        (root / "target" / "debug" / stage).write_text(f"stand-in {stage}\n")
    gpu = root / "build" / "gpu"
    gpu.mkdir(parents=True)
    (gpu / "unpack.sh").write_text("echo unpack\n")
    (gpu / "ortgpu.part-0").write_bytes(os.urandom(5 * MIB))
    (root / ".gitignore").write_text("/build\n/target\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    # 60 MiB of tree (sparse: nothing written) leave a call 3 MiB: 5 MiB of bundle in 3 parts.
    with open(root / "large", "wb") as large:
        large.truncate(60 * MIB)
    tools = tmp_path / "path"
    tools.mkdir()
    (tools / "cargo").write_text("#!/bin/sh\nexit 0\n")
    (tools / "strip").write_text('#!/bin/sh\n# strip -o OUT IN\ncp "$3" "$2"\n')
    for tool in ("cargo", "strip"):
        (tools / tool).chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT)], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stdout + done.stderr
    parts = sorted(path.name for path in gpu.glob("ortgpu.part-*"))
    assert parts == ["ortgpu.part-0", "ortgpu.part-1", "ortgpu.part-2"], parts
    manifest = (gpu / "ortgpu.manifest").read_text().splitlines()
    assert manifest == [f"{part} {(gpu / part).stat().st_size}" for part in parts], manifest
    assert sum((gpu / part).stat().st_size for part in parts) == 5 * MIB
    (last_call,) = [line for line in done.stdout.splitlines() if "gpu_device_run.sh" in line]
    assert "carry=[build/gpu/ortgpu.part-2, build/gpu/unpack.sh, build/gpu/bin.tar.xz, " \
           "build/gpu/ortgpu.manifest]" in last_call, done.stdout

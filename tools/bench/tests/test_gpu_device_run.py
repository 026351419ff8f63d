"""tools/bench/gpu_device_run.sh, the GPU recipe's last device call, in a stand-in project root:
stub Python tools and stage binaries that only say what they were given and write the files they
are pointed at, a stand-in unpack.sh. What it checks is the call itself, which `make
rehearse-gpu` cannot: what the device tool brings back (at most 8 files from $OUT), the settings
that must fit a call of 600 s, and an unpacking that fails stopping the call rather than running
on another library. Needs no stage binary and no GPU.
"""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "bench" / "gpu_device_run.sh"
# What the device tool brings back from $OUT: at most this many files.
DEVICE_FILES = 8
EXPECTED = {"device.log", "gpu-bench.csv", "gpu-bench.md", "gpu-bench.json", "race.json", "race.md",
            "families.json", "families.md"}

STUB_TOOL = '''import json, os, sys
from pathlib import Path
name, args = Path(sys.argv[0]).name, sys.argv[1:]
print("stub", name, " ".join(args), flush=True)
value = lambda flag: args[args.index(flag) + 1] if flag in args else None
for flag in ("--csv", "--markdown", "--json"):
    if value(flag):
        Path(value(flag)).write_text(name + "\\n")
if name == "gpu_bench.py":
    shapes = value("--shapes")
    for key in ["smollm2-135m-fp32"] if shapes == "gpu" else shapes.split(","):
        model = Path(value("--work")) / key / "model"
        model.mkdir(parents=True, exist_ok=True)
        (model / "manifest.json").write_text(json.dumps({"num_blocks": 3}))
    if os.environ.get("STUB_EXTRA_OUT"):
        Path(os.environ["OUT"], "extra.log").write_text("one file too many")
if os.environ.get("STUB_FAIL") == name:
    sys.exit(1)
'''


def stand_in_root(tmp_path: Path, unpack_ok: bool = True, parts=("0",), bundle=None,
                  quantize_fails_on: str | None = None) -> Path:
    """`parts`: the parts this call carries; `bundle`: the parts the bundle has, as
    build/gpu/ortgpu.manifest lists them (gpu_prepare.sh), each of 4 bytes ("part"); default:
    those carried; False: no manifest. `quantize_fails_on`: a --device the stub quantize fails on."""
    root = tmp_path / "root"
    (root / "tools" / "bench").mkdir(parents=True)
    for name in ("gpu_bench.py", "gpu_race.py", "gpu_families.py"):
        (root / "tools" / "bench" / name).write_text(STUB_TOOL)
    gpu = root / "build" / "gpu"
    gpu.mkdir(parents=True)
    for part in parts:
        (gpu / f"ortgpu.part-{part}").write_text("part")
    if bundle is not False:
        (gpu / "ortgpu.manifest").write_text("".join(f"ortgpu.part-{part} 4\n" for part in bundle or parts))
    library = tmp_path / "libonnxruntime.so.stand-in"
    library.write_text("")
    (gpu / "unpack.sh").write_text(f'echo "export ORT_DYLIB_PATH={library}"\n' if unpack_ok
                                   else 'echo "lzma: corrupt input" >&2; exit 1\n')
    with tarfile.open(gpu / "bin.tar.xz", "w:xz") as tar:
        for stage in ("quantize", "evaluate"):
            fails = (f'case " $* " in *" --device {quantize_fails_on} "*) echo "no CUDA provider" >&2; exit 1;; esac\n'
                     if stage == "quantize" and quantize_fails_on else "")
            script = f'#!/bin/sh\n{fails}echo "stub {stage} $*"\n'.encode()
            info = tarfile.TarInfo(f"./{stage}")
            info.size, info.mode = len(script), 0o755
            tar.addfile(info, io.BytesIO(script))
    # `python3` is this interpreter (the stubs need nothing else).
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "python3").symlink_to(sys.executable)
    return root


def run_call(tmp_path: Path, root: Path, **settings):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in ("T", "B", "D", "ST", "G", "R", "F")}
    env.update(OUT=str(out), SCRATCH=str(tmp_path / "scratch"), ORTPARTS=str(tmp_path / "ortparts"),
               PATH=f"{tmp_path / 'path'}:{env['PATH']}", DEV="cuda", **settings)
    done = subprocess.run(["bash", str(SCRIPT)], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    log = (out / "device.log").read_text() if (out / "device.log").is_file() else ""
    return done, out, log


def test_the_call_writes_the_eight_files_the_device_tool_brings_back_and_its_defaults_fit_a_call(tmp_path):
    """Every step's output in device.log, its results beside it: 8 files, as many as come back
    (run 3's layout, a log a step, made 12). The defaults are the recipe's: T + G + R + F with the
    unpacking within a call's 600 s, the race's warm-up and runs a fifth of R each, the families'
    last start 25 s before F."""
    root = stand_in_root(tmp_path)
    done, out, log = run_call(tmp_path, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {path.name for path in out.iterdir()} == EXPECTED and len(EXPECTED) <= DEVICE_FILES
    assert "over a device call" not in log, log
    for step in ("gpu_bench", "gptq", "gpu_race", "gpu_families"):
        assert f"exit 0 ({step})" in log, log
    bench = next(line for line in log.splitlines() if line.startswith("stub gpu_bench.py"))
    # A stage's limit a few times the slowest contender's (~15 s: the 7B shape's first, verifying
    # its files): a contender hanging on the device costs 60 s of the bench, not 120.
    assert "--budget-seconds 250 --deadline-seconds 310 --stage-timeout 60" in bench, bench
    assert "--shape-contenders" not in bench, bench
    assert "--timeout 12" in next(line for line in log.splitlines() if line.startswith("stub gpu_race.py"))
    families = next(line for line in log.splitlines() if line.startswith("stub gpu_families.py"))
    assert "--dtype bf16" in families and "--deadline-seconds 85" in families, families
    # GPTQ on the device and then on the CPU, each quantized model evaluated.
    assert "gptq --device cuda: " in log and "gptq --device cpu: " in log, log
    assert log.count("stub evaluate --model") == 2, log
    assert (tmp_path / "ortparts" / "ortgpu.part-0").is_file()


def test_a_gptq_that_fails_on_the_device_fails_its_step_and_the_cpu_run_still_runs(tmp_path):
    """The loop's status was its last pass's, the CPU's: a GPTQ on CUDA that failed logged
    "exit 0 (gptq)", which gpu_recipe.py counts as a step that worked."""
    root = stand_in_root(tmp_path, quantize_fails_on="cuda")
    done, _, log = run_call(tmp_path, root)
    assert "quantize --device cuda failed" in log and "gptq --device cpu: " in log, log
    assert "exit 1 (gptq)" in log, log


def test_each_shapes_own_contenders_reach_the_bench_and_no_other_c_variable_does(tmp_path):
    """C_<shape> (the key with '-' and '.' as '_') becomes gpu_bench.py's --shape-contenders; an
    uppercase C_ variable of the host's (a compiler's C_INCLUDE_PATH) is not taken for one."""
    root = stand_in_root(tmp_path)
    done, out, log = run_call(tmp_path, root, C="fused", C_llama2_7b_bf16="graph-optimization basic|keep-exact",
                              C_INCLUDE_PATH="/usr/include")
    assert done.returncode == 0, done.stdout + done.stderr
    bench = next(line for line in log.splitlines() if line.startswith("stub gpu_bench.py"))
    assert "--contenders fused --shape-contenders llama2_7b_bf16=graph-optimization basic|keep-exact" in bench, bench
    assert "INCLUDE" not in bench, bench


def test_settings_over_a_call_are_said_and_a_ninth_file_fails_the_call(tmp_path):
    root = stand_in_root(tmp_path)
    done, out, log = run_call(tmp_path, root, T="480", G="90", R="60", F="200", STUB_EXTRA_OUT="1")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "845 s, over a device call's 600 s" in log, log
    assert "holds 9 files" in log and "at most 8" in log, log


def test_a_failed_unpacking_stops_the_call_without_running_another_library(tmp_path):
    """unpack.sh failing prints no variables; an ORT_DYLIB_PATH in the caller's environment (a
    rehearsal's CPU library) must not stand in for onnxruntime-gpu: the call stops, saying so."""
    root = stand_in_root(tmp_path, unpack_ok=False)
    inherited = tmp_path / "libonnxruntime-cpu.so"
    inherited.write_text("")
    done, out, log = run_call(tmp_path, root, ORT_DYLIB_PATH=str(inherited))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "unpacking onnxruntime-gpu failed" in log and "lzma: corrupt input" in log, log
    assert "stub gpu_bench.py" not in log and not (out / "gpu-bench.csv").exists(), log


def test_parts_missing_from_earlier_calls_are_named(tmp_path):
    """The machine given back between the calls keeps only what the last call carried: the call
    stops naming the missing parts, before unpacking."""
    root = stand_in_root(tmp_path, parts=("3",), bundle=("0", "1", "2", "3"))
    (tmp_path / "ortparts").mkdir()
    (tmp_path / "ortparts" / "ortgpu.part-1").write_text("part")
    done, out, log = run_call(tmp_path, root)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "missing: ortgpu.part-0 ortgpu.part-2" in log, log
    assert "stub gpu_bench.py" not in log, log


def test_the_last_part_missing_is_named_from_the_bundles_manifest(tmp_path):
    """The last call not carrying the highest part (parts 0-2 from the earlier calls in
    /tmp/ortparts, nothing carried): the parts found have no gap, and only the bundle's manifest
    says there is a part 3. The call stops naming it, before unpacking (which would have failed on
    a truncated stream, without saying which part)."""
    root = stand_in_root(tmp_path, parts=(), bundle=("0", "1", "2", "3"))
    (tmp_path / "ortparts").mkdir()
    for part in "012":
        (tmp_path / "ortparts" / f"ortgpu.part-{part}").write_text("part")
    done, out, log = run_call(tmp_path, root)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the bundle has 4 (build/gpu/ortgpu.manifest); missing: ortgpu.part-3:" in log, log
    assert "exit 3 (unpack)" in log and "stub gpu_bench.py" not in log, log


def test_a_part_cut_short_is_named_and_one_not_the_bundles_is_removed(tmp_path):
    """A part of another size than the manifest's (a copy cut short, or an earlier bundle's) is
    named before unpacking; a part the bundle does not have (an earlier, longer split's on a machine
    kept warm) would be joined into the stream by unpack.sh: it is removed, and the call goes on."""
    root = stand_in_root(tmp_path, parts=("1",), bundle=("0", "1"))
    (tmp_path / "ortparts").mkdir()
    (tmp_path / "ortparts" / "ortgpu.part-0").write_text("pa")
    (tmp_path / "ortparts" / "ortgpu.part-2").write_text("part")
    done, out, log = run_call(tmp_path, root)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "of another size: ortgpu.part-0 (2 bytes, not 4)" in log and "missing" not in log, log
    assert "removed ortgpu.part-2" in log and not (tmp_path / "ortparts" / "ortgpu.part-2").exists(), log
    # The short part sent again: the call unpacks and runs.
    (tmp_path / "ortparts" / "ortgpu.part-0").write_text("part")
    done, out, log = run_call(tmp_path, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit 0 (gpu_bench)" in log, log


def test_a_call_without_the_manifest_stops_saying_so(tmp_path):
    """Without gpu_prepare.sh's manifest (not carried) the parts missing cannot be told: the call
    stops at once rather than unpacking what happens to be there."""
    root = stand_in_root(tmp_path, bundle=False)
    done, out, log = run_call(tmp_path, root)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no build/gpu/ortgpu.manifest" in log and "stub gpu_bench.py" not in log, log


# The device tool's longest command line.
DEVICE_COMMAND_CHARS = 2000


def recipe_command():
    """docs/benchmarks.md §5's last device call: its settings (NAME=value before `bash`)."""
    import shlex

    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    (line,) = [line for line in docs.splitlines() if "command:" in line and "gpu_device_run.sh" in line]
    command = line.split("command:", 1)[1].strip()
    assert len(command) <= DEVICE_COMMAND_CHARS, len(command)
    words = shlex.split(command)
    return dict(word.split("=", 1) for word in words[:words.index("bash")])


def test_the_recipes_command_fits_a_call_and_sets_only_what_the_script_reads():
    """docs/benchmarks.md §5's last device call: every setting it makes is one gpu_device_run.sh
    reads (a misspelt one would fall back to its default on the device; a C_<shape> must name a
    shape it benchmarks, or gpu_bench.py refuses it there), T + G + R + F with the unpacking fit a
    call of 600 s, the benchmark's own limits lie inside T, its shapes and contenders exist, and
    it benchmarks the shape GPTQ and the race work on."""
    import argparse
    import re

    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    settings = recipe_command()
    script = SCRIPT.read_text()
    read = set(re.findall(r"\$\{(\w+):-", script))
    shapes = settings["SHAPES"].split(",")
    per_shape = {name: value for name, value in settings.items() if name.startswith("C_")}
    assert set(settings) - set(per_shape) <= read, set(settings) - set(per_shape) - read
    picks = gpu_bench.shape_picks([f"{name[2:]}={value}" for name, value in per_shape.items()])
    assert set(picks) <= set(shapes), (set(picks), shapes)
    limit = {name: int(settings.get(name, re.search(rf"\b{name}=\${{{name}:-(\d+)\}}", script).group(1)))
             for name in ("T", "B", "D", "G", "R", "F")}
    assert limit["T"] + limit["G"] + limit["R"] + limit["F"] + 15 <= 600, limit
    assert limit["B"] < limit["D"] < limit["T"], limit
    assert set(shapes) <= set(gpu_bench.SHAPES) and "smollm2-135m-fp32" in shapes, shapes
    args = argparse.Namespace(device="cuda", contenders=settings["C"], shape_contenders=picks)
    for key in shapes:
        names = [c.name for c in gpu_bench.picked_contenders(args, key)]
        assert names[0] == "evaluate" and len(names) > 1, key


def test_the_recipe_measures_the_missed_target_first():
    """The 1.1B shape's 3x against PyTorch, the one speed target missed (run 3: 2.74x with fused
    attention alone), rests on fused attention with masks batched: its shape is the first, and
    its first contenders after the default are fused attention alone and with 4 and 8 masks a
    call, so that nothing the recipe runs before them can cost the call their rows."""
    import argparse

    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    settings = recipe_command()
    per_shape = [f"{name[2:]}={value}" for name, value in settings.items() if name.startswith("C_")]
    args = argparse.Namespace(device="cuda", contenders=settings["C"], shape_contenders=gpu_bench.shape_picks(per_shape))
    assert settings["SHAPES"].split(",")[0] == "tinyllama-1.1b-fp16"
    names = [c.name for c in gpu_bench.picked_contenders(args, "tinyllama-1.1b-fp16")]
    fused = "fused attention (export --attention-kernel fused)"
    assert names[:4] == ["evaluate", f"evaluate, {fused}", f"evaluate --mask-batch 4, {fused}",
                         f"evaluate --mask-batch 8, {fused}"], names

"""tools/bench/gpu_recipe.py and `make rehearse-gpu`: the rehearsal runs the recipe's own last
device call (docs/benchmarks.md §5), changed only in the device and the shapes, so that a pattern
or a budget wrong in the recipe shows up on the CPU. The call itself runs in the stand-in project
root of test_gpu_device_run (stub tools and stage binaries). Needs no stage binary and no GPU.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_gpu_device_run import recipe_command, stand_in_root

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "tools" / "bench" / "gpu_recipe.py"
sys.path.insert(0, str(RECIPE.parent))
import gpu_recipe  # noqa: E402

# What the rehearsal may set on its own: where the CPU must differ from the device.
SCALED = {"DEV", "SHAPES", "GPTQ_SHAPE", "RACE_SHAPE", "RACE_K"}


def test_make_rehearse_gpu_sets_none_of_the_recipes_settings_itself():
    """Its device call runs gpu_recipe.py, which reads them from the docs' command: settings of
    its own (before: T=300 G=120 R=120 F=300, over a device call, and no C at all) would rehearse
    another call than the recipe's."""
    done = subprocess.run(["make", "-n", "rehearse-gpu"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    call = done.stdout.split("mkdir -p build/rehearse-gpu", 1)[1]
    assert "tools/bench/gpu_recipe.py rehearse" in call, call
    assert "gpu_device_run.sh" not in call, call
    settings = set(gpu_recipe.script_defaults()) | {"C"}
    assert not [word for word in re.findall(r"\b(\w+)=", call) if word in settings or word.startswith("C_")], call


def rehearse(tmp_path, root, docs=gpu_recipe.DOCS, **env):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    environment = {key: value for key, value in os.environ.items()
                   if key not in gpu_recipe.script_defaults() and key != "C"}
    environment.update(OUT=str(out), SCRATCH=str(tmp_path / "scratch"), ORTPARTS=str(tmp_path / "ortparts"),
                       PATH=f"{tmp_path / 'path'}:{os.environ['PATH']}", **env)
    done = subprocess.run([sys.executable, str(RECIPE), "rehearse", "--docs", str(docs)], cwd=root,
                          env=environment, capture_output=True, text=True, timeout=180)
    log = (out / "device.log").read_text() if (out / "device.log").is_file() else ""
    return done, log


def test_the_rehearsal_runs_the_recipes_budgets_and_contenders_on_tiny_shapes(tmp_path):
    """The docs' T, B, D, G, R, F, MASKS and C reach the steps as the device would get them; the
    recipe's shapes become the tiny ones of their dtypes (the 1.1B fp16 shape first: tiny-fp16
    with its contenders; the 135M fp32 one: tiny with its), GPTQ and the race run on the fp32
    one's stand-in with k scaled to its 8 blocks, and the call fits a device call."""
    recipe = recipe_command()
    limit = {name: recipe.get(name) or gpu_recipe.script_defaults()[name] for name in ("T", "B", "D", "ST", "F", "R")}
    root = stand_in_root(tmp_path)
    # A host's own C_ variable is not taken for one of the recipe's.
    done, log = rehearse(tmp_path, root, C_tiny="stale")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "over a device call" not in log, log
    for step in ("gpu_bench", "gptq", "gpu_race", "gpu_families"):
        assert f"exit 0 ({step})" in done.stdout, done.stdout
    bench = next(line for line in log.splitlines() if line.startswith("stub gpu_bench.py"))
    assert "--device cpu --shapes tiny-fp16,tiny " in bench, bench
    assert (f"--budget-seconds {limit['B']} --deadline-seconds {limit['D']} --stage-timeout {limit['ST']} "
            f"--masks {recipe['MASKS']} --contenders {recipe['C']} ") in bench, bench
    assert f"--shape-contenders tiny_fp16={recipe['C_tinyllama_1_1b_fp16']}" in bench, bench
    assert f"--shape-contenders tiny={recipe['C_smollm2_135m_fp32']}" in bench, bench
    assert "stale" not in bench, bench
    # The recipe's own C_<shape> go along, for gpu_bench.py to check as on the device.
    assert f"--shape-contenders llama2_7b_bf16={recipe['C_llama2_7b_bf16']}" in bench, bench
    assert f"gpu_bench.py within T={limit['T']} s" in log, log
    assert "gptq --device cpu: " in log, log
    race = next(line for line in log.splitlines() if line.startswith("stub gpu_race.py"))
    assert f"--device cpu --bench-shape {tmp_path / 'scratch'}/bench-gpu/tiny --k 2 " in race, race
    assert f"--timeout {int(limit['R']) // 5}" in race, race
    families = next(line for line in log.splitlines() if line.startswith("stub gpu_families.py"))
    assert "--device cpu --dtype fp16" in families and f"--deadline-seconds {int(limit['F']) - 25}" in families


def recipe_docs(tmp_path, command: str) -> Path:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"run carry=[build/gpu/ortgpu.part-3]  timeout_s=600\n    command: {command}\n")
    return docs


def test_a_recipe_over_a_device_call_or_a_failing_step_fails_the_rehearsal(tmp_path):
    root = stand_in_root(tmp_path)
    docs = recipe_docs(tmp_path, "SHAPES=smollm2-135m-fp32 T=480 G=90 F=200 bash tools/bench/gpu_device_run.sh")
    done, log = rehearse(tmp_path, root, docs=docs)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "over a device call's 600 s" in done.stderr, done.stderr
    docs = recipe_docs(tmp_path, "SHAPES=smollm2-135m-fp32 bash tools/bench/gpu_device_run.sh")
    done, log = rehearse(tmp_path, root, docs=docs, STUB_FAIL="gpu_race.py")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "exit 1 (gpu_race)" in done.stderr, done.stderr


def test_the_stand_in_shapes_and_their_contenders(tmp_path):
    """The first shape of a dtype gives its stand-in its contenders: its own C_<shape>, or C's
    (no C_ for the stand-in); bf16 stands as fp16; `gpu` is the four GPU shapes; a race shape the
    recipe does not benchmark is left as it is (the step then says so, as it would on the device)."""
    settings = gpu_recipe.script_defaults()
    rehearsal = gpu_recipe.rehearsal_settings({**settings, "SHAPES": "llama2-7b-bf16,smollm2-135m-fp16",
                                               "C_smollm2_135m_fp16": "fused", "RACE_SHAPE": "smollm2-135m-fp32"})
    assert rehearsal["SHAPES"] == "tiny-fp16" and "C_tiny_fp16" not in rehearsal, rehearsal
    assert rehearsal["RACE_SHAPE"] == "smollm2-135m-fp32" and rehearsal["RACE_K"] == "6", rehearsal
    assert rehearsal["GPTQ_SHAPE"] == "smollm2-135m-fp32" and rehearsal["DEV"] == "cpu"
    rehearsal = gpu_recipe.rehearsal_settings({**settings, "SHAPES": "gpu"})
    assert rehearsal["SHAPES"] == "tiny,tiny-fp16" and rehearsal["RACE_K"] == "2", rehearsal
    assert {name for name in rehearsal if rehearsal[name] != settings.get(name)} <= SCALED, rehearsal


def test_a_command_the_rehearsal_cannot_read_is_refused(tmp_path):
    """A setting gpu_device_run.sh does not read (misspelt: the device would run its default) or a
    command that is not settings and the script: no rehearsal of another call."""
    with pytest.raises(ValueError, match="MASK, which"):
        gpu_recipe.recipe_settings(recipe_docs(tmp_path, "MASK=100 bash tools/bench/gpu_device_run.sh"))
    with pytest.raises(ValueError, match="not NAME=value"):
        gpu_recipe.recipe_settings(recipe_docs(tmp_path, "T=300 bash tools/bench/gpu_device_run.sh --fast"))

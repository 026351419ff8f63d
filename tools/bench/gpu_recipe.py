"""The GPU recipe's last device call (docs/benchmarks.md §5) as settings, and that call rehearsed
on the CPU (`make rehearse-gpu`).

The docs' command (`command: NAME=value … bash tools/bench/gpu_device_run.sh`) is the one place
that holds the recipe's settings; tools/bench/gpu_device_run.sh's defaults fill in what it does
not set. The rehearsal runs exactly those settings, changed only where the CPU must differ: the
device (`DEV=cpu`) and the shapes. Each of the recipe's shapes stands as gpu_bench.py's tiny shape
of its dtype (`tiny` for fp32, `tiny-fp16` for fp16 and bf16: the CPU provider has no bf16
kernels), in the recipe's order, the first shape of each dtype giving its stand-in its contenders
(its `C_<shape>` as the stand-in's, or `C`); the recipe's `C_<shape>` are passed on as they are too,
so gpu_bench.py refuses there what it would refuse on the device (a name that is no shape's, a
pattern that does not compile). GPTQ's and the race's shapes are the stand-ins of theirs, and the
race's k is scaled to the stand-in's blocks. The budgets (T, B, D, ST, G, R, F), MASKS and C are
the recipe's: a call over 600 s, or a step that fails, fails the rehearsal.

Usage: python tools/bench/gpu_recipe.py settings     (the recipe's last call, NAME=value a line)
       OUT=DIR python tools/bench/gpu_recipe.py rehearse   (runs gpu_device_run.sh on the CPU)
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SCRIPT = HERE / "gpu_device_run.sh"
# What gpu_device_run.sh reads from its environment that is the caller's, not the recipe's.
NOT_SETTINGS = {"OUT", "SCRATCH", "ORTPARTS", "ORT_DYLIB_PATH"}
# gpu_bench.py's tiny shape of each dtype on the CPU.
STAND_INS = {"fp32": "tiny", "fp16": "tiny-fp16", "bf16": "tiny-fp16"}
# A shape's own contenders: gpu_device_run.sh takes the lowercase C_ names only.
SHAPE_PICK = re.compile(r"^C_[a-z0-9_]+$")


def recipe_command(docs: Path = DOCS) -> str:
    """The docs' last device call: the one line with `command:` that runs gpu_device_run.sh."""
    lines = [line for line in docs.read_text().splitlines() if "command:" in line and "gpu_device_run.sh" in line]
    if len(lines) != 1:
        raise ValueError(f"{docs}: expected one `command: … gpu_device_run.sh` line, found {len(lines)}")
    return lines[0].split("command:", 1)[1].strip()


def script_defaults(script: Path = SCRIPT) -> dict:
    """Every setting gpu_device_run.sh reads as ${NAME:-default}, with its default."""
    defaults = {}
    for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", script.read_text()):
        if name not in NOT_SETTINGS:
            defaults.setdefault(name, default)
    return defaults


def recipe_settings(docs: Path = DOCS, script: Path = SCRIPT) -> dict:
    """The recipe's last call's settings: gpu_device_run.sh's defaults and the docs' command's
    NAME=value words over them. A command that is not `NAME=value … bash tools/bench/gpu_device_run.sh`,
    or that sets what the script does not read, is refused: the rehearsal would run another call."""
    words = shlex.split(recipe_command(docs))
    if words[-2:] != ["bash", "tools/bench/gpu_device_run.sh"] or not all("=" in word for word in words[:-2]):
        raise ValueError(f"{docs}: the last call's command is not NAME=value … bash tools/bench/gpu_device_run.sh: "
                         f"{shlex.join(words)}")
    given = dict(word.split("=", 1) for word in words[:-2])
    defaults = script_defaults(script)
    unread = [name for name in given if name not in defaults and not SHAPE_PICK.match(name)]
    if unread:
        raise ValueError(f"{docs}: the last call sets {', '.join(unread)}, which {script.name} does not read")
    return {**defaults, **given}


def rehearsal_settings(settings: dict) -> dict:
    """The recipe's settings with the device and the shapes as the CPU takes them (module doc)."""
    sys.path.insert(0, str(HERE))
    import gpu_bench  # torch: imported here, so that `settings` needs none

    keys = gpu_bench.GPU_SHAPES if settings["SHAPES"] == "gpu" else settings["SHAPES"].split(",")
    unknown = [key for key in keys if key not in gpu_bench.SHAPES]
    if unknown:
        raise ValueError(f"SHAPES: unknown {', '.join(unknown)} (known: {', '.join(gpu_bench.SHAPES)}, gpu)")
    stand_in = {key: STAND_INS[gpu_bench.SHAPES[key][1]] for key in keys}
    rehearsal = {**settings, "DEV": "cpu", "SHAPES": ",".join(dict.fromkeys(stand_in.values()))}
    for key in reversed(keys):  # the first shape of a dtype gives its stand-in its contenders
        pattern = settings.get(f"C_{gpu_bench.shape_variable(key)}")
        variable = f"C_{gpu_bench.shape_variable(stand_in[key])}"
        if pattern is not None:
            rehearsal[variable] = pattern
        else:
            rehearsal.pop(variable, None)
    for name in ("GPTQ_SHAPE", "RACE_SHAPE"):
        # A shape the recipe does not benchmark stays as it is: the step then says so, as on the device.
        rehearsal[name] = stand_in.get(settings[name], settings[name])
    race = settings["RACE_SHAPE"]
    if race in stand_in:
        blocks = gpu_bench.SHAPES[race][2]["num_hidden_layers"]
        tiny_blocks = gpu_bench.SHAPES[stand_in[race]][2]["num_hidden_layers"]
        rehearsal["RACE_K"] = str(min(tiny_blocks - 1, max(1, round(int(settings["RACE_K"]) * tiny_blocks / blocks))))
    return rehearsal


def rehearse(docs: Path = DOCS) -> int:
    """Runs gpu_device_run.sh in the current folder with the rehearsal's settings (the caller's
    OUT, SCRATCH, ORTPARTS); prints each step's exit line. Its status: the script's where that is
    not 0, else 1 where a step failed or the settings are over a device call, else 0."""
    settings = rehearsal_settings(recipe_settings(docs))
    print("rehearsing the recipe's last call on the CPU:", shlex.join(f"{k}={v}" for k, v in settings.items()),
          flush=True)
    # Only the recipe's C_<shape>: one the caller's environment holds would change the call.
    env = {name: value for name, value in os.environ.items() if not SHAPE_PICK.match(name)}
    env.update(settings)
    status = subprocess.run(["bash", str(SCRIPT)], env=env).returncode
    log = Path(os.environ["OUT"], "device.log")
    lines = log.read_text().splitlines() if log.is_file() else []
    steps = [line for line in lines if line.startswith("exit ")]
    print("\n".join(steps))
    failed = [line for line in steps if not line.startswith("exit 0 ")]
    over = [line for line in lines if "over a device call" in line]
    if status == 0 and (failed or over):
        print("rehearse-gpu: the recipe's last call would not run as it should on the device:",
              "; ".join(over + failed), file=sys.stderr)
        return 1
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["settings", "rehearse"])
    parser.add_argument("--docs", type=Path, default=DOCS, help="the Markdown with the recipe's last call")
    args = parser.parse_args(argv)
    if args.what == "settings":
        for name, value in recipe_settings(args.docs).items():
            print(f"{name}={shlex.quote(value)}")
        return 0
    if "OUT" not in os.environ:
        parser.error("rehearse: OUT (the folder the call's files go to) is not set")
    return rehearse(args.docs)


if __name__ == "__main__":
    sys.exit(main())

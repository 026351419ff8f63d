"""`make prune` (pipelines/prune.mk) as Make logic: which commands it runs, with which
arguments, and what it redoes when a setting or the model changes.

The stage binaries, the exporter's Python and cargo are replaced by stand-ins that log their
arguments and write their outputs (so no torch, no ONNX Runtime and nothing of the model runs
here; seconds in all); tools/prune/report.py's block list for llama.cpp is the real one. The
real end-to-end run (a tiny random Hugging Face llama, then SmolLM2) is the manual check in
docs/your-model.md.
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# One stand-in for every program the recipes call: logs "name args..." and writes what the
# real one would (just enough for the next step and for report.py llama-cpp).
STAND_IN = r'''#!PYTHON
import hashlib, json, os, sys, time
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
if name == "python" and args:
    name, args = Path(args[0]).name, args[1:]
def model_id(folder):
    return hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()[:16]

if name == "evaluate" and args[:1] == ["check-runtime-flags"]:  # runs nothing: not logged
    # Refuses as the real one would where the test asks it to (PRUNE_TEST_REFUSE_FLAGS).
    if os.environ.get("PRUNE_TEST_REFUSE_FLAGS"):
        sys.exit("evaluate: error: " + os.environ["PRUNE_TEST_REFUSE_FLAGS"])
    # The runtime flags alone, as the real one's parser takes them.
    if "--no-verify" in args:
        sys.exit("error: unexpected argument '--no-verify' found")
    sys.exit(0)
if name == "inspect":  # not a stage
    # pipelines/keep_cache.sh compares the ids of the cache of evaluations with the model folder's
    # and the calibration tokens' (below: what the stand-ins record); the evaluation tables Make
    # keeps are renamed once complete.
    path = Path(args[-1])
    text = path.read_text() if path.is_file() else ""
    if path.is_dir():
        print(json.dumps({"model_id": model_id(path)}, indent=2))
    elif text.startswith("ids "):
        print(json.dumps(dict(zip(("model_id", "dataset_id"), text.split()[1:3])), indent=2))
    elif text.startswith("dataset "):
        print(json.dumps({"dataset_id": text.split()[1]}, indent=2))
    else:
        print(json.dumps({"metadata": {"complete": True}}, indent=2))
    sys.exit(0)
with open(os.environ["PRUNE_TEST_LOG"], "a") as log:
    log.write(" ".join([name] + args) + "\n")

# The plan tables the stand-ins write hold "plans METHOD": the method as the real apply-prune
# records it. A method asked for by name that the table does not hold is refused, as apply-prune
# and prune_hf.py refuse it (`no plan removes 1 blocks with method adaptive-raced`).
table = args[args.index("--plans") + 1] if "--plans" in args else None
if name == "report.py" and "--plan-dir" in args:
    table = str(Path(args[args.index("--plan-dir") + 1]) / "plan.parquet")
if table and "--plan-method" in args:
    asked, words = args[args.index("--plan-method") + 1], Path(table).read_text().split()
    if words[:1] == ["plans"] and words[1] != asked:
        sys.exit(f"{name}: error: no plan removes blocks with method {asked} (the table's: {words[1]})")

def value(flag):
    return args[args.index(flag) + 1] if flag in args else None

def touch(path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("stand-in\n")

blocks = int(os.environ.get("PRUNE_TEST_BLOCKS", "6"))
if name == "export_layered.py":
    out = Path(value("--out"))
    out.mkdir(parents=True, exist_ok=True)
    # As the real manifest holds every file's sha256: the same source, the same manifest.
    source = Path(value("--model") or value("--gguf"))
    files = sorted(f for f in source.rglob("*") if f.is_file()) if source.is_dir() else [source]
    manifest = {"num_blocks": blocks, "source": hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest(),
                "blocks": [{"index": i, "original_index": i} for i in range(blocks)]}
    (out / "manifest.json").write_text(json.dumps(manifest))
elif name == "prepare-tokens":  # the same settings and text, the same tokens and dataset id
    text = Path(value("--text")).read_bytes() if value("--text") else b""
    settings = [a for a in args if a not in ("--out", value("--out"))]
    touch(value("--out"))
    dataset = hashlib.sha256(json.dumps(settings).encode() + text).hexdigest()[:16]
    Path(value("--out")).write_text(f"dataset {dataset} windows {value('--windows')}\n")
elif name == "evaluate":
    touch(value("--out"))

elif name == "apply-prune":
    if value("--cache"):  # the model and dataset ids, then one line per run that kept its
        # evaluations there, with what they were measured on (the kind of device and the flags that
        # change NLLs, as `evaluated_on`); a cache of another game, or rows measured on another,
        # are refused, as the real one refuses them, before anything is written.
        ids = f"ids {model_id(value('--model'))} {Path(value('--tokens')).read_text().split()[1]}"
        runtime = " ".join([(value("--device") or "cpu").split(":")[0]]
                           + [f"{flag} {value(flag)}" for flag in ("--tf32", "--graph-optimization") if value(flag)])
        cache = Path(value("--cache"))
        kept = cache.read_text().splitlines() if cache.exists() else [ids]
        if kept[0] != ids:
            sys.exit(f"apply-prune: error: {cache}: cannot resume: another model or token table")
        for line in kept[1:]:
            if line != f"run {runtime}":
                if "--replace-cache-measured-otherwise" not in args:
                    sys.exit(f"apply-prune: error: {cache}: cannot resume: its rows were measured on {line[4:]}, "
                             f"this run measures on {runtime}")
                kept = kept[:1]  # started again (the real one: once it has measured something)
                break
        cache.write_text("\n".join(kept + [f"run {runtime}"]) + "\n")
        if os.environ.get("PRUNE_TEST_KILL_CHOICE"):  # killed while choosing (kill -9): the lock
            # file of its output (crates/core/src/lock.rs) stays behind, holding no lock
            out = Path(value("--out"))
            (out.parent / f".{out.name}.lock").write_text("")
            os.kill(os.getpid(), 9)
        if os.environ.get("PRUNE_TEST_INTERRUPT_CHOICE"):  # Ctrl-C while choosing: SIGINT to the
            # whole process group (make, the recipe's shell and this), the lock file left behind
            import signal
            out = Path(value("--out"))
            (out.parent / f".{out.name}.lock").write_text("")
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.killpg(os.getpgrp(), signal.SIGINT)
            time.sleep(10)
    if value("--out") and value("--method") == "from-plan":  # the plan measured: of the table's method
        touch(value("--out"))
        Path(value("--out")).write_text(Path(value("--plans")).read_text())
    elif value("--out"):  # the choice; the pruned folder is written without a plan table
        # A race drops masks only after its first windows (--race-windows, default 3): over no more
        # calibration windows it races nothing, and the plan is recorded as the unraced method's.
        windows = int(Path(value("--tokens")).read_text().split()[3])
        raced = value("--race-se") is not None and windows > int(value("--race-windows") or 3)
        touch(value("--out"))
        Path(value("--out")).write_text(f"plans {value('--method')}{'-raced' if raced else ''}\n")
    if value("--pruned-out"):
        k = int(value("--k") or 2)  # without --k (MAX_PPL_RATIO), the plan the stand-in "chose"
        kept = [i for i in range(blocks) if i not in range(1, 1 + 2 * k, 2)]
        out = Path(value("--pruned-out"))
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"num_blocks": len(kept),
                    "blocks": [{"index": j, "original_index": i} for j, i in enumerate(kept)]}
        (out / "manifest.json").write_text(json.dumps(manifest))
elif name == "prune_hf.py":
    touch(Path(value("--out")) / "config.json")
elif name in ("export_generator.py", "prune_gguf.py"):
    touch(value("--out"))
elif name == "report.py" and args[0] == "summary":  # the method as the plan table records it
    print("summary of", value("--run"), "by", (Path(value("--plan-dir")) / "plan.parquet").read_text().split()[1])
'''


@pytest.fixture
def setup(tmp_path):
    """Stand-in binaries, exporter environment and cargo; a Hugging Face folder, a GGUF
    file and text files; returns a function running `make prune ...` that gives the log."""
    bin_dir = tmp_path / "bin"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    script = STAND_IN.replace("#!PYTHON", f"#!{sys.executable}")
    for path in [bin_dir / n for n in ("prepare-tokens", "evaluate", "apply-prune", "inspect")] + [venv / "bin" / "python"]:
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (venv / ".complete").write_text("")
    ort = tmp_path / "libonnxruntime.so"
    ort.write_text("")
    hf = tmp_path / "my-model"
    hf.mkdir()
    (hf / "config.json").write_text('{\n  "architectures": ["LlamaForCausalLM"],\n  "model_type": "llama"\n}\n')
    (hf / "model.safetensors").write_text("")
    gguf = tmp_path / "other.Q8_0.gguf"
    gguf.write_text("")
    for name in ("calib.txt", "eval.txt"):
        (tmp_path / name).write_text("text\n")
    log = tmp_path / "log.txt"

    def make(*args, check=True, env_extra=None, own_group=False):
        """own_group: make runs in a process group of its own, SIGINT at its default (a
        shell's `&` ignores it, and a signal ignored on entry cannot be trapped), so that a
        stand-in's Ctrl-C reaches make and what it runs, not the tests."""
        log.write_text("")
        env = make_env()
        env.update(env_extra or {})
        env["PRUNE_TEST_LOG"] = str(log)
        command = ["make", "--no-print-directory", "prune", f"BIN={bin_dir}", f"VENV_EXPORT={venv}",
                   "CARGO=true", f"ORT_LIB={ort}", f"CALIB_TEXT={tmp_path / 'calib.txt'}",
                   f"EVAL_TEXT={tmp_path / 'eval.txt'}", f"PYTHON={sys.executable}", *args]
        group = {"start_new_session": True,
                 "preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)} if own_group else {}
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, **group)
        if check:
            assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr}"
        lines = [line.split() for line in log.read_text().splitlines()]
        return result, lines

    return {"make": make, "hf": hf, "gguf": gguf, "tmp": tmp_path}


def make_env():
    """No variables of an enclosing make (`make test-workflow` passes its own) and no MODEL, K or
    MAX_PPL_RATIO; ONNX Runtime's CPU build as the library the stages load (`make test-workflow`
    exports it), whatever DEVICE a test gives: by default Make would load, and fetch, the CUDA
    build for DEVICE=cuda."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MODEL", "K", "MAX_PPL_RATIO", "MAX_PPL_RATIO_SE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("ORT_DYLIB_PATH", str(cpu_library()))
    return env


def cpu_library():
    """The library `make ort` fetches into this checkout (ORT_VERSION of pipelines/settings.mk)."""
    settings = (ROOT / "pipelines" / "settings.mk").read_text()
    version = re.search(r"^ORT_VERSION := (\S+)$", settings, re.M).group(1)
    return ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi" / f"libonnxruntime.so.{version}"


def calls(lines, name, *flags):
    """The logged calls of `name` having every one of flags."""
    return [line for line in lines if line[0] == name and all(f in line for f in flags)]


def arg(line, flag):
    return line[line.index(flag) + 1]


def test_runtime_flags_the_device_cannot_have_are_refused_before_the_export(setup):
    """EVALUATE_FLAGS="--device cpu --cuda-graphs on" was refused by the first evaluate, after the
    export (an 8B model: a long run and 32 GB): `evaluate check-runtime-flags` runs first now."""
    out = setup["tmp"] / "run"
    said = "--cuda-graphs on: CUDA graphs are a setting of the CUDA execution provider"
    result, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}",
                                  "EVALUATE_FLAGS=--device cpu --cuda-graphs on", check=False,
                                  env_extra={"PRUNE_TEST_REFUSE_FLAGS": said})
    assert result.returncode != 0 and said in result.stderr, result.stderr
    assert lines == [], lines
    assert not (out / "model" / "manifest.json").exists()
    # --no-verify, which the stages take and the check does not, is left out of the check.
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}",
                             "EVALUATE_FLAGS=--device cpu --no-verify")
    assert all("--no-verify" in line for line in lines if line[0] == "evaluate"), lines


def test_a_hugging_face_folder_end_to_end_then_nothing_to_redo(setup):
    out = setup["tmp"] / "run"
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}")
    # Export of the folder, held-out tokens, the full model on them, calibration tokens, the
    # raced adaptive plan on them, that plan measured on the held-out tokens, the pruned folder
    # written from it, its evaluation, the HF checkpoint, the KV-cache decoder made from it, the
    # summary: each once, in this order.
    names = [line[0] for line in lines]
    assert names == ["export_layered.py", "prepare-tokens", "evaluate", "prepare-tokens", "apply-prune",
                     "apply-prune", "apply-prune", "evaluate", "prune_hf.py", "export_generator.py",
                     "report.py"], lines
    (export,) = calls(lines, "export_layered.py")
    assert arg(export, "--model") == str(setup["hf"]) and arg(export, "--out") == f"{out}/model"
    (choose,) = calls(lines, "apply-prune", "adaptive", "--budget")
    assert arg(choose, "--budget") == "sleb" and arg(choose, "--k") == "2"
    assert arg(choose, "--race-se") == "3"
    assert arg(choose, "--tokens") == f"{out}/tokens-calib.parquet"
    assert arg(choose, "--out") == f"{out}/k2/plan-calibration.parquet"
    assert arg(choose, "--cache") == f"{out}/evaluations-calib.parquet"
    # The plan measured on the held-out tokens, and the folder written from the plan as chosen
    # by a run of no model (no tokens, no device): new held-out tokens do not write it again.
    # The table holds one method's plans (one apply-prune call's): its plan at K, not asked for by
    # the method's name (which a race over too few windows records unraced).
    (measure, write) = calls(lines, "apply-prune", "from-plan")
    for line in (measure, write):
        assert arg(line, "--plans") == f"{out}/k2/plan-calibration.parquet"
        assert "--plan-method" not in line and arg(line, "--k") == "2"
    assert arg(measure, "--tokens") == f"{out}/tokens-eval.parquet" and "--pruned-out" not in measure
    assert arg(measure, "--out") == f"{out}/k2/plan.parquet"
    assert arg(write, "--pruned-out").rstrip("/") == f"{out}/k2/pruned"
    assert "--tokens" not in write and "--out" not in write and "--device" not in write
    (hf,) = calls(lines, "prune_hf.py")
    # The checkpoint is made from the plan as chosen, not its held-out measurement (plan.parquet).
    assert arg(hf, "--model") == str(setup["hf"]) and arg(hf, "--plans") == f"{out}/k2/plan-calibration.parquet"
    assert "--plan-method" not in hf and arg(hf, "--k") == "2"
    assert arg(hf, "--out").rstrip("/") == f"{out}/k2/pruned-hf"
    (generator,) = calls(lines, "export_generator.py")
    assert arg(generator, "--model").rstrip("/") == f"{out}/k2/pruned-hf"
    assert arg(generator, "--out") == f"{out}/k2/pruned-generator.onnx" and "--dtype" not in generator
    # The stand-in removed blocks 1 and 3 of 6: llama.cpp gets them 0-based, comma-separated.
    assert (out / "k2" / "llama-cpp-prune-layers.txt").read_text() == "1,3\n"
    for path in ("model/manifest.json", "full-eval.parquet", "k2/pruned-eval.parquet", "k2/pruned-hf/config.json",
                 "k2/pruned-generator.onnx"):
        assert (out / path).is_file(), path
    result, again = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}")
    assert [line[0] for line in again] == ["report.py"], again
    assert f"summary of {out}" in result.stdout
    # The decoder is named to the summary, which lists it and says what it is for (in the text it
    # prints and keeps: the summary Make echoed after it was not saved).
    (report,) = calls(again, "report.py", "summary")
    assert arg(report, "--generator") == f"{out}/k2/pruned-generator.onnx", report


def test_a_perplexity_ratio_instead_of_k_gets_a_folder_of_its_own(setup):
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "MAX_PPL_RATIO=1.5", f"PRUNE_OUT={out}"]
    result, lines = setup["make"](*base)
    (choose,) = calls(lines, "apply-prune", "--max-ppl-ratio")
    # SLEB raced over the calibration windows chooses, unless an ADAPTIVE_BUDGET is set.
    assert arg(choose, "--method") == "sleb" and arg(choose, "--race-se") == "3"
    assert arg(choose, "--max-ppl-ratio") == "1.5" and "--k" not in choose and "--budget" not in choose
    assert arg(choose, "--out") == f"{out}/ratio1.5/plan-calibration.parquet"
    # The later steps take the table's one plan of that method, whatever k it has.
    (measure, write) = calls(lines, "apply-prune", "from-plan")
    assert "--k" not in write and arg(write, "--pruned-out").rstrip("/") == f"{out}/ratio1.5/pruned"
    assert "--k" not in measure and arg(measure, "--out") == f"{out}/ratio1.5/plan.parquet"
    assert "--plan-method" not in write and "--plan-method" not in measure
    (hf,) = calls(lines, "prune_hf.py")
    assert "--k" not in hf and arg(hf, "--plans") == f"{out}/ratio1.5/plan-calibration.parquet"
    assert "--plan-method" not in hf
    (summary,) = calls(lines, "report.py")
    assert arg(summary, "--plan-dir") == f"{out}/ratio1.5" and arg(summary, "--max-ppl-ratio") == "1.5"
    assert "--plan-method" not in summary and f"summary of {out} by sleb-raced" in result.stdout
    assert (out / "ratio1.5" / "llama-cpp-prune-layers.txt").read_text() == "1,3\n"
    _, again = setup["make"](*base)
    assert [line[0] for line in again] == ["report.py"], again
    # Another ratio: a plan of its own; the export, tokens and full model's evaluation are shared.
    _, lines = setup["make"](base[0], "MAX_PPL_RATIO=2", base[2])
    assert [line[0] for line in lines] == ["apply-prune", "apply-prune", "apply-prune", "evaluate", "prune_hf.py",
                                           "export_generator.py", "report.py"]
    assert arg(lines[0], "--max-ppl-ratio") == "2"
    # A budget of the user's is the recommended method's (raced adaptive removal), at that budget
    # for each k tried; it redoes the plan, and every later step takes that plan.
    result, lines = setup["make"](base[0], "MAX_PPL_RATIO=2", base[2], "ADAPTIVE_BUDGET=sleb")
    assert [line[0] for line in lines][:2] == ["apply-prune", "apply-prune"]
    assert arg(lines[0], "--method") == "adaptive" and arg(lines[0], "--race-se") == "3"
    assert arg(lines[0], "--budget") == "sleb" and arg(lines[0], "--max-ppl-ratio") == "2"
    assert arg(lines[1], "--plans") == f"{out}/ratio2/plan-calibration.parquet"
    assert f"summary of {out} by adaptive-raced" in result.stdout, result.stdout
    # A margin of standard errors: passed to the search and the summary, in a folder of its own.
    _, lines = setup["make"](*base, "MAX_PPL_RATIO_SE=2")
    (choose,) = calls(lines, "apply-prune", "--race-se", "--max-ppl-ratio")
    assert arg(choose, "--max-ppl-ratio") == "1.5" and arg(choose, "--max-ppl-ratio-se") == "2"
    assert arg(choose, "--out") == f"{out}/ratio1.5-se2/plan-calibration.parquet"
    (summary,) = calls(lines, "report.py")
    assert arg(summary, "--plan-dir") == f"{out}/ratio1.5-se2" and arg(summary, "--max-ppl-ratio-se") == "2"
    # Without it the ratio's own folder is still done.
    _, again = setup["make"](*base)
    assert [line[0] for line in again] == ["report.py"], again
    # A margin of 0 standard errors is none, apply-prune's default: the ratio's own folder, done
    # (it was a folder ratio1.5-se0 of its own, the same plan chosen again, "by 0 standard errors").
    for zero in ("0", "0.0"):
        _, again = setup["make"](*base, f"MAX_PPL_RATIO_SE={zero}")
        assert [line[0] for line in again] == ["report.py"], again
        assert "--max-ppl-ratio-se" not in again[0] and arg(again[0], "--plan-dir") == f"{out}/ratio1.5"


def test_changed_settings_redo_what_they_affect(setup):
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    setup["make"](*base)
    _, lines = setup["make"](*base, "ADAPTIVE_BUDGET=least")
    assert [line[0] for line in lines] == ["apply-prune", "apply-prune", "apply-prune", "evaluate", "prune_hf.py",
                                           "export_generator.py", "report.py"]
    assert arg(calls(lines, "apply-prune", "adaptive")[0], "--budget") == "least"
    # New held-out windows: the held-out tokens and every measurement on them, not the plan, nor
    # the pruned folder (written from the plan as chosen), the checkpoint and the decoder, which
    # the held-out tokens do not change.
    pruned = out / "k2" / "pruned" / "manifest.json"
    written = pruned.stat().st_mtime_ns
    _, lines = setup["make"](*base, "ADAPTIVE_BUDGET=least", "EVAL_WINDOWS=7")
    assert [line[0] for line in lines] == ["prepare-tokens", "evaluate", "apply-prune", "evaluate", "report.py"]
    assert arg(lines[0], "--windows") == "7" and "--mode" in lines[0] and arg(lines[0], "--mode") == "consecutive"
    assert "--pruned-out" not in lines[2] and arg(lines[2], "--out") == f"{out}/k2/plan.parquet"
    assert pruned.stat().st_mtime_ns == written
    # The decoder's flags redo the decoder only.
    _, lines = setup["make"](*base, "ADAPTIVE_BUDGET=least", "EVAL_WINDOWS=7", "PRUNE_GENERATOR_FLAGS=--dtype fp16")
    assert [line[0] for line in lines] == ["export_generator.py", "report.py"]
    assert arg(lines[0], "--dtype") == "fp16"
    # Another k: a folder of its own, the same export and tokens.
    _, lines = setup["make"](*base[:1], "K=3", base[2], "ADAPTIVE_BUDGET=least", "EVAL_WINDOWS=7")
    assert [line[0] for line in lines] == ["apply-prune", "apply-prune", "apply-prune", "evaluate", "prune_hf.py",
                                           "export_generator.py", "report.py"]
    assert arg(lines[-2], "--out") == f"{out}/k3/pruned-generator.onnx"
    assert (out / "k3" / "llama-cpp-prune-layers.txt").read_text() == "1,3,5\n"
    # Every plan so far chose through the one cache of calibration evaluations, kept across runs.
    cache = out / "evaluations-calib.parquet"
    assert cache.read_text().count("run") == 3
    assert arg(lines[0], "--cache") == str(cache)
    # Weights touched are exported again (the export's stamp records their times), to the same
    # model (its manifest's hash, which the tokens' stamps record): no measurement is redone and
    # the cache is kept; only the checkpoint, written from the weights themselves, is written again.
    os.utime(setup["hf"] / "model.safetensors")
    _, lines = setup["make"](*base, "ADAPTIVE_BUDGET=least", "EVAL_WINDOWS=7")
    assert [line[0] for line in lines] == ["export_layered.py", "prune_hf.py", "export_generator.py", "report.py"]
    assert cache.read_text().count("run") == 3
    # A changed model (its weights) is exported again, and everything after.
    (setup["hf"] / "model.safetensors").write_text("new weights")
    _, lines = setup["make"](*base, "ADAPTIVE_BUDGET=least", "EVAL_WINDOWS=7")
    assert [line[0] for line in lines] == ["export_layered.py", "prepare-tokens", "evaluate", "prepare-tokens",
                                           "apply-prune", "apply-prune", "apply-prune", "evaluate", "prune_hf.py",
                                           "export_generator.py", "report.py"]
    # New calibration tokens (here: of a new export) start the cache afresh.
    assert cache.read_text().count("run") == 1


def runs(cache):
    """The runs that kept their evaluations in the stand-ins' cache, with what they were measured
    on (its first line holds the model and dataset ids)."""
    return cache.read_text().splitlines()[1:]


def test_a_new_device_or_nll_changing_flag_starts_the_cache_of_evaluations_again(setup):
    """The calibration tokens, made again alike for a new kind of device or a flag that changes
    NLLs (their stamps hold MODEL_RUNTIME), kept the cache (pipelines/keep_cache.sh compares the
    model and the tokens only), whose rows apply-prune then refused as measured on another; now
    apply-prune starts it again (--replace-cache-measured-otherwise; a CUDA request that fails
    keeps it: tests/workflow/test_make_settings.py), as the demo's plan cache. Flags that give
    the same NLLs keep it."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    cache = out / "evaluations-calib.parquet"
    setup["make"](*base)
    setup["make"](*base[:1], "K=3", base[2])
    assert runs(cache) == ["run cpu", "run cpu"]
    # Another thread count: the same NLLs, nothing to redo, the cache kept.
    _, lines = setup["make"](*base, "THREADS=1")
    assert [line[0] for line in lines] == ["report.py"], lines
    # Another graph optimization: every measurement again, the choice on a fresh cache.
    flags = "EVALUATE_FLAGS=--device cpu --threads 0 --graph-optimization basic"
    result, lines = setup["make"](*base, flags, check=False)
    assert result.returncode == 0, result.stderr
    assert calls(lines, "prepare-tokens") and len(calls(lines, "apply-prune", "--cache")) == 1, lines
    assert runs(cache) == ["run cpu --graph-optimization basic"]
    _, again = setup["make"](*base, flags)
    assert [line[0] for line in again] == ["report.py"], again
    # Back on the CPU's defaults, then on CUDA: each time measured afresh (the CPU build of ONNX
    # Runtime stands in for the CUDA one here, make_env).
    setup["make"](*base)
    assert runs(cache) == ["run cpu"]
    setup["make"](*base, "DEVICE=cuda")
    assert runs(cache) == ["run cuda"]
    # Another GPU: the same kind of device, the same NLLs; another K reads the cache as it is.
    _, lines = setup["make"](*base[:1], "K=3", base[2], "DEVICE=cuda:1")
    assert runs(cache) == ["run cuda", "run cuda"]
    assert not calls(lines, "prepare-tokens"), lines


def test_after_a_run_a_dry_run_lists_no_step_and_make_q_says_up_to_date(setup):
    """After a finished `make prune`, `make -n prune` listed the held-out tokens' prepare-tokens
    and every measurement on them, and `make -q prune` exited 1: the tokens' stamp read back
    through GNU Make 4.3's $(file <) kept its last newline now and then (as chance of memory
    layout has it, for stamps longer than Make's first 200-byte buffer: long text paths here,
    the LAMBADA passages' path in a real run), so it differed from what its rule would write; and
    the goal's summary made it never up to date to -q. Several lengths of the texts' paths."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    for length in range(40, 110, 10):
        texts = []
        for name in ("calib", "eval"):
            path = setup["tmp"] / f"{name}-{'x' * length}.txt"
            path.write_text(f"{name} text\n")
            texts.append(f"{name.upper()}_TEXT={path}")
        setup["make"](*base, *texts)
        result, lines = setup["make"]("-n", *base, *texts)
        assert lines == [], lines  # -n runs nothing, and lists only the goal's summary:
        listed = [line for line in result.stdout.splitlines() if line.startswith(("/", "true "))]
        assert all(line.startswith(("true build", f"{setup['tmp'] / 'venv'}/bin/python tools/prune/report.py summary"))
                   for line in listed), (length, result.stdout)
        result, _ = setup["make"]("-q", *base, *texts, check=False)
        assert result.returncode == 0, (length, result.stdout, result.stderr)
    # A changed setting is still previewed, and -q says so.
    result, _ = setup["make"]("-n", *base, *texts, "EVAL_WINDOWS=7")
    assert "prepare-tokens" in result.stdout and "--windows 7" in result.stdout, result.stdout
    result, _ = setup["make"]("-q", *base, *texts, "EVAL_WINDOWS=7", check=False)
    assert result.returncode == 1, result.stdout + result.stderr


def test_the_saved_summary_is_kept_with_nothing_to_do_and_removed_when_its_numbers_change(setup):
    """report.py keeps the summary beside the plan (kK/summary.txt, summary.json), rewriting them only
    when their content changed: a run with nothing to do leaves them alone (it runs the summary
    only). A plan measured again, or its checkpoint written again, removes them first, so that a run
    failing after that leaves no summary of numbers it no longer states (the stand-in report.py
    writes none: what is there is what Make left)."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    setup["make"](*base)
    saved = [out / "k2" / "summary.txt", out / "k2" / "summary.json"]
    for path in saved:
        path.write_text("the last summary\n")
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == ["report.py"], lines
    assert all(path.read_text() == "the last summary\n" for path in saved)
    # New held-out windows measure the plan again: its summary goes before they do.
    _, lines = setup["make"](*base, "EVAL_WINDOWS=7")
    assert "apply-prune" in [line[0] for line in lines] and not any(path.exists() for path in saved), lines
    # The checkpoint written again (its source's weights touched): the summary lists its size.
    for path in saved:
        path.write_text("the last summary\n")
    os.utime(setup["hf"] / "model.safetensors")
    _, lines = setup["make"](*base, "EVAL_WINDOWS=7")
    assert "prune_hf.py" in [line[0] for line in lines] and not any(path.exists() for path in saved), lines


def test_a_plan_chosen_again_without_the_decoder_leaves_no_decoder_of_the_last_plan(setup):
    """A plan chosen again (new calibration text) with PRUNE_GENERATOR=0 rewrote the pruned
    folder and checkpoint but left the decoder made from the last plan's checkpoint in kK/, with
    nothing in it to tell it was another plan's blocks."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    setup["make"](*base)
    decoder = out / "k2" / "pruned-generator.onnx"
    data = out / "k2" / "pruned-generator.onnx.abc123.data"  # its weights, when over 2 GB
    data.write_text("stand-in\n")
    assert decoder.is_file()
    (setup["tmp"] / "calib.txt").write_text("other text\n")
    _, lines = setup["make"](*base, "PRUNE_GENERATOR=0")
    assert [line[0] for line in lines] == ["prepare-tokens", "apply-prune", "apply-prune", "apply-prune",
                                           "evaluate", "prune_hf.py", "report.py"], lines
    assert not decoder.exists() and not data.exists()
    # Asked for again, it is made from the new checkpoint.
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == ["export_generator.py", "report.py"], lines
    assert decoder.is_file()


@pytest.mark.parametrize("args,method", [
    (["K=1", "CALIB_WINDOWS=3"], "adaptive"),
    (["K=1", "CALIB_WINDOWS=4"], "adaptive-raced"),
    (["MAX_PPL_RATIO=1.5", "CALIB_WINDOWS=2"], "sleb"),
    (["MAX_PPL_RATIO=1.5", "ADAPTIVE_BUDGET=least", "CALIB_WINDOWS=3"], "adaptive"),
    (["K=1", "CALIB_WINDOWS=5", "PLAN_ARGS_adaptive-raced=--method adaptive --race-se 3 --race-windows 5"], "adaptive"),
])
def test_too_few_calibration_windows_to_race_still_prune_the_unraced_plan(setup, args, method):
    """With no more calibration windows than a race's first ones (3, or --race-windows), apply-prune
    races nothing and records the plan as adaptive (or sleb), unraced: the steps after the choice
    asked the table for adaptive-raced and failed (`no plan removes 1 blocks with method
    adaptive-raced`), on a real GGUF run with CALIB_WINDOWS=2. They take the table's plan without
    naming its method (the stand-ins record it as apply-prune does, and refuse another name), so the
    run finishes whichever name the plan has, and the summary reads it from the table."""
    out = setup["tmp"] / "run"
    result, lines = setup["make"](f"MODEL={setup['hf']}", f"PRUNE_OUT={out}", *args)
    (choose,) = calls(lines, "apply-prune", "--cache")
    assert arg(choose, "--method") == method.removesuffix("-raced") and "--race-se" in choose
    plans = Path(arg(choose, "--out"))
    assert plans.read_text() == f"plans {method}\n"
    later = calls(lines, "apply-prune", "from-plan") + calls(lines, "prune_hf.py") + calls(lines, "report.py")
    assert len(later) == 4 and not any("--plan-method" in line for line in later), later
    assert all(arg(line, "--plans") == str(plans) for line in later[:3]), later
    for path in ("pruned/manifest.json", "plan.parquet", "pruned-eval.parquet", "pruned-hf/config.json"):
        assert (plans.parent / path).is_file(), path
    assert f"summary of {out} by {method}" in result.stdout, result.stdout


def test_a_choice_killed_leaves_no_plan_folder_and_the_next_run_chooses(setup):
    """apply-prune killed while choosing left its output's lock file in kK/, so the recipe's rmdir
    kept an empty-looking plan folder; the lock file is removed unless another run holds it."""
    import fcntl

    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    killed = {"PRUNE_TEST_KILL_CHOICE": "1"}
    result, lines = setup["make"](*base, check=False, env_extra=killed)
    assert result.returncode != 0 and calls(lines, "apply-prune", "--cache"), result.stderr
    assert not (out / "k2").exists(), sorted(p.name for p in (out / "k2").iterdir())
    # While another run holds the plan's lock, its lock file is not touched (nor the folder).
    (out / "k2").mkdir()
    lock = out / "k2" / ".plan-calibration.parquet.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result, _ = setup["make"](*base, check=False, env_extra=killed)
        assert result.returncode != 0 and lock.exists()
    # The next run chooses, from the cache the killed one kept, and finishes.
    _, lines = setup["make"](*base)
    assert calls(lines, "apply-prune", "--cache") and (out / "k2" / "pruned-hf" / "config.json").is_file()
    _, again = setup["make"](*base)
    assert [line[0] for line in again] == ["report.py"], again


def test_a_choice_interrupted_leaves_no_plan_folder_and_the_next_run_chooses(setup):
    """Ctrl-C while choosing reaches make, the recipe's shell and apply-prune together: the shell
    died before the `||` that removes the lock file and the plan folder, so kK/ stayed with the
    lock file alone; the recipe's trap removes them once apply-prune has stopped."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    interrupted = {"PRUNE_TEST_INTERRUPT_CHOICE": "1"}
    result, lines = setup["make"](*base, check=False, env_extra=interrupted, own_group=True)
    assert result.returncode != 0 and calls(lines, "apply-prune", "--cache"), result.stderr
    assert not (out / "k2").exists(), sorted(p.name for p in (out / "k2").iterdir())
    _, lines = setup["make"](*base)
    assert calls(lines, "apply-prune", "--cache") and (out / "k2" / "pruned-hf" / "config.json").is_file()


def test_weights_replaced_by_older_files_are_a_new_model_and_a_path_is_one_model(setup):
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    setup["make"](*base)
    # The same folder spelled otherwise (a trailing slash, as tab completion writes it): nothing
    # to redo.
    _, lines = setup["make"](f"MODEL={setup['hf']}/", *base[1:])
    assert [line[0] for line in lines] == ["report.py"]
    # Other weights moved in with an older time than the export (as mv, cp -p, rsync -a keep):
    # Make's times alone would call the export current.
    weights = setup["hf"] / "model.safetensors"
    weights.write_text("other weights")
    os.utime(weights, (1_000_000_000, 1_000_000_000))
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines][:2] == ["export_layered.py", "prepare-tokens"]


EVERYTHING = ["export_layered.py", "prepare-tokens", "evaluate", "prepare-tokens", "apply-prune", "apply-prune",
              "apply-prune", "evaluate", "prune_hf.py", "export_generator.py", "report.py"]


@pytest.mark.parametrize("name, redone", [
    # What the tokenizer is built from, and so the layered folder's tokenizer.json, the tokens and
    # every plan: a changed one is a new model (the stand-in exporter's manifest hashes every file).
    ("merges.txt", EVERYTHING),
    ("vocab.json", EVERYTHING),
    ("tokenizer.model", EVERYTHING),
    ("special_tokens_map.json", EVERYTHING),
    ("added_tokens.json", EVERYTHING),
    ("tokenizer_config.json", EVERYTHING),
    # What only the checkpoint carries: the checkpoint and the decoder made from it.
    ("generation_config.json", ["prune_hf.py", "export_generator.py", "report.py"]),
    ("chat_template.jinja", ["prune_hf.py", "export_generator.py", "report.py"]),
    ("preprocessor_config.json", ["prune_hf.py", "export_generator.py", "report.py"]),
])
def test_a_changed_tokenizer_or_checkpoint_file_redoes_what_is_made_from_it(setup, name, redone):
    """The export's prerequisites and stamp named tokenizer.json and tokenizer_config.json only: a
    folder whose tokenizer is a BPE vocabulary (vocab.json + merges.txt) or a SentencePiece model,
    changed, reused the old export and printed the old results. Changed, added or removed (even
    replaced by an older file), each file is seen."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    path = setup["hf"] / name
    path.write_text("first\n")
    setup["make"](*base)
    path.write_text("another\n")
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == redone, lines
    # Removed: no time to compare, the stamps say it.
    path.unlink()
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == redone, lines
    # Added back with an old time (cp -p, tar x).
    path.write_text("first\n")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == redone, lines
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == ["report.py"], lines


def test_a_tokenizer_file_removed_whose_export_comes_out_the_same_writes_the_checkpoint_again(setup):
    """The checkpoint's tokenizer is saved from the source's files, not from the export: a file
    removed (or replaced by an older one) exported the model again, unchanged (the stand-in's
    manifest hashes the files' bytes: an empty file is none), and the checkpoint, whose
    prerequisites compare times, kept the old tokenizer."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    (setup["hf"] / "special_tokens_map.json").write_text("")
    setup["make"](*base)
    (setup["hf"] / "special_tokens_map.json").unlink()
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == ["export_layered.py", "prune_hf.py", "export_generator.py", "report.py"]


def make_list(name):
    """The words of the pipelines/prune.mk variable `name` (its lines continued with a backslash)."""
    text = (ROOT / "pipelines" / "prune.mk").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} =")]
    return line.split("=", 1)[1].split()


def python_constant(path, name):
    """The value of the module-level constant `name` of the Python file `path`, read from its source
    (the export tools need torch to import)."""
    import ast

    tree = ast.parse(path.read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == [name]]
    return ast.literal_eval(value)


def test_one_of_two_checkpoint_files_removed_writes_the_checkpoint_again(setup):
    """The checkpoint's stamp identified its files by content only: with two of them, one
    removed left the other's identity as it was, and the checkpoint kept the removed file."""
    out = setup["tmp"] / "run"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    (setup["hf"] / "generation_config.json").write_text("first\n")
    (setup["hf"] / "chat_template.jinja").write_text("template\n")
    setup["make"](*base)
    (setup["hf"] / "chat_template.jinja").unlink()
    _, lines = setup["make"](*base)
    assert [line[0] for line in lines] == ["prune_hf.py", "export_generator.py", "report.py"], lines


def test_the_make_lists_of_source_files_cover_what_the_tools_read():
    """Every file the exporter checks for (WEIGHT_PATTERNS, TOKENIZER_FILES) and the other files
    transformers builds the tokenizer from is one of the export's prerequisites (PRUNE_SOURCE_FILES);
    every file prune_hf.py copies (PROCESSOR_FILES) and the ones transformers writes into the
    checkpoint from the source, the checkpoint's (PRUNE_HF_FILES)."""
    from fnmatch import fnmatch

    export = ROOT / "tools" / "export" / "export_layered.py"
    # transformers' tokenization_utils_base.py: TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE,
    # ADDED_TOKENS_FILE; the BPE tokenizers' (GPT-2's, Qwen2's) merges file.
    tokenizer = ["tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt"]
    read = [*python_constant(export, "WEIGHT_PATTERNS"), *python_constant(export, "TOKENIZER_FILES"), *tokenizer]
    patterns = make_list("PRUNE_SOURCE_FILES")
    assert {"config.json", *tokenizer} <= set(patterns)
    assert [name for name in read if not any(fnmatch(name, pattern) for pattern in patterns)] == []
    # The checkpoint's: GenerationConfig's file, the tokenizer's chat templates (CHAT_TEMPLATE_FILE,
    # CHAT_TEMPLATE_DIR) and the processor's files prune_hf.py copies.
    carried = [*python_constant(ROOT / "tools" / "export" / "prune_hf.py", "PROCESSOR_FILES"),
               "generation_config.json", "chat_template.jinja", "additional_chat_templates/default.jinja"]
    patterns = make_list("PRUNE_HF_FILES")
    assert [name for name in carried if not any(fnmatch(name, pattern) for pattern in patterns)] == []


def test_a_k_the_model_cannot_lose_is_refused_before_anything_runs(setup):
    config = json.loads((setup["hf"] / "config.json").read_text())
    (setup["hf"] / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    out = setup["tmp"] / "run"
    result, lines = setup["make"](f"MODEL={setup['hf']}", "K=4", f"PRUNE_OUT={out}", check=False)
    assert result.returncode != 0 and "has 4 blocks" in result.stderr and "K is at most 3" in result.stderr, \
        result.stderr
    assert lines == [] and not out.exists()
    # A multimodal model's blocks are its text model's.
    (setup["hf"] / "config.json").write_text(json.dumps(
        {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "num_hidden_layers": 3},
         "vision_config": {"num_hidden_layers": 27}}))
    result, _ = setup["make"](f"MODEL={setup['hf']}", "K=3", f"PRUNE_OUT={out}", check=False)
    assert "has 3 blocks (text_config.num_hidden_layers in its config.json)" in result.stderr, result.stderr
    setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}")
    # GPT-2's config gives them as n_layer, and the refusal names that key.
    (setup["hf"] / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 4}))
    result, lines = setup["make"](f"MODEL={setup['hf']}", "K=4", f"PRUNE_OUT={out}-gpt2", check=False)
    assert "has 4 blocks (n_layer in its config.json)" in result.stderr and "K is at most 3" in result.stderr, \
        result.stderr
    assert lines == []


def test_qwen3_vl_plans_keep_the_blocks_its_deepstack_features_follow(setup):
    """Qwen3-VL adds its vision tower's deepstack features after its language model's first
    blocks by position: the plan is chosen with them fixed (prune_hf.py refuses a plan removing
    one); other models' plans have no fixed blocks."""
    out = setup["tmp"] / "run"
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}")
    assert all("--fixed" not in line for line in calls(lines, "apply-prune"))
    (setup["hf"] / "config.json").write_text(json.dumps(
        {"model_type": "qwen3_vl", "text_config": {"model_type": "qwen3_vl_text", "num_hidden_layers": 8},
         "vision_config": {"deepstack_visual_indexes": [2, 4]}}))
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}")
    (plan,) = [line for line in calls(lines, "apply-prune") if "from-plan" not in line]
    assert arg(plan, "--fixed") == "0,1"


def test_mamba_is_exported_for_the_windows_length(setup):
    """Mamba's block graphs run windows of exactly one length (--fixed-seq-len): make prune gives
    the exporter SEQ_LEN, and refuses a length of the user's that is not SEQ_LEN before the export."""
    (setup["hf"] / "config.json").write_text(json.dumps({"model_type": "mamba2", "num_hidden_layers": 4}))
    out = setup["tmp"] / "run"
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}", "SEQ_LEN=32")
    (export,) = calls(lines, "export_layered.py")
    assert arg(export, "--fixed-seq-len") == "32"
    assert all(arg(line, "--seq-len") == "32" for line in calls(lines, "prepare-tokens"))
    # Another SEQ_LEN is another export (its graphs are for the old length).
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}", "SEQ_LEN=64")
    assert arg(calls(lines, "export_layered.py")[0], "--fixed-seq-len") == "64"
    # A length of the user's is passed as given when it is SEQ_LEN, refused otherwise; given as
    # SEQ_LEN gave it, the export is the one made already (its stamp reads `--flag=value` as
    # `--flag value`), and in a run folder of its own it is exported with the flag as typed.
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}", "SEQ_LEN=64",
                             "PRUNE_EXPORT_FLAGS=--fixed-seq-len=64")
    assert calls(lines, "export_layered.py") == [], lines
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}-given", "SEQ_LEN=64",
                             "PRUNE_EXPORT_FLAGS=--fixed-seq-len=64")
    (export,) = calls(lines, "export_layered.py")
    assert "--fixed-seq-len=64" in export and "--fixed-seq-len" not in export
    for flags in ("--fixed-seq-len 128", "--fixed-seq-len=128"):
        result, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}", "SEQ_LEN=64",
                                      f"PRUNE_EXPORT_FLAGS={flags}", check=False)
        assert result.returncode != 0 and "set SEQ_LEN=128" in result.stderr, result.stderr
        assert lines == []
    # Other architectures' exports are not given a length (nor re-done for a new SEQ_LEN).
    (setup["hf"] / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 4}))
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}-llama", "SEQ_LEN=32")
    assert "--fixed-seq-len" not in calls(lines, "export_layered.py")[0]
    _, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={out}-llama", "SEQ_LEN=64")
    assert calls(lines, "export_layered.py") == [] and calls(lines, "prepare-tokens")


@pytest.mark.parametrize("args, refused", [
    (["PRUNE_EXPORT_FLAGS=--dtype bf16"], True),
    (["PRUNE_EXPORT_FLAGS=--dtype=bf16 --no-check"], True),
    (["PRUNE_EXPORT_FLAGS=--dtype bf16", "DEVICE=cpu"], True),
    (["PRUNE_EXPORT_FLAGS=--dtype bf16", "DEVICE=cuda"], False),
    (["PRUNE_EXPORT_FLAGS=--dtype bf16", "DEVICE=cuda:1"], False),
    (["PRUNE_EXPORT_FLAGS=--dtype bf16", "EVALUATE_FLAGS=--device cuda --threads 0"], False),
    (["PRUNE_EXPORT_FLAGS=--dtype bf16 --dtype fp16"], False),  # the last one counts, as for argparse
    (["PRUNE_EXPORT_FLAGS=--dtype fp16"], False),
])
def test_a_bf16_export_is_refused_for_the_cpu_before_it_runs(setup, args, refused):
    """ONNX Runtime's CPU provider runs no bfloat16 graph: the export would be wasted."""
    out = setup["tmp"] / "run"
    result = subprocess.run(["make", "--no-print-directory", "-n", "prune", f"MODEL={setup['hf']}", "K=2",
                             f"PRUNE_OUT={out}", *args], cwd=ROOT, capture_output=True, text=True, env=make_env())
    if refused:
        assert result.returncode != 0 and "DEVICE=cuda" in result.stderr and "fp16" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "export_layered.py" in result.stdout


def test_gpt2_with_a_per_index_attention_scale_is_refused_before_anything_runs(setup):
    """prune_hf.py cannot write such a checkpoint, and would say so only after the plan."""
    (setup["hf"] / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_layer": 4, "scale_attn_by_inverse_layer_idx": True}, indent=2))
    result, lines = setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={setup['tmp'] / 'run'}", check=False)
    assert result.returncode != 0 and "scale_attn_by_inverse_layer_idx" in result.stderr, result.stderr
    assert lines == []
    (setup["hf"] / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_layer": 4, "scale_attn_by_inverse_layer_idx": False}, indent=2))
    setup["make"](f"MODEL={setup['hf']}", "K=1", f"PRUNE_OUT={setup['tmp'] / 'run'}")


def test_a_gguf_file_and_the_default_run_folder(setup):
    # The default run folder is build/runs/prune-<name>; -n only prints the commands.
    result = subprocess.run(["make", "--no-print-directory", "-n", "prune", f"MODEL={setup['gguf']}", "K=4",
                             "ADAPTIVE_BUDGET=0.5sleb", "DEVICE=cuda:1"],
                            cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert result.returncode == 0, result.stderr
    text = result.stdout
    run = "build/runs/prune-other.Q8_0"
    assert f"export_layered.py --gguf {setup['gguf']} --out {run}/model" in text
    assert f"prune_hf.py --gguf {setup['gguf']} --plans {run}/k4/plan-calibration.parquet" in text
    # The same blocks deleted from the GGUF file itself, as a GGUF file.
    assert (f"prune_gguf.py --gguf {setup['gguf']} --plans {run}/k4/plan-calibration.parquet --k 4 "
            f"--out {run}/k4/pruned.gguf --force") in " ".join(text.replace("\\\n", " ").split())
    # The decoder is made from the pruned checkpoint (a GGUF's architecture is known once loaded).
    assert f"export_generator.py --model {run}/k4/pruned-hf/ --out {run}/k4/pruned-generator.onnx" in text
    assert "apply-prune --method adaptive --budget 0.5sleb --race-se 3 --k 4" in text
    # The full model, the plan, its measurement on the held-out tokens, the pruned folder's
    # evaluation, and the flags checked before the export; not the folder's writing, which runs
    # no model.
    assert text.count("--device cuda:1") == 5
    assert "evaluate check-runtime-flags --device cuda:1" in text
    assert f"report.py summary --run {run} --plan-dir {run}/k4" in text


def gguf_header(path: Path, arch: str, blocks: int, first: str = "architecture"):
    """A GGUF file of metadata alone, as make prune reads it (report.py layers --gguf): a string
    array first (a tokenizer's, skipped), then general.architecture and ARCH.block_count in the
    order `first` says, version 3, no tensors."""
    import struct

    def string(text):
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    def pair(key, kind, value):
        return string(key) + struct.pack("<I", kind) + value

    tokens = pair("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + string("a") + string("b"))
    scores = pair("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<2f", 0.0, 1.0))
    named = pair("general.architecture", 8, string(arch))
    count = pair(f"{arch}.block_count", 4, struct.pack("<I", blocks))
    pairs = [tokens, scores] + ([named, count] if first == "architecture" else [count, named])
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + b"".join(pairs))
    return path


def test_a_gguf_files_architecture_and_blocks_are_read_from_its_header(setup):
    """A GPT-2 or Mamba GGUF file: make prune asked export_generator.py for its decoder, which it
    refuses (the run failed with no summary); a Mamba one had no --fixed-seq-len; a K the file
    cannot lose was refused only after the export. Read from the header: as for a folder."""
    out = setup["tmp"] / "run"
    # And a pruned GGUF file, but of a Gemma 2/3 27B (llama.cpp tells its attention scale by its
    # block count, which the pruning changes).
    for arch, blocks, generator, pruned_gguf in (("llama", 6, True, True), ("gpt2", 6, False, True),
                                                 ("mamba", 6, False, True), ("gemma3", 6, True, True),
                                                 ("gemma3", 62, True, False), ("gemma2", 46, True, False),
                                                 ("gemma2", 42, True, True)):
        # The block count before the architecture in the files that tell the generator's
        # default apart (a header that cannot be read asks for it, as for llama).
        gguf = gguf_header(setup["tmp"] / f"{arch}.gguf", arch, blocks,
                           first="count" if arch in ("gpt2", "gemma3") else "architecture")
        result = subprocess.run(["make", "--no-print-directory", "-n", "prune", f"MODEL={gguf}", "K=2",
                                 f"PRUNE_OUT={out}-{arch}", "SEQ_LEN=32"], cwd=ROOT, capture_output=True, text=True,
                                env=make_env())
        assert result.returncode == 0, result.stderr
        assert ("export_generator.py" in result.stdout) == generator, (arch, result.stdout)
        assert ("--fixed-seq-len 32" in result.stdout) == (arch == "mamba"), (arch, result.stdout)
        assert ("prune_gguf.py" in result.stdout) == pruned_gguf, (arch, blocks, result.stdout)
    gguf = gguf_header(setup["tmp"] / "four.gguf", "qwen2", 4, first="count")
    result, lines = setup["make"](f"MODEL={gguf}", "K=4", f"PRUNE_OUT={out}", check=False)
    assert result.returncode != 0 and "has 4 blocks (qwen2.block_count in its header)" in result.stderr \
        and "K is at most 3" in result.stderr, result.stderr
    assert lines == [] and not out.exists()
    # A file whose header cannot be read is left to the exporter, which names the problem.
    result = subprocess.run(["make", "--no-print-directory", "-n", "prune", f"MODEL={setup['gguf']}", "K=2"],
                            cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert result.returncode == 0 and "export_generator.py" in result.stdout, result.stderr


def test_a_hugging_face_folder_named_gguf_is_given_with_its_slash(setup):
    """As the refusal of a folder named *.gguf says: with a slash after it, it is a Hugging Face
    folder, and the run is named after it without the .gguf, as a GGUF file's would be."""
    model = shutil.copytree(setup["hf"], setup["tmp"] / "mine.gguf")
    out = setup["tmp"] / "run"
    result, lines = setup["make"](f"MODEL={model}/", "K=2", f"PRUNE_OUT={out}")
    (export,) = calls(lines, "export_layered.py")
    assert arg(export, "--model") == str(model) and "--gguf" not in export
    result = subprocess.run(["make", "--no-print-directory", "-n", "prune", f"MODEL={model}/", "K=2"],
                            cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert result.returncode == 0, result.stderr
    assert "report.py summary --run build/runs/prune-mine --plan-dir" in result.stdout, result.stdout


@pytest.mark.parametrize("texts, one", [
    (["CALIB_TEXT={tmp}/calib.txt", "EVAL_TEXT={tmp}/calib.txt"], "{tmp}/calib.txt"),
    (["CALIB_TEXT={tmp}/calib.txt", "EVAL_TEXT={tmp}/bin/../calib.txt"], "{tmp}/calib.txt"),
    (["CALIB_TEXT={tmp}/link.txt", "EVAL_TEXT={tmp}/calib.txt"], "{tmp}/link.txt"),
    (["CALIB_TEXT={tmp}/calib.txt", "EVAL_TEXT={tmp}/eval.txt"], None),
])
def test_one_file_as_both_texts_is_named_to_the_summary(setup, texts, one):
    """The summary called the perplexity on EVAL_TEXT held-out when it was CALIB_TEXT's file (other
    windows, which may overlap: not the tokens it refuses); the Makefile's warning was the log's
    first line. The file is passed to it however it is spelled (a link, a path through ..)."""
    (setup["tmp"] / "link.txt").symlink_to(setup["tmp"] / "calib.txt")
    texts = [text.format(tmp=setup["tmp"]) for text in texts]
    result, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={setup['tmp'] / 'run'}", *texts)
    (summary,) = calls(lines, "report.py")
    if one:
        assert arg(summary, "--one-text") == one.format(tmp=setup["tmp"])
        assert "CALIB_TEXT and EVAL_TEXT are one file" in result.stderr
    else:
        assert "--one-text" not in summary and "one file" not in result.stderr, result.stderr


def test_the_run_folder_is_named_after_the_model_however_it_is_spelled(setup):
    """MODEL=dir/. (or a path through ..) named the run folder after the last word of the path:
    build/runs/prune-. for `dir/.`. (-n: the checkout's build/runs is only named.)"""
    model = setup["hf"].rename(setup["tmp"] / "name-check-model")
    for spelling in (f"{model}/.", f"{model}/./", f"{setup['tmp']}/bin/../{model.name}"):
        result = subprocess.run(["make", "--no-print-directory", "-n", "prune", f"MODEL={spelling}", "K=2"],
                                cwd=ROOT, capture_output=True, text=True, env=make_env())
        assert result.returncode == 0, result.stderr
        run = "build/runs/prune-name-check-model"
        assert f"report.py summary --run {run} --plan-dir {run}/k2" in result.stdout, (spelling, result.stdout[-2000:])


@pytest.mark.parametrize("model_type, setting, made", [
    ("gpt2", None, False),           # not one of export_generator.py's architectures: pruned without it
    ("gpt_neox", None, False),
    ("qwen2", None, True),
    ("gemma3_text", None, True),
    ("phi3", None, True),
    ("mamba2", None, False),
    ("gemma3", None, False),         # multimodal: the pruned checkpoint, no decoder
    ("llama", "PRUNE_GENERATOR=0", False),  # skipped on request
    ("gpt2", "PRUNE_GENERATOR=1", True),    # asked for whatever the architecture (the tool decides)
])
def test_the_decoder_is_made_for_its_architectures_only(setup, model_type, setting, made):
    out = setup["tmp"] / "run"
    # As transformers writes it (sorted keys, nested configs after the top-level model_type).
    (setup["hf"] / "config.json").write_text(json.dumps(
        {"model_type": model_type, "text_config": {"model_type": "llama"}}, indent=2, sort_keys=True))
    result, lines = setup["make"](f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}", *([setting] if setting else []))
    assert [line[0] for line in lines][-3:] == (["prune_hf.py", "export_generator.py", "report.py"] if made
                                                else ["evaluate", "prune_hf.py", "report.py"])
    assert (out / "k2" / "pruned-generator.onnx").is_file() == made
    (report,) = calls(lines, "report.py", "summary")
    assert ("--generator" in report) == made, report


@pytest.mark.parametrize("args, message", [
    ([], "set MODEL="),
    (["MODEL={hf}"], "set K="),
    (["MODEL={hf}", "K=0"], "must be the number of blocks"),
    (["MODEL={hf}", "K=two"], "must be the number of blocks"),
    (["MODEL={hf}", "K=02"], "without a sign or a leading zero"),  # k02/ beside k2/ for one k
    # Any value but 0 and 1 skipped the decoder without a word.
    (["MODEL={hf}", "K=2", "PRUNE_GENERATOR=yes"], "PRUNE_GENERATOR='yes' must be 0"),
    (["MODEL={hf}", "K=2", "PRUNE_GENERATOR=true"], "PRUNE_GENERATOR='true' must be 0"),
    (["MODEL={tmp}/missing", "K=2"], "does not exist"),
    (["MODEL={tmp}", "K=2"], "no config.json"),
    # A layered export (manifest.json) is named as one, with the source it needs and the way by hand.
    (["MODEL={tmp}/layered", "K=2"], "make prune: MODEL={tmp}/layered is a layerprune layered export (it holds "
                                     "manifest.json), not a checkpoint: make prune needs the source it was "
                                     "exported from"),
    (["MODEL={tmp}/layered", "K=2"], "apply-prune --method adaptive --budget sleb --race-se 3 --k 2 --model "
                                     "{tmp}/layered --tokens tokens-calib.parquet"),
    (["MODEL={hf}", "K=2", "MAX_PPL_RATIO=1.5"], "not both"),
    (["MODEL={hf}", "MAX_PPL_RATIO=1"], "must be a number above 1"),
    (["MODEL={hf}", "MAX_PPL_RATIO=1.5x"], "must be a number above 1"),
    (["MODEL={hf}", "K=2", "MAX_PPL_RATIO_SE=2"], "set MAX_PPL_RATIO=ratio too"),
    (["MODEL={hf}", "MAX_PPL_RATIO=1.5", "MAX_PPL_RATIO_SE=-1"], "must be a number of standard errors"),
    (["MODEL={hf}", "MAX_PPL_RATIO=1.5", "MAX_PPL_RATIO_SE=two"], "must be a number of standard errors"),
    # A window of one token scores nothing: prepare-tokens refused it only once the stamps took it in.
    (["MODEL={hf}", "K=2", "SEQ_LEN=1"], "SEQ_LEN='1' must be a number of tokens per window: 2 or more"),
    # A text that is not there was Make's "No rule to make target", once the held-out steps had run.
    (["MODEL={hf}", "K=2", "CALIB_TEXT={tmp}/nope.txt"], "make prune: CALIB_TEXT={tmp}/nope.txt does not exist"),
    (["MODEL={hf}", "K=2", "EVAL_TEXT={tmp}/nope.txt"], "make prune: EVAL_TEXT={tmp}/nope.txt does not exist"),
    (["MODEL={hf}", "K=2", "CALIB_TEXT={tmp}"], "make prune: CALIB_TEXT={tmp} is a folder, not a text file"),
    # A folder named *.gguf was said not to exist, by the exporter.
    (["MODEL={tmp}/bin.gguf", "K=2"], "make prune: MODEL={tmp}/bin.gguf is a folder, not a GGUF file.  Stop."),
    (["MODEL={tmp}/hf.gguf", "K=2"], "make prune: MODEL={tmp}/hf.gguf is a folder, not a GGUF file: a Hugging "
                                     "Face model folder whose name ends in .gguf is given with a slash after it "
                                     "(MODEL={tmp}/hf.gguf/)"),
])
def test_bad_model_or_k_is_refused_before_anything_runs(setup, args, message):
    (setup["tmp"] / "bin.gguf").mkdir()
    shutil.copytree(setup["hf"], setup["tmp"] / "hf.gguf")
    (setup["tmp"] / "layered").mkdir()
    (setup["tmp"] / "layered" / "manifest.json").write_text("{}")
    args = [a.format(hf=setup["hf"], tmp=setup["tmp"]) for a in args]
    message = message.format(tmp=setup["tmp"])
    # A run folder of the test's own: a refusal that fails writes no build/runs/prune-my-model
    # into the checkout (which the default-folder tests' `make -n` would then refuse as another
    # model's run).
    result, lines = setup["make"](*args, f"PRUNE_OUT={setup['tmp'] / 'run'}", check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert lines == []


def test_the_make_list_of_fixed_length_architectures_is_the_exporter_s():
    """pipelines/prune.mk's PRUNE_FIXED_LENGTH_TYPES names export_layered.py's MAMBA_MODEL_TYPES
    (its FIXED_LENGTH_MODEL_TYPES), read from its source."""
    import ast

    (make_line,) = [line for line in (ROOT / "pipelines" / "prune.mk").read_text().splitlines()
                    if line.startswith("PRUNE_FIXED_LENGTH_TYPES =")]
    tree = ast.parse((ROOT / "tools" / "export" / "export_layered.py").read_text())
    values = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)}
    assert isinstance(values["FIXED_LENGTH_MODEL_TYPES"], ast.Name)
    assert values["FIXED_LENGTH_MODEL_TYPES"].id == "MAMBA_MODEL_TYPES"
    assert set(make_line.split("=", 1)[1].split()) == ast.literal_eval(values["MAMBA_MODEL_TYPES"])


def test_the_make_list_of_generator_architectures_is_the_tool_s():
    """pipelines/prune.mk's PRUNE_GENERATOR_TYPES names exactly export_generator.py's
    SUPPORTED_MODEL_TYPES (read from its source: the tool needs torch to import)."""
    import ast

    root = Path(__file__).resolve().parents[2]
    (make_line,) = [line for line in (root / "pipelines" / "prune.mk").read_text().splitlines()
                    if line.startswith("PRUNE_GENERATOR_TYPES =")]
    tree = ast.parse((root / "tools" / "export" / "export_generator.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["SUPPORTED_MODEL_TYPES"]]
    assert set(make_line.split("=", 1)[1].split()) == ast.literal_eval(value)

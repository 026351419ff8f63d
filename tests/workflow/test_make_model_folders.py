"""Make's rules that write model folders (apply-prune --pruned-out, quantize --out; the exports
and the Hugging Face checkpoints): the stage builds the folder beside its place and renames it
into place whole, its manifest.json (the rule's target) with it, then exits. Make deleted that
manifest when a Ctrl-C reached it in between (or when the stage failed after the rename, under
.DELETE_ON_ERROR), which left a complete folder without its manifest that `--overwrite` then
refused on every later make ("replaces only a model folder"). The manifest is now .PRECIOUS, and
each stage's rule first clears a folder an older make left so (pipelines/clear_stale_model_folder.sh),
never a folder with files of anything else.

The window is held open deterministically: the stages that write the folders are wrappers that
run the real stage (on the tiny fixture; make prune's are stand-ins) and then, for the one folder
a test names, wait as a stage deleting a large old folder would, or fail. Seconds a case.
"""

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_make_settings import BIN, ROOT, TINY, text
from test_prune import make_env, setup  # noqa: F401 (setup: make prune's stand-ins, a fixture)

CLEAR = ROOT / "pipelines" / "clear_stale_model_folder.sh"

# Runs the stage it stands in for (its name, in the folder REAL_BIN); once that stage has put
# the folder MODEL_FOLDER_TEST_HOLD in place, says so (MODEL_FOLDER_TEST_READY) and waits to be
# interrupted, or fails (MODEL_FOLDER_TEST_AFTER=fail).
WRAPPER = r'''#!PYTHON
import os, subprocess, sys, time
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
status = subprocess.call([str(Path(REAL_BIN) / name)] + args)
folder = next((args[i + 1] for i, flag in enumerate(args[:-1]) if flag in ("--pruned-out", "--out")), None)
held = os.environ.get("MODEL_FOLDER_TEST_HOLD")
if status == 0 and folder and held and Path(folder).resolve() == Path(held).resolve():
    if os.environ.get("MODEL_FOLDER_TEST_AFTER") == "fail":
        sys.exit(1)
    Path(os.environ["MODEL_FOLDER_TEST_READY"]).write_text("")
    time.sleep(120)
sys.exit(status)
'''


def wrap(bin_dir, real, names):
    """bin_dir: `real`'s programs, `names` wrapped (the rest linked)."""
    bin_dir.mkdir(exist_ok=True)
    for program in Path(real).iterdir():
        if program.is_file() and os.access(program, os.X_OK) and program.name not in names:
            (bin_dir / program.name).symlink_to(program)
    for name in names:
        path = bin_dir / name
        path.write_text(WRAPPER.replace("#!PYTHON", f"#!{sys.executable}").replace("REAL_BIN", repr(str(real))))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_make(command, env, hold=None, after=None, ready=None):
    """Runs make; with `hold`, in a process group of its own with SIGINT at its default (a test
    run in the background inherits it ignored), interrupted as a Ctrl-C is once the stage has put
    `hold` in place (after="interrupt"), or left to fail there (after="fail"). Returns the exit
    status and the output."""
    env = dict(env)
    if hold:
        env.update(MODEL_FOLDER_TEST_HOLD=str(hold), MODEL_FOLDER_TEST_AFTER=after,
                   MODEL_FOLDER_TEST_READY=str(ready))
        ready.unlink(missing_ok=True)
    make = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if hold and after == "interrupt":
            deadline = time.time() + 300
            while not ready.exists() and make.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert ready.exists(), f"the stage never put {hold} in place:\n{make.communicate()[0]}"
            os.killpg(make.pid, signal.SIGINT)
        output, _ = make.communicate(timeout=300)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    return make.returncode, output


def writes(output, folder):
    """Whether make ran a stage that writes `folder` (its command line names it)."""
    folder = str(folder).rstrip("/")
    return any(re.search(rf"(--pruned-out|--out) {re.escape(folder)}/?( |$)", line)
               for line in output.splitlines())


def check_folder(folder):
    """The folder is a whole model folder to the stages (inspect checks every file's hash)."""
    result = subprocess.run([str(BIN / "inspect"), str(folder)], capture_output=True, text=True, env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def fixture_make(tmp_path):
    """`make SETTINGS... TARGET` on the tiny fixture with the real stages, apply-prune and
    quantize wrapped, everything written in tmp_path; returns (run, paths)."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "ort-cpu").symlink_to(ROOT / "build" / "ort-cpu")
    bin_dir = tmp_path / "bin"
    wrap(bin_dir, BIN, ("apply-prune", "quantize"))
    settings = [f"BIN={bin_dir}", "CARGO=true", f"MODEL_DIR={TINY}", f"BUILD={build}", f"RUN={tmp_path / 'run'}",
                f"CALIB_TEXT={text(tmp_path / 'calib.txt', 1)}", f"EVAL_TEXT={text(tmp_path / 'eval.txt', 2)}",
                "MASKS=20", "KS=2,3", "K_PRUNED=2", "SEQ_LEN=32", "CALIB_WINDOWS=4", "EVAL_WINDOWS=4", "THREADS=1",
                "QUANT_SCHEMES=int8", "QUANT_FIRST=int8"]
    env = make_env()

    def run(target, **hold):
        return run_make(["make", "--no-print-directory", *settings, str(target)], env,
                        ready=tmp_path / "ready", **hold)

    quant = build / "quant" / "tiny-llama"
    return run, {"demo-pruned": tmp_path / "run" / "pruned-k2", "quantized": quant / "full-int8",
                 "quantized-pruned": quant / "pruned-k2-int8", "quantized-run-pruned": quant / "run-int8" / "pruned-k2"}


def out_of_date(folder):
    """The folder's manifest dated before its rule's inputs, as after one of them changed."""
    earlier = time.time() - 600
    os.utime(folder / "manifest.json", (earlier, earlier))


def interrupted_then_cleared(run, folder, check=check_folder):
    """The rule's whole story: made; made again and interrupted once the new folder is in place;
    then up to date. Then the folder left without its manifest, as an older make left it: the next
    make writes it again."""
    manifest = folder / "manifest.json"
    status, output = run(manifest)
    assert status == 0 and manifest.is_file(), output
    out_of_date(folder)
    before = manifest.stat().st_mtime_ns
    status, output = run(manifest, hold=folder, after="interrupt")
    assert status != 0, output
    assert manifest.is_file(), f"make deleted the manifest of a folder in place:\n{output}"
    assert manifest.stat().st_mtime_ns != before, "the stage did not write the folder again"
    check(folder)
    status, output = run(manifest)
    assert status == 0, output
    assert not writes(output, folder), f"the folder in place was written again:\n{output}"

    manifest.unlink()
    status, output = run(manifest)
    assert status == 0, output
    assert writes(output, folder) and manifest.is_file(), output
    assert f"removed {folder}, a model folder without its manifest.json" in output, output
    check(folder)


@pytest.mark.parametrize("case", ["demo-pruned", "quantized", "quantized-pruned", "quantized-run-pruned"])
def test_a_folder_in_place_keeps_its_manifest_when_make_is_interrupted_and_one_without_is_written_again(
        fixture_make, case):
    run, folders = fixture_make
    interrupted_then_cleared(run, folders[case])


def test_a_folder_in_place_keeps_its_manifest_when_the_stage_fails_after_the_rename(fixture_make):
    """.DELETE_ON_ERROR removed it too. The folder in place is whole (the stages write nothing
    after the rename), so the next make takes it as done."""
    run, folders = fixture_make
    for case in ("quantized", "demo-pruned"):
        folder = folders[case]
        manifest = folder / "manifest.json"
        status, output = run(manifest)
        assert status == 0, output
        out_of_date(folder)
        status, output = run(manifest, hold=folder, after="fail")
        assert status != 0 and "Deleting file" not in output, output
        assert manifest.is_file(), output
        check_folder(folder)
        status, output = run(manifest)
        assert status == 0 and not writes(output, folder), output


def test_a_folder_without_a_manifest_holding_other_files_is_left_and_named(fixture_make):
    """Only a folder of a model folder's files is cleared: one with anything else at the rule's
    path (a user's notes, a Hugging Face checkpoint) is refused, named, and left as it was."""
    run, folders = fixture_make
    folder = folders["quantized"]
    manifest = folder / "manifest.json"
    status, output = run(manifest)
    assert status == 0, output
    manifest.unlink()
    (folder / "notes.txt").write_text("mine\n")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    status, output = run(manifest)
    assert status != 0, output
    assert f"{folder} has no manifest.json and holds what no model folder holds (notes.txt)" in output, output
    assert not writes(output, folder), output
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert (folder / "notes.txt").read_text() == "mine\n"


def test_make_prune_s_pruned_folder_keeps_its_manifest_when_interrupted(setup):  # noqa: F811
    """make prune's pruned folder (stand-in stages: the rule's Make logic, as test_prune.py)."""
    tmp = setup["tmp"]
    bin_dir = tmp / "bin"
    real = tmp / "real-bin"
    real.mkdir()
    os.rename(bin_dir / "apply-prune", real / "apply-prune")
    wrap(bin_dir, real, ("apply-prune",))
    out = tmp / "run"
    folder = out / "k2" / "pruned"
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={out}"]
    setup["make"](*base)
    manifest = folder / "manifest.json"
    assert manifest.is_file()
    command = ["make", "--no-print-directory", "prune", f"BIN={bin_dir}", f"VENV_EXPORT={tmp / 'venv'}", "CARGO=true",
               f"ORT_LIB={tmp / 'libonnxruntime.so'}", f"CALIB_TEXT={tmp / 'calib.txt'}",
               f"EVAL_TEXT={tmp / 'eval.txt'}", f"PYTHON={sys.executable}", *base]
    env = make_env()
    env["PRUNE_TEST_LOG"] = str(tmp / "log.txt")
    out_of_date(folder)
    status, output = run_make(command, env, hold=folder, after="interrupt", ready=tmp / "ready")
    assert status != 0 and manifest.is_file(), output
    status, output = run_make(command, env)
    assert status == 0 and not writes(output, folder), output
    # Left without its manifest by an older make: cleared, then written again.
    manifest.unlink()
    (folder / "block_000.onnx").write_text("graph\n")
    status, output = run_make(command, env)
    assert status == 0 and writes(output, folder) and manifest.is_file(), output
    assert not (folder / "block_000.onnx").exists(), output


def make_database(tmp_path):
    """`make -p` of every makefile, settings given so that make prune's rules are there too:
    [(targets, recipe)] of every rule, and the targets (or patterns) marked .PRECIOUS."""
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama"}\n')
    result = subprocess.run(["make", "-pnq", "--no-print-directory", f"BIN={BIN}", "CARGO=true",
                             f"BUILD={tmp_path / 'build'}", f"RUN={tmp_path / 'run'}", f"MODEL={hf}", "K=2",
                             f"PRUNE_OUT={tmp_path / 'prune'}", "help"],
                            cwd=ROOT, capture_output=True, text=True, env=make_env())
    rules, precious, current = [], [], None
    for line in result.stdout.splitlines():
        if line.startswith("\t"):
            if current is not None:
                current[1].append(line)
            continue
        if line.startswith("#"):  # what make says of the rule above, between it and its recipe
            continue
        current = None
        if line.startswith(".PRECIOUS:"):
            precious += line.split(":", 1)[1].split()
        elif line and not line.startswith(" ") and re.match(r"^[^=]*[^:=]:(?!=)", line):
            current = (line.split(":", 1)[0].split(), [])
            rules.append(current)
    return rules, precious, result.stdout + result.stderr


def precious_match(target, precious):
    """`target` (a file, or a pattern rule's pattern) is among `precious` or matches a pattern there."""
    return any(target == p or ("%" in p and re.fullmatch(re.escape(p).replace("%", ".+"), target))
               for p in precious)


def test_every_rule_that_writes_a_model_folder_keeps_its_manifest_and_clears_a_stale_one(tmp_path):
    """Every rule whose recipe writes a model folder or checkpoint renamed into place (a stage's
    --pruned-out or quantize's --out, the exporter's, prune_hf.py's) marks its target
    .PRECIOUS; the stages' rules clear a folder left without its manifest first, as Snakemake's
    pruned_model does."""
    rules, precious, output = make_database(tmp_path)
    writers = {"stage": re.compile(r"--pruned-out|/quantize .*--out"),
               "export": re.compile(r"export_layered\.py|prune_hf\.py")}
    found = {"stage": [], "export": []}
    for targets, recipe in rules:
        recipe = "\n".join(recipe)
        for kind, pattern in writers.items():
            if pattern.search(recipe):
                found[kind] += targets
                for target in targets:
                    assert precious_match(target, precious), f"{target}: not .PRECIOUS\n{recipe}"
                if kind == "stage":
                    assert "pipelines/clear_stale_model_folder.sh" in recipe, recipe
    # The demo's, make prune's and the quantized run's pruned folders, the quantized ones; the
    # exports of the two fetched models and make prune's, and the two checkpoints.
    assert len(found["stage"]) == 5 and len(found["export"]) == 5, (found, output[-2000:])
    snakefile = (ROOT / "pipelines" / "Snakefile").read_text()
    shells = [shell for shell in re.findall(r'shell:\n((?:[ ]+f?".*\n)+)', snakefile) if "--pruned-out" in shell]
    assert shells
    for shell in shells:
        assert "pipelines/clear_stale_model_folder.sh {PRUNED} &&" in shell, shell


def clear(folder):
    result = subprocess.run(["sh", str(CLEAR), str(folder)], capture_output=True, text=True)
    return result.returncode, result.stderr


def plant(folder, *names):
    for name in names:
        path = folder / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)


def test_only_a_model_folder_without_its_manifest_is_cleared(tmp_path):
    model_files = ("embed.onnx", "block_000.onnx", "head.onnx", "tokenizer.json", "weights/0a1b.bin")
    # A model folder's files alone (its name with wildcards of find's), or nothing: removed.
    for name in ("pruned-k2", "a*[b]?", "empty"):
        folder = tmp_path / name
        folder.mkdir()
        if name != "empty":
            plant(folder, *model_files)
        status, stderr = clear(f"{folder}/")
        assert status == 0 and not folder.exists(), stderr
        assert "a model folder without its manifest.json" in stderr
    # Anything else there: refused, named, nothing removed.
    for extra, named in [("notes.txt", "notes.txt"), ("model.safetensors", "model.safetensors"),
                         ("weights/sub/", "weights/sub"), (".hidden", ".hidden"), ("graphs/a.onnx", "graphs"),
                         ("block.onnx/", "block.onnx")]:
        folder = tmp_path / "other"
        folder.mkdir()
        plant(folder, *model_files, extra)
        before = sorted(folder.rglob("*"))
        status, stderr = clear(folder)
        assert status == 1 and f"holds what no model folder holds ({named})" in stderr, (extra, stderr)
        assert sorted(folder.rglob("*")) == before
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    # A link in weights/ (to a file outside) is no file the stages write: refused, the target kept.
    outside = tmp_path / "outside.bin"
    outside.write_text("outside")
    folder = tmp_path / "linked"
    plant(folder, *model_files)
    (folder / "weights" / "b.bin").symlink_to(outside)
    assert clear(folder)[0] == 1 and outside.read_text() == "outside"
    # With a manifest (whatever it says), a link, or nothing there: left to the stage.
    with_manifest = tmp_path / "with-manifest"
    plant(with_manifest, "manifest.json", "notes.txt")
    link = tmp_path / "link"
    link.symlink_to(folder)
    for path in (with_manifest, link, tmp_path / "missing"):
        assert clear(path) == (0, ""), path
    assert (with_manifest / "notes.txt").exists() and (folder / "weights" / "b.bin").is_symlink()
    # A link to a model folder without its manifest, however it is spelled (with trailing slashes
    # `link//` was `link/`, the target, which was emptied), and `.`, `..` and `/`: left as they are.
    target = tmp_path / "target"
    plant(target, *model_files)
    before = sorted(target.rglob("*"))
    (tmp_path / "to-target").symlink_to(target)
    for path in ("to-target", "to-target/", "to-target//", "to-target/.", "to-target/weights/.."):
        assert clear(f"{tmp_path}/{path}") == (0, ""), path
        assert sorted(target.rglob("*")) == before, path
    assert clear("/") == (0, "") and clear("//") == (0, "")
    # A model folder reached through a linked parent is that folder: cleared.
    plant(target / "inner", *model_files)
    status, stderr = clear(f"{tmp_path}/to-target/inner//")
    assert status == 0 and not (target / "inner").exists() and sorted(target.rglob("*")) == before, stderr


def test_a_folder_is_listed_where_it_is_whatever_cdpath_says(tmp_path):
    """`cd FOLDER` obeyed CDPATH, and printed the folder it went to among the files it found."""
    folder = tmp_path / "pruned-k2"
    plant(folder, "block_000.onnx", "tokenizer.json")
    elsewhere = tmp_path / "elsewhere" / "pruned-k2"
    plant(elsewhere, "notes.txt")
    result = subprocess.run(["sh", str(CLEAR), "pruned-k2"], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "CDPATH": str(tmp_path / "elsewhere")})
    assert result.returncode == 0 and not folder.exists(), result.stderr
    assert (elsewhere / "notes.txt").exists()

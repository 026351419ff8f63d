"""Make and Snakemake, the two fronts of the pipeline, take the same settings and rerun alike.

- One grammar per setting (pipelines/settings.py's GRAMMAR): the top-level Makefile and the
  Snakefile accept and refuse the same values, and what they accept the stages accept.
- A changed Python tool, or a module of this checkout it imports, reruns its Snakemake jobs, as
  Make's prerequisites remake its files: both read pipelines/tool_imports.mk; a touched one reruns
  nothing in Snakemake (it compares the checksums it recorded).
- `summary: false` still makes the pruned model's measured plan, as Make's demo does.

Needs make, the stage binaries (LAYERPRUNE_BIN) and Snakemake (build/venv-workflow).
"""

import ast
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
FIXTURE = ROOT / "data" / "fixtures" / "tiny-llama"


def load_settings():
    spec = importlib.util.spec_from_file_location("layerprune_settings", ROOT / "pipelines" / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETTINGS = load_settings()

# (Make's name, value, accepted). The audit's cases first (ADAPTIVE_BUDGET=0, 0sleb, 0.0sleb were
# taken by one front or the other, 1e-1sleb refused by Make; MASKS, STRATA, KS passed Make), then
# the neighbours of each rule.
CASES = [
    ("ADAPTIVE_BUDGET", "0", False),
    ("ADAPTIVE_BUDGET", "0sleb", False),
    ("ADAPTIVE_BUDGET", "0.0sleb", False),
    ("ADAPTIVE_BUDGET", "1e-1sleb", True),
    ("MASKS", "2O", False),
    ("MASKS", "0", False),
    ("STRATA", "2x", False),
    ("KS", "0,2", False),
    ("ADAPTIVE_BUDGET", "0.5sleb", True),
    ("ADAPTIVE_BUDGET", ".5sleb", True),
    ("ADAPTIVE_BUDGET", "least", True),
    ("ADAPTIVE_BUDGET", "sleb", True),
    ("ADAPTIVE_BUDGET", "40", True),
    ("ADAPTIVE_BUDGET", "040", False),
    ("ADAPTIVE_BUDGET", "1e999sleb", False),
    ("ADAPTIVE_BUDGET", "1e-400sleb", False),
    ("ADAPTIVE_BUDGET", "infsleb", False),
    ("ADAPTIVE_BUDGET", "-1sleb", False),
    ("ADAPTIVE_BUDGET", "1_0sleb", False),
    ("MASKS", "20", True),
    ("MASKS", "020", False),
    ("STRATA", "2,5", True),
    ("STRATA", "0,2", True),
    ("STRATA", "02", False),
    ("KS", "1,2", True),
    ("KS", "01,2", False),
    ("K_PRUNED", "02", False),
    ("SEED", "07", False),
    ("SEED", "12", True),
    ("SEQ_LEN", "01", False),
    ("SEQ_LEN", "32", True),
    ("CALIB_WINDOWS", "1O", False),
    ("EVAL_WINDOWS", "0", False),
    ("EVAL_WINDOWS", "4", True),
    ("THREADS", "01", True),
    ("THREADS", "x", False),
    ("BOS", "on", False),
    ("DEVICE", "gpu", False),
    ("SURROGATE_RIDGE", "1e999", False),
    ("SURROGATE_RIDGE", "1e-3", True),
    ("SURROGATE_RIDGE", "-0.1", False),
]
# Run through Snakemake too (a load of the Snakefile each, some seconds): the audit's and a few more.
SNAKEMAKE_CASES = CASES[:8] + [c for c in CASES if c[:2] in {
    ("ADAPTIVE_BUDGET", "040"), ("ADAPTIVE_BUDGET", "1e999sleb"), ("MASKS", "020"), ("STRATA", "0,2"),
    ("K_PRUNED", "02"), ("SEED", "07"), ("SURROGATE_RIDGE", "1e999"), ("THREADS", "01")}]


def case_id(case):
    return f"{case[0]}={case[1]}"


def make_env():
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def make_refuses(name, value):
    """Whether the Makefile's settings checks refuse NAME=value (`make -n help`, which reads no
    setting: any refusal is the check's), and the message."""
    result = subprocess.run(["make", "--no-print-directory", "-n", "help", f"{name}={value}"], cwd=ROOT,
                            capture_output=True, text=True, env=make_env())
    refused = f"{name}='{value}' must be" in result.stderr
    assert refused == (result.returncode != 0), result.stderr
    return refused, result.stderr


def text_file(directory):
    rng = random.Random(0)
    words = "the a cat dog sat on mat ran far away quick brown fox jumps over lazy river tree house".split()
    path = directory / "text.txt"
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(80)) + "."
                                for _ in range(60)) + "\n")
    return path


def ort_library():
    version = SETTINGS.Settings(ROOT / "pipelines" / "settings.mk").variables["ORT_VERSION"][1]
    return os.environ.get("ORT_DYLIB_PATH") or str(
        ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi" / f"libonnxruntime.so.{version}")


def write_config(directory, **overrides):
    """The tiny fixture (6 blocks), small and on one thread; values as strings where a setting's
    text is what is checked (JSON is YAML)."""
    config = {"bin": str(BIN), "model_dir": str(FIXTURE), "model_name": "tiny", "run": str(directory / "run"),
              "calib_text": str(text_file(directory)), "eval_text": str(directory / "text.txt"),
              "calib_windows": 4, "eval_windows": 4, "seq_len": 32, "masks": 20, "round_masks": 10, "rounds": 1,
              "ks": "1,2", "k_pruned": 2, "threads": 1, "evaluate_chunk": 1, "pruned_formats": [],
              "export_python": sys.executable, "ort_dylib": ort_library()}
    config.update(overrides)
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def snakemake(snakefile, workdir, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir),
                           *args], cwd=ROOT, capture_output=True, text=True)


def job_counts(output):
    """The 'Job stats' table of a (dry) run: rule -> number of jobs; {} for nothing to do."""
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


# --- One grammar ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_grammar_decides_as_expected(case):
    name, value, accepted = case
    assert (SETTINGS.refusal(name, value) is None) == accepted, SETTINGS.refusal(name, value)


def test_every_default_of_settings_mk_is_accepted():
    # Make checks only the settings given (a make given none starts no Python): the defaults must pass.
    defaults = {name.upper(): value for name, value in SETTINGS.Settings().settings().items()}
    assert set(SETTINGS.GRAMMAR) <= set(defaults), set(SETTINGS.GRAMMAR) - set(defaults)
    refused = [SETTINGS.refusal(name, defaults[name]) for name in SETTINGS.GRAMMAR]
    assert refused == [None] * len(refused), refused


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_make_refuses_what_the_grammar_refuses_naming_it(case):
    name, value, accepted = case
    refused, stderr = make_refuses(name, value)
    assert refused != accepted, stderr
    if refused:
        # The setting, its value and what is wanted, as pipelines/settings.py words it.
        assert SETTINGS.refusal(name, value) in stderr, stderr


@pytest.mark.parametrize("case", SNAKEMAKE_CASES, ids=case_id)
def test_the_snakefile_refuses_what_make_refuses(tmp_path, case):
    name, value, accepted = case
    key = name.lower()
    overrides = {key: value}
    if key == "k_pruned":
        overrides["ks"] = "1,2"
    config = write_config(tmp_path, **overrides)
    result = snakemake(ROOT / "pipelines" / "Snakefile", tmp_path / "wd", "--configfile", str(config), "-l")
    said = result.stdout + result.stderr
    assert (result.returncode == 0) == accepted, said[-3000:]
    assert make_refuses(name, value)[0] != accepted
    if not accepted:
        assert f"pipelines/Snakefile: {key}='{value}': must be" in said, said[-3000:]


def test_a_list_with_spaces_is_snakemakes_alone(tmp_path):
    """KS="1 2" would reach apply-prune as `--k 1 2`: Make refuses it; Snakemake takes lists
    (`ks: [1, 2]`, `1 2`) and joins them with commas, the one form both give the stages."""
    assert make_refuses("KS", "1 2")[0]
    config = write_config(tmp_path, ks=[1, 2])
    result = snakemake(ROOT / "pipelines" / "Snakefile", tmp_path / "wd", "--configfile", str(config),
                       "-n", "-p", f"{tmp_path}/run/plans/sleb-calibration.parquet")
    assert result.returncode == 0 and "--k 1,2 " in result.stdout + result.stderr, result.stderr[-3000:]


def stage_refuses(stage, *args):
    """Whether the stage's own parser refuses the flag's value (clap: "invalid value"), not some
    other argument missing."""
    result = subprocess.run([str(BIN / stage), *args], capture_output=True, text=True)
    assert result.returncode != 0
    return "invalid value" in result.stderr


# The stages take what the fronts take. They also take what the fronts refuse for writing alone:
# a leading zero or a sign (the stamps and commands record the text, so 040 and 40 would be two runs).
FRONTS_STRICTER = {("ADAPTIVE_BUDGET", "040"), ("MASKS", "020"), ("STRATA", "02"), ("KS", "01,2"),
                   ("K_PRUNED", "02"), ("SEED", "07"), ("SEQ_LEN", "01")}
STAGE_FLAGS = {"ADAPTIVE_BUDGET": ("apply-prune", "--budget"), "SURROGATE_RIDGE": ("fit-surrogate", "--ridge-alpha"),
               "STRATA": ("sample-masks", "--strata"), "KS": ("apply-prune", "--k"),
               "MASKS": ("sample-masks", "--stratified-masks")}


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in STAGE_FLAGS], ids=case_id)
def test_what_the_fronts_accept_the_stages_accept(case):
    name, value, accepted = case
    stage, flag = STAGE_FLAGS[name]
    refused = stage_refuses(stage, f"{flag}={value}")
    if accepted:
        assert not refused, (stage, flag, value)
    elif (name, value) not in FRONTS_STRICTER and not (name == "MASKS" and value == "0"):
        # (sample-masks takes --stratified-masks 0: no stratified masks, the anchors alone; the
        # pipeline's MASKS is the count of its stratified masks, at least 1, as Snakemake's masks.)
        assert refused, (stage, flag, value)


# --- Tools rerun their jobs; summary: false keeps the plan ----------------------------------------

def local_imports(path):
    """The modules a tool imports that are files of tools/ (by name: the folders its sys.path
    holds, its own, tools/, tools/export/ and tools/prune/), and tools/prune/report.py when it
    loads that by path."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    tools = ROOT / "tools"
    found = set()
    for name in names:
        for folder in (path.parent, tools, tools / "export", tools / "prune"):
            if (folder / f"{name}.py").is_file() and folder / f"{name}.py" != path:
                found.add(str((folder / f"{name}.py").relative_to(tools)))
                break
    if '"prune" / "report.py"' in path.read_text():
        found.add("prune/report.py")
    return found


def snakefile_tool_imports():
    """TOOL_IMPORTS as the Snakefile reads it (its tool_imports() run on pipelines/tool_imports.mk,
    without loading the rest of the Snakefile)."""
    text = (ROOT / "pipelines" / "Snakefile").read_text()
    start = text.index("\ndef tool_imports(")
    namespace = {"ROOT": ROOT, "re": re}
    exec(text[start:text.index("\n\n\n", start)], namespace)
    return namespace["tool_imports"]()


def make_database():
    """Make's database after reading the makefiles (make -p, running nothing), with the defaults."""
    result = subprocess.run(["make", "--no-print-directory", "-p", "-q", "help", f"BIN={BIN}", "CARGO=true"],
                            cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert "TOOL_IMPORTS_" in result.stdout, result.stderr[-3000:]
    return result.stdout


def make_tool_imports(database):
    """TOOL_IMPORTS_<tool> of Make's database: {tool: [modules]}."""
    return {m.group(1): m.group(2).split()
            for m in re.finditer(r"^TOOL_IMPORTS_(\S+) :?= ?(.*)$", database, re.MULTILINE)}


def reached(table, tool):
    """tools/TOOL and every module it reaches through TABLE (the fronts' tool_sources)."""
    found, pending = set(), [tool]
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += table[name]
    return {f"tools/{name}" for name in found}


def test_make_and_the_snakefile_read_one_list_of_tool_imports():
    # pipelines/tool_imports.mk, which Make includes and the Snakefile parses: one table, so
    # that the fronts rerun alike (until 2026-12-07 Make listed the tools alone).
    table = snakefile_tool_imports()
    assert make_tool_imports(make_database()) == table
    assert "TOOL_IMPORTS = {" not in (ROOT / "pipelines" / "Snakefile").read_text()


def test_every_make_rule_that_runs_a_tool_lists_the_modules_it_reaches():
    """A file Make makes with a tool of the list depends on the tool and every module it reaches
    (a changed tools/export/outputs.py remakes the pruned model's ONNX file, as in Snakemake)."""
    table = snakefile_tool_imports()
    checked = set()
    for block in make_database().split("\n\n"):
        lines = block.splitlines()
        rule = next((line for line in lines if re.match(r"^[^#\t\s][^=]*?::? ", line + " ")), None)
        if rule is None or any("Phony target" in line for line in lines):
            continue
        target, prerequisites = rule.split(":", 1)
        prerequisites = set(prerequisites.replace("|", " ").split())
        recipe = "\n".join(line for line in lines if line.startswith("\t"))
        for tool in re.findall(r"(?:python\S*|\$\(PYTHON\)) tools/(\S+?\.py)", recipe):
            if tool.startswith("fetch/"):
                continue  # what a fetch brings is pinned by version and sha256, not by its script
            # Every tool a file rule runs is in the list (until 2026-12-07 the pairs tables'
            # tools/report/frontier_pairs.py was not, and nothing said so).
            assert tool in table, (target, tool, "not in pipelines/tool_imports.mk")
            missing = reached(table, tool) - prerequisites
            assert not missing, (target, tool, sorted(missing))
            checked.add(tool)
    # The rules that run the exporter and the tools that read its output are among them.
    assert {"export/export_layered.py", "export/merge_layered.py", "export/prune_hf.py", "export/prune_gguf.py",
            "export/export_generator.py", "prune/report.py", "report/exact_frontier.py",
            "report/frontier_pairs.py"} <= checked, checked


def test_each_tool_lists_the_modules_it_imports():
    table = snakefile_tool_imports()
    for tool, modules in table.items():
        assert local_imports(ROOT / "tools" / tool) == set(modules), tool
        assert all(m in table for m in modules), (tool, modules)
    # The tools the jobs run are in it (the rules name them by tool_sources).
    run = set(re.findall(r"\{ROOT\}/tools/(\S+\.py)", (ROOT / "pipelines" / "Snakefile").read_text()))
    assert run - {"fetch/fetch_wheel.py", "fetch/fetch_chunked_gguf.py"} <= set(table), run - set(table)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The tiny pipeline with its summary, run by a copy of pipelines/ and tools/, whose tools
    the tests below change without touching the checkout's."""
    for stage in ("prepare-tokens", "sample-masks", "evaluate", "fit-surrogate", "shapley", "score-blocks",
                  "apply-prune", "inspect"):
        assert (BIN / stage).is_file(), f"{BIN / stage} is missing: build the stages first"
    directory = tmp_path_factory.mktemp("fronts")
    for folder in ("pipelines", "tools"):
        shutil.copytree(ROOT / folder, directory / "checkout" / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "tests"))
    snakefile = directory / "checkout" / "pipelines" / "Snakefile"
    config = write_config(directory, summary=True)

    def run(*args):
        return snakemake(snakefile, directory / "wd", "--configfile", str(config), "--cores", "2", *args)

    result = run("all")
    assert result.returncode == 0, result.stderr[-4000:]
    assert (directory / "run" / "results.md").is_file()
    return directory, run


def test_a_touched_tool_reruns_nothing_and_a_changed_one_its_jobs(finished_run):
    directory, run = finished_run
    tools = directory / "checkout" / "tools"
    for module in ("report/summarize.py", "prune/report.py", "layerprune_tables.py"):
        os.utime(tools / module)
    dry = run("-n", "all")
    assert dry.returncode == 0 and job_counts(dry.stdout + dry.stderr) == {}, dry.stdout[-3000:]
    # A module summarize.py imports through another (prune/report.py), changed.
    with open(tools / "prune" / "report.py", "a") as module:
        module.write("\n# changed\n")
    dry = run("-n", "all")
    assert job_counts(dry.stdout + dry.stderr) == {"summary": 1, "all": 1, "total": 2}, dry.stdout[-3000:]
    assert f"Updated input files: {tools}/prune/report.py" in dry.stdout + dry.stderr


def test_summary_false_still_makes_the_pruned_models_plan(finished_run):
    directory, run = finished_run
    dry = run("-n", "all", "--config", "summary=false", "adaptive_budget=0.5sleb")
    said = dry.stdout + dry.stderr
    counts = job_counts(said)
    # The pruned model's plan of the new budget, as Make's demo makes it; no summary.
    assert counts.get("pruned_plan") == 1 and "summary" not in counts, said[-3000:]
    assert f"{directory}/run/results.md is of an earlier run" in said, said[-3000:]

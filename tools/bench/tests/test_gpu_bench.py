"""tools/bench/gpu_bench.py end to end on the CPU with the tiny shape (`make test-bench`): the
whole GPU benchmark (random model, export, tokens, masks, evaluate and both PyTorch loops, GEMM
rate, CSV / Markdown / JSON) in seconds, so the one GPU run it is written for does not fail on a
bug a CPU could have found.

Needs the exporter's environment (torch, transformers, onnx) and the stage binaries
(LAYERPRUNE_BIN, default target/debug; ORT_DYLIB_PATH, default the `make ort` library).
"""

import csv
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "bench" / "gpu_bench.py"
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
ORT = os.environ.get("ORT_DYLIB_PATH", str(ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi"
                                           / "libonnxruntime.so.1.31.1"))
COLUMNS = ["shape", "dtype", "contender", "masks_per_second", "useful_tflops", "gemm_tflops", "max_nll_diff",
           "date"]
RACE_ROUND = "evaluate, a race's round (3 of the windows; masks/s per whole mask)"
CONTENDERS = {"pytorch zero-and-restore", "pytorch blocks deleted", "evaluate", "evaluate --io-binding on",
              "evaluate --mask-batch 8", RACE_ROUND}
ATTENTION_IN_DTYPE = "evaluate, attention in the model's dtype (export --attention-precision model)"
FUSED_ATTENTION = "evaluate, fused attention (export --attention-kernel fused)"
FUSED_PACKED = "evaluate, fused attention, q/k/v packed (export --attention-kernel fused --qkv-projection packed)"
# An earlier run's row of another shape, which a run of the tiny shape must keep.
OTHER_ROW = ["Llama-2-7B", "bf16", "evaluate", "30", "400", "600", "0.01", "2026-01-01"]


def run_bench(work: Path, csv_path: Path, *flags, bin_dir: Path = BIN, status: int = 0):
    for stage in ("prepare-tokens", "sample-masks", "evaluate"):
        assert (BIN / stage).is_file(), f"{BIN / stage} missing: build the stages (make test-bench does)"
    assert Path(ORT).is_file(), f"{ORT} missing: make ort"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--shapes", "tiny", "--bin", str(bin_dir),
         "--work", str(work), "--csv", str(csv_path), "--gemm-seconds", "0.1", "--torch-threads", "1",
         "--masks", "20", *flags],
        capture_output=True, text=True, timeout=600, env={**os.environ, "ORT_DYLIB_PATH": ORT})
    assert done.returncode == status, done.stdout + done.stderr
    return done.stdout


def read_csv(path: Path):
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    csv_path = work / "results" / "gpu-bench.csv"
    csv_path.parent.mkdir()
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerow(OTHER_ROW)
    stdout = run_bench(work, csv_path)
    return work, csv_path, stdout


def test_the_csv_has_the_columns_and_one_row_per_contender(bench):
    work, csv_path, _ = bench
    header, rows = read_csv(csv_path)
    assert header == COLUMNS
    assert [r for r in rows if r["shape"] == "Llama-2-7B"] == [dict(zip(COLUMNS, OTHER_ROW))]
    tiny = [r for r in rows if r["shape"] == "tiny-llama"]
    assert {r["contender"] for r in tiny} == CONTENDERS
    assert len(tiny) == len(CONTENDERS)
    for r in tiny:
        assert r["dtype"] == "fp32"
        assert float(r["masks_per_second"]) > 0, r
        assert float(r["useful_tflops"]) > 0, r
        assert float(r["gemm_tflops"]) > 0, r
        assert datetime.date.fromisoformat(r["date"])


def test_every_contender_agrees_with_pytorch_on_every_mask(bench):
    _, csv_path, _ = bench
    _, rows = read_csv(csv_path)
    for r in rows:
        if r["shape"] == "tiny-llama":
            # fp32 on the CPU: the chained graphs and transformers differ by rounding alone.
            assert float(r["max_nll_diff"]) < 1e-4, r


def test_the_markdown_and_json_describe_the_same_run(bench):
    work, _, stdout = bench
    table = (work / "gpu-bench.md").read_text()
    assert "| tiny-llama | fp32 | evaluate |" in table
    assert table in stdout
    record = json.loads((work / "gpu-bench.json").read_text())
    assert record["device"] == "cpu" and record["skipped"] == []
    (shape,) = record["shapes"]
    assert shape["masks"] == 20 and not shape["replicated_block"]
    for contender, run in shape["runs"].items():
        assert run["summary"]["masks"] == 20, contender
        assert run["summary"]["device"] == "cpu"
    assert shape["runs"]["evaluate --io-binding on"]["summary"]["io_binding"] is True
    assert shape["runs"]["evaluate"]["summary"]["io_binding"] is False
    # Bound or not, the same arithmetic: bit for bit on the CPU provider.
    assert shape["io_binding_on_vs_off_max_nll_diff"] == 0


def test_a_race_round_runs_the_first_windows_and_is_rated_per_whole_mask(bench):
    """A race's round: `evaluate` on the first 3 of the 10 windows, its rate given per whole mask
    (3 / 10 of its masks per second, as a race counts it) and its NLLs against PyTorch on those
    windows (the CSV's max_nll_diff, checked with every row above)."""
    work, csv_path, _ = bench
    shape = json.loads((work / "gpu-bench.json").read_text())["shapes"][0]
    run = shape["runs"][RACE_ROUND]
    assert run["windows"] == 3 and shape["runs"]["evaluate"]["windows"] == 10
    assert run["summary"]["tokens_per_mask"] * 10 == shape["runs"]["evaluate"]["summary"]["tokens_per_mask"] * 3
    _, rows = read_csv(csv_path)
    (row,) = [r for r in rows if r["contender"] == RACE_ROUND]
    assert float(row["masks_per_second"]) == pytest.approx(run["summary"]["masks_per_second"] * 0.3, rel=1e-5)
    windows = subprocess.run([sys.executable, "-c", "import sys, pyarrow.parquet as pq; "
                              "print([len(pq.read_table(p).column('tokens')) for p in sys.argv[1:]])",
                              str(work / "tiny" / "tokens-first-3.parquet"), str(work / "tiny" / "tokens.parquet")],
                             capture_output=True, text=True, check=True).stdout
    assert windows.strip() == "[3, 10]"


def test_one_block_replicated_exports_one_graph_for_every_block(bench, tmp_path):
    _, csv_path, _ = bench
    run_bench(tmp_path, csv_path, "--replicate-blocks", "all")
    manifest = json.loads((tmp_path / "tiny" / "model" / "manifest.json").read_text())
    assert manifest["num_blocks"] == 8 and len(manifest["blocks"]) == 8
    assert len({manifest["files"][b["file"]] for b in manifest["blocks"]}) == 1
    assert manifest["source"]["replicated_block"] is True
    # The second run's rows replaced the first's; the other shape's row stayed.
    _, rows = read_csv(csv_path)
    assert len([r for r in rows if r["shape"] == "tiny-llama"]) == len(CONTENDERS)
    assert len(rows) == len(CONTENDERS) + 1
    assert all(float(r["max_nll_diff"]) < 1e-4 for r in rows if r["shape"] == "tiny-llama")


def stages_with_evaluate(tmp_path: Path, script: str) -> Path:
    """A folder of the stage binaries with `evaluate` a shell script of `script`'s lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in ("prepare-tokens", "sample-masks"):
        (bin_dir / stage).symlink_to(BIN / stage)
    wrapper = bin_dir / "evaluate"
    wrapper.write_text("#!/bin/sh\n" + script)
    wrapper.chmod(0o755)
    return bin_dir


def test_a_failing_contender_costs_only_its_own_row(tmp_path):
    # An `evaluate` that fails with --mask-batch (as a kernel missing on a GPU would): the run
    # still writes every other row, names the failure, and exits with status 1.
    bin_dir = stages_with_evaluate(tmp_path, f"""case " $* " in *" --mask-batch "*) echo "no kernel for this, say" >&2; exit 1;; esac
exec {BIN / "evaluate"} "$@"
""")
    csv_path = tmp_path / "out.csv"
    run_bench(tmp_path / "work", csv_path, bin_dir=bin_dir, status=1)
    _, rows = read_csv(csv_path)
    assert {r["contender"] for r in rows} == CONTENDERS - {"evaluate --mask-batch 8"}
    table = (tmp_path / "work" / "gpu-bench.md").read_text()
    assert "tiny: evaluate --mask-batch 8: no kernel for this, say" in table
    record = json.loads((tmp_path / "work" / "gpu-bench.json").read_text())
    assert [name for name, _ in record["failures"]] == ["tiny: evaluate --mask-batch 8"]


def test_a_shape_whose_every_evaluate_failed_keeps_its_earlier_rows(tmp_path):
    # The CPU build of ONNX Runtime loaded for --device cuda fails every contender: the run's
    # PyTorch rows alone replaced the committed comparison of that shape (make bench-gpu, the
    # GPU-user audit of 2026-12-07). They compare nothing: the earlier rows stay.
    bin_dir = stages_with_evaluate(tmp_path, "echo 'has no CUDA execution provider' >&2\nexit 1\n")
    csv_path = tmp_path / "out.csv"
    earlier = ["tiny-llama", "fp32", "evaluate", "300", "1", "2", "1e-06", "2026-01-01"]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerow(earlier)
    run_bench(tmp_path / "work", csv_path, bin_dir=bin_dir, status=1)
    _, rows = read_csv(csv_path)
    assert rows == [dict(zip(COLUMNS, earlier))]
    # The run's own record keeps what it measured.
    record = json.loads((tmp_path / "work" / "gpu-bench.json").read_text())
    assert {r["contender"] for r in record["rows"]} == {"pytorch zero-and-restore", "pytorch blocks deleted"}


def test_a_reduced_precision_shape_is_measured_against_float32(tmp_path):
    """fp16 on the CPU provider (which runs it): every contender's NLL against PyTorch in fp16
    (the CSV) and against the same weights computed in float32 (the JSON, the Markdown)."""
    csv_path = tmp_path / "gpu-bench.csv"
    run_bench(tmp_path, csv_path, "--shapes", "tiny-fp16")
    _, rows = read_csv(csv_path)
    # Besides the fp32 shape's contenders, the other exports (attention in fp16, fused attention)
    # and ONNX Runtime's fusions left out and all its levels.
    contenders = CONTENDERS | {ATTENTION_IN_DTYPE, FUSED_ATTENTION, FUSED_PACKED,
                               "evaluate --graph-optimization basic", "evaluate --graph-optimization all"}
    assert {r["contender"] for r in rows} == contenders and {r["dtype"] for r in rows} == {"fp16"}
    record = json.loads((tmp_path / "gpu-bench.json").read_text())
    (shape,) = record["shapes"]
    assert shape["float32_masks"] == 10
    # A few fp16 steps of rounding in a tiny model's mean NLL (~6), not more; not 0 either,
    # which would mean the reference was not computed in float32 at all.
    assert 0 < shape["pytorch_max_nll_diff_vs_float32"] < 5e-2
    bounds = {c: run["max_nll_diff_vs_float32"] for c, run in shape["runs"].items() if c != RACE_ROUND}
    assert set(bounds) == contenders - {"pytorch zero-and-restore", "pytorch blocks deleted", RACE_ROUND}
    assert all(0 <= bound < 5e-2 for bound in bounds.values()), bounds
    # Three exports: the default computes attention in float32, one in fp16, one in ONNX Runtime's
    # GroupQueryAttention (the graphs differ, so do the NLLs, a little).
    assert (tmp_path / "tiny-fp16" / "model-attention-model" / "manifest.json").is_file()
    assert shape["export_seconds_attention_model"] > 0
    assert bounds[ATTENTION_IN_DTYPE] != bounds["evaluate"]
    fused = json.loads((tmp_path / "tiny-fp16" / "model-attention-fused" / "manifest.json").read_text())
    assert fused["attention_kernel"] == "fused"
    assert bounds[FUSED_ATTENTION] != bounds["evaluate"]
    # The fused export with its projections packed: the same products' columns, one node input.
    packed = json.loads((tmp_path / "tiny-fp16" / "model-attention-fused-packed" / "manifest.json").read_text())
    assert (packed["attention_kernel"], packed["qkv_projection"]) == ("fused", "packed")
    assert bounds[FUSED_PACKED] < 5e-2
    table = (tmp_path / "gpu-bench.md").read_text()
    assert "- tiny-llama fp16, 10 masks: PyTorch in fp16" in table and "`evaluate`" in table
    # PyTorch with eager attention, which the graphs were traced from, is measured as well.
    assert 0 < shape["pytorch_eager_max_nll_diff_vs_float32"] < 5e-2
    assert "with eager attention" in table


def slow_evaluate(folder: Path, seconds: int) -> Path:
    """A bin folder whose `evaluate` sleeps `seconds` before a --mask-batch run."""
    folder.mkdir()
    for stage in ("prepare-tokens", "sample-masks"):
        (folder / stage).symlink_to(BIN / stage)
    (folder / "evaluate").write_text(f"""#!/bin/sh
case " $* " in *" --mask-batch "*) sleep {seconds};; esac
exec {BIN / "evaluate"} "$@"
""")
    (folder / "evaluate").chmod(0o755)
    return folder


def test_contenders_can_be_picked_and_a_slow_stage_counts_as_failed(tmp_path):
    """--contenders keeps the default `evaluate` and those it matches; a stage slower than
    --stage-timeout fails its own row only."""
    csv_path = tmp_path / "gpu-bench.csv"
    run_bench(tmp_path, csv_path, "--contenders", "^evaluate --mask-batch")
    _, rows = read_csv(csv_path)
    assert {r["contender"] for r in rows} == {"pytorch zero-and-restore", "pytorch blocks deleted", "evaluate",
                                              "evaluate --mask-batch 8"}
    slow = slow_evaluate(tmp_path / "slow", 30)
    run_bench(tmp_path / "slow-work", tmp_path / "slow.csv", "--stage-timeout", "5", bin_dir=slow, status=1)
    _, rows = read_csv(tmp_path / "slow.csv")
    assert {r["contender"] for r in rows} == CONTENDERS - {"evaluate --mask-batch 8"}
    record = json.loads((tmp_path / "slow-work" / "gpu-bench.json").read_text())
    assert [name for name, _ in record["failures"]] == ["tiny: evaluate --mask-batch 8"]


def test_a_run_killed_midway_has_written_what_it_measured(tmp_path):
    """The outputs are rewritten after every contender: a run killed while its second `evaluate`
    runs (as a device call cut short is) has the rows of the PyTorch loops and the first one
    (the second: the only other picked, the one the slow `evaluate` sleeps in)."""
    import time

    slow = slow_evaluate(tmp_path / "slow", 300)
    csv_path = tmp_path / "gpu-bench.csv"
    bench = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--shapes", "tiny", "--bin", str(slow), "--work",
         str(tmp_path / "work"), "--csv", str(csv_path), "--gemm-seconds", "0.1", "--torch-threads", "1",
         "--masks", "20", "--contenders", "^evaluate --mask-batch 8$"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "ORT_DYLIB_PATH": ORT},
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and bench.poll() is None:
            markdown = tmp_path / "work" / "gpu-bench.md"  # written last, each file whole
            if markdown.is_file() and "| tiny-llama | fp32 | evaluate |" in markdown.read_text():
                break
            time.sleep(0.5)
        assert bench.poll() is None, "the run ended instead of waiting in its slow contender"
    finally:
        os.killpg(bench.pid, 9)
        bench.wait()
    _, rows = read_csv(csv_path)
    assert {r["contender"] for r in rows} == {"pytorch zero-and-restore", "pytorch blocks deleted", "evaluate"}
    record = json.loads((tmp_path / "work" / "gpu-bench.json").read_text())
    assert list(record["shapes"][0]["runs"]) == ["evaluate"]
    assert "| tiny-llama | fp32 | evaluate |" in (tmp_path / "work" / "gpu-bench.md").read_text()


def test_the_cuda_contenders_include_each_lever_with_flags_evaluate_accepts():
    """The GPU-only contenders (not run on the CPU) are spelled as `evaluate` spells its flags:
    a typo would cost a GPU run its row."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    contenders = {c.name: c.flags for c in gpu_bench.evaluate_contenders("cuda:0", "fp16")}
    for name in ["evaluate --cuda-graphs on", "evaluate --cuda-graphs on --mask-batch 8",
                 "evaluate --overlap off", "evaluate --mask-batch 8", "evaluate --io-binding off",
                 "evaluate --arena shrink", "evaluate --mask-batch 32 --arena shrink",
                 "evaluate --mask-batch 32", "evaluate --arena keep-exact",
                 "evaluate --mask-batch 8 --arena keep-exact", "evaluate --graph-optimization basic",
                 "evaluate --graph-optimization all"]:
        assert name in contenders, sorted(contenders)
        assert contenders[name] == name.split()[1:], name
    # The other exports' contenders run evaluate as it is, or with CUDA graphs.
    assert contenders[gpu_bench.ATTENTION_IN_DTYPE] == []
    assert contenders[gpu_bench.FUSED_ATTENTION] == []
    assert contenders[gpu_bench.FUSED_ATTENTION_CUDA_GRAPHS] == ["--cuda-graphs", "on"]
    # Fused attention with masks batched through its blocks, and with CUDA graphs too.
    for flags in ["--mask-batch 4", "--mask-batch 8", "--cuda-graphs on --mask-batch 8"]:
        fused = next(c for c in gpu_bench.evaluate_contenders("cuda:0", "fp16")
                     if c.name == f"evaluate {flags}, fused attention (export --attention-kernel fused)")
        assert (fused.flags, fused.attention) == (flags.split(), "fused"), flags
    # The fused export with q/k/v packed, alone and with 8 masks a call.
    assert gpu_bench.FUSED_PACKED == FUSED_PACKED
    packed = {c.name: (c.flags, c.attention) for c in gpu_bench.evaluate_contenders("cuda:0", "fp16")
              if c.attention == "fused-packed"}
    assert packed == {FUSED_PACKED: ([], "fused-packed"),
                      FUSED_PACKED.replace("evaluate,", "evaluate --mask-batch 8,"): (["--mask-batch", "8"],
                                                                                      "fused-packed")}
    # A race's round plain, with three masks a call (what a round on CUDA runs by itself), with
    # CUDA graphs and with four masks a call, on the first 3 windows.
    rounds = {c.name: (c.flags, c.windows) for c in gpu_bench.evaluate_contenders("cuda:0", "fp16") if c.windows}
    assert rounds == {RACE_ROUND: ([], 3),
                      RACE_ROUND.replace("evaluate,", "evaluate --mask-batch 3,"): (["--mask-batch", "3"], 3),
                      RACE_ROUND.replace("evaluate,", "evaluate --cuda-graphs on,"): (["--cuda-graphs", "on"], 3),
                      RACE_ROUND.replace("evaluate,", "evaluate --mask-batch 4,"): (["--mask-batch", "4"], 3)}
    # fp32 has neither: its attention is float32 already, and ONNX Runtime's CUDA provider
    # has GroupQueryAttention for fp16 / bf16 only.
    fp32 = {c.name for c in gpu_bench.evaluate_contenders("cuda:0", "fp32")}
    assert not fp32 & {gpu_bench.ATTENTION_IN_DTYPE, gpu_bench.FUSED_ATTENTION,
                       gpu_bench.FUSED_ATTENTION_CUDA_GRAPHS}
    help_text = subprocess.run([str(BIN / "evaluate"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    for flags in contenders.values():
        for flag in flags:
            if flag.startswith("--"):
                assert flag in help_text, flag
    # And each value one `evaluate` takes for its flag (a value renamed since the last GPU run, as
    # flags were on 2026-12-04, would cost that run the contender's row), on every dtype's shape.
    import re

    # Each option's paragraph of the help: from its line to the next option's.
    paragraphs = re.split(r"^\s+(?:-\w, )?(?=--[a-z0-9-]+)", help_text, flags=re.MULTILINE)
    possible = {}
    for paragraph in paragraphs:
        listed = re.search(r"\[possible values: ([^\]]+)\]", paragraph)
        if paragraph.startswith("--") and listed:
            possible[paragraph.split()[0]] = listed.group(1).split(", ")
    assert {"--cuda-graphs", "--arena", "--graph-optimization", "--tf32"} <= set(possible), possible
    for dtype in ("fp32", "fp16", "bf16"):
        for contender in gpu_bench.evaluate_contenders("cuda", dtype):
            for flag, value in zip(contender.flags, contender.flags[1:]):
                if flag in possible:
                    assert value in possible[flag], (contender.name, flag, value, possible[flag])


def test_the_markdown_lists_the_gpu_memory_each_contender_took():
    """On CUDA `evaluate --summary` reads the GPU's memory before and after (null on the CPU,
    where the section is left out); the Markdown says what each contender took."""
    sys.path.insert(0, str(SCRIPT.parent))
    import argparse

    import gpu_bench

    memory = {"used_before_mib": 1024.0, "used_after_mib": 15360.0, "taken_mib": 14336.0,
              "total_mib": 143771.0}
    details = [{"key": "7b-bf16", "shape": "Llama-2-7B", "dtype": "bf16", "runs": {
        "evaluate": {"summary": {"device_memory": memory}},
        "evaluate --io-binding off": {"summary": {"device_memory": None}}}}]
    args = argparse.Namespace(windows=10, seq_len=128, masks=50, date="2026-11-30")
    text = gpu_bench.markdown([], "H200", args, [], details, [])
    assert "- Llama-2-7B bf16 `evaluate`: 14.0 GiB of 140" in text, text
    assert "--io-binding off`:" not in text, text
    assert "GPU memory" not in gpu_bench.markdown([], "CPU", args, [], [{"runs": {}}], [])


def test_the_markdown_says_where_each_contenders_seconds_went(bench):
    """`evaluate --summary`'s graph_runs (runs and host time of each kind of graph) reach the Markdown: on the
    tiny shape one at a time, block runs and head runs and no stitching; with --mask-batch 8, stitching too."""
    work, _, _ = bench
    text = (work / "gpu-bench.md").read_text()
    lines = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("- tiny") and " x " in line}
    assert "blocks " in lines["evaluate"] and "head 20 x " in lines["evaluate"], text
    assert "stitching" not in lines["evaluate"], lines["evaluate"]
    assert "stitching" in lines["evaluate --mask-batch 8"], lines["evaluate --mask-batch 8"]


def test_a_failed_shapes_model_is_freed_before_the_device_memory_is_given_back(tmp_path, monkeypatch):
    """A shape failing midway (a 7B shape out of memory, say) holds its model in the exception's
    traceback until the `except` clause ends; the cached device memory is given back after that,
    or the failed shape's weights would stay with PyTorch's allocator beside the next shape's
    `evaluate`. The failure is the shape's row in the record, and the run goes on."""
    import weakref

    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    class Model:
        pass

    models, freed = [], []

    def failing_shape(args, key, rows, details, publish):
        model = Model()
        models.append(weakref.ref(model))
        raise RuntimeError("CUDA out of memory, say")

    monkeypatch.setattr(gpu_bench, "run_shape", failing_shape)
    monkeypatch.setattr(gpu_bench, "release_cached_memory", lambda device: freed.append(models[-1]() is None))
    record = gpu_bench.main(["--device", "cpu", "--shapes", "tiny,tiny-fp16", "--bin", str(BIN), "--work",
                             str(tmp_path), "--csv", str(tmp_path / "out.csv")])
    assert freed == [True, True]
    assert [list(failure) for failure in record["failures"]] == [
        ["tiny", "RuntimeError: CUDA out of memory, say"], ["tiny-fp16", "RuntimeError: CUDA out of memory, say"]]


def test_a_row_on_the_first_masks_counts_the_useful_work_of_those_masks(tmp_path, monkeypatch):
    """`evaluate --max-new-masks N` (the CPU provider's row on a GPU host) runs the table's first
    masks, which keep the most blocks: its useful TFLOP/s is their arithmetic per second, not the
    average mask's (the table's order would understate it by some 12 % at 100 masks)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench
    import report

    first = "evaluate (first 2 masks)"
    monkeypatch.setattr(gpu_bench, "evaluate_contenders", lambda device, dtype: [
        gpu_bench.Contender("evaluate", [], "fp32"), gpu_bench.Contender(first, ["--max-new-masks", "2"], "fp32")])
    monkeypatch.setenv("ORT_DYLIB_PATH", ORT)
    record = gpu_bench.main(["--device", "cpu", "--shapes", "tiny", "--bin", str(BIN), "--work", str(tmp_path),
                             "--csv", str(tmp_path / "out.csv"), "--masks", "6", "--gemm-seconds", "0.1"])
    (shape,) = record["shapes"]
    manifest = json.loads((tmp_path / "tiny" / "model" / "manifest.json").read_text())
    block, head = report.flops_per_token({"seq_len": 128}, manifest)
    for name in ("evaluate", first):
        summary = shape["runs"][name]["summary"]
        work = (summary["blocks_in_masks"] * block + summary["masks"] * head) * 10 * 128 / summary["masks"]
        (row,) = [r for r in record["rows"] if r["contender"] == name]
        assert row["useful_tflops"] == pytest.approx(work * summary["masks_per_second"] / 1e12, rel=1e-9), name
    assert shape["runs"][first]["summary"]["masks"] == 2


def test_the_runs_clock_starts_before_torch_is_imported():
    """--budget-seconds and --deadline-seconds count from the process's start, as the device call's
    `timeout T` does: a clock started after torch's import (seconds on a GPU host) would let the last
    contender start that much closer to T, and be killed there."""
    code = ("import sys, time; started = time.perf_counter(); sys.path.insert(0, sys.argv[1]); import gpu_bench; "
            "print(gpu_bench.STARTED - started, time.perf_counter() - started)")
    done = subprocess.run([sys.executable, "-c", code, str(SCRIPT.parent)], capture_output=True, text=True,
                          check=True, timeout=120)
    clock, imports = map(float, done.stdout.split())
    assert clock < imports / 4, (clock, imports)


def test_fused_attention_with_masks_batched_runs_right_after_the_default():
    """The 1.1B shape's missed 3x rests on fused attention with 4 or 8 masks a call: on CUDA they
    come right after the default and fused attention alone, before what run 3 measured (CUDA
    graphs) and what never ran on a GPU (q/k/v packed, other optimisation levels, arenas)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    fused = "fused attention (export --attention-kernel fused)"
    for dtype in ("fp16", "bf16"):
        names = [c.name for c in gpu_bench.evaluate_contenders("cuda", dtype)]
        assert names[:4] == ["evaluate", f"evaluate, {fused}", f"evaluate --mask-batch 4, {fused}",
                             f"evaluate --mask-batch 8, {fused}"], names


def test_a_shape_runs_its_own_contenders_and_the_others_the_common_ones():
    """--shape-contenders SHAPE=REGEX (SHAPE as --shapes names it, or as a shell variable can:
    gpu_device_run.sh's C_<shape>) replaces --contenders for that shape only, in
    evaluate_contenders' order, the default contender always first."""
    sys.path.insert(0, str(SCRIPT.parent))
    import argparse

    import gpu_bench

    picks = gpu_bench.shape_picks(["llama2_7b_bf16=keep-exact|graph-optimization basic",
                                   "smollm2-135m-fp32=--tf32 off"])
    args = argparse.Namespace(device="cuda", contenders="^evaluate --cuda-graphs on$", shape_contenders=picks)
    assert [c.name for c in gpu_bench.picked_contenders(args, "llama2-7b-bf16")] == [
        "evaluate", "evaluate --graph-optimization basic", "evaluate --arena keep-exact",
        "evaluate --mask-batch 8 --arena keep-exact"]
    assert [c.name for c in gpu_bench.picked_contenders(args, "smollm2-135m-fp32")] == [
        "evaluate", "evaluate --tf32 off"]
    assert [c.name for c in gpu_bench.picked_contenders(args, "tinyllama-1.1b-fp16")] == [
        "evaluate", "evaluate --cuda-graphs on"]


def test_a_cpu_run_names_the_cuda_only_contenders_it_leaves_out(capsys):
    """make rehearse-gpu runs on the CPU, where the CUDA-only contenders a pattern picks do not
    run: it said nothing of them (6 of 40 ran in the rehearsal of 2026-12-07)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import argparse

    import gpu_bench

    args = argparse.Namespace(device="cpu", contenders="fused|^evaluate --cuda-graphs on$", shape_contenders={})
    names = [c.name for c in gpu_bench.picked_contenders(args, "tiny-fp16")]
    assert "evaluate --cuda-graphs on" not in names
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "tiny-fp16: on cpu, not the" in said and "evaluate --cuda-graphs on" in said, said


@pytest.mark.parametrize("flags, said", [
    (["--shape-contenders", "llama2-7b=fused"], "not SHAPE=REGEX"),
    (["--shape-contenders", "fused"], "not SHAPE=REGEX"),
    (["--shape-contenders", "tiny=fused("], "missing ), unterminated subpattern"),
    (["--contenders", "fused("], "--contenders 'fused(': missing ), unterminated subpattern"),
    # A contender renamed since the recipe was written: the shape would measure the default alone.
    (["--shape-contenders", "tinyllama_1_1b_fp16=fused-attention|--batch-masks"],
     "picks no contender of a fp16 shape on CUDA besides the default `evaluate`"),
])
def test_a_pattern_that_cannot_pick_is_refused_before_any_shape(tmp_path, flags, said, capsys):
    """A misspelt shape or a pattern that does not compile stops the run at once, saying which: on
    a device it would otherwise fail every shape after its model, export and PyTorch loops (the
    pattern is first used there), or run the common contenders where one shape's were meant."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_bench

    with pytest.raises(SystemExit) as stopped:
        gpu_bench.main(["--device", "cpu", "--shapes", "tiny", "--bin", str(BIN), "--work", str(tmp_path),
                        "--csv", str(tmp_path / "out.csv"), *flags])
    assert stopped.value.code == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()

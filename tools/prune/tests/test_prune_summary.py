"""report.py summary (the end of `make prune`) on a run folder written here: the calibration
numbers are those of the plan's own method, as its plan table records it (make prune names none),
and a plan table without it is refused naming the file. Needs pyarrow."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = Path(__file__).resolve().parents[1] / "report.py"
NUM_BLOCKS = 6


def plans(path: Path, rows, inputs=None):
    """(method, removed blocks, measured NLL, LLM evaluations) rows of a plan table; the full
    model's NLL 3.0 beside each; `inputs`, its provenance's inputs by role."""
    table = pa.table({
        "method": [r[0] for r in rows],
        "k": pa.array([len(r[1]) for r in rows], pa.uint32()),
        "removed_blocks": pa.array([r[1] for r in rows], pa.list_(pa.uint32())),
        "measured_nll": [r[2] for r in rows],
        "measured_ppl": [math.exp(r[2]) for r in rows],
        "llm_evaluations": pa.array([r[3] for r in rows], pa.uint64()),
        "full_model_nll": [3.0] * len(rows),
    })
    if inputs is not None:
        table = table.replace_schema_metadata({"layerprune.inputs": json.dumps(inputs)})
    pq.write_table(table, path)


def run_folder(tmp_path: Path, calibration_rows, method="adaptive-raced"):
    run = tmp_path / "run"
    plan_dir = run / "k2"
    for folder, kept in ((run / "model", range(NUM_BLOCKS)), (plan_dir / "pruned", [0, 1, 2, 5])):
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({
            "num_blocks": len(list(kept)), "blocks": [{"original_index": b} for b in kept]}))
    (run / "model" / "manifest.json").write_text(json.dumps({"num_blocks": NUM_BLOCKS, "blocks": []}))
    (plan_dir / "pruned-hf").mkdir()
    (plan_dir / "pruned-hf" / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "dtype": "float32"}))
    (plan_dir / "llama-cpp-prune-layers.txt").write_text("3,4\n")
    for path, ppl in ((run / "full-eval.parquet", 20.0), (plan_dir / "pruned-eval.parquet", 30.0)):
        pq.write_table(pa.table({"ppl": [ppl]}), path)
    plans(plan_dir / "plan.parquet", [(method, [3, 4], 3.4, 7)])
    plans(plan_dir / "plan-calibration.parquet", calibration_rows)
    return run, plan_dir


def summary(run, plan_dir):
    return subprocess.run([sys.executable, str(SCRIPT), "summary", "--run", str(run), "--plan-dir", str(plan_dir),
                           "--source", "model.gguf"],
                          capture_output=True, text=True)


def report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prune_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_calibration_numbers_are_the_plan_s_method_s(tmp_path):
    """A table with another method's plan at the same k first: its evaluations and perplexity
    were printed under the plan's method."""
    run, plan_dir = run_folder(tmp_path, [("sleb", [2, 3], 3.9, 99), ("adaptive-raced", [3, 4], 3.2, 11)])
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert "(11 LLM evaluations on the calibration text to choose them)" in result.stdout, result.stdout
    assert f"on the calibration text: {math.exp(3.0):.3f} before, {math.exp(3.2):.3f} after" in result.stdout


def test_the_method_is_the_one_the_plan_table_records(tmp_path):
    """With no more calibration windows than a race's first, apply-prune races nothing and records
    the plan as unraced adaptive removal: make prune asked the summary for adaptive-raced by name
    (a Make guess of the name, duplicating the race's default windows), which the table does not
    hold. The summary reads it from the table, and takes that method's calibration row."""
    run, plan_dir = run_folder(tmp_path, [("adaptive", [3, 4], 3.2, 9)], method="adaptive")
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert ("make prune: model.gguf, 2 of 6 blocks removed by adaptive removal (9 LLM evaluations on the "
            "calibration text to choose them)") in result.stdout, result.stdout
    # A method the summary has no words for is printed as recorded.
    run, plan_dir = run_folder(tmp_path / "other", [("block-influence", [3, 4], 3.2, 1)], method="block-influence")
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert "2 of 6 blocks removed by block-influence (1 LLM evaluation on" in result.stdout, result.stdout


def test_a_calibration_table_written_before_the_method_names_were_made_one_is_read(tmp_path):
    """The plan measured again records its method's name now (block-influence); its calibration
    table, chosen before the names were made one, recorded one-shot:block-influence."""
    run, plan_dir = run_folder(tmp_path, [("one-shot:block-influence", [3, 4], 3.2, 1)], method="block-influence")
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert "2 of 6 blocks removed by block-influence (1 LLM evaluation on" in result.stdout, result.stdout


def test_a_measured_table_of_several_plans_or_of_another_method_is_refused(tmp_path):
    """plan.parquet is the one plan the pruned folder was written from; its calibration row must be of
    the method it records (a calibration table of another method's plan is another choice's)."""
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    plans(plan_dir / "plan.parquet", [("adaptive-raced", [3, 4], 3.4, 7), ("sleb", [3, 4], 3.4, 7)])
    result = summary(run, plan_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"report: error: {plan_dir / 'plan.parquet'} has 2 plans, not one" in result.stderr
    run, plan_dir = run_folder(tmp_path / "other", [("adaptive-raced", [3, 4], 3.2, 11)], method="adaptive")
    result = summary(run, plan_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (f"report: error: {plan_dir / 'plan-calibration.parquet'} has 0 plans by adaptive at k = 2, "
            "not one") in result.stderr


def test_a_plan_measured_on_the_tokens_it_was_chosen_on_is_refused(tmp_path):
    """The summary prints plan.parquet's perplexities as held-out: one file given as CALIB_TEXT and
    EVAL_TEXT can cut the same windows for both, and the plan's table then names the tokens it was
    measured on among those it was chosen on."""
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    for chosen_on in ["calib", None]:
        inputs = {"dataset": "heldout", **({"chosen_on": chosen_on} if chosen_on else {})}
        plans(plan_dir / "plan.parquet", [("adaptive-raced", [3, 4], 3.4, 7)], inputs)
        result = summary(run, plan_dir)
        assert result.returncode == 0, result.stderr
    for chosen_on in ["heldout", "calib,heldout"]:
        plans(plan_dir / "plan.parquet", [("adaptive-raced", [3, 4], 3.4, 7)],
              {"dataset": "heldout", "chosen_on": chosen_on})
        result = summary(run, plan_dir)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert (f"report: error: {plan_dir / 'plan.parquet'}: measured on the tokens its plan was chosen on "
                "(its dataset is in its chosen_on)") in result.stderr, result.stderr


def test_a_calibration_table_without_the_plan_is_refused_naming_it(tmp_path):
    """No row at the plan's k was an IndexError traceback; one of other blocks (the plan chosen
    again since the folder was written) was printed as the plan's."""
    table = tmp_path / "run" / "k2" / "plan-calibration.parquet"
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3], 3.1, 5)])
    result = summary(run, plan_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"report: error: {table} has 0 plans by adaptive-raced at k = 2, not one" in result.stderr


def test_a_calibration_plan_of_other_blocks_is_refused(tmp_path):
    table = tmp_path / "run" / "k2" / "plan-calibration.parquet"
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [2, 4], 3.1, 5)])
    result = summary(run, plan_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (f"report: error: {table}: the plan by adaptive-raced at k = 2 removes [2, 4] but the pruned folder "
            "[3, 4]: chosen again since") in result.stderr


def test_a_plan_keeping_one_block_within_a_ratio(tmp_path):
    """Every block but one removed within MAX_PPL_RATIO: "1 blocks" and "1 layers" were printed,
    and nothing said that the search stopped at the most any plan removes, not at the ratio."""
    run, plan_dir = run_folder(tmp_path, [("sleb-raced", [0, 1, 2, 3, 4], 3.2, 1)])
    ratio_dir = run / "ratio1.5"
    plan_dir.rename(ratio_dir)
    (ratio_dir / "pruned" / "manifest.json").write_text(
        json.dumps({"num_blocks": 1, "blocks": [{"original_index": 5}]}))
    (ratio_dir / "pruned-hf" / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "dtype": "float32"}))
    plans(ratio_dir / "plan.parquet", [("sleb-raced", [0, 1, 2, 3, 4], 3.4, 1)])
    result = subprocess.run([sys.executable, str(SCRIPT), "summary", "--run", str(run), "--plan-dir", str(ratio_dir),
                             "--source", "my-model", "--max-ppl-ratio", "1.5"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "5 of 6 blocks removed by SLEB raced over the calibration windows (1 LLM evaluation on" in text, text
    assert "the pruned model, layered ONNX (1 block," in text and "Hugging Face checkpoint (1 layer, float32" in text
    assert "every block but one, the most any plan removes: the search stopped there, not at the ratio" in text
    # Fewer blocks, or a plan of K asked for: nothing to say.
    assert report_module().cap_lines(4, 6) == []


def test_the_llama_cpp_command_from_a_gguf_source_copies_its_tensors(tmp_path):
    """A GGUF source is mostly quantized (the demo's SmolLM2 is Q4_1): llama-quantize refuses to
    quantize it again into a TYPE without --allow-requantize (src/llama-quant.cpp), so the
    command printed for it would be refused."""
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    # Into another file than make prune's own pruned.gguf (which it would replace, and which for
    # Gemma 2/3 holds what --prune-layers cannot state).
    assert "llama-quantize --prune-layers 3,4 model.gguf pruned-by-llama-quantize.gguf COPY (its tensors as they " \
           "are, as pruned.gguf's; another TYPE from a quantized GGUF needs --allow-requantize)" in result.stdout, \
        result.stdout
    assert "the pruned GGUF file" not in result.stdout  # none written (a stand-in run)
    (plan_dir / "pruned.gguf").write_bytes(b"GGUF" + bytes(60))
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert f"{plan_dir / 'pruned.gguf'}" in result.stdout and "the pruned GGUF file (4 blocks, the kept tensors " \
        "as they are in model.gguf, 64 B)" in result.stdout, result.stdout
    # From a Hugging Face folder: the GGUF a user converts it to (F16 or F32), into a TYPE.
    assert report_module().llama_cpp_command("3,4", "path/to/hf-model") == \
        "llama-quantize --prune-layers 3,4 model.gguf pruned.gguf TYPE"


def test_other_plans_are_named_older_by_the_tokens_and_model_they_were_chosen_on(tmp_path):
    """"older here" compared file times: a setting changed and put back made the calibration tokens
    again alike, newer than the plans chosen on them, which were named older. A plan table records
    what it was chosen on (chosen_on, and its model): compared with the tokens' dataset id and the
    model's id; by the times only for a table that records no chosen_on."""
    import hashlib
    import os

    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    tokens = run / "tokens-calib.parquet"
    pq.write_table(pa.table({"window_index": pa.array([0], pa.uint32())}).replace_schema_metadata(
        {"layerprune.table": "tokens", "layerprune.dataset_id": "now"}), tokens)
    model = hashlib.sha256((run / "model" / "manifest.json").read_bytes()).hexdigest()
    # name: (what its table records it was chosen on, or None; the time of its file)
    others = {"k1": ({"chosen_on": "now", "model": model}, 100),       # the same tokens, made again since
              "k3": ({"chosen_on": "before", "model": model}, 300),    # other tokens, chosen after the file's time
              "k4": ({"chosen_on": "now", "model": "another"}, 300),   # the same tokens of another model
              "ratio1.5": ({"chosen_on": "before,now"}, 100),          # among several, no model recorded
              "k5": (None, 100),                                       # no chosen_on: older than the tokens
              "k6": (None, 300)}
    for name, (inputs, when) in others.items():
        (run / name).mkdir()
        plans(run / name / "plan-calibration.parquet", [("adaptive-raced", [3, 4], 3.2, 11)], inputs)
        os.utime(run / name / "plan-calibration.parquet", (when, when))
    os.utime(tokens, (200, 200))
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "older here" in line]
    assert line.startswith("  older here: k3/, k4/, k5/: chosen before the calibration tokens were last made, on "
                           "other tokens or for another model"), line
    # Tokens whose id cannot be read: the times decide for every table.
    tokens.write_text("not parquet")
    os.utime(tokens, (200, 200))
    assert report_module().stale_plan_lines(run, plan_dir)[0].startswith("  older here: k1/, k5/, ratio1.5/:")


def test_one_file_as_both_texts_is_not_called_held_out(tmp_path):
    """CALIB_TEXT and EVAL_TEXT one file: random and consecutive windows of it, other tokens (which
    the refusal above compares), which may overlap. The summary printed its perplexity on it as
    held-out; the Makefile's warning was the log's first line."""
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    # The held-out text losing more than the calibration text (its note says the texts differ).
    plans(plan_dir / "plan.parquet", [("adaptive-raced", [3, 4], 4.0, 7)])
    table = pq.read_table(plan_dir / "plan.parquet")
    pq.write_table(table.append_column("nll_increase_se", pa.array([0.01])), plan_dir / "plan.parquet")
    table = pq.read_table(plan_dir / "plan-calibration.parquet")
    pq.write_table(table.append_column("nll_increase_se", pa.array([0.01])), plan_dir / "plan-calibration.parquet")
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert "perplexity on the held-out text: 20.000 before" in result.stdout, result.stdout
    assert "the held-out text lost more than the calibration text" in result.stdout
    result = subprocess.run([sys.executable, str(SCRIPT), "summary", "--run", str(run), "--plan-dir", str(plan_dir),
                             "--source", "model.gguf", "--one-text", "texts/all.txt"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "perplexity on EVAL_TEXT, not held out: 20.000 before, 30.000 after" in text, text
    assert ("CALIB_TEXT and EVAL_TEXT are one file (texts/all.txt): the plan was chosen on windows of it and "
            "measured\n  on windows of it, which may overlap, so this perplexity is not held out") in text, text
    assert "held-out" not in text and "held out text" not in text, text


def token_table(path: Path, windows: int, seq_len: int, source: str, dataset: str):
    """A token table's metadata as prepare-tokens writes it (its provenance: windows, length, source)."""
    pq.write_table(pa.table({"window_index": pa.array(range(windows), pa.uint32())}).replace_schema_metadata({
        "layerprune.table": "tokens", "layerprune.num_windows": str(windows), "layerprune.seq_len": str(seq_len),
        "layerprune.source": source, "layerprune.dataset_id": dataset}), path)


def test_the_summary_is_kept_beside_the_plan_as_text_and_json(tmp_path):
    """The summary was only printed, among hundreds of log lines: it is kept as kK/summary.txt (the
    text printed) and kK/summary.json (the same facts), and says which text and how much of it
    each perplexity is on, from the token tables' provenance."""
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    token_table(run / "tokens-eval.parquet", 40, 128, "lambada passages; documents 2500:; consecutive windows 40x128",
                "heldout")
    token_table(run / "tokens-calib.parquet", 10, 128, "lambada passages; documents 0:2500; random windows 10x128",
                "calib")
    plans(plan_dir / "plan.parquet", [("adaptive-raced", [3, 4], 3.4, 7)],
          {"dataset": "heldout", "chosen_on": "calib"})
    generator = plan_dir / "pruned-generator.onnx"
    generator.write_bytes(bytes(100))
    result = subprocess.run([sys.executable, str(SCRIPT), "summary", "--run", str(run), "--plan-dir", str(plan_dir),
                             "--source", "model.gguf", "--generator", str(generator)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (plan_dir / "summary.txt").read_text()
    assert result.stdout == "\n" + text, (result.stdout, text)
    lines = text.splitlines()
    assert lines[0].startswith("make prune: model.gguf, 2 of 6 blocks removed by adaptive removal raced"), text
    assert ("  held-out text: 40 windows x 128 tokens (tokens-eval.parquet): lambada passages; documents 2500:; "
            "consecutive windows 40x128") in lines, text
    assert ("  calibration text: 10 windows x 128 tokens (tokens-calib.parquet): lambada passages; documents "
            "0:2500; random windows 10x128") in lines, text
    # The saved files in the summary's own list, and the decoder with what it is for.
    assert any(line.startswith(f"  {plan_dir / 'summary.txt'}  ") and "summary.json: the same, machine-readable"
               in line for line in lines), text
    assert any(line.startswith(f"  {generator}  ") and "one ONNX decoder with a KV cache" in line for line in lines)
    assert f"generating text with ONNX Runtime or onnxruntime-genai: {generator}" in text

    facts = json.loads((plan_dir / "summary.json").read_text())
    assert facts["format"] == "layerprune.prune-summary" and facts["version"] == 1
    assert (facts["model"], facts["k"], facts["num_blocks"]) == ("model.gguf", 2, NUM_BLOCKS)
    assert facts["removed_blocks"] == [3, 4] and facts["kept_blocks"] == [0, 1, 2, 5]
    assert (facts["method"], facts["llm_evaluations"]) == ("adaptive-raced", 11)
    held, calib = facts["perplexity"]["held_out"], facts["perplexity"]["calibration"]
    assert (held["before"], held["after"], held["held_out"]) == (20.0, 30.0, True)
    assert math.isclose(held["ratio"], math.exp(0.4)) and held["ratio_low"] is None  # no standard error recorded
    assert math.isclose(calib["before"], math.exp(3.0)) and math.isclose(calib["after"], math.exp(3.2))
    assert facts["tokens"]["held_out"] == {
        "file": str(run / "tokens-eval.parquet"), "windows": 40, "seq_len": 128, "tokens": 5120,
        "source": "lambada passages; documents 2500:; consecutive windows 40x128", "dataset_id": "heldout",
        "measured": True}
    assert facts["tokens"]["calibration"]["tokens"] == 1280 and facts["tokens"]["calibration"]["measured"]
    assert facts["rival"] is None and facts["parameters"] is None  # none recorded in this stand-in run
    files = {Path(entry["path"]).name: entry for entry in facts["files"]}
    assert files["pruned-generator.onnx"]["bytes"] == 100 and files["llama-cpp-prune-layers.txt"]["bytes"] == 4
    assert "summary.txt" not in files
    assert facts["next"]["generator"] == str(generator)
    assert facts["next"]["llama_cpp"].startswith("llama-quantize --prune-layers 3,4 model.gguf")
    # No staging file left behind.
    assert sorted(p.name for p in plan_dir.iterdir() if p.name.startswith(".")) == []


def test_a_summary_with_nothing_new_is_not_rewritten_and_a_changed_one_is(tmp_path):
    """A `make prune` with nothing to do runs the summary again: it prints it, and leaves the kept
    files as they are (their times too); a summary that says something new replaces them."""
    import os

    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    assert summary(run, plan_dir).returncode == 0
    saved = [plan_dir / "summary.txt", plan_dir / "summary.json"]
    for path in saved:
        os.utime(path, (1000, 1000))
    result = summary(run, plan_dir)
    assert result.returncode == 0 and "make prune: model.gguf" in result.stdout, result.stderr
    assert [path.stat().st_mtime for path in saved] == [1000, 1000]
    # New held-out windows: the full model's perplexity on them is another number.
    pq.write_table(pa.table({"ppl": [25.0]}), run / "full-eval.parquet")
    token_table(run / "tokens-eval.parquet", 8, 128, "a text; consecutive windows 8x128", "other")
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert all(path.stat().st_mtime != 1000 for path in saved)
    assert "perplexity on the held-out text: 25.000 before" in saved[0].read_text()
    facts = json.loads(saved[1].read_text())
    assert facts["perplexity"]["held_out"]["before"] == 25.0 and facts["tokens"]["held_out"]["windows"] == 8


def test_held_out_tokens_made_again_since_the_plan_was_measured_are_named(tmp_path):
    """The token table's line describes the tokens the numbers are on only if the plan's table
    records them (its `dataset`); tokens made again since (a run stopped before measuring) are
    said not to be them."""
    run, plan_dir = run_folder(tmp_path, [("adaptive-raced", [3, 4], 3.2, 11)])
    plans(plan_dir / "plan.parquet", [("adaptive-raced", [3, 4], 3.4, 7)], {"dataset": "heldout"})
    token_table(run / "tokens-eval.parquet", 8, 128, "a text", "newer")
    result = summary(run, plan_dir)
    assert result.returncode == 0, result.stderr
    assert ("  held-out text: 8 windows x 128 tokens (tokens-eval.parquet) (made again since the plan was measured "
            "on it: not these tokens): a text") in result.stdout, result.stdout
    assert json.loads((plan_dir / "summary.json").read_text())["tokens"]["held_out"]["measured"] is False

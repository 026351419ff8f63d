"""crosscheck.py's verdict without a model: a NaN log-likelihood difference fails a task (it was
neither above the tolerance nor, unless first, the max), and a choices table with nothing of the
full model is refused rather than reported OK over no task. Needs pyarrow, not torch (the model
is loaded only once there is something to compare)."""

import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import crosscheck  # noqa: E402

ACC = {"rust": [1, 1], "torch": [1, 1]}


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
    pq.write_table(pa.Table.from_pylist([{"mask_id": "1101", "task": "piqa", "question": 0, "choice": c, "gold": 0,
                                          "loglik": -1.0, "continuation_tokens": 2, "norm_chars": 4}
                                         for c in (0, 1)]), choices)
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

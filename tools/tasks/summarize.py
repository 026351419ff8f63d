"""Zero-shot task results as a Markdown table, and the masks of pruning plans.

  python summarize.py masks PLANS.parquet...      one line per plan row: mask method k
  python summarize.py table --labels masks.txt CHOICES.parquet... [--questions-from C.parquet] [--out T.md]

`table` recomputes acc / acc_norm (Wilson 95 % intervals; the mean over tasks with a normal
interval) from `task_choices` tables, for every mask listed in --labels (mask method k; one
mask may carry several methods), on the questions present in every table given (or only those
of --questions-from), so masks scored in different runs are compared on the same questions.
Methods named `random-<seed>` are one row, "random (mean of N seeds)": per task the mean
accuracy over the seeds, with the lowest and highest seed in brackets. The last column is the
negative log-likelihood per token of the right answers, pooled over the tasks: unlike
accuracy near chance, it still separates a damaged model from a guessing one.
"""

import argparse
import math
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

TASKS = ["piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "boolq", "openbookqa"]
NAMES = {"piqa": "PIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
         "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "boolq": "BoolQ", "openbookqa": "OBQA"}
Z = 1.959963984540054


def wilson(k, n):
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return p, max(0.0, centre - half), min(1.0, centre + half)


def masks(paths):
    """One line per plan row: its mask_id (the id evaluation tables use), method and k. Plan
    tables written before they had the mask_id column get it derived from removed_blocks."""
    for path in paths:
        table = pq.read_table(path)
        num_blocks = int(table.schema.metadata[b"layerprune.num_blocks"])
        method = path.rsplit("/", 1)[-1].removesuffix(".parquet")
        for row in table.to_pylist():
            mask = row.get("mask_id")
            if mask is None:
                removed = set(row["removed_blocks"])
                mask = "".join("0" if b in removed else "1" for b in range(num_blocks))
            print(mask, method, row["k"])


METHOD_ORDER = ["reverse", "random", "block-influence", "angular", "leave-one-out", "sleb",
                "adaptive", "adaptive-raced", "published", "shapley", "iterative", "search"]


def method_key(method):
    base = "random" if method.startswith("random-") else method
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def accuracy(choices_by_question, metric):
    right = 0
    for choices in choices_by_question.values():
        lls = [choices[c][0] for c in range(len(choices))]
        if metric == "acc_norm":
            lls = [ll / max(choices[c][2], 1) for c, ll in enumerate(lls)]
        best = max(range(len(lls)), key=lambda i: (lls[i], -i))
        right += best == choices[0][1]
    return right, len(choices_by_question)


def table(args):
    labels = defaultdict(list)  # (method, k) -> masks (several for random seeds)
    for line in open(args.labels):
        mask, method, k = line.split()
        labels[(method, int(k))].append(mask)
    # (mask, task) -> question -> {choice: (loglik, gold, norm_bytes, tokens)}
    data = defaultdict(lambda: defaultdict(dict))
    question_sets = []
    for path in args.choices:
        rows = pq.read_table(path).to_pylist()
        question_sets.append({(r["task"], r["question"]) for r in rows})
        for r in rows:
            data[(r["mask_id"], r["task"])][r["question"]][r["choice"]] = (
                r["loglik"], r["gold"], r["norm_bytes"], r["continuation_tokens"])
    common = set.intersection(*question_sets)
    if args.questions_from:
        common &= {(r["task"], r["question"]) for r in pq.read_table(args.questions_from).to_pylist()}

    def task_counts(mask, task):
        questions = {q: c for q, c in data[(mask, task)].items() if (task, q) in common}
        return accuracy(questions, args.metric) if questions else None

    def gold_nll(mask):
        nll, tokens = 0.0, 0
        for task in TASKS:
            for q, choices in data[(mask, task)].items():
                if (task, q) in common:
                    gold = choices[0][1]
                    nll -= choices[gold][0]
                    tokens += choices[gold][3]
        return nll / tokens if tokens else None

    rows = defaultdict(list)  # (method, k) -> masks; random seeds merged into one row
    for (method, k), masks in labels.items():
        name = "random" if method.startswith("random-") else method
        rows[(name, k)].extend(masks)
    header = ["model", "k"] + [NAMES[t] for t in TASKS] + ["mean", "gold NLL/token"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(TASKS) + 2)]
    order = sorted(rows, key=lambda key: (key[0] != "full", key[1], method_key(key[0])))
    for method, k in order:
        masks = rows[(method, k)]
        cells = []
        if len(masks) == 1:
            props = []
            for task in TASKS:
                counts = task_counts(masks[0], task)
                if counts is None:
                    cells.append("–")
                    continue
                p, low, high = wilson(*counts)
                props.append(counts)
                cells.append(f"{100 * p:.1f} ({100 * low:.0f}–{100 * high:.0f})")
            if len(props) == len(TASKS):
                mean = sum(r / n for r, n in props) / len(props)
                half = Z * math.sqrt(sum((r / n) * (1 - r / n) / n for r, n in props)) / len(props)
                cells.append(f"**{100 * mean:.1f}** ± {100 * half:.1f}")
            else:
                cells.append("–")
            label = method
        else:
            means = []
            for task in TASKS:
                seeds = [task_counts(mask, task) for mask in masks]
                if any(c is None for c in seeds):
                    cells.append("–")
                    continue
                values = [100 * r / n for r, n in seeds]
                means.append(sum(values) / len(values))
                cells.append(f"{means[-1]:.1f} ({min(values):.0f}–{max(values):.0f})")
            if len(means) == len(TASKS):
                seed_means = [
                    sum(100 * r / n for r, n in (task_counts(mask, t) for t in TASKS)) / len(TASKS)
                    for mask in masks
                ]
                cells.append(f"**{sum(means) / len(means):.1f}** "
                             f"({min(seed_means):.1f}–{max(seed_means):.1f})")
            else:
                cells.append("–")
            label = f"{method} (mean of {len(masks)} seeds)"
        nlls = [gold_nll(mask) for mask in masks]
        cells.append("–" if None in nlls else f"{sum(nlls) / len(nlls):.2f}")
        out.append(f"| {label} | {k if k else '–'} | " + " | ".join(cells) + " |")
    counts = defaultdict(int)
    for task, _ in common:
        counts[task] += 1
    out += ["", "questions per task: " + ", ".join(f"{NAMES[t]} {counts[t]}" for t in TASKS)]
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("masks")
    m.add_argument("plans", nargs="+")
    t = sub.add_parser("table")
    t.add_argument("choices", nargs="+")
    t.add_argument("--labels", required=True)
    t.add_argument("--questions-from")
    t.add_argument("--metric", choices=["acc", "acc_norm"], default="acc")
    t.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()
    if args.command == "masks":
        masks(args.plans)
    else:
        table(args)


if __name__ == "__main__":
    main()

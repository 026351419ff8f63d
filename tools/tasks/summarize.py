"""Zero-shot task results as a Markdown table, and the masks of pruning plans.

  python summarize.py masks PLANS.parquet...      one line per plan row: mask method k
  python summarize.py table --labels masks.txt CHOICES.parquet... [--questions-from C.parquet] [--out T.md]

`table` recomputes acc / acc_norm (Wilson 95 % intervals; the mean over tasks with a normal
interval) from `task_choices` tables, for every mask listed in --labels (mask method k; one
mask may carry several methods), on the questions present in every table given (or only those
of --questions-from), so masks scored in different runs are compared on the same questions;
one column per task of those questions, and the mean over them.
Methods named `random-<seed>` are one row, "random (mean of N seeds)": per task the mean
accuracy over the seeds, with the lowest and highest seed in brackets. The last column is the
negative log-likelihood per token of the right answers, pooled over the tasks: unlike
accuracy near chance, it still separates a damaged model from a guessing one.

Refused (exit status 1, naming the file): a PLANS file that is missing, not Parquet or not a
`plans` table; a CHOICES or --questions-from file that is missing, not Parquet or not a
`task_choices` table; tables of different models (`model_id`) or, among the CHOICES tables,
of different scorings or computed on different devices (`evaluated_on`, naming both tables and
both devices; a table written before the entry existed is taken as computed on any); tables
whose question numbers mean different questions (a choice whose gold answer or length in
characters, `norm_chars`, differs between two rows: other task data); a --labels line that is
not `mask method k`.
A question counts for a mask only with all its choices (as many as any mask has of it). A cell
computed over fewer questions than the common set (a checkpoint, `complete` = false, or a mask
lacking questions or choices) is marked †, with a footnote saying over how many and a warning
on stderr naming the table; a label whose mask is in no table is warned of (its row shows –).
"""

import argparse
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
from layerprune_tables import TableError, current_method_name, read_table  # noqa: E402

TASKS = ["piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "boolq", "openbookqa"]
NAMES = {"piqa": "PIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
         "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "boolq": "BoolQ", "openbookqa": "OBQA"}
Z = 1.959963984540054
# The columns read from a task_choices table, and the scoring of tables written before the
# `scoring` entry existed (docs/formats.md).
COLUMNS = ["mask_id", "task", "question", "choice", "gold", "loglik", "norm_chars",
           "continuation_tokens"]
LEGACY_SCORING = "head-graph-nll"


def fail(message):
    sys.exit(f"summarize: {message}")


def warn(message):
    print(f"summarize: warning: {message}", file=sys.stderr)


def wilson(k, n):
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return p, max(0.0, centre - half), min(1.0, centre + half)


def read_table_of_kind(path, kind, writer):
    """The metadata (layerprune.* entries, as text) and table of the `kind` table at `path`,
    refused with the reason when it is missing, not Parquet or of another kind; `writer` says
    which stage writes it."""
    try:
        return read_table(path, kind, writer)
    except TableError as error:
        fail(str(error))


def masks(paths):
    """One line per plan row: its mask_id (the id evaluation tables use), method and k. Plan
    tables written before they had the mask_id column get it derived from removed_blocks.
    A file that is missing, not Parquet, not a plans table or without its number of blocks and
    columns is refused naming it (it ended in a Python traceback)."""
    for path in paths:
        metadata, table = read_table_of_kind(path, "plans", "apply-prune --out")
        try:
            num_blocks = int(metadata["layerprune.num_blocks"])
        except (KeyError, ValueError):
            fail(f"{path}: a plans table without a number of blocks (layerprune.num_blocks)")
        if "k" not in table.column_names or not {"mask_id", "removed_blocks"} & set(table.column_names):
            fail(f"{path}: a plans table without the column k, or both mask_id and removed_blocks")
        method = path.rsplit("/", 1)[-1].removesuffix(".parquet")
        for row in table.to_pylist():
            mask = row.get("mask_id")
            if mask is None:
                removed = set(row["removed_blocks"])
                mask = "".join("0" if b in removed else "1" for b in range(num_blocks))
            print(mask, method, row["k"])


METHOD_ORDER = ["reverse", "random", "block-influence", "angular", "leave-one-out", "sleb",
                "adaptive", "adaptive-raced", "stratified-semivalue", "surrogate-shapley", "iterative", "search"]


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


def read_choices(path):
    """The metadata and rows of a task_choices table, refused with the reason when it is
    missing, not Parquet, of another kind, without the columns read here, or empty."""
    metadata, table = read_table_of_kind(path, "task_choices", "evaluate --tasks --choices-out")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        fail(f"{path}: a task_choices table without the column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        fail(f"{path}: no rows")
    return metadata, table.select(COLUMNS).to_pylist()


def same_across(tables, key, default, what):
    """Refuse tables whose metadata entry `key` differs (absent = `default`), naming the first
    table and one that disagrees with it: their numbers are not comparable."""
    first, first_metadata, _ = tables[0]
    want = first_metadata.get(key, default)
    for path, metadata, _ in tables[1:]:
        got = metadata.get(key, default)
        if got != want:
            fail(f"{path} has {key} {got or 'unrecorded'}, {first} has {want or 'unrecorded'}: "
                 f"{what}, not comparable")


def same_where_recorded(tables, key, what):
    """Refuse tables whose metadata entry `key` differs among those that record it, naming two
    that disagree with their values; a table without it (written before the entry existed) is
    taken as agreeing with any. `same_across` cannot say this: with a default it would refuse an
    old table beside a new one, and without one it would compare only against the first table."""
    first = None  # (path, value) of the first table that records it
    for path, metadata, _ in tables:
        got = metadata.get(key)
        if got is None:
            continue
        if first is None:
            first = (path, got)
        elif got != first[1]:
            fail(f"{path} has {key} {got!r}, {first[0]} has {first[1]!r}: {what}, not comparable")


def same_questions(tables):
    """Refuse tables in which one (task, question, choice) has two gold answers or lengths in
    characters (`norm_chars`, what acc_norm divides by): both are facts of the question, the same
    under every mask and in every run on the same task data, so rows that differ are different
    questions under one number and comparing masks on them would compare answers to different
    questions."""
    seen = {}  # (task, question, choice) -> ((gold, norm_chars), the table it was first read in)
    for path, metadata, rows in tables:
        for r in rows:
            facts = (r["gold"], r["norm_chars"])
            first, first_path = seen.setdefault((r["task"], r["question"], r["choice"]),
                                                (facts, path))
            if facts != first:
                where = f"{path}: two rows" if path == first_path else f"{path} and {first_path}"
                fail(f"{where} disagree on {r['task']} question {r['question']} choice "
                     f"{r['choice']} (gold {first[0]} vs {facts[0]}, {first[1]} vs {facts[1]} "
                     "characters): scored on different task data, not comparable")


def read_labels(path):
    """(method, k) -> masks (several for random seeds), from the lines `mask method k`."""
    if not Path(path).exists():
        fail(f"{path}: missing (summarize.py masks writes its lines)")
    labels = defaultdict(list)
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                fail(f"{path} line {number}: {len(fields)} fields where 'mask method k' was "
                     f"expected: {line.strip()!r}")
            mask, method, k = fields
            try:
                labels[(method, int(k))].append(mask)
            except ValueError:
                fail(f"{path} line {number}: k is {k!r}, not an integer")
    return labels


def table(args):
    labels = read_labels(args.labels)
    tables = [(path, *read_choices(path)) for path in args.choices]
    extra = []  # --questions-from: a table only its questions are taken from
    if args.questions_from:
        extra.append((args.questions_from, *read_choices(args.questions_from)))
    same_across(tables + extra, "layerprune.model_id", None, "tables of different models")
    same_across(tables, "layerprune.scoring", LEGACY_SCORING, "log-likelihoods scored differently")
    # A CPU's and a GPU's log-likelihoods (or CUDA's with TF32 or another batch shape) differ in
    # the last digits, enough to change a close choice: masks scored on different devices would
    # differ by the device as well as the blocks removed (evaluate refuses to resume or merge
    # them for the same reason). Only the CHOICES tables: --questions-from gives questions only.
    same_where_recorded(tables, "layerprune.evaluated_on",
                        "log-likelihoods computed on different devices")
    same_questions(tables + extra)
    for path, metadata, _ in tables + extra:
        if metadata.get("layerprune.complete") != "true":
            warn(f"{path}: a checkpoint (layerprune.complete is not true), not a finished run: "
                 "what it has not scored yet is missing from the table")
    # (mask, task) -> question -> {choice: (loglik, gold, norm_chars, tokens)}
    data = defaultdict(lambda: defaultdict(dict))
    sources = defaultdict(list)  # mask -> the tables it has rows in
    # (task, question) -> its number of choices: the most any mask has of it (choices are
    # numbered from 0, so a gap shows as well as a missing last choice).
    num_choices = defaultdict(int)
    question_sets = []
    for path, _, rows in tables:
        question_sets.append({(r["task"], r["question"]) for r in rows})
        for r in rows:
            data[(r["mask_id"], r["task"])][r["question"]][r["choice"]] = (
                r["loglik"], r["gold"], r["norm_chars"], r["continuation_tokens"])
            if path not in sources[r["mask_id"]]:
                sources[r["mask_id"]].append(path)
            key = (r["task"], r["question"])
            num_choices[key] = max(num_choices[key], r["choice"] + 1)
    common = set.intersection(*question_sets)
    if extra:
        common &= {(r["task"], r["question"]) for r in extra[0][2]}
    if not common:
        fail("no question is in every table given" + (" and --questions-from" if extra else ""))
    common_per_task = Counter(task for task, _ in common)
    # The columns, and what the mean is over: the tasks the tables scored (`make tasks TASKS=…`
    # scores a few), in the usual order. With every task as a column, a run of a few showed
    # empty columns and no mean (a mean over tasks never scored).
    tasks = [t for t in TASKS if common_per_task[t]]

    whole = {}  # (mask, task) -> the questions of the common set the mask has every choice of

    def questions(mask, task):
        if (mask, task) not in whole:
            whole[(mask, task)] = {q: c for q, c in data[(mask, task)].items()
                                   if (task, q) in common and len(c) == num_choices[(task, q)]}
        return whole[(mask, task)]

    def short(mask):
        """task -> number of questions, for the tasks where the mask has fewer than the common
        set (an unfinished mask of a checkpoint, or rows missing)."""
        return {t: len(questions(mask, t)) for t in tasks
                if len(questions(mask, t)) < common_per_task[t]}

    def task_counts(mask, task):
        found = questions(mask, task)
        return accuracy(found, args.metric) if found else None

    def gold_nll(mask):
        nll, tokens = 0.0, 0
        for task in tasks:
            for choices in questions(mask, task).values():
                gold = choices[0][1]
                nll -= choices[gold][0]
                tokens += choices[gold][3]
        return nll / tokens if tokens else None

    for (method, k), masks in labels.items():
        for mask in masks:
            if mask not in sources:
                warn(f"{args.labels}: mask {mask} ({method}, k = {k}) is in no table given: "
                     "its row shows –")
    for mask in dict.fromkeys(m for masks in labels.values() for m in masks):
        lacking = short(mask)
        if mask in sources and lacking:
            named = "; ".join(f"{method}, k = {k}"
                              for (method, k), masks in labels.items() if mask in masks)
            warn(f"mask {mask} ({named}) in {', '.join(map(str, sources[mask]))}: "
                 + ", ".join(f"{NAMES[t]} {n} of {common_per_task[t]} questions"
                             for t, n in lacking.items())
                 + " with all their choices; its cells are marked † (or – where none)")

    def mark(flagged):
        return " †" if flagged else ""

    rows = defaultdict(list)  # (method, k) -> masks; random seeds merged into one row
    for (method, k), masks in labels.items():
        # By its name now: labels written before the names were made one say `published` and
        # `shapley` (the plan files' names then) for stratified-semivalue and surrogate-shapley.
        name = "random" if method.startswith("random-") else current_method_name(method)
        rows[(name, k)].extend(masks)
    header = ["model", "k"] + [NAMES[t] for t in tasks] + ["mean", "gold NLL/token"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(tasks) + 2)]
    notes = []  # the footnote's lines, one per mask of a row with a cell marked †
    order = sorted(rows, key=lambda key: (key[0] != "full", key[1], method_key(key[0])))
    for method, k in order:
        masks = rows[(method, k)]
        # A cell over fewer questions than the common set is marked; none is when inputs are
        # complete, so their table is as before.
        partial = {t for mask in masks for t, n in short(mask).items() if n > 0}
        cells = []
        if len(masks) == 1:
            props = []
            for task in tasks:
                counts = task_counts(masks[0], task)
                if counts is None:
                    cells.append("–")
                    continue
                p, low, high = wilson(*counts)
                props.append(counts)
                cells.append(f"{100 * p:.1f} ({100 * low:.0f}–{100 * high:.0f})"
                             + mark(task in partial))
            if len(props) == len(tasks):
                mean = sum(r / n for r, n in props) / len(props)
                half = Z * math.sqrt(sum((r / n) * (1 - r / n) / n for r, n in props)) / len(props)
                cells.append(f"**{100 * mean:.1f}** ± {100 * half:.1f}{mark(partial)}")
            else:
                cells.append("–")
            label = method
        else:
            means = []
            for task in tasks:
                seeds = [task_counts(mask, task) for mask in masks]
                if any(c is None for c in seeds):
                    cells.append("–")
                    continue
                values = [100 * r / n for r, n in seeds]
                means.append(sum(values) / len(values))
                cells.append(f"{means[-1]:.1f} ({min(values):.0f}–{max(values):.0f})"
                             + mark(task in partial))
            if len(means) == len(tasks):
                seed_means = [
                    sum(100 * r / n for r, n in (task_counts(mask, t) for t in tasks)) / len(tasks)
                    for mask in masks
                ]
                cells.append(f"**{sum(means) / len(means):.1f}** "
                             f"({min(seed_means):.1f}–{max(seed_means):.1f}){mark(partial)}")
            else:
                cells.append("–")
            label = f"{method} (mean of {len(masks)} seeds)"
        nlls = [gold_nll(mask) for mask in masks]
        # The gold NLL is pooled over whatever tasks a mask has, so it is marked when a whole
        # task is missing too (its accuracy cell then shows –).
        lacking = any(short(mask) for mask in masks)
        cells.append("–" if None in nlls else f"{sum(nlls) / len(nlls):.2f}{mark(lacking)}")
        out.append(f"| {label} | {k if k else '–'} | " + " | ".join(cells) + " |")
        if any(cell.endswith(" †") for cell in cells):
            for mask in masks:
                if short(mask):
                    notes.append(f"- {label}, k = {k} (mask {mask}): " + ", ".join(
                        f"{NAMES[t]} over {n or 'none'} of {common_per_task[t]}"
                        for t, n in short(mask).items()))
    out += ["", "questions per task: "
            + ", ".join(f"{NAMES[t]} {common_per_task[t]}" for t in tasks)]
    if notes:
        out += ["", "† over fewer questions than the common set (a checkpoint, or a mask lacking "
                "questions or some of their choices):", *notes]
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

"""Reading the pipeline's Parquet tables (docs/formats.md) from the Python tools: one place for
the metadata's decoding and for the refusals every tool makes, in one wording.

A table is refused, naming the file, when it is missing, not a readable Parquet file, or (where
the caller names a kind) not a table of that kind (`layerprune.table`):

  PATH: missing, where a plans table was expected (written by apply-prune --out)
  PATH: not a readable Parquet table (ERROR), where a plans table was expected (…)
  PATH: a table of kind 'evaluations', where a plans table was expected (…)
  PATH: not a layerprune table, where a plans table was expected (…)

The parenthesis is there when the caller says what writes the table. A refusal is raised as
`TableError`, which each tool turns into its own `<program>: error: …` exit:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/
    from layerprune_tables import TableError, read_table

    try:
        metadata, table = read_table(path, "plans", "apply-prune --out")
    except TableError as error:
        fail(str(error))

A method name recorded in a table (a plan table's `method`, frontier.csv's) is compared by
`current_method_name`, so that a table written before the names were made one reads as the same
method:

    if current_method_name(row["method"]) == current_method_name(asked): ...

Reading tables needs pyarrow (imported when a table is read); current_method_name and chosen_on
(what a plan table's plans were chosen on, from its metadata) need only the standard library.
"""

import json
from pathlib import Path

# Methods renamed when every table, flag and setting took one name per method (docs/formats.md):
# old name -> new. Recorded plan tables said `iterative-surrogate` and `surrogate-search` for
# apply-prune's --method iterative and search, frontier.csv `shapley` for surrogate-shapley, and
# plan files and labels named after Make's methods `published` and `shapley` (the methods
# stratified-semivalue and surrogate-shapley). The Rust stages' mapping is
# layerprune_selection::method_names::current_name; Make's and Snakemake's refusals of the old
# names are pipelines/settings.mk's RENAMED_METHOD_<old>.
RENAMED_METHODS = {
    "iterative-surrogate": "iterative",
    "surrogate-search": "search",
    "published": "stratified-semivalue",
    "shapley": "surrogate-shapley",
}
# A one-shot plan's old name: this prefix, then the estimator (the name now).
ONE_SHOT_PREFIX = "one-shot:"


def current_method_name(name):
    """What a method recorded as `name` is named now: `name` itself, or the current name of an old
    one (`one-shot:block-influence` -> `block-influence`, `surrogate-search` -> `search`,
    `shapley` -> `surrogate-shapley`). None stays None (a row without a method)."""
    if name is None:
        return None
    if name.startswith(ONE_SHOT_PREFIX):
        return name[len(ONE_SHOT_PREFIX):]
    return RENAMED_METHODS.get(name, name)


def renamed_method(name):
    """For a method ASKED for (a flag, not a table): the refusal of an old name, naming what it is
    called now (every stage writes the one name, so an old name asked for is a mistake, as the
    stages and Make refuse it); None for any other name."""
    now = current_method_name(name)
    return None if now == name else f"{name} is now named {now}"


def provenance_inputs(metadata: dict) -> dict:
    """The provenance inputs of a table (its decoded metadata): role -> id (`model`, `dataset`,
    `chosen_on`, ...; docs/formats.md); empty where it records none."""
    return json.loads(metadata.get("layerprune.inputs", "{}"))


def chosen_on(metadata: dict) -> set:
    """The dataset ids of the token tables the plans of a plan table (its decoded metadata) were
    chosen on: its provenance input `chosen_on`, several joined by ',' (docs/formats.md; the Rust
    stages' reader is layerprune_tables::parse_dataset_ids); none where it records none, as a
    table written before 2026-12-06."""
    return {dataset for dataset in provenance_inputs(metadata).get("chosen_on", "").split(",") if dataset}


class TableError(Exception):
    """A table refused; its message names the file, what is wrong and what was expected."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


def _expected(kind, writer):
    """The refusals' ending: the kind of table expected and what writes it, where known."""
    text = ""
    if kind:
        text += f", where {'an' if kind[0] in 'aeiou' else 'a'} {kind} table was expected"
    if writer:
        text += f" (written by {writer})"
    return text


def _read(path, kind, writer, whole):
    import pyarrow.parquet as pq  # here: current_method_name's readers need the standard library alone

    if not Path(path).exists():
        raise TableError(path, f"{path}: missing{_expected(kind, writer)}")
    try:
        with pq.ParquetFile(path) as parquet:
            metadata = {k.decode(): v.decode() for k, v in (parquet.metadata.metadata or {}).items()}
            table = parquet.read() if whole else None
    except Exception as error:  # pyarrow's errors for a file that is not Parquet, bytes not UTF-8
        raise TableError(path, f"{path}: not a readable Parquet table ({error}){_expected(kind, writer)}") from error
    found = metadata.get("layerprune.table")
    if kind is not None and found != kind:
        what = f"a table of kind {found!r}" if found else "not a layerprune table"
        raise TableError(path, f"{path}: {what}{_expected(kind, writer)}")
    return metadata, table


def read_metadata(path, kind=None, writer=None) -> dict:
    """The key-value metadata of the Parquet file at `path`, keys and values decoded as text
    (`layerprune.table`, `layerprune.model_id`, …), the file's columns not read. Raises
    TableError when the file is missing, not Parquet or, `kind` given, a table of another kind;
    `writer` (e.g. "evaluate") says in the message what writes the table."""
    return _read(path, kind, writer, whole=False)[0]


def read_table(path, kind=None, writer=None):
    """(metadata, pyarrow.Table) of the Parquet file at `path`, the metadata as read_metadata
    gives it; refused as read_metadata refuses."""
    return _read(path, kind, writer, whole=True)

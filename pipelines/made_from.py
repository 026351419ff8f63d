"""Whether an output made before its settings stamp existed was made from what the stamp records
now: Make's stamps (pipelines/layerprune.mk, settings_stamp_at's ADOPT) call this when they are
written for the first time, so that a folder made by an older makefile is taken as it is, the
stamp dated as the output, rather than made again for want of a stamp (a quantized run's
evaluations: every mask measured again on the quantized model, hours on a large model). Prints
the file whose time the new stamp takes, or nothing (the output is made again, as with any new
stamp). What a table was made from is read from the table itself, by the stages (`inspect --json`
reads its metadata as they do; `evaluate --merge` joins it to a mask table only when it holds
exactly that table's masks), not by time. Standard library only.

    python3 pipelines/made_from.py evaluations BIN TABLE MASKS TOKENS
        TABLE: a complete evaluation table of exactly MASKS' masks, measured on TOKENS
        (its `dataset` input is TOKENS' dataset_id)
    python3 pipelines/made_from.py plan BIN TABLE TOKENS
        TABLE: a plan table measured on TOKENS
    python3 pipelines/made_from.py quantized SOURCE FOLDER...
        every FOLDER that exists was quantized from the model folder SOURCE (its manifest's
        `quantization.source_model_id` is SOURCE's model id, the sha256 of its manifest); prints
        the oldest manifest.json among them
    python3 pipelines/made_from.py exported GGUF FOLDER
        the model folder FOLDER was exported from the GGUF file GGUF (its manifest's
        `source.sha256` is the GGUF's); prints its manifest.json
    python3 pipelines/made_from.py bench BIN TOKENS MASKS SUMMARY...
        every SUMMARY that exists (evaluate's --summary, which records no input) has its table
        beside it (evaluate's --out: the same name, .parquet), complete and measured on TOKENS,
        and, MASKS not `-`, of exactly MASKS' masks; the SUMMARY is that run's: not older than
        the table, and of its full model's NLL and blocks and of TOKENS' windows and length
        (evaluate writes the table, then the summary: a run stopped in between left a new table
        beside the summary of other tokens); and, named MODEL-full.json or MODEL-masks.json
        beside ../MODEL/manifest.json (quantize.mk's bench/), the table was measured on that
        model; prints the oldest SUMMARY among them
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

# The model id as the stages write it (the sha256 of the manifest): one function for both scripts.
from identity import MANIFEST, sha256


def metadata(bin_dir, path):
    """A table's metadata as the stages read it (`inspect --json`), or None when they refuse it."""
    try:
        result = subprocess.run([f"{bin_dir}/inspect", "--json", str(path)], capture_output=True, text=True)
    except OSError as error:
        # (A stage not built yet: the table is made again rather than a traceback.)
        print(f"made_from.py: cannot check {path}: {error}: made again", file=sys.stderr)
        return None
    if result.returncode != 0:
        return None
    try:
        found = json.loads(result.stdout)["metadata"]
    except (ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) else None


def measured_on(bin_dir, table, tokens):
    """TABLE's metadata when it was measured on TOKENS, else None."""
    if not Path(table).is_file():
        return None
    found, given = metadata(bin_dir, table), metadata(bin_dir, tokens)
    if not found or not given or not given.get("dataset_id"):
        return None
    inputs = found.get("inputs") or {}
    if not isinstance(inputs, dict):
        return None
    return found if inputs.get("dataset") == given["dataset_id"] else None


def complete_evaluations(bin_dir, table, tokens):
    """TABLE's metadata when it is a complete evaluation table measured on TOKENS, else None."""
    found = measured_on(bin_dir, table, tokens)
    return found if found and found.get("table") == "evaluations" and found.get("complete") is True else None


def evaluations(bin_dir, table, masks, tokens):
    return table if evaluations_of(bin_dir, table, masks, tokens) else None


def evaluations_of(bin_dir, table, masks, tokens):
    """TABLE's metadata when it is a complete evaluation table of exactly MASKS' masks measured on
    TOKENS, else None."""
    found = complete_evaluations(bin_dir, table, tokens)
    if not found:
        return None
    # The merge of one "shard" refuses a table lacking a mask of MASKS or holding one it lacks.
    with tempfile.TemporaryDirectory() as scratch:
        try:
            merged = subprocess.run([f"{bin_dir}/evaluate", "--masks", str(masks), "--merge", str(table),
                                     "--out", f"{scratch}/merged.parquet"], capture_output=True, text=True)
        except OSError as error:
            print(f"made_from.py: cannot check {table}: {error}: made again", file=sys.stderr)
            return None
    return found if merged.returncode == 0 else None


def plan(bin_dir, table, tokens):
    found = measured_on(bin_dir, table, tokens)
    return table if found and found.get("table") == "plans" else None


def quantized(source, *folders):
    try:
        source_id = sha256(Path(source) / MANIFEST)
    except OSError:
        return None
    manifests = [Path(folder) / MANIFEST for folder in folders]
    manifests = [manifest for manifest in manifests if manifest.is_file()]
    for manifest in manifests:
        try:
            made_from = json.loads(manifest.read_text())["quantization"]["source_model_id"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if made_from != source_id:
            return None
    return str(min(manifests, key=lambda m: m.stat().st_mtime_ns)) if manifests else None


def bench(bin_dir, tokens, masks, *summaries):
    summaries = [Path(summary) for summary in summaries if Path(summary).is_file()]
    if not summaries:
        return None
    measured = metadata(bin_dir, tokens)
    if not measured:
        return None
    for summary in summaries:
        table = summary.with_suffix(".parquet")
        found = (complete_evaluations(bin_dir, table, tokens) if masks == "-"
                 else evaluations_of(bin_dir, table, masks, tokens))
        if not found or not summary_of(summary, table, found, measured):
            return None
    return str(min(summaries, key=lambda s: s.stat().st_mtime_ns))


# A summary's fields and what the table beside it (`table`) or its tokens (`tokens`) record of them.
SUMMARY_FIELDS = {"full_model_nll": ("table", "full_model_nll"), "num_blocks": ("table", "num_blocks"),
                  "windows": ("tokens", "num_windows"), "seq_len": ("tokens", "seq_len")}


def summary_of(summary, table, found, tokens):
    """Whether SUMMARY was written by the run that wrote TABLE (its metadata FOUND), measured on
    the tokens whose metadata is TOKENS: the summary is written after the table, so not older,
    and records the same full-model NLL (the same f64, as JSON writes it) and blocks, and the
    tokens' windows and length; and TABLE's model is the model folder's beside bench/ when there
    is one (the summary records no model id)."""
    try:
        if summary.stat().st_mtime_ns < table.stat().st_mtime_ns:
            return False
        written = json.loads(summary.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(written, dict):
        return False
    sources = {"table": found, "tokens": tokens}
    for field, (source, key) in SUMMARY_FIELDS.items():
        value = written.get(field)
        if value is None or isinstance(value, bool) or value != sources[source].get(key):
            return False
    for suffix in ("-full.json", "-masks.json"):
        if summary.name.endswith(suffix):
            manifest = summary.parent.parent / summary.name[:-len(suffix)] / MANIFEST
            try:
                model_id = sha256(manifest)
            except OSError:
                # (No model folder there: none to compare; under quantize.mk, a model folder
                # made in this make makes its summaries again, being newer.)
                return True
            inputs = found.get("inputs") or {}
            return isinstance(inputs, dict) and inputs.get("model") == model_id
    return True


def exported(gguf, folder):
    """FOLDER's manifest when the folder was exported from the GGUF file GGUF (its manifest's
    `source` records the GGUF's sha256), else None."""
    manifest = Path(folder) / MANIFEST
    try:
        source = json.loads(manifest.read_text()).get("source")
        wanted = sha256(gguf)
    except (OSError, ValueError, AttributeError):
        return None
    recorded = source.get("sha256") if isinstance(source, dict) and source.get("kind") == "gguf" else None
    return manifest if recorded == wanted else None


# Each kind's check and its number of arguments: at least, at most (None: any more).
KINDS = {"evaluations": (evaluations, 4, 4), "plan": (plan, 3, 3), "quantized": (quantized, 2, None),
         "bench": (bench, 3, None), "exported": (exported, 2, 2)}


def main(argv):
    if not argv or argv[0] not in KINDS:
        sys.exit(f"usage: made_from.py {{{','.join(KINDS)}}} ARGS... (pipelines/made_from.py)")
    check, least, most = KINDS[argv[0]]
    args = argv[1:]
    if len(args) < least or (most is not None and len(args) > most):
        sys.exit(f"made_from.py {argv[0]}: wrong number of arguments (pipelines/made_from.py)")
    adopted = check(*args)
    if adopted:
        print(adopted)
        print(f"made_from.py: {adopted}: made before its stamp existed, from what the stamp records: "
              "kept (the stamp is dated as it)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

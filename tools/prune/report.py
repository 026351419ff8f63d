"""The last steps of `make prune` (pipelines/prune.mk): the block list for llama.cpp and the
closing summary.

  report.py llama-cpp --model FULL_DIR --pruned PRUNED_DIR --out FILE
      Writes the blocks the pruned layered folder deleted, 0-based and comma-separated, as
      `llama-quantize --prune-layers` takes them (the layers to REMOVE, numbered as the GGUF's
      `blk.N` tensors and the Hugging Face `model.layers.N` modules, which coincide). Read from
      the two manifests: the full model's block count and the pruned one's `original_index`es.
      Standard library only.

  report.py layers --config HF_DIR/config.json | --gguf FILE.gguf
      Prints a Hugging Face model's number of layers and the config key it is under, e.g.
      `12 n_layer` (a multimodal model's: its language model's), the blocks bound to their
      position (or -) and its model_type; for a GGUF file, from its header: `30
      llama.block_count - llama`. Standard library only.

  report.py summary --run RUN --plan-dir RUN/kK --source MODEL
                    [--max-ppl-ratio R [--max-ppl-ratio-se Z]] [--one-text FILE] [--generator FILE]
      Prints where everything is, the perplexity before and after, and which text and how much of
      it (windows x tokens, from the token tables' provenance) each perplexity is on (needs
      pyarrow: the exporter's environment); and keeps it beside the plan, kK/summary.txt (the text
      printed) and kK/summary.json (the same facts, machine-readable), each written through a
      staging file renamed into place, and only when its content changed (a `make prune` with
      nothing to do rewrites neither). --generator: the ONNX decoder make prune made, listed with
      the other files. The plan folder holds one plan: K blocks asked for (`kK/`), or as many as
      the calibration perplexity ratio R allowed (`ratioR/`; by Z standard errors, `ratioR-seZ/`). Its method is the one its plan.parquet records (adaptive-raced, sleb-raced
      for a ratio, or unraced, adaptive or sleb, where the calibration windows were too few to
      race), and the calibration numbers are that method's plan's in plan-calibration.parquet.
      Refused where plan.parquet was measured on tokens its plan was chosen on (its `chosen_on`
      names its `dataset`): its perplexity would be printed as held-out. With --one-text (make
      prune's CALIB_TEXT and EVAL_TEXT are that one file: other windows, so other tokens, which
      may overlap) its perplexity is printed as on EVAL_TEXT, not held out, and says why.
"""

import argparse
import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
from layerprune_tables import chosen_on, current_method_name, provenance_inputs  # noqa: E402  (the standard library alone)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from gguf_names import gguf_model_type  # noqa: E402  (the standard library alone)


def fail(message):
    sys.exit(f"report: error: {message}")


def read_manifest(folder: Path):
    path = folder / "manifest.json"
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        fail(f"cannot read {path}: {error}")


def removed_blocks(full: dict, pruned: dict):
    """The full model's blocks that the pruned folder does not keep, ascending."""
    num_blocks = full["num_blocks"]
    kept = [block["original_index"] for block in pruned["blocks"]]
    if any(not 0 <= index < num_blocks for index in kept) or len(set(kept)) != len(kept):
        fail(f"the pruned folder's original indices {kept} do not fit a model of {num_blocks} blocks")
    return [index for index in range(num_blocks) if index not in set(kept)]


def llama_cpp(args):
    removed = removed_blocks(read_manifest(args.model), read_manifest(args.pruned))
    if not removed:
        fail(f"{args.pruned} removes no block")
    text = ",".join(str(index) for index in removed) + "\n"
    staging = args.out.with_name(f".{args.out.name}.tmp")
    staging.write_text(text)
    staging.replace(args.out)
    print(f"wrote {args.out}: {text.strip()}")


def read_table_at(path: Path):
    """(metadata, rows) of the Parquet table at `path`; a missing file or one that is not Parquet is
    refused naming it (it ended in pyarrow's traceback)."""
    from layerprune_tables import TableError, read_table  # pyarrow: not needed by llama-cpp and layers

    try:
        metadata, table = read_table(path)
    except TableError as error:
        fail(str(error))
    return metadata, table.to_pylist()


def read_rows(path: Path):
    """The rows of the Parquet table at `path`, refused as read_table_at refuses."""
    return read_table_at(path)[1]


def total_bytes(path: Path) -> int:
    """A file's size, or the sum of a folder's files'."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in paths)


def file_size(path: Path):
    size = total_bytes(path)
    # Binary units, named as such (542,710,095 bytes are 517.6 MiB, or 542.7 MB as
    # docs/your-model.md counts them).
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def rival_margin(plan: dict):
    """A plan row's runner-up (the best other set of as many blocks the search measured):
    (its blocks, its NLL, the margin, the margin's standard error or None), or None when no rival
    was measured. Shared with tools/report/summarize.py."""
    rival, rival_nll = plan.get("runner_up_removed_blocks"), plan.get("runner_up_nll")
    if rival is None or rival_nll is None or plan.get("measured_nll") is None:
        return None
    return rival, rival_nll, rival_nll - plan["measured_nll"], plan.get("runner_up_margin_se")


def separation(margin: float, se):
    """How the calibration text separates the plan from its runner-up: "none" (under one standard
    error), "weak" (under two), "clear", or None without a standard error."""
    if not se:
        return None
    return "none" if margin < se else "weak" if margin < 2 * se else "clear"


def rival_lines(plan: dict):
    """How far the calibration text separates the plan from its runner-up, or nothing when no
    rival was measured."""
    found = rival_margin(plan)
    if found is None:
        return []
    rival, rival_nll, margin, se = found
    spread = f" ± {se:.4f}" if se else ""
    standard_errors = f", {margin / se:.1f} standard errors over the windows" if se else ""
    lines = [f"  closest rival measured: blocks {' '.join(map(str, rival))}, calibration perplexity "
             f"{math.exp(rival_nll):.3f} ({100 * math.expm1(margin):+.1f} %; margin {margin:.4f}{spread} nats a "
             f"token{standard_errors})"]
    if separation(margin, se) == "none":
        lines.append("  the calibration text does not tell the two apart: either is as defensible, and other text may")
        lines.append("  rank them either way (on SmolLM2 and Gemma 3 the held-out winner of such pairs was a coin toss,")
        lines.append("  up to 23 % apart: docs/results.md); calibrating on text like what the model will serve (CALIB_TEXT)")
        lines.append("  matters more")
    elif separation(margin, se) == "weak":
        lines.append("  the calibration text favours the plan, but by under two standard errors: not conclusively")
    return lines


def ratio_interval(plan: dict):
    """The plan's perplexity over the full model's on the tokens it was measured on, and the
    range two standard errors of its NLL increase over the windows allow: (ratio, low, high),
    low and high None without a standard error; None when the full model was not measured
    beside it (tables written before the plan table had full_model_nll)."""
    full, nll = plan.get("full_model_nll"), plan.get("measured_nll")
    if full is None or nll is None:
        return None
    increase, se = nll - full, plan.get("nll_increase_se")
    if se is None:
        return math.exp(increase), None, None
    return math.exp(increase), math.exp(increase - 2 * se), math.exp(increase + 2 * se)


def ratio_text(plan: dict):
    """'1.491x; 1.430-1.555x at two standard errors over its windows', or '1.491x'."""
    ratio, low, high = ratio_interval(plan)
    spread = f"; {low:.3f}-{high:.3f}x at two standard errors over its windows" if low else ""
    return f"{ratio:.3f}x{spread}"


def target_heading(max_ratio, standard_errors=None):
    """What the plan was chosen for: the ratio, and the margin of standard errors if one was asked."""
    margin = (f" by {standard_errors} standard errors of its windows (MAX_PPL_RATIO_SE)"
              if standard_errors is not None else "")
    # "found": the search probes one plan per k (its method's), so a plan of more blocks that
    # another method would find within the ratio may exist (it is not an exhaustive search).
    return (f"  the most blocks the search found whose plan keeps the calibration perplexity within "
            f"{max_ratio}x the full model's (MAX_PPL_RATIO){margin}")


def counted(count: int, noun: str) -> str:
    """'1 block', '4 blocks' (a plan of one kept block printed "1 blocks")."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cap_lines(k: int, num_blocks: int):
    """A note when the plan chosen within a ratio removes every block but one: no plan removes more
    (one block must stay), so that k is where the search stopped, not where the ratio did."""
    if k != num_blocks - 1:
        return []
    return ["  that is every block but one, the most any plan removes: the search stopped there, not at the ratio"]


def target_lines(calibration: dict, max_ratio: float):
    """Whether the calibration windows settle that the plan is within the ratio asked for."""
    found = ratio_interval(calibration)
    if found is None or found[2] is None:
        return []
    ratio, _, high = found
    if ratio > max_ratio:
        return [f"  over {max_ratio}x on the calibration text: the search found no plan within it"]
    if high <= max_ratio:
        return [f"  within {max_ratio}x on the calibration text by more than two standard errors of its windows"]
    return [f"  within {max_ratio}x on the calibration text, but by under two standard errors of its windows:",
            "  another draw of calibration text of this kind could put it over (CALIB_WINDOWS buys precision)"]


# Past this perplexity ratio to the full model on the calibration text, which plan is best there
# says little about other text: layerprune_selection::margin::UNRELIABLE_PPL_RATIO, whose
# documentation gives the measurements (tests/workflow/test_prune_report.py keeps the two equal).
UNRELIABLE_PPL_RATIO = 20.0


def depth_lines(calibration: dict):
    """A warning when the plan's calibration perplexity is past UNRELIABLE_PPL_RATIO times the full
    model's (or diverged); nothing within it or without the full model beside the plan."""
    found = ratio_interval(calibration)
    if found is None or not (math.isnan(found[0]) or found[0] > UNRELIABLE_PPL_RATIO):
        return []
    return [f"  warning: the pruned model's calibration perplexity is {found[0]:.0f}x the full model's. Past "
            f"{UNRELIABLE_PPL_RATIO:.0f}x, which plan",
            "  is best on the calibration text says little about other text (the calibration optimum of 11 of",
            "  SmolLM2's blocks 16-27, 240x, had 7.2x SLEB's plan's perplexity on WikiText-2: docs/results.md,",
            "  \"On held-out text\"); remove fewer blocks (K, MAX_PPL_RATIO)"]


def transfer_lines(heldout: dict, calibration: dict):
    """A note when the held-out text lost more than the calibration text allows: the low end of the
    held-out ratio's range at two standard errors above the high end of the calibration ratio's.
    Nothing without both ranges."""
    held, calib = ratio_interval(heldout), ratio_interval(calibration)
    if held is None or calib is None or held[1] is None or calib[2] is None or not held[1] > calib[2]:
        return []
    return [f"  the held-out text lost more than the calibration text ({held[0]:.3f}x against {calib[0]:.3f}x, "
            "beyond two standard errors",
            "  of either): it differs from the calibration text, and a plan chosen on text like what the model",
            "  will serve (CALIB_TEXT) may lose less there"]


# The config.json keys a language model's number of layers is under, as transformers' config
# classes read `num_hidden_layers` for the exporter's architectures (which export_layered.py and
# prune_hf.py use): the key itself, or GPT-2's n_layer (GPT2Config.attribute_map). No other
# supported architecture renames it: tools/export/tests/test_prune_hf.py checks this against
# transformers for every one.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer")


def layer_count(config: dict):
    """A Hugging Face config's number of layers and the key it is under, e.g. (12, "n_layer"); a
    multimodal checkpoint's (Gemma 3 4B and up) is its language model's, in text_config
    ("text_config.num_hidden_layers"). (None, None) when the config has none."""
    text, prefix = (config["text_config"], "text_config.") if config.get("text_config") else (config, "")
    for key in LAYER_COUNT_KEYS:
        if isinstance(text.get(key), int):
            return text[key], prefix + key
    return None, None


def position_bound_blocks(config: dict):
    """The blocks a checkpoint ties to their position, which a pruned checkpoint cannot keep in
    place: Qwen3-VL adds its vision tower's deepstack features to the hidden states after its
    language model's first len(deepstack_visual_indexes) blocks, by loop position (transformers'
    Qwen3VLTextModel.forward), so deleting one of them moves the features of an image after
    another block. Text alone is unaffected; the plan keeps them (apply-prune --fixed)."""
    vision = config.get("vision_config") or {}
    deepstack = vision.get("deepstack_visual_indexes") if isinstance(vision, dict) else None
    return list(range(len(deepstack))) if isinstance(deepstack, list) else []


# GGUF's value types (gguf-py's GGUFValueType) and the struct format of the fixed-size ones.
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_STRING, GGUF_ARRAY = 8, 9



def gguf_header(path: Path, keep, done) -> dict:
    """The metadata values of the GGUF file at `path` under the keys `keep(key)` is true of, read
    from its header without the gguf package (Make reads it with the system Python before any
    environment exists) up to where `done(found)`. A file that is not GGUF, or ends inside its
    header, raises ValueError."""
    import struct

    found = {}
    with open(path, "rb") as handle:
        length = os.fstat(handle.fileno()).st_size

        def take(size: int) -> bytes:
            # A size past the file's end (a truncated file, or a count of another byte order) is
            # refused before reading: read() would try to hold it.
            if size > length - handle.tell():
                raise ValueError("the file ends inside its header")
            return handle.read(size)

        def number(fmt: str):
            return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

        def string() -> str:
            return take(number("<Q")).decode("utf-8", "replace")

        def value(kind: int):
            if kind in GGUF_SCALARS:
                return number(GGUF_SCALARS[kind])
            if kind == GGUF_STRING:
                return string()
            if kind == GGUF_ARRAY:
                item, count = number("<I"), number("<Q")
                if item in GGUF_SCALARS:  # skipped whole: a tokenizer's scores and types
                    take_size = count * struct.calcsize(GGUF_SCALARS[item])
                    if take_size > length - handle.tell():
                        raise ValueError("the file ends inside its header")
                    handle.seek(take_size, 1)
                    return None
                for _ in range(count):
                    value(item)
                return None
            raise ValueError(f"a metadata value of unknown type {kind}")

        if take(4) != b"GGUF":
            raise ValueError("not a GGUF file (it does not begin with GGUF)")
        version = number("<I")
        if version not in (2, 3):  # 1: older than transformers reads; others: another byte order
            raise ValueError(f"GGUF version {version}: transformers reads versions 2 and 3, little-endian")
        number("<Q")  # tensors
        for _ in range(number("<Q")):
            key, kind = string(), number("<I")
            read = value(kind)
            if keep(key):
                found[key] = read
                if done(found):
                    break
    return found


def gguf_layers(path: Path):
    """A GGUF file's number of blocks, the key it is under and the model_type transformers loads
    it as, e.g. (30, "llama.block_count", "llama"); an error naming the file where its header
    has none."""
    def keep(key: str) -> bool:
        return key == "general.architecture" or key.endswith(".block_count")

    def done(found: dict) -> bool:
        return f"{found.get('general.architecture')}.block_count" in found

    try:
        header = gguf_header(path, keep, done)
    except (OSError, ValueError) as error:
        fail(f"cannot read {path}: {error}")
    arch = header.get("general.architecture")
    key = f"{arch}.block_count"
    if not isinstance(header.get(key), int):
        fail(f"{path} gives no number of blocks ({key if arch else 'no general.architecture'})")
    return header[key], key, gguf_model_type(arch)


def layers(args):
    """Prints the number of layers, the key it is under, the position-bound blocks (comma
    separated, or -) and the model_type (a GGUF file's as transformers loads it)."""
    if args.gguf:
        count, key, model_type = gguf_layers(args.gguf)
        print(count, key, "-", model_type)
        return
    try:
        with open(args.config) as handle:
            config = json.load(handle)
        count, key = layer_count(config)
    except (OSError, ValueError) as error:
        fail(f"cannot read {args.config}: {error}")
    if count is None:
        fail(f"{args.config} gives no number of layers ({' or '.join(LAYER_COUNT_KEYS)})")
    text = config["text_config"] if config.get("text_config") else config
    print(count, key, ",".join(map(str, position_bound_blocks(config))) or "-", text.get("model_type", "-"))


# llama.cpp sets these architectures' local (sliding-window) and global attention by a block's
# position, not from the GGUF: loading their hyperparameters (src/llama-model.cpp) it calls
# hparams.set_swa_pattern(2) for Gemma 2 and set_swa_pattern(6) for Gemma 3 (whose local blocks
# also get RoPE base 10000). `--prune-layers` renumbers the kept blocks, so each takes the type of
# its new position; and convert_hf_to_gguf.py writes their sliding window but not a checkpoint's
# layer_types, so a GGUF converted from pruned-hf/ gets the same. Read in llama.cpp's source, not
# run. The exporter's other architectures with a per-block
# pattern, Qwen2/3's max_window_layers, have no sliding window in llama.cpp, pruned or not.
LLAMA_CPP_POSITIONAL_PATTERN = {"gemma2", "gemma3_text"}


def llama_cpp_retyped_blocks(full: dict, pruned: dict):
    """The kept blocks (original indices) whose attention type llama.cpp would change: at its new
    position j the type the full model has at block j (llama.cpp's pattern by position is the
    model's own), not that of its original index. Empty for other architectures."""
    if full.get("architecture") not in LLAMA_CPP_POSITIONAL_PATTERN or not full.get("attention"):
        return []
    types = [entry["type"] for entry in full["attention"]]
    kept = [block["original_index"] for block in pruned["blocks"]]
    return [index for position, index in enumerate(kept) if types[index] != types[position]]


def llama_cpp_lines(full: dict, pruned: dict, gguf_written: bool = False):
    """A caveat under the llama.cpp command when llama.cpp would run other attention than the plan's.
    `gguf_written`: make prune wrote pruned.gguf (prune_gguf.py), which states the kept blocks'
    types block by block where they leave the pattern by position (attention.sliding_window_pattern)."""
    retyped = llama_cpp_retyped_blocks(full, pruned)
    if not retyped:
        return []
    types = [entry["type"] for entry in full["attention"]]
    changes = ", ".join(f"{index} ({'local' if types[index] == 'sliding_attention' else 'global'} -> "
                        f"{'global' if types[index] == 'sliding_attention' else 'local'})" for index in retyped)
    lines = [f"  caveat for llama.cpp: it sets {full['architecture']}'s local/global attention by a block's position unless "
             "the GGUF",
             "  states it, and --prune-layers renumbers the kept blocks and states nothing, so there these change type:",
             f"  blocks {changes}: a model other than the plan's (Gemma 3 270M without blocks 7 and 11 ran",
             "  9 % above the plan's perplexity in llama.cpp b11434); so does a GGUF converted from pruned-hf/",
             "  (convert_hf_to_gguf.py writes no layer_types). The plan's model is pruned/ and pruned-hf/ (docs/your-model.md)"]
    if gguf_written:
        lines.append("  pruned.gguf states each kept block's type (attention.sliding_window_pattern, one a block): llama.cpp "
                     "b11434 runs it as the plan's model; builds older than its reading of that key, and Ollama's own "
                     "Gemma engine, set the types by position as above")
    return lines


def llama_cpp_command(layers: str, source: str) -> str:
    """The llama-quantize command deleting the plan's blocks. From the source itself where it is a
    GGUF file, with COPY: such a file is mostly quantized (Q4_1 for the demo's SmolLM2), and
    llama-quantize refuses to quantize a quantized tensor again without --allow-requantize
    ("requantizing from type %s is disabled", src/llama-quant.cpp; read there, not run), which
    the command printed with TYPE would have met; COPY writes every kept tensor as it is. Else
    from the GGUF a user converts the checkpoint to (F16 or F32, docs/your-model.md), into a TYPE."""
    if source.endswith(".gguf"):
        return (f"llama-quantize --prune-layers {layers} {source} pruned-by-llama-quantize.gguf COPY "
                "(its tensors as they are, as pruned.gguf's; another TYPE from a quantized GGUF needs "
                "--allow-requantize)")
    return f"llama-quantize --prune-layers {layers} model.gguf pruned.gguf TYPE"


def count_text(count: int) -> str:
    """169.0k, 134.5M, 6.74B."""
    return (f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M" if count >= 1e6
            else f"{count / 1e3:.1f}k")


def size_lines(config: dict, kept: int, num_blocks: int):
    """What the pruning saves: the checkpoint's parameters before and after (prune_hf.py's
    `layerprune_parameters`; nothing for a checkpoint written before it). Not a time: the full
    model's evaluation is kept from the run's first K, so two timings could be of different
    loads of the machine (one such pair read 0.54x as fast for a pruned model)."""
    counts = config.get("layerprune_parameters")
    if not counts or not counts.get("source"):
        return []
    source, pruned = counts["source"], counts["pruned"]
    return [f"  parameters: {count_text(source)} before, {count_text(pruned)} after "
            f"({100 * (pruned - source) / source:+.1f} %; {kept} of {num_blocks} blocks, the embedding and head kept)"]


# How the summary names the methods `make prune` chooses with (pipelines/prune.mk's PRUNE_SEARCH,
# as the plan table records it: the unraced names where the calibration windows are too few for a
# race to drop any mask). Any other method is printed as recorded.
METHOD_NAMES = {"adaptive": "adaptive removal",
                "adaptive-raced": "adaptive removal raced over the calibration windows",
                "sleb": "SLEB",
                "sleb-raced": "SLEB raced over the calibration windows"}


def chosen_elsewhere(plan: Path, dataset, model, made: float) -> bool:
    """Whether the plan table `plan` was chosen on other calibration tokens than those of dataset id
    `dataset`, or for another model than that of model id `model`, as its metadata records them
    (`chosen_on`, and the `model` of its inputs). A table recording no chosen_on (written before
    2026-12-06), or tokens whose id cannot be read, are judged by the files' times: chosen before
    the tokens were made at `made` (tokens made again alike, a setting changed and put back, are
    newer than a plan chosen on them: a time alone named such a plan older)."""
    from layerprune_tables import TableError, read_metadata

    try:
        metadata = read_metadata(plan)
    except TableError:
        metadata = {}
    on = chosen_on(metadata)
    if not (on and dataset):
        return plan.stat().st_mtime < made
    chosen_for = provenance_inputs(metadata).get("model")
    return dataset not in on or bool(model and chosen_for and chosen_for != model)


def stale_plan_lines(run: Path, folder: Path):
    """The run's other plan folders (k<K>/, ratio<R>/) chosen on other calibration tokens or for
    another model than the run's now: Make makes the tokens again for another model or other
    calibration settings, and remakes only the plan asked for, so the others may still hold what
    an earlier model or text gave (chosen_elsewhere)."""
    from layerprune_tables import TableError, read_metadata

    tokens = run / "tokens-calib.parquet"
    if not tokens.exists():
        return []
    try:
        dataset = read_metadata(tokens).get("layerprune.dataset_id")
    except TableError:
        dataset = None
    # A model's id is the sha256 of its manifest's bytes (docs/model-format.md), as plan tables record it.
    manifest = run / "model" / "manifest.json"
    model = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    made = tokens.stat().st_mtime
    stale = []
    for other in sorted(run.iterdir()):
        if other == folder or not other.is_dir() or not re.fullmatch(r"k\d+|ratio[\d.e+]+(-se[\d.e+]+)?", other.name):
            continue
        plan = other / "plan-calibration.parquet"
        if plan.exists() and chosen_elsewhere(plan, dataset, model, made):
            stale.append(f"{other.name}/")
    if not stale:
        return []
    return [f"  older here: {', '.join(stale)}: chosen before the calibration tokens were last made, on other tokens "
            "or for another model (an earlier model or calibration setting); make prune with their K or "
            "MAX_PPL_RATIO chooses them again"]


def one_text_lines(text: str):
    """Why the perplexity on EVAL_TEXT is not held out where it is CALIB_TEXT's file: the Makefile's
    warning said so on the first line of a long log, and the summary called it held-out."""
    return [f"  CALIB_TEXT and EVAL_TEXT are one file ({text}): the plan was chosen on windows of it and measured",
            "  on windows of it, which may overlap, so this perplexity is not held out; give EVAL_TEXT other text",
            "  (of the same kind) to judge the plan on text it was not chosen on"]


def calibration_row(path: Path, method: str, k: int, removed):
    """The plan as chosen on the calibration text: the row of `method` at `k` (a row of another
    method at the same k would put its evaluations and perplexity under this method's name),
    refused, naming the file, when there is none or it removes other blocks than the pruned
    folder (chosen again since)."""
    # By the names methods have now: a calibration table written before they were made one
    # records the old name, where the plan measured again since records the new.
    rows = [r for r in read_rows(path)
            if current_method_name(r["method"]) == current_method_name(method) and r["k"] == k]
    if len(rows) != 1:
        fail(f"{path} has {len(rows)} plans by {method} at k = {k}, not one")
    if sorted(rows[0]["removed_blocks"]) != removed:
        fail(f"{path}: the plan by {method} at k = {k} removes {sorted(rows[0]['removed_blocks'])} but the "
             f"pruned folder {removed}: chosen again since the folder was written")
    return rows[0]


def finite(value):
    """A number for summary.json: None for a missing or non-finite one (JSON has no NaN)."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


# The token tables the summary's perplexities are measured on: (role, file in the run folder, the
# plan table whose provenance `dataset` names the tokens it was measured on).
TOKEN_TABLES = (("held-out", "tokens-eval.parquet", "plan.parquet"),
                ("calibration", "tokens-calib.parquet", "plan-calibration.parquet"))


def token_text(run: Path, folder: Path, name: str, plan_table: str):
    """What a token table holds, from its metadata (prepare-tokens' provenance): {file, windows,
    seq_len, tokens, source, dataset_id, measured}, `measured` false where the plan table records
    other tokens than these (made again since it was measured); None when the table cannot be read."""
    from layerprune_tables import TableError, read_metadata

    path = run / name
    try:
        metadata = read_metadata(path, "tokens")
    except TableError:
        return None

    def integer(key):
        try:
            return int(metadata[key])
        except (KeyError, ValueError):
            return None

    windows, seq_len = integer("layerprune.num_windows"), integer("layerprune.seq_len")
    dataset = metadata.get("layerprune.dataset_id")
    try:
        measured_on = provenance_inputs(read_metadata(folder / plan_table)).get("dataset")
    except (TableError, ValueError):
        measured_on = None
    return {"file": os.path.abspath(path), "windows": windows, "seq_len": seq_len,
            "tokens": windows * seq_len if windows is not None and seq_len is not None else None,
            "source": metadata.get("layerprune.source"), "dataset_id": dataset,
            "measured": not (measured_on and dataset and measured_on != dataset)}


def token_lines(tokens: dict, heldout_name: str):
    """A line for each token table: which text, and how much, the perplexities above are on
    (held-out perplexities of two runs differ with EVAL_WINDOWS, and nothing said why)."""
    lines = []
    for role, name, _ in TOKEN_TABLES:
        found = tokens.get(role)
        if found is None:
            continue
        size = (f"{found['windows']} windows x {found['seq_len']} tokens"
                if found["windows"] is not None and found["seq_len"] is not None else "windows not recorded")
        stale = "" if found["measured"] else " (made again since the plan was measured on it: not these tokens)"
        label = heldout_name if role == "held-out" else "calibration text"
        lines.append(f"  {label}: {size} ({name}){stale}: {found['source'] or 'source not recorded'}")
    return lines


def write_if_changed(path: Path, text: str) -> bool:
    """Writes `text` to `path` through a staging file renamed into place (a reader never sees half a
    file), unless the file already holds it: a `make prune` with nothing to do rewrites nothing."""
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    staging.replace(path)
    return True


# The saved summary, beside the plan: the text printed, and the same facts as JSON.
SUMMARY_TEXT, SUMMARY_JSON = "summary.txt", "summary.json"
SUMMARY_FORMAT = "layerprune.prune-summary"
SUMMARY_VERSION = 1


def summary(args):
    run, folder = args.run, args.plan_dir
    full = read_manifest(run / "model")
    pruned = read_manifest(folder / "pruned")
    removed = removed_blocks(full, pruned)
    # The plan measured on the held-out text, and its method as apply-prune recorded it (make prune
    # names none: a race over too few windows records the unraced method's name).
    metadata, plan = read_table_at(folder / "plan.parquet")
    if len(plan) != 1:
        fail(f"{folder / 'plan.parquet'} has {len(plan)} plans, not one")
    # The perplexities below are printed as held-out, which they are not where the plan was
    # measured on tokens its choice read: one file given as CALIB_TEXT and EVAL_TEXT can cut the
    # same windows for both (random windows of a text with no tokens to spare are its consecutive
    # ones). apply-prune warns of it in the log; this is the line a user reads.
    measured_on = provenance_inputs(metadata).get("dataset")
    if measured_on and measured_on in chosen_on(metadata):
        fail(f"{folder / 'plan.parquet'}: measured on the tokens its plan was chosen on (its dataset is in "
             "its chosen_on), so its perplexity is not held out: give EVAL_TEXT other text than CALIB_TEXT")
    plan = plan[0]
    method, k = plan["method"], plan["k"]
    if sorted(plan["removed_blocks"]) != removed:
        fail(f"the plan removes {sorted(plan['removed_blocks'])} but the pruned folder {removed}")
    calibration = calibration_row(folder / "plan-calibration.parquet", method, k, removed)
    before = read_rows(run / "full-eval.parquet")[0]
    after = read_rows(folder / "pruned-eval.parquet")[0]
    hf = folder / "pruned-hf"
    with open(hf / "config.json") as handle:
        config = json.load(handle)
    kept_layers, _ = layer_count(config)
    dtype = config.get("dtype", config.get("torch_dtype", "?"))
    layers = (folder / "llama-cpp-prune-layers.txt").read_text().strip()
    gguf_written = args.source.endswith(".gguf") and (folder / "pruned.gguf").is_file()
    generator = Path(args.generator) if args.generator and Path(args.generator).is_file() else None
    num_blocks = full["num_blocks"]
    method_name = METHOD_NAMES.get(method, method)
    heldout_name = "EVAL_TEXT, not held out" if args.one_text else "held-out text"
    tokens = {role: token_text(run, folder, name, table) for role, name, table in TOKEN_TABLES}

    lines = []
    say = lines.append
    say(f"make prune: {args.source}, {k} of {num_blocks} blocks removed by {method_name} "
        f"({counted(calibration['llm_evaluations'], 'LLM evaluation')} on the calibration text to choose them)")
    if args.max_ppl_ratio is not None:
        say(target_heading(args.max_ppl_ratio, args.max_ppl_ratio_se))
        lines.extend(cap_lines(k, num_blocks))
    say(f"  removed blocks (0-based): {' '.join(map(str, removed))}")
    heldout_interval = ratio_interval(plan)
    heldout_ratio = ratio_text(plan) if heldout_interval else f"{after['ppl'] / before['ppl']:.3f}x"
    say(f"  perplexity on {'EVAL_TEXT, not held out' if args.one_text else 'the held-out text'}: "
        f"{before['ppl']:.3f} before, {after['ppl']:.3f} after ({heldout_ratio})")
    if args.one_text:
        lines.extend(one_text_lines(args.one_text))
    calibration_interval = ratio_interval(calibration)
    calibration_before = math.exp(calibration["full_model_nll"]) if calibration_interval else None
    if calibration_interval:
        say(f"  on the calibration text: {calibration_before:.3f} before, "
            f"{calibration['measured_ppl']:.3f} after ({ratio_text(calibration)})")
    else:
        say(f"  on the calibration text after: {calibration['measured_ppl']:.3f}")
    lines.extend(token_lines(tokens, heldout_name))
    if args.max_ppl_ratio is not None:
        lines.extend(target_lines(calibration, float(args.max_ppl_ratio)))
    # Held-out text that lost more than the calibration text says the texts differ: not of one file.
    transfer = [] if args.one_text else transfer_lines(plan, calibration)
    lines.extend(rival_lines(calibration) + depth_lines(calibration) + transfer)
    lines.extend(size_lines(config, len(pruned["blocks"]), num_blocks))
    say("")
    lm_eval = f"lm_eval --model hf --model_args pretrained={hf},dtype={dtype} --tasks ..."
    rows = [
        (run / "model", f"the full model, layered ONNX ({num_blocks} blocks, {file_size(run / 'model')})"),
        (folder / "plan.parquet", f"the plan, measured on {'EVAL_TEXT' if args.one_text else 'the held-out text'} "
                                  "(plan-calibration.parquet: on the calibration text)"),
        (folder / "pruned", f"the pruned model, layered ONNX ({counted(len(pruned['blocks']), 'block')}, "
                            f"{file_size(folder / 'pruned')})"),
        (hf, f"the pruned Hugging Face checkpoint ({counted(kept_layers, 'layer')}, {dtype}, "
             f"{file_size(hf)})"),
        *([(generator, f"the pruned checkpoint as one ONNX decoder with a KV cache, for generating text "
                       f"(ONNX Runtime or onnxruntime-genai; {file_size(generator)})")] if generator else []),
        *([(folder / "pruned.gguf", f"the pruned GGUF file ({counted(len(pruned['blocks']), 'block')}, the kept "
                                     f"tensors as they are in {Path(args.source).name}, {file_size(folder / 'pruned.gguf')})")]
          if gguf_written else []),
        (folder / "llama-cpp-prune-layers.txt", f"for llama.cpp: {llama_cpp_command(layers, args.source)}"),
        (run / "full-eval.parquet", "the full model's evaluation (pruned-eval.parquet: the pruned model's)"),
        (folder / SUMMARY_TEXT, f"this summary ({SUMMARY_JSON}: the same, machine-readable)"),
    ]
    width = max(len(str(path)) for path, _ in rows)
    for path, what in rows:
        say(f"  {str(path):<{width}}  {what}")
    lines.extend(llama_cpp_lines(full, pruned, gguf_written) + stale_plan_lines(run, folder))
    say("")
    say(f"  lm-evaluation-harness: {lm_eval} (docs/your-model.md)")
    if generator:
        say(f"  generating text with ONNX Runtime or onnxruntime-genai: {generator}, one decoder with a KV cache "
            "(docs/your-model.md)")
    text = "\n".join(lines) + "\n"

    rival = rival_margin(calibration)
    counts = config.get("layerprune_parameters") or {}

    def perplexities(before_ppl, after_ppl, interval, **more):
        ratio, low, high = interval if interval else (after_ppl / before_ppl if before_ppl else None, None, None)
        return {**more, "before": finite(before_ppl), "after": finite(after_ppl), "ratio": finite(ratio),
                "ratio_low": finite(low), "ratio_high": finite(high)}

    facts = {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
        "model": args.source, "plan_dir": os.path.abspath(folder),
        "num_blocks": num_blocks, "k": k, "removed_blocks": removed,
        "kept_blocks": [block["original_index"] for block in pruned["blocks"]],
        "method": method, "method_name": method_name, "llm_evaluations": calibration["llm_evaluations"],
        "max_ppl_ratio": float(args.max_ppl_ratio) if args.max_ppl_ratio is not None else None,
        "max_ppl_ratio_se": float(args.max_ppl_ratio_se) if args.max_ppl_ratio_se is not None else None,
        # The ratio's range: two standard errors of the NLL increase over the windows (null without).
        "perplexity": {
            "held_out": perplexities(before["ppl"], after["ppl"], heldout_interval,
                                     text="EVAL_TEXT" if args.one_text else "held-out", held_out=not args.one_text),
            "calibration": perplexities(calibration_before, calibration["measured_ppl"], calibration_interval),
        },
        "tokens": {"held_out": tokens["held-out"], "calibration": tokens["calibration"]},
        "rival": None if rival is None else {
            "removed_blocks": list(rival[0]), "calibration_perplexity": finite(math.exp(rival[1])),
            "margin_nats": finite(rival[2]), "margin_se": finite(rival[3]), "separation": separation(rival[2], rival[3])},
        "parameters": {"before": counts["source"], "after": counts["pruned"]} if counts.get("source") else None,
        "files": [{"path": os.path.abspath(path), "what": what,
                   "bytes": total_bytes(path) if path.exists() else None}
                  for path, what in rows if path.name != SUMMARY_TEXT],
        "next": {"lm_eval": lm_eval, "llama_cpp": llama_cpp_command(layers, args.source),
                 "generator": os.path.abspath(generator) if generator else None},
    }
    # Printed first: a folder that cannot be written (read-only, full) still shows the result, and
    # then fails the goal naming the file.
    print()
    print(text, end="", flush=True)
    write_if_changed(folder / SUMMARY_TEXT, text)
    write_if_changed(folder / SUMMARY_JSON, json.dumps(facts, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cpp = commands.add_parser("llama-cpp")
    cpp.add_argument("--model", type=Path, required=True, help="the full layered model folder")
    cpp.add_argument("--pruned", type=Path, required=True, help="the pruned layered model folder")
    cpp.add_argument("--out", type=Path, required=True)
    report = commands.add_parser("summary")
    report.add_argument("--run", type=Path, required=True)
    report.add_argument("--plan-dir", type=Path, required=True, help="the run's k<K>/ or ratio<R>/ folder")
    report.add_argument("--max-ppl-ratio", help="the ratio the plan was chosen within, if it was")
    report.add_argument("--max-ppl-ratio-se", help="the margin in standard errors it was chosen with, if any")
    report.add_argument("--source", required=True)
    report.add_argument("--one-text", help="the one file given as both CALIB_TEXT and EVAL_TEXT, if it was")
    report.add_argument("--generator", help="the pruned checkpoint's ONNX decoder with a KV cache, if one was made")
    count = commands.add_parser("layers")
    source = count.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="a Hugging Face config.json")
    source.add_argument("--gguf", type=Path, help="a GGUF file (its header only)")
    args = parser.parse_args(argv)
    {"llama-cpp": llama_cpp, "summary": summary, "layers": layers}[args.command](args)


if __name__ == "__main__":
    main()

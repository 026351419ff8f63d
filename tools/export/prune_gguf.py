"""Write a pruned GGUF file: the source GGUF with the removed blocks' tensors left out, the kept
blocks renumbered from 0 and the block count set to the number kept, every kept tensor's bytes
copied as they are (a Q4_1 file stays Q4_1, nothing is quantized again). That is what llama.cpp's
`llama-quantize --prune-layers LIST IN OUT COPY` writes, without a llama.cpp build: a user who
brought a GGUF gets one back for llama.cpp (and the tools built on it; for Gemma 2/3 see below).

Why it can be trusted: before the file is put in place it is read back by transformers' GGUF
loader, as the exporter reads the source, and compared with the source loaded the same way with
the blocks deleted in memory (prune_hf.py's deletion): every tensor equal bit for bit (the same
bytes dequantized by the same code), every block's attention settings the same, and the same loss
on random tokens. So the file is the plan's model as a GGUF reader sees it. What the file is
compared with (the settings, the loss, a sha256 of each tensor) is taken from the model in memory
before the file is loaded, and the model dropped: one model in memory at a time.

Gemma 2 and Gemma 3: llama.cpp sets a block's local (sliding-window) or global attention by its
position unless the file's `<arch>.attention.sliding_window_pattern` says otherwise, so where the
kept blocks' types are not the pattern by position of a model of their number (a plan that
removes other than whole periods) the file states them block by block, one bool a block (true:
local), which llama.cpp builds that read the key run (b11434 does: llama_model_base::
load_swa_pattern; older builds set the types by position, another model than the plan's, and
`llama-quantize --prune-layers` writes no such key; Ollama's own Gemma 3 engine sets its masks by
position too, read in its source, not run). The exporter reads the key as llama.cpp does
(export_layered.gguf_config_corrections). A Gemma 2/3 27B is refused: llama.cpp tells its
attention scale by its block count.

Per-layer metadata (an array under the architecture's keys with one entry a block) keeps the kept
blocks' entries. The original indices of the kept blocks are recorded under
`layerprune.kept_blocks` (a file pruned before numbers its blocks by position; GGUF readers
ignore keys they do not know).

Usage:
  python prune_gguf.py --gguf FILE.gguf --plans plan.parquet [--plan-method NAME] [--k 6] --out OUT.gguf
  python prune_gguf.py --gguf FILE.gguf --remove 3,7,9 --out OUT.gguf
"""

import argparse
import gc
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import one_file  # noqa: E402
import outputs  # noqa: E402
import prune_hf  # noqa: E402

PROGRAM = "prune_gguf"
# The key under which the kept blocks' original indices are recorded (as prune_hf.py's
# config.json records `layerprune_kept_blocks`).
KEPT_BLOCKS_KEY = "layerprune.kept_blocks"
BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.(.+)$")


def fail(message: str):
    raise SystemExit(f"{PROGRAM}: error: {message}")


def write_pruned(reader, source: Path, removed: list[int], path: Path):
    """Writes the GGUF file of `reader` (`source`) without the blocks `removed` to `path`; returns the kept
    blocks' original indices (through an earlier pruning's record) and whether the file states
    its blocks' local/global pattern block by block."""
    import gguf

    architecture = export_layered.gguf_field(reader, "general.architecture")
    count_key = f"{architecture}.block_count"
    num_blocks = export_layered.gguf_field(reader, count_key)
    if not isinstance(num_blocks, int):
        fail(f"{source}: the GGUF file has no {count_key}: not a model whose blocks can be removed")
    kept = [i for i in range(num_blocks) if i not in set(removed)]
    new_index = {old: new for new, old in enumerate(kept)}
    previous = export_layered.gguf_field(reader, KEPT_BLOCKS_KEY)
    if not (isinstance(previous, list) and len(previous) == num_blocks):
        previous = list(range(num_blocks))
    original = [previous[i] for i in kept]
    # Gemma 2 and 3: each kept block keeps its local/global type. Where that is not the pattern by
    # position of a model of the kept blocks' number, the file states it block by block.
    pattern_key = f"{architecture}.attention.sliding_window_pattern"
    period = export_layered.GGUF_SWA_PERIODS.get(export_layered.gguf_model_type(architecture))
    stated_types = None
    if period is not None:
        types = export_layered.gguf_layer_types(export_layered.gguf_field(reader, pattern_key), num_blocks, period)
        kept_types = [types[i] for i in kept]
        if kept_types != export_layered.gguf_layer_types(None, len(kept), period):
            stated_types = kept_types

    writer = gguf.GGUFWriter(str(path), architecture, endianess=reader.endianess)
    alignment = export_layered.gguf_field(reader, "general.alignment")
    if alignment is not None:
        writer.data_alignment = alignment
    for key, field in reader.fields.items():
        # The header's own fields and the architecture the writer writes itself.
        if key.startswith("GGUF.") or key in ("general.architecture", KEPT_BLOCKS_KEY):
            continue
        if period is not None and key == pattern_key:  # written below where needed
            continue
        kind = field.types[0]
        value = field.contents()
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        if key == count_key:
            value = len(kept)
        elif kind == gguf.GGUFValueType.ARRAY and key.startswith(f"{architecture}.") and len(value) == num_blocks:
            # One entry a block (heads or feed-forward sizes that differ by block): the kept ones'.
            value = [value[i] for i in kept]
        writer.add_key_value(key, value, kind, sub_type=sub_type)
    writer.add_key_value(KEPT_BLOCKS_KEY, original, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT32)
    if stated_types is not None:
        writer.add_key_value(pattern_key, [kind == "sliding_attention" for kind in stated_types],
                             gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.BOOL)

    tensors = []
    for tensor in reader.tensors:
        match = BLOCK_TENSOR.match(tensor.name)
        if match is None:
            tensors.append((tensor.name, tensor))
        elif int(match.group(1)) in new_index:
            tensors.append((f"blk.{new_index[int(match.group(1))]}.{match.group(2)}", tensor))
        elif int(match.group(1)) >= num_blocks:
            fail(f"{source}: the GGUF file has tensor {tensor.name} of a block beyond its {count_key}, {num_blocks}")
    for name, tensor in tensors:
        writer.add_tensor_info(name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor in tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return original, stated_types is not None


def check_pruned(expected: prune_hf.ReloadReference, kept: list[int], written: Path, out: Path):
    """The written file, loaded as the exporter loads a GGUF, against `expected` (the reference
    taken from the source's model with the plan's blocks deleted in memory, the model itself
    dropped before this loads the file): the same tensors to the bit, the same attention settings
    block by block, the same loss. `kept`: the kept blocks' original indices."""
    args = argparse.Namespace(model=None, gguf=str(written), dtype="auto")
    with export_layered.reading(PROGRAM, f"the GGUF file written for {out} (a {PROGRAM} defect)"):
        reloaded, _, _ = export_layered.load_checkpoint(args, program=PROGRAM)
    reloaded_settings = prune_hf.attention_settings(reloaded)
    if expected.attention != reloaded_settings:
        moved = [kept[i] for i, (a, b) in enumerate(zip(expected.attention, reloaded_settings)) if a != b]
        fail(f"the GGUF file written for {out} reads back with other attention settings than the pruned model's "
             f"in blocks {moved} (original indices): a {PROGRAM} defect; nothing was put at {out}")
    theirs = prune_hf.tensor_fingerprints(reloaded)
    ours = expected.tensors
    differing = sorted(name for name in ours if name not in theirs or ours[name] != theirs[name])
    differing += sorted(set(theirs) - set(ours))
    if differing:
        fail(f"the GGUF file written for {out} reads back with {len(differing)} tensors other than the pruned "
             f"model's ({', '.join(differing[:5])}): a {PROGRAM} defect; nothing was put at {out}")
    loss, reloaded_loss = expected.loss, prune_hf.loss_on_random_tokens(reloaded, expected.vocab_size)
    if abs(loss - reloaded_loss) > 1e-5:
        fail(f"the GGUF file written for {out} reads back with loss {reloaded_loss}, the pruned model's is {loss}: "
             f"a {PROGRAM} defect; nothing was put at {out}")
    return loss


@export_layered.refusals_named(PROGRAM)
def main(argv=None):
    # No abbreviations: Make's rules read the flags by their names.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--gguf", required=True, help="the GGUF file the plan's model was exported from")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--remove", help="comma-separated block indices to delete")
    which.add_argument("--plans", type=Path, help="plan table written by apply-prune")
    parser.add_argument("--plan-method", help="with --plans: the method of the plan to take (needed only when the "
                                              "table holds plans of several methods at --k)")
    parser.add_argument("--k", type=int, help="with --plans: the plan's number of removed blocks (needed when the "
                                              "table has several plans of --plan-method)")
    parser.add_argument("--out", required=True, type=Path, help="the pruned GGUF file")
    parser.add_argument("--force", action="store_true", help="replace --out")
    args = parser.parse_args(argv)
    if args.remove is not None and (args.plan_method is not None or args.k is not None):
        parser.error("--plan-method and --k choose a plan of --plans; --remove names the blocks itself")
    source = Path(args.gguf)
    # Before anything is loaded: the source and the output, by their names.
    export_layered.check_gguf_header(source, PROGRAM)
    outputs.refuse_overlap(PROGRAM, args.out, [("the GGUF file", source)], replaced=[args.out])
    outputs.refuse_unwritable(PROGRAM, args.out, folder=False)
    if args.out.exists() and not args.force:
        fail(f"{args.out} exists; pass --force to replace it")
    if args.plans is not None:
        removed, plan_blocks = prune_hf.removed_from_plan(args.plans, args.plan_method, args.k, PROGRAM)
    else:
        plan_blocks = None
        try:
            removed = sorted({int(b) for b in args.remove.split(",") if b.strip()})
        except ValueError:
            fail(f"--remove {args.remove!r} is not a list of block indices")
    from gguf import GGUFReader

    reader = GGUFReader(str(source))
    architecture = export_layered.gguf_field(reader, "general.architecture")
    num_blocks = export_layered.gguf_field(reader, f"{architecture}.block_count")
    if plan_blocks is not None and int(plan_blocks) != num_blocks:
        fail(f"{args.plans} holds plans for a model of {plan_blocks} blocks; {source} has {num_blocks}")
    model_type = export_layered.gguf_model_type(architecture)
    if export_layered.GEMMA_27B_BLOCKS.get(model_type) == num_blocks:
        fail(f"{source} is a {model_type} 27B, whose attention scale llama.cpp tells by its block count "
             f"({num_blocks}): a pruned one would be run with another scale. The plan's model is the layered folder "
             "and the Hugging Face checkpoint (prune_hf.py)")

    # The reference: the source as the exporter loads it, the plan's blocks deleted in memory.
    model, _, _ = export_layered.load_checkpoint(argparse.Namespace(model=None, gguf=str(source), dtype="auto"),
                                                 program=PROGRAM)
    prune_hf.prune(model, removed, PROGRAM)
    # What the written file is compared with, then the model dropped: the reload check holds one
    # model at a time, not two.
    expected = prune_hf.reload_reference(model, tensors=True)
    del model
    gc.collect()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = one_file.staging_folder(args.out)
    try:
        written = staging / args.out.name
        original, stated_pattern = write_pruned(reader, source, removed, written)
        loss = check_pruned(expected, original, written, args.out)
        # Its replaced file's permission bits; the old file goes only as the new one replaces it.
        one_file.put_in_place(written, None, args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if stated_pattern:
        print(f"{PROGRAM}: note: {args.out} states its blocks' local/global attention block by block "
              f"({architecture}.attention.sliding_window_pattern), as the kept blocks do not follow the pattern by "
              "position; llama.cpp builds that read the key as a list (b11434 does) run the plan's model, older "
              "builds another", file=sys.stderr)
    print(f"wrote {args.out}: {len(original)} of {num_blocks} blocks kept (original indices {original}), removed "
          f"{removed}; every tensor copied as it was ({args.out.stat().st_size:,} bytes, {source.stat().st_size:,} "
          f"before); read back by transformers: the same tensors and attention as the pruned model, loss {loss:.6f}")


if __name__ == "__main__":
    main()

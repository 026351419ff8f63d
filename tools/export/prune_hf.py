"""Write a pruned Hugging Face checkpoint: the model with some blocks deleted, loadable by
transformers as an ordinary model.

Blocks are deleted (not zeroed); `num_hidden_layers` and every module's `layer_idx` are
renumbered, and every per-layer list in the config (e.g. `layer_types`, which holds Gemma 3's
and Qwen's sliding/global pattern) keeps only the kept blocks' entries, so each kept block
keeps the attention type of its original index; Qwen's `max_window_layers` (its full-attention
blocks come first) becomes the number of kept blocks below it, which states the same pattern. The original indices of the kept blocks are
recorded in the config as `layerprune_kept_blocks`, and the checkpoint's parameter count before
and after as `layerprune_parameters` ({"source": N, "pruned": M}; every tensor once, as
transformers counts them, vision tower included). The checkpoint is written in the type its
weights are stored in (a bfloat16 model stays bfloat16 whatever its config says; a GGUF is
dequantized to float32), then reloaded and
checked against the in-memory pruned model before the output folder is put in place (an output
replaced with --force goes only once the new one is in place); what the reload is compared with
is taken from the pruned model before the reload, and the model dropped: one model in memory at
a time.

Architectures: those export_layered.py supports (SUPPORTED_MODEL_TYPES), and the multimodal ones
(MULTIMODAL_MODEL_TYPES: Gemma 3 4B and up, LLaVA, Mistral 3, Qwen2-VL, Qwen2.5-VL, Qwen3-VL), whose language model is pruned and
which are written whole, vision tower included, with their processor's files. Blocks a checkpoint
ties to their position are not removed (Qwen3-VL's first blocks, after which its deepstack
features are added: tools/prune/report.py's position_bound_blocks). A plan table for a model of
another number of blocks is refused.

Usage:
  python prune_hf.py --model HF_DIR --remove 3,7,9 --out OUT
  python prune_hf.py --gguf FILE.gguf --plans plan.parquet --plan-method NAME --k 6 --out OUT
"""

import argparse
import dataclasses
import gc
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import one_file  # noqa: E402
import outputs  # noqa: E402
from layerprune_tables import current_method_name, renamed_method  # noqa: E402


def _prune_report():
    """tools/prune/report.py (make prune's reader of a checkpoint's config), loaded by its path:
    the benchmarks have a `report` module of their own, which a shared sys.path would mix up."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "layerprune_prune_report", Path(__file__).resolve().parents[1] / "prune" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


position_bound_blocks = _prune_report().position_bound_blocks

# What a multimodal checkpoint's processor reads beside the model and tokenizer (image and video
# preprocessing, the processor's own settings): copied as they are, so AutoProcessor loads the
# pruned checkpoint as it loads the source.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                   "chat_template.json", "chat_template.jinja")

# safetensors' names of the floating-point types a checkpoint stores.
STORED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


# The plan table's columns prune_hf reads (apply-prune's plan tables, docs/formats.md).
PLAN_COLUMNS = ("method", "k", "removed_blocks")


def removed_from_plan(plan: Path, method, k, program: str = "prune_hf"):
    """The removed blocks of the plan of `method` (None: any, as apply-prune --method from-plan
    without --plan-method) with k removed; with k None, of the table's one plan (of `method`; as
    `apply-prune --max-ppl-ratio` writes). Method names are compared as they are named now
    (current_method_name), so a table written before the names were made one (`surrogate-search`,
    `one-shot:block-influence`) gives the plan of `search` or `block-influence`. `program` names
    the tool in a refusal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not plan.is_file():
        sys.exit(f"{program}: error: --plans {plan}: no such file")
    try:
        table = pq.read_table(plan)
    except (pa.ArrowException, OSError, ValueError) as error:
        sys.exit(f"{program}: error: --plans {plan}: not a readable Parquet table ({error})")
    missing = [column for column in PLAN_COLUMNS if column not in table.column_names]
    if missing:
        sys.exit(f"{program}: error: --plans {plan}: no column {', '.join(missing)}: not a plan table "
                 f"(apply-prune writes one with {', '.join(PLAN_COLUMNS)})")
    rows = table.to_pylist()
    # A method asked for by an old name is refused naming the new one, as apply-prune's
    # --plan-method refuses it: every stage writes the one name now.
    refusal = None if method is None else renamed_method(method)
    if refusal:
        sys.exit(f"{program}: error: --plan-method {refusal}")
    matches = [r for r in rows if (method is None or current_method_name(r["method"]) == method)
               and (k is None or r["k"] == k)]
    available = sorted({(current_method_name(r["method"]), r["k"]) for r in rows})
    of_method = "" if method is None else f" for method {method!r}"
    if not matches:
        with_k = "" if k is None else f" with k={k}"
        sys.exit(f"{program}: error: {plan} has no plan{of_method}{with_k} (has {available})")
    if len(matches) > 1:
        several = len({current_method_name(r["method"]) for r in matches}) > 1
        choose = " or --plan-method" if method is None and several else ""
        sys.exit(f"{program}: error: {plan} has {len(matches)} plans{of_method}; choose one with --k{choose} "
                 f"(has {available})")
    metadata = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
    # Under the key apply-prune writes (every entry it writes is `layerprune.`-prefixed): read as
    # `num_blocks`, it was never found, and a plan of a model of another size was applied.
    return sorted(matches[0]["removed_blocks"]), metadata.get("layerprune.num_blocks")


def stored_dtype(folder: Path):
    """The one floating-point type a Hugging Face folder's safetensors hold, or "auto" (the
    config's `dtype`) where they hold several or none: transformers' "auto" follows the config,
    which can disagree with the weights (a bf16 checkpoint whose config says float32 would come
    out twice the size)."""
    from safetensors import safe_open

    found = set()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            found |= {handle.get_slice(key).get_dtype() for key in handle.keys()}
    floating = {STORED_DTYPES[name] for name in found if name in STORED_DTYPES}
    return floating.pop() if len(floating) == 1 and found <= set(STORED_DTYPES) | {"I64", "I32", "U8", "BOOL"} \
        else "auto"


def prune(model, removed, program: str = "prune_hf"):
    """Deletes the blocks `removed` from `model` in memory (its config cut to match); returns the
    kept blocks' indices. `program` names the tool in a refusal."""
    config = model.config
    arch = export_layered.Architecture(model)
    num_blocks = config.num_hidden_layers
    bad = [b for b in removed if not 0 <= b < num_blocks]
    if bad:
        sys.exit(f"{program}: error: blocks {bad} are out of range for a model of {num_blocks} blocks")
    if len(set(removed)) >= num_blocks:
        sys.exit(f"{program}: error: removing {len(set(removed))} of {num_blocks} blocks leaves none")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        # GPT-2 scales each block's attention by 1 / (layer_idx + 1), recomputed from the new
        # index on reload: no config can say "keep the original index's scale".
        sys.exit(f"{program}: error: scale_attn_by_inverse_layer_idx ties a block's attention to its "
                 "index; a pruned checkpoint cannot keep it")
    kept = [i for i in range(num_blocks) if i not in set(removed)]
    per_layer = export_layered.per_layer_lists(config)
    arch.set_layers(nn.ModuleList([arch.layers[i] for i in kept]))
    for new_index, layer in enumerate(arch.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    for key, value in per_layer.items():
        setattr(config, key, [value[i] for i in kept])
    max_window_layers = getattr(config, "max_window_layers", None)
    if isinstance(max_window_layers, int):
        # Qwen2's, Qwen3's and the Qwen VL language models' pattern: the blocks below
        # max_window_layers have full attention, the others the sliding window. The kept blocks
        # below it stay first, so the count of them states the pruned pattern exactly, as
        # layer_types does (a config rebuilt without layer_types derives it from this).
        config.max_window_layers = sum(1 for i in kept if i < max_window_layers)
    previous = getattr(config, "layerprune_kept_blocks", list(range(num_blocks)))
    config.layerprune_kept_blocks = [previous[i] for i in kept]
    config.num_hidden_layers = len(kept)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return kept


# What makes a block's attention what it is, set from the config when the model is built: a
# per-layer list cut wrongly would change them in the reloaded checkpoint, where the reload
# check's 32 tokens, shorter than any real sliding window, would not see it.
ATTENTION_ATTRIBUTES = ("sliding_window", "is_sliding", "attention_type", "layer_type", "use_sliding_window")


def attention_settings(text_model):
    """Each block's attention settings (ATTENTION_ATTRIBUTES of its modules), block by block."""
    return [{(name, key): repr(getattr(module, key)) for name, module in layer.named_modules()
             for key in ATTENTION_ATTRIBUTES if hasattr(module, key)}
            for layer in export_layered.Architecture(text_model).layers]


def loss_on_random_tokens(model, vocab_size: int) -> float:
    """The model's loss on 2 x 32 random tokens (seed 0), the same tokens every call: the reload
    checks' comparison of a written model with the one in memory (prune_hf.py, prune_gguf.py)."""
    ids = torch.randint(0, vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, labels=ids, use_cache=False).loss.item()


def tensor_fingerprints(model) -> dict:
    """Each tensor of the model's state dict by name: (dtype, shape, sha256 of its bytes, contiguous
    on the CPU). Equal fingerprints are tensors of one dtype equal bit for bit (torch.equal's
    verdict, but a NaN equals itself and -0.0 is not 0.0), and hold 100 bytes where the tensor
    held gigabytes. A tensor under several names (a tied head) is hashed once."""
    import hashlib

    digests = {}
    fingerprints = {}
    for name, tensor in model.state_dict().items():
        where = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if where not in digests:
            data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digests[where] = hashlib.sha256(data.numpy()).hexdigest()
        fingerprints[name] = (str(tensor.dtype), tuple(tensor.shape), digests[where])
    return fingerprints


@dataclasses.dataclass
class ReloadReference:
    """What a reload check compares the written model with, taken from the pruned model in memory
    (reload_reference) so that the model can be dropped before the written one is loaded: one
    model in memory at a time, not two (a 7B GGUF is about 20 GB each in float32 once pruned)."""
    attention: list  # attention_settings of its language model
    vocab_size: int  # of its language model: the random tokens' range
    loss: float  # loss_on_random_tokens
    tensors: dict | None  # tensor_fingerprints, where the check compares every tensor (prune_gguf.py)


def reload_reference(model, tensors: bool = False) -> ReloadReference:
    """`model`'s ReloadReference; with `tensors`, its tensors' fingerprints too."""
    text = export_layered.language_model(model)
    vocab_size = text.config.vocab_size
    return ReloadReference(attention_settings(text), vocab_size, loss_on_random_tokens(model, vocab_size),
                           tensor_fingerprints(model) if tensors else None)


def parameter_count(model) -> int:
    """The model's parameters, a tied weight once (`parameters()` yields each tensor once)."""
    return sum(p.numel() for p in model.parameters())


def save(model, tokenizer, folder: Path, source: Path | None):
    """The model and tokenizer, and from a Hugging Face `source` the processor's files."""
    if source is None:  # a GGUF-loaded model refuses save_pretrained: save state dict + config
        from safetensors.torch import save_model

        # As save_pretrained writes them: llama.cpp's convert_hf_to_gguf.py picks its converter by
        # config.json's architectures[0] (vLLM too), and transformers reads the "pt" format.
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(folder)
        save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in PROCESSOR_FILES:
        if source is not None and (source / name).is_file() and not (folder / name).exists():
            shutil.copyfile(source / name, folder / name)


def reload(staging: Path, out: Path):
    """The checkpoint prune_hf wrote in `staging` for `out`, loaded by transformers, which must
    find every tensor of the pruned model in it: a reload that filled one in with random values
    would hide it. A failure is prune_hf's own defect, not the source's: it is named as such,
    with `out` (the hidden staging folder is deleted at once), and without the remedies
    load_pretrained suggests for a user's checkpoint."""
    with export_layered.reading("prune_hf", f"the checkpoint prune_hf wrote for {out} (a prune_hf defect)"):
        reloaded, loading_info = export_layered.model_class(staging).from_pretrained(
            staging, output_loading_info=True, dtype="auto")
    lost = export_layered.missing_tensors(loading_info)
    if lost:
        raise SystemExit(f"prune_hf: error: the checkpoint prune_hf wrote for {out} reloads without "
                         f"{export_layered.tensor_count(lost)} of the pruned model ({export_layered.some_of(lost)}): "
                         f"a prune_hf defect; nothing was put at {out}")
    return reloaded


@export_layered.refusals_named("prune_hf")
def main(argv=None):
    # No abbreviations (--dty for --dtype): Make's guards and stamps read the flags by their names.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model")
    source.add_argument("--gguf")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--remove", help="comma-separated block indices to delete")
    # The names apply-prune --method from-plan gives the same inputs; --plan and --method, the
    # names before 2026-12-04, are still accepted.
    which.add_argument("--plans", "--plan", dest="plans", type=Path, help="plan table written by apply-prune")
    parser.add_argument("--plan-method", "--method", dest="plan_method",
                        help="with --plans: the method of the plan to take (a table written before the "
                             "method names were made one reads by the names now: search for surrogate-search, "
                             "block-influence for one-shot:block-influence); needed only when the table holds "
                             "plans of several methods at --k")
    parser.add_argument("--k", type=int, help="with --plans: the plan's number of removed blocks (needed when the "
                                              "table has several plans of --plan-method)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.remove is not None and (args.plan_method is not None or args.k is not None):
        # Not ignored: a --k meant for a plan table would be silently dropped for --remove's list.
        parser.error("--plan-method and --k choose a plan of --plans; --remove names the blocks itself")
    export_layered.check_source_exists(args, "prune_hf")
    # Before the model is loaded: an output that would replace or change the model, or that
    # cannot be written, is refused in a second.
    outputs.refuse_overlap("prune_hf", args.out, [("the model folder", Path(args.model))] if args.model
                           else [("the GGUF file", Path(args.gguf))])
    outputs.refuse_unwritable("prune_hf", args.out, folder=True)
    if args.out.exists() and not args.force:
        sys.exit(f"prune_hf: error: {args.out} exists; pass --force to replace it")
    if args.plans is not None:
        removed, plan_blocks = removed_from_plan(args.plans, args.plan_method, args.k)
    else:
        plan_blocks = None
        try:
            removed = sorted({int(b) for b in args.remove.split(",") if b.strip()})
        except ValueError:
            sys.exit(f"prune_hf: error: --remove {args.remove!r} is not a list of block indices")
    source = Path(args.model) if args.model else None
    config = None
    if source is not None:
        # config.json read once (load_checkpoint is given it), refused by name where it is not
        # JSON or names an unsupported model.
        config = export_layered.check_supported_config(source, "prune_hf")
        bound = position_bound_blocks(config)
        if set(removed) & set(bound):
            sys.exit(f"prune_hf: error: {source} adds its vision tower's deepstack features after blocks "
                     f"{bound} of its language model by position (Qwen3-VL): removing "
                     f"{sorted(set(removed) & set(bound))} would add an image's features after other blocks. "
                     f"Choose a plan that keeps them (apply-prune --fixed {','.join(map(str, bound))}; make "
                     "prune does)")
    load_args = argparse.Namespace(model=args.model, gguf=args.gguf, dtype="auto")
    if source is not None:
        # The weight files' headers are read here first: each damaged or missing one is named.
        export_layered.check_source_files(source, "prune_hf")
        # In the weights' own type where they have one (transformers' "auto" is the config's).
        stored = stored_dtype(source)
        load_args.dtype = "auto" if stored == "auto" else {v: k for k, v in export_layered.DTYPES.items()}[stored]
    # A multimodal checkpoint is pruned in its language model and written whole (vision tower
    # included): `text` shares the checkpoint's blocks and text config.
    model, tokenizer, _ = export_layered.load_checkpoint(load_args, program="prune_hf", config=config)
    text = export_layered.language_model(model)
    if plan_blocks is not None and int(plan_blocks) != text.config.num_hidden_layers:
        sys.exit(f"prune_hf: error: {args.plans} holds plans for a model of {plan_blocks} blocks; "
                 f"{args.model or args.gguf} has {text.config.num_hidden_layers} (a plan chosen on a pruned "
                 "folder numbers that folder's blocks)")
    dtype = next(model.parameters()).dtype
    source_dtypes = {p.dtype for p in model.parameters()}
    source_parameters = parameter_count(model)
    kept = prune(text, removed)
    model.config.layerprune_parameters = {"source": source_parameters, "pruned": parameter_count(model)}
    if text is not model and hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Built beside the output (its parent made first), so the renames stay on one file system.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = one_file.staging_folder(args.out)
    try:
        save(model, tokenizer, staging, source)
        # What the reload is compared with, then the model dropped: one model in memory at a time.
        reference = reload_reference(model)
        counts = model.config.layerprune_parameters
        original = text.config.layerprune_kept_blocks
        del model, text
        gc.collect()
        reloaded = reload(staging, args.out)
        reloaded.config._attn_implementation = "eager"
        reloaded.eval()
        reloaded_dtypes = {p.dtype for p in reloaded.parameters()}
        if reloaded_dtypes != source_dtypes:
            raise SystemExit(f"prune_hf: error: the checkpoint reloads as {sorted(map(str, reloaded_dtypes))}, "
                             f"not the source's {dtype}")
        expected_settings = reference.attention
        reloaded_settings = attention_settings(export_layered.language_model(reloaded))
        if reloaded_settings != expected_settings:
            changed = next(i for i, (a, b) in enumerate(zip(expected_settings, reloaded_settings)) if a != b) \
                if len(reloaded_settings) == len(expected_settings) else None
            raise SystemExit(f"prune_hf: error: the reloaded checkpoint's block {changed} has other attention "
                             f"settings than the pruned model's (its config's per-layer lists)")
        expected, actual = reference.loss, loss_on_random_tokens(reloaded, reference.vocab_size)
        if abs(expected - actual) > (1e-4 if dtype == torch.float32 else 1e-2):
            raise SystemExit(f"prune_hf: error: the reloaded checkpoint's loss {actual} differs from "
                             f"the pruned model's {expected}")
        export_layered.permit_as_umask(staging)
        # The old output goes only once the new one is in place.
        outputs.replace_folder(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # A source pruned before numbers its blocks by position; the original indices are recorded.
    print(f"wrote {args.out}: {len(kept)} blocks kept (original indices {original}), "
          f"removed {removed}; {counts['source']:,} parameters before, {counts['pruned']:,} after; "
          f"reload check loss {actual:.6f} on 2 x 32 random tokens, as the pruned model's in memory (high on "
          f"random tokens: a check that the written checkpoint is the pruned model, not a measure of its quality)")


if __name__ == "__main__":
    main()

"""Export a Hugging Face decoder-only checkpoint (e.g. the pruned one prune_hf.py writes) as ONE
ONNX decoder with a KV cache, for text generation with ONNX Runtime.

The layered folder and merge_layered.py's single file score whole sequences (input_ids →
logits) and keep no cache, so generating with them recomputes the whole prefix for every new
token. This file has the input/output layout that onnxruntime-genai and optimum use for
decoder-only models:

  inputs   input_ids                 int64 [batch, seq]
           attention_mask            int64 [batch, past + seq]   1 = token, 0 = padding
           position_ids              int64 [batch, seq]
           past_key_values.{i}.key   [batch, kv_heads, past, head_dim]   i = 0 .. layers-1
           past_key_values.{i}.value [batch, kv_heads, past, head_dim]
  outputs  logits                    float32 [batch, seq, vocab]
           present.{i}.key           [batch, kv_heads, past + seq, head_dim]
           present.{i}.value         [batch, kv_heads, past + seq, head_dim]

batch, seq and past are dynamic; the first call passes past tensors of length 0. `i` numbers
the checkpoint's layers (a pruned checkpoint's kept blocks, renumbered from 0). The cache is
never truncated: a sliding-window layer keeps every past position and masks those outside its
window, so all layers share one past length (the attention_mask's). Each layer's attention
type (full or sliding, and Gemma 3's local or global rotary table) is the one its config entry
gives (`layer_types`, which prune_hf.py cuts to the kept blocks), so a pruned block keeps the
type of its original index.

Weights are stored inside the file when they are under 2 GB (protobuf's limit), otherwise in
one external data file beside it (`<name>.<token>.data`, tools/export/one_file.py). Before the file is put in place it is checked:
greedy generation with ONNX Runtime through the cache (the prompt, then one token per step
with the presents fed back) must choose the same tokens as transformers'
`model.generate(do_sample=False)`, with the logits of every step within the tolerance
(docs/model-format.md, "The generator file").

Architectures (transformers `model_type`): llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text,
phi, phi3, olmo2, granite, stablelm, starcoder2, cohere: the layered exporter's with attention and a
rotary embedding. Any other is refused by name before the weights are loaded.

Usage:
  python export_generator.py --model PRUNED_HF_DIR --out pruned.onnx
  python export_generator.py --model HF_DIR --out model.onnx --dtype fp16
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import one_file  # noqa: E402
import outputs  # noqa: E402

SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "olmo2",
                         "granite", "stablelm", "starcoder2", "cohere"}
DTYPES = dict(export_layered.DTYPES)
# The same tolerances as the layered export check (docs/model-format.md): max |logit diff| against
# transformers (fp16 / bf16: against float32, or twice transformers' own error if larger), scaled
# by max(1, |largest logit| / 10).
DEFAULT_TOLERANCE = dict(export_layered.DEFAULT_TOLERANCE)
# Protobuf refuses messages over 2 GiB; leave room for the graph itself (as merge_layered.py).
PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2
# Tensors below this stay inside the .onnx file even when the weights go to the data file.
EXTERNAL_THRESHOLD_BYTES = 1024


def fail(message: str):
    raise SystemExit(f"export_generator: error: {message}")


class Generator(nn.Module):
    """The decoder with a KV cache over flat tensors: embeds `input_ids`, runs every layer with
    its own causal (or sliding-window) mask and rotary table through a transformers
    DynamicCache filled with the given past, and returns the logits and the flat presents.

    The layers are called one by one (not the model's forward) so that the masks are built here
    from `attention_mask` with plain tensor ops that trace with dynamic shapes, and so that every
    layer keeps its full past (a DynamicCache built from the config would truncate sliding
    layers to their window, giving layers of different past lengths)."""

    def __init__(self, model):
        super().__init__()
        arch = export_layered.Architecture(model)
        # Held directly, so its weight keeps the name `embed_tokens.weight` in the file.
        self.embed_tokens = arch.base.embed_tokens  # Gemma's scales by sqrt(hidden) inside
        self.embedding_multiplier = arch.embedding_multiplier()  # Granite's, outside the module
        self.model_type = arch.model_type
        self.layers = arch.layers
        self.rotary_emb = arch.base.rotary_emb
        self.head = export_layered.Head(model, nll=False)  # final norm, LM head, softcap, Granite's scaling
        self.attention = [arch.block_attention(i) for i in range(len(self.layers))]
        self.per_type_rope = arch.model_type in export_layered.PER_TYPE_ROTARY_MODEL_TYPES

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers.cache_utils import DynamicCache, DynamicLayer

        hidden = self.embed_tokens(input_ids)
        if self.embedding_multiplier is not None:
            hidden = hidden * self.embedding_multiplier
        cache = DynamicCache()
        for i in range(len(self.layers)):
            # Filled directly rather than by `update`, whose first call concatenates onto an
            # empty 1-D tensor (no ONNX Concat of tensors of different ranks).
            layer = DynamicLayer()
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            layer.dtype, layer.device = layer.keys.dtype, layer.keys.device
            layer.is_initialized = True
            cache.layers.append(layer)
        masks, rotary = {}, {}
        for i, layer in enumerate(self.layers):
            kind, window = self.attention[i]
            if window not in masks:
                masks[window] = additive_mask(attention_mask, input_ids.shape[1], window, hidden.dtype)
            # One rotary table per attention type for Gemma 3 (local and global), one in all otherwise.
            table = kind if self.per_type_rope else None
            if table not in rotary:
                rotary[table] = export_layered.block_rotary(self.model_type, self.rotary_emb, hidden, position_ids,
                                                            kind)
            output = layer(hidden, attention_mask=masks[window], position_ids=position_ids,
                           position_embeddings=rotary[table], past_key_values=cache, use_cache=True)
            hidden = output[0] if isinstance(output, tuple) else output
        presents = []
        for layer in cache.layers:
            presents += [layer.keys, layer.values]
        return (self.head.logits(hidden), *presents)


def additive_mask(attention_mask, seq_len, window, dtype):
    """[batch, 1, seq, past + seq]: 0 where query i (at cache index past + i) may attend to key
    j, the dtype's minimum elsewhere (not −inf, so softmax stays NaN-free; transformers' eager
    masks do the same). Causal, padding (attention_mask 0) masked, and for a sliding-window
    layer keys more than window − 1 positions back masked too (transformers' kv > q − window)."""
    total = attention_mask.shape[1]
    keys = torch.arange(total, device=attention_mask.device)
    queries = torch.arange(seq_len, device=attention_mask.device) + (total - seq_len)
    allowed = keys[None, :] <= queries[:, None]
    if window is not None:
        allowed = allowed & (keys[None, :] > queries[:, None] - window)
    allowed = allowed[None, None, :, :] & (attention_mask[:, None, None, :] != 0)
    zero = torch.zeros((), dtype=dtype)
    minimum = torch.full((), torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, zero, minimum)


def io_names(num_layers: int):
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def kv_shape(config):
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, head_dim


def export_onnx(model, folder: Path, opset: int) -> Path:
    """torch.onnx's TorchScript exporter (as export_layered.py) into `folder`; returns the graph's
    path. Past of length 3 in the example, so the cache's Concat is traced with a real past; the
    axes are dynamic and a past of length 0 runs too (the check's first step)."""
    config = model.config
    layers = config.num_hidden_layers
    kv_heads, head_dim = kv_shape(config)
    dtype = next(model.parameters()).dtype
    batch, seq, past_len = 2, 4, 3
    example = (
        torch.randint(0, config.vocab_size, (batch, seq)),
        torch.ones(batch, past_len + seq, dtype=torch.int64),
        torch.arange(past_len, past_len + seq).repeat(batch, 1),
        *[torch.randn(batch, kv_heads, past_len, head_dim, dtype=dtype) for _ in range(2 * layers)],
    )
    inputs, outputs = io_names(layers)
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    for name in inputs[3:]:
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in outputs[1:]:
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    module = Generator(model)
    # A fresh wrapper is in training mode and torch.onnx.export restores the mode it found,
    # which would switch the model's own layers (their dropout) to training mode.
    module.eval()
    path = folder / "model.onnx"
    with torch.no_grad():
        # Without constant folding, as export_layered.py's head graphs: a tied LM head keeps the
        # embedding's layout and is stored once, not a second time transposed (ONNX Runtime
        # folds the transpose when it loads the graph).
        torch.onnx.export(module, example, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=False)
    return path


def save_one_file(exported: Path, out: Path, vocab_size: int):
    """Writes the exported graph as `out`, with its weights inside (under PROTOBUF_LIMIT) or in
    one data file beside it, `<out name>.<token>.data` (one_file.data_name: the name the final
    output's graph gives it). The exporter may have written a large model's tensors as many
    files beside its graph; they are read from there one by one. Returns the graph and the data
    file, or None."""
    model = onnx.load(str(exported), load_external_data=False)
    # The head's reshape leaves the vocabulary axis unnamed by the tracer; it is fixed.
    logits = next(o for o in model.graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[2].Clear()
    logits.type.tensor_type.shape.dim[2].dim_value = vocab_size
    export_layered.widen_for_cuda_bf16(model)  # a bf16 decoder within the CUDA provider's kernels

    def tensor_bytes(tensor):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            return tensor.raw_data if tensor.raw_data else onnx.numpy_helper.to_array(tensor).tobytes()
        info = {entry.key: entry.value for entry in tensor.external_data}
        with open(exported.parent / info["location"], "rb") as handle:
            handle.seek(int(info.get("offset", 0)))
            return handle.read(int(info["length"])) if "length" in info else handle.read()

    def set_inline(tensor, raw):
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = raw

    def tensor_size(tensor):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            return tensor.ByteSize()
        info = {entry.key: entry.value for entry in tensor.external_data}
        return int(info["length"]) if "length" in info else (exported.parent / info["location"]).stat().st_size

    total = sum(tensor_size(t) for t in model.graph.initializer)
    if total < PROTOBUF_LIMIT:
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                set_inline(tensor, tensor_bytes(tensor))
        onnx.save(model, str(out))
        return out, None
    data = out.parent / one_file.data_name(out)
    with open(data, "wb") as handle:
        for tensor in model.graph.initializer:
            raw = tensor_bytes(tensor)
            if len(raw) < EXTERNAL_THRESHOLD_BYTES:
                set_inline(tensor, raw)
                continue
            # Aligned to 4 KiB so that ONNX Runtime can map the weights in place.
            handle.write(b"\0" * (-handle.tell() % 4096))
            offset = handle.tell()
            handle.write(raw)
            dims, data_type, name = list(tensor.dims), tensor.data_type, tensor.name
            tensor.Clear()
            tensor.name, tensor.data_type = name, data_type
            tensor.dims.extend(dims)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    onnx.save(model, str(out))
    return out, data


class Runner:
    """One step of the exported decoder: ONNX Runtime's CPU provider, or onnx.reference (NumPy)
    for bfloat16, which that provider has no kernels for (docs/model-format.md)."""

    def __init__(self, path: Path, kind: str):
        self.kind = kind
        if kind == "ort":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.run = lambda feeds: session.run(None, feeds)
        else:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(onnx.load(str(path)))
            self.run = lambda feeds: evaluator.run(None, feeds)


def numpy_dtype(dtype: torch.dtype):
    if dtype == torch.bfloat16:
        import ml_dtypes

        return ml_dtypes.bfloat16
    return {torch.float32: np.float32, torch.float16: np.float16}[dtype]


def onnx_greedy(runner: Runner, config, dtype, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int,
                forced: np.ndarray | None = None):
    """Greedy generation through the cache, as a runtime does it: the prompt with an empty past,
    then one token per step with the presents fed back; position ids as transformers' generate
    makes them (cumulative count of real tokens − 1, padding at 0). With `forced` [batch,
    new_tokens], those tokens are fed back instead of the chosen ones, so that every step sees
    the reference's sequence even after a near tie. Returns the chosen tokens [batch,
    new_tokens] and each step's last-position logits."""
    layers = config.num_hidden_layers
    kv_heads, head_dim = kv_shape(config)
    batch = input_ids.shape[0]
    empty = np.zeros((batch, kv_heads, 0, head_dim), dtype=numpy_dtype(dtype))
    past = [empty] * (2 * layers)
    positions = np.where(attention_mask == 0, 0, np.cumsum(attention_mask, axis=1) - 1).astype(np.int64)
    ids, mask = input_ids, attention_mask
    inputs, _ = io_names(layers)
    tokens, step_logits = [], []
    for _ in range(new_tokens):
        feeds = dict(zip(inputs, [ids, mask, positions, *past]))
        logits, *past = runner.run(feeds)
        last = np.asarray(logits[:, -1, :], dtype=np.float32)
        step_logits.append(last)
        chosen = last.argmax(axis=-1).astype(np.int64)
        tokens.append(chosen)
        ids = (chosen if forced is None else forced[:, len(tokens) - 1])[:, None]
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1
    return np.stack(tokens, axis=1), step_logits


def transformers_greedy(model, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int):
    """transformers' own greedy generation (`generate(do_sample=False)`, its KV cache) and the
    raw logits of each step. The model's generation_config is set aside for the call: an end of
    sequence token would stop it early and a checkpoint's repetition penalty would change the
    choice; the comparison is of plain argmax decoding."""
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        with torch.no_grad():
            out = model.generate(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                                 do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    finally:
        model.generation_config = saved
    tokens = out.sequences[:, input_ids.shape[1]:].numpy()
    logits = [step.float().numpy() for step in out.logits]
    return tokens, logits


def float32_step_logits(model, input_ids: np.ndarray, attention_mask: np.ndarray, tokens: np.ndarray):
    """The float32 computation of the model's own weights (`computing_in_float32`) on the prompts
    followed by `tokens` (one forward pass, positions as transformers' generate makes them):
    the logits that chose each of `tokens`, one [batch, vocab] array per step."""
    ids = np.concatenate([input_ids, tokens], axis=1)
    mask = np.concatenate([attention_mask, np.ones_like(tokens)], axis=1)
    positions = np.where(mask == 0, 1, np.cumsum(mask, axis=1) - 1)
    with export_layered.computing_in_float32(model), torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       position_ids=torch.from_numpy(positions), use_cache=False).logits.float().numpy()
    first = input_ids.shape[1] - 1
    return [logits[:, first + step, :] for step in range(tokens.shape[1])]


def check(model, path: Path, runner_kind: str, new_tokens: int, prompt_length: int, tolerance: float, seed: int):
    """The exported decoder's greedy generation against transformers'. Two prompts of random
    tokens, the second left-padded by two positions (so the attention mask and position ids
    matter). Every step's logits must be within `tolerance` × max(1, |largest logit| / 10) of
    transformers' (fp32) or of the float32 computation of the same weights (fp16, bf16: within
    that or twice transformers' own error in that dtype, as the layered export's check) and the
    chosen tokens equal; a different choice is accepted only at a near tie (the reference's
    best two logits closer than that tolerance, where rounding legitimately decides). The
    decoder is fed transformers' tokens, so every step is compared, also after a near tie."""
    config = model.config
    dtype = next(model.parameters()).dtype
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(1, config.vocab_size, size=(2, prompt_length), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    pad = min(2, prompt_length - 1)
    input_ids[1, :pad], attention_mask[1, :pad] = 0, 0
    expected_tokens, expected_logits = transformers_greedy(model, input_ids, attention_mask, new_tokens)
    if len(expected_logits) != new_tokens or expected_tokens.shape[1] != new_tokens:
        fail(f"transformers generated {expected_tokens.shape[1]} tokens, not {new_tokens}")
    runner = Runner(path, runner_kind)
    tokens, logits = onnx_greedy(runner, config, dtype, input_ids, attention_mask, new_tokens, forced=expected_tokens)
    reference, against, exact = expected_logits, "transformers'", None
    if dtype != torch.float32:
        reference = float32_step_logits(model, input_ids, attention_mask, expected_tokens)
        against = "the float32 computation of its weights"
    # The reference's scale (NaN where any step's is: np.max propagates it, Python's max drops it).
    largest_reference = float(np.max([np.abs(step).max() for step in reference]))
    overflow = (": not finite, float16 overflow the likely cause (values beyond 65,504 become inf, then NaN); "
                "export in bf16 (for a GPU) or fp32, and keep the float16 range check on (--fp16-margin above 0)"
                if dtype == torch.float16 else ": not finite")
    if not math.isfinite(largest_reference):
        fail(f"the logits of {against} are not finite on the check's prompts, so the decoder cannot be judged "
             f"against them{overflow}")
    limit = tolerance * max(1.0, largest_reference / 10.0)
    if dtype != torch.float32:
        own = float(np.max([np.abs(ours - theirs).max() for ours, theirs in zip(expected_logits, reference)]))
        if not math.isfinite(own):
            print(f"check: note: transformers' own {str(dtype).replace('torch.', '')} computation is not finite (it overflows); "
                  "not used to widen the tolerance")
        limit = export_layered.reduced_precision_limits(limit, {"logits": own})["logits"]
        exact = {"transformers_logit_diff": export_layered.finite_or_none(own), "logit_limit": limit,
                 "chain_logit_diff": 0.0}
    max_abs, compared, near_ties = 0.0, 0, []
    for step in range(new_tokens):
        step_abs = float(np.abs(logits[step] - expected_logits[step]).max())
        max_abs = float(np.maximum(max_abs, step_abs))  # NaN kept, at whichever step
        diff = float(np.abs(logits[step] - reference[step]).max())
        if exact is not None:
            exact["chain_logit_diff"] = max(exact["chain_logit_diff"], diff)
        compared += 1
        if not diff <= limit:  # NaN fails too
            fail(f"step {step}: the ONNX logits differ from {against} by {diff:.3e}, over the tolerance "
                 f"{limit:.1e}{'' if math.isfinite(diff) else overflow}")
        for row in np.nonzero(tokens[:, step] != expected_tokens[:, step])[0]:
            best_two = np.sort(expected_logits[step][row])[-2:]
            if best_two[1] - best_two[0] > limit:
                fail(f"step {step}, sequence {row}: ONNX chose token {tokens[row, step]}, transformers "
                     f"{expected_tokens[row, step]} (their logits {best_two[1]:.4f} vs the runner-up "
                     f"{best_two[0]:.4f}: not a near tie)")
            near_ties.append(step)
    # NaN where any step's is (np.max propagates it; Python's max would depend on the steps' order).
    largest = float(np.max([np.abs(step).max() for step in expected_logits]))
    # None where transformers' own reduced-precision logits are not finite (finite_or_none).
    own_figure = None if exact is None else exact["transformers_logit_diff"]
    against_float32 = "" if exact is None else (
        f"; against float32 {exact['chain_logit_diff']:.3e} (transformers in that dtype "
        f"{'n/a: not finite' if own_figure is None else f'{own_figure:.3e}'})")
    print(f"check: greedy generation of {new_tokens} tokens from 2 prompts of {prompt_length} ({runner_kind}): "
          f"{'same tokens' if not near_ties else f'same tokens but at near ties (steps {near_ties})'}; "
          f"max |logit diff| {max_abs:.3e} (relative to the largest logit {max_abs / largest:.3e}){against_float32}, "
          f"tolerance {limit:.1e}")
    result = {"new_tokens": new_tokens, "steps_compared": compared, "runner": runner_kind,
              "max_abs_logit_diff": export_layered.finite_or_none(max_abs),
              "max_rel_logit_diff": export_layered.finite_or_none(max_abs / largest), "tolerance": limit,
              "near_tie_steps": sorted(set(near_ties)), "tokens": tokens.tolist()}
    if exact is not None:
        result["float32_reference"] = exact
    return result


def refuse_overlap(model_dir: Path, out: Path):
    """An output that is the model folder, holds it or lies inside it, or that would overwrite one
    of its files (also through another name: a hard link), is refused (outputs.refuse_overlap)."""
    # The graph and every data file a write may replace or remove (one_file.put_in_place).
    outputs.refuse_overlap("export_generator", out, [("the model folder", model_dir)],
                           replaced=[out, *one_file.data_files_of(out)])


@export_layered.refusals_named("export_generator")
def main(argv=None):
    # No abbreviations (--dty for --dtype): Make's guards and stamps read the flags by their names.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", required=True, type=Path, help="Hugging Face model folder (e.g. prune_hf.py's)")
    parser.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--dtype", choices=["auto", *sorted(DTYPES)], default="fp32",
                        help="weights and cache dtype (auto: the checkpoint's); fp32 runs on ONNX Runtime's CPU "
                             "provider, bf16 does not (its check runs in onnx.reference, slow)")
    parser.add_argument("--attention-precision", choices=export_layered.ATTENTION_PRECISIONS, default="float32",
                        help="fp16 / bf16 only: compute attention in float32 (default) or in the dtype "
                             "(transformers' eager code); as export_layered.py")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--new-tokens", type=export_layered.at_least(1), default=8, help="tokens the check generates")
    parser.add_argument("--prompt-length", type=export_layered.at_least(2), default=6,
                        help="the check's prompt length")
    parser.add_argument("--tolerance", type=export_layered.tolerance_number, default=None,
                        help="max |logit difference| per step against transformers (fp16 / bf16: against "
                             "float32, or twice transformers' own error if larger), scaled by max(1, |largest "
                             "logit| / 10); default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_TOLERANCE.items()))
    parser.add_argument("--no-check", action="store_true", help="skip the generation check")
    export_layered.add_fp16_margin_argument(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=export_layered.at_least(0), default=0,
                        help="torch CPU threads (0 = default)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if not (args.model / "config.json").is_file():
        fail(f"{args.model} is not a Hugging Face model folder (no config.json)")
    # The layered exporter's check and refusal, of the generator's model types (no multimodal one).
    export_layered.check_supported_config(args.model, "export_generator", "KV-cache exporter", SUPPORTED_MODEL_TYPES,
                                          multimodal_types=())
    out = args.out
    refuse_overlap(args.model, out)
    if out.suffix != ".onnx":
        fail(f"--out {out}: the output is one .onnx file")
    outputs.refuse_unwritable("export_generator", out, folder=False)
    if out.exists() and not args.force:
        fail(f"{out} exists; pass --force to replace it")

    from transformers import AutoConfig, AutoModelForCausalLM

    # The layered exporter's check, from the config alone: before the weights are loaded.
    with export_layered.reading("export_generator", f"the config {args.model / 'config.json'}"):
        config = AutoConfig.from_pretrained(args.model)
    export_layered.refuse_length_dependent_rope(config, args.model / "config.json", "export_generator")
    # Weights only: the tokenizer is read for the fp16 range check alone, where there is one.
    export_layered.check_source_files(args.model, "export_generator", tokenizer=False)
    started = time.time()
    dtype = "auto" if args.dtype == "auto" else DTYPES[args.dtype]
    model = export_layered.load_pretrained(AutoModelForCausalLM, args.model, "export_generator", "language model",
                                           dtype=dtype)
    model.config._attn_implementation = "eager"
    model.eval()
    export_layered.Architecture(model)  # use_bidirectional_attention, unknown attention types
    dtype = next(model.parameters()).dtype
    dtype_key = {v: k for k, v in DTYPES.items()}.get(dtype)
    if dtype_key is None:  # --dtype auto on a checkpoint of another dtype (float64)
        fail(f"the checkpoint in {args.model} is {str(dtype).replace('torch.', '')}, which the generator "
             f"is not exported in: pass --dtype {', '.join(sorted(DTYPES))}")
    kept = getattr(model.config, "layerprune_kept_blocks", None)
    print(f"loaded {model.config.model_type} ({dtype_key}) with {model.config.num_hidden_layers} layers"
          f"{f' (original blocks {kept})' if kept else ''} in {time.time() - started:.1f} s")
    if dtype_key == "fp16" and args.fp16_margin > 0:
        from transformers import AutoTokenizer

        has_tokenizer = any((args.model / name).is_file() for name in ("tokenizer.json", "tokenizer.model"))
        with export_layered.reading("export_generator", f"the tokenizer in {args.model}"):
            tokenizer = AutoTokenizer.from_pretrained(args.model) if has_tokenizer else None
        export_layered.float16_range_check(model, tokenizer, args.fp16_margin, args.seed, "export_generator")

    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the destination and renamed into place only after the check: never a
    # half-written or unchecked file at `out`.
    staging = one_file.staging_folder(out)
    try:
        started = time.time()
        (staging / "export").mkdir()
        # As the layered exporter: fp16 / bf16 attention computed in float32 unless asked not to.
        float32_attention = export_layered.float32_attention_applies(model.config, dtype_key,
                                                                     args.attention_precision)
        with export_layered.attention_implementation(
                model.config, export_layered.FLOAT32_ATTENTION if float32_attention else None):
            exported = export_onnx(model, staging / "export", args.opset)
        staged, staged_data = save_one_file(exported, staging / out.name, model.config.vocab_size)
        shutil.rmtree(staging / "export")
        size = sum(p.stat().st_size for p in (staged, staged_data) if p is not None)
        print(f"exported in {time.time() - started:.1f} s: {size / 1e6:.1f} MB"
              f"{' (weights in ' + staged_data.name + ')' if staged_data is not None else ''}")
        result = None
        if args.no_check:
            print("check: skipped (--no-check)")
        else:
            tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[dtype_key]
            runner = "reference" if dtype == torch.bfloat16 else "ort"
            result = check(model, staging / out.name, runner, args.new_tokens, args.prompt_length, tolerance,
                           args.seed)
        # The old graph or the new one whole at every moment, earlier exports' data files gone.
        one_file.put_in_place(staged, staged_data, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    layers = model.config.num_hidden_layers
    print(f"wrote {out}: {layers} layers, inputs input_ids, attention_mask, position_ids, "
          f"past_key_values.{{0..{layers - 1}}}.key/value; outputs logits, present.{{0..{layers - 1}}}.key/value")
    return result


if __name__ == "__main__":
    main()

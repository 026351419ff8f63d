"""Export a Hugging Face causal LM to a *layered ONNX model folder*.

One graph for the token embedding, one per residual block, one for the final norm + LM head
(returning the per-token negative log-likelihood of given targets, so the logits never leave
ONNX Runtime), one more head returning logits (for checks and scoring), a `manifest.json`, and
`tokenizer.json`. The Rust `evaluate` stage chains these graphs and skips removed blocks, which
is exactly deleting them from a pre-norm residual network.

Weights live outside the graphs, in content-addressed files under `weights/` (name = sha256 of
the bytes): a tensor stored in several graphs (the tied embedding and LM head) is stored once.

The exporter checks its own output: the chained graphs, run by ONNX Runtime (bf16 graphs, which
its CPU provider cannot run, by onnx.reference), against transformers' logits on a few sequences
and fails when they differ by more than the tolerance: an fp32 export against transformers in
fp32, an fp16 / bf16 export against the float32 computation of its own weights, where it may be
off by the tolerance or by twice transformers' own error in that dtype.

Architectures (transformers `model_type`): llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text,
phi, phi3, olmo2, granite, stablelm, starcoder2, cohere, qwen2_vl_text, qwen2_5_vl_text, qwen3_vl_text (the
language models of Qwen2-VL, Qwen2.5-VL and Qwen3-VL), gpt2, gpt_neox, mamba, mamba2 (the last two: block
graphs for one sequence length, --fixed-seq-len); docs/model-format.md, "Supported
architectures", says what each block graph holds and what is tested.

Usage:
  python export_layered.py --model HF_DIR --out OUT
  python export_layered.py --gguf FILE.gguf --out OUT
  python export_layered.py --model HF_DIR --out OUT --dtype bf16   (for a GPU: fused attention where it applies)
  python export_layered.py --model HF_DIR --out OUT --dtype bf16 --attention-kernel standard
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

# ONNX Runtime's telemetry off before anything imports it (the checks run graphs through its Python
# package, which otherwise writes an event store under $HOME/.cache/Microsoft/DeveloperTools: a
# byte outside the export's output). The stages set the same switch (crates/runtime,
# TELEMETRY_SWITCH); every tool here imports this module.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import one_file  # noqa: E402
import outputs  # noqa: E402
from gguf_names import TRANSFORMERS_GGUF_RENAMES, gguf_model_type  # noqa: E402

FORMAT = "layerprune-layered-onnx"
FORMAT_VERSION = 1
# transformers `model_type` → how its parts are laid out (see `Architecture`).
SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "olmo2",
                         "granite", "stablelm", "starcoder2", "cohere", "gpt2", "gpt_neox", "mamba", "mamba2",
                         "qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text"}
# Multimodal checkpoints (image + text → text) whose language model is exported and pruned, the
# vision tower kept as it is in a pruned checkpoint: multimodal Gemma 3 (4B and up), LLaVA
# (whichever language model its text_config names), Mistral 3 (Mistral Small 3.1) and Qwen2-VL,
# Qwen2.5-VL and Qwen3-VL. The language model's `model_type` is its text_config's, and must be
# supported.
MULTIMODAL_MODEL_TYPES = {"gemma3", "llava", "mistral3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"}
# Language models whose rotary embedding takes multimodal (3-D) positions: for text every section
# of it has the same position, so the blocks get the 1-D positions repeated.
MROPE_MODEL_TYPES = {"qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text"}
# State-space models: a `backbone` of residual mixers, no attention, no positions.
MAMBA_MODEL_TYPES = {"mamba", "mamba2"}
# Attention with a rotary embedding: all but GPT-2 (learned positions) and the state-space models.
ROTARY_ATTENTION_MODEL_TYPES = SUPPORTED_MODEL_TYPES - {"gpt2"} - MAMBA_MODEL_TYPES
# Rotary tables per attention type (Gemma 3: local and global), called with the block's type.
PER_TYPE_ROTARY_MODEL_TYPES = {"gemma3_text"}
# Rotary tables that rotate neighbouring pairs of dimensions (Cohere), not the two halves.
INTERLEAVED_ROTARY_MODEL_TYPES = {"cohere"}
# Architectures whose block graphs hold a sequential scan unrolled for one sequence length.
FIXED_LENGTH_MODEL_TYPES = MAMBA_MODEL_TYPES
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
EXTERNAL_THRESHOLD_BYTES = 1024
# The export check's default tolerance per dtype (docs/model-format.md, "The export check"):
# the reduced-precision graphs round at other places than PyTorch's kernels do.
DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 2.5e-2, "bf16": 1.5e-1}
# Operators with a bfloat16 kernel in ONNX Runtime's CUDA provider at opset 17 (its
# docs/OperatorKernels.md). A bf16 graph has to stay within them: for a node on a missing one,
# ONNX Runtime falls back to the CPU provider, which has no bf16 kernels at all, and the session
# is refused. Any other operator on bf16 tensors is computed in float32 (`widen_for_cuda_bf16`).
CUDA_BF16_OPS = frozenset({
    "Abs", "Add", "Cast", "Concat", "ConstantOfShape", "Div", "Erf", "Exp", "Expand", "Gather",
    "GatherElements", "Gemm", "Identity", "IsNaN", "LayerNormalization", "MatMul", "Max", "Min", "Mul",
    "Neg", "Pow", "ReduceSum", "Reshape", "ScatterND", "Shape", "Sigmoid", "Sign", "Slice", "Softmax",
    "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose", "Trilu", "Unsqueeze", "Where",
})
# float16's largest finite value, and the text its range check runs (`float16_range_check`): an
# English paragraph in the project's own words. Random tokens understate activations: Gemma 3
# 270M's reach 36k on them and 104k on this paragraph (and 98k on WikiText), past 65504.
FLOAT16_MAX = 65504.0
RANGE_TEXT = (
    "Each block of a language model is a player in a cooperative game, and a set of kept blocks is a "
    "coalition. Its value is how well the model predicts ordinary text with only those blocks: the "
    "lower the loss, the better. We sample many such sets, measure them on a few pages of calibration "
    "text, fit a small model of the game, and remove the blocks that contribute least. The result is a "
    "smaller, faster model, chosen in a way that can be checked and repeated.")
DEFAULT_FLOAT16_MARGIN = 2.0
# Config lists of num_blocks entries that are NOT one value per block; and any `*_token_id`
# (a list of end-of-sequence tokens as long as the model has blocks is not cut with them).
NOT_PER_LAYER_KEYS = {"architectures", "layerprune_kept_blocks"}


# Rotary embeddings whose tables change with the sequence length at run time: dynamic NTK
# scaling (rescaled once a sequence is longer than the trained context) and LongRoPE (Phi-3's
# long-context checkpoints: short factors for sequences up to original_max_position_embeddings,
# long ones past it; `su` is its name in the first of them). A graph traced at one example length
# keeps that length's tables for every length, and a fused block's tables, computed for
# rotary_positions positions at once, take the long factors for every window. No check of a few
# short sequences would show it, so they are refused by name.
LENGTH_DEPENDENT_ROPE_TYPES = {
    "dynamic": "dynamic NTK scaling: rescaled once a sequence is longer than the trained context",
    "longrope": "LongRoPE: short factors up to original_max_position_embeddings, long ones past it",
    "su": "LongRoPE under its first name: short factors up to original_max_position_embeddings, long ones past it",
}


class UnsupportedArchitecture(SystemExit):
    """A model, or a setting for it, the exporter cannot export: raised as `error: …` deep in the
    model's code, which knows no program name; each tool's `main` names itself in front
    (`refusals_named`), as its other refusals do."""


def refusals_named(program: str):
    """Decorates a tool's `main` so that an UnsupportedArchitecture it raises reads
    `<program>: error: …`, as the tool's other refusals (a missing file, a bad flag) do."""
    def decorate(main):
        @functools.wraps(main)
        def named(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except UnsupportedArchitecture as refusal:
                raise UnsupportedArchitecture(f"{program}: {refusal}") from None
        return named
    return decorate


def rope_types(config) -> list:
    """The rope types a transformers config names, sorted: its `rope_parameters` (one entry per
    attention type in Gemma 3's) or the older `rope_scaling`, under `rope_type` or `type`;
    "default" where it names none."""
    found = set()
    for key in ("rope_parameters", "rope_scaling"):
        value = getattr(config, key, None)
        if not isinstance(value, dict):
            continue
        entries = value.values() if value and all(isinstance(v, dict) for v in value.values()) else [value]
        found |= {str(entry.get("rope_type") or entry.get("type") or "default") for entry in entries}
    return sorted(found or {"default"})


def refuse_length_dependent_rope(config, source, program: str) -> None:
    """Exits, naming `source` and the rope type, when the config's rotary embedding changes with
    the sequence length (LENGTH_DEPENDENT_ROPE_TYPES); called before the weights are loaded.
    `config`: a transformers config (a multimodal one's text config is read)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    # A name with "dynamic" in it is taken for a variant of dynamic scaling: refused, not traced.
    bad = [kind for kind in rope_types(text_config) if kind in LENGTH_DEPENDENT_ROPE_TYPES or "dynamic" in kind]
    if bad:
        why = "; ".join(f"{kind}: {LENGTH_DEPENDENT_ROPE_TYPES.get(kind, LENGTH_DEPENDENT_ROPE_TYPES['dynamic'])}"
                        for kind in bad)
        raise SystemExit(
            f"{program}: error: {source}: rope type {', '.join(repr(k) for k in bad)} is not supported: its rotary "
            f"tables change with the sequence length at run time ({why}), and a traced graph keeps the tables of "
            "one length (docs/your-model.md)")


def supported_config_model_types(model_types=SUPPORTED_MODEL_TYPES, multimodal_types=MULTIMODAL_MODEL_TYPES) -> list:
    """The `model_type`s a checkpoint's config.json may name, as a user reads them: the language
    models (`model_types`), and the multimodal checkpoints whose language model is exported
    (`multimodal_types`). The Qwen-VL language models' own types (`qwen2_vl_text`, ...) are
    left out: they only occur inside their multimodal checkpoint's text_config. The defaults
    are the layered exporter's; the generator (export_generator.py) passes its own."""
    return sorted((set(model_types) - MROPE_MODEL_TYPES) | set(multimodal_types))


def unsupported_message(model_type, architectures=None, multimodal=None, source=None, exporter="layered exporter",
                        model_types=SUPPORTED_MODEL_TYPES, multimodal_types=MULTIMODAL_MODEL_TYPES) -> str:
    """The refusal of a model type an exporter does not support; `source`, where known, is the
    file that names it (a folder's config.json, a GGUF file), named first as in the tools' other
    refusals of a source. `exporter`, `model_types` and `multimodal_types` name the exporter and
    what it supports (supported_config_model_types): the layered exporter's by default, the
    generator's from export_generator.py, so that both refusals read alike."""
    named = f" ({', '.join(architectures)})" if architectures else ""
    inside = f" (the language model, text_config, of a {multimodal!r} checkpoint)" if multimodal else ""
    where = f"{source}: " if source is not None else ""
    listed = ", ".join(t + (" (multimodal)" if t in multimodal_types else "")
                       for t in supported_config_model_types(model_types, multimodal_types))
    return (f"error: {where}model type {model_type!r}{inside}{named} is not supported by the {exporter}; "
            f"supported model types: {listed}")


class Architecture:
    """Where a supported model keeps its parts and how one of its blocks is called.

    - `base`: the decoder (`model.model`, `model.transformer` for GPT-2, `model.gpt_neox`,
      `model.backbone` for Mamba and Mamba-2); `layers`: its list of residual blocks; `norm`: the
      final norm; `lm_head`.
    - `block_attention(index)`: the block's attention type (`full_attention` or
      `sliding_attention`) and its window (None for full attention), fixed by the block's
      index in the ORIGINAL model: it is baked into the block's graph, so removing other
      blocks never changes it.
    """

    def __init__(self, model):
        config = model.config
        self.model_type = config.model_type
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedArchitecture(unsupported_message(self.model_type, getattr(config, "architectures", None)))
        if self.model_type == "gpt2":
            self.base = model.transformer
            self.layers_attr, self.norm = "h", model.transformer.ln_f
        elif self.model_type == "gpt_neox":
            self.base = model.gpt_neox
            self.layers_attr, self.norm = "layers", model.gpt_neox.final_layer_norm
        elif self.model_type in MAMBA_MODEL_TYPES:
            self.base = model.backbone
            self.layers_attr, self.norm = "layers", model.backbone.norm_f
        elif self.model_type == "phi":
            self.base = model.model
            self.layers_attr, self.norm = "layers", model.model.final_layernorm
        else:
            self.base = model.model
            self.layers_attr, self.norm = "layers", model.model.norm
        self.lm_head = model.lm_head
        self.config = config
        # A multimodal checkpoint's forward applies no final logit softcapping (LanguageModel).
        self.softcapping = (None if isinstance(model, LanguageModel)
                            else getattr(config, "final_logit_softcapping", None))
        if getattr(config, "use_bidirectional_attention", False):
            raise UnsupportedArchitecture(f"error: {self.model_type} with use_bidirectional_attention "
                                          "is not a causal LM; not supported")

    @property
    def layers(self):
        return getattr(self.base, self.layers_attr)

    def set_layers(self, layers):
        setattr(self.base, self.layers_attr, layers)

    def block_attention(self, index):
        config = self.config
        window = getattr(config, "sliding_window", None)
        if self.model_type in ("mistral", "phi3", "starcoder2"):  # one window on every block, if any
            return ("sliding_attention", int(window)) if window is not None else ("full_attention", None)
        layer_types = getattr(config, "layer_types", None)
        if layer_types is not None and self.model_type in ("qwen2", "qwen3", "qwen2_vl_text", "qwen2_5_vl_text",
                                                           "gemma2", "gemma3_text"):
            kind = layer_types[index]
            if kind == "sliding_attention" and window is not None:
                return kind, int(window)
            if kind not in ("full_attention", "sliding_attention"):
                raise UnsupportedArchitecture(f"error: attention type {kind!r} of block {index} "
                                              "is not supported (full_attention, sliding_attention)")
            return "full_attention", None
        return "full_attention", None

    def final_logit_softcapping(self):
        return self.softcapping

    def embedding_multiplier(self):
        """Granite scales the token embeddings (in its decoder's forward, not in a module)."""
        return self.config.embedding_multiplier if self.model_type == "granite" else None

    def logits_scaling(self):
        """Granite divides the logits (in its causal-LM forward, not in a module)."""
        return self.config.logits_scaling if self.model_type == "granite" else None

    def logit_scale(self):
        """Cohere multiplies the logits (in its causal-LM forward, not in a module)."""
        return self.config.logit_scale if self.model_type == "cohere" else None


class Embedding(nn.Module):
    """Token embedding (Gemma's scaled by sqrt(hidden) inside its module), plus GPT-2's learned
    position embedding."""

    def __init__(self, model):
        super().__init__()
        arch = Architecture(model)
        if arch.model_type == "gpt2":
            self.embed_tokens, self.embed_positions = model.transformer.wte, model.transformer.wpe
        elif arch.model_type == "gpt_neox":
            self.embed_tokens, self.embed_positions = model.gpt_neox.embed_in, None
        elif arch.model_type in MAMBA_MODEL_TYPES:
            self.embed_tokens, self.embed_positions = model.backbone.embeddings, None
        else:
            self.embed_tokens, self.embed_positions = model.model.embed_tokens, None
        self.multiplier = arch.embedding_multiplier()

    def forward(self, input_ids):
        hidden = self.embed_tokens(input_ids)
        if self.multiplier is not None:
            hidden = hidden * self.multiplier
        if self.embed_positions is not None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            hidden = hidden + self.embed_positions(position_ids)
        return hidden


class Block(nn.Module):
    """One decoder layer with its RoPE and causal mask built inside the graph, so the graph
    maps hidden states to hidden states and nothing else has to be fed in. A sliding-window
    block masks keys more than `window - 1` positions back (transformers' `kv > q - window`);
    Gemma 3 blocks use the rotary table of their own attention type (local or global)."""

    def __init__(self, model, index):
        super().__init__()
        arch = Architecture(model)
        self.layer = arch.layers[index]
        self.rotary_emb = getattr(arch.base, "rotary_emb", None)
        self.layer_type, self.window = arch.block_attention(index)
        self.model_type = arch.model_type
        self.plain_call = arch.model_type == "gpt2"
        self.recurrent = arch.model_type in MAMBA_MODEL_TYPES

    def forward(self, hidden_states):
        if self.recurrent:  # Mamba, Mamba-2: the block is norm + mixer + residual; no positions, no mask
            # Its scan runs in float32 and so does the residual it returns, also in fp16 / bf16:
            # cast back, the hidden states between graphs are in the folder's dtype.
            return self.layer(hidden_states).to(hidden_states.dtype)
        seq_len = hidden_states.shape[1]
        position_ids = torch.arange(seq_len, device=hidden_states.device).unsqueeze(0)
        # An additive mask with the dtype's minimum (not -inf) keeps softmax free of NaN.
        minimum = torch.finfo(hidden_states.dtype).min
        causal = torch.full((seq_len, seq_len), minimum, dtype=hidden_states.dtype)
        causal = torch.triu(causal, diagonal=1)
        if self.window is not None:
            too_far = torch.tril(torch.ones((seq_len, seq_len), dtype=torch.bool), diagonal=-self.window)
            causal = causal.masked_fill(too_far, minimum)
        causal = causal[None, None, :, :]
        if self.plain_call:
            output = self.layer(hidden_states, attention_mask=causal)
        else:
            position_embeddings = block_rotary(self.model_type, self.rotary_emb, hidden_states, position_ids,
                                               self.layer_type)
            output = self.layer(
                hidden_states,
                attention_mask=causal,
                position_ids=position_ids,
                position_embeddings=position_embeddings,
            )
        return output[0] if isinstance(output, tuple) else output


def block_rotary(model_type, rotary, x, position_ids, layer_type):
    """The (cos, sin) tables a block of `model_type` is called with, from its decoder's rotary
    module: Gemma 3's of the block's attention type (local or global), Cohere's interleaved, the
    Qwen VL models' multimodal ones with every section at the text positions, the others' as the
    module computes them. Shared by the block graphs, the fused attention's caches and the
    KV-cache generator."""
    if model_type in PER_TYPE_ROTARY_MODEL_TYPES:
        return rotary(x, position_ids, layer_type)
    if model_type in INTERLEAVED_ROTARY_MODEL_TYPES:
        return interleaved_rotary(rotary, x, position_ids)
    if model_type in MROPE_MODEL_TYPES:
        return rotary(x, position_ids.expand(3, -1, -1))
    return rotary(x, position_ids)


def interleaved_rotary(rotary, x, position_ids):
    """Cohere's rotary table, each frequency twice in a row, from its rotary module's `inv_freq` and
    `attention_scaling` as the module's forward computes it, but interleaved with stack + flatten
    instead of its `repeat_interleave`, whose legacy ONNX export fails in ONNX Runtime at other
    shapes than the example's."""
    freqs = position_ids[..., None].float() * rotary.inv_freq.to(device=x.device, dtype=torch.float)
    emb = torch.stack([freqs, freqs], dim=-1).flatten(-2)
    scaling = rotary.attention_scaling
    return (emb.cos() * scaling).to(dtype=x.dtype), (emb.sin() * scaling).to(dtype=x.dtype)


class Head(nn.Module):
    """Final norm + LM head. `nll=True` returns −log p(target) per position (computed in fp32);
    otherwise the logits."""

    def __init__(self, model, nll: bool):
        super().__init__()
        arch = Architecture(model)
        self.norm = arch.norm
        self.lm_head = arch.lm_head
        self.softcap = arch.final_logit_softcapping()
        self.logits_scaling = arch.logits_scaling()
        self.logit_scale = arch.logit_scale()
        self.nll = nll

    def logits(self, hidden_states):
        normed = self.norm(hidden_states)
        batch, seq_len, hidden = normed.shape
        # The head graphs are exported without constant folding so that the [vocab, hidden]
        # weight keeps its stored layout (ONNX Runtime folds the transpose when it loads the
        # graph): a tied weight then has the embedding's bytes and is stored once on disk.
        flat = torch.nn.functional.linear(normed.reshape(batch * seq_len, hidden), self.lm_head.weight,
                                          self.lm_head.bias)
        logits = flat.reshape(batch, seq_len, -1)
        if self.softcap is not None:  # Gemma: logits = cap * tanh(logits / cap), in the model's dtype
            logits = torch.tanh(logits / self.softcap) * self.softcap
        if self.logits_scaling is not None:  # Granite
            logits = logits / self.logits_scaling
        if self.logit_scale is not None:  # Cohere
            logits = logits * self.logit_scale
        return logits.float()

    def forward(self, hidden_states, target_ids=None):
        logits = self.logits(hidden_states)
        if not self.nll:
            return logits
        log_probs = torch.log_softmax(logits, dim=-1)
        return -torch.gather(log_probs, -1, target_ids.unsqueeze(-1)).squeeze(-1)


def permit_as_umask(folder: Path):
    """Gives `folder` and everything in it the permissions the user's umask gives new files:
    a staging folder from `tempfile.mkdtemp` is private (0700), and transformers writes
    weights 0600, so a published model would be unreadable to the user's group and containers."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The attention of fp16 / bf16 block graphs (`--attention-precision`): transformers' eager
# attention rounds the scores q·kᵀ to the model's dtype before its float32 softmax, where its
# default (SDPA) keeps them in float32. On an H200 (docs/benchmarks.md §5), a Llama-2-7B shape in
# bf16 was 1.0e-3 nats from float32 through graphs exported so, PyTorch with SDPA 1.6e-4 and
# PyTorch with eager attention 6.7e-4: most of the difference was that rounding. "float32"
# computes each block's attention (scores, softmax, the weighted sum of values) in float32 with
# the architecture's own eager code, and casts its output back: the projections around it stay
# in the dtype, so the cost is the attention's own arithmetic (a few % of a block's at the
# window lengths used here).
ATTENTION_PRECISIONS = ("float32", "model")
FLOAT32_ATTENTION = "layerprune_float32_attention"


def float32_attention(module, query, key, value, attention_mask, **kwargs):
    """The architecture's own eager attention (its module's `eager_attention_forward`: GQA,
    scaling, soft-capping as the model has them) on float32 copies of its inputs, the output
    cast back to the inputs' dtype."""
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise UnsupportedArchitecture(f"error: {type(module).__name__}: no eager attention to compute in float32 "
                                      "(export with --attention-precision model)")
    mask = attention_mask.float() if attention_mask is not None else None
    output, weights = eager(module, query.float(), key.float(), value.float(), mask, **kwargs)
    return output.to(query.dtype), weights


def fused_attention_applies(config, exporter: str, attention_kernel: str, dtype_name: str = "fp32",
                            allow_known_failures: bool = False) -> bool:
    """Whether the blocks get FUSED_ATTENTION: `attention_kernel` "fused" (as resolved by
    `resolve_attention_kernel`), which only the legacy exporter writes, only FUSED_MODEL_TYPES
    have, and not where FUSED_KNOWN_FAILURES lists the model type for `dtype_name` unless
    `allow_known_failures` (refused otherwise, naming why)."""
    if attention_kernel not in ATTENTION_KERNELS:
        raise ValueError(f"attention_kernel {attention_kernel!r}: one of {', '.join(ATTENTION_KERNELS)}")
    if attention_kernel == "standard":
        return False
    if config.model_type in MROPE_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"error: --attention-kernel fused: {config.model_type} blocks' multimodal rotary embedding (a table a "
            "section of the head, from 3-D positions) is not in ONNX Runtime's GroupQueryAttention; "
            "export with --attention-kernel standard")
    if config.model_type not in FUSED_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"error: --attention-kernel fused: {config.model_type} blocks have no rotary causal attention to fuse; "
            f"fused attention is for {', '.join(sorted(FUSED_MODEL_TYPES))}")
    if exporter != "legacy":
        raise UnsupportedArchitecture("error: --attention-kernel fused is written by the legacy exporter "
                                      "(--exporter legacy, the default)")
    if fused_known_to_fail(config.model_type, dtype_name) and not allow_known_failures:
        other = "fp16 (not measured there)" if dtype_name == "bf16" else "another dtype"
        raise UnsupportedArchitecture(
            f"error: --attention-kernel fused --dtype {dtype_name}: {config.model_type}'s fused {dtype_name} blocks "
            f"are known to fail in ONNX Runtime's CUDA provider ({FUSED_KNOWN_FAILURES_MEASURED}: evaluate could "
            "not open them); export with --attention-kernel standard, or fused in " + other)
    return True


def fused_known_to_fail(model_type: str, dtype_name: str) -> bool:
    """Whether FUSED_KNOWN_FAILURES lists `model_type`'s fused export in `dtype_name`."""
    return model_type in FUSED_KNOWN_FAILURES.get(dtype_name, ())


def resolve_attention_kernel(model, dtype_name: str, exporter: str, attention_kernel: str,
                             attention_precision=None):
    """(the kernel the blocks get, "standard" or "fused"; why, a line, for "auto", else None).
    "auto" is "fused" for an fp16 / bf16 export by the legacy exporter of one of
    FUSED_MODEL_TYPES, with no `attention_precision` given (which is for standard attention), not
    in FUSED_KNOWN_FAILURES or FUSED_UNTRIED and whose rotary tables the node can hold; "standard"
    otherwise. An
    explicit kernel is returned as it is (`fused_attention_applies` refuses what it cannot be)."""
    if attention_kernel not in ATTENTION_KERNEL_CHOICES:
        raise ValueError(f"attention_kernel {attention_kernel!r}: one of {', '.join(ATTENTION_KERNEL_CHOICES)}")
    if attention_kernel != "auto":
        return attention_kernel, None
    model_type = model.config.model_type
    if attention_precision is not None:
        why = f"--attention-precision {attention_precision} given, which is for standard attention"
    elif dtype_name == "fp32":
        why = ("an fp32 export; fused is for fp16 / bf16, the dtypes ONNX Runtime's CUDA provider runs the "
               "node in")
    elif model_type in MROPE_MODEL_TYPES:
        why = f"{model_type} blocks' multimodal rotary embedding is not in ONNX Runtime's GroupQueryAttention"
    elif model_type not in FUSED_MODEL_TYPES:
        why = f"{model_type} blocks have no rotary causal attention to fuse"
    elif exporter != "legacy":
        why = "fused attention is written by the legacy exporter only"
    elif fused_known_to_fail(model_type, dtype_name):
        why = (f"{model_type}'s fused {dtype_name} blocks are known to fail on CUDA, "
               f"{FUSED_KNOWN_FAILURES_MEASURED}")
    elif model_type in FUSED_UNTRIED.get(dtype_name, ()):
        why = (f"{model_type}'s fused {dtype_name} blocks are not yet run on CUDA, where its fused bf16 "
               "ones failed; --attention-kernel fused writes them")
    else:
        why = fused_rotary_problem(model, DTYPES[dtype_name])
    if why is not None:
        return "standard", f"standard (auto: {why})"
    return "fused", (f"fused (auto: {dtype_name} export of {model_type}; --attention-kernel standard for ONNX "
                     "standard operators)")


def packing_advice(model, dtype_name: str, exporter: str, attention_precision=None) -> str:
    """What to pass where --qkv-projection packed met standard attention: --attention-kernel fused
    (with --exporter legacy, without --attention-precision where those were given) only where the
    refusal tables (`fused_attention_applies`, `fused_rotary_problem`) let the blocks be fused and
    their q / k are not normalised after the products (which no packing keeps); --qkv-projection
    separate otherwise. `model` may be a weightless `model_skeleton`: all of this is read from the
    architecture and its rotary tables, not the weights. The one advice of both refusals, before
    the model loads and in `export`."""
    config = model.config
    try:
        # The legacy exporter's: --exporter dynamo is a flag to change, not a reason not to fuse.
        fused_attention_applies(config, "legacy", "fused", dtype_name)
        why_not = fused_rotary_problem(model, DTYPES[dtype_name])
    except UnsupportedArchitecture as refusal:
        # "error: --attention-kernel fused[ --dtype X]: <why>; export with ...": the why alone.
        why_not = re.sub(r"^error: --attention-kernel fused( --dtype \S+)?:? ?", "", str(refusal))
        why_not = why_not.split("; export with")[0]
    if why_not is None:
        attention = self_attention(Architecture(model).layers[0])
        if any(getattr(attention, name, None) is not None for name in Q_K_NORMS):
            why_not = f"{config.model_type}'s q / k are normalised after their products, which packing cannot keep"
    if why_not is None:
        return ("pass --attention-kernel fused" + (" --exporter legacy" if exporter != "legacy" else "")
                + (" without --attention-precision" if attention_precision is not None else ""))
    return f"the projections cannot be packed here ({why_not}); export with --qkv-projection separate"


def model_skeleton(args, program: str = "export"):
    """The source's model built from its config alone, without its weights (parameters on the
    meta device; buffers, the rotary tables among them, computed): what a refusal from the flags
    can ask of the architecture (`packing_advice`) in a second, before the weights load."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    if args.gguf:
        gguf = Path(args.gguf)
        check_gguf_header(gguf, program)
        with reading(program, f"the GGUF file {gguf}"):
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        auto_class = AutoModelForCausalLM
    else:
        folder = Path(args.model)
        auto_class = model_class(folder, check_supported_config(folder, program))
        with reading(program, f"the config {folder / 'config.json'}"):
            config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):
        return auto_class.from_config(config)


# The attention modules' norms of q / k after their products (Qwen3, OLMo 2, Gemma 3; Phi's and
# StableLM's qk_layernorm): a block with one cannot have its projections packed.
Q_K_NORMS = ("q_norm", "k_norm", "q_layernorm", "k_layernorm")


def fused_rotary_problem(model, dtype):
    """Why the node cannot hold the model's rotary tables (`rotary_tables`' refusal, e.g. a partial
    rotary of fewer than 16 dimensions), or None: what "auto" falls back to standard for, where an
    explicit --attention-kernel fused is refused. One block of each attention type is enough:
    the others share its rotary module and head."""
    seen = set()
    for index in range(model.config.num_hidden_layers):
        block = Block(model, index)
        if block.layer_type in seen:
            continue
        seen.add(block.layer_type)
        try:
            rotary_tables(block, head_size(self_attention(block.layer)), dtype)
        except UnsupportedArchitecture as refusal:
            return str(refusal).removeprefix("error: ").split("; export with")[0]
    return None


def float32_attention_applies(config, dtype_name: str, attention_precision: str) -> bool:
    """Whether an export in `dtype_name` computes attention in float32: fp16 / bf16 with
    `attention_precision` "float32", for a model with attention (not Mamba)."""
    if attention_precision not in ATTENTION_PRECISIONS:
        raise ValueError(f"attention_precision {attention_precision!r}: one of {', '.join(ATTENTION_PRECISIONS)}")
    return (dtype_name != "fp32" and attention_precision == "float32"
            and config.model_type not in FIXED_LENGTH_MODEL_TYPES)


# The blocks' attention as ONNX operators (`--attention-kernel`). "standard": transformers' eager
# attention and rotary embedding written out as ONNX standard operators, which any ONNX runtime
# runs; a block graph then launches some 40 kernels on a GPU, about 20 of them for the rotary
# embedding, the causal mask, the grouped heads and the softmax. "fused": all of that as one node
# of ONNX Runtime's `com.microsoft` GroupQueryAttention (its prompt form: no cache, every window
# a full sequence), with the rotary tables as the node's cos / sin caches: one kernel (flash
# attention on CUDA in fp16 / bf16, its softmax in float32), ONNX Runtime only. Why: on an H200 a
# TinyLlama-1.1B block call took 0.57 ms where its products need 0.22 ms (docs/benchmarks.md §5):
# the host's launches set the pace. For the architectures whose attention is rotary (over the whole
# head or a multiple of 16 of its dimensions; rotate-half or, Cohere's, interleaved) and causal,
# optionally sliding-window or soft-capped (Gemma 2) (FUSED_MODEL_TYPES).
# "auto" (`--attention-kernel`'s default; `resolve_attention_kernel`) picks fused wherever it
# applies in fp16 / bf16: measured 2026-12-05 on an NVIDIA H100 with onnxruntime-gpu 1.31.1
# (docs/results/gpu-run-3.md), `evaluate` ran 1.22x to 1.75x the masks/s of the standard export
# (TinyLlama-1.1B fp16, Llama-2-7B bf16, SmolLM2-135M fp16), and its NLLs were as far from
# float32 within a factor of two either way (the largest difference over 10 masks: 5.4e-5 against
# 4.2e-5 nats at 1.1B, 2.2e-3 against 1.3e-3 at 7B, 3.7e-5 against 4.6e-5 at 135M); on the CPU it
# is about as fast (docs/benchmarks.md §5). The fused folder is ONNX Runtime's only and runs
# windows of at most `rotary_positions` tokens: --attention-kernel standard where that matters.
ATTENTION_KERNELS = ("standard", "fused")
ATTENTION_KERNEL_CHOICES = ("auto", *ATTENTION_KERNELS)
FUSED_ATTENTION = "layerprune_fused_attention"
FUSED_MODEL_TYPES = ROTARY_ATTENTION_MODEL_TYPES - MROPE_MODEL_TYPES
# Fused exports known to fail on CUDA, by dtype: ONNX Runtime's CUDA provider could not open these
# model types' fused bf16 blocks (tools/bench/gpu_families.py on the tiny fixtures: "This op has
# been implemented only for the following types (tensor(float16),), but the node in the model has
# the following type (tensor(float))"); every other fused architecture agreed with float32 there.
# They are exactly the architectures whose RMSNorm multiplies by its weight in float32 before
# casting back ((x * w).to(dtype), Gemma's (1 + w)): likely a CUDA graph fusion of that pattern
# next to the node, not confirmed (gpu_families.py now runs a failing fused folder again with
# `evaluate --graph-optimization basic`, which leaves ONNX Runtime's fusions out: the test of that
# cause). Their fp16 fused exports were not measured on CUDA. "auto"
# never picks fused here, and an explicit --attention-kernel fused is refused (export()'s
# `allow_known_failures` lets gpu_families.py measure them again).
FUSED_KNOWN_FAILURES = {"bf16": frozenset({"gemma", "gemma2", "gemma3_text", "olmo2"})}
# Fused exports "auto" leaves standard though nothing failed: the same architectures in fp16,
# not yet run on CUDA, whose suspected cause (above) is not bf16's. An explicit
# --attention-kernel fused writes them.
FUSED_UNTRIED = {"fp16": FUSED_KNOWN_FAILURES["bf16"]}
FUSED_KNOWN_FAILURES_MEASURED = ("measured 2026-12-05 on an NVIDIA H100, onnxruntime-gpu 1.31.1, "
                                 "docs/results/gpu-run-3.md")
# The rotary tables' length in a fused block (the longest window its graph runs; manifest
# `rotary_positions`): every block session holds its own copy, so a model's whole context (128k
# positions for Llama 3.1: 64 MB a block in float32) would cost gigabytes for windows of hundreds
# of tokens.
FUSED_MAX_POSITIONS = 8192
ONNX_INT32 = 6  # onnx.TensorProto.INT32


def group_query_attention(query, key, value, cos, sin, num_heads: int, kv_num_heads: int, scale: float,
                          window: int, softcap: float = 0.0, interleaved: bool = False):
    """What one GroupQueryAttention node of a fused block computes, in NumPy (float32) on
    [batch, seq, heads × head] arrays: the rotary embedding over the first 2 × `cos.shape[1]`
    dimensions of each head (the rest pass unrotated: partial rotary), in transformers'
    rotate-half form or, `interleaved`, on pairs of neighbouring dimensions (its tables `cos` /
    `sin` [positions, rotary / 2] from position 0), causal attention over grouped heads with
    `scale`, the scores soft-capped (`softcap` · tanh(score / `softcap`); 0: none), keys more
    than `window - 1` back masked (0: no window); returns [batch, seq, num_heads × head] in
    float32. The export traces through it and the NumPy runner of the export check (bf16
    folders) runs it."""
    batch, seq, width = query.shape
    head = width // num_heads
    half = cos.shape[1]

    def heads(x, count):
        return np.asarray(x, dtype=np.float32).reshape(batch, seq, count, head).transpose(0, 2, 1, 3)

    def rotate(x):
        c = np.asarray(cos[:seq], dtype=np.float32)
        s = np.asarray(sin[:seq], dtype=np.float32)
        rotated, passed = x[..., :2 * half], x[..., 2 * half:]
        if interleaved:
            first, second = rotated[..., 0::2], rotated[..., 1::2]
            rotated = np.stack([first * c - second * s, second * c + first * s], axis=-1).reshape(rotated.shape)
        else:
            first, second = rotated[..., :half], rotated[..., half:]
            rotated = np.concatenate([first * c - second * s, second * c + first * s], axis=-1)
        return np.concatenate([rotated, passed], axis=-1)

    groups = num_heads // kv_num_heads
    q = rotate(heads(query, num_heads))
    k = np.repeat(rotate(heads(key, kv_num_heads)), groups, axis=1)
    v = np.repeat(heads(value, kv_num_heads), groups, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale
    if softcap:
        scores = softcap * np.tanh(scores / softcap)
    position = np.arange(seq)
    allowed = position[None, :] <= position[:, None]
    if window:
        allowed &= position[None, :] > position[:, None] - window
    scores = np.where(allowed, scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    output = (scores / scores.sum(axis=-1, keepdims=True)) @ v
    return output.transpose(0, 2, 1, 3).reshape(batch, seq, num_heads * head)


class GroupQueryAttention(torch.autograd.Function):
    """ONNX Runtime's GroupQueryAttention in a traced graph (the legacy exporter writes
    `symbolic`); run in PyTorch, `group_query_attention`."""

    @staticmethod
    def forward(ctx, query, key, value, cos, sin, num_heads, kv_num_heads, scale, window, softcap, interleaved):
        """`query` / `key` / `value` [batch, seq, heads, head]; returns [batch, seq, num_heads, head]."""
        with warnings.catch_warnings():
            # The tracer warns that NumPy values are constants to it; `symbolic` is what the graph holds.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            as_numpy = [t.detach().float().flatten(2).numpy() for t in (query, key, value)]
            as_numpy += [t.detach().float().numpy() for t in (cos, sin)]
            output = group_query_attention(*as_numpy, num_heads, kv_num_heads, scale, window, softcap, interleaved)
            return torch.from_numpy(output).to(query.dtype).unflatten(2, (num_heads, -1))

    @staticmethod
    def symbolic(g, query, key, value, cos, sin, num_heads, kv_num_heads, scale, window, softcap, interleaved):
        def constant(values, dtype=torch.int64):
            return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))

        output_type = query.type()  # [batch, seq, num_heads, head], as the query
        # The heads are flattened and unflattened by Reshapes with constant shapes (0 keeps a
        # dimension): no Shape / Gather / Concat a block for ONNX Runtime to run on every call.
        query, key, value = (g.op("Reshape", x, constant([0, 0, -1])) for x in (query, key, value))
        shape = g.op("Shape", query)
        length = g.op("Cast", g.op("Gather", shape, constant(1), axis_i=0), to_i=ONNX_INT32)
        last = g.op("Sub", length, constant(1, torch.int32))
        # seqlens_k (the last position of each sequence, [batch] int32) is read from the device's
        # memory: made by Range, whose bounds are host scalars and whose output is on the device,
        # so no host-to-device copy enters the graph (ONNX Runtime refuses CUDA-graph capture of
        # a graph with one).
        seqlens = g.op("Expand", g.op("Range", last, length, constant(1, torch.int32)),
                       g.op("Slice", shape, constant([0]), constant([1])))
        total = g.op("Reshape", length, constant([1]))
        missing = g.op("prim::Constant")  # an absent optional input (past_key, past_value)
        missing.setType(torch._C.OptionalType.ofTensor())
        # local_window_size counts the keys a query sees, itself included, as transformers'
        # sliding_window does (measured on the CPU provider; CUDA's flash attention is given
        # local_window_size - 1 keys to the left).
        # softcap 0 and rotary_interleaved 0 are the node's defaults: written only where set.
        extra = {"softcap_f": softcap} if softcap else {}
        if interleaved:
            extra["rotary_interleaved_i"] = 1
        output, _, _ = g.op("com.microsoft::GroupQueryAttention", query, key, value, missing, missing, seqlens,
                            total, cos, sin, num_heads_i=num_heads, kv_num_heads_i=kv_num_heads, do_rotary_i=1,
                            scale_f=scale, local_window_size_i=window if window else -1, outputs=3, **extra)
        output = g.op("Reshape", output, constant([0, 0, num_heads, -1]))
        output.setType(output_type)
        return output


def fused_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention interface transformers calls a block with when FUSED_ATTENTION is set:
    `query` / `key` / `value` [batch, heads, seq, head] without their rotary embedding (the
    export's `fused_attention_for` leaves it to the node), one GroupQueryAttention over them,
    with the block's soft-capping (Gemma 2) when it has one. The block's own tables and window
    are on `module` (`FusedSettings`); its mask argument is not read: the node masks by position."""
    settings = module.layerprune_fused
    # Head counts from the config, not the traced shapes (graph values): they are the node's
    # attributes. GPT-NeoX's config has no key-value head count: its heads are all query heads.
    config = module.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    output = GroupQueryAttention.apply(*(x.transpose(1, 2) for x in (query, key, value)), settings.cos, settings.sin,
                                       config.num_attention_heads, kv_heads, float(scaling), settings.window or 0,
                                       float(kwargs.get("softcap") or 0.0), settings.interleaved)
    return output, None


class FusedSettings:
    """One block's rotary tables ([positions, rotary / 2], in the model's dtype), whether they
    rotate neighbouring pairs (`interleaved`, Cohere's) and its window."""

    def __init__(self, cos, sin, interleaved, window):
        self.cos, self.sin, self.interleaved, self.window = cos, sin, interleaved, window


def context_length(config):
    """The longest sequence the checkpoint was made for (its position embeddings' or rotary
    scaling's range: max_position_embeddings, GPT-2's n_positions); None for a model without
    positions (Mamba). The manifest records it, and evaluate refuses longer windows."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def rotary_positions(config) -> int:
    """How many positions a fused block's rotary tables hold: the model's context, at most
    FUSED_MAX_POSITIONS."""
    return min(config.max_position_embeddings, FUSED_MAX_POSITIONS)


def rotary_tables(block: "Block", head: int, dtype):
    """The block's rotary cos / sin for positions 0 .. rotary_positions - 1, from its own
    rotary module (so any rope scaling the model has is in them), as GroupQueryAttention's caches
    (one entry a rotated pair: the first half of each row of transformers' rotate-half tables,
    which repeat it; every other entry of Cohere's interleaved ones), and whether they are
    interleaved. The tables may cover part of the head (partial rotary: Phi-2, StableLM,
    GPT-NeoX), the rest passing unrotated, as in the models."""
    positions = torch.arange(rotary_positions(self_attention(block.layer).config)).unsqueeze(0)
    probe = torch.zeros(1, dtype=dtype)
    cos, sin = block_rotary(block.model_type, block.rotary_emb, probe, positions, block.layer_type)
    cos, sin = cos[0], sin[0]
    rotary = cos.shape[-1]
    # ONNX Runtime's node takes tables of a multiple of 8 pairs, at most half a head (measured on
    # its CPU provider: "cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8").
    if rotary > head or rotary % 16:
        raise UnsupportedArchitecture(f"error: a rotary embedding over {rotary} of the head's {head} dimensions: "
                                      "ONNX Runtime's GroupQueryAttention rotates a multiple of 16 dimensions of "
                                      "a head only; export with --attention-kernel standard")
    half = rotary // 2
    if block.model_type in INTERLEAVED_ROTARY_MODEL_TYPES:
        if not (torch.equal(cos[:, 0::2], cos[:, 1::2]) and torch.equal(sin[:, 0::2], sin[:, 1::2])):
            raise UnsupportedArchitecture("error: Cohere's rotary tables are not interleaved; "
                                          "export with --attention-kernel standard")
        cos, sin, interleaved = cos[:, 0::2], sin[:, 0::2], True
    else:
        if not (torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])):
            raise UnsupportedArchitecture("error: the rotary tables are not in transformers' rotate-half form; "
                                          "export with --attention-kernel standard")
        cos, sin, interleaved = cos[:, :half], sin[:, :half], False
    # In the node's dtype, which is the query's: OLMo 2's rotary module gives float32 tables
    # whatever the model's dtype (its rotation computes in float32 and casts back).
    return cos.to(dtype).contiguous(), sin.to(dtype).contiguous(), interleaved


def self_attention(layer):
    """A decoder layer's attention module: `self_attn`, or GPT-NeoX's `attention`."""
    return layer.self_attn if hasattr(layer, "self_attn") else layer.attention


def head_size(attention) -> int:
    """An attention module's head size: GPT-NeoX names it head_size, the others head_dim."""
    return getattr(attention, "head_dim", None) or attention.head_size


@contextlib.contextmanager
def fused_attention_for(block: "Block", dtype):
    """While exporting `block` with FUSED_ATTENTION: its attention module carries its rotary
    tables and window, and its modeling module's `apply_rotary_pos_emb` returns q and k as they
    are, since the node rotates them (the block still computes cos / sin, which nothing then
    reads, so the trace drops them)."""
    attention = self_attention(block.layer)
    modeling = sys.modules[type(attention).__module__]
    cos, sin, interleaved = rotary_tables(block, head_size(attention), dtype)
    original = modeling.apply_rotary_pos_emb
    attention.layerprune_fused = FusedSettings(cos, sin, interleaved, block.window)
    modeling.apply_rotary_pos_emb = lambda q, k, *args, **kwargs: (q, k)
    try:
        yield
    finally:
        modeling.apply_rotary_pos_emb = original
        del attention.layerprune_fused


# The attention functions this exporter registers with transformers, by name.
OWN_ATTENTION = {FLOAT32_ATTENTION: float32_attention, FUSED_ATTENTION: fused_attention}


@contextlib.contextmanager
def attention_implementation(config, name):
    """`config._attn_implementation` set to `name` for the block (None: unchanged).
    FLOAT32_ATTENTION and FUSED_ATTENTION are registered with transformers first, with the eager
    code's additive mask (the graphs pass their own; a whole model run with it builds this one)."""
    if name in OWN_ATTENTION:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(name, OWN_ATTENTION[name])
        AttentionMaskInterface.register(name, eager_mask)
    previous = config._attn_implementation
    if name is not None:
        config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous


def export_graph(module, args, input_names, output_names, dynamic_axes, opset, exporter, fold=True):
    buffer = io.BytesIO()
    # A fresh wrapper module is in training mode, and torch.onnx.export restores the mode it
    # found, which would switch the model's own layers (their dropout) to training mode.
    module.eval()
    with torch.no_grad():
        if exporter == "legacy":
            torch.onnx.export(
                module, args, buffer, dynamo=False, input_names=input_names,
                output_names=output_names, dynamic_axes=dynamic_axes, opset_version=opset,
                do_constant_folding=fold,
            )
        else:
            dims = {}
            program = torch.onnx.export(
                module, args, dynamo=True, input_names=input_names, output_names=output_names,
                dynamic_shapes=_dynamic_shapes(args, dynamic_axes, input_names, dims),
                opset_version=opset,
            )
            program.save(buffer)
    graph = onnx.load_from_string(buffer.getvalue())
    normalize_transpose_perms(graph)
    return graph


def normalize_transpose_perms(graph: onnx.ModelProto) -> int:
    """Writes every Transpose's `perm` with non-negative axes. The legacy exporter copies
    `permute(0, -2, -1, 1)` (Mamba-2's scan) into `perm` as it is, which ONNX does not allow and
    ONNX Runtime refuses to load; the permutation has one entry per axis, so each negative axis
    is the rank plus it. Returns the number of nodes changed."""
    changed = 0
    for node in graph.graph.node:
        if node.op_type != "Transpose":
            continue
        for attribute in node.attribute:
            if attribute.name == "perm" and any(axis < 0 for axis in attribute.ints):
                rank = len(attribute.ints)
                normalized = [axis % rank for axis in attribute.ints]
                del attribute.ints[:]
                attribute.ints.extend(normalized)
                changed += 1
    return changed


# The q, k and v projections of a fused block (`--qkv-projection`). "separate": three MatMuls, as
# the model has them, each reshaped into the GroupQueryAttention node's query, key and value.
# "packed": one MatMul on the three weights side by side ([hidden, (heads + 2 × kv heads) × head],
# and their biases), its output the node's query with key and value left out — the node's packed
# form, which ONNX Runtime's own model builders write. Why: at 10 × 128 rows a key or value
# projection of a grouped-query model is a product of few columns (256 at TinyLlama-1.1B) that
# can fill only a fraction of a GPU's multiprocessors for the time of a full wave, and each is a
# kernel and a shape computation more; one product of all the columns should take about the
# query's wave (not yet measured on a GPU: docs/model-format.md; on the CPU the same speed).
QKV_PROJECTIONS = ("separate", "packed")
# The element types whose stored tensors pack_qkv_projections concatenates, as NumPy types of their
# width (bfloat16 as its 16 bits: the concatenation only moves them).
PACKABLE_TYPES = {onnx.TensorProto.FLOAT: np.uint32, onnx.TensorProto.FLOAT16: np.uint16,
                  onnx.TensorProto.BFLOAT16: np.uint16}


def pack_qkv_projections(graph: onnx.ModelProto) -> int:
    """Rewrites each GroupQueryAttention node of `graph` whose query, key and value are three
    MatMuls of one input by stored weights (each with a stored bias added, or none), followed by
    nothing but Reshapes, into one MatMul of the weights concatenated (biases likewise) whose
    output is the node's packed query; the node's key and value inputs are left empty. Anything
    else between the products and the node (q / k normalisation: Qwen3, OLMo 2, Gemma 3; a
    projection sliced from one already packed: Phi-3, GPT-NeoX; a partial rotary's split and
    rejoin: Phi-2, StableLM), or a reshape that does not keep the batch and sequence dimensions,
    leaves that node as it is. The node's query
    may also be read by Shapes whose batch and sequence entries alone are read (the sequence
    lengths the export computes beside the node): they read the packed query instead, which has
    the same. Nodes and stored tensors nothing reads any more are removed. Returns the number of
    nodes packed."""
    nodes = list(graph.graph.node)
    producer = {output: node for node in nodes for output in node.output}
    readers: dict = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for output in graph.graph.output:
        readers.setdefault(output.name, []).append(None)
    stored = {tensor.name: tensor for tensor in graph.graph.initializer}

    def constant(name):
        """The values of a stored tensor or a Constant node's, flattened, or None."""
        if name in stored:
            return onnx.numpy_helper.to_array(stored[name]).ravel().tolist()
        node = producer.get(name)
        value = next((a.t for a in node.attribute if a.name == "value"), None) \
            if node is not None and node.op_type == "Constant" else None
        return None if value is None else onnx.numpy_helper.to_array(value).ravel().tolist()

    def reads_batch_and_sequence(node):
        """Whether `node` is a Shape whose entries 0 and 1 alone are read (Gather, Slice)."""
        if node is None or node.op_type != "Shape" or node.attribute:
            return False
        for reader in readers.get(node.output[0], [None]):
            if reader is None or reader.input[0] != node.output[0]:
                return False
            if reader.op_type == "Gather" and all(a.name == "axis" and a.i == 0 for a in reader.attribute):
                indices = constant(reader.input[1])
                if indices is None or any(i not in (0, 1) for i in indices):
                    return False
            elif reader.op_type == "Slice" and len(reader.input) == 3:
                starts, ends = constant(reader.input[1]), constant(reader.input[2])
                if starts is None or ends is None or any(i < 0 for i in starts) or any(not 0 <= i <= 2 for i in ends):
                    return False
            else:
                return False
        return True

    def stored_of(name):
        """The stored tensor `name` is, directly or through Identities: torch's exporter stores
        tensors of equal values once and names the others by an Identity of it (zero k and v
        biases, a checkpoint whose k and v weights are equal)."""
        while name not in stored and name in producer and producer[name].op_type == "Identity":
            name = producer[name].input[0]
        return stored.get(name)

    def only_read_once(name):
        return len(readers.get(name, [])) == 1 and name in producer

    def entry_of_shape(name, axis):
        """Whether `name` is entry `axis` of a Shape's value (Gather, possibly unsqueezed): the
        tensor that Shape reads, or None."""
        node = producer.get(name)
        if node is not None and node.op_type == "Unsqueeze":
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Gather" or constant(node.input[1]) != [axis] \
                or not all(a.name == "axis" and a.i == 0 for a in node.attribute):
            return None
        shape = producer.get(node.input[0])
        return shape.input[0] if shape is not None and shape.op_type == "Shape" and not shape.attribute else None

    def keeps_batch_and_sequence(reshape, source):
        """Whether `reshape` keeps its input's first two dimensions, which the packed query must
        share with the query: its target shape starts 0, 0 (kept), or is a Concat whose first two
        parts are those entries of the shape of `source` (the products' input) — the two forms
        the exporter writes. A reshape folding the batch into the sequence would otherwise be
        packed into a query of another shape."""
        target = constant(reshape.input[1])
        if target is not None:
            return target[:2] == [0, 0] and not any(a.name == "allowzero" and a.i for a in reshape.attribute)
        concat = producer.get(reshape.input[1])
        return (concat is not None and concat.op_type == "Concat" and len(concat.input) >= 2
                and all(entry_of_shape(concat.input[axis], axis) == source for axis in (0, 1)))

    def projection(name, other_readers_allowed):
        """(input, weight, bias or None, the Shapes reading `name`) of the product that `name`
        reshapes, or None."""
        shapes = [r for r in readers.get(name, []) if reads_batch_and_sequence(r)] if other_readers_allowed else []
        if name not in producer or len(readers.get(name, [])) != 1 + len(shapes):
            return None
        reshapes = []
        while producer[name].op_type == "Reshape":
            reshapes.append(producer[name])
            name = producer[name].input[0]
            if not only_read_once(name):
                return None
        node, bias = producer[name], None
        if node.op_type == "Add":
            # A bias: one stored vector; its length is checked against the product's below.
            biases = [t for t in map(stored_of, node.input) if t is not None and len(t.dims) == 1]
            products = [i for i in node.input if stored_of(i) is None]
            if len(biases) != 1 or len(products) != 1 or not only_read_once(products[0]):
                return None
            bias, node = biases[0], producer[products[0]]
        weight = stored_of(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 \
                or not all(keeps_batch_and_sequence(reshape, node.input[0]) for reshape in reshapes):
            return None
        return node.input[0], weight, bias, shapes

    def packed_tensor(name, tensors, axis):
        array = np.concatenate([np.ascontiguousarray(onnx.numpy_helper.to_array(t)).view(PACKABLE_TYPES[t.data_type])
                                for t in tensors], axis=axis)
        tensor = onnx.TensorProto(name=name, data_type=tensors[0].data_type, dims=array.shape)
        tensor.raw_data = array.tobytes()
        return tensor

    added = []
    for index, node in enumerate(nodes):
        if node.op_type != "GroupQueryAttention" or node.domain != "com.microsoft" or len(node.input) < 3 \
                or not node.input[1] or not node.input[2]:
            continue
        found = [projection(name, position == 0) for position, name in enumerate(node.input[:3])]
        if any(p is None for p in found) or len({p[0] for p in found}) != 1:
            continue
        weights, biases = [p[1] for p in found], [p[2] for p in found]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        heads, kv_heads = attributes["num_heads"], attributes["kv_num_heads"]
        columns = [w.dims[1] for w in weights]
        if len({t.data_type for t in weights + biases if t is not None}) != 1 \
                or weights[0].data_type not in PACKABLE_TYPES or len({w.dims[0] for w in weights}) != 1 \
                or columns[0] % heads or columns[1] != columns[2] or columns[1] != kv_heads * columns[0] // heads \
                or (None in biases and any(b is not None for b in biases)) \
                or any(b is not None and list(b.dims) != [c] for b, c in zip(biases, columns)):
            continue
        prefix = f"{node.name or f'GroupQueryAttention_{index}'}/packed_qkv"
        weight = packed_tensor(f"{prefix}/weight", weights, axis=1)
        graph.graph.initializer.append(weight)
        packed = f"{prefix}/MatMul_output_0"
        new = [onnx.helper.make_node("MatMul", [found[0][0], weight.name], [packed], name=f"{prefix}/MatMul")]
        if biases[0] is not None:
            bias = packed_tensor(f"{prefix}/bias", biases, axis=0)
            graph.graph.initializer.append(bias)
            packed = f"{prefix}/Add_output_0"
            new.append(onnx.helper.make_node("Add", [new[0].output[0], bias.name], [packed], name=f"{prefix}/Add"))
        for shape in found[0][3]:
            shape.input[0] = packed
        node.input[0], node.input[1], node.input[2] = packed, "", ""
        # Before the first node that reads it: its input is computed before the products it
        # replaces, and they before every reader of theirs.
        first = min(nodes.index(reader) for reader in [node, *found[0][3]])
        added.append((first, new))
    if not added:
        return 0
    ordered = []
    for position, node in enumerate(nodes):
        ordered += [n for first, new in added if first == position for n in new]
        ordered.append(node)
    # What nothing reads any more: the three products, their reshapes and shape computations.
    # A subgraph's nodes (If, Loop, Scan) read names of the graph around them too.
    def names_read(nodes):
        for node in nodes:
            yield from node.input
            for attribute in node.attribute:
                for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                    yield from names_read(subgraph.node)

    outputs = {o.name for o in graph.graph.output}
    while True:
        read = set(names_read(ordered)) | outputs
        alive = [node for node in ordered if any(o in read for o in node.output)]
        if len(alive) == len(ordered):
            break
        ordered = alive
    read = set(names_read(ordered))
    kept = [tensor for tensor in graph.graph.initializer if tensor.name in read]
    del graph.graph.node[:]
    graph.graph.node.extend(ordered)
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    values = {o for node in ordered for o in node.output}
    kept_info = [v for v in graph.graph.value_info if v.name in values]
    del graph.graph.value_info[:]
    graph.graph.value_info.extend(kept_info)
    return len(added)


def _dynamic_shapes(args, dynamic_axes, input_names, dims):
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=131072)
    named = {"batch": batch, "seq": seq}
    return tuple({axis: named[name] for axis, name in dynamic_axes[n].items()} for n in input_names)


def widen_for_cuda_bf16(graph: onnx.ModelProto) -> int:
    """Computes in float32 every node of `graph` that reads bfloat16 and has no bf16 kernel in
    ONNX Runtime's CUDA provider (not in CUDA_BF16_OPS: Mamba's Conv and Softplus, for one): its
    bf16 inputs cast up, its bf16 outputs cast back: computed in float32 and rounded to bf16 once,
    at least as accurate as a bf16 kernel. Returns the number of nodes widened."""
    bf16, fp32 = onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT
    if not any(t.data_type == bf16 for t in graph.graph.initializer) and \
            not any(v.type.tensor_type.elem_type == bf16 for v in graph.graph.input):
        return 0
    types = value_types(graph)
    nodes, widened = [], 0
    for index, node in enumerate(graph.graph.node):
        if node.op_type in CUDA_BF16_OPS or node.domain not in ("", "ai.onnx") or \
                not any(types.get(name) == bf16 for name in node.input):
            nodes.append(node)
            continue
        widened += 1
        for position, name in enumerate(node.input):
            if types.get(name) == bf16:
                wide = f"{name}/float32_for_node_{index}"
                nodes.append(onnx.helper.make_node("Cast", [name], [wide], to=fp32, name=f"{wide}/cast"))
                node.input[position] = wide
        back = []
        for position, name in enumerate(node.output):
            if types.get(name) == bf16:
                wide = f"{name}/float32"
                back.append(onnx.helper.make_node("Cast", [wide], [name], to=bf16, name=f"{name}/cast_back"))
                node.output[position] = wide
        nodes += [node, *back]
    if widened:
        del graph.graph.node[:]
        graph.graph.node.extend(nodes)
        del graph.graph.value_info[:]  # stale for the widened values; recomputed by whoever needs them
    return widened


def operators_reading(paths, elem_type: int) -> set:
    """The operators of the graphs at `paths` that have an input of `elem_type` (an
    onnx.TensorProto data type): what a provider needs kernels for in that type."""
    ops = set()
    for path in paths:
        graph = onnx.load(str(path), load_external_data=False)
        types = value_types(graph)
        ops |= {n.op_type for n in graph.graph.node if any(types.get(i) == elem_type for i in n.input)}
    return ops


def value_types(graph: onnx.ModelProto) -> dict:
    """Every value of `graph` by name → its element type (an onnx.TensorProto data type), as
    shape inference finds them (initializers by their own type)."""
    inferred = onnx.shape_inference.infer_shapes(graph)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update({t.name: t.data_type for t in graph.graph.initializer})
    return types


def externalize(model: onnx.ModelProto, out_dir: Path, written: dict) -> None:
    """Moves every large initializer into weights/<sha256>.bin, writing each content once."""
    weights_dir = out_dir / "weights"
    weights_dir.mkdir(exist_ok=True)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        raw = onnx.numpy_helper.to_array(tensor).tobytes() if not tensor.raw_data else tensor.raw_data
        if len(raw) < EXTERNAL_THRESHOLD_BYTES:
            continue
        digest = hashlib.sha256(raw).hexdigest()
        relative = f"weights/{digest[:32]}.bin"
        if digest not in written:
            with open(out_dir / relative, "wb") as handle:
                handle.write(raw)
            written[digest] = relative
        dims, data_type, name = list(tensor.dims), tensor.data_type, tensor.name
        tensor.Clear()
        tensor.name, tensor.data_type = name, data_type
        tensor.dims.extend(dims)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", relative), ("offset", "0"), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value


def source_dtype(config) -> str:
    """The checkpoint's own dtype as a DTYPES key (fp32 when the config names none or another)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    dtype = str(dtype).replace("torch.", "") if dtype is not None else "float32"
    return {"float16": "fp16", "bfloat16": "bf16"}.get(dtype, "fp32")


def text_model_type(multimodal_type: str, config: dict):
    """The model type of a multimodal checkpoint's language model, as transformers reads its
    config.json: the text config class of `multimodal_type` where transformers fixes one
    (Gemma 3, the Qwen-VLs: whatever text_config says, or with no text_config at all, as the first
    Qwen2-VL configs have), otherwise text_config's `model_type`, or where it names none the
    class's default (LLaVA's llama, Mistral 3's mistral). None where neither says."""
    from transformers import CONFIG_MAPPING
    from transformers.configuration_utils import PreTrainedConfig

    spec = CONFIG_MAPPING[multimodal_type].sub_configs_defaults["text_config"]
    if issubclass(spec.config_class, PreTrainedConfig):
        return spec.config_class.model_type
    text_config = config.get("text_config")
    return text_config.get("model_type", spec.model_type) if isinstance(text_config, dict) else spec.model_type


def check_supported_config(folder: Path, program: str = "export", exporter="layered exporter",
                           model_types=SUPPORTED_MODEL_TYPES, multimodal_types=MULTIMODAL_MODEL_TYPES) -> dict:
    """Refuses an unsupported architecture from config.json alone, before loading weights;
    returns the config as read. The layered exporter's and prune_hf.py's check, and (with its
    own `exporter`, `model_types` and no `multimodal_types`) the generator's."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"{program}: error: cannot read {path}: {error}")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        sys.exit(f"{program}: error: {path} names no model_type: not a transformers config")
    model_type, multimodal = config.get("model_type"), None
    if model_type in multimodal_types:
        multimodal, model_type = model_type, text_model_type(model_type, config)
        if model_type is None:  # text_config's model_type set to null: transformers cannot read it either
            sys.exit(f"{program}: error: {path}: text_config names no model_type (the language model of a "
                     f"{multimodal!r} checkpoint)")
    if model_type not in model_types:
        raise UnsupportedArchitecture(unsupported_message(model_type, config.get("architectures"), multimodal, path,
                                                          exporter, model_types, multimodal_types))
    return config


class LanguageModel(nn.Module):
    """A multimodal checkpoint's language model as a causal LM of its own: the checkpoint's
    decoder, LM head and text config, shared, not copied (deleting a block or cutting a per-layer
    list in one does it in the other). It computes what the multimodal forward computes from text:
    the LM head on the decoder's output, without the text config's final logit softcapping, which
    Gemma3ForConditionalGeneration does not apply (neither then do the head graphs: Architecture)."""

    def __init__(self, checkpoint):
        super().__init__()
        self.config = checkpoint.config.text_config
        self.config._attn_implementation = "eager"
        self.model, self.lm_head = self.parts(checkpoint)

    @staticmethod
    def parts(checkpoint):
        """The checkpoint's decoder and LM head: the modules the language model is made of."""
        return checkpoint.model.language_model, checkpoint.lm_head

    def forward(self, input_ids, use_cache=False, **_):
        from transformers.modeling_outputs import CausalLMOutput

        hidden = self.model(input_ids=input_ids, use_cache=use_cache).last_hidden_state
        return CausalLMOutput(logits=self.lm_head(hidden))


def language_model(model):
    """The language model of a multimodal checkpoint (MULTIMODAL_MODEL_TYPES) as a causal LM of
    its own (LanguageModel); any other model as it is."""
    if model.config.model_type not in MULTIMODAL_MODEL_TYPES:
        return model
    return LanguageModel(model).eval()


def load_model(args):
    """Loads the model in `args.dtype` (a DTYPES key, or "auto": the checkpoint's own dtype); of a
    multimodal checkpoint, its language model (`language_model`)."""
    model, tokenizer, source = load_checkpoint(args, graphs_for="export")
    text = language_model(model)
    if text is not model:
        source["language_model_of"] = type(model).__name__
    Architecture(text)  # refuses an unsupported model type, naming it and the supported list
    return text, tokenizer, source


def model_class(folder: Path, config: dict | None = None):
    """The transformers auto class that loads the checkpoint in `folder`: a multimodal one
    (MULTIMODAL_MODEL_TYPES) whole, as image-text-to-text, any other as a causal LM. `config`:
    its config.json as the caller read it (check_supported_config), not read again."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    if config is None:
        config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    return AutoModelForImageTextToText if model_type in MULTIMODAL_MODEL_TYPES else AutoModelForCausalLM


# What a Hugging Face folder needs besides config.json: weights, and a tokenizer the layered
# folder's tokenizer.json is made from (a fast tokenizer's file, a SentencePiece model, or a BPE
# vocabulary).
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_source_files(folder: Path, program: str = "export", tokenizer: bool = True):
    """Refuses, naming what is missing, a folder without weights or (with `tokenizer`) tokenizer
    files, which transformers reports only after loading the rest, with a traceback (and, for a
    missing tokenizer, a misleading hint about sentencepiece); then `check_weight_files`."""
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        sys.exit(f"{program}: error: {folder} has a config.json but no weights ({', '.join(WEIGHT_PATTERNS)}): "
                 "copy the model's weight files into it")
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        sys.exit(f"{program}: error: {folder} has no tokenizer ({', '.join(TOKENIZER_FILES)}): copy the model's "
                 "tokenizer files into it")
    check_weight_files(folder, program)


def check_weight_files(folder: Path, program: str = "export"):
    """Refuses, naming the file, a sharded checkpoint whose index names a shard that is not there
    and a safetensors file whose header does not cover the file (a partial download or copy):
    transformers fails on either with a traceback, the second without naming the file. Only the
    headers are read."""
    from safetensors import safe_open

    indexes = [path for pattern in WEIGHT_PATTERNS if pattern.endswith(".index.json") for path in folder.glob(pattern)]
    for index in sorted(indexes):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            sys.exit(f"{program}: error: {index}: not a readable index of weight files (no weight_map: {error})")
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            sys.exit(f"{program}: error: {index} names weight files that are not in {folder}: {', '.join(missing)}")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
        except Exception as error:  # safetensors' own error type, or OSError
            sys.exit(f"{program}: error: {path}: not a readable safetensors file, truncated or damaged ({error})")


@contextlib.contextmanager
def reading(program: str, what):
    """Any failure of transformers to read `what` (a tokenizer.json that is not JSON, weights of
    the wrong shapes, a GGUF file of another version) exits naming it and the problem, instead of
    a traceback: its loaders raise errors of many types for bad files."""
    try:
        yield
    except Exception as error:
        raise SystemExit(f"{program}: error: cannot load {what}: {type(error).__name__}: {error}") from error


# How many of the tensors a checkpoint lacks its refusal names (then their count).
LISTED_TENSORS = 5


# What of a checkpoint a tool uses, and so needs from its files (load_pretrained's `uses`): all
# of it (prune_hf.py writes it whole, a multimodal one's vision tower included), or its language
# model and LM head (the layered export and the generator run nothing else).
USES = ("checkpoint", "language model")


def load_pretrained(model_class, source: Path, program: str, uses: str = "checkpoint", then: str | None = None,
                    **options):
    """`model_class.from_pretrained(**options)` of a Hugging Face folder or, `source` a file, a
    GGUF file; any failure to read it is named (`reading`), and so is a checkpoint whose files
    lack a tensor the model needs (`refuse_missing_tensors`): transformers only logs those and
    fills them with random values, which every check (against the model it loaded) then passes.
    `uses` (USES) says which tensors `program` needs: every one, or those of the language model
    and LM head only; `then`, where given, what `program` would do with the random values (the
    refusal's own wording is the exports' and prune_hf.py's). The one loader of a source's model
    in the exporter, the generator exporter, prune_hf.py and the tools that compare or time
    transformers against the exports (tools/tasks/crosscheck.py, tools/bench/torch_baseline.py)."""
    if uses not in USES:
        raise ValueError(f"uses {uses!r}: one of {', '.join(USES)}")
    if source.is_file():
        what, location, options = f"the GGUF file {source}", source.parent, {"gguf_file": source.name, **options}
        options.update(gguf_config_corrections(source, program))
    else:
        what, location = f"the model in {source} (its config.json and weight files)", source
    with reading(program, what):
        model, loading_info = model_class.from_pretrained(location, output_loading_info=True, **options)
    refuse_missing_tensors(model, loading_info, source, program, uses, then)
    return model


def block_ranges(indices) -> str:
    """Sorted block indices as ranges: `6–31`, `2, 5–7`."""
    ranges, indices = [], sorted(indices)
    for index in indices:
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in ranges)


def tensor_order(name: str):
    """Sorts tensor names as a model lists them: `layers.2` before `layers.10`."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split(".")]


def some_of(names, count: int = LISTED_TENSORS) -> str:
    names = sorted(names, key=tensor_order)
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return ", ".join(names[:count]) + more


def wrapper_prefix(unexpected, missing) -> str:
    """The dotted prefix (`base_model.model.`) under which every one of the `unexpected` tensor
    names lies and without which most of them name a `missing` one, or "": a wrapper's state
    dict saved as it is. Of the prefixes the names share, the one that matches most."""
    split = [name.split(".")[:-1] for name in unexpected]
    shared = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    best, matched = "", 0
    for length in range(1, len(shared) + 1):
        prefix = "".join(part + "." for part in shared[:length])
        count = sum(name[len(prefix):] in missing for name in unexpected)
        if count > matched:
            best, matched = prefix, count
    return best


def missing_tensors(loading_info: dict) -> set:
    """The tensors transformers' `loading_info` (from_pretrained's output_loading_info) says the
    model has and its files do not hold (`missing_keys`), or hold at another shape
    (`mismatched_keys`, kept only under ignore_mismatched_sizes, which these tools never pass:
    transformers refuses them itself)."""
    return set(loading_info["missing_keys"]) | {entry[0] for entry in loading_info.get("mismatched_keys", ())}


def outside_language_model(model, names) -> set:
    """Of `names`, tensors of `model`, those outside its language model and LM head
    (LanguageModel.parts), which the exports never run: a multimodal checkpoint's vision tower
    and projector. None of a model that is only a language model."""
    if model.config.model_type not in MULTIMODAL_MODEL_TYPES:
        return set()
    parts = LanguageModel.parts(model)
    prefixes = tuple(f"{name}." for name, module in model.named_modules() if any(module is p for p in parts))
    return {name for name in names if not name.startswith(prefixes)}


def tensor_count(names) -> str:
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''}"


def refuse_missing_tensors(model, loading_info: dict, source: Path, program: str, uses: str = "checkpoint",
                           then: str | None = None) -> None:
    """Exits, naming `source`, when transformers' `loading_info` lists a tensor of the model its
    files do not hold (`missing_tensors`) that `program` uses: with `uses` "checkpoint" any
    (prune_hf.py writes the checkpoint whole), with "language model" those of the language
    model and LM head (the exports); the others, a multimodal checkpoint's vision tower, are
    named in a note on stderr, and in the refusal where there is one. What transformers does
    not need from the files is already left out of `missing_keys`: a tied LM head whose
    embedding is there, non-persistent buffers (rotary `inv_freq`), a class's
    `_keys_to_ignore_on_load_missing`. The message lists a few of the missing tensors, says
    what would become of the random values transformers puts in their place, then what their
    pattern suggests: tensors under a prefix (a wrapper's or adapter's state dict saved as it
    is), whole blocks (a config with more blocks than the files: no num_hidden_layers in
    config.json, whose transformers default is 32), an LM head neither in the files nor tied
    to the embedding. `then` replaces the sentence on what would become of the random values."""
    missing = missing_tensors(loading_info)
    unused = outside_language_model(model, missing) if uses == "language model" else set()
    missing -= unused
    gguf = source.is_file()
    # The subject of the sentences, and its verbs: the GGUF file, or a folder's weight files.
    files, lack, hold = ("the file", "lacks", "holds") if gguf else ("its weight files", "lack", "hold")
    # Tensors the exports do not run: transformers' random values for them are never used.
    unused_tensors = (f"{tensor_count(unused)} outside the language model and its head, which {program} does not "
                      f"use ({some_of(unused)})")
    if not missing:
        if unused:
            print(f"{program}: note: {source}: {files} {lack} {unused_tensors}: "
                  f"{'exported' if then is None else 'loaded'} without them",
                  file=sys.stderr)
        return
    unexpected = set(loading_info.get("unexpected_keys", ()))
    if uses == "checkpoint":
        what_then = (f"{program} would write those random values into the checkpoint it writes (it writes the "
                     "checkpoint whole), and its reload check would compare with that same random model")
        if outside_language_model(model, missing) == missing:
            what_then += " (the layered export, which uses only the language model and its head, needs none of them)"
    else:
        what_then = f"every check of {program} would compare with that same random model"
    if then is not None:
        what_then = then
    lines = [f"{program}: error: {source}: {files} {lack} {tensor_count(missing)} the model "
             f"({type(model).__name__}) needs: {some_of(missing)}. transformers fills a missing tensor with random "
             f"values and only logs it, and {what_then}"]
    if unused:
        lines.append(f"{files.capitalize()} also {lack} {unused_tensors}")
    prefix = wrapper_prefix(unexpected, missing)
    if prefix:
        lines.append(f"{files.capitalize()} {hold} {len(unexpected)} tensors the model has no place for, "
                     f"all named under {prefix!r}, which without it name the missing ones (e.g. "
                     f"{sorted(unexpected, key=tensor_order)[0]}): a wrapper's or adapter's state dict saved as it "
                     "is (PEFT's, e.g.). Save the model itself (an adapter merged in first: merge_and_unload(), "
                     f"then save_pretrained), or the tensors renamed without {prefix!r}")
    elif unexpected:
        lines.append(f"{files.capitalize()} also {hold} {len(unexpected)} tensors the model has no place "
                     f"for ({some_of(unexpected)}): tensors named otherwise than {type(model).__name__} names them?")
    # Whole blocks missing while others loaded: the config makes more blocks than the files hold.
    blocks: dict = {}
    for name in model.state_dict():
        match = re.match(r"(.*\.(?:layers|h)\.)(\d+)\.", name)
        if match:
            blocks.setdefault(match.group(1), {}).setdefault(int(match.group(2)), []).append(name)
    for prefix, tensors in blocks.items():
        empty = [index for index, names in tensors.items() if all(name in missing for name in names)]
        if empty and len(empty) < len(tensors):
            asked = ("the file's block_count" if gguf else
                     "config.json's num_hidden_layers, or transformers' default for it where config.json names none")
            lines.append(f"{prefix}{block_ranges(empty)} have no tensor at all in {files}: the config makes "
                         f"{len(tensors)} blocks ({asked}), {files} {hold} {len(tensors) - len(empty)}")
    try:
        head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        head = embedding = None
    names = {id(parameter): name for name, parameter in model.named_parameters(remove_duplicate=False)}
    head_name = names.get(id(getattr(head, "weight", None)))
    embedding_name = names.get(id(getattr(embedding, "weight", None)))
    if head_name in missing and embedding_name not in missing:
        lines.append(f"{files.capitalize()} {hold} no LM head ({head_name}), and the config does not tie it "
                     "to the embedding (tie_word_embeddings false): a tied checkpoint whose config was changed?")
    raise SystemExit(". ".join(lines) + ("" if lines[-1].endswith("?") else "."))


def check_source_exists(args, program: str = "export"):
    """Refuses, naming it, a --gguf that is no file or a --model folder without config.json: the
    first check, so that a wrong source is named as such before the output is checked against it."""
    if args.gguf:
        refuse_no_gguf_file(Path(args.gguf), program)
    elif not (Path(args.model) / "config.json").is_file():
        sys.exit(f"{program}: error: {args.model} is not a Hugging Face model folder (no config.json)")


def refuse_no_gguf_file(path: Path, program: str) -> None:
    """Refuses, naming it, a GGUF path that is a folder, does not exist, is no regular file or
    cannot be read (permissions): each in its own words, not as a damaged GGUF file."""
    if path.is_dir():  # was "does not exist", of a folder named *.gguf
        sys.exit(f"{program}: error: {path} is a folder, not a GGUF file (a Hugging Face model folder "
                 "is given as --model)")
    if not path.exists():
        sys.exit(f"{program}: error: GGUF file {path} does not exist")
    if not path.is_file():
        sys.exit(f"{program}: error: {path} is not a regular file, so not a GGUF file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        sys.exit(f"{program}: error: cannot read the GGUF file {path}: {error.strerror or error}")


# RoPE-scaling keys (under `<arch>.rope.scaling.`) and values that leave the rotary embedding as
# llama.cpp runs it unscaled, so transformers' GGUF loader reading none of them loses nothing
# (`non_neutral_rope_scaling`). llama.cpp's frequency scale is 1 / factor, and 1 where the factor
# is absent or 0 ("unset": src/llama-model.cpp) or the type is `none` ("never scale if scaling
# type is none": src/llama-context.cpp), whatever the factor; YaRN's extrapolation mix and
# magnitude correction are the identity at a scale of 1. Its attention factor multiplies the
# attention whatever the type.
NEUTRAL_ROPE_SCALING_FACTORS = {None, 0.0, 1.0}
NEUTRAL_ROPE_ATTN_FACTOR = 1.0
NEUTRAL_ROPE_SCALING_KEYS = {"finetuned", "original_context_length"}


def non_neutral_rope_scaling(reader) -> list:
    """The `<arch>.rope.scaling.*` fields of a GGUF file that scale its RoPE as llama.cpp runs it,
    as "key = value" in the file's order (gpt-oss's, which transformers reads, left out): the type
    and factor where the type is not `none` and the factor is not 0 or 1 (or absent); an
    attn_factor other than 1; any key but the informational NEUTRAL_ROPE_SCALING_KEYS; the older
    `<arch>.rope.scale_linear` where its factor is not 0 or 1."""
    fields = {}
    for key in reader.fields:
        prefix, found, suffix = key.partition(".rope.scaling.")
        if found and prefix != "gpt-oss":
            fields[key] = (prefix, suffix, gguf_field(reader, key))
    scales = {}
    for prefix in {prefix for prefix, _, _ in fields.values()}:
        kind = gguf_field(reader, f"{prefix}.rope.scaling.type")
        factor = gguf_field(reader, f"{prefix}.rope.scaling.factor")
        scales[prefix] = kind != "none" and factor not in NEUTRAL_ROPE_SCALING_FACTORS
    listed = []
    # The older key of a linear scale, which llama.cpp still reads (LLM_KV_ROPE_SCALE_LINEAR):
    # its factor, neutral as the newer one's.
    for key in reader.fields:
        if key.endswith(".rope.scale_linear") and gguf_field(reader, key) not in NEUTRAL_ROPE_SCALING_FACTORS:
            listed.append(f"{key} = {gguf_field(reader, key)!r}")
    for key, (prefix, suffix, value) in fields.items():
        if suffix in NEUTRAL_ROPE_SCALING_KEYS:
            continue
        neutral = (not scales[prefix] if suffix in ("type", "factor")
                   else value == NEUTRAL_ROPE_ATTN_FACTOR if suffix == "attn_factor" else False)
        if not neutral:
            listed.append(f"{key} = {value!r}")
    return listed


def gguf_architectures() -> list:
    """The `general.architecture`s a GGUF file may name for the exporter: those transformers'
    GGUF loader reads (GGUF_SUPPORTED_ARCHITECTURES) whose tensor names gguf-py knows and whose
    model type the exporter supports. Computed, so it follows the installed transformers."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(arch for arch in GGUF_SUPPORTED_ARCHITECTURES
                  if arch in gguf.MODEL_ARCH_NAMES.values()
                  and gguf_model_type(arch) in SUPPORTED_MODEL_TYPES)


# The number of blocks by which llama.cpp tells a Gemma 2 or Gemma 3 27B (src/llama-model.cpp: its
# LLM_TYPE_27B), whose attention scales queries by 1/sqrt(hidden size / heads), not by
# 1/sqrt(head size) as every other size (where the two differ, the 27B's alone do).
GEMMA_27B_BLOCKS = {"gemma2": 46, "gemma3_text": 62}


# llama.cpp's local (sliding-window) and global attention blocks of Gemma 2 and 3: by default by
# position, one global block every 2 and 6 (load_swa_pattern(ml, 2) and (ml, 6) in its
# src/models/gemma2.cpp, gemma3.cpp), which the file's `<arch>.attention.sliding_window_pattern`
# replaces, a period or one bool a block (true: local), in llama.cpp builds that read the key
# (b11434 does: llama_model_base::load_swa_pattern). transformers' GGUF loader reads no such key:
# its default pattern is the same by position, so only a file holding the key needs a correction
# (a pruned one, prune_gguf.py, whose kept blocks keep their own types).
GGUF_SWA_PERIODS = {"gemma2": 2, "gemma3_text": 6}


def gguf_swa_pattern(gguf: Path):
    """The GGUF file's `<arch>.attention.sliding_window_pattern` (a period, a list of bools), or None."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    return gguf_field(reader, f"{gguf_field(reader, 'general.architecture')}.attention.sliding_window_pattern")


def gguf_layer_types(pattern, num_blocks: int, default_period: int) -> list:
    """Each block's attention type as llama.cpp sets it from a sliding_window_pattern (None:
    absent, the architecture's `default_period`): a list says it block by block; a period n makes
    block i local unless i % n == n - 1 (llama_hparams::set_swa_pattern; n = 0: every block local)."""
    if isinstance(pattern, list):
        return ["sliding_attention" if flag else "full_attention" for flag in pattern]
    period = default_period if pattern is None else int(pattern)
    return ["sliding_attention" if period == 0 or i % period < period - 1 else "full_attention"
            for i in range(num_blocks)]


def gguf_config_corrections(gguf: Path, program: str) -> dict:
    """Config values transformers' GGUF loader gets wrong, as `from_pretrained` overrides, so that
    the model loaded is the file's as llama.cpp runs it. Gemma 2 and 3: the loader reads no
    query_pre_attn_scalar (the attention's scale) and leaves its default, 256, where the file's
    is its head size (key_length) or, for the 27B, hidden size / heads: a tiny model's (head size
    16) or a 27B's (144, 168) attention was scaled otherwise than the model was trained. Said on
    stderr where it corrects one. And their blocks' local/global pattern where the file states
    it (GGUF_SWA_PERIODS), as `layer_types`."""
    from transformers import AutoConfig

    with reading(program, f"the GGUF file {gguf}"):
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    corrections = {}
    period = GGUF_SWA_PERIODS.get(config.model_type)
    pattern = gguf_swa_pattern(gguf) if period is not None else None
    if pattern is not None:
        if isinstance(pattern, list) and len(pattern) != config.num_hidden_layers:
            raise SystemExit(f"{program}: error: {gguf}: its attention.sliding_window_pattern has {len(pattern)} "
                             f"entries for {config.num_hidden_layers} blocks (block_count)")
        layer_types = gguf_layer_types(pattern, config.num_hidden_layers, period)
        if layer_types != list(config.layer_types):
            corrections["layer_types"] = layer_types
    blocks_27b = GEMMA_27B_BLOCKS.get(config.model_type)
    if blocks_27b is None:
        return corrections
    if config.num_hidden_layers == blocks_27b:
        scalar = config.hidden_size // config.num_attention_heads
    else:
        scalar = config.head_dim
    if scalar == config.query_pre_attn_scalar:
        return corrections
    print(f"{program}: note: {gguf}: query_pre_attn_scalar {scalar} (queries scaled by 1/sqrt({scalar}), as "
          f"llama.cpp runs the file), where transformers' GGUF loader leaves its default "
          f"{config.query_pre_attn_scalar}", file=sys.stderr)
    return {**corrections, "query_pre_attn_scalar": scalar}


def gguf_field(reader, key: str):
    """A GGUF metadata value as Python (a string, a number, a list of them), or None if absent."""
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def check_gguf_header(path: Path, program: str) -> None:
    """Refuses, from the GGUF file's header alone (before transformers reads it), naming the file:
    a path that is no readable file (refuse_no_gguf_file); a file that is no readable GGUF
    (truncated or damaged); a `general.architecture` transformers'
    GGUF loader cannot make a model of the exporter's from (naming those it can); and RoPE scaling
    (`rope_freqs`/`rope_factors_*` tensors, non-neutral `*.rope.scaling.*` keys) that the loader
    does not read (its config mapping has no rope-scaling key but gpt-oss's, its tensor map none
    of those tensors), which it would drop: every check would pass against the model transformers
    loaded, plain RoPE, another model than the file's."""
    from gguf import GGUFReader

    # crosscheck and torch_baseline come here without check_source_exists.
    refuse_no_gguf_file(path, program)
    try:
        reader = GGUFReader(str(path))
    except Exception as error:  # numpy's and gguf-py's own errors of a short or foreign file: gguf-py
        # maps every tensor's extent when it opens the file, so a short one fails here.
        # In the words of `reading`, which named this failure before without saying what it meant.
        sys.exit(f"{program}: error: cannot load the GGUF file {path}: not a readable GGUF file, truncated or "
                 f"damaged ({type(error).__name__}: {error}; the file has {path.stat().st_size} bytes)")
    architecture = gguf_field(reader, "general.architecture")
    name = gguf_field(reader, "general.name")
    supported = ", ".join(gguf_architectures())
    instead = "export the model from its Hugging Face checkpoint instead (--model)"
    if architecture == "llama" and name == "mistral":
        # transformers reads such a file as a "mistral" model, whose tensors gguf-py cannot name.
        sys.exit(f"{program}: error: {path}: a llama GGUF file whose general.name is exactly 'mistral' is read "
                 "by transformers' GGUF loader as a 'mistral' model, an architecture gguf-py has no tensor names "
                 "for, and cannot be loaded; give the file another general.name (gguf-py's gguf_new_metadata.py "
                 f"--general-name), which loads it as llama, or {instead}")
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # One transformers loads but the exporter does not support is refused by its model type, after.
    if architecture not in gguf_architectures() \
            and TRANSFORMERS_GGUF_RENAMES.get(architecture, architecture) not in GGUF_SUPPORTED_ARCHITECTURES:
        sys.exit(f"{program}: error: {path}: GGUF architecture {architecture!r} (general.architecture) cannot be "
                 f"loaded by transformers' GGUF loader, which the exporter uses; GGUF architectures it can export: "
                 f"{supported}; {instead}, if the exporter supports the model (README)")
    scaling = non_neutral_rope_scaling(reader)
    scaling += [f"tensor {tensor.name}" for tensor in reader.tensors
                if re.match(r"(blk\.\d+\.)?rope_(freqs|factors_long|factors_short)\b", tensor.name)]
    if scaling:
        sys.exit(f"{program}: error: {path}: the file's RoPE scaling ({', '.join(scaling)}) is not read by "
                 "transformers' GGUF loader, which the exporter uses: it would drop it and export and prune "
                 "another model, with unscaled RoPE, that every check (against transformers' load) passes; "
                 f"{instead}, where llama3, yarn and linear scaling are exported and longrope and dynamic "
                 "refused by name (docs/your-model.md)")


def load_checkpoint(args, graphs_for: str | None = None, program: str = "export", config: dict | None = None):
    """The checkpoint as transformers loads it (a multimodal one whole), in `args.dtype`. With
    `graphs_for` (the program, named in the message), a rotary embedding the traced graphs cannot
    hold is refused first, before the weights are loaded (`refuse_length_dependent_rope`), and
    only the tensors of the language model and its head, of which the graphs are made, must be
    in the files (load_pretrained's `uses`); prune_hf.py, which writes the whole checkpoint with
    any rotary, passes none, and needs every tensor. `program` names the tool in the errors of a
    source that cannot be read. `config`: a folder's config.json as the caller already read and
    checked it (check_supported_config), not read again."""
    from transformers import AutoTokenizer

    program = graphs_for or program
    uses = "language model" if graphs_for else "checkpoint"
    check_source_exists(args, program)
    dtype = "auto" if args.dtype == "auto" else DTYPES[args.dtype]
    if args.gguf:
        gguf = Path(args.gguf)
        if dtype == "auto":
            dtype = torch.float32  # transformers dequantizes GGUF to float32
        from transformers import AutoConfig, AutoModelForCausalLM

        check_gguf_header(gguf, program)
        # The config and tokenizer from the file's metadata alone, before its tensors are dequantized.
        with reading(program, f"the GGUF file {gguf}"):
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedArchitecture(unsupported_message(config.model_type, source=gguf) + " (from a GGUF "
                                          f"file, general.architecture: {', '.join(gguf_architectures())})")
        if graphs_for:
            refuse_length_dependent_rope(config, gguf, graphs_for)
        with reading(program, f"the GGUF file {gguf}"):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = load_pretrained(AutoModelForCausalLM, gguf, program, uses, dtype=dtype)
        source = {"kind": "gguf", "path": str(gguf), "sha256": sha256_file(gguf)}
    else:
        folder = Path(args.model)
        if config is None:
            config = check_supported_config(folder, program)
        if graphs_for:  # from the config alone, the first of the model's problems named
            from transformers import AutoConfig

            with reading(program, f"the config {folder / 'config.json'}"):
                loaded_config = AutoConfig.from_pretrained(folder)
            refuse_length_dependent_rope(loaded_config, folder / "config.json", graphs_for)
        check_source_files(folder, program)
        model = load_pretrained(model_class(folder, config), folder, program, uses, dtype=dtype)
        tokenizer_files = ", ".join(sorted(p.name for p in folder.glob("*token*") if p.is_file()))
        with reading(program, f"the tokenizer in {folder} ({tokenizer_files})"):
            tokenizer = AutoTokenizer.from_pretrained(folder)
        source = {"kind": "huggingface", "path": str(folder)}
    model.config._attn_implementation = "eager"
    model.eval()
    return model, tokenizer, source


def export(model, tokenizer, source, out_dir: Path, dtype_name: str, opset: int, exporter: str,
           fixed_seq_len=None, attention_precision: str | None = None, attention_kernel: str = "auto",
           allow_known_failures: bool = False, qkv_projection: str = "separate"):
    """`fixed_seq_len`: for FIXED_LENGTH_MODEL_TYPES, the one sequence length the block graphs
    run (their scan is unrolled for it); the embedding and head graphs stay dynamic.
    `attention_precision`: for fp16 / bf16 standard attention, "float32" computes attention in
    float32 (FLOAT32_ATTENTION), "model" in the dtype as transformers' eager code does; None (not
    given) is "float32", and leaves "auto" free to pick fused.
    `attention_kernel`: "standard", "fused" (ATTENTION_KERNELS) or "auto", which picks one as
    `resolve_attention_kernel` says and prints which and why; the manifest has the one picked.
    `allow_known_failures`: write fused attention also where FUSED_KNOWN_FAILURES says ONNX
    Runtime's CUDA provider failed on it, which is otherwise refused: for diagnostics only
    (tools/bench/gpu_families.py measures those exports again); not a command-line flag.
    `qkv_projection`: "separate" or "packed" (QKV_PROJECTIONS; `pack_qkv_projections`), which
    needs fused attention and blocks whose projections it can pack (refused otherwise)."""
    if qkv_projection not in QKV_PROJECTIONS:
        raise ValueError(f"qkv_projection {qkv_projection!r}: one of {', '.join(QKV_PROJECTIONS)}")
    config = model.config
    # Before any graph is written: an explicit kernel's refusals, auto's choice.
    attention_kernel, why = resolve_attention_kernel(model, dtype_name, exporter, attention_kernel,
                                                     attention_precision)
    fused = fused_attention_applies(config, exporter, attention_kernel, dtype_name, allow_known_failures)
    if why is not None:
        print(f"attention: {why}")
    if qkv_projection == "packed" and not fused:
        raise UnsupportedArchitecture("error: --qkv-projection packed packs the projections into a fused block's "
                                      f"GroupQueryAttention node; the blocks' attention here is standard: "
                                      f"{packing_advice(model, dtype_name, exporter, attention_precision)}")
    # Only where there is standard attention in a reduced precision; fp32 graphs are unchanged.
    float32_attention_blocks = (not fused and float32_attention_applies(config, dtype_name,
                                                                         attention_precision or "float32"))
    hidden = config.hidden_size
    dtype = DTYPES[dtype_name]
    example_ids = torch.randint(0, config.vocab_size, (2, 8))
    example_hidden = torch.randn(2, 8, hidden, dtype=dtype)
    hidden_axes = {0: "batch", 1: "seq"}
    block_hidden, block_axes = example_hidden, hidden_axes
    if config.model_type in FIXED_LENGTH_MODEL_TYPES:
        block_hidden, block_axes = torch.randn(2, fixed_seq_len, hidden, dtype=dtype), {0: "batch"}
    written: dict = {}
    parts = {}

    def save(name, graph):
        widen_for_cuda_bf16(graph)
        externalize(graph, out_dir, written)
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(graph, out_dir / name)
        parts[name] = graph

    save("embed.onnx", export_graph(Embedding(model), (example_ids,), ["input_ids"], ["hidden_states"],
                                    {"input_ids": hidden_axes, "hidden_states": hidden_axes}, opset, exporter))
    arch = Architecture(model)
    blocks = []
    for index in range(config.num_hidden_layers):
        name = f"block_{index:03d}.onnx"
        block = Block(model, index)
        implementation = FUSED_ATTENTION if fused else FLOAT32_ATTENTION if float32_attention_blocks else None
        with attention_implementation(config, implementation), \
                (fused_attention_for(block, dtype) if fused else contextlib.nullcontext()):
            graph = export_graph(block, (block_hidden,), ["hidden_states"], ["output"],
                                 {"hidden_states": block_axes, "output": block_axes}, opset, exporter)
        if qkv_projection == "packed" and not pack_qkv_projections(graph):
            raise UnsupportedArchitecture(
                f"error: --qkv-projection packed: block {index}'s query, key and value are not three products of "
                f"one input by stored weights followed by reshapes ({config.model_type}: q / k normalised, a packed "
                f"product sliced, or a partial rotary's split after the products?); "
                "export with --qkv-projection separate")
        save(name, graph)
        blocks.append({"index": index, "original_index": index, "file": name})
    save("head.onnx", export_graph(Head(model, nll=True), (example_hidden, example_ids),
                                   ["hidden_states", "target_ids"], ["nll"],
                                   {"hidden_states": hidden_axes, "target_ids": hidden_axes, "nll": hidden_axes},
                                   opset, exporter, fold=False))
    save("head_logits.onnx", export_graph(Head(model, nll=False), (example_hidden,), ["hidden_states"],
                                          ["logits"], {"hidden_states": hidden_axes, "logits": hidden_axes},
                                          opset, exporter, fold=False))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        tokenizer_json = Path(tmp) / "tokenizer.json"
        if not tokenizer_json.is_file():
            sys.exit("export: error: the tokenizer has no fast (tokenizer.json) form")
        shutil.copy(tokenizer_json, out_dir / "tokenizer.json")

    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    extra = {}
    if context_length(config) is not None:
        extra["context_length"] = context_length(config)
    if config.model_type in FIXED_LENGTH_MODEL_TYPES:
        # Block graphs accept [batch, fixed_seq_len, hidden] only (ONNX Runtime refuses others).
        extra["fixed_seq_len"] = fixed_seq_len
    if fused:
        # Informational: the graphs hold it (and only ONNX Runtime runs them, windows of at most
        # rotary_positions tokens).
        extra["attention_kernel"] = "fused"
        extra["rotary_positions"] = rotary_positions(config)
        if qkv_projection == "packed":
            extra["qkv_projection"] = "packed"
    elif dtype_name != "fp32" and config.model_type not in FIXED_LENGTH_MODEL_TYPES:
        # Where the blocks' attention is computed (informational: the graphs hold it).
        extra["attention_precision"] = "float32" if float32_attention_blocks else DTYPE_NAMES[dtype_name]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.model_type,
        "num_blocks": config.num_hidden_layers,
        "hidden_size": hidden,
        "intermediate_size": intermediate_size(config),
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_key_value_heads": getattr(config, "num_key_value_heads", getattr(config, "num_attention_heads", None)),
        "vocab_size": config.vocab_size,
        # What the loaded model does, not what its config asks: transformers declines to tie a
        # head the file holds with other values than the embedding.
        "tie_word_embeddings": Architecture(model).lm_head.weight is Embedding(model).embed_tokens.weight,
        "dtype": DTYPE_NAMES[dtype_name],
        "opset": opset,
        "source": source,
        "embedding": {"file": "embed.onnx", "input": "input_ids", "output": "hidden_states"},
        "blocks": blocks,
        "head": {"file": "head.onnx", "inputs": ["hidden_states", "target_ids"], "output": "nll"},
        "head_logits": {"file": "head_logits.onnx", "input": "hidden_states", "output": "logits"},
        "tokenizer": "tokenizer.json",
        # Per ORIGINAL block index (a pruned folder keeps this list whole): the attention each
        # block's graph applies. Informational: the graphs hold it.
        "attention": [dict(zip(("type", "window"), arch.block_attention(i))) for i in range(config.num_hidden_layers)]
        if config.model_type not in FIXED_LENGTH_MODEL_TYPES else None,
        "exporter": {"tool": "tools/export/export_layered.py", "exporter": exporter,
                     "torch": torch.__version__, "onnx": onnx.__version__,
                     "transformers": __import__("transformers").__version__},
        "files": {name: sha256_file(out_dir / name) for name in files},
        **extra,
    }
    if manifest["attention"] is None:
        del manifest["attention"]
    return manifest


def per_layer_lists(config) -> dict:
    """The config's per-block lists (`layer_types`, ...): every list of num_hidden_layers
    entries but NOT_PER_LAYER_KEYS and the token ids."""
    num_blocks = config.num_hidden_layers
    return {key: value for key, value in config.to_dict().items()
            if isinstance(value, list) and len(value) == num_blocks and key not in NOT_PER_LAYER_KEYS
            and not key.endswith("_token_id")}


def intermediate_size(config):
    """The width of a block's inner projection (the MLP's, a Mamba mixer's expanded state)."""
    size = getattr(config, "intermediate_size", None)
    if size is None and config.model_type == "gpt2":
        size = config.n_inner or 4 * config.hidden_size
    if size is None and config.model_type == "mamba2":  # its config has no intermediate_size
        size = int(config.expand * config.hidden_size)
    return size


def load_graph(path: Path, program: str = "export") -> onnx.ModelProto:
    """An ONNX graph with its external data read in. Read here rather than by onnx.load, which
    refuses a data file with several hard links, as the weights of a folder that apply-prune or
    quantize wrote with --hard-link-source-files (by default before 2026-12-07) have, and those of
    its source folder; a location outside the graph's folder is refused."""
    model = onnx.load(path, load_external_data=False)
    folder = path.parent.resolve()
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = (folder / info["location"]).resolve()
        if folder not in location.parents:
            raise SystemExit(f"{program}: error: {path}: external data {info['location']} leaves the folder")
        with open(location, "rb") as handle:
            handle.seek(int(info.get("offset", 0)))
            raw = handle.read(int(info["length"])) if "length" in info else handle.read()
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = raw
    return model


def graph_runner(kind: str):
    """A function (graph path, feeds) → the graph's first output: kind "ort" (ONNX Runtime's CPU
    provider) or "reference" (onnx.reference, NumPy: for bfloat16 graphs, which ORT's CPU provider
    cannot run, having no bfloat16 kernel for Trilu, MatMul, ...)."""
    if kind == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3

        def run(path, feeds):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return session.run(None, feeds)[0]
        return run
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        # onnx.reference's own fails on a negative axis and on more than 64 classes.
        def _run(self, data, indices, axis=None):
            return (np.take_along_axis(data, indices.astype(np.int64), axis=axis),)

    class GroupQueryAttention(OpRun):  # onnx.reference finds an operator by its class name
        # A fused block's attention (--attention-kernel fused), which onnx.reference lacks.
        op_domain = "com.microsoft"

        def _run(self, query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache,
                 sin_cache, num_heads=None, kv_num_heads=None, do_rotary=None, scale=None,
                 local_window_size=None, softcap=None, rotary_interleaved=None, **unused):
            window = local_window_size if local_window_size is not None and local_window_size > 0 else 0
            if key is None:  # packed (--qkv-projection packed): the query's columns, then the key's, the value's
                kv_width = query.shape[-1] * kv_num_heads // (num_heads + 2 * kv_num_heads)
                query, key, value = np.split(query, [query.shape[-1] - 2 * kv_width,
                                                     query.shape[-1] - kv_width], axis=-1)
            output = group_query_attention(query, key, value, cos_cache, sin_cache, num_heads, kv_num_heads,
                                           scale, window, softcap or 0.0, bool(rotary_interleaved))
            unused_cache = np.zeros((0,), dtype=query.dtype)  # present_key / present_value: not read
            return output.astype(query.dtype), unused_cache, unused_cache

    def run(path, feeds):
        evaluator = ReferenceEvaluator(load_graph(Path(path)), new_ops=[GatherElements, GroupQueryAttention])
        return evaluator.run(None, feeds)[0]
    return run


def default_runner(manifest: dict) -> str:
    """The runner a folder's graphs are checked with: onnx.reference for bfloat16 (ORT's CPU
    provider has no bfloat16 kernels), ONNX Runtime otherwise."""
    return "reference" if manifest["dtype"] == "bfloat16" else "ort"


def run_chain(out_dir: Path, manifest: dict, input_ids: np.ndarray, drop=(), runner=None):
    """Chained graphs: (logits, nll of next tokens). `runner`: "ort" or "reference"
    (`graph_runner`); default `default_runner(manifest)`."""
    run_graph = graph_runner(runner or default_runner(manifest))

    def run(name, feeds):
        return run_graph(out_dir / name, feeds)

    hidden = run(manifest["embedding"]["file"], {"input_ids": input_ids})
    for block in manifest["blocks"]:
        if block["index"] in drop:
            continue
        hidden = run(block["file"], {"hidden_states": hidden})
    logits = run(manifest["head_logits"]["file"], {"hidden_states": hidden})
    targets = np.concatenate([input_ids[:, 1:], input_ids[:, :1]], axis=1)
    nll = run(manifest["head"]["file"], {"hidden_states": hidden, "target_ids": targets})
    return np.asarray(logits, dtype=np.float32), np.asarray(nll, dtype=np.float32)[:, :-1]


def reference(model, input_ids: np.ndarray, drop=()):
    """transformers' logits and next-token NLL, with the blocks in `drop` deleted from the layer
    list, and every per-layer config list (`layer_types`) cut the same way, so each kept block
    keeps the attention type of its original index (what prune_hf writes)."""
    arch = Architecture(model)
    config = model.config
    layers = arch.layers
    num_blocks = config.num_hidden_layers
    kept_indices = [i for i in range(num_blocks) if i not in drop]
    saved = per_layer_lists(config)
    arch.set_layers(nn.ModuleList([layers[i] for i in kept_indices]))
    config.num_hidden_layers = len(kept_indices)
    for key, value in saved.items():
        setattr(config, key, [value[i] for i in kept_indices])
    try:
        with torch.no_grad():
            ids = torch.from_numpy(input_ids)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -torch.gather(log_probs, -1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    finally:
        arch.set_layers(layers)
        config.num_hidden_layers = num_blocks
        for key, value in saved.items():
            setattr(config, key, value)
    return logits.numpy(), nll.numpy()


@contextlib.contextmanager
def computing_in_float32(model):
    """`model` computing in float32 on its own weights, put back exactly afterwards: float32 holds
    every fp16 and bf16 value, so the round trip is lossless; tensors kept in another dtype than
    the model's (float32 rotary buffers of a bf16 model) are put back as they were."""
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if dtype == torch.float32:
        yield model
        return
    kept_params = [(p, p.data) for p in model.parameters() if p.is_floating_point() and p.dtype != dtype]
    kept_buffers = [(module, name, buffer) for module in model.modules() for name, buffer in module._buffers.items()
                    if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype]
    model.to(torch.float32)
    try:
        yield model
    finally:
        model.to(dtype)
        for parameter, data in kept_params:
            parameter.data = data
        for module, name, buffer in kept_buffers:
            module._buffers[name] = buffer


def activation_peak(model, sequences) -> float:
    """The largest |value| of `activation_peak_at`."""
    return activation_peak_at(model, sequences)[0]


def activation_peak_at(model, sequences) -> tuple:
    """(the largest |value|, the module that output it): over the token embedding, every block's
    output and every linear layer inside one, the final norm and the head (the logits), on
    `sequences` (lists of token ids), computed in float32: what a float16 graph has to hold. A
    NaN or inf is the largest (`math.inf`): Python's max(x, nan) would drop it."""
    peak, where = 0.0, None
    names = {module: name for name, module in model.named_modules()}

    def record(module, inputs, output):
        nonlocal peak, where
        value = output[0] if isinstance(output, tuple) else output
        if torch.is_tensor(value) and value.is_floating_point():
            largest = float(value.detach().abs().max())
            largest = largest if math.isfinite(largest) else math.inf
            if where is None or largest > peak:
                peak, where = largest, names.get(module, type(module).__name__)

    arch = Architecture(model)
    watched = [m for layer in arch.layers for m in layer.modules() if m is layer or isinstance(m, nn.Linear)]
    watched += [model.get_input_embeddings(), arch.norm, arch.lm_head]
    handles = [m.register_forward_hook(record) for m in watched]
    try:
        with computing_in_float32(model), torch.no_grad():
            for ids in sequences:
                model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return peak, where


def weights_beyond_float16(model) -> list:
    """(name, largest |value|) of the float16 parameters and buffers of the language model and its
    head (the model loaded in float16, as the fp16 graphs hold them) that hold a value float16
    cannot: the cast overflowed to inf, or the file held inf or NaN. Only those: a multimodal
    checkpoint's vision tower is in no graph, and tensors transformers keeps in float32
    (`_keep_in_fp32_modules`, rotary inv_freq) stay float32 in the graphs, not float16's to hold."""
    found = []
    text = language_model(model)
    for name, tensor in itertools.chain(text.named_parameters(), text.named_buffers()):
        if tensor.dtype == torch.float16 and tensor.numel():
            largest = float(tensor.detach().abs().max())
            if not largest <= FLOAT16_MAX:  # NaN too
                found.append((name, largest))
    return found


def block_of(module_name: str | None) -> str:
    """`module_name` as a reader finds it: "block 3 (model.layers.3.mlp.down_proj)" for a module
    inside a block, the name alone otherwise."""
    if module_name is None:
        return "no module"
    match = re.search(r"\.(?:layers|h)\.(\d+)(?:\.|$)", module_name)
    return f"block {match.group(1)} ({module_name})" if match else module_name


def at_least(minimum: int):
    """An argparse type: an integer of at least `minimum`; argparse names the flag when refused."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}, the least it can be")
        return value
    return parse


def non_negative_number(text: str) -> float:
    """An argparse type: a finite number, 0 or more. A NaN tolerance or margin would pass every
    comparison with it (nothing exceeds NaN): a check that could never fail."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of 0 or more")
    return value


# The largest logit a check can scale its tolerance by: the references are float32 (or float16 /
# bfloat16, whose largest values are smaller).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def float16_margin(text: str) -> float:
    """An argparse type for --fp16-margin: a non_negative_number whose limit, 65504 / margin, is
    finite (0: no range check). An inf limit is a check that cannot fail, and a manifest that
    strict JSON cannot hold, found only after the whole export."""
    value = non_negative_number(text)
    if value > 0 and not math.isfinite(FLOAT16_MAX / value):
        raise argparse.ArgumentTypeError(f"{text} is so small that the limit {FLOAT16_MAX:.0f} / it is not "
                                         "finite (0 turns the range check off)")
    return value


def tolerance_number(text: str) -> float:
    """An argparse type for --tolerance: a non_negative_number that stays finite once scaled by
    max(1, |largest logit| / 10) for any finite float32 logit. An inf tolerance is a check that
    cannot fail, and a manifest that strict JSON cannot hold, found only after the whole export."""
    value = non_negative_number(text)
    if not math.isfinite(value * (FLOAT32_MAX / 10.0)):
        raise argparse.ArgumentTypeError(f"{text} is so large that, scaled by the largest logit / 10 (up to "
                                         f"float32's largest, {FLOAT32_MAX:.3e}), it is not finite")
    return value


def add_fp16_margin_argument(parser) -> None:
    """`--fp16-margin`, the same for both exporters."""
    parser.add_argument("--fp16-margin", type=float16_margin, default=DEFAULT_FLOAT16_MARGIN,
                        help="fp16 only: refuse a model whose float32 activations on an English paragraph and "
                             "random tokens come within this factor of float16's largest value, 65504 "
                             "(0: no range check)")


def float16_range_check(model, tokenizer, margin: float, seed: int, program: str = "export") -> dict:
    """Refuses a float16 export of a model that holds a weight float16 cannot (beyond 65504: inf
    once cast), or whose activations, in float32 on RANGE_TEXT and on random tokens, come within
    `margin` of float16's largest value or are not finite: its graphs would overflow to inf and
    NaN on ordinary text (docs/model-format.md, "The float16 range check"). Names the tensor, or
    the block and module where the activations peak."""
    beyond = weights_beyond_float16(model)
    if beyond:
        listed = ", ".join(f"{name} ({'inf or NaN' if not math.isfinite(value) else f'{value:,.0f}'})"
                           for name, value in beyond[:LISTED_TENSORS])
        more = f" and {len(beyond) - LISTED_TENSORS} more" if len(beyond) > LISTED_TENSORS else ""
        raise SystemExit(
            f"{program}: error: {len(beyond)} of this model's weight tensors hold values beyond float16's largest "
            f"value {FLOAT16_MAX:,.0f} (inf once cast to float16), or not finite: {listed}{more}. An fp16 export "
            f"would overflow to inf and NaN. Export it in bf16 (for a GPU) or fp32")
    sequences = [np.random.default_rng(seed).integers(0, model.config.vocab_size, size=32).tolist()]
    if tokenizer is not None:
        # At most the model's positions (a tiny GPT-2 has fewer than the paragraph's ~100 tokens).
        sequences.append(tokenizer(RANGE_TEXT)["input_ids"][:context_length(model.config)])
    peak, where = activation_peak_at(model, sequences)
    limit = FLOAT16_MAX / margin
    print(f"range check: activations reach {peak:,.0f} in float32, largest at {block_of(where)} (float16 holds "
          f"{FLOAT16_MAX:,.0f}; limit {limit:,.0f} with --fp16-margin {margin:g})")
    if not peak <= limit:
        reach = f"{peak:,.0f}" if math.isfinite(peak) else "inf or NaN"
        raise SystemExit(
            f"{program}: error: this model's activations reach {reach} in float32 on an English paragraph and "
            f"random tokens, at {block_of(where)}, beyond float16's largest value {FLOAT16_MAX:,.0f} / "
            f"--fp16-margin {margin:g}: an fp16 export would overflow to inf and NaN on ordinary text. Export it "
            f"in bf16 (for a GPU) or fp32, or pass --fp16-margin 0 to export fp16 anyway")
    return {"activation_peak": peak, "peak_at": where, "limit": limit, "margin": margin}


def reduced_precision_limits(tolerance: float, transformers_error: dict) -> dict:
    """How far a reduced-precision chain may be from the float32 computation of the same weights:
    the tolerance, or twice as far as transformers in that dtype is, whichever is larger. Both round
    at every operation, at different places; on a real model transformers' own fp16 logits are
    ~0.2 from float32 (SmolLM2-135M), so a fixed tolerance alone refuses correct exports. A
    transformers error that is not finite (its own float16 computation overflowed) widens nothing:
    the tolerance alone, never an inf or NaN limit that every error would pass."""
    return {key: max(tolerance, 2.0 * value) if math.isfinite(value) else tolerance
            for key, value in transformers_error.items()}


def finite_or_none(value: float):
    """`value`, or None (JSON null) where it is NaN or inf: the manifest is strict JSON, which
    has no NaN or inf, and every stage reads it."""
    return value if math.isfinite(value) else None


def largest_abs(values) -> float:
    """max |values|, NaN where any is NaN (np.max propagates it; Python's max would drop it)."""
    return float(np.abs(values).max())


def check(model, out_dir: Path, manifest: dict, sequences: int, length: int, tolerance: float, seed: int):
    """The chain against transformers with the model in the export's dtype; `tolerance` is scaled
    by max(1, |largest logit| / 10). A reduced-precision chain is judged against the float32
    computation of the same weights instead, next to transformers' own error in that dtype
    (`reduced_precision_limits`). An error that is not finite (the chain's, or its reference's,
    overflowed: float16 the likely cause) fails; values recorded that are not finite are null."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, manifest["vocab_size"], size=(sequences, length), dtype=np.int64)
    expected_logits, expected_nll = reference(model, input_ids)
    runner = default_runner(manifest)
    logits, nll = run_chain(out_dir, manifest, input_ids, runner=runner)
    max_abs = largest_abs(logits - expected_logits)
    max_rel = max_abs / largest_abs(expected_logits)
    nll_diff = largest_abs(nll - expected_nll)
    print(f"check: {sequences}x{length} tokens: max |logits diff| {max_abs:.3e} "
          f"(relative to the largest logit {max_rel:.3e}), max |nll diff| {nll_diff:.3e}")
    if manifest["dtype"] == "float32":
        scaled_by = expected_logits
    else:
        with computing_in_float32(model):
            exact_logits, exact_nll = reference(model, input_ids)
        scaled_by = exact_logits
    # Large real models differ by operation order alone (logits up to ~40): judged relative. The
    # scale is the reference's; one that is not finite is refused below, not made a tolerance.
    largest = largest_abs(scaled_by)
    scale = max(1.0, largest / 10.0) if math.isfinite(largest) else 1.0
    result = {"sequences": sequences, "length": length, "dtype": manifest["dtype"], "runner": runner,
              "max_abs_logit_diff": finite_or_none(max_abs), "max_rel_logit_diff": finite_or_none(max_rel),
              "max_abs_nll_diff": finite_or_none(nll_diff), "tolerance": tolerance * scale}
    overflow = ""
    if manifest["dtype"] == "float32":
        errors = {"logits": max_abs, "nll": nll_diff}
        limits = {"logits": tolerance * scale, "nll": tolerance * scale}
        against = "transformers"
    else:
        errors = {"logits": largest_abs(logits - exact_logits), "nll": largest_abs(nll - exact_nll)}
        own = {"logits": largest_abs(expected_logits - exact_logits), "nll": largest_abs(expected_nll - exact_nll)}
        limits = reduced_precision_limits(tolerance * scale, own)
        against = "the float32 computation of its weights"
        print(f"check: against float32: the chain {errors['logits']:.3e} (logits) / {errors['nll']:.3e} (nll), "
              f"transformers in {manifest['dtype']} {own['logits']:.3e} / {own['nll']:.3e}")
        if not all(math.isfinite(value) for value in own.values()):
            print(f"check: note: transformers' own {manifest['dtype']} computation is not finite (it overflows); "
                  "not used to widen the tolerance")
        result["float32_reference"] = {
            "chain_logit_diff": finite_or_none(errors["logits"]), "chain_nll_diff": finite_or_none(errors["nll"]),
            "transformers_logit_diff": finite_or_none(own["logits"]),
            "transformers_nll_diff": finite_or_none(own["nll"]),
            "logit_limit": limits["logits"], "nll_limit": limits["nll"]}
        if manifest["dtype"] == "float16":
            overflow = (": not finite, float16 overflow the likely cause (values beyond 65,504 become inf, then "
                        "NaN); export in bf16 (for a GPU) or fp32, and keep the float16 range check on "
                        "(--fp16-margin above 0)")
    if not math.isfinite(largest):
        raise SystemExit(f"export: error: the logits of {against} are not finite on the check's tokens, so the "
                         f"exported chain cannot be judged against them{overflow or ''}")
    if not (errors["logits"] <= limits["logits"] and errors["nll"] <= limits["nll"]):  # NaN fails too
        finite = math.isfinite(errors["logits"]) and math.isfinite(errors["nll"])
        raise SystemExit(f"export: error: the exported chain differs from {against} by {errors['logits']:.3e} "
                         f"(logits) / {errors['nll']:.3e} (nll), over the tolerance {limits['logits']:.1e} / "
                         f"{limits['nll']:.1e}{'' if finite else overflow or ': not finite'}")
    print(f"check: passed: within the tolerance {limits['logits']:.1e} (logits) / {limits['nll']:.1e} (nll) "
          f"of {against}")
    return result


@refusals_named("export")
def main(argv=None, allow_known_failures: bool = False):
    """The command line; `allow_known_failures` as export()'s (diagnostics only: no flag sets it)."""
    # No abbreviations (--dty for --dtype): Make's guards and stamps read the flags by their names.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face model folder (config.json + safetensors + tokenizer)")
    source.add_argument("--gguf", help="a GGUF file (dequantized by transformers)")
    parser.add_argument("--out", required=True, help="output layered model folder")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--attention-precision", choices=ATTENTION_PRECISIONS, default=None,
                        help="fp16 / bf16 standard attention only: compute the blocks' attention in float32 "
                             "(default; closer to float32, as transformers' SDPA is) or in the dtype "
                             "(transformers' eager code); given, --attention-kernel auto is standard")
    parser.add_argument("--attention-kernel", choices=ATTENTION_KERNEL_CHOICES, default="auto",
                        help="the blocks' attention as ONNX standard operators (any ONNX runtime) or fused: "
                             "one ONNX Runtime GroupQueryAttention node a block, rotary embedding included "
                             "(fewer kernels on a GPU, where ONNX Runtime runs it in fp16 / bf16 only; the "
                             "architectures with rotary causal attention, but the multimodal rotary of "
                             "Qwen2-VL / Qwen2.5-VL / Qwen3-VL). auto (default): fused for an fp16 / bf16 "
                             "export where it applies and is not known to fail on CUDA (bf16 "
                             f"{', '.join(sorted(FUSED_KNOWN_FAILURES['bf16']))}), without "
                             "--attention-precision; standard otherwise (docs/model-format.md)")
    parser.add_argument("--qkv-projection", choices=QKV_PROJECTIONS, default="separate",
                        help="fused attention only: the query, key and value projections as the model has "
                             "them (default) or packed into one product that feeds the GroupQueryAttention node "
                             "(fewer, larger GPU kernels; refused where q / k are normalised after their "
                             "products, as in Qwen3, OLMo 2, Gemma 3) (docs/model-format.md)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy",
                        help="torch.onnx exporter (legacy is ~30x faster and gives the same graphs' results)")
    parser.add_argument("--check-sequences", type=at_least(1), default=3)
    parser.add_argument("--check-length", type=at_least(2), default=32,
                        help="tokens per sequence of the export check (a Mamba folder's: --fixed-seq-len)")
    parser.add_argument("--tolerance", type=tolerance_number, default=None,
                        help="max |logit| / |nll| difference against transformers (fp16 / bf16: against "
                             "float32, or twice transformers' own error if larger), scaled by "
                             "max(1, |largest logit| / 10); default: "
                             + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_TOLERANCE.items()))
    parser.add_argument("--no-check", action="store_true",
                        help="skip the export check (a bf16 check runs in onnx.reference, slow on large models)")
    add_fp16_margin_argument(parser)
    parser.add_argument("--fixed-seq-len", type=at_least(2), default=128,
                        help="Mamba only: the sequence length its block graphs are unrolled for "
                             "(the export check uses it too)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    if args.attention_kernel == "fused" and args.attention_precision is not None:
        parser.error("--attention-precision is for standard attention; the fused kernel chooses its own "
                     "(flash attention's softmax in float32 on CUDA)")
    if args.attention_kernel == "fused" and args.dtype == "fp32":
        # Still useful on the CPU (the same NLLs, tested against transformers exactly); the
        # runtime refuses the folder on CUDA rather than run every block's attention on the host.
        print("export: note: ONNX Runtime's CUDA provider runs GroupQueryAttention in fp16 / bf16 only; "
              "this fp32 folder is for the CPU provider (export with --dtype bf16 or fp16 for a GPU)",
              file=sys.stderr)

    check_source_exists(args)
    if args.qkv_projection == "packed":
        # Standard attention from the flags alone: refused before the model loads (minutes on a
        # large one), not after; the advice from the architecture (a weightless skeleton).
        standard = ("--attention-kernel standard" if args.attention_kernel == "standard"
                    else "--attention-precision (standard attention only)" if args.attention_precision is not None
                    else "--exporter dynamo (fused attention is the legacy exporter's)" if args.exporter != "legacy"
                    else "an fp32 export with --attention-kernel auto" if args.attention_kernel == "auto"
                    and args.dtype == "fp32" else None)
        if standard is not None:
            advice = packing_advice(model_skeleton(args), args.dtype, args.exporter, args.attention_precision)
            sys.exit(f"export: error: --qkv-projection packed packs the projections into a fused block's "
                     f"GroupQueryAttention node; {standard} gives standard attention: {advice}")

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out)
    # Before anything is loaded: an output that would replace or change the model, or that cannot
    # be written, is refused in a second, not after the export.
    outputs.refuse_overlap("export", out_dir, [("the model folder", Path(args.model))] if args.model
                           else [("the GGUF file", Path(args.gguf))])
    outputs.refuse_unwritable("export", out_dir, folder=True)
    if out_dir.exists() and not args.force:
        sys.exit(f"export: error: {out_dir} exists; pass --force to replace it")
    started = time.time()
    model, tokenizer, source_info = load_model(args)
    print(f"loaded {model.config.model_type} with {model.config.num_hidden_layers} blocks "
          f"in {time.time() - started:.1f} s")
    fixed = model.config.model_type in FIXED_LENGTH_MODEL_TYPES
    if fixed:
        args.check_length = args.fixed_seq_len
    context = context_length(model.config)
    if not args.no_check and context is not None and args.check_length > context:
        # Past it a learned position table is indexed out of range: a traceback after the export.
        sys.exit(f"export: error: --check-length {args.check_length} is longer than the model's context, "
                 f"{context} tokens (max_position_embeddings / n_positions in its config)")
    # Before any graph is written: a float16 export that would overflow fails in seconds.
    range_check = (float16_range_check(model, tokenizer, args.fp16_margin, args.seed)
                   if args.dtype == "fp16" and args.fp16_margin > 0 else None)
    # Built beside the destination (its parent made first), so the final rename stays on one
    # file system, and renamed into place at the end: no half-written model folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = one_file.staging_folder(out_dir)
    try:
        started = time.time()
        manifest = export(model, tokenizer, source_info, staging, args.dtype, args.opset, args.exporter,
                          fixed_seq_len=args.fixed_seq_len if fixed else None,
                          attention_precision=args.attention_precision, attention_kernel=args.attention_kernel,
                          allow_known_failures=allow_known_failures, qkv_projection=args.qkv_projection)
        print(f"exported {len(manifest['blocks']) + 3} graphs in {time.time() - started:.1f} s")
        tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[args.dtype]
        if args.no_check:
            print("check: skipped (--no-check)")
        else:
            manifest["check"] = check(model, staging, manifest, args.check_sequences, args.check_length,
                                      tolerance, args.seed)
        if range_check is not None:
            manifest["float16_range"] = range_check
        with open(staging / "manifest.json", "w") as handle:
            # Strict JSON (no NaN or inf), which the stages' reader requires.
            json.dump(manifest, handle, indent=2, allow_nan=False)
            handle.write("\n")
        permit_as_umask(staging)
        # The old folder goes only once the new one is in place.
        outputs.replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {out_dir}")
    return model, manifest


if __name__ == "__main__":
    main()

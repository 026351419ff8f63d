"""Export a Hugging Face causal LM to a *layered ONNX model folder*.

One graph for the token embedding, one per residual block, one for the final norm + LM head
(returning the per-token negative log-likelihood of given targets, so the logits never leave
ONNX Runtime), one more head returning logits (for checks and scoring), a `manifest.json`, and
`tokenizer.json`. The Rust `evaluate` stage chains these graphs and skips removed blocks, which
is exactly deleting them from a pre-norm residual network.

Weights live outside the graphs, in content-addressed files under `weights/` (name = sha256 of
the bytes): a tensor stored in several graphs (the tied embedding and LM head) is stored once.

The exporter checks its own output: the chained graphs, run by ONNX Runtime, against
transformers' logits on a few sequences; it fails when they differ by more than the tolerance.

Usage:
  python export_layered.py --model HF_DIR --out OUT
  python export_layered.py --gguf FILE.gguf --out OUT
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

FORMAT = "layerprune-layered-onnx"
FORMAT_VERSION = 1
SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EXTERNAL_THRESHOLD_BYTES = 1024


class Embedding(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed_tokens = model.model.embed_tokens

    def forward(self, input_ids):
        return self.embed_tokens(input_ids)


class Block(nn.Module):
    """One decoder layer with its RoPE and causal mask built inside the graph, so the graph
    maps hidden states to hidden states and nothing else has to be fed in."""

    def __init__(self, model, index):
        super().__init__()
        self.layer = model.model.layers[index]
        self.rotary_emb = model.model.rotary_emb

    def forward(self, hidden_states):
        seq_len = hidden_states.shape[1]
        position_ids = torch.arange(seq_len, device=hidden_states.device).unsqueeze(0)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        # An additive mask with the dtype's minimum (not -inf) keeps softmax free of NaN.
        minimum = torch.finfo(hidden_states.dtype).min
        causal = torch.full((seq_len, seq_len), minimum, dtype=hidden_states.dtype)
        causal = torch.triu(causal, diagonal=1)[None, None, :, :]
        return self.layer(
            hidden_states,
            attention_mask=causal,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
        )


class Head(nn.Module):
    """Final norm + LM head. `nll=True` returns −log p(target) per position (computed in fp32);
    otherwise the logits."""

    def __init__(self, model, nll: bool):
        super().__init__()
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        self.nll = nll

    def logits(self, hidden_states):
        normed = self.norm(hidden_states)
        batch, seq_len, hidden = normed.shape
        # The head graphs are exported without constant folding so that the [vocab, hidden]
        # weight keeps its stored layout (ONNX Runtime folds the transpose when it loads the
        # graph): a tied weight then has the embedding's bytes and is stored once on disk.
        flat = torch.nn.functional.linear(normed.reshape(batch * seq_len, hidden), self.lm_head.weight)
        return flat.reshape(batch, seq_len, -1).float()

    def forward(self, hidden_states, target_ids=None):
        logits = self.logits(hidden_states)
        if not self.nll:
            return logits
        log_probs = torch.log_softmax(logits, dim=-1)
        return -torch.gather(log_probs, -1, target_ids.unsqueeze(-1)).squeeze(-1)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_graph(module, args, input_names, output_names, dynamic_axes, opset, exporter, fold=True):
    buffer = io.BytesIO()
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
    return onnx.load_from_string(buffer.getvalue())


def _dynamic_shapes(args, dynamic_axes, input_names, dims):
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=131072)
    named = {"batch": batch, "seq": seq}
    return tuple({axis: named[name] for axis, name in dynamic_axes[n].items()} for n in input_names)


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


def load_model(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = DTYPES[args.dtype]
    if args.gguf:
        gguf = Path(args.gguf)
        if not gguf.is_file():
            sys.exit(f"export: error: GGUF file {gguf} does not exist")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        source = {"kind": "gguf", "path": str(gguf), "sha256": sha256_file(gguf)}
    else:
        folder = Path(args.model)
        if not (folder / "config.json").is_file():
            sys.exit(f"export: error: {folder} is not a Hugging Face model folder (no config.json)")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        source = {"kind": "huggingface", "path": str(folder)}
    model.config._attn_implementation = "eager"
    model.eval()
    model_type = model.config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        sys.exit(f"export: error: model type {model_type!r} is not supported "
                 f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})")
    return model, tokenizer, source


def export(model, tokenizer, source, out_dir: Path, dtype_name: str, opset: int, exporter: str):
    config = model.config
    hidden = config.hidden_size
    dtype = DTYPES[dtype_name]
    example_ids = torch.randint(0, config.vocab_size, (2, 8))
    example_hidden = torch.randn(2, 8, hidden, dtype=dtype)
    hidden_axes = {0: "batch", 1: "seq"}
    written: dict = {}
    parts = {}

    def save(name, graph):
        externalize(graph, out_dir, written)
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(graph, out_dir / name)
        parts[name] = graph

    save("embed.onnx", export_graph(Embedding(model), (example_ids,), ["input_ids"], ["hidden_states"],
                                    {"input_ids": hidden_axes, "hidden_states": hidden_axes}, opset, exporter))
    blocks = []
    for index in range(config.num_hidden_layers):
        name = f"block_{index:03d}.onnx"
        save(name, export_graph(Block(model, index), (example_hidden,), ["hidden_states"], ["output"],
                                {"hidden_states": hidden_axes, "output": hidden_axes}, opset, exporter))
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
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.model_type,
        "num_blocks": config.num_hidden_layers,
        "hidden_size": hidden,
        "intermediate_size": getattr(config, "intermediate_size", None),
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype_name],
        "opset": opset,
        "source": source,
        "embedding": {"file": "embed.onnx", "input": "input_ids", "output": "hidden_states"},
        "blocks": blocks,
        "head": {"file": "head.onnx", "inputs": ["hidden_states", "target_ids"], "output": "nll"},
        "head_logits": {"file": "head_logits.onnx", "input": "hidden_states", "output": "logits"},
        "tokenizer": "tokenizer.json",
        "exporter": {"tool": "tools/export/export_layered.py", "exporter": exporter,
                     "torch": torch.__version__, "onnx": onnx.__version__,
                     "transformers": __import__("transformers").__version__},
        "files": {name: sha256_file(out_dir / name) for name in files},
    }
    return manifest


def run_chain(out_dir: Path, manifest: dict, input_ids: np.ndarray, drop=()):
    """Chained graphs through ONNX Runtime: (logits, nll of next tokens)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3

    def session(name):
        return ort.InferenceSession(str(out_dir / name), options, providers=["CPUExecutionProvider"])

    hidden = session(manifest["embedding"]["file"]).run(None, {"input_ids": input_ids})[0]
    for block in manifest["blocks"]:
        if block["index"] in drop:
            continue
        hidden = session(block["file"]).run(None, {"hidden_states": hidden})[0]
    logits = session(manifest["head_logits"]["file"]).run(None, {"hidden_states": hidden})[0]
    targets = np.concatenate([input_ids[:, 1:], input_ids[:, :1]], axis=1)
    nll = session(manifest["head"]["file"]).run(None, {"hidden_states": hidden, "target_ids": targets})[0]
    return logits, nll[:, :-1]


def reference(model, input_ids: np.ndarray, drop=()):
    """transformers' logits and next-token NLL, with the blocks in `drop` deleted."""
    layers = model.model.layers
    kept = nn.ModuleList([layer for i, layer in enumerate(layers) if i not in drop])
    saved_count = model.config.num_hidden_layers
    model.model.layers = kept
    model.config.num_hidden_layers = len(kept)
    try:
        with torch.no_grad():
            ids = torch.from_numpy(input_ids)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -torch.gather(log_probs, -1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    finally:
        model.model.layers = layers
        model.config.num_hidden_layers = saved_count
    return logits.numpy(), nll.numpy()


def check(model, out_dir: Path, manifest: dict, sequences: int, length: int, tolerance: float, seed: int):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, manifest["vocab_size"], size=(sequences, length), dtype=np.int64)
    expected_logits, expected_nll = reference(model, input_ids)
    logits, nll = run_chain(out_dir, manifest, input_ids)
    max_abs = float(np.abs(logits - expected_logits).max())
    max_rel = max_abs / float(np.abs(expected_logits).max())
    nll_diff = float(np.abs(nll - expected_nll).max())
    print(f"check: {sequences}x{length} tokens: max |logits diff| {max_abs:.3e} "
          f"(relative to the largest logit {max_rel:.3e}), max |nll diff| {nll_diff:.3e}")
    # Large real models differ by operation order alone (logits up to ~40): judged relative.
    scale = max(1.0, float(np.abs(expected_logits).max()) / 10.0)
    if max_abs > tolerance * scale or nll_diff > tolerance * scale:
        raise SystemExit(f"export: error: the exported chain differs from transformers by {max_abs:.3e} "
                         f"(logits) / {nll_diff:.3e} (nll), over the tolerance {tolerance * scale:.1e}")
    return {"sequences": sequences, "length": length, "max_abs_logit_diff": max_abs,
            "max_rel_logit_diff": max_rel, "max_abs_nll_diff": nll_diff, "tolerance": tolerance * scale}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face model folder (config.json + safetensors + tokenizer)")
    source.add_argument("--gguf", help="a GGUF file (dequantized by transformers)")
    parser.add_argument("--out", required=True, help="output layered model folder")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy",
                        help="torch.onnx exporter (legacy is ~30x faster and gives the same graphs' results)")
    parser.add_argument("--check-sequences", type=int, default=3)
    parser.add_argument("--check-length", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out)
    if out_dir.exists() and not args.force:
        sys.exit(f"export: error: {out_dir} exists; pass --force to replace it")
    started = time.time()
    model, tokenizer, source_info = load_model(args)
    print(f"loaded {model.config.model_type} with {model.config.num_hidden_layers} blocks "
          f"in {time.time() - started:.1f} s")
    # Build next to the destination and rename at the end: no half-written model folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        started = time.time()
        manifest = export(model, tokenizer, source_info, staging, args.dtype, args.opset, args.exporter)
        print(f"exported {len(manifest['blocks']) + 3} graphs in {time.time() - started:.1f} s")
        if args.dtype == "fp32":
            manifest["check"] = check(model, staging, manifest, args.check_sequences, args.check_length,
                                      args.tolerance, args.seed)
        else:
            print("check: skipped for reduced-precision export (run the fp32 export to verify the graphs)")
        with open(staging / "manifest.json", "w") as handle:
            json.dump(manifest, handle, indent=2)
            handle.write("\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {out_dir}")
    return model, manifest


if __name__ == "__main__":
    main()

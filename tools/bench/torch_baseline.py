"""The published approach, timed: load the model with transformers, and for each mask zero the
removed blocks' weights, run the forward pass with the loss, and restore the weights.

Reads the same token and mask tables as `evaluate`, so both are timed on identical work.
Also measures the machine's fp32 GEMM rate at the model's matrix shapes (the ceiling an
evaluator of this model can approach) in the same run.

The second PyTorch loop, `deleted_blocks_nll` (the removed blocks taken out of the model's
ModuleList for the pass: no work for them at all), runs with `--loops zero-restore,delete`;
tools/bench/gpu_bench.py times both on a GPU.

Usage: python torch_baseline.py --gguf F.gguf --tokens t.parquet --masks m.parquet --out r.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))  # export_layered.py: the loader


def load_model(gguf: Path):
    """The GGUF's model in float32, refused (naming the file and the tensors) where the file lacks
    a tensor the language model runs: transformers would fill it with random values and only log
    it, and the baseline's NLL would then differ from `evaluate`'s for no fault of either."""
    from transformers import AutoModelForCausalLM

    import export_layered

    export_layered.check_gguf_header(gguf, "torch_baseline")  # a file transformers would load as another model
    model = export_layered.load_pretrained(
        AutoModelForCausalLM, gguf, "torch_baseline", "language model",
        then="the baseline would run that random model, against an export that refuses the file",
        dtype=torch.float32)
    model.eval()
    return model


def zero_and_restore_nll(model, input_ids, kept):
    layers = model.model.layers
    saved = {}
    with torch.no_grad():
        for index, keep in enumerate(kept):
            if not keep:
                for name, param in layers[index].named_parameters():
                    saved[(index, name)] = param.detach().clone()
                    param.zero_()
        loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.item()
        for (index, name), value in saved.items():
            dict(layers[index].named_parameters())[name].copy_(value)
    return loss


def deleted_blocks_nll(model, input_ids, kept):
    """The loss with the removed blocks deleted from the decoder's ModuleList for this pass (the
    list is put back after): the kept blocks run, the removed ones cost nothing."""
    base = model.model
    layers = base.layers
    base.layers = torch.nn.ModuleList([layer for layer, keep in zip(layers, kept) if keep])
    try:
        with torch.no_grad():
            return model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.item()
    finally:
        base.layers = layers


LOOPS = {"zero-restore": zero_and_restore_nll, "delete": deleted_blocks_nll}


def block_gemm_shapes(config, rows: int):
    """(m, k, n) of a Llama block's matrix products for `rows` tokens: q, k, v, o, gate, up, down."""
    hidden, ffn = config.hidden_size, config.intermediate_size
    kv = hidden * config.num_key_value_heads // config.num_attention_heads
    return [(rows, hidden, hidden), (rows, hidden, kv), (rows, hidden, kv), (rows, hidden, hidden),
            (rows, hidden, ffn), (rows, hidden, ffn), (rows, ffn, hidden)]


def gemm_tflops(config, rows: int, dtype=torch.float32, device="cpu", seconds: float = 2.0):
    """TFLOP/s of torch matmuls at one block's shapes (block_gemm_shapes) for `rows` tokens, in
    `dtype` on `device` (on CUDA, float32 follows torch.backends.cuda.matmul.allow_tf32)."""
    shapes = block_gemm_shapes(config, rows)
    mats = [(torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype))
            for m, k, n in shapes]
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for a, b in mats:  # warm-up: kernels chosen, libraries loaded
        torch.matmul(a, b)
    sync()
    flops, started = 0, time.perf_counter()
    while True:
        for _ in range(5):
            for (a, b), (m, k, n) in zip(mats, shapes):
                torch.matmul(a, b)
                flops += 2 * m * k * n
        sync()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return flops / elapsed / 1e12


def gemm_rate(model, tokens: int, seconds: float = 3.0):
    """GFLOP/s of fp32 matmuls at the shapes of one block (QKV/O/MLP) for `tokens` rows."""
    config = model.config
    hidden, ffn = config.hidden_size, config.intermediate_size
    shapes = [(tokens, hidden, hidden), (tokens, hidden, ffn), (tokens, ffn, hidden)]
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for (a, b), (m, k, n) in zip(mats, shapes):
            torch.matmul(a, b)
            flops += 2 * m * k * n
    return flops / (time.perf_counter() - started) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--tokens", required=True, type=Path)
    parser.add_argument("--masks", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--loops", default="zero-restore",
                        help="comma-separated: zero-restore (the published approach), delete")
    args = parser.parse_args()
    loops = args.loops.split(",")
    if any(loop not in LOOPS for loop in loops) or "zero-restore" not in loops:
        parser.error(f"--loops: a comma-separated list of {', '.join(LOOPS)} holding zero-restore")
    if args.threads:
        torch.set_num_threads(args.threads)
    windows = pq.read_table(args.tokens).column("tokens").to_pylist()
    masks = pq.read_table(args.masks).column("kept").to_pylist()
    input_ids = torch.tensor(windows, dtype=torch.long)
    started = time.perf_counter()
    model = load_model(args.gguf)
    load_seconds = time.perf_counter() - started
    full_nll = zero_and_restore_nll(model, input_ids, [True] * model.config.num_hidden_layers)
    started = time.perf_counter()
    nlls = [zero_and_restore_nll(model, input_ids, kept) for kept in masks]
    seconds = time.perf_counter() - started
    deleted = {}
    if "delete" in loops:
        started = time.perf_counter()
        deleted_nlls = [deleted_blocks_nll(model, input_ids, kept) for kept in masks]
        deleted_seconds = time.perf_counter() - started
        deleted = {"deleted_seconds": deleted_seconds, "deleted_masks_per_second": len(masks) / deleted_seconds,
                   "deleted_nll": deleted_nlls}
    rate = gemm_rate(model, input_ids.numel())
    result = {
        "approach": "transformers zero-and-restore (published)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_seconds": load_seconds,
        "full_model_nll": full_nll,
        "masks": len(masks),
        "seconds": seconds,
        "masks_per_second": len(masks) / seconds,
        "nll": nlls,
        "gemm_gflops": rate,
        **deleted,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"torch zero-and-restore: {len(masks)} masks in {seconds:.1f} s "
          f"({len(masks) / seconds:.3f} masks/s); full-model NLL {full_nll:.5f}; GEMM {rate:.1f} GFLOP/s")


if __name__ == "__main__":
    main()

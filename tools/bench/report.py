"""Combine one benchmark run's measurements into build/bench/bench.parquet and bench.md.

Inputs (all measured in the same `make bench` run, on the same tokens and masks):
  rust.json          evaluate --summary, prefix reuse on
  rust-noreuse.json  evaluate --summary, prefix reuse off
  torch.json         torch_baseline.py (the published zero-and-restore approach + GEMM rate)
  full.parquet       evaluate's table for the full model on the evaluation text
  masks-eval.parquet evaluate's table for the benchmark masks (to cross-check against torch)
"""

import json
import platform
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_atomically(path: Path, text: str) -> None:
    """`path` holds `text` or what it held before, never part of it (a run killed while writing):
    the benchmark scripts write their results after every step of a run that may be cut short."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def flops_per_token(summary, manifest):
    hidden = manifest["hidden_size"]
    ffn = manifest["intermediate_size"]
    heads = manifest["num_attention_heads"]
    kv_heads = manifest["num_key_value_heads"]
    kv = hidden * kv_heads // heads
    seq = summary["seq_len"]
    block = 2 * (hidden * hidden + 2 * hidden * kv + hidden * hidden + 3 * hidden * ffn) + 4 * seq * hidden
    head = 2 * hidden * manifest["vocab_size"]
    return block, head


def main():
    bench, model_dir = Path(sys.argv[1]), Path(sys.argv[2])
    manifest = json.loads((model_dir / "manifest.json").read_text())
    rust = json.loads((bench / "rust.json").read_text())
    fresh = json.loads((bench / "rust-noreuse.json").read_text())
    torch = json.loads((bench / "torch.json").read_text())
    # Here, not at the top: gpu_*.py import this module for write_atomically and flops_per_token.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
    from layerprune_tables import TableError, read_table

    try:
        full = read_table(bench / "full.parquet", "evaluations", "evaluate")[1].to_pylist()[0]
        ours = read_table(bench / "masks-eval.parquet", "evaluations", "evaluate")[1].to_pylist()
    except TableError as error:
        sys.exit(f"report: error: {error}")
    block_flops, head_flops = flops_per_token(rust, manifest)
    tokens = rust["windows"] * rust["seq_len"]

    def achieved(summary):
        work = (summary["blocks_run"] * block_flops + summary["masks"] * head_flops) * tokens
        return work / summary["seconds"] / 1e9

    # The work a non-sharing evaluator does for these masks, per second of ours.
    nll_diff = max(abs(row["nll"] - t) for row, t in zip(ours, torch["nll"]))
    rows = [
        {"measure": "masks per second, evaluate (prefix reuse)", "value": rust["masks_per_second"]},
        {"measure": "masks per second, evaluate (no prefix reuse)", "value": fresh["masks_per_second"]},
        {"measure": "masks per second, PyTorch zero-and-restore (published)", "value": torch["masks_per_second"]},
        {"measure": "speed-up over the published approach", "value": rust["masks_per_second"] / torch["masks_per_second"]},
        {"measure": "speed-up from prefix reuse", "value": rust["masks_per_second"] / fresh["masks_per_second"]},
        {"measure": "achieved GFLOP/s, evaluate (work done)", "value": achieved(rust)},
        {"measure": "achieved GFLOP/s, evaluate without reuse", "value": achieved(fresh)},
        {"measure": "GEMM GFLOP/s at the model's shapes (torch, same run)", "value": torch["gemm_gflops"]},
        {"measure": "evaluate / GEMM rate", "value": achieved(rust) / torch["gemm_gflops"]},
        {"measure": "blocks run with reuse / blocks in the masks", "value": rust["blocks_run"] / rust["blocks_in_masks"]},
        {"measure": "max |nll difference| evaluate vs PyTorch over the masks", "value": nll_diff},
        {"measure": "full model NLL on the evaluation text", "value": full["nll"]},
        {"measure": "full model perplexity on the evaluation text", "value": full["ppl"]},
    ]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({
        "layerprune.table": "benchmark", "machine": platform.platform(),
        "masks": str(rust["masks"]), "tokens_per_mask": str(tokens)})
    pq.write_table(table, bench / "bench.parquet")
    lines = [f"Machine: {platform.platform()}, {rust['device']}; {rust['masks']} masks, "
             f"{rust['windows']}×{rust['seq_len']} tokens each.", "", "| measure | value |", "|---|---:|"]
    lines += [f"| {r['measure']} | {r['value']:.4g} |" for r in rows]
    (bench / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

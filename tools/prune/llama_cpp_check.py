"""Does llama.cpp run a (pruned) GGUF file as the model transformers loads from it? Runs
llama.cpp's `llama-perplexity` on a text and computes the same perplexity with transformers (the
exporter's loader, export_layered.load_pretrained, which reads the file as llama.cpp does:
Gemma 2/3's attention scale and a stated local/global pattern) on llama.cpp's own tokens and
protocol: chunks of `--ctx` tokens, the vocabulary's BOS first where it adds one, the mean NLL of
each chunk's second half (llama.cpp's tools/perplexity/perplexity.cpp). The tokens are read
from the logits file `--kl-divergence-base` writes (its header, then the chunks' tokens).

For an F32 file the two agree to about 1e-4 in perplexity; a quantized file runs llama.cpp's
quantized dot products (activations quantized to 8 bits), which move it by up to about 1 %.
The logits file holds n_vocab x ctx x chunks x 2 bytes (3.2 GB for Gemma 3 at 1024 x 6): it is
written in --scratch and deleted at once.

Usage (the exporter's environment; llama.cpp built elsewhere, docs/your-model.md):
  python llama_cpp_check.py --llama-cpp path/to/llama.cpp/build/bin --text text.txt \\
      --gguf model.gguf --gguf pruned.gguf [--ctx 1024] [--chunks 6] [--threads 2]
"""

import argparse
import math
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

LOGITS_MAGIC = b"_logits_"


def logits_file_tokens(path: Path):
    """(ctx, chunks, tokens) from the header of llama-perplexity's --kl-divergence-base file:
    `_logits_`, n_ctx, n_vocab, n_chunk (int32 each), then n_chunk x n_ctx token ids."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:8] != LOGITS_MAGIC:
        raise SystemExit(f"llama_cpp_check: error: {path} is not a llama-perplexity logits file")
    ctx, _, chunks = struct.unpack("<iii", header[8:20])
    tokens = np.fromfile(path, dtype=np.int32, count=chunks * ctx, offset=20)
    if tokens.size != chunks * ctx:
        raise SystemExit(f"llama_cpp_check: error: {path} holds {tokens.size} tokens, not {chunks} x {ctx}")
    return ctx, chunks, tokens


def transformers_perplexity(gguf: Path, ctx: int, tokens) -> float:
    """llama-perplexity's number computed by transformers on the GGUF as the exporter loads it."""
    import gguf as gguf_py
    import torch
    from transformers import AutoModelForCausalLM

    import export_layered

    reader = gguf_py.GGUFReader(str(gguf))
    add_bos = export_layered.gguf_field(reader, "tokenizer.ggml.add_bos_token")
    bos = export_layered.gguf_field(reader, "tokenizer.ggml.bos_token_id")
    model = export_layered.load_pretrained(AutoModelForCausalLM, gguf, "llama_cpp_check", dtype=torch.float32)
    model.config._attn_implementation = "eager"
    model.eval()
    first, total, count = ctx // 2, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens), ctx):
            chunk = torch.tensor(tokens[start:start + ctx], dtype=torch.long)
            if add_bos:
                chunk[0] = bos
            log_probs = torch.log_softmax(model(input_ids=chunk[None]).logits[0].float(), dim=-1)
            targets = chunk[first + 1:]
            total -= log_probs[first:ctx - 1].gather(1, targets[:, None]).sum().item()
            count += len(targets)
    return math.exp(total / count)


def llama_cpp_perplexity(binaries: Path, gguf: Path, text: Path, ctx: int, chunks: int, threads: int,
                         logits: Path) -> float:
    command = [str(binaries / "llama-perplexity"), "-m", str(gguf), "-f", str(text), "-c", str(ctx),
               "--chunks", str(chunks), "-t", str(threads), "--kl-divergence-base", str(logits)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", result.stdout + result.stderr)
    if result.returncode != 0 or not found:
        raise SystemExit(f"llama_cpp_check: error: {' '.join(command)} failed (exit {result.returncode}):\n"
                         + (result.stdout + result.stderr)[-2000:])
    return float(found.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--llama-cpp", type=Path, required=True, help="the folder of llama-perplexity")
    parser.add_argument("--gguf", type=Path, action="append", required=True)
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=None, help="where the logits file is written (a temporary "
                                                                    "folder by default)")
    args = parser.parse_args(argv)
    for path in [args.llama_cpp / "llama-perplexity", args.text, *args.gguf]:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    print(f"{'GGUF file':<40} {'llama.cpp':>10} {'transformers':>13} {'ratio':>8}")
    for gguf in args.gguf:
        with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
            logits = Path(scratch) / "logits.bin"
            theirs = llama_cpp_perplexity(args.llama_cpp, gguf, args.text, args.ctx, args.chunks, args.threads, logits)
            ctx, _, tokens = logits_file_tokens(logits)
            logits.unlink()
        ours = transformers_perplexity(gguf, ctx, tokens)
        print(f"{gguf.name:<40} {theirs:>10.4f} {ours:>13.4f} {theirs / ours:>8.5f}")


if __name__ == "__main__":
    main()

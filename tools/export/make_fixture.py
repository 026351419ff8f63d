"""Make the tiny random-weight llama the Rust tests run on (committed under data/fixtures).

A 6-block llama (hidden 64, 4 heads / 2 KV heads, tied embeddings) with a small byte-level BPE
tokenizer trained here, exported by export_layered.py, plus `reference.json`: transformers'
logits and next-token NLL for two sequences with the full model, with each single block
deleted, and with a few pairs deleted. The Rust tests check the ONNX chain against it.

Usage: python make_fixture.py --out data/fixtures/tiny-llama
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402

TEXT = """The quick brown fox jumps over the lazy dog. A layer of a network is a block.
Pruning removes blocks that matter least; the game values every coalition of blocks.
Shapley values share the value among players fairly. Calibration text is short.
""" * 20


def build_hf_folder(folder: Path, seed: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT], vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.08,
        eos_token_id=0, bos_token_id=0,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_hf_folder(Path(tmp), args.seed)
        export_args = ["--model", tmp, "--out", args.out, "--seed", str(args.seed)]
        model, manifest = export_layered.main(export_args + (["--force"] if args.force else []))
    rng = np.random.default_rng(args.seed)
    input_ids = rng.integers(0, manifest["vocab_size"], size=(2, 16), dtype=np.int64)
    logits, nll = export_layered.reference(model, input_ids)
    reference = {
        "input_ids": input_ids.tolist(),
        "logits": np.round(logits, 7).tolist(),
        "nll": nll.tolist(),
        "deleted": [],
    }
    num_blocks = manifest["num_blocks"]
    for drop in [(i,) for i in range(num_blocks)] + [(0, 3), (1, 2, 5), tuple(range(num_blocks))]:
        _, dropped_nll = export_layered.reference(model, input_ids, drop=drop)
        reference["deleted"].append({"blocks": list(drop), "nll": dropped_nll.tolist()})
    with open(Path(args.out) / "reference.json", "w") as handle:
        json.dump(reference, handle)
    print(f"wrote {args.out}/reference.json")


if __name__ == "__main__":
    main()

"""Make the tiny random-weight llama the Rust tests run on (committed under data/fixtures).

A 6-block llama (hidden 64, 4 heads / 2 KV heads, tied embeddings) with a small byte-level BPE
tokenizer trained here, exported by export_layered.py, plus `reference.json`: transformers'
logits and next-token NLL for two sequences with the full model, with each single block
deleted, and with a few pairs deleted. The Rust tests check the ONNX chain against it.

Usage: python make_fixture.py --out data/fixtures/tiny-llama
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import one_file  # noqa: E402
import outputs  # noqa: E402

TEXT = """The quick brown fox jumps over the lazy dog. A layer of a network is a block.
Pruning removes blocks that matter least; the game values every coalition of blocks.
Shapley values share the value among players fairly. Calibration text is short.
""" * 20


def build_tokenizer():
    """A byte-level BPE tokenizer of ~300 tokens trained on TEXT (no download)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT], vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")


def build_hf_folder(folder: Path, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
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


# Tiny configurations of the other supported architectures (hidden 64), for the exporter's
# tests: each exercises what sets the architecture apart.
def tiny_config(arch: str, vocab_size: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                  eos_token_id=0, bos_token_id=0, pad_token_id=0)
    rms = dict(intermediate_size=128, num_key_value_heads=2, rms_norm_eps=1e-5, initializer_range=0.08)
    if arch == "llama":
        return tf.LlamaConfig(num_hidden_layers=4, tie_word_embeddings=True, **common, **rms)
    if arch == "llama3":  # Llama 3.1's rope: theta 500k, frequencies rescaled past 8 positions; untied head
        rope = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8)
        return tf.LlamaConfig(num_hidden_layers=4, tie_word_embeddings=False, rope_theta=500000.0,
                              rope_scaling=rope, **common, **rms)
    if arch == "mistral":  # sliding window 4 on every block, untied head
        return tf.MistralConfig(num_hidden_layers=4, sliding_window=4, tie_word_embeddings=False, **common, **rms)
    if arch == "qwen2":  # q/k/v biases; sliding window 4 from block 2 on (max_window_layers)
        return tf.Qwen2Config(num_hidden_layers=5, use_sliding_window=True, sliding_window=4, max_window_layers=2,
                              tie_word_embeddings=True, **common, **rms)
    if arch == "qwen3":  # q/k norms, head_dim 32 ≠ hidden / heads
        return tf.Qwen3Config(num_hidden_layers=4, head_dim=32, tie_word_embeddings=True, **common, **rms)
    if arch == "gemma":  # Gemma 1: (1 + w) norms, scaled embedding, GeGLU, tied head
        return tf.GemmaConfig(num_hidden_layers=4, head_dim=16, tie_word_embeddings=True, **common, **rms)
    if arch == "gemma2":  # sliding window 4 on every other block, attention and final logit softcapping
        return tf.Gemma2Config(num_hidden_layers=4, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                               attn_logit_softcapping=5.0, final_logit_softcapping=5.0, tie_word_embeddings=True,
                               **common, **rms)
    if arch == "phi3":  # fused qkv and gate-up projections, sliding window 4 on every block, untied head
        return tf.Phi3Config(num_hidden_layers=4, sliding_window=4, tie_word_embeddings=False, **common, **rms)
    if arch == "phi":  # Phi-2: parallel attention and MLP under one LayerNorm, rotary on half of each head
        return tf.PhiConfig(num_hidden_layers=4, partial_rotary_factor=0.5, intermediate_size=128,
                            num_key_value_heads=4, tie_word_embeddings=False, initializer_range=0.08, **common)
    if arch == "granite":  # embedding, residual, attention and logit multipliers
        return tf.GraniteConfig(num_hidden_layers=4, embedding_multiplier=2.0, residual_multiplier=0.5,
                                attention_multiplier=0.2, logits_scaling=4.0, tie_word_embeddings=True, **common, **rms)
    if arch == "stablelm":  # LayerNorm, rotary on a quarter of each head, q/k/v biases
        return tf.StableLmConfig(num_hidden_layers=4, partial_rotary_factor=0.25, use_qkv_bias=True,
                                 tie_word_embeddings=False, **common, **rms)
    if arch == "starcoder2":  # LayerNorm, biases, GELU MLP, sliding window 4 on every block
        return tf.Starcoder2Config(num_hidden_layers=4, sliding_window=4, tie_word_embeddings=True, **common, **rms)
    if arch == "cohere":  # parallel attention and MLP under one LayerNorm, interleaved rotary, logit scale
        return tf.CohereConfig(num_hidden_layers=4, logit_scale=0.5, tie_word_embeddings=True, **common, **rms)
    if arch == "olmo2":  # norms after attention and MLP (not before), q/k RMSNorm over all heads
        return tf.Olmo2Config(num_hidden_layers=4, tie_word_embeddings=False, **common, **rms)
    if arch == "gemma3_text":  # 5 local (window 4, rope 10k) then 1 global (rope 1M) per 6 blocks
        return tf.Gemma3TextConfig(num_hidden_layers=8, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                                   final_logit_softcapping=5.0, tie_word_embeddings=True, **common, **rms)
    if arch == "gpt2":  # LayerNorm, learned positions, Conv1D, tied head
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=4, n_head=4, n_positions=128,
                             initializer_range=0.08, eos_token_id=0, bos_token_id=0, tie_word_embeddings=True)
    if arch == "gpt_neox":  # parallel attention + MLP, rotary on a quarter of each head
        return tf.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=128, rotary_pct=0.25,
                                use_parallel_residual=True, tie_word_embeddings=False, initializer_range=0.08,
                                eos_token_id=0, bos_token_id=0)
    if arch == "mamba":  # the block is the residual mixer: conv + selective scan
        return tf.MambaConfig(vocab_size=vocab_size, hidden_size=64, state_size=8, num_hidden_layers=4, expand=2,
                              conv_kernel=4, initializer_range=0.08, eos_token_id=0, bos_token_id=0,
                              pad_token_id=0, tie_word_embeddings=True)
    if arch == "mamba2":  # mixer: conv, chunked scan (16 tokens: a chunk and a padded one), gated norm
        return tf.Mamba2Config(vocab_size=vocab_size, hidden_size=64, state_size=8, num_hidden_layers=4, expand=2,
                               head_dim=16, num_heads=8, n_groups=2, conv_kernel=4, chunk_size=12,
                               initializer_range=0.08, eos_token_id=0, bos_token_id=0, pad_token_id=0,
                               tie_word_embeddings=True)
    raise ValueError(f"no tiny config for {arch!r}")


# Fused attention's fixtures (the exporter's FUSED_MODEL_TYPES and Llama 3.1's rope) are built
# with heads of this size (`build_arch_folder(head_size=)`): ONNX Runtime's node rotates a multiple
# of 16 of a head's dimensions, which the small heads' partial rotary (Phi-2's, StableLM's,
# GPT-NeoX's: 8 or 4 of 16) is not, and GPU flash attention takes heads of 32 to 256.
FUSED_HEAD_SIZE = 64


def fused_fixtures() -> list:
    """The fixtures fused attention is checked on: every architecture it is written for, and
    Llama 3.1's rope."""
    return sorted(export_layered.FUSED_MODEL_TYPES) + ["llama3"]


# Multimodal fixtures: model type → (the tiny language model's arch, a one-layer vision tower).
MULTIMODAL = {"gemma3": "gemma3_text", "llava": "llama", "mistral3": "mistral", "qwen2_vl": "qwen2_vl_text",
              "qwen2_5_vl": "qwen2_5_vl_text", "qwen3_vl": "qwen3_vl_text"}


def multimodal_config(model_type: str, vocab_size: int):
    import transformers as tf

    text = dict(vocab_size=vocab_size, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, num_hidden_layers=4, max_position_embeddings=128, initializer_range=0.08,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})  # Qwen: sections of 8 pairs
    qwen_tokens = dict(image_token_id=5, video_token_id=6, vision_start_token_id=7)
    if model_type == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2)
        return tf.Qwen2VLConfig(text_config=text, vision_config=vision, **qwen_tokens)
    if model_type == "qwen3_vl":  # q/k norms; interleaved sections
        text.update(head_dim=16, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3],
                                               "mrope_interleaved": True})
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0],
                      num_position_embeddings=16)
        return tf.Qwen3VLConfig(text_config=text, vision_config=vision, **qwen_tokens)
    if model_type == "qwen2_5_vl":
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=28, fullatt_block_indexes=[0])
        return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **qwen_tokens)
    text = tiny_config(MULTIMODAL[model_type], vocab_size).to_dict()
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                 patch_size=14)
    if model_type == "gemma3":  # SigLIP tower; the text config's final logit softcapping is set
        return tf.Gemma3Config(text_config=text, vision_config=tf.SiglipVisionConfig(**tower).to_dict(),
                               mm_tokens_per_image=4, image_token_index=5, boi_token_index=6, eoi_token_index=7)
    if model_type == "llava":  # CLIP tower, a llama language model
        return tf.LlavaConfig(text_config=text, vision_config=tf.CLIPVisionConfig(**tower).to_dict(),
                              image_token_index=5)
    if model_type == "mistral3":  # Pixtral tower, a mistral language model (sliding window 4)
        return tf.Mistral3Config(text_config=text, vision_config=tf.PixtralVisionConfig(**tower, head_dim=16).to_dict(),
                                 image_token_index=5)
    raise ValueError(f"no tiny multimodal config for {model_type!r}")


def build_multimodal_folder(folder: Path, model_type: str, seed: int):
    """A tiny random-weight multimodal checkpoint of `model_type` (MULTIMODAL): a tiny language
    model of the architectures above and a one-layer vision tower."""
    import transformers as tf

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = tf.AutoModelForImageTextToText.from_config(multimodal_config(model_type, len(tokenizer)))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_arch_folder(folder: Path, arch: str, seed: int, dtype=torch.float32, head_size=None):
    """A tiny random-weight checkpoint of `arch` saved in `dtype`. Every 1-D parameter (norm
    weights, biases) is perturbed too, so that none is left at its identity initialisation.
    With `head_size`, 2 query heads and 1 key-value head of that size (hidden 2 × head_size)
    instead of the fixture's small heads: a size GPU attention kernels have (flash attention
    takes 32, 64, … 256; the fixtures' 16 is not one)."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer))
    if head_size is not None:
        config.hidden_size, config.num_attention_heads = 2 * head_size, 2
        for name, value in (("num_key_value_heads", 1), ("head_dim", head_size)):
            if hasattr(config, name):
                setattr(config, name, value)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv=None):
    """Exports the fixture and writes its reference.json in a staging folder beside --out, and
    puts the folder in place only once both are written (outputs.replace_folder): a failure or a
    kill leaves no folder whose manifest makes it look complete without its reference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    outputs.refuse_unwritable("make_fixture", out, folder=True)
    if out.exists() and not args.force:
        sys.exit(f"make_fixture: error: {out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = one_file.staging_folder(out)
    try:
        folder = staging / out.name
        with tempfile.TemporaryDirectory() as tmp:
            build_hf_folder(Path(tmp), args.seed)
            model, manifest = export_layered.main(["--model", tmp, "--out", str(folder), "--seed", str(args.seed)])
        write_reference(model, manifest, folder, args.seed)
        outputs.replace_folder(folder, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out} with its reference.json")


def write_reference(model, manifest: dict, folder: Path, seed: int):
    """transformers' logits and NLL (reference.json) beside the exported folder's graphs, listed
    in its manifest's `files` as every file but the manifest is (docs/model-format.md), so that
    verifying the folder covers it."""
    rng = np.random.default_rng(seed)
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
    with open(folder / "reference.json", "w") as handle:
        json.dump(reference, handle)
    written = json.loads((folder / "manifest.json").read_text())
    written["files"]["reference.json"] = export_layered.sha256_file(folder / "reference.json")
    written["files"] = dict(sorted(written["files"].items()))
    with open(folder / "manifest.json", "w") as handle:  # as the exporter writes it
        json.dump(written, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()

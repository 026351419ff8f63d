"""How transformers' GGUF loader (5.23) names what a GGUF file's `general.architecture` names, in
one place for the exporter (export_layered.py) and for `make prune`, which reads a GGUF file's
header with the system Python before any environment exists (tools/prune/report.py): the
standard library only."""

# The `general.architecture`s transformers' GGUF loader renames before it looks them up in its
# GGUF_SUPPORTED_ARCHITECTURES (load_gguf_checkpoint).
TRANSFORMERS_GGUF_RENAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                             "minimax-m2": "minimax_m2", "t5encoder": "t5"}
# A GGUF architecture → the transformers model type its loader makes of it, where the two differ
# (after the renames above).
GGUF_MODEL_TYPES = {"gemma3": "gemma3_text", "gemma4": "gemma4_text"}


def gguf_model_type(architecture: str) -> str:
    """The model_type transformers loads a GGUF file of `general.architecture` as (a llama file
    whose general.name is exactly `mistral` aside, which it cannot load)."""
    renamed = TRANSFORMERS_GGUF_RENAMES.get(architecture, architecture)
    return GGUF_MODEL_TYPES.get(renamed, renamed)

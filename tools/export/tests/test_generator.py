"""export_generator.py: the KV-cache ONNX decoder of a pruned checkpoint generates what
transformers generates.

For each supported architecture a tiny random-weight checkpoint (make_fixture.build_arch_folder:
hidden 64, 4-8 blocks, sliding windows of 4) is pruned by prune_hf.py (1 or 2 blocks, so kept
blocks change index) and exported. The tool's own check compares its greedy generation through
the cache with transformers' `generate(do_sample=False)`; the tests then check the file
independently: its inputs and outputs by name and shape, and greedy generation through the
cache against transformers' forward pass over the whole generated sequence without a cache.
Then the refusals and the failures: an unsupported architecture, an output that is an input,
and a check that fails (a wrong attention window, a shifted Gemma 3 pattern, a zero tolerance)
leaving no file behind. Nothing is downloaded; every model is built in a temporary folder.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402

TOOLS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOOLS))
import export_generator  # noqa: E402
import export_layered  # noqa: E402
import make_fixture  # noqa: E402
import prune_hf  # noqa: E402

# Blocks removed per architecture: kept blocks change index, and where the attention types are
# mixed (Qwen2: full on blocks 0-1, sliding from 2 on; Gemma 3: global on block 5 of 8) the kept
# ones keep their original types at new indices.
REMOVED = {"llama": "1", "llama3": "2", "gemma": "1", "gemma2": "0,1", "phi": "2", "phi3": "1", "olmo2": "3",
           "granite": "1,2", "stablelm": "0", "starcoder2": "2", "cohere": "1", "mistral": "0,2", "qwen2": "1,3", "qwen3": "2", "gemma3_text": "0,2"}
FP32_TOLERANCE = 1e-4

_PRUNED = {}


def pruned_checkpoint(arch, tmp_path_factory, dtype=torch.float32):
    """A tiny `arch` checkpoint with REMOVED[arch] deleted by prune_hf.py, built once per session."""
    key = (arch, dtype)
    if key not in _PRUNED:
        root = tmp_path_factory.mktemp(f"{arch}-{str(dtype).replace('torch.', '')}")
        make_fixture.build_arch_folder(root / "hf", arch, seed=23, dtype=dtype)
        prune_hf.main(["--model", str(root / "hf"), "--remove", REMOVED[arch], "--out", str(root / "pruned")])
        _PRUNED[key] = root / "pruned"
    return _PRUNED[key]


def load(folder, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.config._attn_implementation = "eager"
    return model.eval()


def greedy_through_cache(path, config, prompt, new_tokens):
    """The test's own runtime loop (one sequence, no padding): the prompt with empty past
    tensors, then one token per step, each step's presents fed back as the next past."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    kv_heads, head_dim = export_generator.kv_shape(config)
    past = {f"past_key_values.{i}.{kind}": np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
            for i in range(config.num_hidden_layers) for kind in ("key", "value")}
    ids, tokens, step_logits = prompt, [], []
    for _ in range(new_tokens):
        length = past["past_key_values.0.key"].shape[2] + ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, length), dtype=np.int64),
                 "position_ids": np.arange(length - ids.shape[1], length, dtype=np.int64)[None, :], **past}
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for i in range(config.num_hidden_layers):
            for kind in ("key", "value"):
                present = outputs[f"present.{i}.{kind}"]
                assert present.shape == (1, kv_heads, length, head_dim)  # the full past, never cut to a window
                past[f"past_key_values.{i}.{kind}"] = present
        step_logits.append(outputs["logits"][0, -1])
        tokens.append(int(outputs["logits"][0, -1].argmax()))
        ids = np.array([[tokens[-1]]], dtype=np.int64)
    return tokens, np.stack(step_logits)


@pytest.mark.parametrize("arch", sorted(REMOVED))
def test_pruned_model_generates_like_transformers(arch, tmp_path_factory, tmp_path):
    pruned = pruned_checkpoint(arch, tmp_path_factory)
    out = tmp_path / "decoder.onnx"
    result = export_generator.main(["--model", str(pruned), "--out", str(out)])
    # The tool's check: its greedy tokens equal transformers' generate, every step within 1e-4.
    print(f"{arch}: check max |logit diff| {result['max_abs_logit_diff']:.2e} "
          f"(relative {result['max_rel_logit_diff']:.2e})")
    assert result["near_tie_steps"] == [] and result["steps_compared"] == 8
    assert result["max_abs_logit_diff"] < FP32_TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx"]  # no data file, no staging left

    model = load(pruned)
    config = model.config
    layers = config.num_hidden_layers
    original = json.loads((pruned.parent / "hf" / "config.json").read_text())["num_hidden_layers"]
    assert layers == original - len(REMOVED[arch].split(","))  # past/present for the kept layers only
    import onnx

    graph = onnx.load(str(out)).graph
    kv_heads, head_dim = export_generator.kv_shape(config)
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "position_ids", *past]
    assert [o.name for o in graph.output] == ["logits", *present]

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    shapes = {v.name: dims(v) for v in [*graph.input, *graph.output]}
    assert shapes["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert shapes["logits"] == ["batch_size", "sequence_length", config.vocab_size]
    assert shapes["past_key_values.0.key"] == ["batch_size", kv_heads, "past_sequence_length", head_dim]
    assert shapes[f"present.{layers - 1}.value"] == ["batch_size", kv_heads, "total_sequence_length", head_dim]

    # Independently: 12 tokens (past the windows of 4) through the cache, then transformers over
    # the whole sequence at once without a cache: same logits at every generated position, and
    # each token is their argmax.
    prompt = np.random.default_rng(5).integers(1, config.vocab_size, size=(1, 5), dtype=np.int64)
    tokens, step_logits = greedy_through_cache(out, config, prompt, 12)
    sequence = torch.from_numpy(np.concatenate([prompt, np.array([tokens])], axis=1))
    with torch.no_grad():
        full = model(input_ids=sequence, use_cache=False).logits[0, prompt.shape[1] - 1:-1].float().numpy()
    diff = float(np.abs(step_logits - full).max())
    print(f"{arch}: 12 tokens through the cache vs transformers without a cache: max |logit diff| {diff:.2e}")
    assert diff < FP32_TOLERANCE
    assert tokens == full.argmax(axis=-1).tolist()


def test_the_reference_is_plain_greedy_decoding(tmp_path_factory):
    """The check's transformers side: with the checkpoint's end-of-sequence token (0) and a
    repetition penalty in its generation_config, generate still runs every step and chooses the
    argmax of the raw logits."""
    model = load(pruned_checkpoint("llama", tmp_path_factory))
    model.generation_config.repetition_penalty = 5.0
    ids = np.random.default_rng(1).integers(1, model.config.vocab_size, size=(2, 6), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    tokens, logits = export_generator.transformers_greedy(model, ids, mask, 16)
    assert tokens.shape == (2, 16) and len(logits) == 16
    assert (tokens == np.stack([step.argmax(axis=-1) for step in logits], axis=1)).all()
    assert model.generation_config.repetition_penalty == 5.0  # put back


def test_gemma3_kept_blocks_keep_their_attention_type(tmp_path_factory):
    model = load(pruned_checkpoint("gemma3_text", tmp_path_factory))
    kept = model.config.layerprune_kept_blocks
    assert kept == [1, 3, 4, 5, 6, 7]
    # Block 5 (global, rope 1M) is the 4th kept block; the others are local with window 4.
    expected = [("full_attention", None) if b == 5 else ("sliding_attention", 4) for b in kept]
    assert export_generator.Generator(model).attention == expected


def test_a_failing_check_writes_nothing_and_keeps_the_old_file(tmp_path_factory, tmp_path, monkeypatch):
    pruned = pruned_checkpoint("mistral", tmp_path_factory)
    out = tmp_path / "decoder.onnx"
    out.write_bytes(b"the previous file")
    # A decoder that ignores Mistral's sliding window: the check sees it on the first step.
    monkeypatch.setattr(export_layered.Architecture, "block_attention", lambda self, index: ("full_attention", None))
    with pytest.raises(SystemExit, match="differ from transformers"):
        export_generator.main(["--model", str(pruned), "--out", str(out), "--force"])
    assert out.read_bytes() == b"the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx"]


def test_a_shifted_gemma3_pattern_fails_the_check(tmp_path_factory, tmp_path, monkeypatch):
    """What a decoder taking the pattern of the NEW index would do (global on the 6th kept block
    instead of the 4th): refused, nothing written."""
    pruned = pruned_checkpoint("gemma3_text", tmp_path_factory)
    monkeypatch.setattr(export_layered.Architecture, "block_attention",
                        lambda self, index: ("full_attention", None) if index == 5 else ("sliding_attention", 4))
    with pytest.raises(SystemExit, match="differ from transformers"):
        export_generator.main(["--model", str(pruned), "--out", str(tmp_path / "g.onnx")])
    assert list(tmp_path.iterdir()) == []


def test_an_fp16_decoder_farther_from_float32_than_allowed_is_refused(tmp_path_factory, tmp_path, monkeypatch):
    pruned = pruned_checkpoint("llama", tmp_path_factory)
    greedy = export_generator.onnx_greedy

    def off_by_half(*args, **kwargs):  # what a wrong graph gives: far beyond any rounding
        tokens, logits = greedy(*args, **kwargs)
        return tokens, [step + 0.5 for step in logits]

    monkeypatch.setattr(export_generator, "onnx_greedy", off_by_half)
    with pytest.raises(SystemExit, match="differ from the float32 computation of its weights by .* over the tolerance"):
        export_generator.main(["--model", str(pruned), "--out", str(tmp_path / "g.onnx"), "--dtype", "fp16"])
    assert list(tmp_path.iterdir()) == []


def test_an_fp16_decoder_of_a_model_near_float16s_range_is_refused(tmp_path_factory, tmp_path):
    pruned = pruned_checkpoint("llama", tmp_path_factory)
    with pytest.raises(SystemExit, match=r"^export_generator: error: this model's activations reach .* "
                                         r"--fp16-margin 1e\+06"):
        export_generator.main(["--model", str(pruned), "--out", str(tmp_path / "g.onnx"), "--dtype", "fp16",
                               "--fp16-margin", "1e6"])
    assert list(tmp_path.iterdir()) == []


def test_zero_tolerance_fails_and_writes_nothing(tmp_path_factory, tmp_path):
    pruned = pruned_checkpoint("qwen3", tmp_path_factory)
    with pytest.raises(SystemExit, match="over the tolerance 0"):
        export_generator.main(["--model", str(pruned), "--out", str(tmp_path / "g.onnx"), "--tolerance", "0"])
    assert list(tmp_path.iterdir()) == []


def test_large_weights_go_to_one_data_file(tmp_path_factory, tmp_path, monkeypatch):
    pruned = pruned_checkpoint("llama", tmp_path_factory)
    out = tmp_path / "decoder.onnx"
    monkeypatch.setattr(export_generator, "PROTOBUF_LIMIT", 0)  # as if the weights were over 2 GB
    result = export_generator.main(["--model", str(pruned), "--out", str(out)])
    assert result["max_abs_logit_diff"] < FP32_TOLERANCE  # checked with the weights in the data file
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0] == "decoder.onnx", names
    data = tmp_path / names[1]  # decoder.onnx.<token>.data: the name its graph gives it
    assert data.name.startswith("decoder.onnx.") and data.name.endswith(".data")
    assert out.stat().st_size < data.stat().st_size
    import onnx

    initializers = onnx.load(str(out), load_external_data=False).graph.initializer
    external = [t for t in initializers if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {e.value for t in external for e in t.external_data if e.key == "location"} == {data.name}
    assert {t.name for t in external} >= {"embed_tokens.weight"} and len(external) >= 7 * 3
    assert all(len(t.raw_data) < 1024 for t in initializers if t.data_location != onnx.TensorProto.EXTERNAL)
    # Exported again under the limit: one file, and the stale data file goes.
    monkeypatch.undo()
    export_generator.main(["--model", str(pruned), "--out", str(out), "--force"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx"]


@pytest.mark.parametrize("dtype,runner", [("fp16", "ort"), ("bf16", "reference")])
def test_reduced_precision_from_a_bf16_checkpoint(dtype, runner, tmp_path_factory, tmp_path):
    """A bf16 checkpoint exported in fp16 (ONNX Runtime runs it) and in its own dtype (`auto`:
    bf16, which ONNX Runtime's CPU provider cannot run, so the check uses onnx.reference)."""
    pruned = pruned_checkpoint("qwen2", tmp_path_factory, dtype=torch.bfloat16)
    flag = "auto" if dtype == "bf16" else dtype
    result = export_generator.main(["--model", str(pruned), "--out", str(tmp_path / "g.onnx"), "--dtype", flag])
    print(f"qwen2 {dtype}: check max |logit diff| {result['max_abs_logit_diff']:.2e}")
    assert result["runner"] == runner
    assert result["max_abs_logit_diff"] < export_generator.DEFAULT_TOLERANCE[dtype]
    exact = result["float32_reference"]
    assert exact["chain_logit_diff"] <= exact["logit_limit"] == result["tolerance"]
    assert exact["logit_limit"] >= 2 * exact["transformers_logit_diff"]
    import onnx

    past = onnx.load(str(tmp_path / "g.onnx")).graph.input[3]
    expected = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[dtype]
    assert past.type.tensor_type.elem_type == expected
    if dtype == "bf16":  # every bf16 operation has a kernel in ONNX Runtime's CUDA provider
        assert export_layered.operators_reading([tmp_path / "g.onnx"], expected) <= export_layered.CUDA_BF16_OPS


def test_reduced_precision_attention_is_computed_in_float32_unless_asked_otherwise(tmp_path_factory, tmp_path):
    """As the layered exporter: an fp16 decoder's attention MatMuls read float32 by default, the
    dtype with --attention-precision model; both pass the check."""
    import onnx

    pruned = pruned_checkpoint("qwen2", tmp_path_factory)
    float32_matmul = {}
    for precision in export_layered.ATTENTION_PRECISIONS:
        out = tmp_path / f"{precision}.onnx"
        export_generator.main(["--model", str(pruned), "--out", str(out), "--dtype", "fp16",
                               "--attention-precision", precision])
        float32_matmul[precision] = "MatMul" in export_layered.operators_reading([out], onnx.TensorProto.FLOAT)
    assert float32_matmul == {"float32": True, "model": False}


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
def test_the_float32_reference_of_a_generation_is_its_greedy_logits_in_float32(arch, tmp_path_factory):
    """The reduced-precision check's reference: one forward pass over the prompts (the second
    left-padded) and the chosen tokens gives, in float32, the logits transformers' own greedy
    generation through its cache gives step by step."""
    model = load(pruned_checkpoint(arch, tmp_path_factory))
    rng = np.random.default_rng(3)
    input_ids = rng.integers(1, model.config.vocab_size, size=(2, 6), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    input_ids[1, :2], attention_mask[1, :2] = 0, 0
    tokens, step_logits = export_generator.transformers_greedy(model, input_ids, attention_mask, 8)
    forced = export_generator.float32_step_logits(model, input_ids, attention_mask, tokens)
    assert len(forced) == 8
    assert max(float(np.abs(a - b).max()) for a, b in zip(forced, step_logits)) < 1e-4


def test_unsupported_architecture_is_refused_by_name(tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2",
                                                               "architectures": ["GPT2LMHeadModel"]}))
    result = subprocess.run([sys.executable, str(TOOLS / "export_generator.py"), "--model", str(tmp_path / "gpt2"),
                             "--out", str(tmp_path / "g.onnx")], capture_output=True, text=True)
    assert result.returncode != 0
    supported = ", ".join(sorted(export_generator.SUPPORTED_MODEL_TYPES))
    assert ("model type 'gpt2' (GPT2LMHeadModel) is not supported by the KV-cache exporter; supported model "
            f"types: {supported}") in result.stderr
    assert "gpt2" not in export_generator.SUPPORTED_MODEL_TYPES and "llama" in supported
    assert not (tmp_path / "g.onnx").exists()


def test_an_output_that_is_an_input_is_refused(tmp_path_factory, tmp_path):
    import shutil

    folder = tmp_path / "hf"
    shutil.copytree(pruned_checkpoint("llama", tmp_path_factory), folder)
    (folder / "model.onnx").write_bytes(b"an input")
    (tmp_path / "link.onnx").hardlink_to(folder / "model.onnx")
    for out in (folder, folder / "model.onnx", tmp_path / "link.onnx"):
        with pytest.raises(SystemExit, match="is the model folder|would overwrite the input file"):
            export_generator.main(["--model", str(folder), "--out", str(out), "--force"])
    assert (folder / "model.onnx").read_bytes() == b"an input"

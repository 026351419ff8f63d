"""The exporter and prune_hf.py on tiny random-weight models of every supported architecture.

Each checkpoint (hidden 64, 4-8 blocks, a ~300-token BPE tokenizer trained locally) is built in a
temporary folder by make_fixture.build_arch_folder; nothing is downloaded or committed. For each
architecture: (a) the chained ONNX graphs against transformers' logits, (b) skipping block i in
the chain against transformers with block i deleted from the layer list, (c) the checkpoint
prune_hf.py writes, reloaded by transformers, against the chain with those blocks skipped.
Then the reduced-precision exports (fp16, bf16) against transformers in the same dtype.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402
import onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_layered  # noqa: E402
import make_fixture  # noqa: E402
import prune_hf  # noqa: E402

# The supported model types, and "llama3": a llama with Llama 3.1's rescaled rope frequencies
# (make_fixture.tiny_config), the rope most Llama checkpoints in use have.
ARCHITECTURES = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
                 "olmo2", "granite", "stablelm", "starcoder2", "cohere", "gpt2", "gpt_neox", "mamba", "mamba2"]
MODEL_TYPE = {"llama3": "llama"}
FP32_TOLERANCE = 1e-4
# Sequences longer than every sliding window (4), so windows and local/global rope matter; also
# the length Mamba's block graphs are unrolled for (--fixed-seq-len, ignored by the others).
SEQ_LEN = 16
FIXED = ["--fixed-seq-len", str(SEQ_LEN)]


def ids_for(manifest, seed, batch=2, length=SEQ_LEN):
    rng = np.random.default_rng(seed)
    return rng.integers(0, manifest["vocab_size"], size=(batch, length), dtype=np.int64)


def max_diffs(out, manifest, model, ids, drop=(), runner=None):
    expected_logits, expected_nll = export_layered.reference(model, ids, drop=drop)
    logits, nll = export_layered.run_chain(out, manifest, ids, drop=drop, runner=runner)
    return float(np.abs(logits - expected_logits).max()), float(np.abs(nll - expected_nll).max())


_EXPORTS = {}


def export_fp32(arch, tmp_path_factory):
    """The fp32 checkpoint and export of `arch`, built once per test session."""
    if arch not in _EXPORTS:
        root = tmp_path_factory.mktemp(arch)
        make_fixture.build_arch_folder(root / "hf", arch, seed=11)
        model, manifest = export_layered.main(["--model", str(root / "hf"), "--out", str(root / "onnx"), *FIXED])
        _EXPORTS[arch] = (arch, root / "hf", model, manifest, root / "onnx")
    return _EXPORTS[arch]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request, tmp_path_factory):
    return export_fp32(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    return export_fp32("gemma3_text", tmp_path_factory)


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    return export_fp32("mistral", tmp_path_factory)


def test_chain_matches_transformers(exported):
    arch, _, model, manifest, out = exported
    assert manifest["architecture"] == MODEL_TYPE.get(arch, arch)
    assert manifest["check"]["max_abs_logit_diff"] < FP32_TOLERANCE
    logit_diff, nll_diff = max_diffs(out, manifest, model, ids_for(manifest, 0))
    print(f"{arch}: full chain max |logit diff| {logit_diff:.2e}, |nll diff| {nll_diff:.2e}")
    assert logit_diff < FP32_TOLERANCE and nll_diff < FP32_TOLERANCE
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 4 << 20, f"the tiny {arch} folder is {size} bytes"


def test_skipping_each_block_equals_deleting_it(exported):
    arch, _, model, manifest, out = exported
    n = manifest["num_blocks"]
    ids = ids_for(manifest, 1)
    worst = 0.0
    for drop in [(i,) for i in range(n)] + [(0, n - 1), (1, 2)]:
        logit_diff, nll_diff = max_diffs(out, manifest, model, ids, drop=drop)
        assert logit_diff < FP32_TOLERANCE and nll_diff < FP32_TOLERANCE, (arch, drop, logit_diff, nll_diff)
        worst = max(worst, logit_diff)
    print(f"{arch}: skipped blocks, worst max |logit diff| {worst:.2e}")


def test_pruned_checkpoint_matches_chain_with_blocks_skipped(exported, tmp_path):
    from transformers import AutoModelForCausalLM

    arch, hf, _, manifest, out = exported
    n = manifest["num_blocks"]
    removed = (1, n - 2)
    kept = [i for i in range(n) if i not in removed]
    prune_hf.main(["--model", str(hf), "--remove", ",".join(map(str, removed)), "--out", str(tmp_path / "p")])
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "p", dtype="auto")
    pruned.config._attn_implementation = "eager"
    pruned.eval()
    assert pruned.config.num_hidden_layers == len(kept)
    assert pruned.config.layerprune_kept_blocks == kept
    assert next(pruned.parameters()).dtype == torch.float32
    # Its parameters before and after, as transformers counts them (a tied head once): what the
    # blocks removed held, and nothing else, is gone.
    source = AutoModelForCausalLM.from_pretrained(hf)
    count = lambda m: sum(p.numel() for p in m.parameters())
    per_block = count(export_layered.Architecture(source).layers[0])
    assert pruned.config.layerprune_parameters == {"source": count(source), "pruned": count(pruned)}
    assert count(source) - count(pruned) == len(removed) * per_block
    original = json.loads((hf / "config.json").read_text())
    if "layer_types" in original:
        assert pruned.config.layer_types == [original["layer_types"][i] for i in kept]
    ids = ids_for(manifest, 2)
    logits, nll = export_layered.run_chain(out, manifest, ids, drop=removed)
    with torch.no_grad():
        expected = pruned(input_ids=torch.from_numpy(ids), use_cache=False).logits.float().numpy()
    diff = float(np.abs(logits - expected).max())
    print(f"{arch}: pruned checkpoint vs chain max |logit diff| {diff:.2e}")
    assert diff < FP32_TOLERANCE


# The project's own stages (`make test-export` passes them): the evaluator these folders are for.
STAGES = os.environ.get("LAYERPRUNE_BIN")


def assert_the_rust_evaluator_gives_transformers_nll(arch, model, manifest, out, tmp_path):
    """`evaluate` (Rust, ONNX Runtime) on an exported folder, the full model and block 1 skipped,
    against transformers' NLL on the same windows: what a user's `make prune` computes."""
    import pyarrow.parquet as pq

    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog, and the dog sleeps on. " * 20)
    tokens = tmp_path / "tokens.parquet"
    stage = lambda name, *args: subprocess.run([str(Path(STAGES) / name), *map(str, args)],
                                               capture_output=True, text=True, check=True)
    stage("prepare-tokens", "--model", out, "--text", text, "--windows", 3, "--seq-len", SEQ_LEN, "--bos", "off",
          "--out", tokens)
    ids = np.array(pq.read_table(tokens).column("tokens").to_pylist(), dtype=np.int64)
    num_blocks = manifest["num_blocks"]
    skip_one = "".join("0" if i == 1 else "1" for i in range(num_blocks))
    evaluations = tmp_path / "evaluations.parquet"
    stage("evaluate", "--model", out, "--tokens", tokens, "--mask", "1" * num_blocks, "--mask", skip_one,
          "--threads", 1, "--out", evaluations)
    measured = {row["mask_id"]: row["nll"] for row in pq.read_table(evaluations).to_pylist()}
    for mask, drop in (("1" * num_blocks, ()), (skip_one, (1,))):
        _, expected = export_layered.reference(model, ids, drop=drop)
        assert abs(measured[mask] - float(expected.mean())) < FP32_TOLERANCE, (arch, mask)


@pytest.mark.skipif(not STAGES, reason="needs the Rust stages: LAYERPRUNE_BIN (make test-export sets it)")
def test_the_rust_evaluator_gives_transformers_nll(exported, tmp_path):
    """On every architecture (a manifest the evaluator refuses, e.g. a null size, fails here)."""
    arch, _, model, manifest, out = exported
    assert_the_rust_evaluator_gives_transformers_nll(arch, model, manifest, out, tmp_path)


@pytest.mark.skipif(not STAGES, reason="needs the Rust stages: LAYERPRUNE_BIN (make test-export sets it)")
def test_block_statistics_of_an_fp16_export_are_its_fp32_exports(tmp_path):
    """`evaluate --block-stats` widens fp16 hidden states (it refused them, after every mask)."""
    import pyarrow.parquet as pq

    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=43)
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog, and the dog sleeps on. " * 20)
    stage = lambda name, *args: subprocess.run([str(Path(STAGES) / name), *map(str, args)],
                                               capture_output=True, text=True, check=True)
    stats = {}
    for dtype in ("fp32", "fp16"):
        out = tmp_path / dtype
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(out), "--dtype", dtype,
                             "--attention-kernel", "standard", "--no-check", *FIXED])
        tokens = tmp_path / f"tokens-{dtype}.parquet"
        stage("prepare-tokens", "--model", out, "--text", text, "--windows", 2, "--seq-len", SEQ_LEN,
              "--bos", "off", "--out", tokens)
        stage("evaluate", "--model", out, "--tokens", tokens, "--threads", 1, "--out", tmp_path / f"e-{dtype}.parquet",
              "--block-stats", tmp_path / f"s-{dtype}.parquet")
        rows = pq.read_table(tmp_path / f"s-{dtype}.parquet").to_pylist()
        stats[dtype] = {(r["start_block"], r["run_length"]): r["angular_distance"] for r in rows}
    assert stats["fp16"].keys() == stats["fp32"].keys() and stats["fp32"]
    diff = max(abs(stats["fp16"][key] - stats["fp32"][key]) for key in stats["fp32"])
    print(f"fp16 vs fp32 block statistics: max |angular distance diff| {diff:.2e}")
    assert 0 < max(stats["fp32"].values()) and diff < 1e-3, diff


def test_manifest_records_each_blocks_attention(exported):
    arch, _, model, manifest, _ = exported
    # Every folder names the width of its blocks' inner projection (evaluate refuses a null).
    assert manifest["intermediate_size"] == (128 if arch != "gpt2" else 256)
    # The checkpoint's context, which evaluate holds windows to (none for Mamba: no positions).
    assert manifest.get("context_length") == export_layered.context_length(model.config)
    assert (manifest.get("context_length") is None) == (arch in ("mamba", "mamba2"))
    if arch in ("mamba", "mamba2"):
        assert "attention" not in manifest and manifest["fixed_seq_len"] == SEQ_LEN
        return
    assert "fixed_seq_len" not in manifest
    kinds = [(a["type"], a["window"]) for a in manifest["attention"]]
    n = manifest["num_blocks"]
    expected = {
        "mistral": [("sliding_attention", 4)] * n,
        "phi3": [("sliding_attention", 4)] * n,
        "starcoder2": [("sliding_attention", 4)] * n,
        "gemma2": [("sliding_attention", 4), ("full_attention", None)] * (n // 2),
        "qwen2": [("full_attention", None)] * 2 + [("sliding_attention", 4)] * (n - 2),
        "gemma3_text": [("sliding_attention", 4)] * 5 + [("full_attention", None)] + [("sliding_attention", 4)] * 2,
    }.get(arch, [("full_attention", None)] * n)
    assert kinds == expected


def _gemma_reference_with_shifted_pattern(model, ids, drop):
    """What a WRONG export would give: the kept blocks take the pattern of their new index."""
    config, layers = model.config, model.model.layers
    saved_types, saved_n = list(config.layer_types), config.num_hidden_layers
    kept = [i for i in range(saved_n) if i not in drop]
    model.model.layers = torch.nn.ModuleList([layers[i] for i in kept])
    config.num_hidden_layers = len(kept)
    config.layer_types = saved_types[: len(kept)]
    try:
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(ids), use_cache=False).logits.float().numpy()
    finally:
        model.model.layers, config.num_hidden_layers, config.layer_types = layers, saved_n, saved_types


def test_a_pruned_checkpoint_whose_blocks_reload_with_other_attention_is_refused(gemma3, tmp_path, monkeypatch):
    """The reload check compares every kept block's attention settings (sliding or global, the
    window): per-layer lists cut wrongly (here rotated, as an off-by-one would) are refused,
    nothing written, however long the windows are against the check's 32 tokens."""
    _, hf, _, _, _ = gemma3
    cut = export_layered.per_layer_lists
    monkeypatch.setattr(export_layered, "per_layer_lists",
                        lambda config: {k: v[1:] + v[:1] for k, v in cut(config).items()})
    with pytest.raises(SystemExit, match="other attention settings than the pruned model's"):
        prune_hf.main(["--model", str(hf), "--remove", "2", "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


def test_gemma3_removed_block_does_not_shift_the_global_local_pattern(gemma3, tmp_path):
    _, hf, model, manifest, out = gemma3
    from transformers import AutoModelForCausalLM

    ids = ids_for(manifest, 3)
    drop = (2,)  # block 5 (global) becomes the 5th kept block: a shifted pattern would make 6 global
    logits, _ = export_layered.run_chain(out, manifest, ids, drop=drop)
    expected, _ = export_layered.reference(model, ids, drop=drop)
    assert np.abs(logits - expected).max() < FP32_TOLERANCE
    shifted = _gemma_reference_with_shifted_pattern(model, ids, drop)
    assert np.abs(logits - shifted).max() > 1e-2, "the test cannot tell the patterns apart"
    # The pruned checkpoint: each kept attention is sliding/global as at its original index.
    prune_hf.main(["--model", str(hf), "--remove", "2", "--out", str(tmp_path / "p")])
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    kept = [0, 1, 3, 4, 5, 6, 7]
    assert [layer.self_attn.is_sliding for layer in pruned.model.layers] == [i != 5 for i in kept]
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == list(range(7))


def test_mistral_graph_applies_the_sliding_window(mistral):
    _, _, model, manifest, out = mistral
    ids = ids_for(manifest, 4)
    logits, _ = export_layered.run_chain(out, manifest, ids)
    saved = model.config.sliding_window
    model.config.sliding_window = None
    try:
        no_window, _ = export_layered.reference(model, ids)
    finally:
        model.config.sliding_window = saved
    assert np.abs(logits - no_window).max() > 1e-2, "the window made no difference: the test is blind"


def test_prune_refuses_gpt2_per_index_attention_scale(tmp_path_factory, tmp_path):
    import shutil

    _, hf, _, _, _ = export_fp32("gpt2", tmp_path_factory)
    shutil.copytree(hf, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["scale_attn_by_inverse_layer_idx"] = True
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="scale_attn_by_inverse_layer_idx"):
        prune_hf.main(["--model", str(tmp_path / "hf"), "--remove", "1", "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def mamba(request, tmp_path_factory):
    return export_fp32(request.param, tmp_path_factory)


def test_mamba_blocks_run_their_fixed_length_only(mamba):
    import onnxruntime as ort

    _, _, _, manifest, out = mamba
    session = ort.InferenceSession(str(out / manifest["blocks"][0]["file"]), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch stays dynamic
        hidden = np.random.default_rng(batch).standard_normal((batch, SEQ_LEN, 64)).astype(np.float32)
        assert session.run(None, {"hidden_states": hidden})[0].shape == (batch, SEQ_LEN, 64)
    with pytest.raises(Exception, match="INVALID_ARGUMENT|Got invalid dimensions"):
        session.run(None, {"hidden_states": np.zeros((1, SEQ_LEN + 1, 64), dtype=np.float32)})


# Reduced precision: the graphs in fp16 / bf16 against transformers in the same dtype. The
# tolerance is the exporter's default (DEFAULT_TOLERANCE, docs/model-format.md); ONNX Runtime's CPU
# provider runs the fp16 graphs, the bf16 ones only run in onnx.reference (see below). The
# standard attention kernel, named: --attention-kernel auto would fuse most of them (fused
# attention in fp16 / bf16 has its own tests below).
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_reduced_precision_export_matches_transformers_in_that_dtype(arch, dtype, tmp_path):
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=13)
    model, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                           "--dtype", dtype, "--attention-kernel", "standard",
                                           "--check-sequences", "2", "--check-length", "16", *FIXED])
    assert manifest["dtype"] == export_layered.DTYPE_NAMES[dtype]
    assert next(model.parameters()).dtype == export_layered.DTYPES[dtype]
    check = manifest["check"]
    assert check["runner"] == ("reference" if dtype == "bf16" else "ort")
    tolerance = export_layered.DEFAULT_TOLERANCE[dtype]
    logit_diff, nll_diff = max_diffs(tmp_path / "onnx", manifest, model, ids_for(manifest, 5), drop=(1,))
    print(f"{arch} {dtype}: check max |logit diff| {check['max_abs_logit_diff']:.2e}, "
          f"block 1 skipped {logit_diff:.2e} (nll {nll_diff:.2e}), tolerance {tolerance:g}")
    assert max(check["max_abs_logit_diff"], logit_diff, nll_diff) < tolerance
    # fp16 only: the range check ran before the export, on float32 activations.
    assert ("float16_range" in manifest) == (dtype == "fp16")
    if dtype == "bf16":  # every bf16 operation has a kernel in ONNX Runtime's CUDA provider
        assert ops_reading(tmp_path / "onnx", onnx.TensorProto.BFLOAT16) <= export_layered.CUDA_BF16_OPS
    exact = check["float32_reference"]
    assert exact["chain_logit_diff"] <= exact["logit_limit"] and exact["chain_nll_diff"] <= exact["nll_limit"]
    assert exact["logit_limit"] == max(check["tolerance"], 2 * exact["transformers_logit_diff"])


def ops_reading(folder: Path, elem_type: int) -> set:
    return export_layered.operators_reading(folder.glob("*.onnx"), elem_type)


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_a_bf16_mamba_block_computes_its_conv_and_softplus_in_float32(arch, tmp_path):
    """Mamba's mixer (and Mamba-2's) runs a Conv and a Softplus on bf16 tensors in transformers;
    ONNX Runtime's CUDA provider has no bf16 kernel for either, so the exported graph computes
    them in float32."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=31)
    export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"), "--dtype", "bf16",
                         "--no-check", *FIXED])
    block = onnx.load(str(tmp_path / "onnx" / "block_000.onnx"), load_external_data=False)
    ops = [n.op_type for n in block.graph.node]
    assert "Conv" in ops and "Softplus" in ops
    assert {"Conv", "Softplus"}.isdisjoint(ops_reading(tmp_path / "onnx", onnx.TensorProto.BFLOAT16))
    assert ops_reading(tmp_path / "onnx", onnx.TensorProto.BFLOAT16) <= export_layered.CUDA_BF16_OPS


def test_the_activation_peak_covers_every_block_output(tmp_path):
    from transformers import AutoModelForCausalLM

    make_fixture.build_arch_folder(tmp_path / "hf", "gemma3_text", seed=37)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float16)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, size=16).tolist()
    with export_layered.computing_in_float32(model), torch.no_grad():
        states = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
    block_outputs = max(float(h.abs().max()) for h in states[1:-1])  # the last one is after the final norm
    peak = export_layered.activation_peak(model, [ids])
    assert peak >= block_outputs > 0
    assert next(model.parameters()).dtype == torch.float16  # put back


def test_an_fp16_export_of_a_model_near_float16s_range_is_refused_before_any_graph(tmp_path):
    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=41)
    # A margin of 1e6 puts the limit at 0.066: every model is "near float16's range".
    with pytest.raises(SystemExit, match=r"^export: error: this model's activations reach .* --fp16-margin 1e\+06: "
                                         r"an fp16 export would overflow .* Export it in bf16"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"), "--dtype", "fp16",
                             "--fp16-margin", "1e6"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no graph, no staging folder
    _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                       "--dtype", "fp16", "--fp16-margin", "0", "--no-check"])
    assert "float16_range" not in manifest


def test_the_float32_computation_puts_the_reduced_model_back_exactly(tmp_path):
    from transformers import AutoModelForCausalLM

    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=23, dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    assert any(b.dtype == torch.float32 for b in buffers.values())  # rotary inv_freq: kept float32
    with export_layered.computing_in_float32(model):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    after = model.state_dict()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    for name, buffer in model.named_buffers():
        assert buffer.dtype == buffers[name].dtype and torch.equal(buffer, buffers[name]), name


def test_a_reduced_precision_limit_is_the_tolerance_or_twice_transformers_error():
    limits = export_layered.reduced_precision_limits(0.025, {"logits": 0.17, "nll": 0.004})
    assert limits == {"logits": 0.34, "nll": 0.025}


def test_a_reduced_precision_chain_farther_from_float32_than_allowed_is_refused(tmp_path, monkeypatch):
    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=29)
    run_chain = export_layered.run_chain

    def off_by_half(*args, **kwargs):  # what a wrong graph gives: far beyond any rounding
        logits, nll = run_chain(*args, **kwargs)
        return logits + 0.5, nll

    monkeypatch.setattr(export_layered, "run_chain", off_by_half)
    with pytest.raises(SystemExit, match="differs from the float32 computation of its weights .* over the tolerance"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"), "--dtype", "fp16",
                             "--check-sequences", "1", "--check-length", "8"])
    assert not (tmp_path / "onnx").exists()


def test_onnxruntime_cpu_runs_fp16_but_has_no_bf16_kernels(tmp_path):
    """What ONNX Runtime's CPU provider (onnxruntime as pinned in requirements.txt) does with
    reduced-precision graphs: fp16 runs; bf16 is refused when the session is created."""
    import onnxruntime as ort

    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=17)
    for dtype in ("fp16", "bf16"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / dtype), "--dtype", dtype,
                             "--attention-kernel", "standard", "--check-sequences", "1", "--check-length", "8"])
    manifest = json.loads((tmp_path / "fp16" / "manifest.json").read_text())
    logits, nll = export_layered.run_chain(tmp_path / "fp16", manifest, ids_for(manifest, 6), runner="ort")
    assert np.isfinite(logits).all() and np.isfinite(nll).all()
    ort.InferenceSession(str(tmp_path / "bf16" / "embed.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|Could not find an implementation"):
        ort.InferenceSession(str(tmp_path / "bf16" / "block_000.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_pruned_bf16_checkpoint_stays_bf16(arch, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=19, dtype=torch.bfloat16)
    model, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                           "--dtype", "bf16", "--attention-kernel", "standard",
                                           "--check-sequences", "1", "--check-length", "8"])
    prune_hf.main(["--model", str(tmp_path / "hf"), "--remove", "0,2", "--out", str(tmp_path / "p")])
    assert json.loads((tmp_path / "p" / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "p" / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "p", dtype="auto")
    pruned.config._attn_implementation = "eager"
    pruned.eval()
    ids = ids_for(manifest, 7)
    logits, _ = export_layered.run_chain(tmp_path / "onnx", manifest, ids, drop=(0, 2))
    with torch.no_grad():
        expected = pruned(input_ids=torch.from_numpy(ids), use_cache=False).logits.float().numpy()
    assert np.abs(logits - expected).max() < export_layered.DEFAULT_TOLERANCE["bf16"]


@pytest.mark.parametrize("model_type,architectures", [("rwkv", ["RwkvForCausalLM"]), ("bert", None)])
def test_unsupported_architecture_is_named_with_the_supported_list(tmp_path, model_type, architectures):
    config = {"model_type": model_type}
    if architectures:
        config["architectures"] = architectures
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    # As a config.json names them: no internal `*_vl_text` names; the multimodal ones marked.
    supported = export_layered.supported_config_model_types()
    assert "qwen2_vl_text" not in supported and {"gemma3_text", "llama", "llava", "qwen2_vl"} <= set(supported)
    for tool, args in ((export_layered.main, ["--out", str(tmp_path / "x")]),
                       (prune_hf.main, ["--remove", "0", "--out", str(tmp_path / "y")])):
        with pytest.raises(SystemExit) as error:
            tool(["--model", str(tmp_path / "hf"), *args])
        message = str(error.value)
        assert f"model type {model_type!r}" in message
        listed = message.split("supported model types: ")[1].split(", ")
        assert [name.removesuffix(" (multimodal)") for name in listed] == supported
        assert "llava (multimodal)" in listed and "llama" in listed and "qwen2_vl_text" not in message
        if architectures:
            assert architectures[0] in message


def test_a_multimodal_checkpoint_with_an_unsupported_language_model_says_which_part_is_refused(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(
        {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "text_config": {"model_type": "mpt"}}))
    with pytest.raises(SystemExit, match=r"model type 'mpt' \(the language model, text_config, of a 'llava' "
                                         r"checkpoint\).*supported model types: .*llava \(multimodal\)"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3_text", "phi3", "gpt2"])
def test_reduced_precision_attention_is_computed_in_float32_unless_asked_otherwise(arch, tmp_path,
                                                                                   tmp_path_factory):
    """--attention-precision float32 (the default for fp16 / bf16): the scores' MatMul reads
    float32; `model`: it reads bf16, as transformers' eager code computes it. fp32 exports say
    nothing about it."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=43)
    matmul_inputs = {}
    for precision in export_layered.ATTENTION_PRECISIONS:
        out = tmp_path / precision
        _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(out), "--dtype", "bf16",
                                           "--attention-precision", precision, "--check-sequences", "1",
                                           "--check-length", "8", *FIXED])
        assert manifest["attention_precision"] == ("float32" if precision == "float32" else "bfloat16")
        blocks = [out / b["file"] for b in manifest["blocks"]]
        matmul_inputs[precision] = ("MatMul" in export_layered.operators_reading(blocks, onnx.TensorProto.FLOAT))
    assert matmul_inputs == {"float32": True, "model": False}
    _, _, _, manifest, _ = export_fp32(arch, tmp_path_factory)
    assert "attention_precision" not in manifest


FUSED = make_fixture.fused_fixtures()


def constant_reshapes_around_the_node(graph):
    """The constant target shapes of the Reshapes feeding the GroupQueryAttention node's query,
    key and value, and of the one reading its output (None where a shape is computed)."""
    constants = {init.name: onnx.numpy_helper.to_array(init).tolist() for init in graph.initializer
                 if init.data_location != onnx.TensorProto.EXTERNAL}
    constants.update({node.output[0]: onnx.numpy_helper.to_array(node.attribute[0].t).tolist()
                      for node in graph.node if node.op_type == "Constant"})
    producer = {output: node for node in graph.node for output in node.output}
    (node,) = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    inputs = [constants.get(producer[name].input[1]) if producer[name].op_type == "Reshape" else None
              for name in node.input[:3]]
    (reader,) = [n for n in graph.node if node.output[0] in n.input]
    return inputs, constants.get(reader.input[1]) if reader.op_type == "Reshape" else None


@pytest.mark.parametrize("arch", FUSED)
def test_fused_attention_matches_transformers(arch, tmp_path, tmp_path_factory, capsys):
    """--attention-kernel fused: one GroupQueryAttention node a block in place of the rotary
    embedding, mask, grouped heads and softmax of the standard graphs, with the same results
    (sliding windows of 4 over 16 tokens, Gemma 3's local and global rotary tables, its
    query scale and q / k norms, soft-capping, interleaved and partial rotary), also with a
    block skipped, on fixtures with heads of make_fixture.FUSED_HEAD_SIZE. In fp32 the exporter
    says the folder is for the CPU (ONNX Runtime's CUDA node is fp16 / bf16 only)."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=11, head_size=make_fixture.FUSED_HEAD_SIZE)
    model, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                           "--attention-kernel", "fused", "--check-length", str(SEQ_LEN)])
    assert "this fp32 folder is for the CPU provider" in capsys.readouterr().err
    assert manifest["attention_kernel"] == "fused" and "attention_precision" not in manifest
    assert manifest["check"]["max_abs_logit_diff"] < FP32_TOLERANCE
    for block in manifest["blocks"]:
        graph = onnx.load(str(tmp_path / "onnx" / block["file"]), load_external_data=False)
        ops = [n.op_type for n in graph.graph.node]
        assert ops.count("GroupQueryAttention") == 1, ops
        assert not {"Softmax", "Sin", "Cos", "Trilu"} & set(ops), ops
        assert constant_reshapes_around_the_node(graph.graph) == ([[0, 0, -1]] * 3, [0, 0, model.config.num_attention_heads, -1])
    for drop in [(), (1,)]:
        logit_diff, nll_diff = max_diffs(tmp_path / "onnx", manifest, model, ids_for(manifest, 3), drop=drop)
        assert logit_diff < FP32_TOLERANCE and nll_diff < FP32_TOLERANCE, (drop, logit_diff, nll_diff)
    if STAGES:  # the evaluator these folders are for runs the node on the CPU provider
        assert_the_rust_evaluator_gives_transformers_nll(arch, model, manifest, tmp_path / "onnx", tmp_path)
    # The standard export of the same architecture says nothing of a kernel.
    _, _, _, standard, _ = export_fp32(arch, tmp_path_factory)
    assert "attention_kernel" not in standard


@pytest.mark.parametrize("arch,dtype", [(arch, "fp16") for arch in FUSED]
                         + [("gemma3_text", "bf16"), ("gemma2", "bf16"), ("cohere", "bf16"), ("phi", "bf16")])
def test_fused_attention_in_reduced_precision_passes_the_export_check(arch, dtype, tmp_path, capsys):
    """fp16 runs in ONNX Runtime's CPU provider (every fixture: OLMo 2's float32 rotary tables
    given to an fp16 node, before they were cast, made ONNX Runtime refuse the graph); bf16 in
    onnx.reference, with the node's NumPy form (`group_query_attention`). Gemma 2's and Gemma 3's
    bf16 fused exports, which CUDA failed on (FUSED_KNOWN_FAILURES: refused unless asked for as
    gpu_families.py does), still test the NumPy form's soft-capping and local / global tables."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=23, head_size=make_fixture.FUSED_HEAD_SIZE)
    _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                       "--dtype", dtype, "--attention-kernel", "fused", "--check-sequences", "2",
                                       "--check-length", str(SEQ_LEN)],
                                      allow_known_failures=export_layered.fused_known_to_fail(arch, dtype))
    assert "is for the CPU provider" not in capsys.readouterr().err
    assert manifest["check"]["runner"] == ("reference" if dtype == "bf16" else "ort")
    assert manifest["attention_kernel"] == "fused"


@pytest.mark.parametrize("window,softcap,interleaved,head,rotary",
                         [(0, 0.0, False, 16, 16), (3, 0.0, False, 16, 16), (3, 5.0, False, 16, 16),
                          (0, 0.0, True, 16, 16), (3, 0.0, False, 32, 16), (0, 2.0, True, 64, 32)])
def test_the_numpy_form_of_the_fused_node_is_what_onnx_runtime_computes(window, softcap, interleaved, head, rotary):
    """`group_query_attention` (what the bf16 check runs and the export traces through) against
    ONNX Runtime's own GroupQueryAttention: grouped heads, rotary embedding (rotate-half or
    interleaved, over the whole head or its first `rotary` dimensions), causal mask with and
    without a sliding window, with and without soft-capping."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    batch, seq, heads, kv_heads = 2, 12, 4, 2
    rng = np.random.default_rng(window)
    query, key, value = (rng.standard_normal((batch, seq, n * head)).astype(np.float32)
                         for n in (heads, kv_heads, kv_heads))
    angles = np.arange(32)[:, None] * 10000.0 ** (-np.arange(rotary // 2) / (rotary // 2))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    scale = 0.3
    optional = dict(softcap=softcap) if softcap else {}
    if interleaved:
        optional["rotary_interleaved"] = 1
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens", "total", "cos", "sin"],
                            ["out", "present_key", "present_value"], domain="com.microsoft", num_heads=heads,
                            kv_num_heads=kv_heads, do_rotary=1, scale=scale,
                            local_window_size=window if window else -1, **optional)
    constants = [numpy_helper.from_array(np.full(batch, seq - 1, np.int32), "seqlens"),
                 numpy_helper.from_array(np.array([seq], np.int32), "total"),
                 numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(x.shape))
              for name, x in (("q", query), ("k", key), ("v", value))]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["out"], {"q": query, "k": key, "v": value})
    ours = export_layered.group_query_attention(query, key, value, cos, sin, heads, kv_heads, scale, window,
                                                softcap, interleaved)
    assert np.abs(ours - expected).max() < 1e-5


# The fused fixtures whose q, k and v reach the node through more than reshapes: q / k norms
# (Gemma 3, OLMo 2, Qwen3), a packed projection sliced (Phi-3, GPT-NeoX), a partial rotary's split
# and rejoin around the node's rotation (Phi-2, StableLM).
NOT_PACKABLE = {"gemma3_text", "gpt_neox", "olmo2", "phi", "phi3", "qwen3", "stablelm"}


def block_ops(folder, manifest):
    return [[n.op_type for n in onnx.load(str(folder / b["file"]), load_external_data=False).graph.node]
            for b in manifest["blocks"]]


@pytest.mark.parametrize("arch", FUSED)
def test_packed_qkv_projections_compute_what_the_separate_ones_do(arch, tmp_path):
    """--qkv-projection packed: each fused block's query, key and value come from one MatMul (the
    three weights side by side; Qwen2's and StarCoder2's biases too) into the node's packed
    query, two MatMuls fewer a block, with the chain within the fp32 tolerance of transformers
    (the export check) and equal to the separate export's to float32 rounding, also with a block
    skipped. Where anything but reshapes stands between the products and the node, it is
    refused, naming the block, and nothing is written."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=11, head_size=make_fixture.FUSED_HEAD_SIZE)
    arguments = ["--model", str(tmp_path / "hf"), "--attention-kernel", "fused", "--check-length", str(SEQ_LEN)]
    if arch in NOT_PACKABLE:
        with pytest.raises(SystemExit, match="--qkv-projection packed: block 0's query, key and value are not"):
            export_layered.main([*arguments, "--out", str(tmp_path / "packed"), "--qkv-projection", "packed"])
        assert not (tmp_path / "packed").exists()
        return
    model, packed = export_layered.main([*arguments, "--out", str(tmp_path / "packed"), "--qkv-projection", "packed"])
    _, separate = export_layered.main([*arguments, "--out", str(tmp_path / "separate")])
    assert packed["qkv_projection"] == "packed" and "qkv_projection" not in separate
    assert packed["check"]["max_abs_logit_diff"] < FP32_TOLERANCE
    for ops, separate_ops in zip(block_ops(tmp_path / "packed", packed), block_ops(tmp_path / "separate", separate)):
        assert ops.count("MatMul") == separate_ops.count("MatMul") - 2, (ops, separate_ops)
        assert len(ops) < len(separate_ops)
    for block in packed["blocks"]:
        graph = onnx.load(str(tmp_path / "packed" / block["file"]), load_external_data=False).graph
        (node,) = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
        assert list(node.input[1:3]) == ["", ""]
        assert {n.op_type for n in graph.node if node.input[0] in n.output} == {"Add" if arch in ("qwen2", "starcoder2")
                                                                                 else "MatMul"}
    ids = ids_for(packed, 3)
    for drop in [(), (1,)]:
        ours, ours_nll = export_layered.run_chain(tmp_path / "packed", packed, ids, drop=drop)
        theirs, theirs_nll = export_layered.run_chain(tmp_path / "separate", separate, ids, drop=drop)
        assert np.abs(ours - theirs).max() < 1e-5 and np.abs(ours_nll - theirs_nll).max() < 1e-5, drop
    if arch == "llama" and STAGES:  # the evaluator runs the packed node on the CPU provider
        assert_the_rust_evaluator_gives_transformers_nll(arch, model, packed, tmp_path / "packed", tmp_path)


def gqa_graph(query_shape):
    """A hand-made block: x [batch, seq, 32] through three products reshaped by `query_shape` (the
    query's) and [0, 0, -1] (key's, value's) into a GroupQueryAttention node of 2 heads of 16, 1
    key-value head; its output is the graph's."""
    helper, tensor = onnx.helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array(rng.standard_normal((32, n)).astype(np.float32), f"w{i}")
               for i, n in enumerate((32, 16, 16))]
    shapes = [onnx.numpy_helper.from_array(np.array(shape, dtype=np.int64), f"shape{i}")
              for i, shape in enumerate((query_shape, [0, 0, -1], [0, 0, -1]))]
    nodes = []
    for i in range(3):
        nodes += [helper.make_node("MatMul", ["x", f"w{i}"], [f"p{i}"]),
                  helper.make_node("Reshape", [f"p{i}", f"shape{i}"], [f"r{i}"])]
    nodes.append(helper.make_node("GroupQueryAttention", ["r0", "r1", "r2", "", "", "seqlens", "total", "", ""],
                                  ["out", "present_key", "present_value"], domain="com.microsoft",
                                  num_heads=2, kv_num_heads=1))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", tensor.FLOAT, ["b", "s", 32]),
                                               helper.make_tensor_value_info("seqlens", tensor.INT32, ["b"]),
                                               helper.make_tensor_value_info("total", tensor.INT32, [1])],
                              [helper.make_tensor_value_info("out", tensor.FLOAT, None)], [*weights, *shapes])
    return helper.make_model(graph)


def test_projections_are_packed_only_where_the_reshapes_keep_batch_and_sequence():
    """A query reshaped so that its batch folds into its sequence ([1, -1, 32]) would become a packed
    query of another shape: that node is left as it is. With [0, 0, -1], as the exporter writes it,
    the three products become one of 64 columns feeding the node, key and value empty."""
    folded = gqa_graph([1, -1, 32])
    assert export_layered.pack_qkv_projections(folded) == 0
    assert [n.op_type for n in folded.graph.node].count("MatMul") == 3
    kept = gqa_graph([0, 0, -1])
    assert export_layered.pack_qkv_projections(kept) == 1
    (product,) = [n for n in kept.graph.node if n.op_type == "MatMul"]
    (node,) = [n for n in kept.graph.node if n.op_type == "GroupQueryAttention"]
    assert list(node.input[:3]) == [product.output[0], "", ""]
    (weight,) = [t for t in kept.graph.initializer if t.name == product.input[1]]
    assert list(weight.dims) == [32, 64] and {t.name for t in kept.graph.initializer} == {weight.name}


def test_packing_keeps_what_a_subgraph_reads():
    """The sweep of what nothing reads after packing counts the names a subgraph's nodes read (an
    If reading the key's weight): that weight stays, the others' go."""
    helper = onnx.helper
    graph = gqa_graph([0, 0, -1])
    branches = {f"{which}_branch": helper.make_graph([helper.make_node("Identity", ["w1"], [which])], which, [],
                                                     [helper.make_tensor_value_info(which, onnx.TensorProto.FLOAT, None)])
                for which in ("then", "else")}
    graph.graph.input.append(helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []))
    graph.graph.node.append(helper.make_node("If", ["cond"], ["branch"], **branches))
    graph.graph.output.append(helper.make_tensor_value_info("branch", onnx.TensorProto.FLOAT, None))
    assert export_layered.pack_qkv_projections(graph) == 1
    (product,) = [n for n in graph.graph.node if n.op_type == "MatMul"]
    assert {t.name for t in graph.graph.initializer} == {product.input[1], "w1"}


@pytest.mark.parametrize("arch, equal", [("qwen2", "k and v biases zero"), ("llama", "v weights k's")])
def test_projections_stored_once_for_equal_values_are_packed(arch, equal, tmp_path):
    """torch's exporter stores tensors of equal values once and names the copies by an Identity of
    it (k and v biases both zero, a checkpoint whose value weights equal its key weights): those
    blocks pack too, the same chain as the separate export (they were refused as unpackable)."""
    import torch
    from transformers import AutoModelForCausalLM

    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=5, head_size=make_fixture.FUSED_HEAD_SIZE)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        for layer in model.model.layers:
            attention = layer.self_attn
            if arch == "qwen2":
                attention.k_proj.bias.zero_()
                attention.v_proj.bias.zero_()
            else:
                attention.v_proj.weight.copy_(attention.k_proj.weight)
    model.save_pretrained(tmp_path / "hf")
    arguments = ["--model", str(tmp_path / "hf"), "--attention-kernel", "fused", "--check-length", str(SEQ_LEN)]
    _, separate = export_layered.main([*arguments, "--out", str(tmp_path / "separate")])
    graph = onnx.load(str(tmp_path / "separate" / separate["blocks"][0]["file"]), load_external_data=False).graph
    assert "Identity" in {n.op_type for n in graph.node}, "the exporter no longer aliases equal tensors"
    _, packed = export_layered.main([*arguments, "--out", str(tmp_path / "packed"), "--qkv-projection", "packed"])
    assert packed["qkv_projection"] == "packed"
    ids = ids_for(packed, 3)
    ours, ours_nll = export_layered.run_chain(tmp_path / "packed", packed, ids)
    theirs, theirs_nll = export_layered.run_chain(tmp_path / "separate", separate, ids)
    assert np.abs(ours - theirs).max() < 1e-5 and np.abs(ours_nll - theirs_nll).max() < 1e-5


def test_packed_qkv_projections_in_bf16_pass_the_export_check_in_numpy(tmp_path):
    """bf16 blocks are checked in onnx.reference, whose NumPy form of the node splits a packed
    query into its query, key and value (Qwen2: with the biases)."""
    make_fixture.build_arch_folder(tmp_path / "hf", "qwen2", seed=23, head_size=make_fixture.FUSED_HEAD_SIZE)
    _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                       "--dtype", "bf16", "--qkv-projection", "packed", "--check-sequences", "2",
                                       "--check-length", str(SEQ_LEN)])
    assert manifest["attention_kernel"] == "fused" and manifest["qkv_projection"] == "packed"
    assert manifest["check"]["runner"] == "reference"


def test_packed_qkv_projections_are_refused_without_fused_attention(tmp_path):
    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=5)
    with pytest.raises(SystemExit, match="--qkv-projection packed packs the projections into a fused block"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                             "--qkv-projection", "packed"])
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("arch", ["gpt2", "mamba", "mamba2"])
def test_fused_attention_is_refused_where_there_is_none_to_fuse(arch, tmp_path):
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=5)
    with pytest.raises(SystemExit, match=f"--attention-kernel fused: {arch} blocks .*fused attention is for cohere, gemma"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                             "--attention-kernel", "fused", *FIXED])
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("arch,rotary,head", [("phi", 8, 16), ("stablelm", 4, 16), ("gpt_neox", 4, 16)])
def test_fused_attention_is_refused_for_a_rotary_the_node_cannot_rotate(arch, rotary, head, tmp_path):
    """ONNX Runtime's node rotates a multiple of 16 of a head's dimensions: the tiny fixtures'
    partial rotary (8 or 4 of 16) is refused, naming the sizes, before any graph is written."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=5)
    with pytest.raises(SystemExit, match=f"rotary embedding over {rotary} of the head's {head} dimensions"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                             "--attention-kernel", "fused", *FIXED])
    assert not (tmp_path / "onnx").exists()


def test_fused_attention_needs_the_legacy_exporter(tmp_path):
    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=5)
    with pytest.raises(SystemExit, match="written by the legacy exporter"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                             "--attention-kernel", "fused", "--exporter", "dynamo"])
    assert not (tmp_path / "onnx").exists()


def test_attention_precision_is_refused_with_fused_attention(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"), "--dtype", "bf16",
                             "--attention-kernel", "fused", "--attention-precision", "model"])
    assert error.value.code == 2
    assert "--attention-precision is for standard attention" in capsys.readouterr().err


def test_auto_attention_kernel_is_fused_in_fp16_and_standard_in_fp32_or_with_an_attention_precision(tmp_path,
                                                                                                    capsys):
    """--attention-kernel auto (the default): an fp16 llama is fused (one GroupQueryAttention a
    block); fp32, or fp16 with --attention-precision (which is for standard attention), standard.
    The export says which it chose and why; the manifest has the kernel chosen."""
    make_fixture.build_arch_folder(tmp_path / "hf", "llama", seed=5)
    cases = [("fp16", [], "fused (auto: fp16 export of llama; --attention-kernel standard for"),
             ("fp32", [], "standard (auto: an fp32 export; fused is for fp16 / bf16"),
             ("fp16", ["--attention-precision", "float32"],
              "standard (auto: --attention-precision float32 given, which is for standard attention)")]
    for index, (dtype, flags, said) in enumerate(cases):
        out = tmp_path / f"onnx{index}"
        _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(out), "--dtype", dtype,
                                           *flags, "--check-sequences", "1", "--check-length", "8"])
        assert f"attention: {said}" in capsys.readouterr().out
        fused = said.startswith("fused")
        assert manifest.get("attention_kernel") == ("fused" if fused else None)
        assert manifest.get("attention_precision") == (None if fused or dtype == "fp32" else "float32")
        ops = [n.op_type for n in onnx.load(str(out / "block_000.onnx"), load_external_data=False).graph.node]
        assert ("GroupQueryAttention" in ops) == fused


@pytest.mark.parametrize("arch,dtype,why", [
    ("gemma", "bf16", "gemma's fused bf16 blocks are known to fail on CUDA, measured 2026-12-05"),
    ("olmo2", "fp16", "olmo2's fused fp16 blocks are not yet run on CUDA, where its fused bf16 ones failed"),
    ("phi", "fp16", "a rotary embedding over 8 of the head's 16 dimensions"),
    ("gpt2", "fp16", "gpt2 blocks have no rotary causal attention to fuse")])
def test_auto_attention_kernel_is_standard_where_fused_is_known_to_fail_or_cannot_be_written(arch, dtype, why,
                                                                                             tmp_path, capsys):
    """Where an explicit --attention-kernel fused is refused (a known failure on CUDA, a rotary
    the node cannot hold, no rotary attention), auto exports standard attention, saying why."""
    make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=5)
    _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"),
                                       "--dtype", dtype, "--check-sequences", "1", "--check-length", "8"])
    assert f"attention: standard (auto: {why}" in capsys.readouterr().out
    assert "attention_kernel" not in manifest and manifest["attention_precision"] == "float32"


def test_fused_attention_known_to_fail_on_cuda_is_refused_naming_the_measurement(tmp_path):
    """bf16 Gemma, Gemma 2, Gemma 3 and OLMo 2 fused blocks failed to open in ONNX Runtime's CUDA
    provider (docs/results/gpu-run-3.md): an explicit --attention-kernel fused in bf16 is refused
    before any graph is written, naming the measurement and the way out."""
    assert export_layered.FUSED_KNOWN_FAILURES == {"bf16": {"gemma", "gemma2", "gemma3_text", "olmo2"}}
    make_fixture.build_arch_folder(tmp_path / "hf", "gemma", seed=5)
    with pytest.raises(SystemExit, match=r"--attention-kernel fused --dtype bf16: gemma's fused bf16 blocks are "
                                         r"known to fail in ONNX Runtime's CUDA provider \(measured 2026-12-05 .*"
                                         r"gpu-run-3\.md.*\); export with --attention-kernel standard, or fused in "
                                         r"fp16 \(not measured there\)"):
        export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"), "--dtype", "bf16",
                             "--attention-kernel", "fused"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no graph, no staging folder


def test_negative_transpose_axes_are_written_as_non_negative():
    """The legacy exporter writes Mamba-2's `permute(0, -2, -1, 1)` as a Transpose with negative
    axes, which ONNX Runtime refuses to load; the exporter rewrites them (rank + axis)."""
    from onnx import helper

    node = helper.make_node("Transpose", ["x"], ["y"], perm=[0, -2, -1, 1])
    other = helper.make_node("Transpose", ["y"], ["z"], perm=[1, 0, 2, 3])
    graph = helper.make_graph([node, other], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 4])],
                              [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    assert export_layered.normalize_transpose_perms(model) == 1
    assert list(model.graph.node[0].attribute[0].ints) == [0, 2, 3, 1]
    assert list(model.graph.node[1].attribute[0].ints) == [1, 0, 2, 3]
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    (z,) = session.run(None, {"x": x})
    assert np.array_equal(z, x.transpose(0, 2, 3, 1).transpose(1, 0, 2, 3))


@pytest.mark.parametrize("model_type", sorted(make_fixture.MULTIMODAL))
def test_a_multimodal_language_model_gets_fused_attention_where_its_rotary_is_one_table(model_type, tmp_path):
    """Gemma 3's, LLaVA's and Mistral 3's language models are fused as their own architectures
    (the chain against the multimodal model's logits, and with a block skipped against the
    standard export's chain); the Qwen VL ones' multimodal rotary is refused, naming it, before
    any graph is written."""
    from transformers import AutoModelForImageTextToText

    make_fixture.build_multimodal_folder(tmp_path / "hf", model_type, seed=19)
    arguments = ["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx"), "--attention-kernel", "fused",
                 "--check-length", str(SEQ_LEN)]
    if make_fixture.MULTIMODAL[model_type] in export_layered.MROPE_MODEL_TYPES:
        with pytest.raises(SystemExit, match="multimodal rotary embedding .* is not in ONNX Runtime's"):
            export_layered.main(arguments)
        assert not (tmp_path / "onnx").exists()
        return
    _, manifest = export_layered.main(arguments)
    assert manifest["attention_kernel"] == "fused"
    source = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf").eval()
    ids = ids_for(manifest, 3)
    with torch.no_grad():
        expected = source(input_ids=torch.from_numpy(ids)).logits.float().numpy()
    logits, _ = export_layered.run_chain(tmp_path / "onnx", manifest, ids)
    assert np.abs(logits - expected).max() < FP32_TOLERANCE
    _, standard = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "standard"),
                                       "--check-length", str(SEQ_LEN)])
    skipped, _ = export_layered.run_chain(tmp_path / "onnx", manifest, ids, drop=(1,))
    expected, _ = export_layered.run_chain(tmp_path / "standard", standard, ids, drop=(1,))
    assert np.abs(skipped - expected).max() < FP32_TOLERANCE


def test_qwen3_vl_keeps_the_blocks_its_deepstack_features_follow_and_its_processor(tmp_path):
    """Qwen3-VL adds its vision tower's deepstack features after its language model's first
    blocks, by position (the fixture's one level: after block 0): removing block 0 is refused,
    nothing written. The processor's files are written beside the checkpoint."""
    make_fixture.build_multimodal_folder(tmp_path / "hf", "qwen3_vl", seed=3)
    (tmp_path / "hf" / "preprocessor_config.json").write_text('{"image_processor_type": "x"}')
    with pytest.raises(SystemExit, match=r"deepstack features after blocks \[0\] .* removing \[0\]"):
        prune_hf.main(["--model", str(tmp_path / "hf"), "--remove", "0,2", "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()
    prune_hf.main(["--model", str(tmp_path / "hf"), "--remove", "2", "--out", str(tmp_path / "p")])
    assert (tmp_path / "p" / "preprocessor_config.json").read_text() == '{"image_processor_type": "x"}'


@pytest.mark.parametrize("model_type", sorted(make_fixture.MULTIMODAL))
def test_a_multimodal_checkpoint_is_pruned_in_its_language_model_and_written_whole(model_type, tmp_path):
    """Gemma 3 4B and up, LLaVA, Mistral 3 and the Qwen VL models are multimodal checkpoints (the Qwen
    ones' language model with a multimodal rotary embedding, fed text positions): the exporter writes their
    language model, computing what the multimodal model computes from text (Gemma 3's does not
    apply its text config's final logit softcapping, set in its fixture); prune_hf.py writes the
    checkpoint whole, the vision tower unchanged, and its text logits are the chain's with those
    blocks skipped."""
    from transformers import AutoModelForImageTextToText

    make_fixture.build_multimodal_folder(tmp_path / "hf", model_type, seed=17)
    _, manifest = export_layered.main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx")])
    source = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf").eval()
    assert manifest["architecture"] == make_fixture.MULTIMODAL[model_type]
    assert manifest["source"]["language_model_of"] == type(source).__name__
    ids = ids_for(manifest, 3)
    with torch.no_grad():
        expected = source(input_ids=torch.from_numpy(ids)).logits.float().numpy()
    logits, _ = export_layered.run_chain(tmp_path / "onnx", manifest, ids)
    assert np.abs(logits - expected).max() < FP32_TOLERANCE

    prune_hf.main(["--model", str(tmp_path / "hf"), "--remove", "1,2", "--out", str(tmp_path / "pruned")])
    pruned = AutoModelForImageTextToText.from_pretrained(tmp_path / "pruned").eval()
    assert type(pruned) is type(source)
    before, after = source.config.text_config, pruned.config.text_config
    kept = [0] + list(range(3, before.num_hidden_layers))
    assert after.num_hidden_layers == len(kept) and after.layerprune_kept_blocks == kept
    for key, value in export_layered.per_layer_lists(before).items():  # e.g. layer_types, cut
        assert getattr(after, key) == [value[i] for i in kept], key
    # The checkpoint's own softcapping value is written back (Gemma 3's fixture sets it).
    assert getattr(after, "final_logit_softcapping", None) == getattr(before, "final_logit_softcapping", None)
    assert (model_type == "gemma3") == (getattr(after, "final_logit_softcapping", None) is not None)
    # Everything but the language model and its head (the vision tower, the projector) is unchanged.
    def vision(model):
        return {name: p for name, p in model.named_parameters()
                if "language_model" not in name and not name.startswith("lm_head")}
    assert vision(source) and vision(pruned).keys() == vision(source).keys()
    assert all(torch.equal(p, vision(source)[name]) for name, p in vision(pruned).items())
    with torch.no_grad():
        pruned_logits = pruned(input_ids=torch.from_numpy(ids)).logits.float().numpy()
    skipped, _ = export_layered.run_chain(tmp_path / "onnx", manifest, ids, drop=(1, 2))
    assert np.abs(pruned_logits - skipped).max() < FP32_TOLERANCE

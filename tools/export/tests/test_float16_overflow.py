"""Float16 overflow and the exporters' guards against it: the float16 range check (weights beyond
65504 named, NaN activations over the limit, the block / module of the peak, the final norm and
the head watched), the export checks (a NaN or inf error fails, never a NaN or inf tolerance, a
strict-JSON manifest), the --qkv-projection packed refusals (before the model loads where the
flags alone decide; no --attention-kernel fused advice where fusing or packing is refused), and
no flag abbreviations (Make's guards read flags by their full names).

Tiny random-weight checkpoints (make_fixture.build_arch_folder) made in temporary folders; weights
are scaled past float16's range where a test needs it.
"""

import json
import os
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

CHECK = ["--check-sequences", "1", "--check-length", "8"]
# The Rust stages (make test-export sets LAYERPRUNE_BIN), else the debug build's.
STAGES = Path(os.environ.get("LAYERPRUNE_BIN") or Path(__file__).resolve().parents[3] / "target" / "debug")


def checkpoint(folder: Path, arch: str = "llama", change=None, seed: int = 41) -> Path:
    """A tiny `arch` checkpoint in `folder / "hf"`; `change(model)` edits its weights first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = folder / "hf"
    make_fixture.build_arch_folder(hf, arch, seed=seed)
    if change is not None:
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
        with torch.no_grad():
            change(model)
        tokenizer = AutoTokenizer.from_pretrained(hf)
        model.save_pretrained(hf)
        tokenizer.save_pretrained(hf)
    return hf


def only(folder: Path, *names):
    """Nothing but `names` in `folder`: no output, no staging folder left."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


# The float16 range check.

def test_a_weight_beyond_float16s_range_is_refused_by_name(tmp_path):
    def one_weight(model):  # inf once cast to float16; the activations in float32 stay modest
        model.model.layers[2].mlp.down_proj.weight[3, 5] = 1e5

    hf = checkpoint(tmp_path, change=one_weight)
    with pytest.raises(SystemExit, match=r"^export: error: 1 of this model's weight tensors hold values beyond "
                                         r"float16's largest value 65,504 .*model\.layers\.2\.mlp\.down_proj\.weight"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", "fp16"])
    only(tmp_path, "hf")


def test_the_weight_check_looks_only_at_the_float16_tensors_of_the_language_model(tmp_path):
    """A value float16 cannot hold in a tensor the fp16 graphs never hold (a multimodal checkpoint's
    vision tower; a parameter transformers keeps in float32) refused an export that was fine."""
    from transformers import AutoModelForImageTextToText

    folder = make_fixture.build_multimodal_folder(tmp_path / "mm", "gemma3", seed=3)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float16)
    text = export_layered.language_model(model)
    with torch.no_grad():
        next(model.model.vision_tower.parameters()).view(-1)[0] = float("inf")
        kept = text.model.layers[0].mlp.down_proj
        kept.weight.data = kept.weight.data.float()  # as _keep_in_fp32_modules leaves one
        kept.weight[0, 0] = 1e6
    assert export_layered.weights_beyond_float16(model) == []
    assert export_layered.weights_beyond_float16(text) == []
    with torch.no_grad():
        text.model.layers[1].mlp.up_proj.weight[0, 0] = float("inf")
    assert [name for name, _ in export_layered.weights_beyond_float16(text)] == ["model.layers.1.mlp.up_proj.weight"]


def test_a_matrix_beyond_float16s_range_is_refused_not_measured_as_inf_dropped(tmp_path):
    """A whole matrix past 65504 (inf and NaN in the fp16 model's activations): the export used to
    record the unmodified model's peak and write the folder."""
    def scaled(model):
        model.model.layers[1].mlp.down_proj.weight.mul_(1e7)

    hf = checkpoint(tmp_path, change=scaled)
    with pytest.raises(SystemExit, match=r"model\.layers\.1\.mlp\.down_proj\.weight \(inf or NaN\)"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", "fp16"])
    only(tmp_path, "hf")


def test_nan_activations_are_over_any_limit_and_their_block_named(tmp_path):
    from transformers import AutoModelForCausalLM

    hf = checkpoint(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float16)
    # What an overflow in the middle of block 1 gives its output: NaN (Python's max(x, nan) is x).
    model.model.layers[1].register_forward_hook(lambda module, inputs, output: output * float("nan"))
    peak, where = export_layered.activation_peak_at(model, [[1, 2, 3, 4]])
    assert peak == float("inf") and where == "model.layers.1"
    assert export_layered.block_of(where) == "block 1 (model.layers.1)"
    with pytest.raises(SystemExit, match=r"activations reach inf or NaN in float32 .* at block 1 \(model\.layers\.1\)"):
        export_layered.float16_range_check(model, None, 2.0, seed=0)


def test_activations_over_the_limit_name_the_block_where_they_peak(tmp_path):
    def scaled(model):  # weights within float16's range (~3e4), block 1's output ~1e5
        model.model.layers[1].mlp.down_proj.weight.mul_(1e5)

    hf = checkpoint(tmp_path, change=scaled)
    with pytest.raises(SystemExit, match=r"activations reach [\d,]+ in float32 .* at block [1-3] \(model\.layers\.[1-3]"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", "fp16"])
    only(tmp_path, "hf")


def test_the_final_norm_overflowing_is_refused_before_any_graph(tmp_path, monkeypatch):
    """The final norm's output (the head graphs' input) past float16's range, every block's
    within: refused by the range check, not by the export check after the graphs."""
    def scaled(model):
        model.model.norm.weight.mul_(3e4)

    hf = checkpoint(tmp_path, change=scaled)
    monkeypatch.setattr(export_layered, "export", lambda *a, **k: pytest.fail("graphs exported"))
    with pytest.raises(SystemExit, match=r"activations reach [\d,]+ in float32 .* at model\.norm, beyond"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", "fp16"])
    only(tmp_path, "hf")


# The export checks.

def nan_in(array):
    array = array.copy()
    array.flat[0] = np.nan
    return array


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_a_nan_chain_fails_the_export_check(dtype, tmp_path, monkeypatch):
    hf = checkpoint(tmp_path)
    run_chain = export_layered.run_chain
    monkeypatch.setattr(export_layered, "run_chain",
                        lambda *a, **k: tuple(nan_in(x) for x in run_chain(*a, **k)))
    cause = "float16 overflow the likely cause" if dtype == "fp16" else "not finite"
    with pytest.raises(SystemExit, match=rf"^export: error: the exported chain differs from .* by nan .*{cause}"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", dtype, *CHECK])
    only(tmp_path, "hf")


def test_a_non_finite_transformers_error_widens_no_limit():
    limits = export_layered.reduced_precision_limits(0.025, {"logits": float("nan"), "nll": float("inf")})
    assert limits == {"logits": 0.025, "nll": 0.025}


def test_transformers_own_float16_overflow_is_recorded_as_null_in_a_readable_manifest(tmp_path, monkeypatch):
    """A correct chain, transformers' own fp16 computation NaN (its eager attention overflowing):
    the export passes on the default tolerance, and the manifest is strict JSON that the stages read."""
    hf = checkpoint(tmp_path)
    reference = export_layered.reference

    def float16_overflows(model, *args, **kwargs):
        logits, nll = reference(model, *args, **kwargs)
        if next(model.parameters()).dtype == torch.float16:  # not the float32 computation
            return nan_in(logits), nan_in(nll)
        return logits, nll

    monkeypatch.setattr(export_layered, "reference", float16_overflows)
    _, manifest = export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", "fp16", *CHECK])
    written = strict_json(tmp_path / "onnx" / "manifest.json")
    check = written["check"]
    assert check["max_abs_logit_diff"] is None and check["float32_reference"]["transformers_logit_diff"] is None
    assert check["float32_reference"]["logit_limit"] == check["tolerance"]  # not widened to NaN or inf
    assert written["float16_range"]["peak_at"]
    inspect = STAGES / "inspect"
    if not inspect.is_file():  # said, not passed over: the stages' strict reader is half the point
        pytest.skip(f"the manifest was not read by the stages: no {inspect} (make build, or set LAYERPRUNE_BIN)")
    subprocess.run([str(inspect), str(tmp_path / "onnx")], check=True, capture_output=True)


@pytest.mark.parametrize("step", [0, -1])
def test_transformers_own_float16_overflow_passes_the_generator_check(step, tmp_path, monkeypatch, capsys):
    """A correct decoder, transformers' own fp16 logits NaN at one entry (not the chosen token) of the
    first or the last step: the decoder is judged against float32, passes, and its summary says n/a
    for transformers' figure."""
    hf = checkpoint(tmp_path)
    greedy = export_generator.transformers_greedy

    def float16_overflows(*args, **kwargs):
        tokens, logits = greedy(*args, **kwargs)
        logits = [step.copy() for step in logits]
        logits[step][0, -1] = np.nan
        return tokens, logits

    monkeypatch.setattr(export_generator, "transformers_greedy", float16_overflows)
    export_generator.main(["--model", str(hf), "--out", str(tmp_path / "g.onnx"), "--dtype", "fp16"])
    out = capsys.readouterr().out
    assert "transformers in that dtype n/a: not finite" in out
    # The printed figures are NaN (np.max keeps it), whichever step holds it.
    assert "max |logit diff| nan (relative to the largest logit nan)" in out
    assert (tmp_path / "g.onnx").is_file()


def test_a_nan_decoder_fails_the_generator_check(tmp_path, monkeypatch):
    hf = checkpoint(tmp_path)
    greedy = export_generator.onnx_greedy

    def nan_logits(*args, **kwargs):
        tokens, logits = greedy(*args, **kwargs)
        return tokens, [nan_in(step) for step in logits]

    monkeypatch.setattr(export_generator, "onnx_greedy", nan_logits)
    with pytest.raises(SystemExit, match=r"step 0: the ONNX logits differ from .* by nan.*float16 overflow"):
        export_generator.main(["--model", str(hf), "--out", str(tmp_path / "g.onnx"), "--dtype", "fp16"])
    only(tmp_path, "hf")


# --qkv-projection packed.

@pytest.mark.parametrize("flags", [["--dtype", "fp32"], ["--dtype", "fp16", "--attention-kernel", "standard"],
                                   ["--dtype", "fp16", "--attention-precision", "float32"]])
def test_packed_with_standard_attention_is_refused_before_the_model_loads(flags, tmp_path, monkeypatch):
    hf = checkpoint(tmp_path)
    monkeypatch.setattr(export_layered, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit, match=r"^export: error: --qkv-projection packed packs the projections into a "
                                         r"fused block's GroupQueryAttention node; .* gives standard attention"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), *flags, "--qkv-projection", "packed"])
    only(tmp_path, "hf")


@pytest.mark.parametrize("arch,dtype,why", [("gpt2", "fp16", "no rotary causal attention to fuse"),
                                            ("gemma3_text", "fp16", "q / k are normalised after their products")])
def test_packed_where_no_fused_packing_exists_suggests_separate_not_fused(arch, dtype, why, tmp_path):
    hf = checkpoint(tmp_path, arch)
    with pytest.raises(SystemExit) as refusal:
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", dtype,
                             "--qkv-projection", "packed", "--no-check", "--fp16-margin", "0"])
    message = str(refusal.value)
    assert why in message and "export with --qkv-projection separate" in message
    assert "--attention-kernel fused" not in message
    only(tmp_path, "hf")


@pytest.mark.parametrize("arch,flags,why", [
    ("gpt2", ["--dtype", "fp32"], "no rotary causal attention to fuse"),
    ("mamba", ["--dtype", "fp16", "--attention-kernel", "standard"], "no rotary causal attention to fuse"),
    ("qwen3", ["--dtype", "fp32"], "q / k are normalised after their products"),
    ("olmo2", ["--dtype", "fp16", "--attention-precision", "float32"], "q / k are normalised after their products"),
    ("gemma3_text", ["--dtype", "fp16", "--exporter", "dynamo"], "q / k are normalised after their products"),
    ("phi", ["--dtype", "fp32"], "a rotary embedding over 8 of the head's 16 dimensions")])
def test_the_early_packed_refusal_suggests_fused_only_where_it_can_pack(arch, flags, why, tmp_path, monkeypatch):
    """The refusal from the flags alone (before the weights load) gave "pass --attention-kernel
    fused" for every architecture, and a second run with it was refused again."""
    hf = checkpoint(tmp_path, arch)
    monkeypatch.setattr(export_layered, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as refusal:
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), *flags, "--qkv-projection", "packed"])
    message = str(refusal.value)
    assert message.startswith("export: error: --qkv-projection packed packs the projections into a fused block's")
    assert "cannot be packed here (" in message and why in message
    assert message.endswith("export with --qkv-projection separate")
    assert "--attention-kernel fused" not in message
    only(tmp_path, "hf")


@pytest.mark.parametrize("flags,advice", [
    (["--dtype", "fp32"], "pass --attention-kernel fused"),
    (["--dtype", "fp16", "--attention-precision", "float32"], "pass --attention-kernel fused without --attention-precision"),
    (["--dtype", "fp16", "--exporter", "dynamo"], "pass --attention-kernel fused --exporter legacy")])
def test_the_early_packed_refusal_suggests_fused_where_it_can_pack(flags, advice, tmp_path, monkeypatch):
    hf = checkpoint(tmp_path, "llama")
    monkeypatch.setattr(export_layered, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as refusal:
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), *flags, "--qkv-projection", "packed"])
    assert str(refusal.value).endswith(f"gives standard attention: {advice}")


def test_packing_advice_names_a_dtypes_known_failure_without_its_flags(tmp_path):
    """The refusal's why, not "--dtype fp16: ..." left by a prefix cut short."""
    hf = checkpoint(tmp_path, "gemma")
    from transformers import AutoModelForCausalLM
    advice = export_layered.packing_advice(AutoModelForCausalLM.from_pretrained(hf), "bf16", "legacy")
    assert advice.startswith("the projections cannot be packed here (gemma's fused bf16 blocks are known to fail")


def test_packed_where_fused_attention_applies_suggests_it(tmp_path):
    hf = checkpoint(tmp_path, "gemma")  # fp16 auto: standard (not yet run on CUDA); explicit fused packs
    with pytest.raises(SystemExit, match="pass --attention-kernel fused$"):
        export_layered.main(["--model", str(hf), "--out", str(tmp_path / "onnx"), "--dtype", "fp16",
                             "--qkv-projection", "packed", "--no-check", "--fp16-margin", "0"])


# Abbreviated flags.

@pytest.mark.parametrize("main,flags,abbreviated", [
    (export_layered.main, [], ["--dty", "bf16"]),
    (export_generator.main, [], ["--dty", "bf16"]),
    (prune_hf.main, ["--remove", "1"], ["--forc"])])
def test_an_abbreviated_flag_is_refused(main, flags, abbreviated, tmp_path, capsys):
    """`--dty bf16` would get past `make prune`'s bf16 guard, which reads `--dtype`."""
    with pytest.raises(SystemExit) as refusal:
        main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "out"), *flags, *abbreviated])
    assert refusal.value.code == 2
    assert f"unrecognized arguments: {' '.join(abbreviated)}" in capsys.readouterr().err


# Flags whose limit would not be finite.

@pytest.mark.parametrize("main,flag,value", [
    (export_layered.main, "--fp16-margin", "1e-310"), (export_generator.main, "--fp16-margin", "1e-310"),
    (export_layered.main, "--tolerance", "1e300"), (export_generator.main, "--tolerance", "1e300")])
def test_a_flag_whose_limit_is_not_finite_is_refused_before_any_work(main, flag, value, tmp_path, capsys,
                                                                     monkeypatch):
    """65504 / 1e-310 is inf, and so is 1e300 scaled by a large logit: a check that cannot fail, and
    a manifest strict JSON refuses, found by a traceback after the whole export."""
    monkeypatch.setattr(export_layered, "check_supported_config", lambda *a, **k: pytest.fail("the model was read"))
    monkeypatch.setattr(export_layered, "load_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as refusal:
        main(["--model", str(tmp_path / "hf"), "--out", str(tmp_path / "out"), "--dtype", "fp16", flag, value])
    assert refusal.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}: {value} is so " in error and "not finite" in error
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,value", [("--fp16-margin", "1e-300"), ("--tolerance", "1e260")])
def test_a_small_margin_or_large_tolerance_that_stays_finite_is_accepted(flag, value):
    parse = export_layered.float16_margin if flag == "--fp16-margin" else export_layered.tolerance_number
    assert parse(value) == float(value)

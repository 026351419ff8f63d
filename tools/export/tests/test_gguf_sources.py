"""What of a GGUF file the exporter and prune_hf.py check from its header before transformers
reads it, and what prune_hf.py writes of one. transformers' GGUF loader reads no RoPE scaling (no
`*.rope.scaling.*` key but gpt-oss's, no `rope_freqs`/`rope_factors_*` tensor): a Llama 3.x, a
Phi-3 128k or a Gemma 3 4B+ GGUF was exported and pruned as another model, with plain RoPE, and
every check passed (transformers being source and reference alike); such a file is refused by
name. So are a file that is truncated, a GGUF architecture the loader cannot read (naming those
it can), a Llama GGUF named exactly `mistral` (which the loader takes for an architecture gguf-py
cannot map) and a file without a tokenizer, all before the tensors are dequantized. The pruned
checkpoint of a GGUF names its architecture in config.json, as save_pretrained writes it: llama.cpp's
convert_hf_to_gguf.py and vLLM pick their model by it."""

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import prune_hf  # noqa: E402
from test_missing_weights import gguf_of, minimal_gguf, run  # noqa: E402

PROGRAMS = ["export", "prune_hf"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny Llama GGUF file (Q8_0) as llama.cpp's convert_hf_to_gguf.py writes one."""
    return gguf_of("llama", tmp_path_factory.mktemp("llama"))


def rewritten(source: Path, path: Path, fields=(), tensors=(), drop=lambda key: False) -> Path:
    """A copy of the GGUF file `source` at `path`, with the metadata `fields` ((key, value,
    GGUFValueType) triples) and float32 `tensors` ((name, array) pairs) added, and the metadata
    keys `drop` names left out."""
    import numpy as np

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(path), reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or drop(key):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), field.types[0])
    for key, value, kind in fields:
        writer.add_key_value(key, value, kind)
    for name, data in tensors:
        writer.add_tensor(name, np.asarray(data, dtype=np.float32))
    for tensor in reader.tensors:  # a quantized one as its bytes, rows of blocks
        writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def never_loaded(monkeypatch):
    """Fails the test if the model's tensors are loaded (dequantized)."""
    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(export_layered, "load_pretrained", loaded)


STRING, FLOAT, UINT = gguf.GGUFValueType.STRING, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.UINT32
# As llama.cpp's convert_hf_to_gguf.py writes them: Llama 3.1-3.3's llama3 frequency factors
# (a tensor), Phi-3 128k's longrope (two tensors and an attention factor), Gemma 3 4B+'s linear
# scaling and a YaRN model's (keys).
ROPE_SCALING = {
    "llama3": dict(tensors=[("rope_freqs.weight", [1.0] * 4)], named=r"tensor rope_freqs\.weight"),
    "longrope": dict(tensors=[("rope_factors_long.weight", [4.0] * 4), ("rope_factors_short.weight", [1.0] * 4)],
                     fields=[("llama.rope.scaling.attn_factor", 1.19, FLOAT),
                             ("llama.rope.scaling.original_context_length", 32, UINT)],
                     named=r"llama\.rope\.scaling\.attn_factor = 1\.19\d*, tensor rope_factors_long\.weight, "
                           r"tensor rope_factors_short\.weight"),
    "linear": dict(fields=[("llama.rope.scaling.type", "linear", STRING), ("llama.rope.scaling.factor", 8.0, FLOAT)],
                   named=r"llama\.rope\.scaling\.type = 'linear', llama\.rope\.scaling\.factor = 8\.0"),
    "yarn": dict(fields=[("llama.rope.scaling.type", "yarn", STRING), ("llama.rope.scaling.factor", 4.0, FLOAT),
                         ("llama.rope.scaling.original_context_length", 32, UINT)],
                 named=r"llama\.rope\.scaling\.type = 'yarn', llama\.rope\.scaling\.factor = 4\.0\)"),
    # The older key of a linear scale, which llama.cpp still reads.
    "scale_linear": dict(fields=[("llama.rope.scale_linear", 4.0, FLOAT)], named=r"llama\.rope\.scale_linear = 4\.0"),
}


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("scaling", sorted(ROPE_SCALING))
def test_rope_scaling_transformers_would_drop_is_refused_naming_it_before_loading(program, scaling, llama, tmp_path,
                                                                                  never_loaded):
    case = ROPE_SCALING[scaling]
    path = rewritten(llama, tmp_path / f"{scaling}.gguf", case.get("fields", ()), case.get("tensors", ()))
    # What the refusal is for: transformers' own config of the file has no scaling.
    from transformers import AutoConfig

    assert export_layered.rope_types(AutoConfig.from_pretrained(path.parent, gguf_file=path.name)) == ["default"]
    with pytest.raises(SystemExit, match=f"^{program}: error: {path}: the file's RoPE scaling \\({case['named']}.* "
                                         "not read by transformers' GGUF loader.* drop it and export and prune "
                                         r"another model.*Hugging Face checkpoint instead \(--model\)"):
        run(program, path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Keys llama.cpp runs unscaled (its frequency scale 1): a type `none` whatever the factor, a
# factor 1 or 0 ("unset") whatever the type, an attention factor 1, the informational keys.
NEUTRAL_ROPE_SCALING = {
    "none, factor 1": [("llama.rope.scaling.type", "none", STRING), ("llama.rope.scaling.factor", 1.0, FLOAT),
                       ("llama.rope.scaling.original_context_length", 32, UINT),
                       ("llama.rope.scaling.finetuned", True, gguf.GGUFValueType.BOOL)],
    "none, factor 8": [("llama.rope.scaling.type", "none", STRING), ("llama.rope.scaling.factor", 8.0, FLOAT)],
    "linear, factor 1": [("llama.rope.scaling.type", "linear", STRING), ("llama.rope.scaling.factor", 1.0, FLOAT)],
    "yarn, factor 0": [("llama.rope.scaling.type", "yarn", STRING), ("llama.rope.scaling.factor", 0.0, FLOAT),
                       ("llama.rope.scaling.attn_factor", 1.0, FLOAT)],
    "linear, no factor": [("llama.rope.scaling.type", "linear", STRING)],
}


@pytest.mark.parametrize("case", sorted(NEUTRAL_ROPE_SCALING))
def test_rope_scaling_keys_that_change_nothing_are_not_refused(case, llama, tmp_path):
    path = rewritten(llama, tmp_path / "neutral.gguf", NEUTRAL_ROPE_SCALING[case])
    export_layered.check_gguf_header(path, "export")


def test_an_attention_factor_is_refused_whatever_the_type(llama, tmp_path):
    """llama.cpp multiplies the attention by it even where the type is `none`."""
    path = rewritten(llama, tmp_path / "attn.gguf", [("llama.rope.scaling.type", "none", STRING),
                                                      ("llama.rope.scaling.attn_factor", 1.19, FLOAT)])
    with pytest.raises(SystemExit, match=r"the file's RoPE scaling \(llama\.rope\.scaling\.attn_factor = 1\.19\d*\)"):
        export_layered.check_gguf_header(path, "export")


@pytest.mark.parametrize("arch, model_class", [("llama", "LlamaForCausalLM"), ("gemma3_text", "Gemma3ForCausalLM")])
def test_the_checkpoint_pruned_from_a_gguf_file_names_its_architecture(arch, model_class, tmp_path):
    """As save_pretrained writes it for a Hugging Face source: convert_hf_to_gguf.py reads
    architectures[0], and the weights file says it is PyTorch's."""
    from safetensors import safe_open

    source = gguf_of(arch, tmp_path)
    prune_hf.main(["--gguf", str(source), "--remove", "1", "--out", str(tmp_path / "pruned")])
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["architectures"] == [model_class]
    with safe_open(str(tmp_path / "pruned" / "model.safetensors"), "pt") as handle:
        assert handle.metadata()["format"] == "pt"


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("kept", ["most of the tensors", "part of the header"])
def test_a_truncated_gguf_file_is_refused_as_truncated(program, kept, llama, tmp_path):
    data = llama.read_bytes()
    path = tmp_path / "short.gguf"
    path.write_bytes(data[:len(data) - 5000] if kept == "most of the tensors" else data[:3000])
    with pytest.raises(SystemExit, match=f"^{program}: error: cannot load the GGUF file {path}: not a readable GGUF "
                                         "file, truncated or damaged "
                                         rf"\(.*; the file has {path.stat().st_size} bytes\)$"):
        run(program, path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how,said", [("missing", "GGUF file {path} does not exist"),
                                      ("a folder", "{path} is a folder, not a GGUF file"),
                                      ("unreadable", "cannot read the GGUF file {path}: Permission denied")])
def test_a_gguf_path_that_is_no_readable_file_is_named_so_by_the_header_check(how, said, llama, tmp_path,
                                                                             monkeypatch):
    """crosscheck and torch_baseline call check_gguf_header on their --gguf directly (no
    check_source_exists): a missing file was a FileNotFoundError traceback, and a folder or an
    unreadable file "truncated or damaged"."""
    path = tmp_path / "model.gguf"
    if how == "a folder":
        path.mkdir()
    elif how == "unreadable":
        path.write_bytes(llama.read_bytes())
        real_open = open

        def refused(file, *args, **kwargs):  # chmod 000 does not stop root, who runs some test machines
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(export_layered, "open", refused, raising=False)
        monkeypatch.setattr(gguf.GGUFReader, "__init__", lambda *a, **k: refused(path))
    with pytest.raises(SystemExit) as refusal:
        export_layered.check_gguf_header(path, "crosscheck")
    assert str(refusal.value).startswith("crosscheck: error: " + said.format(path=path))
    assert "truncated" not in str(refusal.value)


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_gguf_file_without_a_tokenizer_is_refused_before_its_tensors_are_loaded(program, llama, tmp_path,
                                                                                 never_loaded):
    path = rewritten(llama, tmp_path / "untokenized.gguf", drop=lambda key: key.startswith("tokenizer."))
    with pytest.raises(SystemExit, match=f"^{program}: error: cannot load the GGUF file {path}: ValueError: "
                                         "Cannot build a tokenizer from a GGUF file stating tokenizer None"):
        run(program, path, tmp_path / "out")


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_llama_gguf_file_named_mistral_is_refused_saying_why(program, llama, tmp_path, never_loaded):
    """transformers reads it as a `mistral` model, which gguf-py has no tensor names for: its
    refusal blamed an outdated gguf-py."""
    path = rewritten(llama, tmp_path / "mistral.gguf", [("general.name", "mistral", STRING)],
                     drop=lambda key: key == "general.name")
    with pytest.raises(SystemExit, match=f"^{program}: error: {path}: a llama GGUF file whose general.name is "
                                         "exactly 'mistral' .* another general.name .* or export the model from its "
                                         r"Hugging Face checkpoint instead \(--model\)$"):
        run(program, path, tmp_path / "out")


GGUF_ARCHITECTURES = "gemma2, gemma3, gpt2, llama, mamba, phi3, qwen2, qwen3, stablelm, starcoder2"


def test_the_gguf_architectures_are_those_transformers_reads_and_the_exporter_supports():
    """transformers 5.23's GGUF loader, gguf-py 0.19 and the exporter's model types; the list
    docs/your-model.md gives."""
    assert ", ".join(export_layered.gguf_architectures()) == GGUF_ARCHITECTURES


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("arch", ["gemma", "olmo2", "gptneox", "mamba2"])
def test_a_gguf_architecture_transformers_cannot_load_is_refused_naming_those_it_can(program, arch, tmp_path,
                                                                                    never_loaded):
    """Models the exporter supports from a Hugging Face folder: transformers' refusal said only
    "not supported yet"."""
    path = minimal_gguf(tmp_path / f"{arch}.gguf", arch)
    with pytest.raises(SystemExit, match=f"^{program}: error: {path}: GGUF architecture '{arch}' "
                                         r"\(general.architecture\) cannot be loaded by transformers' GGUF loader, "
                                         f"which the exporter uses; GGUF architectures it can export: "
                                         f"{GGUF_ARCHITECTURES}; export the model from its Hugging Face checkpoint"):
        run(program, path, tmp_path / "out")


@pytest.mark.parametrize("program", PROGRAMS)
def test_an_unsupported_model_from_a_gguf_file_names_the_gguf_architectures(program, tmp_path, never_loaded):
    path = minimal_gguf(tmp_path / "moe.gguf", "qwen3moe")
    with pytest.raises(SystemExit, match=f"^{program}: error: {path}: model type 'qwen3_moe' is not supported .*"
                                         rf"\(from a GGUF file, general.architecture: {GGUF_ARCHITECTURES}\)$"):
        run(program, path, tmp_path / "out")


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_a_gemma_gguf_file_is_loaded_with_its_own_attention_scale(arch, tmp_path):
    """transformers' GGUF loader reads no query_pre_attn_scalar and left its default, 256: the
    tiny Gemma 2 and 3 (head size 16, scalar 16 in their checkpoints) had their queries scaled by
    1/sqrt(256), another model than the file's. Loaded as llama.cpp runs the file, the pruned
    checkpoint keeps it, and the fp32 and fp16 exports pass their checks. (The 27B's scale:
    test_the_gemma_27b_attention_scale_is_llama_cpps.)"""
    source = gguf_of(arch, tmp_path)
    model = export_layered.load_pretrained(__import__("transformers").AutoModelForCausalLM, source, "export",
                                           "language model", dtype=torch.float32)
    assert model.config.head_dim == 16 and model.config.query_pre_attn_scalar == 16
    assert model.model.layers[0].self_attn.scaling == pytest.approx(16 ** -0.5)
    prune_hf.main(["--gguf", str(source), "--remove", "1", "--out", str(tmp_path / "pruned")])
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["query_pre_attn_scalar"] == 16
    for dtype in ("fp32", "fp16"):
        _, manifest = export_layered.main(["--gguf", str(source), "--out", str(tmp_path / dtype), "--dtype", dtype,
                                           "--check-sequences", "1", "--check-length", "8"])
        assert manifest["check"]["runner"]  # checked (a failing check exits)


@pytest.mark.parametrize("arch, blocks, expected", [
    ("gemma2", 46, 4608 // 32),     # Gemma 2 27B: hidden size / heads, 144
    ("gemma2", 42, 128),            # another size: the head size
    ("gemma3_text", 62, 5376 // 32),  # Gemma 3 27B: 168
    ("gemma3_text", 18, 256),       # Gemma 3 270M: 256 already, nothing to correct
])
def test_the_gemma_27b_attention_scale_is_llama_cpps(arch, blocks, expected, monkeypatch, capsys):
    """llama.cpp tells a 27B by its blocks (46 for Gemma 2, 62 for Gemma 3) and scales its queries by
    1/sqrt(hidden size / heads); every other size by 1/sqrt(head size)."""
    import transformers

    hidden = {46: 4608, 62: 5376}.get(blocks, 640)
    head = 128 if blocks in (42, 46, 62) else 256
    config_class = transformers.Gemma2Config if arch == "gemma2" else transformers.Gemma3TextConfig
    config = config_class(num_hidden_layers=blocks, hidden_size=hidden, num_attention_heads=32, head_dim=head)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *args, **kwargs: config)
    monkeypatch.setattr(export_layered, "gguf_swa_pattern", lambda path: None)  # a file without the key
    corrections = export_layered.gguf_config_corrections(Path("model.gguf"), "export")
    assert corrections == ({} if expected == 256 else {"query_pre_attn_scalar": expected})
    assert ("query_pre_attn_scalar" in capsys.readouterr().err) == (expected != 256)

"""A checkpoint whose files do not hold every tensor the model needs is refused by the exporter,
prune_hf.py and the generator exporter, naming the source and the tensors: transformers only logs
them and fills them with random values, which every check (against the model it loaded) passed,
and prune_hf.py then wrote as weights. The exports need only a multimodal checkpoint's language
model and head (a LLaVA without its vision tower is exported, with a note); prune_hf.py needs all
of it. What transformers rightly does not read from the files (a
tied LM head, non-persistent buffers) is not refused: tiny GGUF files (Q8_0, as llama.cpp writes
them) of a Llama and a Gemma 3 still export and prune. Also the refusals of a config.json that
is no JSON or a GGUF file of an unsupported model (naming the file), a LLaVA text_config without a
model_type (read as transformers reads it), and the manifest's tie_word_embeddings (what the
loaded model does, not what its config asks)."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_generator  # noqa: E402
import export_layered  # noqa: E402
import make_fixture  # noqa: E402
import prune_hf  # noqa: E402

PROGRAMS = {"export": export_layered.main, "prune_hf": prune_hf.main, "export_generator": export_generator.main}


def run(program, source: Path, out: Path):
    """`program` on the checkpoint folder (or, a file, the GGUF file) `source`, writing `out`."""
    extra = ["--remove", "1"] if program == "prune_hf" else []
    flag = "--gguf" if source.is_file() else "--model"
    return PROGRAMS[program]([flag, str(source), "--out", str(out), *extra])


def output_of(program, tmp_path: Path) -> Path:
    return tmp_path / ("out.onnx" if program == "export_generator" else "out")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny Llama of the architecture tests: 4 blocks, tied embedding and head."""
    return make_fixture.build_arch_folder(tmp_path_factory.mktemp("llama") / "hf", "llama", seed=3)


def edited(source: Path, folder: Path, tensors=None, config=None) -> Path:
    """A copy of `source` with its tensors and config.json changed by the functions given."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    if tensors is not None:
        path = folder / "model.safetensors"
        save_file(tensors(load_file(path)), path, metadata={"format": "pt"})
    if config is not None:
        path = folder / "config.json"
        values = json.loads(path.read_text())
        config(values)
        path.write_text(json.dumps(values))
    return folder


def without(name):
    def edit(tensors):
        del tensors[name]
        return tensors
    return edit


def untie(config):
    config["tie_word_embeddings"] = False


def without_layer_count(config):
    del config["num_hidden_layers"]


# The audit's four checkpoints (each exported, pruned and turned into a generator from random
# tensors, every check passing), and what the refusal says of each.
BROKEN = {
    "prefixed": (dict(tensors=lambda tensors: {"base_model.model." + k: v for k, v in tensors.items()}),
                 r"its weight files lack 39 tensors the model \(LlamaForCausalLM\) needs: lm_head.weight, "
                 r"model.embed_tokens.weight, model.layers.0.input_layernorm.weight, "
                 r"model.layers.0.mlp.down_proj.weight, model.layers.0.mlp.gate_proj.weight and 34 more\. .*"
                 r"Its weight files hold 38 tensors the model has no place for, all named under "
                 r"'base_model.model.', .*a wrapper's or adapter's state dict"),
    "one_missing": (dict(tensors=without("model.layers.2.mlp.down_proj.weight")),
                    r"its weight files lack 1 tensor the model \(LlamaForCausalLM\) needs: "
                    r"model.layers.2.mlp.down_proj.weight\. transformers fills a missing tensor with random values"),
    "untied": (dict(config=untie),
               r"its weight files lack 1 tensor the model \(LlamaForCausalLM\) needs: lm_head.weight\. .*"
               r"Its weight files hold no LM head \(lm_head.weight\), and the config does not tie it to the "
               r"embedding \(tie_word_embeddings false\)"),
    "no_layer_count": (dict(config=without_layer_count),
                       r"its weight files lack 252 tensors .*model.layers.4–31 have no tensor at all in its weight "
                       r"files: the config makes 32 blocks \(config.json's num_hidden_layers, or transformers' "
                       r"default for it where config.json names none\), its weight files hold 4"),
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_checkpoint_whose_files_lack_tensors_is_refused_naming_them(program, broken, llama, tmp_path):
    edits, message = BROKEN[broken]
    source = edited(llama, tmp_path / broken, **edits)
    with pytest.raises(SystemExit) as refusal:
        run(program, source, output_of(program, tmp_path))
    assert refusal.value.code != 0
    assert str(refusal.value).startswith(f"{program}: error: {source}: "), refusal.value
    assert re.search(message, str(refusal.value)), refusal.value
    assert not output_of(program, tmp_path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [broken]  # no staging folder left


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """The tiny LLaVA of the architecture tests (a one-layer CLIP vision tower, a projector)."""
    return make_fixture.build_multimodal_folder(tmp_path_factory.mktemp("llava") / "hf", "llava", seed=5)


def outside_the_language_model(tensors):
    """The checkpoint's tensors but its vision tower's and projector's."""
    return {name: value for name, value in tensors.items() if "vision_tower" not in name and "projector" not in name}


def test_a_multimodal_checkpoint_lacking_a_language_model_tensor_is_refused(llava, tmp_path):
    """The whole checkpoint is loaded (and prune_hf.py writes it whole): a tensor of its language
    model missing is named as transformers names it in the model (the file's older names,
    `language_model.model.…`, are converted on loading). The generator refuses a multimodal
    checkpoint by its model type, before its weights are read."""
    from safetensors.torch import load_file

    name = next(n for n in load_file(llava / "model.safetensors") if n.endswith("layers.1.mlp.up_proj.weight"))
    broken = edited(llava, tmp_path / "broken", tensors=without(name))
    for program in ("export", "prune_hf"):
        with pytest.raises(SystemExit, match=f"^{program}: error: {broken}: its weight files lack 1 tensor the model "
                                             r"\(LlavaForConditionalGeneration\) needs: "
                                             r"model.language_model.layers.1.mlp.up_proj.weight\. "):
            run(program, broken, output_of(program, tmp_path))
        assert not output_of(program, tmp_path).exists()
    with pytest.raises(SystemExit, match=f"^export_generator: error: {broken}/config.json: model type 'llava' "
                                         r"\(LlavaForConditionalGeneration\) is not supported by the KV-cache "
                                         "exporter"):
        run("export_generator", broken, output_of("export_generator", tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_a_multimodal_checkpoint_without_its_vision_tower_exports_its_language_model(llava, tmp_path, capfd):
    """The layered export runs only the language model and its head: a LLaVA whose files lack its
    vision tower and projector is exported, its check passing, with a note naming the tensors
    it lacks; it was refused, saying that every check would compare with the same random model,
    which no check runs. prune_hf.py, which writes the checkpoint whole, still refuses it, saying
    it would write the random values."""
    source = edited(llava, tmp_path / "hf", tensors=outside_the_language_model)
    _, manifest = export_layered.main(["--model", str(source), "--out", str(tmp_path / "onnx")])
    assert manifest["source"]["language_model_of"] == "LlavaForConditionalGeneration"
    assert manifest["check"]["max_abs_nll_diff"] < 1e-4 and manifest["check"]["max_abs_logit_diff"] < 1e-4
    note = capfd.readouterr().err
    assert re.search(f"export: note: {source}: its weight files lack 27 tensors outside the language model and its "
                     r"head, which export does not use \(model.multi_modal_projector.linear_1.bias, .* and 22 more\): "
                     "exported without them", note), note
    with pytest.raises(SystemExit) as refusal:
        run("prune_hf", source, tmp_path / "pruned")
    assert re.search(f"^prune_hf: error: {source}: its weight files lack 27 tensors the model "
                     r"\(LlavaForConditionalGeneration\) needs: model.multi_modal_projector.linear_1.bias, .*"
                     "prune_hf would write those random values into the checkpoint it writes .*"
                     r"\(the layered export, which uses only the language model and its head, needs none of them\)",
                     str(refusal.value)), refusal.value
    assert not (tmp_path / "pruned").exists()


def test_an_export_refusal_counts_only_the_tensors_it_uses_and_names_the_others(llava, tmp_path):
    """A LLaVA lacking a language-model tensor and its vision tower: the export refuses the one
    tensor it needs and names the others as tensors it does not use; prune_hf.py refuses all."""
    from safetensors.torch import load_file

    name = next(n for n in load_file(llava / "model.safetensors") if n.endswith("layers.1.mlp.up_proj.weight"))
    source = edited(llava, tmp_path / "hf", tensors=lambda tensors: without(name)(outside_the_language_model(tensors)))
    with pytest.raises(SystemExit) as refusal:
        run("export", source, tmp_path / "onnx")
    assert re.search(f"^export: error: {source}: its weight files lack 1 tensor the model "
                     r"\(LlavaForConditionalGeneration\) needs: model.language_model.layers.1.mlp.up_proj.weight\. "
                     "transformers fills a missing tensor with random values and only logs it, and every check of "
                     "export would compare with that same random model. Its weight files also lack 27 tensors "
                     "outside the language model and its head, which export does not use "
                     r"\(model.multi_modal_projector.linear_1.bias, ", str(refusal.value)), refusal.value
    with pytest.raises(SystemExit, match=f"^prune_hf: error: {source}: its weight files lack 28 tensors "):
        run("prune_hf", source, tmp_path / "pruned")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_only_tensors_the_model_lacks_are_refused_not_extra_ones(llama, tmp_path, monkeypatch):
    """Only missing_keys (and mismatched_keys) refuse: a tied head, non-persistent buffers and a
    class's keys to ignore are left out of it by transformers (the architecture tests export
    every fixture, tied ones among them); tensors the model has no place for alone do not."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama)
    export_layered.refuse_missing_tensors(model, {"missing_keys": set(), "unexpected_keys": {"extra.weight"},
                                                  "mismatched_keys": set()}, llama, "export")
    with pytest.raises(SystemExit, match=r"lack 1 tensor .* needs: model.norm.weight\. .*also hold 1 tensors the "
                                         r"model has no place for \(extra.weight\)"):
        export_layered.refuse_missing_tensors(model, {"missing_keys": set(), "unexpected_keys": {"extra.weight"},
                                                      "mismatched_keys": {("model.norm.weight", (3,), (64,))}},
                                              llama, "export")


def test_a_prefixed_checkpoint_is_refused_before_any_output(llama, tmp_path):
    """The listing: a few names, then the count of the others."""
    source = edited(llama, tmp_path / "prefixed", **BROKEN["prefixed"][0])
    with pytest.raises(SystemExit) as refusal:
        run("export", source, tmp_path / "out")
    text = str(refusal.value)
    assert text.count("model.layers.") <= 6 and " and 34 more." in text
    assert "e.g. base_model.model.model.embed_tokens.weight" in text and text.endswith("'base_model.model.'.")


# A tiny GGUF file as llama.cpp's convert_hf_to_gguf.py writes one: llama.cpp's tensor names, the
# query and key rows of a Llama permuted, Gemma's norms stored as 1 + weight, the matrices in
# Q8_0, the byte-level BPE tokenizer as `gpt2` token and merge lists, no output.weight when tied.
def write_gguf(model, tokenizer_json: Path, path: Path, drop=()):
    import gguf
    import numpy as np

    config = model.config
    arch = {"gemma3_text": "gemma3"}.get(config.model_type, config.model_type)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters.get("rope_theta", 10000.0)
                              if "rope_theta" in (config.rope_parameters or {}) else 10000.0)
    writer.add_vocab_size(config.vocab_size)
    if arch in ("gemma2", "gemma3"):  # as convert_hf_to_gguf.py writes both
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_sliding_window(config.sliding_window)
    else:
        writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    vocabulary = json.loads(tokenizer_json.read_text())["model"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    tokens = sorted(vocabulary["vocab"], key=vocabulary["vocab"].get)
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in vocabulary["merges"]])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        module, suffix = key.rsplit(".", 1)
        name = f"{names.get_name(module)}.{suffix}"
        if name in drop:
            continue
        data = value.float().numpy()
        if arch == "llama" and (".q_proj." in key or ".k_proj." in key):
            heads = config.num_attention_heads if ".q_proj." in key else config.num_key_value_heads
            data = data.reshape(heads, 2, data.shape[0] // heads // 2, *data.shape[1:]).swapaxes(1, 2) \
                .reshape(data.shape)
        if arch in ("gemma2", "gemma3") and "norm" in key:  # llama.cpp's norms hold 1 + w
            data = data + 1
        if data.ndim == 2 and data.shape[1] % 32 == 0:
            writer.add_tensor(name, gguf.quantize(np.ascontiguousarray(data), gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def minimal_gguf(path: Path, arch: str) -> Path:
    """A GGUF file of architecture `arch` with a header and one tensor."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_vocab_size(16)
    writer.add_tensor("token_embd.weight", np.zeros((16, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_of(arch: str, folder: Path, drop=()) -> Path:
    from transformers import AutoModelForCausalLM

    hf = make_fixture.build_arch_folder(folder / "hf", arch, seed=7)
    return write_gguf(AutoModelForCausalLM.from_pretrained(hf), hf / "tokenizer.json", folder / f"{arch}.Q8_0.gguf",
                      drop)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_a_gguf_file_holding_every_tensor_exports_and_prunes(arch, tmp_path):
    """The project's real models are GGUF files (SmolLM2, a Llama; Gemma 3 270M): transformers
    reports no missing tensor for a whole one (its tied head left out, as the file has none)."""
    gguf = gguf_of(arch, tmp_path)
    _, manifest = export_layered.main(["--gguf", str(gguf), "--out", str(tmp_path / "onnx")])
    assert manifest["source"]["kind"] == "gguf" and manifest["tie_word_embeddings"] is True
    prune_hf.main(["--gguf", str(gguf), "--remove", "1", "--out", str(tmp_path / "pruned")])
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["layerprune_kept_blocks"] == [0, 2, 3] + list(range(4, len(manifest["blocks"])))


@pytest.mark.parametrize("program", ["export", "prune_hf"])
def test_a_gguf_file_lacking_a_tensor_is_refused_naming_it(program, tmp_path):
    gguf = gguf_of("llama", tmp_path, drop={"blk.2.ffn_down.weight"})
    with pytest.raises(SystemExit, match=f"^{program}: error: {gguf}: the file lacks 1 tensor the model "
                                         r"\(LlamaForCausalLM\) needs: model.layers.2.mlp.down_proj.weight\. "):
        run(program, gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_tools_comparing_transformers_with_the_export_refuse_a_gguf_file_lacking_a_tensor(tmp_path, monkeypatch):
    """tools/tasks/crosscheck.py and tools/bench/torch_baseline.py load the GGUF the export was
    made from with transformers: a tensor it lacks, filled with random values, would have made
    their log-likelihoods or NLLs disagree with evaluate's for no fault of either."""
    tools = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(tools / "tasks"))
    monkeypatch.syspath_prepend(str(tools / "bench"))
    import crosscheck
    import torch_baseline

    gguf = gguf_of("llama", tmp_path, drop={"blk.2.ffn_down.weight"})
    for program, load in (("crosscheck", crosscheck.load_model), ("torch_baseline", torch_baseline.load_model)):
        with pytest.raises(SystemExit, match=f"^{program}: error: {gguf}: the file lacks 1 tensor the model "
                                             r"\(LlamaForCausalLM\) needs: model.layers.2.mlp.down_proj.weight\. "
                                             "transformers fills .* and the (cross-check|baseline) would run that random model"):
            load(gguf)
    whole = gguf_of("llama", tmp_path / "whole")
    assert crosscheck.load_model(whole).config.num_hidden_layers == 4


@pytest.mark.parametrize("program", ["export", "prune_hf"])
def test_a_gguf_file_of_an_unsupported_model_is_refused_naming_it_before_loading(program, tmp_path, monkeypatch):
    """From the file's metadata: the refusal came after its tensors were dequantized, naming no file."""
    path = minimal_gguf(tmp_path / "moe.gguf", "qwen3moe")

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(export_layered, "load_pretrained", loaded, raising=False)
    with pytest.raises(SystemExit, match=f"^{program}: error: {path}: model type 'qwen3_moe' is not supported by "
                                         "the layered exporter; supported model types: "):
        run(program, path, tmp_path / "out")


def test_a_config_that_is_not_json_is_named_by_prune_hf(llama, tmp_path):
    """prune_hf.py read it for Qwen3-VL's deepstack blocks before the check that names it: a
    JSONDecodeError traceback."""
    source = shutil.copytree(llama, tmp_path / "hf")
    (source / "config.json").write_text('{"model_type": "llama", ')
    with pytest.raises(SystemExit, match=f"^prune_hf: error: cannot read {source}/config.json: Expecting "):
        run("prune_hf", source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_llava_text_config_without_a_model_type_is_read_as_transformers_reads_it(tmp_path):
    """LlavaConfig reads a text_config without a model_type as a llama's: exported as one (it was
    refused as "model type None")."""
    source = make_fixture.build_multimodal_folder(tmp_path / "hf", "llava", seed=5)
    config = json.loads((source / "config.json").read_text())
    del config["text_config"]["model_type"]
    (source / "config.json").write_text(json.dumps(config))
    _, manifest = export_layered.main(["--model", str(source), "--out", str(tmp_path / "onnx")])
    assert manifest["architecture"] == "llama" and manifest["source"]["language_model_of"] == \
        "LlavaForConditionalGeneration"
    # Of the multimodal types, the language model's type as transformers' config class reads it.
    assert export_layered.text_model_type("llava", {"text_config": {}}) == "llama"
    assert export_layered.text_model_type("mistral3", {}) == "mistral"
    assert export_layered.text_model_type("qwen2_vl", {}) == "qwen2_vl_text"  # a config without text_config
    assert export_layered.text_model_type("llava", {"text_config": {"model_type": "mpt"}}) == "mpt"


@pytest.mark.parametrize("arch, tied", [("llama", True), ("mistral", False)])
def test_the_manifest_says_whether_the_head_is_the_embedding(arch, tied, tmp_path):
    source = make_fixture.build_arch_folder(tmp_path / "hf", arch, seed=3)
    _, manifest = export_layered.main(["--model", str(source), "--out", str(tmp_path / "onnx")])
    assert manifest["tie_word_embeddings"] is tied


def test_a_head_transformers_declines_to_tie_is_recorded_as_untied(llama, tmp_path):
    """config.json says tied, the file holds a head of other values: transformers keeps the two
    apart (with a warning), and so do the head graphs; the manifest said tied."""
    def with_head(tensors):
        tensors["lm_head.weight"] = torch.randn_like(tensors["model.embed_tokens.weight"])
        return tensors

    source = edited(llama, tmp_path / "hf", tensors=with_head)
    assert json.loads((source / "config.json").read_text())["tie_word_embeddings"] is True
    model, manifest = export_layered.main(["--model", str(source), "--out", str(tmp_path / "onnx")])
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert manifest["tie_word_embeddings"] is False
    written = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert written["tie_word_embeddings"] is False

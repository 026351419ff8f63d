"""prune_hf.py's config of the pruned checkpoint, as other tools read it: Qwen's max_window_layers,
and the number of layers tools/prune/report.py (the `make prune` summary and its refusal of a K
too large) reads under the key transformers reads it from."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_layered  # noqa: E402
import make_fixture  # noqa: E402
import prune_hf  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("prune_report", ROOT / "tools" / "prune" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """The tiny Qwen2 of the fixture: 5 blocks, full attention below max_window_layers = 2, a
    sliding window of 4 from block 2 on."""
    return make_fixture.build_arch_folder(tmp_path_factory.mktemp("qwen2") / "hf", "qwen2", seed=5)


@pytest.mark.parametrize("removed, max_window_layers", [("1", 1), ("0,1", 0), ("3", 2), ("2,4", 2)])
def test_qwen2_s_max_window_layers_counts_the_kept_full_attention_blocks(qwen2, tmp_path, removed,
                                                                         max_window_layers):
    """The pruned config states its pattern twice, in layer_types and in max_window_layers (the
    first max_window_layers blocks full): both must say the kept blocks' types, so that a tool that
    derives the pattern from max_window_layers (transformers, for a config without layer_types)
    computes the same model."""
    from transformers import Qwen2Config

    source = json.loads((qwen2 / "config.json").read_text())
    assert source["max_window_layers"] == 2 and source["use_sliding_window"]
    prune_hf.main(["--model", str(qwen2), "--remove", removed, "--out", str(tmp_path / "p")])
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    kept = [i for i in range(source["num_hidden_layers"]) if str(i) not in removed.split(",")]
    assert config["layer_types"] == [source["layer_types"][i] for i in kept]
    assert config["max_window_layers"] == max_window_layers
    without_types = {key: value for key, value in config.items() if key != "layer_types"}
    assert Qwen2Config(**without_types).layer_types == config["layer_types"]


def test_a_gpt2_checkpoint_s_layers_are_read_under_n_layer(tmp_path):
    make_fixture.build_arch_folder(tmp_path / "hf", "gpt2", seed=5)
    prune_hf.main(["--model", str(tmp_path / "hf"), "--remove", "1,2", "--out", str(tmp_path / "p")])
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert report.layer_count(config) == (2, "n_layer")
    assert report.layer_count(json.loads((tmp_path / "hf" / "config.json").read_text())) == (4, "n_layer")


@pytest.mark.parametrize("model_type", sorted(export_layered.SUPPORTED_MODEL_TYPES | export_layered.MULTIMODAL_MODEL_TYPES))
def test_report_reads_the_layers_where_transformers_does(model_type):
    """report.LAYER_COUNT_KEYS holds the key transformers' config class reads num_hidden_layers from
    (the exporter's and prune_hf.py's config.num_hidden_layers) for every supported architecture,
    the language model's for a multimodal one."""
    from transformers import AutoConfig

    checkpoint = AutoConfig.for_model(model_type)
    config = checkpoint.get_text_config()
    key = config.attribute_map.get("num_hidden_layers", "num_hidden_layers")
    assert key in report.LAYER_COUNT_KEYS
    prefix = "text_config." if config is not checkpoint else ""
    written = json.loads(checkpoint.to_json_string())
    assert report.layer_count(written) == (config.num_hidden_layers, prefix + key)


@pytest.fixture
def loading_refused(monkeypatch):
    """Loading the model fails the test: what is refused must be refused before it."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(export_layered, "load_checkpoint", load)


def test_an_output_that_is_holds_or_lies_in_the_source_is_refused_before_loading(qwen2, tmp_path, loading_refused):
    """--force replaces the output: the model folder, a folder holding it or one inside it as the
    output would delete or change the model; a GGUF file's folder, or the file, too."""
    import shutil

    source = tmp_path / "models" / "hf"
    shutil.copytree(qwen2, source)
    for out, problem in [(source, "is the model folder"), (source.parent, "contains the model folder"),
                         (source / "pruned", "lies inside the model folder")]:
        with pytest.raises(SystemExit, match=f"prune_hf: error: --out {out} {problem}"):
            prune_hf.main(["--model", str(source), "--remove", "1", "--out", str(out), "--force"])
    gguf = tmp_path / "models" / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for out, problem in [(gguf, "is the GGUF file"), (tmp_path, "contains the GGUF file")]:
        with pytest.raises(SystemExit, match=f"prune_hf: error: --out {out} {problem}"):
            prune_hf.main(["--gguf", str(gguf), "--remove", "1", "--out", str(out), "--force"])
    assert sorted(p.name for p in source.iterdir()) == sorted(p.name for p in qwen2.iterdir())


def test_a_plan_table_that_cannot_be_read_is_refused_naming_it_before_loading(qwen2, tmp_path, loading_refused):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "text.parquet").write_text("not Parquet")
    pq.write_table(pa.table({"method": ["sleb"], "blocks": [[1]]}), tmp_path / "columns.parquet")
    for plans, problem in [(tmp_path / "missing.parquet", "no such file"),
                           (tmp_path / "text.parquet", "not a readable Parquet table"),
                           (tmp_path / "columns.parquet", "no column k, removed_blocks: not a plan table")]:
        with pytest.raises(SystemExit, match=f"prune_hf: error: --plans {plans}: {problem}"):
            prune_hf.main(["--model", str(qwen2), "--plans", str(plans), "--plan-method", "sleb",
                           "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


def test_an_output_whose_folder_is_missing_is_written_and_one_that_cannot_be_is_refused(qwen2, tmp_path):
    out = tmp_path / "new" / "parent" / "pruned"
    prune_hf.main(["--model", str(qwen2), "--remove", "1", "--out", str(out)])
    assert json.loads((out / "config.json").read_text())["layerprune_kept_blocks"] == [0, 2, 3, 4]
    assert [p.name for p in out.parent.iterdir()] == ["pruned"]  # no staging folder left
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit, match="a-file is a file, not a folder"):
        prune_hf.main(["--model", str(qwen2), "--remove", "1", "--out", str(tmp_path / "a-file" / "pruned")])


def test_a_checkpoint_prune_hf_wrote_that_reloads_without_a_tensor_is_named_as_its_defect(qwen2, tmp_path,
                                                                                            monkeypatch):
    """prune_hf.py reloads what it wrote, in a hidden staging folder, before putting it in place:
    a tensor lost there is prune_hf's own defect. The refusal named the staging folder (deleted
    at once) as a source whose files lack tensors, with the remedies for a user's checkpoint."""
    from safetensors.torch import load_file, save_file

    lost = "model.layers.1.mlp.down_proj.weight"
    saved = []

    def save_losing_a_tensor(model, tokenizer, folder, source):
        original_save(model, tokenizer, folder, source)
        tensors = load_file(folder / "model.safetensors")
        del tensors[lost]
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        saved.append(folder)

    original_save = prune_hf.save
    monkeypatch.setattr(prune_hf, "save", save_losing_a_tensor)
    out = tmp_path / "pruned"
    with pytest.raises(SystemExit) as refusal:
        prune_hf.main(["--model", str(qwen2), "--remove", "2", "--out", str(out)])
    assert str(refusal.value) == (f"prune_hf: error: the checkpoint prune_hf wrote for {out} reloads without 1 tensor "
                                  f"of the pruned model ({lost}): a prune_hf defect; nothing was put at {out}")
    assert saved and saved[0].name.startswith(".") and saved[0].name not in str(refusal.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no staging folder left


def test_the_source_s_config_is_read_once(qwen2, tmp_path, monkeypatch):
    """prune_hf.py read config.json for its deepstack check, then load_checkpoint read and
    checked it again, and model_class a third time (transformers reads it on its own)."""
    config = qwen2 / "config.json"
    reads = []
    read_text = Path.read_text

    def counted(path, *args, **kwargs):
        if Path(path) == config:
            reads.append(path)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    prune_hf.main(["--model", str(qwen2), "--remove", "2", "--out", str(tmp_path / "p")])
    assert len(reads) == 1


def tamper_with_the_attention(model):
    """Block 1's attention (of the written model as it is read back: the reload checks' tests here
    and in test_prune_gguf.py)."""
    export_layered.Architecture(model).layers[1].self_attn.sliding_window = 2


def tamper_with_the_loss(model):
    model.model.norm.variance_epsilon = 1.0  # neither a tensor nor an attention setting


@pytest.mark.parametrize("tamper, said", [
    (None, None),
    (tamper_with_the_attention, "the reloaded checkpoint's block 1 has other attention settings than the pruned "
                                "model's \\(its config's per-layer lists\\)"),
    (tamper_with_the_loss, "the reloaded checkpoint's loss [-0-9.e]+ differs from the pruned model's [-0-9.e]+"),
])
def test_the_reload_check_holds_one_model_at_a_time_and_still_tells_a_difference(qwen2, tmp_path, monkeypatch,
                                                                                   capsys, tamper, said):
    """The pruned model is dropped before the checkpoint written from it is reloaded (at 7B, two
    models in memory at once): the check compares with what was taken from it, as strictly as with
    the model, and the summary line's figures are the pruned model's."""
    import weakref

    load, reload = export_layered.load_checkpoint, prune_hf.reload
    in_memory = []

    def loaded(*args, **kwargs):
        model, tokenizer, source = load(*args, **kwargs)
        in_memory.append(weakref.ref(model))
        return model, tokenizer, source

    def reloaded(staging, out):
        assert in_memory and in_memory[0]() is None, "the pruned model is alive while its checkpoint is reloaded"
        model = reload(staging, out)
        if tamper is not None:
            tamper(model)
        return model

    monkeypatch.setattr(export_layered, "load_checkpoint", loaded)
    monkeypatch.setattr(prune_hf, "reload", reloaded)
    out = tmp_path / "p"
    if said is None:
        prune_hf.main(["--model", str(qwen2), "--remove", "2", "--out", str(out)])
        config = json.loads((out / "config.json").read_text())
        assert config["layerprune_kept_blocks"] == [0, 1, 3, 4]
        counts = config["layerprune_parameters"]
        assert counts["pruned"] < counts["source"]
        assert capsys.readouterr().out.startswith(
            f"wrote {out}: 4 blocks kept (original indices [0, 1, 3, 4]), removed [2]; {counts['source']:,} "
            f"parameters before, {counts['pruned']:,} after; reload check loss ")
    else:
        with pytest.raises(SystemExit, match=f"^prune_hf: error: {said}$"):
            prune_hf.main(["--model", str(qwen2), "--remove", "2", "--out", str(out)])
        assert list(tmp_path.iterdir()) == []  # no output, no staging folder left

"""Bad input to the export tools: a checkpoint folder with a damaged or missing file, flags out of
range, a layered folder with a damaged file. Each is refused with an error naming the tool, the
file or flag and the problem (no traceback), before anything is written; and what the tools write
when they succeed: the export check's bound, prune_hf.py's config lists and original indices,
make_fixture.py's folder."""

import json
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_generator  # noqa: E402
import export_layered  # noqa: E402
import make_fixture  # noqa: E402
import merge_layered  # noqa: E402
import prune_hf  # noqa: E402

PROGRAMS = {"export": export_layered.main, "prune_hf": prune_hf.main, "export_generator": export_generator.main}


def run(program, source: Path, out: Path, *flags):
    """`program` on the checkpoint folder `source`, writing `out`."""
    extra = {"prune_hf": ["--remove", "1"]}.get(program, [])
    return PROGRAMS[program](["--model", str(source), "--out", str(out), *extra, *flags])


def output_of(program, tmp_path: Path) -> Path:
    return tmp_path / ("out.onnx" if program == "export_generator" else "out")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny Llama of the architecture tests: 4 blocks, tied embedding and head."""
    return make_fixture.build_arch_folder(tmp_path_factory.mktemp("llama") / "hf", "llama", seed=3)


def copy_of(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_truncated_safetensors_file_is_named(program, llama, tmp_path):
    """safetensors' own message ("incomplete metadata, file not fully covered") names no file."""
    source = copy_of(llama, tmp_path / "hf")
    weights = source / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(SystemExit, match=f"^{program}: error: {weights}: not a readable safetensors file"):
        run(program, source, output_of(program, tmp_path))
    assert not output_of(program, tmp_path).exists()


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_shard_the_index_names_but_the_folder_lacks_is_named(program, llama, tmp_path):
    from safetensors.torch import load_file, save_file

    source = copy_of(llama, tmp_path / "hf")
    tensors = load_file(source / "model.safetensors")
    (source / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {name: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, name in enumerate(names)}
    save_file({n: tensors[n] for n in names if shards[n].startswith("model-00001")},
              source / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    with pytest.raises(SystemExit, match=f"^{program}: error: {source}/model.safetensors.index.json names weight "
                                         f"files that are not in {source}: model-00002-of-00002.safetensors"):
        run(program, source, output_of(program, tmp_path))
    assert not output_of(program, tmp_path).exists()


@pytest.mark.parametrize("program", ["export", "prune_hf"])
def test_a_tokenizer_that_cannot_be_read_is_named(program, llama, tmp_path):
    source = copy_of(llama, tmp_path / "hf")
    (source / "tokenizer.json").write_text("{")
    with pytest.raises(SystemExit, match=f"^{program}: error: cannot load the tokenizer in {source} "
                                         r"\(tokenizer.json, tokenizer_config.json\): JSONDecodeError"):
        run(program, source, output_of(program, tmp_path))
    assert not output_of(program, tmp_path).exists()


@pytest.mark.parametrize("program", ["export", "prune_hf"])
def test_a_gguf_file_that_cannot_be_read_is_named(program, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(SystemExit, match=f"^{program}: error: cannot load the GGUF file {gguf}: "):
        PROGRAMS[program](["--gguf", str(gguf), "--out", str(tmp_path / "out"),
                           *(["--remove", "1"] if program == "prune_hf" else [])])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("program", ["export", "prune_hf"])
def test_a_folder_given_as_a_gguf_file_is_named_a_folder(program, tmp_path):
    """A folder named *.gguf was said not to exist."""
    folder = tmp_path / "model.gguf"
    folder.mkdir()
    with pytest.raises(SystemExit, match=f"^{program}: error: {folder} is a folder, not a GGUF file"):
        PROGRAMS[program](["--gguf", str(folder), "--out", str(tmp_path / "out"),
                           *(["--remove", "1"] if program == "prune_hf" else [])])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("program", ["export", "prune_hf"])
def test_a_folder_without_weights_is_refused_by_the_tool_that_reads_it(program, llama, tmp_path):
    """prune_hf.py's refusals named the exporter ("export: error")."""
    source = copy_of(llama, tmp_path / "hf")
    (source / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match=f"^{program}: error: {source} has a config.json but no weights"):
        run(program, source, output_of(program, tmp_path))


def test_the_generator_refuses_a_folder_without_weights_before_loading(llama, tmp_path):
    source = copy_of(llama, tmp_path / "hf")
    (source / "model.safetensors").unlink()
    (source / "tokenizer.json").unlink()  # not needed by the generator: not asked for
    with pytest.raises(SystemExit, match=f"^export_generator: error: {source} has a config.json but no weights"):
        run("export_generator", source, tmp_path / "out.onnx")


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_config_without_a_model_type_is_named(program, llama, tmp_path):
    """By the one check of a config every tool shares (the generator had its own, which refused
    it as "model type None")."""
    source = copy_of(llama, tmp_path / "hf")
    config = json.loads((source / "config.json").read_text())
    del config["model_type"]
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=f"^{program}: error: {source}/config.json names no model_type: not a "
                                         "transformers config$"):
        run(program, source, output_of(program, tmp_path))
    assert not output_of(program, tmp_path).exists()


@pytest.fixture
def loading_refused(monkeypatch):
    """Loading the model fails the test: what is refused must be refused before it."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(export_layered, "load_checkpoint", load)
    # The generator's first read of the checkpoint: the config check it shares with the exporter.
    monkeypatch.setattr(export_layered, "check_supported_config", load)


@pytest.mark.parametrize("program, flag, value", [
    ("export", "--check-sequences", "0"), ("export", "--check-length", "1"), ("export", "--fixed-seq-len", "0"),
    ("export", "--threads", "-1"), ("export", "--tolerance", "nan"), ("export", "--tolerance", "-1"),
    ("export", "--fp16-margin", "nan"), ("export", "--fp16-margin", "-2"), ("export", "--check-length", "x"),
    ("export_generator", "--tolerance", "nan"), ("export_generator", "--new-tokens", "0"),
    ("export_generator", "--prompt-length", "1"), ("export_generator", "--fp16-margin", "-1"),
    ("export_generator", "--threads", "-2")])
def test_a_flag_out_of_its_range_is_refused_naming_it_before_loading(program, flag, value, llama, tmp_path, capsys,
                                                                      loading_refused):
    """A NaN tolerance or margin passed every check (nothing exceeds NaN); a check of 0 sequences
    or 1 token failed after the whole export with NumPy's "zero-size array" traceback."""
    with pytest.raises(SystemExit) as exit:
        run(program, llama, output_of(program, tmp_path), f"{flag}={value}")
    assert exit.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


def test_a_check_longer_than_the_context_is_refused_before_the_export(tmp_path):
    """GPT-2's learned positions end at n_positions: the check's transformers side failed past
    them with an IndexError traceback, after every graph was written."""
    source = make_fixture.build_arch_folder(tmp_path / "hf", "gpt2", seed=3)
    context = json.loads((source / "config.json").read_text())["n_positions"]
    with pytest.raises(SystemExit, match=f"--check-length {context + 1} is longer than the model's context, "
                                         f"{context} tokens"):
        run("export", source, tmp_path / "out", "--check-length", str(context + 1))
    assert not (tmp_path / "out").exists()


def test_the_check_states_its_bound(llama, tmp_path, capsys):
    run("export", llama, tmp_path / "out")
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert f"check: passed: within the tolerance {manifest['check']['tolerance']:.1e} (logits)" in printed
    assert "of transformers" in printed


def test_prune_hf_keeps_token_id_lists_as_long_as_the_model_has_blocks(llama, tmp_path):
    """A config list of num_hidden_layers entries was taken for a per-block one and cut: four end
    of sequence tokens of a four-block model lost the removed block's entry."""
    source = copy_of(llama, tmp_path / "hf")
    config = json.loads((source / "config.json").read_text())
    assert config["num_hidden_layers"] == 4
    config["eos_token_id"] = [0, 1, 2, 3]
    (source / "config.json").write_text(json.dumps(config))
    run("prune_hf", source, tmp_path / "out")
    pruned = json.loads((tmp_path / "out" / "config.json").read_text())
    assert pruned["num_hidden_layers"] == 3 and pruned["eos_token_id"] == [0, 1, 2, 3]


def test_prune_hf_of_a_pruned_checkpoint_keeps_the_original_indices_and_the_tied_head(tmp_path, capsys):
    """Pruned twice: the kept blocks' original indices, their per-block config entries, the
    renumbered layer_idx, and the head still the embedding (one tensor, as in the source)."""
    from transformers import AutoModelForCausalLM

    source = make_fixture.build_arch_folder(tmp_path / "hf", "qwen2", seed=5)
    layer_types = json.loads((source / "config.json").read_text())["layer_types"]
    prune_hf.main(["--model", str(source), "--remove", "1", "--out", str(tmp_path / "once")])
    capsys.readouterr()
    prune_hf.main(["--model", str(tmp_path / "once"), "--remove", "0,2", "--out", str(tmp_path / "twice")])
    assert "2 blocks kept (original indices [2, 4]), removed [0, 2]" in capsys.readouterr().out
    config = json.loads((tmp_path / "twice" / "config.json").read_text())
    assert config["layerprune_kept_blocks"] == [2, 4]
    assert config["layer_types"] == [layer_types[2], layer_types[4]]
    assert config["max_window_layers"] == 0 and config["tie_word_embeddings"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "twice")
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_make_fixture_lists_its_reference_and_writes_nothing_when_it_fails(tmp_path, monkeypatch):
    """reference.json was written into the folder after the export put it in place, and not
    listed in `files`: a failure or a kill between the two left a folder that looked complete."""
    out = tmp_path / "fixture"
    reference = export_layered.reference
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed while computing the references")
        return reference(*args, **kwargs)

    monkeypatch.setattr(export_layered, "reference", failing)
    with pytest.raises(RuntimeError, match="killed"):
        make_fixture.main(["--out", str(out)])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export_layered, "reference", reference)
    make_fixture.main(["--out", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk and "reference.json" in on_disk
    assert manifest["files"]["reference.json"] == export_layered.sha256_file(out / "reference.json")
    assert list(tmp_path.iterdir()) == [out]


@pytest.fixture(scope="module")
def layered(llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("layered") / "onnx"
    export_layered.main(["--model", str(llama), "--out", str(out), "--no-check"])
    return out


def damaged(folder: Path, tmp_path: Path, how: str) -> tuple:
    """A copy of the layered `folder` damaged as `how` says, and the problem merge_layered names."""
    copy = copy_of(folder, tmp_path / "damaged")
    manifest = json.loads((copy / "manifest.json").read_text())
    weight = sorted(name for name in manifest["files"] if name.startswith("weights/"))[0]
    if how == "not JSON":
        (copy / "manifest.json").write_text("{")
        return copy, f"{copy}/manifest.json: not a layered model's manifest"
    if how == "no head_logits":
        del manifest["head_logits"]
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return copy, rf"{copy}/manifest.json: not a layered model's manifest \(no 'head_logits'\)"
    if how == "a block missing":
        (copy / "block_002.onnx").unlink()
        return copy, f"{copy}: block_002.onnx, listed in its manifest, is missing"
    with open(copy / weight, "r+b") as handle:  # truncated
        handle.truncate(100)
    return copy, f"{copy / weight} does not have the sha256 its manifest lists"


@pytest.mark.parametrize("how", ["not JSON", "no head_logits", "a block missing", "a weight file truncated"])
def test_merge_layered_names_what_is_wrong_with_the_folder(layered, tmp_path, how):
    folder, problem = damaged(layered, tmp_path, how)
    with pytest.raises(SystemExit, match=f"^merge_layered: error: {problem}"):
        merge_layered.main([str(folder), str(tmp_path / "merged.onnx")])
    assert not (tmp_path / "merged.onnx").exists()


@pytest.mark.parametrize("flags", [["--k", "2"], ["--plan-method", "sleb"]])
def test_prune_hf_refuses_plan_flags_beside_a_list_of_blocks(flags, llama, tmp_path, capsys, loading_refused):
    """--k and --plan-method choose a plan of --plans; beside --remove they were ignored."""
    with pytest.raises(SystemExit) as exit:
        run("prune_hf", llama, tmp_path / "out", *flags)
    assert exit.value.code == 2
    assert "--plan-method and --k choose a plan of --plans; --remove names the blocks itself" in capsys.readouterr().err


@pytest.mark.parametrize("program", ["export", "prune_hf"])
@pytest.mark.parametrize("out", [".", ".."])
def test_an_output_named_dot_is_refused_before_loading(program, out, llama, tmp_path, monkeypatch, loading_refused):
    """`--out .` staged its folder inside the current one and failed renaming '.' after the
    whole export, with an OSError traceback."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit, match=f"^{program}: error: --out {out}: name the folder itself"):
        run(program, llama, Path(out), "--force")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"]


def test_the_generator_refuses_a_checkpoint_of_a_dtype_it_is_not_exported_in(llama, tmp_path):
    """`--dtype auto` on a float64 checkpoint was a KeyError traceback after loading."""
    from transformers import AutoModelForCausalLM

    source = tmp_path / "hf64"
    model = AutoModelForCausalLM.from_pretrained(llama).to(torch.float64)
    model.save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (llama / name).exists():
            shutil.copy(llama / name, source / name)
    out = tmp_path / "out.onnx"
    with pytest.raises(SystemExit, match="^export_generator: error: the checkpoint in .* is float64, which the "
                                         "generator is not exported in: pass --dtype bf16, fp16, fp32"):
        run("export_generator", source, out, "--dtype", "auto")
    assert not out.exists()


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_an_architecture_refused_is_named_by_the_tool_that_refuses_it(program, tmp_path):
    """The architecture refusals are raised deep in the model's code as `error: …`; they read
    `<program>: error: …` as the tools' other refusals do (they lacked the program's name), and
    name the config.json that names the model type (they named no file)."""
    source = tmp_path / "rwkv"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "rwkv", "architectures": ["RwkvForCausalLM"]}))
    with pytest.raises(SystemExit, match=f"^{program}: error: {source}/config.json: model type 'rwkv' "
                                         r"\(RwkvForCausalLM\) is not supported"):
        run(program, source, output_of(program, tmp_path))
    assert not output_of(program, tmp_path).exists()


@pytest.mark.parametrize("program", ["export_layered", "export_generator", "prune_hf"])
def test_an_export_writes_nothing_under_home(program, llama, tmp_path):
    """ONNX Runtime's Python package, which the export's check runs the graphs through, keeps a
    telemetry store under $HOME/.cache/Microsoft unless ORT_DISABLE_TELEMETRY is set: the exporter
    sets it before anything imports onnxruntime, whatever the caller's environment gave. Each tool
    run as a script: the generator and prune_hf.py are covered by their importing export_layered
    first, which an `import onnxruntime` put above it would undo."""
    import os
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    environment = {**os.environ, "HOME": str(home), "ORT_DISABLE_TELEMETRY": "0"}
    script = Path(export_layered.__file__).with_name(f"{program}.py")
    out = tmp_path / ("out.onnx" if program == "export_generator" else "out")
    written = {"export_layered": out / "manifest.json", "export_generator": out, "prune_hf": out / "config.json"}
    extra = ["--remove", "1"] if program == "prune_hf" else []
    done = subprocess.run([sys.executable, str(script), "--model", str(llama), "--out", str(out), *extra],
                          env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert written[program].is_file()
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []

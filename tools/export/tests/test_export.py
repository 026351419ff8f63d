"""The exporter's own tests (need torch; run with `make test-export`)."""

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_layered  # noqa: E402
import make_fixture  # noqa: E402


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    make_fixture.build_hf_folder(folder, seed=7)
    return folder


@pytest.fixture(scope="module")
def exported(hf_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "model"
    model, manifest = export_layered.main(["--model", str(hf_folder), "--out", str(out)])
    return model, manifest, out


def test_manifest_lists_every_file_with_its_hash(exported):
    _, manifest, out = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["num_blocks"] == 6 == len(on_disk["blocks"])
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(on_disk["files"]) == files
    for name, digest in on_disk["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_tied_embedding_is_stored_once(exported):
    _, manifest, out = exported
    weights = list((out / "weights").iterdir())
    # 7 matrices per block, one embedding shared by the embedding and both heads.
    assert len(weights) == 6 * 7 + 1


def test_chain_matches_transformers_with_blocks_deleted(exported):
    import numpy as np

    model, manifest, out = exported
    ids = np.random.default_rng(0).integers(0, manifest["vocab_size"], size=(2, 12), dtype=np.int64)
    for drop in [(), (2,), (0, 5)]:
        expected_logits, expected_nll = export_layered.reference(model, ids, drop=drop)
        logits, nll = export_layered.run_chain(out, manifest, ids, drop=drop)
        assert np.abs(logits - expected_logits).max() < 1e-4
        assert np.abs(nll - expected_nll).max() < 1e-5


def test_the_folder_is_readable_as_the_umask_allows(exported):
    """mkdtemp's staging folder is private (0700): the published folder is not."""
    _, _, out = exported
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in out.rglob("*") if p.is_file())


def test_existing_output_is_refused(exported, hf_folder):
    _, _, out = exported
    with pytest.raises(SystemExit, match="exists"):
        export_layered.main(["--model", str(hf_folder), "--out", str(out)])


def test_not_a_model_folder_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="config.json"):
        export_layered.main(["--model", str(tmp_path), "--out", str(tmp_path / "x")])


def test_a_folder_without_weights_or_tokenizer_is_refused_naming_what_is_missing(hf_folder, tmp_path):
    import shutil

    no_weights = tmp_path / "no-weights"
    shutil.copytree(hf_folder, no_weights)
    for weights in [*no_weights.glob("*.safetensors"), *no_weights.glob("*.bin")]:
        weights.unlink()
    with pytest.raises(SystemExit, match="has a config.json but no weights"):
        export_layered.main(["--model", str(no_weights), "--out", str(tmp_path / "x")])
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(hf_folder, no_tokenizer)
    for name in export_layered.TOKENIZER_FILES:
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(SystemExit, match="has no tokenizer"):
        export_layered.main(["--model", str(no_tokenizer), "--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_pruned_checkpoint_matches_skipping_blocks(exported, hf_folder, tmp_path):
    import numpy as np
    import prune_hf
    from transformers import AutoModelForCausalLM

    _, manifest, out = exported
    pruned_dir = tmp_path / "pruned"
    prune_hf.main(["--model", str(hf_folder), "--remove", "1,4", "--out", str(pruned_dir)])
    pruned = AutoModelForCausalLM.from_pretrained(pruned_dir, dtype=torch.float32)
    assert pruned.config.num_hidden_layers == 4
    assert pruned.config.layerprune_kept_blocks == [0, 2, 3, 5]
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2, 3]
    ids = np.random.default_rng(1).integers(0, manifest["vocab_size"], size=(2, 16), dtype=np.int64)
    _, onnx_nll = export_layered.run_chain(out, manifest, ids, drop=(1, 4))
    with torch.no_grad():
        loss = pruned(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(ids), use_cache=False).loss.item()
    assert abs(np.exp(onnx_nll.mean()) - np.exp(loss)) < 1e-3


def test_pruned_checkpoint_takes_its_blocks_from_a_plan_table(hf_folder, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import prune_hf

    plans = tmp_path / "plans.parquet"
    pq.write_table(pa.table({"method": ["sleb", "sleb", "adaptive", "surrogate-search"], "k": [1, 2, 2, 1],
                             "removed_blocks": [[3], [1, 3], [2, 4], [2]]}), plans)
    prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "sleb", "--k", "2",
                   "--out", str(tmp_path / "p")])
    assert json.loads((tmp_path / "p" / "config.json").read_text())["layerprune_kept_blocks"] == [0, 2, 4, 5]
    # The names before 2026-12-04 (--plan, --method) still work.
    prune_hf.main(["--model", str(hf_folder), "--plan", str(plans), "--method", "adaptive",
                   "--out", str(tmp_path / "q")])
    assert json.loads((tmp_path / "q" / "config.json").read_text())["layerprune_kept_blocks"] == [0, 1, 3, 5]
    # A plan of a table written before the method names were made one (surrogate-search), by
    # the name now.
    prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "search",
                   "--out", str(tmp_path / "t")])
    assert json.loads((tmp_path / "t" / "config.json").read_text())["layerprune_kept_blocks"] == [0, 1, 3, 4, 5]
    with pytest.raises(SystemExit, match="has 2 plans for method 'sleb'; choose one with --k"):
        prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "sleb",
                       "--out", str(tmp_path / "r")])
    # Without --plan-method, the one plan at --k whatever its method (as apply-prune --method
    # from-plan takes it: a pipeline's table of one method's plans need not be asked by the name
    # the plans were recorded under, which a race over too few windows records unraced).
    with pytest.raises(SystemExit, match="has 2 plans; choose one with --k or --plan-method"):
        prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--k", "2", "--out", str(tmp_path / "s")])
    one_method = tmp_path / "one-method.parquet"
    pq.write_table(pa.table({"method": ["adaptive"], "k": [2], "removed_blocks": [[2, 4]]}), one_method)
    prune_hf.main(["--model", str(hf_folder), "--plans", str(one_method), "--k", "2", "--out", str(tmp_path / "u")])
    assert json.loads((tmp_path / "u" / "config.json").read_text())["layerprune_kept_blocks"] == [0, 1, 3, 5]
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_a_plan_is_found_by_its_method_as_named_now_whatever_name_its_table_recorded(hf_folder, tmp_path):
    """A one-shot plan recorded before the method names were made one (one-shot:<estimator>) is
    the plan of its estimator; a method asked for by its old name is refused naming the new."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import prune_hf

    plans = tmp_path / "plans.parquet"
    pq.write_table(pa.table({"method": ["one-shot:surrogate-shapley", "one-shot:stratified-semivalue", "search"],
                             "k": [2, 2, 2], "removed_blocks": [[1, 3], [2, 4], [0, 5]]}), plans)
    prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "surrogate-shapley",
                   "--out", str(tmp_path / "p")])
    assert json.loads((tmp_path / "p" / "config.json").read_text())["layerprune_kept_blocks"] == [0, 2, 4, 5]
    prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "stratified-semivalue",
                   "--out", str(tmp_path / "q")])
    assert json.loads((tmp_path / "q" / "config.json").read_text())["layerprune_kept_blocks"] == [0, 1, 3, 5]
    for old, now in [("published", "stratified-semivalue"), ("surrogate-search", "search")]:
        with pytest.raises(SystemExit, match=f"--plan-method {old} is now named {now}"):
            prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", old,
                           "--out", str(tmp_path / "r")])
        assert not (tmp_path / "r").exists()
    # The plans a table has are listed by their names now.
    with pytest.raises(SystemExit, match=r"has no plan for method 'sleb' \(has \[\('search', 2\), "
                                         r"\('stratified-semivalue', 2\), \('surrogate-shapley', 2\)\]\)"):
        prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "sleb",
                       "--out", str(tmp_path / "s")])


def test_a_plan_for_a_model_of_another_size_is_refused(hf_folder, tmp_path):
    """A plan table records the blocks of the model it was chosen on: a plan chosen on a pruned
    folder (its positions) is not applied to the original checkpoint."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import prune_hf

    plans = tmp_path / "plans.parquet"
    table = pa.table({"method": ["sleb"], "k": [1], "removed_blocks": [[2]]})
    # The key as apply-prune writes it (prefixed): the check read `num_blocks`, which no plan
    # table has, so it never refused one.
    pq.write_table(table.replace_schema_metadata({"layerprune.table": "plans", "layerprune.num_blocks": "4"}), plans)
    with pytest.raises(SystemExit, match="plans for a model of 4 blocks; .* has 6"):
        prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "sleb",
                       "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()
    pq.write_table(table.replace_schema_metadata({"layerprune.table": "plans", "layerprune.num_blocks": "6"}), plans)
    prune_hf.main(["--model", str(hf_folder), "--plans", str(plans), "--plan-method", "sleb",
                   "--out", str(tmp_path / "p")])


def test_the_checkpoint_is_written_in_its_weights_type_not_its_configs(hf_folder, tmp_path):
    """bf16 weights under a config that says float32 (transformers' "auto" would follow the
    config: twice the size) come out bf16; replacing an output (--force) leaves the new one."""
    import json
    import shutil

    import prune_hf
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    source = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(hf_folder).to(torch.bfloat16).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (hf_folder / name).exists():
            shutil.copyfile(hf_folder / name, source / name)
    config = json.loads((source / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "float32"
    (source / "config.json").write_text(json.dumps(config))
    for attempt in range(2):
        prune_hf.main(["--model", str(source), "--remove", "1", "--out", str(tmp_path / "p"),
                       *(["--force"] if attempt else [])])
        with safe_open(str(tmp_path / "p" / "model.safetensors"), "pt") as handle:
            assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"BF16"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_prune_refuses_out_of_range_blocks(hf_folder, tmp_path):
    import prune_hf

    with pytest.raises(SystemExit, match="out of range"):
        prune_hf.main(["--model", str(hf_folder), "--remove", "6", "--out", str(tmp_path / "p")])


def test_merged_single_file_of_a_pruned_folder_matches_transformers(exported, tmp_path):
    import shutil

    import numpy as np
    import merge_layered

    model, manifest, out = exported
    pruned = tmp_path / "pruned"
    shutil.copytree(out, pruned)
    pruned_manifest = json.loads((pruned / "manifest.json").read_text())
    kept = [b for b in pruned_manifest["blocks"] if b["index"] not in (1, 4)]
    for position, block in enumerate(kept):
        block["index"] = position
    pruned_manifest["blocks"], pruned_manifest["num_blocks"] = kept, len(kept)
    (pruned / "manifest.json").write_text(json.dumps(pruned_manifest))
    merged_path = tmp_path / "merged" / "model.onnx"
    sys.argv = ["merge_layered.py", str(pruned), str(merged_path)]
    merge_layered.main()
    import onnxruntime as ort

    ids = np.random.default_rng(3).integers(0, manifest["vocab_size"], size=(2, 10), dtype=np.int64)
    session = ort.InferenceSession(str(merged_path), providers=["CPUExecutionProvider"])
    # The documented contract: one input, input_ids, and one output, logits.
    assert [i.name for i in session.get_inputs()] == ["input_ids"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (logits,) = session.run(None, {"input_ids": ids})
    expected, _ = export_layered.reference(model, ids, drop=(1, 4))
    assert np.abs(logits - expected).max() < 1e-4


def rope_checkpoint(folder: Path, rope_type: str) -> Path:
    """A config of a rope variant whose tables change with the sequence length, beside stand-in
    weights and tokenizer files that no loader could read: refused from the config, or the
    weights were loaded first."""
    from transformers import LlamaConfig, Phi3Config

    common = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    if rope_type == "longrope":  # Phi-3's long-context checkpoints
        factors = [1.0] * 16
        config = Phi3Config(original_max_position_embeddings=64, **common,
                            rope_scaling={"type": "longrope", "short_factor": factors,
                                          "long_factor": [4.0] * 16})
    else:
        config = LlamaConfig(**common, rope_scaling={"rope_type": rope_type, "factor": 2.0})
    config.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not weights")
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.mark.parametrize("rope_type", ["longrope", "dynamic"])
@pytest.mark.parametrize("program", ["export", "export_generator"])
def test_a_rope_that_changes_with_the_length_is_refused_before_the_weights_load(rope_type, program, tmp_path):
    """LongRoPE picks short or long factors by the sequence length, dynamic scaling rescales past
    the trained context: a traced graph keeps one length's tables (and the fused kernel's tables,
    for rotary_positions positions, took the long factors for every window). Both exporters
    refuse them by name from the config, before the weights are loaded."""
    import export_generator

    source = rope_checkpoint(tmp_path / "hf", rope_type)
    out = tmp_path / ("out.onnx" if program == "export_generator" else "out")
    main = export_generator.main if program == "export_generator" else export_layered.main
    with pytest.raises(SystemExit, match=f"{program}: error: .*config.json: rope type '{rope_type}' is not supported"):
        main(["--model", str(source), "--out", str(out)])
    assert not out.exists()


def test_the_rope_types_of_a_config_are_read_from_either_key():
    from types import SimpleNamespace

    assert export_layered.rope_types(SimpleNamespace()) == ["default"]
    assert export_layered.rope_types(SimpleNamespace(rope_scaling={"type": "su"})) == ["su"]
    # Gemma 3's: one entry per attention type.
    per_type = {"full_attention": {"rope_type": "linear"}, "sliding_attention": {"rope_type": "default"}}
    assert export_layered.rope_types(SimpleNamespace(rope_parameters=per_type)) == ["default", "linear"]


@pytest.fixture
def loading_refused(monkeypatch):
    """Loading the model fails the test: what is refused must be refused before it."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(export_layered, "load_checkpoint", load)


def test_an_output_that_is_holds_or_lies_in_the_source_is_refused_before_loading(hf_folder, tmp_path,
                                                                                   loading_refused):
    """--force replaces the output: an output that is the model folder, holds it, or lies inside
    it would delete or change the model; a GGUF file's too (its folder or the file itself)."""
    import shutil

    source = tmp_path / "models" / "hf"
    shutil.copytree(hf_folder, source)
    for out, problem in [(source, "is the model folder"), (source.parent, "contains the model folder"),
                         (source / "layered", "lies inside the model folder")]:
        with pytest.raises(SystemExit, match=f"export: error: --out {out} {problem}"):
            export_layered.main(["--model", str(source), "--out", str(out), "--force"])
    gguf = tmp_path / "models" / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for out, problem in [(gguf, "is the GGUF file"), (gguf.parent, "contains the GGUF file")]:
        with pytest.raises(SystemExit, match=f"export: error: --out {out} {problem}"):
            export_layered.main(["--gguf", str(gguf), "--out", str(out), "--force"])
    assert sorted(p.name for p in source.iterdir()) == sorted(p.name for p in hf_folder.iterdir())
    # Beside the GGUF file, in its folder, is allowed: only the file is read.
    with pytest.raises(AssertionError, match="the model was loaded"):
        export_layered.main(["--gguf", str(gguf), "--out", str(gguf.parent / "layered")])


def test_an_output_that_cannot_be_written_is_refused_before_loading(hf_folder, tmp_path, loading_refused):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit, match="a-file is a file, not a folder"):
        export_layered.main(["--model", str(hf_folder), "--out", str(tmp_path / "a-file" / "sub" / "out")])
    with pytest.raises(SystemExit, match="exists and is a file, not a folder"):
        export_layered.main(["--model", str(hf_folder), "--out", str(tmp_path / "a-file"), "--force"])


def test_an_output_is_staged_beside_it_and_replaced_only_once_the_new_one_is_in_place(hf_folder, tmp_path,
                                                                                     monkeypatch):
    """A missing parent is made and the output built beside it (a rename from $TMPDIR fails across
    file systems, after the whole export); with --force the old folder is renamed aside before
    the new one is renamed in, so a kill between the two leaves it whole."""
    renames = []
    rename = os.rename

    def spy(source, destination):
        renames.append((Path(source), Path(destination)))
        rename(source, destination)

    monkeypatch.setattr(os, "rename", spy)
    out = tmp_path / "new" / "parent" / "model"
    export_layered.main(["--model", str(hf_folder), "--out", str(out), "--no-check"])
    assert (out / "manifest.json").is_file()
    (staged, destination), = [r for r in renames if r[1] == out]
    assert staged.parent == out.parent
    first = json.loads((out / "manifest.json").read_text())

    def killed_at_the_new_folder(source, destination):
        if Path(destination) == out and Path(source).name.startswith(f".{out.name}.tmp-"):
            raise KeyboardInterrupt  # the kill, between the two renames
        rename(source, destination)

    monkeypatch.setattr(os, "rename", killed_at_the_new_folder)
    with pytest.raises(KeyboardInterrupt):
        export_layered.main(["--model", str(hf_folder), "--out", str(out), "--no-check", "--force"])
    kept = [p for p in out.parent.iterdir() if (p / "manifest.json").is_file()]
    assert [json.loads((p / "manifest.json").read_text()) for p in kept] == [first]
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]  # the staging folder removed
    monkeypatch.setattr(os, "rename", rename)
    export_layered.main(["--model", str(hf_folder), "--out", str(out), "--no-check", "--force"])
    assert (out / "manifest.json").is_file()

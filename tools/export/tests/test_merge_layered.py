"""merge_layered.py's check and output: a bfloat16 folder (which ONNX Runtime's CPU provider
cannot run) and a Mamba folder (block graphs of one sequence length) are merged and checked;
an existing output is replaced only with --force, and an output inside the folder is refused."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import export_layered  # noqa: E402
import make_fixture  # noqa: E402
import merge_layered  # noqa: E402


def layered(tmp_path_factory, arch, *flags):
    folder = tmp_path_factory.mktemp(arch)
    make_fixture.build_arch_folder(folder / "hf", arch, seed=23)
    export_layered.main(["--model", str(folder / "hf"), "--out", str(folder / "onnx"), "--no-check", *flags])
    return folder / "onnx"


@pytest.fixture(scope="module")
def llama_fp32(tmp_path_factory):
    return layered(tmp_path_factory, "llama")


def test_a_bf16_folder_is_checked_in_numpy_also_with_hard_linked_weights(tmp_path_factory, tmp_path, capsys):
    """ONNX Runtime's CPU provider has no bfloat16 kernels (Trilu, MatMul): the merged file is
    checked as the exporter checks the chain, in onnx.reference. A pruned folder's weights may be
    hard links to the original's (apply-prune --hard-link-source-files), which onnx.load refuses
    to read."""
    folder = layered(tmp_path_factory, "llama", "--dtype", "bf16", "--attention-kernel", "standard")
    linked = tmp_path / "linked"
    shutil.copytree(folder, linked, copy_function=os.link)
    assert (linked / "weights").is_dir() and next((linked / "weights").iterdir()).stat().st_nlink > 1
    merge_layered.main([str(linked), str(tmp_path / "merged.onnx")])
    assert "check (reference, 2x16 tokens): merged logits match" in capsys.readouterr().out
    assert (tmp_path / "merged.onnx").is_file()


def test_a_mamba_folder_is_checked_at_its_fixed_length(tmp_path_factory, tmp_path, capsys):
    folder = layered(tmp_path_factory, "mamba", "--fixed-seq-len", "8")
    assert json.loads((folder / "manifest.json").read_text())["fixed_seq_len"] == 8
    merge_layered.main([str(folder), str(tmp_path / "merged.onnx")])
    assert "check (ort, 2x8 tokens): merged logits match" in capsys.readouterr().out


def test_an_existing_output_is_replaced_only_with_force(llama_fp32, tmp_path):
    out = tmp_path / "merged.onnx"
    out.write_bytes(b"an earlier model")
    with pytest.raises(SystemExit, match=f"merge_layered: error: {out} exists; pass --force to replace it"):
        merge_layered.main([str(llama_fp32), str(out)])
    assert out.read_bytes() == b"an earlier model"
    merge_layered.main([str(llama_fp32), str(out), "--force"])
    assert out.read_bytes() != b"an earlier model"


def test_an_output_inside_the_folder_or_over_one_of_its_files_is_refused(llama_fp32, tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(llama_fp32, folder)
    before = sorted(p.name for p in folder.rglob("*"))
    for out, problem in [(folder / "merged.onnx", "lies inside the model folder"),
                         (folder / "embed.onnx", "would overwrite the input file"),
                         (folder, "is the model folder")]:
        with pytest.raises(SystemExit, match=f"merge_layered: error: --out {out} {problem}"):
            merge_layered.main([str(folder), str(out), "--force"])
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_a_model_past_protobufs_limit_is_merged_with_external_data(llama_fp32, tmp_path, monkeypatch, capsys):
    """The merge ran onnx.compose.merge_models block by block, which ends with
    checker.check_model on the model in memory: past protobuf's 2 GB (a 7B folder) it refused
    after a few blocks. Here the limits are lowered to what the tiny model passes: merged in
    place, saved with external data, checked after it is saved."""
    import onnx.checker

    monkeypatch.setattr(onnx.checker, "MAXIMUM_PROTOBUF", 64 * 1024)
    monkeypatch.setattr(merge_layered, "PROTOBUF_LIMIT", 64 * 1024)
    out = tmp_path / "merged.onnx"
    merge_layered.main([str(llama_fp32), str(out)])
    assert "merged logits match" in capsys.readouterr().out
    assert list(tmp_path.glob("merged.*.data")), sorted(p.name for p in tmp_path.iterdir())

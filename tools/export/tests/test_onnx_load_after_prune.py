"""An exported folder, and what `apply-prune --pruned-out` and `quantize` write from it, still load
with `onnx.load` (external data and all). onnx (1.23.2 here) refuses an external-data file with
more than one hard link as a possible hard-link attack, and the stages used to hard-link the weight
files they keep: after one run, neither the user's source folder nor the output loaded. They copy
by default now; `--hard-link-source-files` links, with that consequence.

Runs the stage binaries of $LAYERPRUNE_BIN (make test-export sets it), else target/debug, on a copy
of the committed tiny model."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("LAYERPRUNE_BIN") or ROOT / "target" / "debug")
FIXTURE = ROOT / "data" / "fixtures" / "tiny-llama"
STAGES = ["score-blocks", "apply-prune", "quantize"]

pytestmark = pytest.mark.skipif(not all((BIN / stage).is_file() for stage in STAGES),
                                reason=f"needs the stage binaries {STAGES} in {BIN} (make build)")


def stage(name, *args):
    done = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{name} {args} failed:\n{done.stderr}"
    return done


def load_failures(folder: Path) -> dict:
    """graph file -> why `onnx.load` (with its external data) refused it, for every graph of `folder`."""
    failures = {}
    graphs = sorted(folder.glob("*.onnx"))
    assert graphs, folder
    for graph in graphs:
        try:
            onnx.load(str(graph))
        except Exception as error:  # onnx.checker.ValidationError, whatever onnx raises next
            failures[graph.name] = str(error)
    return failures


@pytest.fixture
def source(tmp_path):
    """A copy of the tiny model whose files are its own (one link each), as an export writes them,
    and the score table removing its last blocks first."""
    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    assert load_failures(model) == {}
    scores = tmp_path / "scores.parquet"
    stage("score-blocks", "--num-blocks", 6, "--estimator", "reverse", "--out", scores)
    return model, scores


def test_the_source_and_its_pruned_and_quantized_folders_still_load(source, tmp_path):
    model, scores = source
    pruned = tmp_path / "pruned"
    stage("apply-prune", "--scores", scores, "--estimator", "reverse", "--k", 2, "--model", model,
          "--pruned-out", pruned)
    quantized = tmp_path / "quantized"
    stage("quantize", "--model", model, "--out", quantized, "--scheme", "int8")
    pruned_quantized = tmp_path / "pruned-quantized"
    stage("quantize", "--model", pruned, "--out", pruned_quantized, "--scheme", "int4", "--exclude-head")
    for folder in (model, pruned, quantized, pruned_quantized):
        assert load_failures(folder) == {}, folder
    assert len(list(pruned.glob("block_*.onnx"))) == 4


def test_hard_links_are_made_only_when_asked_and_onnx_load_then_refuses_both_folders(source, tmp_path):
    """The documented price of --hard-link-source-files, in the onnx the exporter pins."""
    model, scores = source
    pruned = tmp_path / "pruned"
    stage("apply-prune", "--scores", scores, "--estimator", "reverse", "--k", 2, "--model", model,
          "--pruned-out", pruned, "--hard-link-source-files")
    weight = next((pruned / "weights").iterdir())
    assert weight.stat().st_nlink == 2 and weight.stat().st_ino == (model / "weights" / weight.name).stat().st_ino
    for folder in (model, pruned):
        failures = load_failures(folder)
        assert "embed.onnx" in failures, folder
        assert all("hard link" in why for why in failures.values()), failures

"""tools/bench/gpu_families.py on the CPU (`make test-bench`): the check the GPU recipe runs
after its benchmark, so that its one GPU run does not fail on a bug a CPU could have found.

Needs the exporter's environment and the stage binaries (LAYERPRUNE_BIN, ORT_DYLIB_PATH), as
test_gpu_bench.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "bench" / "gpu_families.py"
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
ORT = os.environ.get("ORT_DYLIB_PATH", str(ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi"
                                           / "libonnxruntime.so.1.31.1"))


def run_families(tmp_path: Path, *flags):
    return subprocess.run([sys.executable, str(SCRIPT), "--bin", str(BIN), "--work", str(tmp_path / "work"),
                           "--json", str(tmp_path / "families.json"), "--markdown", str(tmp_path / "families.md"),
                           *flags], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ORT_DYLIB_PATH": ORT})


def test_each_fused_attribute_agrees_with_the_standard_float32_export_and_a_refusal_is_a_row(tmp_path):
    """Soft-capping (Gemma 2), interleaved rotary (Cohere), partial rotary (Phi-2: 32 of a head
    of 64) and OLMo 2's float32 rotary tables, fused in fp16 on the CPU provider, against the
    standard float32 export; GPT-2 (no rotary: refused by the exporter) is a row with its error,
    and the run exits 1 for it while keeping the other rows."""
    done = run_families(tmp_path, "--device", "cpu", "--dtype", "fp16",
                        "--fixtures", "gemma2,cohere,phi,olmo2,gpt2")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {row["fixture"]: row for row in json.loads((tmp_path / "families.json").read_text())}
    assert list(rows) == ["gemma2", "cohere", "phi", "olmo2", "gpt2"]
    for name in ("gemma2", "cohere", "phi", "olmo2"):
        row = rows[name]
        assert row["error"] is None and row["agrees"], row
        # fp16 against float32: not equal, and well within the export check's fp16 tolerance.
        assert 0 < row["max_nll_diff"] < 2e-3, row
    assert not rows["gpt2"]["agrees"] and "no rotary causal attention" in rows["gpt2"]["error"]
    # The fused export with q/k/v packed, where the exporter packs them (Gemma 2's soft-capping and
    # Cohere's interleaved rotary through the node's packed query): within the same tolerance; Phi-2's
    # partial rotary and OLMo 2's q / k norms are refused by the exporter, saying so; GPT-2 not tried.
    for name in ("gemma2", "cohere"):
        verdict = rows[name]["packed_on_device"]
        assert verdict.startswith("agrees ") and float(verdict.split()[1]) < 2e-3, rows[name]
    for name in ("phi", "olmo2"):
        assert rows[name]["packed_on_device"].startswith("not packed: --qkv-projection packed: block 0's"), rows[name]
    assert rows["gpt2"]["packed_on_device"] is None
    table = (tmp_path / "families.md").read_text()
    assert table.count("\n| ") == 1 + 5 and "| gemma2 | gemma2 |" in table


def test_bf16_is_refused_on_the_cpu(tmp_path):
    done = run_families(tmp_path, "--device", "cpu", "--dtype", "bf16", "--fixtures", "llama")
    assert done.returncode == 2 and "no bf16 GroupQueryAttention" in done.stderr
    assert not (tmp_path / "families.json").exists()


def test_a_long_onnx_runtime_error_keeps_the_line_naming_the_node_and_its_end():
    """GPU run 3 kept only the last 600 characters of `evaluate`'s stderr, which lost the node
    ONNX Runtime named; the excerpt keeps that line and the end, within about the limit."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_families

    named = ("2026-12-05 19:36:33 [E:onnxruntime:, session_state.cc:1280] Could not find an implementation "
             "for SimplifiedLayerNormalization(1) node with name 'LayerNorm_7'")
    noise = "\n".join(f"[W:onnxruntime] padding line {i} " + "x" * 80 for i in range(40))
    end = "evaluate: error: block_001.onnx: This op has been implemented only for the following types (tensor(float16),)"
    excerpt = gpu_families.error_excerpt(f"{named}\n{noise}\n{end}")
    assert "node with name 'LayerNorm_7'" in excerpt and excerpt.endswith("(tensor(float16),)")
    assert "padding line 3 " not in excerpt and len(excerpt) < gpu_families.ERROR_CHARS + 200
    assert gpu_families.error_excerpt("short\n  message ") == "short message"


def test_a_fused_folder_failing_on_the_device_is_a_row_with_the_standard_export_tried_there(tmp_path):
    """`--device cuda` on a machine without a GPU: the fused folder fails on the device, so the
    fixture's standard export in the same dtype is tried there too, and the fused folder with
    `--graph-optimization basic`, and both fail alike; every error is in the row (on a GPU the
    second tells whether the fused export is the cause, the third whether a fusion is)."""
    done = run_families(tmp_path, "--device", "cuda", "--dtype", "fp16", "--fixtures", "llama")
    assert done.returncode == 1, done.stdout + done.stderr
    [row] = json.loads((tmp_path / "families.json").read_text())
    assert row["fixture"] == "llama" and row["error"] and "cuda" in row["error"].lower(), row
    assert row["standard_on_device"].startswith("error: "), row
    assert row["fused_graph_optimization_basic"].startswith("error: "), row
    assert row["packed_on_device"] is None, row  # tried only where the fused folder ran
    assert "cuda" in row["fused_graph_optimization_basic"].lower(), row
    assert "| llama | llama |" in (tmp_path / "families.md").read_text()
    assert "--graph-optimization basic" in done.stdout, done.stdout


def test_an_evaluate_that_hangs_fails_its_own_row_within_the_stage_timeout(tmp_path):
    """An `evaluate` that never returns on the fused folder (a kernel or a capture hanging on the
    device) fails that row after --stage-timeout, with the standard export still tried, instead of
    holding the call's F seconds and losing every later fixture."""
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "prepare-tokens").symlink_to(BIN / "prepare-tokens")
    (bin_dir / "evaluate").write_text(f"""#!/bin/sh
case "$* " in *"/fused "*) exec sleep 120;; esac
exec {BIN / "evaluate"} "$@"
""")
    (bin_dir / "evaluate").chmod(0o755)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), "--bin", str(bin_dir), "--work", str(tmp_path / "work"),
                           "--json", str(tmp_path / "families.json"), "--device", "cpu", "--dtype", "fp16",
                           "--fixtures", "llama", "--stage-timeout", "5"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "ORT_DYLIB_PATH": ORT})
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 100
    [row] = json.loads((tmp_path / "families.json").read_text())
    assert row["error"] == "evaluate took over 5 s (--stage-timeout)", row
    assert row["standard_on_device"].startswith("agrees "), row
    assert row["fused_graph_optimization_basic"] == "error: evaluate took over 5 s (--stage-timeout)", row

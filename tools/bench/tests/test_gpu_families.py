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
    table = (tmp_path / "families.md").read_text()
    assert table.count("\n| ") == 1 + 5 and "| gemma2 | gemma2 |" in table


def test_bf16_is_refused_on_the_cpu(tmp_path):
    done = run_families(tmp_path, "--device", "cpu", "--dtype", "bf16", "--fixtures", "llama")
    assert done.returncode == 2 and "no bf16 GroupQueryAttention" in done.stderr
    assert not (tmp_path / "families.json").exists()

"""tools/report/summarize.py on the pruned model of a run: the pipelines write the pruned folder
(from the plan as chosen) and the plan's measurement on the evaluation text in steps of their
own, so the summary checks that the folder removes the blocks of the plan it reports. On a small
made-up run folder (tests/python/test_report.py's)."""

import json
import subprocess
import sys

import pyarrow as pa

from test_report import FINISHED, REPORT, make_run, mask_id, plan_table, write


def summarize(run):
    return subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                           "--methods", "sleb", "--k-pruned", "2", "--out", str(run / "results.md")],
                          capture_output=True, text=True)


def test_a_pruned_folder_of_another_plan_is_refused(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    plan_table(run / "pruned-k2-plan.parquet", [("adaptive", [3, 4], 3.5)])
    write(run / "pruned-k2-eval.parquet",
          {"mask_id": [mask_id([3, 4])], "nll": [3.5], "ppl": [2.718281828 ** 3.5],
           "tokens_scored": pa.array([124], pa.uint64())}, FINISHED)
    folder = run / "pruned-k2"
    folder.mkdir()

    def manifest(removed):
        (folder / "manifest.json").write_text(json.dumps(
            {"num_blocks": 6 - len(removed), "pruned_from": {"removed_blocks": removed, "method": "adaptive"}}))

    manifest([4, 3])
    result = summarize(run)
    assert result.returncode == 0, result.stderr
    assert "blocks [3, 4] removed (adaptive)" in result.stdout
    manifest([2, 4])
    result = summarize(run)
    assert result.returncode == 1, result.stdout
    assert (f"summarize: {folder / 'manifest.json'}: the pruned folder removes blocks [2, 4], but its plan "
            f"({run / 'pruned-k2-plan.parquet'}) blocks [3, 4]") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    (folder / "manifest.json").write_text("[not a manifest")
    result = summarize(run)
    assert result.returncode == 1 and "not a readable model manifest" in result.stderr, result.stderr

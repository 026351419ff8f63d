"""tools/prune/report.py's account of the plan's closest rival (the summary `make prune` prints)."""

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("prune_report", ROOT / "tools" / "prune" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def plan(**rival):
    return {"measured_nll": 4.0, "runner_up_removed_blocks": None, "runner_up_nll": None,
            "runner_up_margin_se": None, **rival}


def test_no_rival_measured_says_nothing():
    assert report.rival_lines(plan()) == []
    assert report.rival_lines({"measured_nll": 4.0}) == []  # a table written before the columns


def test_a_clear_margin_names_the_rival_and_its_standard_errors():
    (line,) = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.05,
                                      runner_up_margin_se=0.01))
    assert "blocks 3 7" in line and f"{math.exp(4.05):.3f}" in line
    assert "(+5.1 %; margin 0.0500 ± 0.0100 nats a token, 5.0 standard errors" in line


def test_a_margin_within_one_standard_error_says_the_text_does_not_decide():
    lines = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.005,
                                    runner_up_margin_se=0.01))
    assert len(lines) == 5 and "does not tell the two apart" in lines[1] and "CALIB_TEXT" in lines[3]
    # Between one and two standard errors: favoured, not conclusively.
    lines = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.015,
                                    runner_up_margin_se=0.01))
    assert len(lines) == 2 and "not conclusively" in lines[1]
    # Without a standard error (one window) the margin alone is given, with no verdict.
    (line,) = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.015))
    assert "margin 0.0150 nats" in line and "+1.5 %" in line

"""TASKS as `make tasks` stamps it and gives it to evaluate (pipelines/tasks.mk, TASK_LIST): one
set of tasks, however spelled, is one run. Needs make (and evaluate's --help, for its tasks)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_make_tasks import make_tasks

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
TABLES = ["evaluations.parquet", "choices.parquet", "accuracies.parquet"]


def evaluate_tasks():
    """The tasks evaluate --help lists, in its order."""
    help_text = subprocess.run([BIN / "evaluate", "--help"], capture_output=True, text=True, check=True).stdout
    listed = re.search(r"a comma-separated list of ([a-z_, ]+), or `all`", " ".join(help_text.split())).group(1)
    return [name.strip() for name in listed.split(",")]


def make_variable(tmp_path, name):
    status, output = make_tasks(tmp_path, "-s", "--eval", f"show: ; @echo '<$({name})>'", "show")
    assert status == 0, output
    return re.search(r"<(.*)>", output).group(1)


def test_the_task_names_are_evaluates(tmp_path):
    names = make_variable(tmp_path, "TASK_NAMES").split()
    assert names == evaluate_tasks()
    # The table's columns (tools/tasks/summarize.py) are the same tasks in the same order.
    sys.path.insert(0, str(ROOT / "tools" / "tasks"))
    try:
        import summarize
    finally:
        sys.path.pop(0)
    assert summarize.TASKS == names


def test_one_set_of_tasks_spelled_another_way_keeps_the_tables(tmp_path):
    """The stamp of the task run's tables held TASKS as given: after `make tasks`, `make tasks
    TASKS=piqa,hellaswag,...` (every task by name: the default spelled out) or the same tasks in
    another order, case or with `-` moved the tables aside and scored every mask again, although
    evaluate reads them as the same questions (it would have resumed the tables)."""
    task_run = tmp_path / "build" / "runs" / "tasks"
    stamp = task_run / ".settings" / "questions"

    def stamped(tasks):
        """The stamp made with TASKS=tasks (none: the default), the run's tables scored before;
        the tables kept."""
        task_run.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            (task_run / name).write_text("scored\n")
        status, output = make_tasks(tmp_path, str(stamp), *([f"TASKS={tasks}"] if tasks is not None else []))
        assert status == 0, output
        return sorted(p.name for p in task_run.iterdir() if p.is_file())

    names = evaluate_tasks()
    assert stamped(None) == sorted(TABLES)
    first_line = stamp.read_text().splitlines()[0]
    assert " all 100 0 auto " in first_line, first_line
    for spelled in ("all", ",".join(names), ",".join(reversed(names)), " ".join(names).upper().replace("_", "-"),
                    ",".join(names + names[:2])):
        assert stamped(spelled) == sorted(TABLES), spelled
        assert stamp.read_text().splitlines()[0] == first_line, spelled
    # Other tasks are other questions: set aside, and stamped in evaluate's order.
    assert stamped("boolq,piqa") == []
    assert " piqa,boolq 100 " in stamp.read_text(), stamp.read_text()
    for spelled in ("piqa,boolq", "BoolQ piqa", "boolq,,piqa,boolq"):
        assert stamped(spelled) == sorted(TABLES), spelled
    # A stamp written before, with the tasks as given: the same run, rewritten without moving the
    # tables; with another setting changed as well, they are moved.
    lines = stamp.read_text().splitlines()
    for before, seed, kept in (("BoolQ,piqa", "0", sorted(TABLES)), ("boolq,piqa", "1", [])):
        stamp.write_text("\n".join([lines[0].replace(" piqa,boolq ", f" {before} "), *lines[1:]]) + "\n")
        task_run.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            (task_run / name).write_text("scored\n")
        status, output = make_tasks(tmp_path, str(stamp), "TASKS=piqa,boolq", f"SEED={seed}")
        assert status == 0, output
        assert sorted(p.name for p in task_run.iterdir() if p.is_file()) == kept, before
        assert f" piqa,boolq 100 {seed} auto " in stamp.read_text(), stamp.read_text()
    # What the task runs are given is what is stamped.
    status, output = make_tasks(tmp_path, "-n", "tasks", "KS=2,3", "TASKS=Arc-Challenge boolq,arc_easy")
    assert status == 0, output
    run = next(line for line in output.splitlines() if "evaluate --tasks" in line)
    assert "--tasks arc_easy,arc_challenge,boolq " in run, run
    status, output = make_tasks(tmp_path, "-n", "tasks-crosscheck", "MODEL_NAME=smollm2-135m", "TASKS=boolq,piqa")
    assert status == 0 and "--tasks piqa,boolq " in output, output


@pytest.mark.parametrize("tasks, expected", [
    ("piqa,hellaswg", "TASKS='piqa,hellaswg': no task hellaswg; give all or some of piqa hellaswag"),
    # `all` is every task alone, as evaluate reads it: said so, not "no task all".
    ("all,piqa", "TASKS='all,piqa': all stands alone (every task: give it without task names);"),
    ("piqa,all,all", "TASKS='piqa,all,all': all stands alone (every task: give it without task names);"),
    ("", "TASKS='': no task named;"),
    (",", "TASKS=',': no task named;"),
])
@pytest.mark.parametrize("goal", ["tasks", "tasks-crosscheck"])
def test_a_task_evaluate_does_not_know_is_refused_before_anything_runs(tmp_path, tasks, expected, goal):
    """evaluate refused it only after the stamp had taken it in and moved the tables aside (and
    moved them again once it was put right)."""
    status, output = make_tasks(tmp_path, "-n", goal, "KS=2,3", "MODEL_NAME=smollm2-135m", f"TASKS={tasks}")
    assert status != 0 and expected in output, output
    assert "/evaluate --tasks" not in output and not (tmp_path / "build" / "runs").exists(), output

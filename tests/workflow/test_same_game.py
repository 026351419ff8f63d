"""pipelines/same_game.sh: the cache of evaluations is kept only for the game it was measured on
(the model folder's and the token table's ids), read with `inspect --json`, the model folder
without hashing every file (--no-verify: its id is its manifest's hash)."""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_INSPECT = r'''#!/bin/sh
# Logs its arguments; answers as `inspect --json` would, from what the files hold.
echo "$*" >> "$LOG"
for last; do :; done
if [ -d "$last" ]; then
  cat "$last/ids.json"
else
  case " $* " in *" --no-verify "*) echo "inspect: error: --no-verify is for model folders" >&2; exit 2;; esac
  cat "$last"
fi
'''


def same_game(tmp_path, cache_ids, model_id="m1", dataset_id="d1"):
    inspect = tmp_path / "inspect"
    inspect.write_text(FAKE_INSPECT)
    inspect.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "ids.json").write_text(json.dumps({"model_id": model_id}))
    tokens = tmp_path / "tokens.parquet"
    tokens.write_text(json.dumps({"dataset_id": dataset_id}))
    cache = tmp_path / "cache.parquet"
    cache.write_text(json.dumps(cache_ids))
    log = tmp_path / "log"
    log.write_text("")
    result = subprocess.run(["sh", str(ROOT / "pipelines/same_game.sh"), str(inspect), str(cache), str(model),
                             str(tokens)], env={"LOG": str(log), "PATH": "/usr/bin:/bin"})
    return result.returncode, log.read_text().splitlines()


def test_the_cache_is_kept_only_for_its_own_game(tmp_path):
    assert same_game(tmp_path, {"model_id": "a1", "dataset_id": "d1"}, model_id="a1")[0] == 0
    assert same_game(tmp_path, {"model_id": "a1", "dataset_id": "d1"}, model_id="b2")[0] == 1
    assert same_game(tmp_path, {"model_id": "a1", "dataset_id": "d2"}, model_id="a1")[0] == 1
    assert same_game(tmp_path, {}, model_id="a1")[0] == 1


def test_the_model_folder_is_read_without_hashing_its_files(tmp_path):
    """inspect checks a model folder as the stages do, every file's sha256 included (some 20 s on
    a 7B model): the ids need its manifest only."""
    status, calls = same_game(tmp_path, {"model_id": "a1", "dataset_id": "d1"}, model_id="a1")
    assert status == 0
    model_calls = [call for call in calls if call.endswith("/model")]
    assert model_calls and all("--no-verify" in call.split() for call in model_calls), calls
    assert all("--no-verify" not in call.split() for call in calls if not call.endswith("/model")), calls

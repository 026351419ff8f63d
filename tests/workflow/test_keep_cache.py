"""pipelines/keep_cache.sh: the cache of evaluations is kept only for the game it was measured on
(the model folder's and the token table's ids), read with `inspect --json`, the model folder
without hashing every file (--no-verify: its id is its manifest's hash); removed otherwise, and
kept where the ids of the model or the tokens cannot be read (a tool that fails must not cost
hours of measurements)."""

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


def keep_cache(tmp_path, cache_ids, model_id="m1", dataset_id="d1", inspect_name="inspect"):
    """Runs the script on a cache recording `cache_ids` (None: no cache); returns its exit status,
    whether the cache is still there, inspect's calls and what the script printed."""
    inspect = tmp_path / "inspect"
    inspect.write_text(FAKE_INSPECT)
    inspect.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "ids.json").write_text(json.dumps({"model_id": model_id}))
    tokens = tmp_path / "tokens.parquet"
    tokens.write_text(json.dumps({"dataset_id": dataset_id}))
    cache = tmp_path / "cache.parquet"
    cache.unlink(missing_ok=True)
    if cache_ids is not None:
        cache.write_text(json.dumps(cache_ids))
    log = tmp_path / "log"
    log.write_text("")
    result = subprocess.run(["sh", str(ROOT / "pipelines/keep_cache.sh"), str(tmp_path / inspect_name), str(cache),
                             str(model), str(tokens)], env={"LOG": str(log), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    return result.returncode, cache.exists(), log.read_text().splitlines(), result.stderr


def test_the_cache_is_kept_only_for_its_own_game(tmp_path):
    assert keep_cache(tmp_path, {"model_id": "a1", "dataset_id": "d1"}, model_id="a1")[:2] == (0, True)
    assert keep_cache(tmp_path, {"model_id": "a1", "dataset_id": "d1"}, model_id="b2")[:2] == (0, False)
    assert keep_cache(tmp_path, {"model_id": "a1", "dataset_id": "d2"}, model_id="a1")[:2] == (0, False)
    assert keep_cache(tmp_path, {}, model_id="a1")[:2] == (0, False)
    assert keep_cache(tmp_path, None)[:2] == (0, False)


def test_the_model_folder_is_read_without_hashing_its_files(tmp_path):
    """inspect checks a model folder as the stages do, every file's sha256 included (some 20 s on
    a 7B model): the ids need its manifest only."""
    status, kept, calls, _ = keep_cache(tmp_path, {"model_id": "a1", "dataset_id": "d1"}, model_id="a1")
    assert (status, kept) == (0, True)
    model_calls = [call for call in calls if call.endswith("/model")]
    assert model_calls and all("--no-verify" in call.split() for call in model_calls), calls
    assert all("--no-verify" not in call.split() for call in calls if not call.endswith("/model")), calls


def test_a_missing_or_failing_inspect_keeps_the_cache_and_fails(tmp_path):
    """Before, a missing inspect (Snakemake did not build it: not an input of its rule) read as
    another game, and the cache was removed."""
    status, kept, _, stderr = keep_cache(tmp_path, {"model_id": "m1", "dataset_id": "d1"},
                                         inspect_name="no-such-inspect")
    assert (status, kept) == (2, True)
    assert "could not read the ids" in stderr and "is kept" in stderr, stderr
    # The tokens unreadable by inspect (here: no dataset id in what it prints).
    status, kept, _, _ = keep_cache(tmp_path, {"model_id": "m1", "dataset_id": "d1"}, dataset_id="")
    assert (status, kept) == (2, True)

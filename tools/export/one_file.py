"""Putting a checked ONNX file, and the one external data file a large one needs, in place so
that a kill at any moment leaves either the old model whole or the new one whole.

Why: a model over protobuf's 2 GB limit is two files, the graph and its weights, and no rename
moves two files at once. If both kept fixed names, a kill between their two renames would leave
the new graph beside the old weights (or the reverse): a pair ONNX Runtime loads without a word
and runs to wrong logits, at a path Make then takes as done. So each write gives its data file
a name of its own, `<out name>.<token>.data`, which its graph names: the new data file is moved
in beside the old pair (replacing nothing), then the graph replaces the old graph in one
rename, and only then are the data files no graph names any more removed.

The staging folder each write builds in, `.<out name>.tmp-<host>-<pid>-…` beside the output, is
removed when the write ends; one left by a killed run on this machine (its process gone) is
removed by the next write of the same output.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

import outputs


def data_name(out: Path) -> str:
    """A fresh name for `out`'s external data file, to be written into its graph."""
    return f"{out.name}.{secrets.token_hex(6)}.data"


def _is_data_file_of(name: str, out: Path) -> bool:
    # `<out>.data` (files from before the names had a token) or `<out>.<12 hex>.data`.
    if name == out.name + ".data":
        return True
    prefix, suffix = out.name + ".", ".data"
    token = name[len(prefix):-len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    return len(token) == 12 and all(c in "0123456789abcdef" for c in token)


def data_files_of(out: Path) -> list[Path]:
    """The data files beside `out` that a write of `out` replaces or removes."""
    if not out.parent.is_dir():
        return []
    return [path for path in out.parent.iterdir() if _is_data_file_of(path.name, out)]


def staging_folder(out: Path) -> Path:
    """A new folder beside `out` to build it in (on the same file system, so the final renames
    are atomic), after removing those killed runs left."""
    # The host is in the name: on a file system shared by machines, a process id says whether a
    # run is alive only on the machine that started it.
    prefix = f".{out.name}.tmp-{socket.gethostname()}-"
    for leftover in out.parent.glob(prefix + "*"):
        pid = leftover.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def put_in_place(staged_graph: Path, staged_data: Path | None, out: Path) -> None:
    """Moves a checked graph (and the data file it names, if any, staged under the name
    `data_name` gave it) to `out`, then removes `out`'s data files the new graph does not name.
    Both take the replaced graph's permission bits; a read-only graph is refused
    (outputs.replaced_mode)."""
    mode = outputs.replaced_mode(out)
    if mode is not None:
        for staged in (staged_graph, staged_data):
            if staged is not None:
                os.chmod(staged, mode)
    if staged_data is not None:
        os.replace(staged_data, out.parent / staged_data.name)
    os.replace(staged_graph, out)
    for path in out.parent.iterdir():
        if _is_data_file_of(path.name, out) and (staged_data is None or path.name != staged_data.name):
            path.unlink(missing_ok=True)

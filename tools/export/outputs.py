"""Where the export tools write, checked before anything is loaded, and an output folder put in
place so that a kill at any moment leaves the old folder or the new one whole.

Why: the tools replace an existing output with --force. An output that is the model it is made
from, holds it, or lies inside it would delete or change that model, and a kill between deleting
the old output and renaming the new one in would leave no model at all. And an output whose folder
cannot be made, or one made read-only, is better refused in a second than after loading and
exporting a large model. A replaced output's permission bits are kept, as the Rust stages keep them.
(one_file.py puts one ONNX file, and its data file, in place.)

Standard library only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path


def _fail(program: str, message: str):
    raise SystemExit(f"{program}: error: {message}")


def _same(a: Path, b: Path) -> bool:
    """The same file or folder, also through another name (a symlink, a hard link, a bind mount)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _inside(inner: Path, outer: Path) -> bool:
    """`inner` lies somewhere below the folder `outer` (not `outer` itself)."""
    return any(_same(parent, outer) for parent in inner.resolve().parents)


def refuse_overlap(program: str, out: Path, sources, replaced=()) -> None:
    """Exits, naming the problem, when writing `out` could destroy or change an input.

    `sources`: (what, path) pairs, e.g. ("the model folder", folder) or ("the GGUF file", file).
    Refused: `out` is a source; `out` holds one (replacing `out` deletes it); `out` lies inside
    a source folder (the model would change under its own name, and its files are globbed);
    one of `replaced` (the files a write replaces or removes, for a one-file output) is a file of
    a source under another name (a hard link, which a write in place would overwrite).
    An output beside a GGUF file, in the same folder, is allowed: only the file is read."""
    for what, source in sources:
        if _same(out, source):
            _fail(program, f"--out {out} is {what} {source}")
    for target in replaced:
        if not target.exists():
            continue
        for what, source in sources:
            files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else [source]
            for path in files:
                if os.path.samefile(path, target):
                    _fail(program, f"--out {out} would overwrite the input file {path} ({what} {source})")
    for what, source in sources:
        if _inside(source, out):
            _fail(program, f"--out {out} contains {what} {source}: replacing it would delete it")
        if source.is_dir() and _inside(out, source):
            _fail(program, f"--out {out} lies inside {what} {source}: write it outside the model")


def refuse_unwritable(program: str, out: Path, folder: bool, named: str = "--out") -> None:
    """Exits when `out` (a folder, or one file when not `folder`) cannot be written where it is
    asked for: it exists as the other kind or read-only (replaced_mode), or the nearest existing
    folder above it is a file or not writable. A missing parent is fine: the tools make it just
    before they stage the output. `named`: how the message names the output (its flag)."""
    if out.name in ("", ".", ".."):
        # Staged beside it and renamed over it: "." or ".." has no name to stage beside, and
        # the rename would fail after the whole export.
        _fail(program, f"{named} {out}: name the {'folder' if folder else 'file'} itself "
                       f"(such as {named} ../{out.resolve().name or 'model'}), not '{out}'")
    if out.exists() and out.is_dir() != folder:
        _fail(program, f"{named} {out} exists and is a {'file' if folder else 'folder'}, not a "
                       f"{'folder' if folder else 'file'}")
    try:
        replaced_mode(out)
    except ReadOnlyOutput as error:
        _fail(program, f"{named} {error}")
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        _fail(program, f"{named} {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        _fail(program, f"{named} {out}: cannot write in {ancestor}")


class ReadOnlyOutput(PermissionError):
    """An existing output its owner may not write, which a write does not replace."""


def replaced_mode(out: Path) -> int | None:
    """The permission bits (`mode & 0o7777`) of the regular file or folder at `out` that a
    write replaces, to be given to what replaces it (None where there is none, or `out` is a
    link); raises ReadOnlyOutput, naming it, where its owner may not write it (no u+w bit: made
    read-only, `chmod a-w`). A rename goes round that mode, where `cp` or a shell redirect
    stop, so the tools refuse as the Rust stages do; judged by the bits, not by who runs, so
    root is refused too. And a private (0700/0600) model stays private when it is exported
    again: the staged output has the umask's bits."""
    try:
        meta = os.lstat(out)
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder above it should be
        return None
    if stat.S_ISDIR(meta.st_mode):
        what = "a read-only folder"
    elif stat.S_ISREG(meta.st_mode):
        what = "read-only"
    else:
        return None
    mode = stat.S_IMODE(meta.st_mode)
    if not mode & stat.S_IWUSR:
        raise ReadOnlyOutput(f"{out} is {what} (mode {mode:04o}), so it is not replaced; make it "
                             f"writable (chmod u+w) or choose another path")
    return mode


def replace_folder(staging: Path, out: Path) -> None:
    """Moves the finished folder `staging` (beside `out`, on the same file system) to `out`.
    An old `out` is renamed aside first and deleted only once the new one is in place: a kill
    between the two renames leaves it whole under `.<name>.old-…` beside `out`, never no model
    and no way back. The new folder takes the old one's permission bits, and a read-only old one
    is refused (replaced_mode; checked before the work by refuse_unwritable, and here again)."""
    mode = replaced_mode(out)
    if mode is not None:
        os.chmod(staging, mode)
    previous = None
    if out.exists() or out.is_symlink():
        previous = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out, previous)
    os.rename(staging, out)
    if previous is not None:
        if previous.is_symlink() or not previous.is_dir():
            previous.unlink()
        else:
            shutil.rmtree(previous)

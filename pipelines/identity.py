"""What a pipeline input IS, beyond its path: written into Make's settings stamps (the stamp
rules run `python3 pipelines/identity.py PATH...`) and into the params of the Snakemake jobs
that read it (pipelines/Snakefile imports this file), so that an input replaced by an older copy
(`cp -p`, `rsync -a`, `tar x`, a restored backup: times kept, which is all Make and Snakemake
compare) is a new input. Standard library only; a stat per file, no hashing of weights.

    a model folder (a folder, or its manifest.json)   the sha256 of manifest.json (which holds
        the sha256 of every file, checked by the stages when they load the model), and the size
        and modification time of every file it lists, digested: a few dozen stats for a 7B
        folder
    any other file (a text)                            its size, modification time and inode
    a path that does not exist                         `missing`

    python3 pipelines/identity.py PATH...   # one identity per path, on one line
"""

import hashlib
import json
import os
import sys
from pathlib import Path

MANIFEST = "manifest.json"


def _stat(path):
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}"


def model_identity(folder):
    folder = Path(folder)
    manifest = folder / MANIFEST
    data = manifest.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        listed = sorted(json.loads(data).get("files", {}))
    except (ValueError, AttributeError):
        listed = []  # a manifest the stages will refuse: its hash alone identifies it
    stats = hashlib.sha256()
    for name in listed:
        try:
            stats.update(f"{name} {_stat(folder / name)}\n".encode())
        except OSError:
            stats.update(f"{name} missing\n".encode())
    return f"model:{digest[:16]}:{len(listed)}:{stats.hexdigest()[:16]}"


def identity(path):
    """The identity of one input, as one word."""
    path = Path(path)
    try:
        if path.is_dir():
            return model_identity(path)
        if path.name == MANIFEST:
            return model_identity(path.parent)
        info = os.stat(path)
        return f"file:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
    except OSError:
        return "missing"


def identities(paths):
    return " ".join(identity(p) for p in paths)


if __name__ == "__main__":
    print(f"identity {identities(sys.argv[1:])}")

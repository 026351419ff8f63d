"""fetch_wheel.py without the network: `download` replaced by a wheel written here. A
destination that records another requirement (a version bump) is fetched again, never left as
it is; one that records this fetch is left alone; a folder it did not fill is never cleared; a
requirement without ==VERSION, a prefix the wheel lacks and a failed pip download are refused."""

import re
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fetch_wheel  # noqa: E402


@pytest.fixture
def wheels(monkeypatch):
    """`download` gives a wheel holding pkg/VERSION (the requirement's version) and other/file;
    the requirements it was asked for are recorded."""
    asked = []

    def download(requirement, folder):
        asked.append(requirement)
        version = requirement.split("==")[1]
        wheel = folder / f"pkg-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("pkg/VERSION", version)
            archive.writestr("other/file", "other")
        return wheel

    monkeypatch.setattr(fetch_wheel, "download", download)
    return asked


def test_a_destination_of_another_version_is_fetched_again(wheels, tmp_path):
    dest = tmp_path / "deps" / "pkg"
    fetch_wheel.main(["pkg==1.0", str(dest), "pkg/"])
    assert (dest / "pkg" / "VERSION").read_text() == "1.0" and not (dest / "other").exists()
    fetch_wheel.main(["pkg==1.0", str(dest), "pkg/"])
    assert wheels == ["pkg==1.0"]  # the same fetch again: nothing done
    fetch_wheel.main(["pkg==2.0", str(dest), "pkg/"])
    assert wheels == ["pkg==1.0", "pkg==2.0"]
    assert (dest / "pkg" / "VERSION").read_text() == "2.0"
    assert (dest / ".complete").read_text() == "pkg==2.0\npkg/\n"
    # Other members asked for: fetched again too, the old ones gone with the old folder.
    fetch_wheel.main(["pkg==2.0", str(dest), "other/"])
    assert (dest / "other" / "file").is_file() and not (dest / "pkg").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pkg"]  # no staging or old folder left


def test_a_folder_it_did_not_fill_is_refused_not_cleared(wheels, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match=f"fetch_wheel: error: {dest} exists and is not a finished fetch"):
        fetch_wheel.main(["pkg==1.0", str(dest)])
    assert (dest / "notes.txt").read_text() == "keep me" and wheels == []


def test_a_failed_fetch_leaves_the_old_destination_whole(wheels, tmp_path, monkeypatch):
    dest = tmp_path / "pkg"
    fetch_wheel.main(["pkg==1.0", str(dest)])

    def unreachable(requirement, folder):
        raise SystemExit("fetch_wheel: error: no network")

    monkeypatch.setattr(fetch_wheel, "download", unreachable)
    with pytest.raises(SystemExit, match="no network"):
        fetch_wheel.main(["pkg==2.0", str(dest)])
    assert (dest / "pkg" / "VERSION").read_text() == "1.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_a_prefix_the_wheel_does_not_have_is_refused_and_nothing_is_written(wheels, tmp_path):
    """Another prefix matching something let one that matches nothing pass: the fetch recorded
    itself complete without it (a wheel that dropped one of the task data sets), and the stage
    that reads it failed later, far from the cause."""
    dest = tmp_path / "pkg"
    with pytest.raises(SystemExit, match=r"fetch_wheel: error: pkg-1\.0-py3-none-any\.whl has nothing under gone/"):
        fetch_wheel.main(["pkg==1.0", str(dest), "pkg/", "gone/"])
    assert not dest.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("requirement", ["pkg", "pkg>=1.0", "pkg==", "==1.0", "pkg==1.*", "pkg==1.0,<2"])
def test_a_requirement_that_is_not_pinned_is_refused_before_any_download(wheels, tmp_path, requirement):
    """Without ==VERSION pip fetches whatever is newest, and .complete recorded it as the pin."""
    with pytest.raises(SystemExit, match=re.escape(f"fetch_wheel: error: {requirement!r} is not pinned: give PACKAGE==VERSION")):
        fetch_wheel.main([requirement, str(tmp_path / "pkg")])
    assert wheels == [] and list(tmp_path.iterdir()) == []


def test_a_failed_pip_download_is_an_error_naming_the_requirement(tmp_path, monkeypatch):
    """pip's failure was a CalledProcessError traceback ending in pip's own command line."""
    def pip(command, check):
        raise fetch_wheel.subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(fetch_wheel.subprocess, "run", pip)
    with pytest.raises(SystemExit, match=re.escape("fetch_wheel: error: pip download pkg==1.0 failed (exit status 1")):
        fetch_wheel.main(["pkg==1.0", str(tmp_path / "pkg")])
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_destination_is_refused_before_any_download(wheels, tmp_path):
    """replace_folder refused it (ReadOnlyOutput) as a traceback, after the download."""
    dest = tmp_path / "pkg"
    fetch_wheel.main(["pkg==1.0", str(dest), "pkg/"])
    dest.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=f"^fetch_wheel: error: .*{dest} is a read-only folder \\(mode 0555\\)"):
            fetch_wheel.main(["pkg==2.0", str(dest), "pkg/"])
    finally:
        dest.chmod(0o755)
    assert wheels == ["pkg==1.0"]  # no second download
    assert (dest / "pkg" / "VERSION").read_text() == "1.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # no staging folder left

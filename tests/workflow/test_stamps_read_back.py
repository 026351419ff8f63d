"""The settings stamps (pipelines/layerprune.mk) read back when Make reads its files: a stamp
whose content is what its rule would write is not out of date, whatever its length.

GNU Make 4.3's $(file <FILE) drops the file's last newline only when the end of what it read
lies past a pointer to where it began in Make's buffer, a buffer the read itself may have moved
(reallocated): when it moved lower in memory, the newline stayed, and the stamp differed from
what its rule would write by it. Which stamps, depends on their lengths (past Make's first
200-byte buffer) and on the memory layout: after a finished `make prune` with the LAMBADA
passages, the held-out tokens' stamp (198 bytes), so `make -n prune` listed them and every
measurement on them, and `make -q` answered 1. Here many lengths in one Make, stamps with
and without recorded inputs (whose identity is read back from .checked/ the same way).
"""

import re
import subprocess
import sys

from test_prune import ROOT, make_env

STAMP_FORMAT = "layerprune-stamp 3"


def test_a_stamp_read_back_as_its_rule_wrote_it_is_up_to_date_whatever_its_length(tmp_path):
    settings, checked = tmp_path / ".settings", tmp_path / ".checked"
    settings.mkdir()
    checked.mkdir()
    # An input, identified as the rules identify it; the .checked/ files are written after it, so
    # that it counts as unchanged since and its identity is read back from them.
    source = tmp_path / "input.txt"
    source.write_text("words\n")
    identity = subprocess.run([sys.executable, str(ROOT / "pipelines" / "identity.py"), str(source)],
                              capture_output=True, text=True, check=True).stdout.strip()
    # Its signature, as stamp_update records it after the identity (STAMP_SIGNATURE_FORMAT).
    signature = subprocess.run(["stat", "-L", "-c", "%d:%i:%s:%.9Y:%.9Z", str(source)],
                               capture_output=True, text=True, check=True).stdout.strip()
    calls = []
    for length in range(120, 520):
        for with_input in (False, True):
            name = f"s{length}-{int(with_input)}"
            fixed = len(STAMP_FORMAT) + 2 + (len(identity) + 1 if with_input else 0)
            values = "v" * max(1, length - fixed)
            # As stamp_update writes it: the values, the identity line, the format, a newline each.
            (settings / name).write_text(values + "\n" + (identity + "\n" if with_input else "") + STAMP_FORMAT + "\n")
            if with_input:
                (checked / name).write_text(identity + "\n" + signature + "\n")
            calls.append(f"$(if $(call stamp_outdated,{settings / name},{values},{source if with_input else ''}),"
                         f"$(info outdated: {name}))")
    extra = tmp_path / "read-back.mk"
    extra.write_text("\n".join(calls) + "\nstamps-read-back: ;\n")
    result = subprocess.run(["make", "--no-print-directory", "-f", "Makefile", "-f", str(extra), "stamps-read-back",
                             f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr
    outdated = [line for line in result.stdout.splitlines() if line.startswith("outdated:")]
    assert outdated == [], f"{len(outdated)} of {len(calls)} stamps read back as changed: {outdated[:10]}"
    # The identity was read back from the records, not worked out again (identity.py, which a
    # PYTHON that fails would have made fail).
    again = subprocess.run(["make", "--no-print-directory", "-f", "Makefile", "-f", str(extra), "stamps-read-back",
                            "PYTHON=false"], cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert again.returncode == 0, again.stdout + again.stderr
    assert [line for line in again.stdout.splitlines() if line.startswith("outdated:")] == [], again.stdout


def test_a_pin_stamp_read_back_as_its_rule_wrote_it_is_up_to_date_whatever_its_length(tmp_path):
    """The pin stamps (pin_stamp, the top-level Makefile) are read back the same way: one taken for
    changed depends on FORCE, so `make -n` listed it (and its fetch, and every table after it)
    after a finished run, and `make -q` answered 1 (here a pin of 195 bytes or more, past Make's
    first 200-byte buffer). Every length from 1, so that the short pins of settings.mk are held too."""
    pins = tmp_path / "pins"
    pins.mkdir()
    calls, targets = [], []
    for length in range(1, 520):
        stamp = pins / f"p{length}"
        pin = "p" * length
        # As pin_stamp's recipe writes it: the pin and a newline.
        stamp.write_text(pin + "\n")
        calls.append(f"$(eval $(call pin_stamp,{stamp},{pin},{tmp_path}/none,{tmp_path}/none))")
        targets.append(str(stamp))
    extra = tmp_path / "pins.mk"
    extra.write_text("\n".join(calls) + "\npins-read-back: " + " ".join(targets) + "\n\t@:\n")
    # -n: a stamp taken for changed is listed by its recipe (which names it), one up to date is not.
    result = subprocess.run(["make", "--no-print-directory", "-n", "-f", "Makefile", "-f", str(extra), "pins-read-back",
                             f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr
    remade = sorted({int(name) for name in re.findall(r"/pins/p(\d+)\b", result.stdout)})
    assert remade == [], f"{len(remade)} of {len(targets)} pin stamps read back as changed (lengths {remade[:10]}...)"

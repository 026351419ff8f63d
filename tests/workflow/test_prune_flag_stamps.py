"""make prune's flags for the exporter and the decoder (PRUNE_EXPORT_FLAGS, PRUNE_GENERATOR_FLAGS)
were stamped as typed, so `--dtype=fp16` after `--dtype fp16` (one setting, as argparse reads
it) exported the model, or the decoder, again. They are stamped as EVALUATE_FLAGS are
(flags_among, pipelines/layerprune.mk): `--flag=value` as `--flag value`. With test_prune's
stand-ins: seconds in all.
"""

import pytest

from test_prune import arg, calls, setup  # noqa: F401 (setup: the fixture)


@pytest.mark.parametrize("variable, step", [("PRUNE_EXPORT_FLAGS", "export_layered.py"),
                                            ("PRUNE_GENERATOR_FLAGS", "export_generator.py")])
def test_a_flag_given_with_or_without_its_equals_sign_is_one_setting(setup, variable, step):
    base = [f"MODEL={setup['hf']}", "K=2", f"PRUNE_OUT={setup['tmp'] / 'run'}"]
    _, lines = setup["make"](*base, f"{variable}=--dtype fp16")
    (made,) = calls(lines, step)
    assert arg(made, "--dtype") == "fp16"
    # The same setting spelled with '=': nothing to redo, as `make -n` and `make -q` say too.
    spelled = f"{variable}=--dtype=fp16"
    result, _ = setup["make"]("-n", *base, spelled)
    assert step not in result.stdout, result.stdout
    result, _ = setup["make"]("-q", *base, spelled, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    _, lines = setup["make"](*base, spelled)
    assert [line[0] for line in lines] == ["report.py"], lines
    # And back: still the same setting.
    _, lines = setup["make"](*base, f"{variable}=--dtype fp16")
    assert [line[0] for line in lines] == ["report.py"], lines
    # Another value is another setting, however spelled: passed as typed.
    _, lines = setup["make"](*base, f"{variable}=--dtype=fp32")
    (made,) = calls(lines, step)
    assert "--dtype=fp32" in made, made

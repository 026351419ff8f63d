"""tools/prune/report.py's account of the plan's closest rival and of what it gives away against the
full model (the summary `make prune` prints)."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("prune_report", ROOT / "tools" / "prune" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def plan(**rival):
    return {"measured_nll": 4.0, "runner_up_removed_blocks": None, "runner_up_nll": None,
            "runner_up_margin_se": None, **rival}


def test_no_rival_measured_says_nothing():
    assert report.rival_lines(plan()) == []
    assert report.rival_lines({"measured_nll": 4.0}) == []  # a table written before the columns


def test_a_clear_margin_names_the_rival_and_its_standard_errors():
    (line,) = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.05,
                                      runner_up_margin_se=0.01))
    assert "blocks 3 7" in line and f"{math.exp(4.05):.3f}" in line
    assert "(+5.1 %; margin 0.0500 ± 0.0100 nats a token, 5.0 standard errors" in line


def test_a_margin_within_one_standard_error_says_the_text_does_not_decide():
    lines = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.005,
                                    runner_up_margin_se=0.01))
    assert len(lines) == 5 and "does not tell the two apart" in lines[1] and "CALIB_TEXT" in lines[3]
    # Between one and two standard errors: favoured, not conclusively.
    lines = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.015,
                                    runner_up_margin_se=0.01))
    assert len(lines) == 2 and "not conclusively" in lines[1]
    # Without a standard error (one window) the margin alone is given, with no verdict.
    (line,) = report.rival_lines(plan(runner_up_removed_blocks=[3, 7], runner_up_nll=4.015))
    assert "margin 0.0150 nats" in line and "+1.5 %" in line


def test_the_ratio_to_the_full_model_comes_with_its_interval():
    row = {"measured_nll": 4.0, "full_model_nll": 3.6, "nll_increase_se": 0.02}
    ratio, low, high = report.ratio_interval(row)
    assert math.isclose(ratio, math.exp(0.4)) and math.isclose(low, math.exp(0.36))
    assert math.isclose(high, math.exp(0.44))
    assert report.ratio_text(row) == f"{math.exp(0.4):.3f}x; {math.exp(0.36):.3f}-{math.exp(0.44):.3f}x at two " \
                                     "standard errors over its windows"
    # One window: the ratio alone; a table written before the columns: nothing.
    assert report.ratio_text({**row, "nll_increase_se": None}) == f"{math.exp(0.4):.3f}x"
    assert report.ratio_interval({"measured_nll": 4.0}) is None


def test_the_target_ratio_is_settled_only_beyond_two_standard_errors():
    row = {"measured_nll": 4.0, "full_model_nll": 3.6, "nll_increase_se": 0.02}
    # exp(0.44) = 1.553: within 1.6 by more than two standard errors, within 1.5 but not by two.
    (line,) = report.target_lines(row, 1.6)
    assert "within 1.6x" in line and "more than two standard errors" in line
    lines = report.target_lines(row, 1.5)
    assert len(lines) == 2 and "under two standard errors" in lines[0] and "CALIB_WINDOWS" in lines[1]
    assert "over 1.4x" in report.target_lines(row, 1.4)[0]
    # Nothing to say without a standard error.
    assert report.target_lines({**row, "nll_increase_se": None}, 1.5) == []


def test_the_heading_names_the_margin_only_when_one_was_asked():
    assert report.target_heading("1.5").endswith("within 1.5x the full model's (MAX_PPL_RATIO)")
    line = report.target_heading("1.5", "2")
    assert line.endswith("(MAX_PPL_RATIO) by 2 standard errors of its windows (MAX_PPL_RATIO_SE)")


def test_a_plan_past_the_unreliable_ratio_is_warned_of():
    full = 3.85  # SmolLM2's calibration perplexity, about 47
    at = lambda ratio: {"measured_nll": full + math.log(ratio), "full_model_nll": full, "nll_increase_se": 0.05}
    # 12.4x carried over to held-out text (docs/results.md); 240x did not.
    assert report.depth_lines(at(12.4)) == []
    lines = report.depth_lines(at(240.0))
    assert lines[0].startswith("  warning: the pruned model's calibration perplexity is 240x the full model's")
    assert "remove fewer blocks" in lines[-1]
    assert report.depth_lines({**at(240.0), "measured_nll": math.nan})  # diverged
    assert report.depth_lines({"measured_nll": 9.0}) == []  # no full model beside the plan


def test_the_threshold_is_the_selection_crate_s():
    source = (ROOT / "crates" / "selection" / "src" / "margin.rs").read_text()
    (line,) = [line for line in source.splitlines() if line.startswith("pub const UNRELIABLE_PPL_RATIO")]
    assert float(line.split("=")[1].strip(" ;")) == report.UNRELIABLE_PPL_RATIO


def test_a_held_out_loss_beyond_the_calibration_range_is_noted():
    calibration = {"measured_nll": 4.0, "full_model_nll": 3.6, "nll_increase_se": 0.02}  # 1.49x, up to 1.55x
    heldout = {"measured_nll": 4.6, "full_model_nll": 4.0, "nll_increase_se": 0.05}  # 1.82x, from 1.65x
    lines = report.transfer_lines(heldout, calibration)
    assert len(lines) == 3 and "(1.822x against 1.492x" in lines[0] and "CALIB_TEXT" in lines[2]
    # Overlapping ranges, or no range on either side: nothing to say.
    assert report.transfer_lines({**heldout, "nll_increase_se": 0.1}, calibration) == []
    assert report.transfer_lines({**heldout, "nll_increase_se": None}, calibration) == []
    assert report.transfer_lines(heldout, {"measured_nll": 4.0}) == []


def test_the_layers_of_a_checkpoint_and_the_key_they_are_under():
    assert report.layer_count({"num_hidden_layers": 24}) == (24, "num_hidden_layers")
    # GPT-2's config names them n_layer (the summary printed "None layers" for it).
    assert report.layer_count({"model_type": "gpt2", "n_layer": 12}) == (12, "n_layer")
    # A multimodal checkpoint's are its language model's.
    assert report.layer_count({"model_type": "gemma3", "text_config": {"num_hidden_layers": 28},
                               "vision_config": {"num_hidden_layers": 27}}) == (28, "text_config.num_hidden_layers")
    assert report.layer_count({"model_type": "gemma3"}) == (None, None)


def test_the_layers_command_prints_the_count_and_its_key(tmp_path, capsys):
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gpt2", "n_layer": 6}))
    report.main(["layers", "--config", str(config)])
    assert capsys.readouterr().out == "6 n_layer - gpt2\n"  # and the model_type
    # Qwen3-VL: the blocks its deepstack features follow, by position, are kept by every plan.
    config.write_text(json.dumps({"model_type": "qwen3_vl", "text_config": {"num_hidden_layers": 36},
                                  "vision_config": {"deepstack_visual_indexes": [8, 16, 24]}}))
    report.main(["layers", "--config", str(config)])
    assert capsys.readouterr().out == "36 text_config.num_hidden_layers 0,1,2 -\n"  # (its text_config names none)
    config.write_text("{}")
    with pytest.raises(SystemExit, match="no number of layers"):
        report.main(["layers", "--config", str(config)])


def gemma3_manifests(num_blocks, removed, architecture="gemma3_text"):
    """Full and pruned layered manifests of a Gemma 3 model: every 6th block global."""
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(num_blocks)]
    full = {"architecture": architecture, "num_blocks": num_blocks,
            "attention": [{"type": t, "window": None if t == "full_attention" else 512} for t in types]}
    kept = [i for i in range(num_blocks) if i not in removed]
    pruned = {"blocks": [{"index": j, "original_index": i} for j, i in enumerate(kept)]}
    return full, pruned


def test_llama_cpp_s_positional_pattern_is_warned_of_where_it_changes_a_block():
    # Gemma 3 270M with blocks 7 and 11 removed (a make prune K=2 of the audit): llama.cpp puts
    # original block 13 at position 11 (global there) and 17 at position 15 (local).
    full, pruned = gemma3_manifests(18, {7, 11})
    assert report.llama_cpp_retyped_blocks(full, pruned) == [13, 17]
    lines = report.llama_cpp_lines(full, pruned)
    assert "blocks 13 (local -> global), 17 (global -> local): a model other" in lines[2]
    assert "convert_hf_to_gguf.py" in lines[4] and "docs/your-model.md" in lines[4] and len(lines) == 5
    # With make prune's pruned.gguf (a GGUF source), which states each kept block's type.
    stated = report.llama_cpp_lines(full, pruned, gguf_written=True)
    assert stated[:5] == lines and "pruned.gguf states each kept block's type" in stated[5]
    # Gemma 2 alternates: removing one block swaps every later one.
    types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(6)]
    full2 = {"architecture": "gemma2", "attention": [{"type": t} for t in types]}
    pruned2 = {"blocks": [{"original_index": i} for i in (0, 2, 3, 4, 5)]}
    assert report.llama_cpp_retyped_blocks(full2, pruned2) == [2, 3, 4, 5]
    # Removals that keep every kept block's type (here a whole period), other architectures with a
    # pattern (Qwen2's first blocks full) and folders without one: nothing to say.
    assert report.llama_cpp_lines(*gemma3_manifests(18, set(range(6, 12)))) == []
    full, pruned = gemma3_manifests(18, {7, 11}, architecture="qwen2")
    assert report.llama_cpp_lines(full, pruned) == []
    assert report.llama_cpp_lines({"architecture": "gemma3_text"}, pruned) == []



def test_what_the_pruning_saves_is_the_checkpoint_s_parameters():
    config = {"layerprune_parameters": {"source": 134_515_008, "pruned": 113_284_416}}
    assert report.size_lines(config, 24, 30) == [
        "  parameters: 134.5M before, 113.3M after (-15.8 %; 24 of 30 blocks, the embedding and head kept)"]
    (line,) = report.size_lines({"layerprune_parameters": {"source": 6_738_415_616, "pruned": 5_100_000_000}}, 24, 32)
    assert line.startswith("  parameters: 6.74B before, 5.10B after (-24.3 %")
    assert report.count_text(169_024) == "169.0k"
    # A checkpoint written before the count: nothing to say.
    assert report.size_lines({}, 24, 30) == []


def test_plan_folders_chosen_before_the_calibration_tokens_were_made_are_named(tmp_path):
    import os
    run = tmp_path / "run"
    for name in ("k2", "k3", "ratio1.5", "model", "kept"):
        (run / name).mkdir(parents=True)
        (run / name / "plan-calibration.parquet").write_text("")
    tokens = run / "tokens-calib.parquet"
    tokens.write_text("")
    # k3 (and model/, kept/: no plan folders) are older than the tokens, k2 (the plan just made)
    # and ratio1.5 newer.
    for name, when in (("k2", 300), ("k3", 100), ("ratio1.5", 300), ("model", 100), ("kept", 100)):
        os.utime(run / name / "plan-calibration.parquet", (when, when))
    os.utime(tokens, (200, 200))
    (line,) = report.stale_plan_lines(run, run / "k2")
    assert line.startswith("  older here: k3/: chosen before") and "ratio" not in line.split(":")[0]
    # The plan asked for is never called stale; none older, nothing said.
    os.utime(run / "k3" / "plan-calibration.parquet", (300, 300))
    assert report.stale_plan_lines(run, run / "k2") == []
    os.utime(run / "k2" / "plan-calibration.parquet", (100, 100))
    assert report.stale_plan_lines(run, run / "k2") == []

"""prune_gguf.py: a GGUF file with a plan's blocks deleted, its tensors copied as they are, read
back by transformers as the plan's model. Gemma 2/3 files whose kept blocks leave the pattern by
position state their local/global attention block by block (as llama.cpp reads it), and the
exporter reads that statement as llama.cpp does."""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import prune_gguf  # noqa: E402
import prune_hf  # noqa: E402
from test_missing_weights import gguf_of, minimal_gguf  # noqa: E402
from test_prune_hf import tamper_with_the_attention, tamper_with_the_loss  # noqa: E402


def header(path: Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def tensor_bytes(path: Path) -> dict:
    return {t.name: (int(t.tensor_type), bytes(t.data.tobytes())) for t in gguf.GGUFReader(str(path)).tensors}


def loaded(path: Path):
    return export_layered.load_pretrained(__import__("transformers").AutoModelForCausalLM, path, "test",
                                          dtype=torch.float32)


def loss(model, length=24):
    ids = torch.randint(0, model.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=ids, labels=ids, use_cache=False).loss.item()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return gguf_of("llama", tmp_path_factory.mktemp("llama"))


def test_the_kept_blocks_tensors_are_copied_as_they_are_and_renumbered(llama, tmp_path):
    out = tmp_path / "pruned.gguf"
    prune_gguf.main(["--gguf", str(llama), "--remove", "1", "--out", str(out)])
    fields = header(out)
    assert fields["llama.block_count"] == 3 and fields[prune_gguf.KEPT_BLOCKS_KEY] == [0, 2, 3]
    source, pruned = tensor_bytes(llama), tensor_bytes(out)
    renamed = {"blk.0.": "blk.0.", "blk.2.": "blk.1.", "blk.3.": "blk.2."}
    expected = {}
    for name, value in source.items():
        if name.startswith("blk.1."):
            continue
        prefix = name[:6]
        expected[renamed.get(prefix, prefix) + name[6:] if prefix in renamed else name] = value
    assert pruned == expected  # Q8_0 bytes, not dequantized and quantized again
    # Every other header field as it was.
    source_fields = header(llama)
    assert {k: v for k, v in fields.items() if k not in ("llama.block_count", prune_gguf.KEPT_BLOCKS_KEY)} == \
        {k: v for k, v in source_fields.items() if k != "llama.block_count"}


def test_a_pruned_file_pruned_again_records_the_original_indices(llama, tmp_path):
    once, twice = tmp_path / "once.gguf", tmp_path / "twice.gguf"
    prune_gguf.main(["--gguf", str(llama), "--remove", "1", "--out", str(once)])
    prune_gguf.main(["--gguf", str(once), "--remove", "0", "--out", str(twice)])
    assert header(twice)[prune_gguf.KEPT_BLOCKS_KEY] == [2, 3]
    assert header(twice)["llama.block_count"] == 2


def test_the_pruned_file_is_the_model_prune_hf_writes(llama, tmp_path):
    """Another route to the same blocks deleted: the Hugging Face checkpoint prune_hf.py writes
    from the same file has the same loss as transformers' reading of the pruned GGUF."""
    prune_gguf.main(["--gguf", str(llama), "--remove", "0,2", "--out", str(tmp_path / "pruned.gguf")])
    prune_hf.main(["--gguf", str(llama), "--remove", "0,2", "--out", str(tmp_path / "pruned-hf")])
    checkpoint = export_layered.model_class(tmp_path / "pruned-hf").from_pretrained(tmp_path / "pruned-hf")
    checkpoint.config._attn_implementation = "eager"
    assert loss(loaded(tmp_path / "pruned.gguf")) == pytest.approx(loss(checkpoint.eval()), abs=1e-6)


@pytest.mark.parametrize("arch, removed, stated", [
    # Gemma 3's fixture: 8 blocks, block 5 global. Without block 1 the global one is the kept
    # blocks' 5th (position 4), where the pattern by position has a local one.
    ("gemma3_text", "1", [True, True, True, True, False, True, True]),
    ("gemma3_text", "6,7", None),  # the kept blocks follow the pattern by position
    # Gemma 2's: 4 blocks, local and global in turn; without block 0 the first kept one is global.
    ("gemma2", "0", [False, True, False]),
    ("gemma2", "0,1", None),  # a whole period
])
def test_gemma_kept_blocks_keep_their_attention_type(arch, removed, stated, tmp_path):
    source = gguf_of(arch, tmp_path)
    out = tmp_path / "pruned.gguf"
    prune_gguf.main(["--gguf", str(source), "--remove", removed, "--out", str(out)])
    gguf_arch = header(source)["general.architecture"]
    assert header(out).get(f"{gguf_arch}.attention.sliding_window_pattern") == stated
    # Read back (by the exporter's loader, as llama.cpp reads the key) as the checkpoint of the
    # same blocks, over more tokens than the sliding window (4): each block's type matters.
    prune_hf.main(["--gguf", str(source), "--remove", removed, "--out", str(tmp_path / "pruned-hf")])
    checkpoint = export_layered.model_class(tmp_path / "pruned-hf").from_pretrained(tmp_path / "pruned-hf")
    checkpoint.config._attn_implementation = "eager"
    reread = loaded(out)
    assert list(reread.config.layer_types) == list(checkpoint.config.layer_types)
    assert loss(reread) == pytest.approx(loss(checkpoint.eval()), abs=1e-6)


def tamper_with_a_tensor(model):
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight[0, 0] += 1


@pytest.mark.parametrize("tamper, said", [
    (None, None),
    (tamper_with_the_attention, "reads back with other attention settings than the pruned model's in blocks \\[2\\] "
                                "\\(original indices\\)"),
    (tamper_with_a_tensor, "reads back with 1 tensors other than the pruned model's "
                           "\\(model.layers.2.mlp.down_proj.weight\\)"),
    (tamper_with_the_loss, "reads back with loss [-0-9.e]+, the pruned model's is [-0-9.e]+"),
])
def test_the_reload_check_holds_one_model_at_a_time_and_still_tells_a_difference(llama, tmp_path, monkeypatch,
                                                                                   tamper, said):
    """The model in memory is dropped before the written file is loaded (at 7B, 20 GB each in
    float32): the check compares with what was taken from it, as strictly as with the model."""
    import weakref

    load = export_layered.load_checkpoint
    in_memory = []

    def loaded_one_at_a_time(args, **kwargs):
        if in_memory:  # the written file
            assert in_memory[0]() is None, "the pruned model is alive while the written file is loaded"
        model, tokenizer, source = load(args, **kwargs)
        if in_memory and tamper is not None:
            tamper(model)
        in_memory.append(weakref.ref(model))
        return model, tokenizer, source

    monkeypatch.setattr(export_layered, "load_checkpoint", loaded_one_at_a_time)
    out = tmp_path / "pruned.gguf"
    if said is None:
        prune_gguf.main(["--gguf", str(llama), "--remove", "1", "--out", str(out)])
        assert header(out)["llama.block_count"] == 3
    else:
        with pytest.raises(SystemExit, match=f"^prune_gguf: error: the GGUF file written for {out} {said}: "
                                             f"a prune_gguf defect; nothing was put at {out}$"):
            prune_gguf.main(["--gguf", str(llama), "--remove", "1", "--out", str(out)])
        assert list(tmp_path.iterdir()) == []  # no output, no staging folder left
    assert len(in_memory) == 2


def test_llama_cpps_pattern_is_read_from_a_period_or_a_list():
    assert export_layered.gguf_layer_types(None, 7, 6) == ["sliding_attention"] * 5 + ["full_attention",
                                                                                         "sliding_attention"]
    assert export_layered.gguf_layer_types(2, 3, 6) == ["sliding_attention", "full_attention", "sliding_attention"]
    assert export_layered.gguf_layer_types(0, 2, 6) == ["sliding_attention"] * 2
    assert export_layered.gguf_layer_types([False, True], 2, 6) == ["full_attention", "sliding_attention"]


def test_an_existing_output_is_replaced_only_with_force(llama, tmp_path):
    out = tmp_path / "pruned.gguf"
    out.write_bytes(b"old")
    with pytest.raises(SystemExit, match=f"^prune_gguf: error: {out} exists; pass --force to replace it$"):
        prune_gguf.main(["--gguf", str(llama), "--remove", "1", "--out", str(out)])
    assert out.read_bytes() == b"old"
    prune_gguf.main(["--gguf", str(llama), "--remove", "1", "--out", str(out), "--force"])
    assert header(out)["llama.block_count"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("how, said", [
    ("out is the source", "--out {source} is the GGUF file {source}"),
    ("a block out of range", "blocks \\[9\\] are out of range for a model of 4 blocks"),
])
def test_refusals_name_the_problem_and_write_nothing(how, said, llama, tmp_path):
    out = llama if how == "out is the source" else tmp_path / "pruned.gguf"
    removed = "9" if how == "a block out of range" else "1"
    before = llama.read_bytes()
    with pytest.raises(SystemExit, match="^prune_gguf: error: " + said.format(source=llama)):
        prune_gguf.main(["--gguf", str(llama), "--remove", removed, "--out", str(out), "--force"])
    assert llama.read_bytes() == before
    assert not (tmp_path / "pruned.gguf").exists()


def test_a_gemma_27b_is_refused_before_loading(tmp_path, monkeypatch):
    """llama.cpp tells a Gemma 3 27B's attention scale by its 62 blocks: a pruned one would be
    scaled as another size."""
    path = minimal_gguf(tmp_path / "g.gguf", "gemma3")
    fields = [("gemma3.block_count", 62, gguf.GGUFValueType.UINT32)]
    from test_gguf_sources import rewritten

    big = rewritten(path, tmp_path / "g27.gguf", fields=fields, drop=lambda key: key == "gemma3.block_count")
    monkeypatch.setattr(export_layered, "check_gguf_header", lambda *args: None)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(export_layered, "load_checkpoint", never)
    with pytest.raises(SystemExit, match="^prune_gguf: error: .*g27.gguf is a gemma3_text 27B, whose attention scale "
                                         "llama.cpp tells by its block count \\(62\\)"):
        prune_gguf.main(["--gguf", str(big), "--remove", "1", "--out", str(tmp_path / "out.gguf")])


def test_llama_cpp_check_computes_llama_perplexitys_protocol_with_transformers(llama, tmp_path, capsys):
    """tools/prune/llama_cpp_check.py against a stand-in llama-perplexity writing its logits
    file's header and tokens: the second half of each chunk scored, BOS first where the file's
    vocabulary adds one (the tiny file's does not), as the chunks' mean NLL."""
    import struct

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "prune"))
    import llama_cpp_check

    ctx, chunks = 16, 3
    tokens = np.random.default_rng(0).integers(0, 50, chunks * ctx, dtype=np.int32)
    binaries = tmp_path / "bin"
    binaries.mkdir()
    stand_in = binaries / "llama-perplexity"
    stand_in.write_text(f"""#!{sys.executable}
import struct, sys
out = sys.argv[sys.argv.index("--kl-divergence-base") + 1]
with open(out, "wb") as handle:
    handle.write(b"_logits_" + struct.pack("<iii", {ctx}, 50, {chunks}) + bytes.fromhex("{tokens.tobytes().hex()}"))
print("Final estimate: PPL = 12.5000 +/- 1.0")
""")
    stand_in.chmod(0o755)
    (tmp_path / "text.txt").write_text("text")
    llama_cpp_check.main(["--llama-cpp", str(binaries), "--text", str(tmp_path / "text.txt"), "--gguf", str(llama),
                          "--ctx", str(ctx), "--chunks", str(chunks), "--scratch", str(tmp_path)])
    model = loaded(llama)
    model.config._attn_implementation = "eager"
    nll = []
    with torch.no_grad():
        for c in range(chunks):
            chunk = torch.tensor(tokens[c * ctx:(c + 1) * ctx], dtype=torch.long)[None]
            logits = model(input_ids=chunk).logits[0]
            nll += torch.nn.functional.cross_entropy(logits[ctx // 2:-1], chunk[0, ctx // 2 + 1:],
                                                     reduction="none").tolist()
    expected = float(np.exp(np.mean(nll)))
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == llama.name and float(row[1]) == 12.5
    assert float(row[2]) == pytest.approx(expected, rel=1e-4)
    assert [p for p in tmp_path.iterdir() if p.name.startswith("tmp")] == []  # the logits file gone
    (tmp_path / "bad.bin").write_bytes(b"nope")
    with pytest.raises(SystemExit, match="is not a llama-perplexity logits file"):
        llama_cpp_check.logits_file_tokens(tmp_path / "bad.bin")

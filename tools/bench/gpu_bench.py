"""`evaluate` on a GPU against the PyTorch loops, in one run (`make bench-gpu`; docs/benchmarks.md).

For each model shape (a Llama of a real model's shape with random weights, initialised on the
device in the shape's dtype):

1. export it with tools/export/export_layered.py's `export()` (the exporter's own code; its
   transformers check is replaced by the comparison of step 3, on every mask);
2. make 10 x 128 tokens (`prepare-tokens`, from random words of the model's own word-level
   tokenizer) and the 50 masks `make bench` uses (`sample-masks --strata 2,...,9 --stratified-masks 50
   --seed 1`; fewer removed blocks for models of fewer than 11 blocks);
3. time `evaluate --device DEVICE` (as it is by default, and with its other settings: on CUDA
   --cuda-graphs on, --overlap off, --mask-batch 8 with each and alone, --arena shrink alone and
   with --mask-batch 32, --mask-batch 32 with the arenas kept, --arena keep-exact alone and with
   --mask-batch 8, for fp16 / bf16 an export
   with fused attention (--attention-kernel fused) alone, with --cuda-graphs on, with
   --mask-batch 4 and 8 and with both, one with fused attention and the q/k/v projections packed
   (--qkv-projection packed) alone and with --mask-batch 8, --graph-optimization basic and all, and one with
   attention in the dtype (--attention-precision model), --io-binding off, --tf32 off for fp32,
   --no-prefix-reuse, and the CPU provider on the first masks for fp32; on the CPU --mask-batch 8
   and --io-binding on; and a race's round, below; `--contenders` picks, or
   `--shape-contenders` for one shape) and the two PyTorch
   loops of
   tools/bench/torch_baseline.py (zero-and-restore, blocks deleted from the ModuleList) on the
   same tokens and masks in the same dtype, each after a warm-up;
4. measure the device's GEMM rate (torch matmul) at the blocks' matrix shapes for the
   10 x 128 rows of one mask, in each contender's precision;

The row named plain "evaluate" (and every row not naming fused attention or the attention's
precision) runs the standard export (--attention-kernel standard, attention in float32), as in
runs 1 and 2; since run 3 the exporter's default for fp16 / bf16 (auto) is the fused one.

and write the CSV (columns `shape,dtype,contender,masks_per_second,useful_tflops,gemm_tflops,
max_nll_diff,date`; rows of the shapes measured replace earlier rows of those shapes), a Markdown
table for docs/benchmarks.md, and a JSON of everything measured.

- useful_tflops: the arithmetic of the kept blocks and the head for every mask the row ran (what
  an evaluator without prefix reuse has to do; report.py's FLOP count) per second.
- gemm_tflops: torch matmul at the block's shapes in the contender's precision (float32 with
  TF32 for `evaluate` on fp32 weights, ONNX Runtime's default; without for `--tf32 off` and for
  PyTorch, whose default it is).
- max_nll_diff: max over the masks of |mean NLL - PyTorch with the blocks deleted| (for that
  row itself: against zero-and-restore).
- A race's round (the contenders named "a race's round"): the recommended method races its
  candidate masks over the calibration windows (crates/selection/src/race.rs), measuring them
  RACE_WINDOWS windows at a time, and counts a mask measured on w of W windows as w / W of an LLM
  evaluation. That count is a cost only where time goes with the tokens of a block call, as on
  the CPU; where the host's launches set the pace (the 1.1B shape on an H200) a call of 3 windows
  may cost as much as one of 10. So these contenders run `evaluate` on the first RACE_WINDOWS
  windows only (plain, with --cuda-graphs on, with --mask-batch 4: four masks' windows a
  call, about one whole mask's rows, and with --mask-batch 3: the calls a race's round makes on
  CUDA since run 3, which fills a call on part of the windows with as many masks as fit one
  mask's full window batch, 10 // 3; on this 3-window table `evaluate` has nothing to fill by
  itself), and their masks/s is given per whole mask, w / W of the
  masks per second, comparable with every other row: equal to the default row's when a race's
  savings in evaluations are savings in time. Their max_nll_diff is against PyTorch with the
  blocks deleted on those windows.
- fp16 / bf16 shapes are also measured against float32: PyTorch on the same weights computed in
  float32 (blocks deleted) on the first FLOAT32_MASKS masks; max |NLL diff| of PyTorch in the
  dtype (with its default attention and with eager attention) and of each `evaluate`, in the
  JSON and under the Markdown table.

The CSV, Markdown and JSON are rewritten after every contender, so a run cut short keeps what it
measured (tools/bench/gpu_device_run.sh points them at the device tool's $OUT).

Models above 2 GB of weights (the 1.1B and 7B shapes) have one random block copied into every
block (`--replicate-blocks auto`): the export writes one block graph instead of 22 or 32 and the
run stays under 10 minutes; the work per block is the same.

Usage, on a GPU host (ORT_DYLIB_PATH = onnxruntime-gpu, LD_LIBRARY_PATH with the CUDA libraries):
  python tools/bench/gpu_bench.py --bin target/debug
On any machine, end to end in seconds (the test):
  python tools/bench/gpu_bench.py --device cpu --shapes tiny --work /tmp/b --csv /tmp/b/out.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import io
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

# The run's clock, started before torch and the exporter are imported (seconds, on a GPU host):
# --budget-seconds and --deadline-seconds are then counted as the device call's `timeout T` counts.
STARTED = time.perf_counter()

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tools" / "export"))
sys.path.insert(0, str(HERE))

import export_layered  # noqa: E402
import report  # noqa: E402
from torch_baseline import deleted_blocks_nll, gemm_tflops, zero_and_restore_nll  # noqa: E402

COLUMNS = ["shape", "dtype", "contender", "masks_per_second", "useful_tflops", "gemm_tflops",
           "max_nll_diff", "date"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                    max_position_embeddings=8192)
TINYLLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                    num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0,
                    max_position_embeddings=2048)
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0,
                 max_position_embeddings=4096)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=320, tie_word_embeddings=True, rope_theta=10000.0,
            max_position_embeddings=256)

# key -> (shape name in the CSV, dtype, Llama config)
SHAPES = {
    "smollm2-135m-fp32": ("SmolLM2-135M", "fp32", SMOLLM2_135M),
    "smollm2-135m-fp16": ("SmolLM2-135M", "fp16", SMOLLM2_135M),
    "tinyllama-1.1b-fp16": ("TinyLlama-1.1B", "fp16", TINYLLAMA_1B),
    "llama2-7b-bf16": ("Llama-2-7B", "bf16", LLAMA2_7B),
    "tiny": ("tiny-llama", "fp32", TINY),
    "tiny-fp16": ("tiny-llama", "fp16", TINY),
}
GPU_SHAPES = ["smollm2-135m-fp32", "smollm2-135m-fp16", "tinyllama-1.1b-fp16", "llama2-7b-bf16"]
# Above this, one block's weights in every block (`--replicate-blocks auto`): exporting the 1.1B
# shape's 22 distinct blocks took 48 s in run 2, and fp16 / bf16 shapes are exported three times.
REPLICATE_ABOVE_BYTES = 2 << 30
# Masks on which a reduced-precision shape is also computed in float32 by PyTorch (the agreement
# bound against fp32; a 7B shape in float32 takes ~0.4 s a mask on an H200).
FLOAT32_MASKS = 10
# Masks on which an fp32 shape is also evaluated on the GPU host's CPU provider.
CPU_MASKS = 10


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer of exactly `vocab_size` ids: `<unk>` (0) and the words w1, w2, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")


def build_model(config_values: dict, dtype: torch.dtype, device: str, seed: int, replicate: bool):
    """A random-weight Llama made on `device` in `dtype` (transformers' own initialisation)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**config_values, rms_norm_eps=1e-5, initializer_range=0.02, bos_token_id=0,
                         eos_token_id=0)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    if replicate:
        layers = model.model.layers
        with torch.no_grad():
            for layer in layers[1:]:
                layer.load_state_dict(layers[0].state_dict())
    return model


def export_model(model, key: str, dtype_name: str, out_dir: Path, device: str, seed: int, replicate: bool,
                 attention: str = "float32") -> dict:
    """Exports `model` with export_layered.export() on the CPU (where the exporter builds its
    example inputs), its attention as `attention` says (`Contender.attention`); with
    `replicate`, only block 0 (every block holds its weights) and its graph copied for the others.
    Returns the manifest written."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    config = model.config
    num_blocks = config.num_hidden_layers
    layers = model.model.layers
    if replicate:
        model.model.layers = torch.nn.ModuleList([layers[0]])
        config.num_hidden_layers = 1
    model.to("cpu")
    source = {"kind": "random", "shape": key, "seed": seed, "replicated_block": replicate}
    try:
        # Eager, as export_layered.load_model sets it.
        with export_layered.attention_implementation(config, "eager"):
            manifest = export_layered.export(model, word_tokenizer(config.vocab_size), source, out_dir,
                                             dtype_name, opset=17, exporter="legacy",
                                             **export_attention(attention))
    finally:
        model.model.layers = layers
        config.num_hidden_layers = num_blocks
        model.to(device)
    if replicate:
        first = manifest["blocks"][0]["file"]
        digest = manifest["files"][first]
        manifest["blocks"] = []
        for index in range(num_blocks):
            name = f"block_{index:03d}.onnx"
            if name != first:
                # A hard link: the same bytes (and page cache) for 31 more 400 MB graphs.
                try:
                    os.link(out_dir / first, out_dir / name)
                except OSError:
                    shutil.copyfile(out_dir / first, out_dir / name)
            manifest["files"][name] = digest
            manifest["blocks"].append({"index": index, "original_index": index, "file": name})
        manifest["files"] = dict(sorted(manifest["files"].items()))
        manifest["num_blocks"] = num_blocks
        if manifest.get("attention"):
            manifest["attention"] = manifest["attention"][:1] * num_blocks
    with open(out_dir / "manifest.json", "w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    return manifest


class StageFailed(RuntimeError):
    pass


def run_stage(args, name: str, stage_args: list, log_level: str = "warn"):
    """(wall seconds, what the stage printed)."""
    command = [str(Path(args.bin) / name), *map(str, stage_args)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.stage_timeout,
                          env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", log_level)})
    if done.returncode != 0:
        raise StageFailed(f"{' '.join(command)} exited with {done.returncode}\n"
                          f"{(done.stdout + done.stderr).strip()[-2000:]}")
    return time.perf_counter() - started, (done.stdout + done.stderr).strip()


def prepare_tokens(args, model_dir: Path, work: Path, windows: int, out: Path) -> None:
    """The first `windows` consecutive windows of WORK/words.txt (make_inputs writes it)."""
    out.unlink(missing_ok=True)
    run_stage(args, "prepare-tokens", ["--model", model_dir, "--text", work / "words.txt", "--windows", windows,
                                       "--seq-len", args.seq_len, "--mode", "consecutive", "--bos", "off",
                                       "--out", out])


def make_inputs(args, model_dir: Path, work: Path, vocab_size: int, num_blocks: int):
    """(token windows, masks as lists of bools): prepare-tokens on random words, sample-masks."""
    rng = random.Random(args.seed)
    words = args.windows * args.seq_len + 64
    (work / "words.txt").write_text(" ".join(f"w{rng.randrange(1, vocab_size)}" for _ in range(words)) + "\n")
    tokens, masks = work / "tokens.parquet", work / "masks.parquet"
    masks.unlink(missing_ok=True)
    prepare_tokens(args, model_dir, work, args.windows, tokens)
    most_removed = min(9, num_blocks - 2)
    removed = ",".join(str(r) for r in range(2, most_removed + 1))
    run_stage(args, "sample-masks", ["--model", model_dir, "--strata", removed, "--stratified-masks", args.masks,
                                     "--seed", 1, "--out", masks])
    windows = pq.read_table(tokens).column("tokens").to_pylist()
    kept = pq.read_table(masks).column("kept").to_pylist()
    return tokens, masks, windows, kept


class Contender(NamedTuple):
    """One `evaluate` run of a shape: its name, its flags, the precision of its matrix products,
    the attention of the export it runs: "float32" or "model" (tools/export's
    --attention-precision, standard operators), "fused" (--attention-kernel fused) or
    "fused-packed" (and --qkv-projection packed), and the
    windows it runs: the first `windows` of the tokens (a race's round), 0 for all of them."""
    name: str
    flags: list
    precision: str
    attention: str = "float32"
    windows: int = 0


def export_attention(attention: str) -> dict:
    """export_layered.export()'s attention arguments for a `Contender.attention`: the kernel
    always named, since export()'s default ("auto") fuses fp16 / bf16 llama shapes."""
    if attention == "fused":
        return {"attention_kernel": "fused"}
    if attention == "fused-packed":
        return {"attention_kernel": "fused", "qkv_projection": "packed"}
    return {"attention_kernel": "standard", "attention_precision": attention}


# The export with attention in the model's dtype: what float32 attention costs on the device.
ATTENTION_IN_DTYPE = "evaluate, attention in the model's dtype (export --attention-precision model)"
# The export with one GroupQueryAttention node a block: some 20 kernels fewer a block call.
FUSED_ATTENTION = "evaluate, fused attention (export --attention-kernel fused)"
FUSED_ATTENTION_CUDA_GRAPHS = "evaluate --cuda-graphs on, fused attention (export --attention-kernel fused)"
# And its query, key and value projections packed into one product (the node's packed query): two
# products fewer a block, the key's and value's few columns no longer a kernel each.
FUSED_PACKED = "evaluate, fused attention, q/k/v packed (export --attention-kernel fused --qkv-projection packed)"
# A race's first round: `Race::default().first_windows` (crates/selection/src/race.rs); the later
# rounds of a race over 10 windows add 3 and then 4.
RACE_WINDOWS = 3
RACE_ROUND = f"a race's round ({RACE_WINDOWS} of the windows; masks/s per whole mask)"


def race_round(flags: str, precision: str) -> Contender:
    """`evaluate` with `flags` on a race's round of windows (see the module documentation)."""
    name = f"evaluate {flags}, {RACE_ROUND}" if flags else f"evaluate, {RACE_ROUND}"
    return Contender(name, flags.split(), precision, windows=RACE_WINDOWS)


def evaluate_contenders(device: str, dtype_name: str):
    """The `evaluate` contenders of a shape, the most telling first (a shape past
    --deadline-seconds skips the rest)."""
    cuda = device.startswith("cuda")
    precision = "tf32" if cuda and dtype_name == "fp32" else dtype_name
    other = "off" if cuda else "on"
    contenders = [Contender("evaluate", [], precision)]
    if dtype_name != "fp32":
        # Fewer kernels a block (ONNX Runtime's GroupQueryAttention, fp16 / bf16 on CUDA), and on
        # CUDA with masks batched through its blocks (what was fastest at 135M and 1.1B without
        # it): the 1.1B shape's missed 3x (run 3: 2.74x fused alone) rests on these, so they come
        # right after the default, before the contenders run 3 measured (CUDA graphs) and those
        # never run on a GPU, whose hang would cost a stage timeout.
        contenders.append(Contender(FUSED_ATTENTION, [], precision, attention="fused"))
        if cuda:
            for flags in ["--mask-batch 4", "--mask-batch 8", "--cuda-graphs on --mask-batch 8"]:
                contenders.append(Contender(f"evaluate {flags}, fused attention (export --attention-kernel fused)",
                                            flags.split(), precision, attention="fused"))
            # And with its blocks replayed as CUDA graphs.
            contenders.append(Contender(FUSED_ATTENTION_CUDA_GRAPHS, ["--cuda-graphs", "on"], precision,
                                        attention="fused"))
        # Its q/k/v projections packed into one product (never run on a GPU).
        contenders.append(Contender(FUSED_PACKED, [], precision, attention="fused-packed"))
        if cuda:
            contenders.append(Contender(FUSED_PACKED.replace("evaluate,", "evaluate --mask-batch 8,"),
                                        ["--mask-batch", "8"], precision, attention="fused-packed"))
    if cuda:
        # Blocks replayed as CUDA graphs (the host's launches set the pace at 1.1B).
        contenders.append(Contender("evaluate --cuda-graphs on", ["--cuda-graphs", "on"], precision))
    if dtype_name != "fp32":
        # ONNX Runtime's fusions into its own kernels left out (basic), for the distance from
        # float32 (bf16 at 7B is 24x PyTorch's, the suspects those kernels), and every level it
        # has (all: whether any above the layouts, the default, pays).
        for flags in ["--graph-optimization basic", "--graph-optimization all"]:
            contenders.append(Contender(f"evaluate {flags}", flags.split(), precision))
    # Whether a race's savings in LLM evaluations are savings in time: a round's calls carry
    # 3 windows; with --mask-batch 4, about one whole mask's rows; with --mask-batch 3 what a
    # round on CUDA runs since run 3 (EvalOptions::fill_small_batches).
    contenders.append(race_round("", precision))
    if cuda:
        contenders.append(race_round("--mask-batch 3", precision))
        contenders.append(race_round("--cuda-graphs on", precision))
        contenders.append(race_round("--mask-batch 4", precision))
    if cuda:
        # The host waiting for every block (the default before --overlap), and masks batched
        # through the blocks, with each.
        for flags in ["--overlap off", "--mask-batch 8", "--cuda-graphs on --mask-batch 8",
                      "--overlap off --mask-batch 8"]:
            contenders.append(Contender(f"evaluate {flags}", flags.split(), precision))
        # Every graph's arena giving its free regions back after each run: what that costs one
        # mask at a time, and whether 32 masks a call then fit (they ran the 7B shape out of
        # memory with the arenas kept).
        for flags in ["--arena shrink", "--mask-batch 32 --arena shrink", "--mask-batch 32"]:
            contenders.append(Contender(f"evaluate {flags}", flags.split(), precision))
        # The arenas kept, each region the size asked rather than double the last: how much
        # less they hold (run 3: 24 GiB of arenas for one mask at a time at 7B), at what cost,
        # and whether 8 masks a call then fit the 7B shape.
        for flags in ["--arena keep-exact", "--mask-batch 8 --arena keep-exact"]:
            contenders.append(Contender(f"evaluate {flags}", flags.split(), precision))
    if not cuda:
        contenders.append(Contender("evaluate --mask-batch 8", ["--mask-batch", "8"], precision))
    if dtype_name != "fp32":
        # fp16 / bf16 exports compute attention in float32 by default (closer to float32, more
        # memory traffic: the scores and their softmax in float32); this one in the dtype.
        contenders.append(Contender(ATTENTION_IN_DTYPE, [], precision, attention="model"))
    contenders.append(Contender(f"evaluate --io-binding {other}", ["--io-binding", other], precision))
    if cuda and dtype_name == "fp32":
        contenders.append(Contender("evaluate --tf32 off", ["--tf32", "off"], "fp32"))
    if cuda:
        # What prefix reuse is worth on a GPU.
        contenders.append(Contender("evaluate --no-prefix-reuse", ["--no-prefix-reuse"], precision))
    if cuda and dtype_name == "fp32":
        # The CPU provider on the host's cores, on the first masks: its NLLs against CUDA's.
        contenders.append(Contender(f"evaluate --device cpu (first {CPU_MASKS} masks)",
                                    ["--device", "cpu", "--max-new-masks", str(CPU_MASKS)], "fp32"))
    return contenders


def shape_variable(key: str) -> str:
    """`key` as a shell variable's name can spell it (tools/bench/gpu_device_run.sh's C_<shape>):
    '-' and '.' as '_'."""
    return re.sub(r"[-.]", "_", key)


def shape_picks(values: list) -> dict:
    """--shape-contenders SHAPE=REGEX, each a shape key (or its shape_variable spelling) and a
    regular expression, as {key: compiled}; ValueError naming what is wrong."""
    keys = {shape_variable(key): key for key in SHAPES}
    picks = {}
    for value in values:
        shape, separator, pattern = value.partition("=")
        if not separator or shape_variable(shape) not in keys:
            raise ValueError(f"--shape-contenders {value!r}: not SHAPE=REGEX with SHAPE one of {', '.join(SHAPES)}")
        try:
            picks[keys[shape_variable(shape)]] = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"--shape-contenders {value!r}: {error}") from None
    return picks


def picked_contenders(args, key: str) -> list:
    """The shape's contenders that run, in evaluate_contenders' order: the default one and those
    its --shape-contenders pattern matches, or --contenders' where it has none (a shape's own
    seconds spent on its own open questions: at 7B the bf16 distance, not run 3's rows again)."""
    pattern = args.shape_contenders.get(key) or re.compile(args.contenders)
    picked = [c for c in evaluate_contenders(args.device, SHAPES[key][1])
              if c.name == "evaluate" or pattern.search(c.name)]
    if not args.device.startswith("cuda"):
        # A rehearsal on the CPU runs fewer than the device call will: said, not silent.
        names = {c.name for c in picked}
        cuda_only = [c.name for c in evaluate_contenders("cuda", SHAPES[key][1])
                     if pattern.search(c.name) and c.name not in names]
        if cuda_only:
            log(f"{key}: on {args.device}, not the {len(cuda_only)} contenders the pattern picks that run on CUDA "
                f"only: {'; '.join(cuda_only)}")
    return picked


def run_evaluate(args, model_dir: Path, tokens: Path, masks: Path, out: Path, flags: list, verify: bool):
    out.unlink(missing_ok=True)  # evaluate resumes an existing table
    summary = out.with_suffix(".json")
    # At info level evaluate logs the time it took to open the graphs.
    wall, printed = run_stage(args, "evaluate", ["--model", model_dir, "--tokens", tokens, "--masks", masks,
                                                 "--out", out, "--summary", summary, "--quiet",
                                                 *([] if "--device" in flags else ["--device", args.device]),
                                                 *flags, *([] if verify else ["--no-verify"])],
                              log_level="info")
    table = pq.read_table(out)
    nll = {tuple(kept): value for kept, value in zip(table.column("kept").to_pylist(),
                                                       table.column("nll").to_pylist())}
    return json.loads(summary.read_text()), nll, wall, printed[-1500:]


def torch_loop(model, input_ids, masks, loop, device: str):
    loop(model, input_ids, masks[0])  # warm-up
    synchronize(device)
    started = time.perf_counter()
    nlls = [loop(model, input_ids, kept) for kept in masks]
    synchronize(device)
    return nlls, time.perf_counter() - started


def gemm_rates(config, rows: int, dtype_name: str, device: str, seconds: float, precisions) -> dict:
    """TFLOP/s per precision name (fp32, tf32, fp16, bf16) needed by the contenders."""
    rates = {}
    for precision in sorted(set(precisions)):
        dtype = DTYPES["fp32" if precision == "tf32" else precision]
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        try:
            rates[precision] = gemm_tflops(config, rows, dtype, device, seconds)
        finally:
            if device.startswith("cuda"):
                torch.backends.cuda.matmul.allow_tf32 = False
    return rates


def run_shape(args, key: str, rows: list, details: dict, publish) -> None:
    """Measures one shape into `rows` and `details`, calling `publish()` after each contender (a
    run cut short keeps what it measured)."""
    shape, dtype_name, config_values = SHAPES[key]
    dtype = DTYPES[dtype_name]
    work = Path(args.work) / key
    work.mkdir(parents=True, exist_ok=True)
    params = (config_values["num_hidden_layers"] * (
        4 * config_values["hidden_size"] ** 2 + 3 * config_values["hidden_size"] * config_values["intermediate_size"])
        + config_values["vocab_size"] * config_values["hidden_size"])
    weight_bytes = params * torch.finfo(dtype).bits // 8
    replicate = {"all": True, "none": False}.get(args.replicate_blocks, weight_bytes > REPLICATE_ABOVE_BYTES)
    details.update({"key": key, "shape": shape, "dtype": dtype_name, "approx_weight_bytes": weight_bytes,
                    "replicated_block": replicate})

    log(f"{key}: building random weights on {args.device} ({weight_bytes / 1e9:.2f} GB)")
    model = build_model(config_values, dtype, args.device, args.seed, replicate)
    started = time.perf_counter()
    model_dir = work / "model"
    manifest = export_model(model, key, dtype_name, model_dir, args.device, args.seed, replicate)
    details["export_seconds"] = time.perf_counter() - started
    log(f"{key}: exported in {details['export_seconds']:.1f} s")
    tokens, masks_path, windows, masks = make_inputs(args, model_dir, work, config_values["vocab_size"],
                                                     config_values["num_hidden_layers"])
    details["masks"] = len(masks)

    block_flops, head_flops = report.flops_per_token({"seq_len": args.seq_len}, manifest)
    token_count = len(windows) * args.seq_len

    def work_per_mask(evaluated) -> float:
        """One mask's useful arithmetic (its kept blocks and the head), averaged over `evaluated`:
        the masks a row ran (`evaluate --max-new-masks` runs the table's first, which keep the
        most blocks)."""
        return sum((sum(kept) * block_flops + head_flops) * token_count for kept in evaluated) / len(evaluated)

    # PyTorch first: its loops are the reference of every NLL difference.
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default, stated
    input_ids = torch.tensor(windows, dtype=torch.long, device=args.device)
    with torch.no_grad():
        details["pytorch_full_model_nll"] = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.item()
    deleted, deleted_seconds = torch_loop(model, input_ids, masks, deleted_blocks_nll, args.device)
    zeroed, zeroed_seconds = torch_loop(model, input_ids, masks, zero_and_restore_nll, args.device)
    log(f"{key}: PyTorch blocks deleted {len(masks) / deleted_seconds:.2f} masks/s, "
        f"zero-and-restore {len(masks) / zeroed_seconds:.2f} masks/s")
    reference = {tuple(kept): value for kept, value in zip(masks, deleted)}
    if dtype_name != "fp32":
        # The agreement bound against fp32: PyTorch on the same weights computed in float32
        # (blocks deleted, TF32 off) on the first masks, for PyTorch in the dtype and for each
        # `evaluate` below.
        with export_layered.computing_in_float32(model):
            float32 = {tuple(kept): deleted_blocks_nll(model, input_ids, kept) for kept in masks[:FLOAT32_MASKS]}
        details["float32_masks"] = len(float32)
        details["pytorch_max_nll_diff_vs_float32"] = max(abs(reference[m] - v) for m, v in float32.items())
        # transformers' eager attention rounds the scores to the dtype (what the graphs did
        # before `--attention-precision float32`); the loops above use its default (SDPA).
        # PyTorch with eager attention in the dtype tells the sources of difference apart.
        details["pytorch_attention"] = model.config._attn_implementation
        with export_layered.attention_implementation(model.config, "eager"):
            eager = {tuple(kept): deleted_blocks_nll(model, input_ids, kept) for kept in masks[:FLOAT32_MASKS]}
        details["pytorch_eager_max_nll_diff_vs_float32"] = max(abs(eager[m] - v) for m, v in float32.items())
        log(f"{key}: PyTorch with eager attention in {dtype_name} against float32: max |NLL diff| "
            f"{details['pytorch_eager_max_nll_diff_vs_float32']:.2e}")
        log(f"{key}: PyTorch in {dtype_name} against float32: max |NLL diff| "
            f"{details['pytorch_max_nll_diff_vs_float32']:.2e} over {len(float32)} masks")

    # A race's round needs more windows than it runs (with --windows 3 or fewer it would be a
    # whole mask's).
    contenders = [c for c in picked_contenders(args, key) if c.windows < len(windows)]
    rates = gemm_rates(model.config, token_count, dtype_name, args.device, args.gemm_seconds,
                       [c.precision for c in contenders] + [dtype_name])
    details["gemm_tflops"] = rates
    # What PyTorch's allocator keeps cached from the float32 round trip (a 7B shape: 27 GB of
    # float32 weights and 13.5 GB of bf16 ones again) and the GEMMs goes back to the device
    # before `evaluate` runs beside the model: on an 80 GB GPU it would not fit beside it.
    release_cached_memory(args.device)
    log(f"{key}: GEMM TFLOP/s at the block shapes: "
        + ", ".join(f"{name} {rate:.3g}" for name, rate in rates.items()))

    def row(contender, masks_per_second, precision, nll_diff, evaluated=masks):
        return {"shape": shape, "dtype": dtype_name, "contender": contender,
                "masks_per_second": masks_per_second,
                "useful_tflops": work_per_mask(evaluated) * masks_per_second / 1e12,
                "gemm_tflops": rates[precision], "max_nll_diff": nll_diff, "date": args.date}

    rows += [
        row("pytorch zero-and-restore", len(masks) / zeroed_seconds, dtype_name,
            max(abs(a - b) for a, b in zip(zeroed, deleted))),
        row("pytorch blocks deleted", len(masks) / deleted_seconds, dtype_name,
            max(abs(a - b) for a, b in zip(zeroed, deleted))),
    ]
    details["runs"] = {}
    details["failures"] = {}
    details["skipped"] = []
    publish()
    nlls = {}
    model_dirs = {"float32": model_dir}
    # Each contender's tokens and the PyTorch NLLs its own are compared with, by the windows it
    # runs (all of them; a race's round: the first few, made when a contender first needs them).
    inputs = {len(windows): (tokens, reference)}

    def first_windows(count: int):
        if count not in inputs:
            path = work / f"tokens-first-{count}.parquet"
            prepare_tokens(args, model_dir, work, count, path)
            if pq.read_table(path).column("tokens").to_pylist() != windows[:count]:
                raise StageFailed(f"prepare-tokens --windows {count} wrote other windows than the first "
                                  f"{count} of {tokens}")
            inputs[count] = (path, {tuple(kept): deleted_blocks_nll(model, input_ids[:count], kept)
                                    for kept in masks})
        return inputs[count]

    for index, (contender, flags, precision, attention, window_count) in enumerate(contenders):
        if index > 0 and time.perf_counter() - STARTED > args.deadline_seconds:
            details["skipped"].append(contender)
            log(f"{key}: {contender}: skipped, past --deadline-seconds {args.deadline_seconds:g}")
            continue
        if attention not in model_dirs:
            # The other export, made when a contender first needs it (counted apart from the run).
            try:
                started = time.perf_counter()
                export_model(model, key, dtype_name, work / f"model-attention-{attention}", args.device,
                             args.seed, replicate, attention=attention)
                model_dirs[attention] = work / f"model-attention-{attention}"
                details[f"export_seconds_attention_{attention}"] = time.perf_counter() - started
                log(f"{key}: exported with attention {attention} in "
                    f"{details[f'export_seconds_attention_{attention}']:.1f} s")
            except (Exception, SystemExit) as error:  # noqa: BLE001 - the export's failure (the exporter's
                # refusals are SystemExit) is this contender's
                details["failures"][contender] = f"export with attention {attention}: {error}"
                log(f"{key}: {contender}: FAILED: {details['failures'][contender]}")
                continue
        try:
            window_count = window_count or len(windows)
            contender_tokens, contender_reference = first_windows(window_count)
            summary, nll, wall, printed = run_evaluate(args, model_dirs[attention], contender_tokens, masks_path,
                                                       work / f"eval-{index}.parquet", flags, verify=index == 0)
        except (StageFailed, subprocess.TimeoutExpired) as error:
            # One contender failing (a kernel the provider lacks for this dtype, say) must not
            # cost the run the others' figures.
            details["failures"][contender] = str(error)
            log(f"{key}: {contender}: FAILED: {error}")
            continue
        diff = max(abs(nll[mask] - value) for mask, value in contender_reference.items() if mask in nll)
        # A race's round counts w / W of an LLM evaluation a mask: its rate per whole mask.
        per_whole_mask = window_count / len(windows)
        rows.append(row(contender, summary["masks_per_second"] * per_whole_mask, precision, diff, evaluated=list(nll)))
        details["runs"][contender] = {"summary": summary, "wall_seconds": wall, "windows": window_count,
                                      "load_and_full_model_seconds": wall - summary["seconds"], "log": printed}
        if window_count < len(windows):
            log(f"{key}: {contender}: {summary['masks_per_second']:.2f} masks/s on {window_count} windows "
                f"({summary['blocks_run']} blocks run), {summary['masks_per_second'] * per_whole_mask:.2f} "
                f"per whole mask; max |NLL diff| {diff:.2e} on those windows")
            publish()
            continue
        nlls[contender] = nll
        if dtype_name != "fp32":
            details["runs"][contender]["max_nll_diff_vs_float32"] = max(abs(nll[m] - v) for m, v in float32.items()
                                                                    if m in nll)
        memory = summary.get("device_memory")
        memory_text = "" if memory is None else f"; {memory['taken_mib'] / 1024:.1f} GiB of the GPU's memory taken"
        arenas = summary.get("arena_use")
        if arenas is not None:
            memory_text += (f"; arenas ({summary.get('arena')}) hold {arenas['reserved_mib'] / 1024:.2f} GiB, "
                            f"largest one-graph peak {arenas['largest_peak_mib'] / 1024:.2f} GiB")
        log(f"{key}: {contender}: {summary['masks_per_second']:.2f} masks/s "
            f"({summary['blocks_run']} blocks run; {wall:.1f} s with loading){memory_text}; "
            f"max |NLL diff| {diff:.2e}; host time: {host_time(summary)}")
        publish()
    # States bound to the device's memory or returned to the host: the same arithmetic.
    io_binding = [c.name for c in contenders if c.name == "evaluate" or c.name.startswith("evaluate --io-binding")]
    if len(io_binding) == 2 and all(c in nlls for c in io_binding):
        plain, bound = (nlls[c] for c in io_binding)
        details["io_binding_on_vs_off_max_nll_diff"] = max(abs(plain[m] - bound[m]) for m in plain)
        log(f"{key}: --io-binding on vs off: max |NLL diff| {details['io_binding_on_vs_off_max_nll_diff']:.1e}")
    cpu = [c for c in nlls if "--device cpu" in c]
    if cpu and "evaluate" in nlls:
        details["cuda_vs_cpu_provider_max_nll_diff"] = max(abs(nlls["evaluate"][m] - v) for m, v in nlls[cpu[0]].items())
        log(f"{key}: CUDA (TF32 default) vs the CPU provider: max |NLL diff| "
            f"{details['cuda_vs_cpu_provider_max_nll_diff']:.1e}")
    tf32_off = "evaluate --tf32 off"
    if cpu and tf32_off in nlls:
        details["cuda_tf32_off_vs_cpu_provider_max_nll_diff"] = max(abs(nlls[tf32_off][m] - v)
                                                                   for m, v in nlls[cpu[0]].items())
        log(f"{key}: CUDA --tf32 off vs the CPU provider: max |NLL diff| "
            f"{details['cuda_tf32_off_vs_cpu_provider_max_nll_diff']:.1e}")
    del model, input_ids
    release_cached_memory(args.device)


def release_cached_memory(device: str) -> None:
    """Gives back to the device what PyTorch's allocator holds unused."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def host_time(summary: dict) -> str:
    """Where `evaluate`'s timed seconds went, from its summary's `graph_runs`: each kind of graph's runs,
    milliseconds of host time a run and share of the seconds. On CUDA with `--overlap` a block's run returns once
    queued (its time is the launches) and the head's waits for the device, so blocks near 100 % say the host
    sets the pace, a head far above its arithmetic says the device does. Empty for a summary without it."""
    runs = summary.get("graph_runs")
    if not runs or not summary.get("seconds"):
        return ""
    parts = [f"{kind} {runs[kind]['runs']} x {runs[kind]['ms_per_run']:.3g} ms "
             f"({100 * runs[kind]['host_seconds'] / summary['seconds']:.0f} %)"
             for kind in ("embedding", "blocks", "stitching", "head") if runs.get(kind, {}).get("runs")]
    parts.append(f"outside runs {100 * runs.get('outside_runs_seconds', 0.0) / summary['seconds']:.0f} %")
    return ", ".join(parts)


def compared(rows: list) -> set:
    """The (shape, dtype) pairs of `rows` with an `evaluate` row: what the CSV takes of a run. A
    shape whose every `evaluate` contender failed (the CPU build of ONNX Runtime loaded for
    --device cuda, say) has only its PyTorch rows, which compare nothing, and would replace an
    earlier run's whole comparison of that shape."""
    return {(r["shape"], r["dtype"]) for r in rows if r["contender"].startswith("evaluate")}


def write_csv(path: Path, rows: list) -> None:
    """`rows` replace the rows of the same (shape, dtype) already in `path`; the others stay."""
    measured = {(r["shape"], r["dtype"]) for r in rows}
    kept = []
    if path.is_file():
        with open(path, newline="") as handle:
            kept = [r for r in csv.DictReader(handle) if (r["shape"], r["dtype"]) not in measured]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in kept:
        writer.writerow({c: r.get(c, "") for c in COLUMNS})
    for r in rows:
        writer.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})
    report.write_atomically(path, text.getvalue())


def markdown(rows: list, machine: str, args, failures: list, details: list, skipped: list) -> str:
    lines = [f"{machine}; {args.windows} x {args.seq_len} tokens, {args.masks} masks (2-9 blocks removed; "
             f"fewer below 11 blocks), "
             f"random weights; {args.date}.", "",
             "| shape | dtype | contender | masks/s | useful TFLOP/s | GEMM TFLOP/s | useful / GEMM "
             "| max \\|NLL diff\\| |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['contender']} | {r['masks_per_second']:.3g} | "
                     f"{r['useful_tflops']:.3g} | {r['gemm_tflops']:.3g} | "
                     f"{100 * r['useful_tflops'] / r['gemm_tflops']:.0f} % | {r['max_nll_diff']:.1e} |")
    against = [(d["shape"], d["dtype"], d["pytorch_max_nll_diff_vs_float32"],
                d.get("pytorch_eager_max_nll_diff_vs_float32"),
                {c: r["max_nll_diff_vs_float32"] for c, r in d.get("runs", {}).items()
                 if "max_nll_diff_vs_float32" in r},
                d["float32_masks"]) for d in details if "pytorch_max_nll_diff_vs_float32" in d]
    if against:
        lines += ["", "Against float32 (PyTorch on the same weights in float32, blocks deleted; max |NLL diff| "
                      "over the first masks):", ""]
        for shape, dtype, pytorch, eager, evaluates, count in against:
            eager_text = "" if eager is None else f", with eager attention {eager:.1e}"
            lines.append(f"- {shape} {dtype}, {count} masks: PyTorch in {dtype} {pytorch:.1e}{eager_text}; "
                         + ", ".join(f"`{c}` {v:.1e}" for c, v in evaluates.items()))
    taken = [(d["shape"], d["dtype"], c, r["summary"]["device_memory"]) for d in details
             for c, r in d.get("runs", {}).items() if r.get("summary", {}).get("device_memory")]
    if taken:
        # Arenas never give memory back, so the reading after the run is its peak (near enough).
        lines += ["", "GPU memory taken by `evaluate` (in use after the run less before the model was opened: "
                      "weights, each graph's arena, kept states):", ""]
        lines += [f"- {shape} {dtype} `{c}`: {m['taken_mib'] / 1024:.1f} GiB of {m['total_mib'] / 1024:.0f}"
                  for shape, dtype, c, m in taken]
    timed = [(d["shape"], d["dtype"], c, host_time(r["summary"])) for d in details
             for c, r in d.get("runs", {}).items() if host_time(r.get("summary", {}))]
    if timed:
        lines += ["", "Where `evaluate`'s seconds went (host time inside each kind of graph's runs: runs x ms a run "
                      "(share of the timed seconds); on CUDA with `--overlap` block runs return once queued and the "
                      "head waits for the device):", ""]
        lines += [f"- {shape} {dtype} `{c}`: {text}" for shape, dtype, c, text in timed]
    skipped = skipped + [f"{d['key']}: {c}" for d in details for c in d.get("skipped", [])]
    if skipped:
        lines += ["", "Skipped for time (no row): " + ", ".join(skipped)]
    if failures:
        # Each failure by its last line (the error; the JSON has the command and more).
        lines += ["", "Failed (no row):"] + [f"- {what}: {(why.strip().splitlines() or [''])[-1]}"
                                            for what, why in failures]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--shapes", default="gpu",
                        help=f"comma-separated of {', '.join(SHAPES)}; gpu = {','.join(GPU_SHAPES)}")
    parser.add_argument("--bin", default=str(ROOT / "target" / "debug"),
                        help="folder of the prepare-tokens, sample-masks and evaluate binaries")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-gpu"))
    parser.add_argument("--csv", default=str(ROOT / "docs" / "results" / "gpu-bench.csv"))
    parser.add_argument("--markdown", default=None, help="default: WORK/gpu-bench.md")
    parser.add_argument("--json", default=None, help="default: WORK/gpu-bench.json")
    parser.add_argument("--windows", type=int, default=10)
    # --seq-len as prepare-tokens names it (--length until 2026-12-04, still accepted).
    parser.add_argument("--seq-len", "--length", dest="seq_len", type=int, default=128)
    parser.add_argument("--masks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicate-blocks", choices=["auto", "all", "none"], default="auto",
                        help="copy block 0's random weights into every block (auto: models above 2 GiB of weights, "
                             "REPLICATE_ABOVE_BYTES)")
    parser.add_argument("--gemm-seconds", type=float, default=1.0)
    parser.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads (0 = its default)")
    parser.add_argument("--budget-seconds", type=float, default=450.0,
                        help="shapes not started by then are skipped (reported), so one run ends in time")
    parser.add_argument("--stage-timeout", type=float, default=600.0,
                        help="seconds one stage (one `evaluate` contender) may take before it counts as failed")
    parser.add_argument("--contenders", default="",
                        help="regular expression: the `evaluate` contenders to run besides the default one "
                             "(default: all)")
    parser.add_argument("--shape-contenders", action="append", default=[], metavar="SHAPE=REGEX",
                        help="for one shape (repeatable; SHAPE as --shapes names it, or with '-' and '.' as '_'), "
                             "the contenders to run besides the default one instead of --contenders'")
    parser.add_argument("--deadline-seconds", type=float, default=540.0,
                        help="evaluate contenders (after a shape's first) not started by then are skipped")
    args = parser.parse_args(argv)
    keys = GPU_SHAPES if args.shapes == "gpu" else args.shapes.split(",")
    unknown = [k for k in keys if k not in SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown {', '.join(unknown)} (known: {', '.join(SHAPES)}, gpu)")
    # Checked before any shape: a pattern that does not compile would otherwise fail every shape
    # after its model, export and PyTorch loops.
    try:
        re.compile(args.contenders)
        args.shape_contenders = shape_picks(args.shape_contenders)
    except re.error as error:
        parser.error(f"--contenders {args.contenders!r}: {error}")
    except ValueError as error:
        parser.error(str(error))
    # A shape's own pattern that picks nothing on CUDA but the default contender is a recipe's
    # mistake (a contender renamed since): refused here, where make rehearse-gpu shows it, not
    # found after a GPU run measured the default alone.
    for key, pattern in args.shape_contenders.items():
        if not any(c.name != "evaluate" and pattern.search(c.name)
                   for c in evaluate_contenders("cuda", SHAPES[key][1])):
            parser.error(f"--shape-contenders {key}={pattern.pattern}: picks no contender of a {SHAPES[key][1]} "
                         "shape on CUDA besides the default `evaluate`")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_bench: --device cuda but torch sees no GPU")
    for stage in ("prepare-tokens", "sample-masks", "evaluate"):
        if not (Path(args.bin) / stage).is_file():
            sys.exit(f"gpu_bench: {Path(args.bin) / stage} missing (build the stages, or pass --bin)")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    args.date = datetime.date.today().isoformat()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    machine = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
               else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    log(f"{machine}; torch {torch.__version__}; ORT_DYLIB_PATH={os.environ.get('ORT_DYLIB_PATH', '(unset)')}")

    rows, details, skipped = [], [], []

    def publish():
        """Writes the CSV, the Markdown table and the JSON of what has been measured so far (after
        every contender: a run cut short keeps its figures) and returns the record."""
        failures = [(d["key"], d["error"]) for d in details if "error" in d]
        failures += [(f"{d['key']}: {contender}", why) for d in details
                     for contender, why in d.get("failures", {}).items()]
        write_csv(Path(args.csv), [r for r in rows if (r["shape"], r["dtype"]) in compared(rows)])
        table = markdown(rows, machine, args, failures, [d for d in details if "error" not in d], skipped)
        report.write_atomically(Path(args.markdown) if args.markdown else work / "gpu-bench.md", table)
        record = {"machine": machine, "torch": torch.__version__,
                  "transformers": __import__("transformers").__version__,
                  "ort_library": os.environ.get("ORT_DYLIB_PATH"), "device": args.device, "date": args.date,
                  "seconds": time.perf_counter() - STARTED, "skipped": skipped, "failures": failures,
                  "shapes": details, "rows": rows}
        report.write_atomically(Path(args.json) if args.json else work / "gpu-bench.json", json.dumps(record, indent=2) + "\n")
        return record, table

    for key in keys:
        if time.perf_counter() - STARTED > args.budget_seconds:
            skipped.append(key)
            log(f"{key}: skipped, past --budget-seconds {args.budget_seconds:g}")
            continue
        details.append({"key": key})
        try:
            run_shape(args, key, rows, details[-1], publish)
        except Exception as error:  # noqa: BLE001 - one shape failing must not cost the others
            log(f"{key}: FAILED: {type(error).__name__}: {error}")
            details[-1]["error"] = f"{type(error).__name__}: {error}"
        # After the `except` clause, whose exception's traceback holds the failed shape's frames and
        # with them its model (a 7B shape's weights, and their float32 copy) until the clause ends:
        # released inside it, that memory would stay with PyTorch's allocator beside the next
        # shape's `evaluate`.
        release_cached_memory(args.device)
        publish()

    record, table = publish()
    failures = record["failures"]
    print(table, flush=True)
    log(f"done; {args.csv}" + (f"; skipped: {', '.join(skipped)}" if skipped else "")
        + (f"; {len(failures)} failed" if failures else ""))
    return record


if __name__ == "__main__":
    # Figures of what ran are written either way; a failure is an error all the same.
    sys.exit(1 if main()["failures"] else 0)

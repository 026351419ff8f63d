"""Merge a layered model folder (full or pruned by apply-prune) into one ONNX model for
deployment: input_ids → logits, the embedding, every block of the folder and the LM head in a
single graph. The folder's files are checked against the sha256s its manifest lists first.

Weights are stored inside the file when the model is under 2 GB (protobuf's limit), otherwise
in one external data file beside it (`<name>.<token>.data`, the name the graph gives it). The
merged model is checked against the chained graphs on a random sequence before it is put in
place, so that a kill at any moment leaves the old model or the new one whole (one_file.py).
The check runs as the exporter's does: ONNX Runtime's CPU provider, or onnx.reference for a
bfloat16 folder (the CPU provider has no bfloat16 kernels); on 16 tokens, or on the one length
a Mamba folder's block graphs accept (manifest `fixed_seq_len`).

Usage: python merge_layered.py MODEL_DIR OUT.onnx [--force]
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import compose

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_layered  # noqa: E402
import one_file  # noqa: E402
import outputs  # noqa: E402

PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2
# The check's sequence length where the folder accepts any (manifest without fixed_seq_len).
CHECK_LENGTH = 16


def load(folder: Path, name: str, prefix: str):
    # External data read by hand (export_layered.load_graph): onnx.load refuses weight files
    # with several hard links, which apply-prune and quantize make with --hard-link-source-files.
    return compose.add_prefix(export_layered.load_graph(folder / name, "merge_layered"), prefix)


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, refused naming the file and the problem where it is not a layered
    model's, and after every file it lists is checked against its sha256 (as the Rust stages
    load a folder): a graph or weight file that is missing, truncated or changed is named, where
    the merge would fail on it with a traceback or, worse, merge it and check it against itself."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        parts = [manifest["embedding"], *manifest["blocks"], manifest["head_logits"]]
        graph_files = [part["file"] for part in parts]
        # The rest the merge and its check read, each looked up here once.
        _ = (manifest["embedding"]["output"], manifest["vocab_size"], manifest["dtype"],
             [block["index"] for block in manifest["blocks"]])
        listed = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"no {error}" if isinstance(error, KeyError) else str(error)
        sys.exit(f"merge_layered: error: {path}: not a layered model's manifest ({problem})")
    for file in graph_files:
        if file not in listed:
            sys.exit(f"merge_layered: error: {path}: the graph {file} has no sha256 in `files`")
    for name, expected in listed.items():
        file = folder / name
        if not file.is_file():
            sys.exit(f"merge_layered: error: {folder}: {name}, listed in its manifest, is missing")
        if export_layered.sha256_file(file) != expected:
            sys.exit(f"merge_layered: error: {file} does not have the sha256 its manifest lists (changed, "
                     "truncated or damaged)")
    return manifest


def merge(folder: Path):
    manifest = read_manifest(folder)
    merged = load(folder, manifest["embedding"]["file"], "embed/")
    current = "embed/" + manifest["embedding"]["output"]
    graphs = [(f"block{b['index']:03d}/", b["file"]) for b in manifest["blocks"]]
    graphs.append(("head/", manifest["head_logits"]["file"]))
    for prefix, file in graphs:
        part = load(folder, file, prefix)
        append_part(merged, part, current)
        current = part.graph.output[0].name
    # Keep only the final logits as the model's output.
    logits_output = [o for o in merged.graph.output if o.name == current]
    del merged.graph.output[:]
    merged.graph.output.extend(logits_output)
    # The deployment contract (README, docs/model-format.md): input_ids → logits, not the
    # prefixed names the parts were merged under (embed/input_ids, head/logits).
    rename_value(merged.graph, merged.graph.input[0].name, INPUT_NAME)
    rename_value(merged.graph, current, OUTPUT_NAME)
    return merged, manifest, OUTPUT_NAME


INPUT_NAME, OUTPUT_NAME = "input_ids", "logits"


def append_part(merged, part, current: str):
    """Appends the graph `part` (its names prefixed apart) to `merged`, its first input fed by
    the value `current`, its outputs the merged graph's now. In place, one part at a time:
    onnx.compose.merge_models copied the growing model at every block and ended with
    checker.check_model on it in memory, which refuses a model over protobuf's 2 GB, so no
    7B folder could be merged (the merged file is checked after it is saved, by `check`)."""
    graph, part_graph = merged.graph, part.graph
    opsets = {o.domain: o.version for o in merged.opset_import}
    if merged.ir_version != part.ir_version or any(opsets.get(o.domain, o.version) != o.version
                                                   for o in part.opset_import):
        sys.exit("merge_layered: error: the folder's graphs differ in IR version or in an opset's "
                 f"version ({part_graph.name}): not one export's")
    # A domain only some parts use (com.microsoft, for a fused attention's blocks).
    merged.opset_import.extend(o for o in part.opset_import if o.domain not in opsets)
    rename_value(part_graph, part_graph.input[0].name, current)
    graph.input.extend(part_graph.input[1:])
    graph.node.extend(part_graph.node)
    graph.initializer.extend(part_graph.initializer)
    graph.sparse_initializer.extend(part_graph.sparse_initializer)
    graph.value_info.extend(part_graph.value_info)
    del graph.output[:]
    graph.output.extend(part_graph.output)
    merged.functions.extend(part.functions)
    props = {p.key: p.value for p in merged.metadata_props}
    for entry in part.metadata_props:
        if props.setdefault(entry.key, entry.value) != entry.value:
            sys.exit(f"merge_layered: error: the folder's graphs disagree on the model property {entry.key}")
    onnx.helper.set_model_props(merged, props)


def graphs_within(graph):
    """`graph` and every subgraph of its nodes (If / Loop / Scan bodies), which may read a value
    of the graph around them by name."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from graphs_within(sub)


def rename_value(graph, old: str, new: str):
    """Renames the value `old` of `graph` and of its subgraphs (inputs, outputs, value infos and
    every node that reads or writes it) to `new`, refusing a name they already use."""
    if old == new:
        return
    graphs = list(graphs_within(graph))
    names = {n for g in graphs for node in g.node for n in (*node.input, *node.output)}
    names |= {v.name for g in graphs for v in (*g.input, *g.output, *g.value_info, *g.initializer)}
    if new in names:
        sys.exit(f"merge_layered: error: the merged graph already has a value named {new}")
    for g in graphs:
        for node in g.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]
        for value in (*g.input, *g.output, *g.value_info):
            if value.name == old:
                value.name = new


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, metavar="MODEL_DIR", help="layered model folder (manifest.json)")
    parser.add_argument("out", type=Path, metavar="OUT.onnx", help="the merged .onnx file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    folder, out = args.model, args.out
    if not (folder / "manifest.json").is_file():
        sys.exit(f"merge_layered: error: {folder} has no manifest.json")
    # Before anything is merged: an output that would overwrite or change the folder, or that
    # cannot be written, is refused, and an existing one is replaced only when asked.
    outputs.refuse_overlap("merge_layered", out, [("the model folder", folder)],
                           replaced=[out, *one_file.data_files_of(out)])
    outputs.refuse_unwritable("merge_layered", out, folder=False)
    if out.exists() and not args.force:
        sys.exit(f"merge_layered: error: {out} exists; pass --force to replace it")
    merged, manifest, output_name = merge(folder)
    size = merged.ByteSize()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = one_file.staging_folder(out)
    try:
        staged, staged_data = staging / out.name, None
        if size < PROTOBUF_LIMIT:
            onnx.save(merged, staged)
        else:
            staged_data = staging / one_file.data_name(out)
            onnx.save(merged, staged, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=staged_data.name)
        check(folder, manifest, staged, output_name)
        one_file.put_in_place(staged, staged_data, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = [b["original_index"] for b in manifest["blocks"]]
    print(f"wrote {out}: {len(kept)} blocks (original indices {kept}), input {INPUT_NAME}, output {output_name}")


def check(folder: Path, manifest: dict, merged_path: Path, output_name: str):
    """The merged file against the chained graphs, both run by the same runner
    (export_layered.default_runner), on sequences of a length the folder's graphs accept."""
    runner = export_layered.default_runner(manifest)
    length = manifest.get("fixed_seq_len") or CHECK_LENGTH
    ids = np.random.default_rng(0).integers(0, manifest["vocab_size"], size=(2, length), dtype=np.int64)
    expected, _ = export_layered.run_chain(folder, manifest, ids, runner=runner)
    # The merged graph's only output is `output_name`, the logits (merge keeps no other).
    logits = np.asarray(export_layered.graph_runner(runner)(merged_path, {INPUT_NAME: ids}), dtype=np.float32)
    diff = float(np.abs(logits - expected).max())
    if diff > 1e-4 * max(1.0, float(np.abs(expected).max()) / 10):
        sys.exit(f"merge_layered: error: merged model differs from the chained graphs by {diff:.3e}")
    print(f"check ({runner}, 2x{length} tokens): merged logits match the chained graphs (max |diff| {diff:.2e})")


if __name__ == "__main__":
    main()

"""Merge a layered model folder (full or pruned by apply-prune) into one ONNX model for
deployment: input_ids → logits, the embedding, every block of the folder and the LM head in a
single graph.

Weights are stored inside the file when the model is under 2 GB (protobuf's limit), otherwise
in one external data file beside it (`<name>.<token>.data`, the name the graph gives it). The
merged model is checked against the chained graphs on a random sequence before it is put in
place, so that a kill at any moment leaves the old model or the new one whole (one_file.py).

Usage: python merge_layered.py MODEL_DIR OUT.onnx
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import compose

PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2


def load(folder: Path, name: str, prefix: str):
    # External data is read here rather than by onnx.load, which refuses hard-linked files —
    # and apply-prune hard-links the weights of a pruned folder to the original's.
    model = onnx.load(folder / name, load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = (folder / info["location"]).resolve()
        if folder.resolve() not in location.parents:
            sys.exit(f"merge_layered: error: {folder / name}: external data {info['location']} leaves the folder")
        with open(location, "rb") as handle:
            handle.seek(int(info.get("offset", 0)))
            raw = handle.read(int(info["length"])) if "length" in info else handle.read()
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = raw
    return compose.add_prefix(model, prefix)


def merge(folder: Path):
    manifest = json.loads((folder / "manifest.json").read_text())
    merged = load(folder, manifest["embedding"]["file"], "embed/")
    current = "embed/" + manifest["embedding"]["output"]
    graphs = [(f"block{b['index']:03d}/", b["file"]) for b in manifest["blocks"]]
    head = manifest.get("head_logits")
    if head is None:
        sys.exit(f"merge_layered: error: {folder}/manifest.json has no head_logits graph")
    graphs.append(("head/", head["file"]))
    for prefix, file in graphs:
        part = load(folder, file, prefix)
        part_input = part.graph.input[0].name
        merged = compose.merge_models(merged, part, io_map=[(current, part_input)])
        current = part.graph.output[0].name
    # Keep only the final logits as the model's output.
    outputs = [o for o in merged.graph.output if o.name == current]
    del merged.graph.output[:]
    merged.graph.output.extend(outputs)
    # The deployment contract (README, docs/model-format.md): input_ids → logits, not the
    # prefixed names the parts were merged under (embed/input_ids, head/logits).
    rename_value(merged.graph, merged.graph.input[0].name, INPUT_NAME)
    rename_value(merged.graph, current, OUTPUT_NAME)
    return merged, manifest, OUTPUT_NAME


INPUT_NAME, OUTPUT_NAME = "input_ids", "logits"


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


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    if not (folder / "manifest.json").is_file():
        sys.exit(f"merge_layered: error: {folder} has no manifest.json")
    merged, manifest, output_name = merge(folder)
    size = merged.ByteSize()
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import one_file

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
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import onnxruntime as ort

    import export_layered

    ids = np.random.default_rng(0).integers(0, manifest["vocab_size"], size=(2, 16), dtype=np.int64)
    expected, _ = export_layered.run_chain(folder, manifest, ids)
    session = ort.InferenceSession(str(merged_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([output_name], {INPUT_NAME: ids})
    diff = float(np.abs(logits - expected).max())
    if diff > 1e-4 * max(1.0, float(np.abs(expected).max()) / 10):
        sys.exit(f"merge_layered: error: merged model differs from the chained graphs by {diff:.3e}")
    print(f"check: merged logits match the chained graphs (max |diff| {diff:.2e})")


if __name__ == "__main__":
    main()

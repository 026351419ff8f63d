//! Which files a graph's tensors are stored in: ONNX external data.
//!
//! A tensor stored outside the graph has `data_location = EXTERNAL` and `external_data`
//! entries, among them `location`, the file's path relative to the graph's folder (the
//! exporter's `weights/<hash>.bin`). The graph is read with onnx-protobuf, so only real
//! references count: every tensor ONNX Runtime would load, that is the initializers (dense and
//! sparse) and the tensors in node attributes, in the main graph, its subgraphs and the
//! model's functions.

use std::collections::BTreeSet;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, SparseTensorProto, TensorProto,
};

use crate::ModelError;

/// The `location` entry of a tensor stored as external data; `None` for a tensor stored in
/// the graph.
pub fn external_location(tensor: &TensorProto) -> Option<&str> {
    if tensor.data_location.enum_value() != Ok(DataLocation::EXTERNAL) {
        return None;
    }
    tensor
        .external_data
        .iter()
        .find(|entry| entry.key == "location")
        .map(|entry| entry.value.as_str())
}

/// Every external-data file `model` refers to (relative paths as written in the graph).
pub fn external_data_locations(model: &ModelProto) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    if let Some(graph) = model.graph.as_ref() {
        graph_locations(graph, &mut found);
    }
    for function in &model.functions {
        nodes_locations(&function.node, &mut found);
    }
    found
}

/// [`external_data_locations`] of the ONNX file at `path`.
pub fn graph_external_data(path: &Path) -> Result<BTreeSet<String>, ModelError> {
    Ok(external_data_locations(&read_graph(path)?))
}

/// The ONNX file at `path`, parsed (its external data not read); a file that is not one is
/// [`ModelError::BadGraph`] naming it. Every reader of a graph file reads it here (the
/// quantizer too), so each refuses a file that is not one alike.
pub fn read_graph(path: &Path) -> Result<ModelProto, ModelError> {
    let bytes = layerprune_core::read_input(path).map_err(ModelError::io(path))?;
    let bad = |problem: String| ModelError::BadGraph {
        path: path.to_path_buf(),
        problem,
    };
    // Protobuf decodes no bytes as a message with every field unset, which a reader would
    // take for an ONNX model with nothing in it ("no MatMul to quantize", no external data).
    if bytes.is_empty() {
        return Err(bad("an empty file (0 bytes), not an ONNX model".into()));
    }
    let model = ModelProto::parse_from_bytes(&bytes)
        .map_err(|error| bad(format!("not an ONNX model: {error}")))?;
    // Other bytes can decode too (protobuf keeps fields it does not know): a model is a graph.
    if model.graph.is_none() {
        return Err(bad(
            "not an ONNX model: it holds no graph (another kind of file?)".into(),
        ));
    }
    Ok(model)
}

fn tensor_location(tensor: &TensorProto, found: &mut BTreeSet<String>) {
    if let Some(location) = external_location(tensor) {
        found.insert(location.to_string());
    }
}

fn sparse_locations(tensor: &SparseTensorProto, found: &mut BTreeSet<String>) {
    for part in tensor
        .values
        .as_ref()
        .into_iter()
        .chain(tensor.indices.as_ref())
    {
        tensor_location(part, found);
    }
}

fn graph_locations(graph: &GraphProto, found: &mut BTreeSet<String>) {
    for tensor in &graph.initializer {
        tensor_location(tensor, found);
    }
    for tensor in &graph.sparse_initializer {
        sparse_locations(tensor, found);
    }
    nodes_locations(&graph.node, found);
}

fn nodes_locations(nodes: &[NodeProto], found: &mut BTreeSet<String>) {
    for attribute in nodes.iter().flat_map(|node| node.attribute.iter()) {
        attribute_locations(attribute, found);
    }
}

fn attribute_locations(attribute: &AttributeProto, found: &mut BTreeSet<String>) {
    for tensor in attribute.t.as_ref().into_iter().chain(&attribute.tensors) {
        tensor_location(tensor, found);
    }
    for tensor in attribute
        .sparse_tensor
        .as_ref()
        .into_iter()
        .chain(&attribute.sparse_tensors)
    {
        sparse_locations(tensor, found);
    }
    for graph in attribute.g.as_ref().into_iter().chain(&attribute.graphs) {
        graph_locations(graph, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::StringStringEntryProto;
    use protobuf::{EnumOrUnknown, MessageField};

    fn external(name: &str, location: &str) -> TensorProto {
        let entry = |key: &str, value: &str| StringStringEntryProto {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        };
        TensorProto {
            name: name.into(),
            data_location: EnumOrUnknown::new(DataLocation::EXTERNAL),
            external_data: vec![
                entry("location", location),
                entry("offset", "0"),
                entry("length", "4096"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn locations_are_read_from_every_tensor_of_the_graph() {
        let inline = TensorProto {
            name: "small".into(),
            raw_data: b"weights/not-a-reference.bin".to_vec(),
            ..Default::default()
        };
        // `location` entries of a tensor that is not marked external are not references.
        let mut unmarked = external("unmarked", "weights/unmarked.bin");
        unmarked.data_location = EnumOrUnknown::new(DataLocation::DEFAULT);
        let subgraph = GraphProto {
            initializer: vec![external("inner", "weights/inner.bin")],
            ..Default::default()
        };
        let node = NodeProto {
            op_type: "If".into(),
            attribute: vec![
                AttributeProto {
                    name: "then_branch".into(),
                    g: MessageField::some(subgraph),
                    ..Default::default()
                },
                AttributeProto {
                    name: "value".into(),
                    t: MessageField::some(external("constant", "weights/constant.bin")),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let model = ModelProto {
            graph: MessageField::some(GraphProto {
                initializer: vec![
                    external("a", "weights/ab12cd.bin"),
                    external("b", "weights/ef_34.bin"),
                    external("c", "weights/ab12cd.bin"),
                    inline,
                    unmarked,
                ],
                node: vec![node],
                ..Default::default()
            }),
            ..Default::default()
        };
        let expected: BTreeSet<String> = [
            "weights/ab12cd.bin",
            "weights/constant.bin",
            "weights/ef_34.bin",
            "weights/inner.bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(external_data_locations(&model), expected);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.onnx");
        std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
        assert_eq!(graph_external_data(&path).unwrap(), expected);
        std::fs::write(&path, b"\xff\xff not protobuf").unwrap();
        let error = graph_external_data(&path).unwrap_err();
        assert!(error.to_string().contains("not an ONNX model"), "{error}");
    }

    /// No bytes decode as a model with every field unset, and so can other bytes (protobuf
    /// keeps fields it does not know): read as an ONNX model with nothing in it, a quantizer
    /// said "no MatMul reads a constant float32 weight". Each is refused as no ONNX model,
    /// naming the file.
    #[test]
    fn an_empty_file_or_one_without_a_graph_is_no_onnx_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.onnx");
        std::fs::write(&path, b"").unwrap();
        let error = read_graph(&path).unwrap_err().to_string();
        assert!(
            error.contains("e.onnx")
                && error.contains("an empty file (0 bytes), not an ONNX model"),
            "{error}"
        );
        // Field 20 as a varint: decodes (an unknown field), holds no graph.
        let unknown_field_only = ModelProto::parse_from_bytes(&[0xa0, 0x01, 0x05]).unwrap();
        assert!(unknown_field_only.graph.is_none());
        std::fs::write(&path, [0xa0, 0x01, 0x05]).unwrap();
        let error = read_graph(&path).unwrap_err().to_string();
        assert!(
            error.contains("e.onnx") && error.contains("not an ONNX model: it holds no graph"),
            "{error}"
        );
        let error = graph_external_data(&path).unwrap_err().to_string();
        assert!(error.contains("not an ONNX model"), "{error}");
    }
}

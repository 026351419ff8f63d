//! Post-training weight quantization of the ONNX graphs of a layered model (work in progress).

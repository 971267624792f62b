"""ONNX export of the reference models."""

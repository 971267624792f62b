# TensorRT backend: later

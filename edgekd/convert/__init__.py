"""Graph conversion shared by export, profiling and search: PyTorch to ONNX, ONNX to QDQ INT8."""

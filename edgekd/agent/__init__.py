"""The on-device agent: an authenticated HTTP service that profiles submitted ONNX models on
the device it runs on (DESIGN.md section 5), and the client the host uses to reach it."""

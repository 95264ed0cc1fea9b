"""Export stages: a bmcell checkpoint → TorchScript, ExecuTorch, ONNX and Core ML artefacts, checked for parity."""

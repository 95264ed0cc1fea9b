"""Artefacts on ARM64 kernels: an aarch64 environment built from the package registries, and runners that execute
ExecuTorch and ONNX Runtime artefacts in it under qemu-aarch64 for parity."""

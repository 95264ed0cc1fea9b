"""ExecuTorch and ONNX Runtime artefacts run on ARM64 kernels: the aarch64 runtimes under qemu-aarch64, one CPU
model at a time, on the same float32 inputs as on this machine."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from export.arm64.environment import ORT_RUNNER, Arm64Environment, emulated, output_line
from export.formats.base import ExportError, ExportFormat
from export.formats.onnx import INPUT, OUTPUT

# The CPU models parity runs by default, and what each stands for. qemu gives a program the HWCAP bits of the model,
# and XNNPACK and ONNX Runtime pick their kernels from them.
CPU_PROFILES = {
    "cortex-a53": "Armv8.0-A, NEON only (no dot product): older and cheap phones",
    "max": "every extension qemu emulates (dot product, i8mm, fp16, bf16, SVE, SME): recent phones",
}
EMULATED_FAMILIES = ("executorch", "onnx")
# Instruction counts run on the host's qemu 7.2 (the one that loads plugins), which emulates SME wrongly: "max" is
# counted with SME off.
COUNTED_CPUS = {"cortex-a53": "cortex-a53", "max": "max,sme=off"}
COUNTED_FAMILIES = ("executorch",)  # qemu 7.2 segfaults importing onnxruntime 1.32


def runs_emulated(fmt: ExportFormat) -> bool:
    """Whether the format's runtime has an aarch64 runner here."""
    return fmt.family in EMULATED_FAMILIES


def _command(env: Arm64Environment, fmt: ExportFormat, path: Path, images: Path, count: int, output: Path,
             threads: int) -> list[str]:
    """The aarch64 program and arguments that run one artefact."""
    common = [str(path), str(images), str(count), str(output), str(threads)]
    if fmt.family == "executorch":
        return [str(env.executorch_runner), *common]
    return [str(env.python), "-s", str(ORT_RUNNER), *common, INPUT, OUTPUT]


def _run(env: Arm64Environment, fmt: ExportFormat, path: Path, images: np.ndarray, cpu: str, threads: int,
         counted: bool = False) -> tuple[np.ndarray, str]:
    """Outputs and stderr of the artefact on images under emulation; an ExportError names a failure."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bmcell-arm64-") as tmp:
        inputs, outputs = Path(tmp) / "images.f32", Path(tmp) / "outputs.f32"
        images.tofile(inputs)
        try:
            done = emulated(env, cpu, _command(env, fmt, Path(path).resolve(), inputs, len(images), outputs, threads),
                            counted)
        except (subprocess.SubprocessError, OSError) as error:
            raise ExportError(f"{fmt.name} on arm64 {cpu}: {error}") from error
        if done.returncode != 0 or not outputs.is_file():
            raise ExportError(f"{fmt.name} on arm64 {cpu} failed: {output_line(done.stderr) or done.returncode}")
        values = np.fromfile(outputs, dtype=np.float32)
    if values.size % len(images):
        raise ExportError(f"{fmt.name} on arm64 {cpu}: {values.size} output values for {len(images)} images")
    return values.reshape(len(images), -1), done.stderr


def run_emulated(env: Arm64Environment, fmt: ExportFormat, path: Path, images: np.ndarray, cpu: str,
                 threads: int = 1) -> np.ndarray:
    """The artefact's outputs on images (N x 3 x H x W float32) on the ARM64 kernels qemu's CPU model selects."""
    if not runs_emulated(fmt):
        raise ExportError(f"{fmt.name}: no aarch64 runner for {fmt.runtime}")
    return _run(env, fmt, path, images, cpu, threads)[0]


def instructions_per_inference(env: Arm64Environment, fmt: ExportFormat, path: Path, image: np.ndarray,
                               cpu: str) -> int:
    """Guest instructions of one steady-state batch-1 inference on one thread (the count over three runs of the
    image minus the count over one, halved: loading and the first run's set-up cancel out); it repeats to about
    1e-4 (tens to hundreds of instructions in millions: the thread pool's start and stop still vary)."""
    if fmt.family not in COUNTED_FAMILIES:
        raise ExportError(f"{fmt.name}: not counted (the qemu that loads plugins cannot run {fmt.runtime})")
    counts = []
    for repeats in (1, 3):
        stderr = _run(env, fmt, path, np.repeat(image[None], repeats, axis=0), COUNTED_CPUS[cpu], 1, True)[1]
        found = [line.split()[1] for line in stderr.splitlines() if line.startswith("bmcell-instructions ")]
        if not found:
            raise ExportError(f"{fmt.name} on arm64 {cpu}: the counting plugin printed no count")
        counts.append(int(found[-1]))
    return (counts[1] - counts[0]) // 2

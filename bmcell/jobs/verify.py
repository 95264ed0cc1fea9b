"""Parity of an export folder against its checkpoint, the step `bmcell export` and `bmcell parity` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bmcell.core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from export.arm64.emulated import CPU_PROFILES, runs_emulated
from export.arm64.environment import Arm64Error, cpu_models, ready_environment
from export.formats import FORMATS
from export.manifest import read_manifest
from export.parity import PARITY_MD, Arm64Parity, run_parity
from export.pipeline import validation_set
from export.samples import ExportImages


def source_checkpoint(export_dir: Path, checkpoint: Path | None) -> Checkpoint:
    """The checkpoint an export folder was made from (or the one given), refusing one with other weights."""
    manifest = read_manifest(export_dir)
    loaded = load_checkpoint(checkpoint or Path(manifest["source_checkpoint"]["path"]))
    if loaded.weights_sha256 != manifest["source_checkpoint"]["weights_sha256"]:
        raise CheckpointError(f"{loaded.json_path} is not the checkpoint {export_dir} was exported from "
                              "(weights differ)")
    return loaded


ARCHES = ("native", "arm64")


def arm64_parity(arch: str, cpus: list[str] | None, artefacts: list[str] | None = None,
                 threads: int = 1) -> Arm64Parity | None:
    """The ARM64 rows --arch asks for (None for native only), after checking the environment is built, knows every
    CPU model, and that each artefact named has an aarch64 runner."""
    if arch not in ARCHES:
        raise Arm64Error(f"unknown --arch {arch!r}; choose from {', '.join(ARCHES)}")
    if arch == "native":
        return None
    env = ready_environment()
    known = cpu_models(env)
    unknown = [cpu for cpu in cpus or [] if cpu not in known]
    if unknown:
        raise Arm64Error(f"unknown --cpu {', '.join(unknown)}; qemu-aarch64 emulates {', '.join(known)}")
    runnable = [name for name, fmt in FORMATS.items() if runs_emulated(fmt)]
    wrong = [name for name in artefacts or [] if name not in runnable]
    if wrong:
        raise Arm64Error(f"no aarch64 runner for --arm64-artefact {', '.join(wrong)}; choose from {', '.join(runnable)}")
    return Arm64Parity(env, tuple(cpus or CPU_PROFILES), threads, tuple(artefacts or ()))


def verify_export(export_dir: Path, checkpoint: Checkpoint | None, images: ExportImages | None,
                  say: Callable[[str], None], arm64: Arm64Parity | None = None) -> dict:
    """Parity of every artefact on the golden set and, given the checkpoint and its images, validation accuracy;
    with arm64, the ExecuTorch and ONNX Runtime artefacts on ARM64 kernels too."""
    validation = None
    if checkpoint is not None and images is not None:
        say(f"reference accuracy on {len(images.validation)} validation images ...")
        validation = validation_set(checkpoint, images)
    if arm64 is not None:
        say(f"and on ARM64 kernels under qemu-aarch64 ({', '.join(arm64.cpus)}): slow, minutes per artefact")
    report = run_parity(export_dir, validation, say, arm64)
    say(f"report: {export_dir / PARITY_MD}")
    return report

"""`bmcell export CKPT --target ...`: mobile artefacts with embedded labels, a manifest, and a parity check."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.cli.parity import ARCH, ARM64_ARTEFACTS, CPUS, exit_on_failure
from bmcell.core.checkpoint import load_checkpoint
from bmcell.jobs.release import default_checkpoint
from bmcell.jobs.verify import arm64_parity, verify_export
from export.apps import app_target, check_app, install_bundle
from export.pipeline import export_checkpoint
from export.samples import DEFAULT_CALIBRATION, export_images
from export.targets import select_formats


@reports_errors
def export(
    checkpoint: Optional[Path] = typer.Argument(None, help="Run folder (uses best), NAME.json or NAME.safetensors "
                                                  "(default: the released model in models/)."),
    target: list[str] = typer.Option(["all"], help="android, ios, onnx, web, torchscript or all; repeat for several."),
    quantize: str = typer.Option("all", help="none: float only; int8: quantised only; all: both."),
    calib: int = typer.Option(DEFAULT_CALIBRATION, min=1, help="Training images used to calibrate int8 models (a "
                              "release's sample set holds this many)."),
    golden: int = typer.Option(64, help="Validation images in the golden set (at least 64)."),
    out: Optional[Path] = typer.Option(None, help="Export folder (default: <run folder>/export)."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder (default: the one the checkpoint was trained on, "
                                        "else a released model's own sample set)."),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Run `bmcell parity` on the result."),
    app: Optional[Path] = typer.Option(None, help="After export, install the model --app-precision picks into this demo "
                                       "app (android_demo, ios_demo or web_demo, per the one app --target) as "
                                       "bmcell_model/, once it passed parity."),
    app_precision: str = typer.Option("auto", help="Model --app installs: int8, float, or auto = int8 if it was "
                                      "exported, passed parity and gives the float model's answers on every golden "
                                      "image, else float (executorch-fp32/coreml-fp16/onnx-fp32); with --arch arm64, "
                                      "on ARM64 kernels too."),
    arch: str = ARCH,
    cpu: Optional[list[str]] = CPUS,
    arm64_artefact: Optional[list[str]] = ARM64_ARTEFACTS,
    verbose: bool = VERBOSE,
) -> None:
    """Export a checkpoint for phones: ExecuTorch/TorchScript (android), Core ML (ios), ONNX (onnx), fp and int8."""
    ckpt = load_checkpoint(checkpoint or default_checkpoint())
    arm64 = arm64_parity(arch, cpu, arm64_artefact) if parity else None
    formats = select_formats(target, quantize)
    kind = None
    if app is not None:
        kind = app_target(target)
        check_app(kind, app, app_precision)
    out = out or ckpt.run_dir / "export"
    images = export_images(ckpt, data, calib, golden, console.print)
    console.print(f"exporting {ckpt.json_path} -> {out}: {', '.join(f.name for f in formats)}")
    with other_libraries_logged(out.parent, verbose):  # out itself is created whole at the end
        manifest = export_checkpoint(ckpt, formats, out, images, console.print)
        console.print(f"wrote {manifest}")
        report = verify_export(out, ckpt, images, console.print, arm64) if parity else None
    if kind is not None:  # the artefact --app-precision picks, once it passed parity; others may have failed
        console.print(f"installed {install_bundle(out, kind, app, app_precision)}")
    if report is not None:
        exit_on_failure(report)

"""`bmcell compare --data DIR --archs a,b,c`: one protocol, one split, every backbone → one table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.core.config import resolve_config
from bmcell.jobs.compare import COMPARE_MD, compare_architectures

PAPER_ARCHS = "mobilevit_xs,resnet50,densenet121,mobilenet_v2,mobilenet_v3_large"


@reports_errors
def compare(
    data: Path = typer.Option(..., help="Class-per-folder image dataset."),
    archs: str = typer.Option(PAPER_ARCHS, help="Comma-separated architectures (see `bmcell info --list`)."),
    out: Path = typer.Option(Path("runs/compare"), help="Folder: one run per arch, compare.json and compare.md."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON of training settings shared by every arch."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: 200)."),
    image_size: Optional[int] = typer.Option(None, help="Square input side (default: 256)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: 128)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: 1e-3)."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up epochs (default: 5)."),
    label_map: Optional[str] = typer.Option(None, help="identity, pbc-granulocytic, aml-fab8, or a YAML/JSON file."),
    augment: Optional[str] = typer.Option(None, help="cells or other-labs (default: cells)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split and of training (default: 0)."),
    workers: Optional[int] = typer.Option(None, help="Data-loading processes."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N (default: auto)."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also export int8 artefacts and time the fastest."),
    calib: int = typer.Option(256, min=1, help="Training images that calibrate the int8 artefacts."),
    runs: int = typer.Option(50, min=10, help="Timed batch-1 runs per latency figure."),
    verbose: bool = VERBOSE,
) -> None:
    """Train every backbone with one protocol on one split (resuming unfinished runs), then tabulate accuracy,
    balanced accuracy, macro-F1, parameters, FLOPs and CPU latency of eager PyTorch and of the best int8 artefact."""
    overrides = {"epochs": epochs, "image_size": image_size, "batch_size": batch_size, "lr": lr,
                 "warmup_epochs": warmup_epochs, "label_map": label_map, "augment": augment, "seed": seed,
                 "workers": workers, "device": device}
    base = resolve_config(config, overrides)
    names = [a.strip() for a in archs.split(",") if a.strip()]
    with other_libraries_logged(out, verbose):
        compare_architectures(data, names, out, base, int8, calib, runs, console.print)
    console.print((out / COMPARE_MD).read_text())

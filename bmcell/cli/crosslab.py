"""`bmcell crosslab [RUN] --data DIR...`: how a model holds up on other labs' images, one row per folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.crosslab import (
    CROSSLAB_JSON,
    CROSSLAB_MD,
    MAX_NON_CELL,
    crosslab_report,
    markdown_table,
    read_class_map,
    report_folder,
)
from bmcell.core.device import select_device
from bmcell.jobs.release import MODELS_DIR, default_checkpoint


@reports_errors
def crosslab(
    checkpoint: Optional[Path] = typer.Argument(None, help="Run folder (uses best), NAME.json or NAME.safetensors "
                                                "(default: the released model in models/)."),
    data: list[Path] = typer.Option(..., help="Another lab's class-per-folder images; repeatable."),
    class_map: Optional[Path] = typer.Option(None, help="YAML/JSON 'folder class: model class' (null leaves one "
                                             "out) for names the built-in synonyms do not know."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <run folder>/crosslab; for a released "
                                       "model, whose folder is never written to: ./crosslab-<release name>). An "
                                       "earlier report there is replaced whole."),
    non_cell: int = typer.Option(160, min=0, help=f"Synthesised non-cell images to measure abstention on (0: none; "
                                 f"at most {MAX_NON_CELL:,})."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    workers: Optional[int] = typer.Option(None, help="Data-loading processes (default: CPU count, at most 8)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Evaluate a model on other labs' folders: accuracy, balanced accuracy, macro-F1, recall per class, the
    majority-class baseline, accuracy over the folder's classes, answered share and accuracy of the answered
    (crosslab.md/.json, a confusion matrix and predictions per folder)."""
    ckpt = load_checkpoint(checkpoint or default_checkpoint())
    out = report_folder(ckpt.run_dir, out, MODELS_DIR)
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    report = crosslab_report(ckpt, data, out, select_device(device), read_class_map(class_map) if class_map else None,
                             non_cell, batch_size, workers, lambda m: console.print(f"[yellow]warning:[/] {m}"))
    console.print("\n".join(markdown_table(report)), highlight=False)
    if report["confidence"] is None:
        console.print("[yellow]note:[/] this checkpoint has no calibrated confidence, so nothing is marked uncertain "
                      "(models trained with this version have one)")
    console.print(f"reports in {out}: {CROSSLAB_MD}, {CROSSLAB_JSON}, <folder>/confusion.png, confusion.csv, "
                  "predictions.csv")

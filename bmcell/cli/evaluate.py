"""`bmcell evaluate CKPT`: metrics, per-class table and confusion matrix on the validation split or a folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bmcell.cli.common import console, reports_errors
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.device import select_device
from bmcell.core.evaluation import evaluate_checkpoint, records_for, report_summary


@reports_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses best), NAME.json or NAME.safetensors."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder (default: the one the checkpoint was trained on)."),
    split: str = typer.Option("val", help="val: the checkpoint's own validation split; all: every image in --data."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <run folder>/eval-<split>)."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    workers: Optional[int] = typer.Option(None, help="Data-loading processes (default: CPU count, at most 8)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Evaluate a checkpoint: accuracy, balanced accuracy, macro-F1, per class, confusion matrix (JSON, MD, CSV, PNG)."""
    ckpt = load_checkpoint(checkpoint)
    data = ckpt.data_folder(data)
    records = records_for(ckpt, data, split, lambda m: console.print(f"[yellow]warning:[/] {m}"))
    out = out or ckpt.run_dir / f"eval-{split}"
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    report = evaluate_checkpoint(ckpt, records, data, out, select_device(device), batch_size, workers)
    table = Table("class", "precision", "recall", "F1", "support", title=f"{ckpt.arch} - {split} split")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    console.print(table)
    console.print(report_summary(report))
    console.print(f"reports in {out}: report.json, report.md, confusion.csv, confusion.png, predictions.csv")

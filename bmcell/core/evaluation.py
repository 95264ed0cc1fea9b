"""Evaluate a checkpoint on its validation split or on a whole folder, and write the reports."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from bmcell.core.batches import make_loader
from bmcell.core.checkpoint import Checkpoint
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.folder import DatasetError, ImageRecord
from bmcell.core.data.label_maps import LabelMap
from bmcell.core.data.prepare import load_prepared, scan_folder
from bmcell.core.data.transforms import eval_transform
from bmcell.core.engine import evaluate_logits, predict_logits
from bmcell.core.fileio import atomic_write_json
from bmcell.core.reports import markdown_report, plot_confusion, write_confusion_csv

SPLITS = ("val", "all")


def records_for(checkpoint: Checkpoint, data: Path, split: str, warn: Callable[[str], None]) -> list[ImageRecord]:
    """The images to evaluate: the checkpoint's validation split, or every usable image of a folder."""
    if split == "val":
        return load_prepared(data, checkpoint.run_dir, checkpoint.split_sha256).val
    if split != "all":
        raise DatasetError(f"unknown split {split!r}; use one of {SPLITS}")
    records, classes = scan_folder(data, LabelMap.from_dict(checkpoint.label_map), False, warn)
    unknown = sorted(set(classes) - set(checkpoint.classes))
    if unknown:
        raise DatasetError(f"{data} has classes the checkpoint does not know: {unknown}; "
                           f"it was trained on {checkpoint.classes}")
    return records


def checkpoint_outputs(checkpoint: Checkpoint, records: list[ImageRecord], data: Path, device: torch.device,
                       batch_size: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (logits, then novelty when the checkpoint has it) and targets of the records through the
    checkpoint's evaluation preprocessing."""
    dataset = CellImageDataset(data, records, checkpoint.classes,
                               eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std))
    model = checkpoint.scored_model().to(device, memory_format=torch.channels_last)
    return predict_logits(model, make_loader(dataset, batch_size, workers), device)


def checkpoint_logits(checkpoint: Checkpoint, records: list[ImageRecord], data: Path, device: torch.device,
                      batch_size: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets of the records through the checkpoint's evaluation preprocessing."""
    outputs, targets = checkpoint_outputs(checkpoint, records, data, device, batch_size, workers)
    return outputs[:, :len(checkpoint.classes)], targets


@torch.no_grad()
def unit_outputs(checkpoint: Checkpoint, inputs: torch.Tensor, device: torch.device) -> np.ndarray:
    """float32 outputs of Nx3xSxS RGB inputs in [0, 1] through the checkpoint's own normalisation and network,
    batches of 32: the logits, then the novelty column when the checkpoint has novelty statistics."""
    model = checkpoint.scored_model().to(device).float()
    mean, std = checkpoint.mean, checkpoint.std
    return torch.cat([model(TF.normalize(batch.to(device), mean, std)).float().cpu()
                      for batch in inputs.split(32)]).numpy()


def unit_logits(checkpoint: Checkpoint, inputs: torch.Tensor, device: torch.device) -> np.ndarray:
    """The logits of unit_outputs."""
    return unit_outputs(checkpoint, inputs, device)[:, :len(checkpoint.classes)]


def evaluate_checkpoint(checkpoint: Checkpoint, records: list[ImageRecord], data: Path, out: Path,
                        device: torch.device, batch_size: int, workers: int) -> dict:
    """Run the model over the records and write report.json, report.md, confusion.csv/png and predictions.csv."""
    logits, targets = checkpoint_logits(checkpoint, records, data, device, batch_size, workers)
    report = evaluate_logits(logits, targets, checkpoint.classes)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{checkpoint.arch} on {data} ({len(records)} images)"
    atomic_write_json(out / "report.json", {"checkpoint": str(checkpoint.json_path), "data": str(data), **report})
    (out / "report.md").write_text(markdown_report(report, title), encoding="utf-8")
    write_confusion_csv(report["confusion_matrix"], checkpoint.classes, out / "confusion.csv")
    plot_confusion(report["confusion_matrix"], checkpoint.classes, out / "confusion.png", title)
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true", "predicted", "probability"])
        for record, row in zip(records, probabilities):
            writer.writerow([record.path, record.label, checkpoint.classes[row.argmax()], f"{row.max():.6f}"])
    return report


def report_summary(report: dict) -> str:
    """The headline metrics on one line."""
    return (f"accuracy {report['accuracy']:.4f}  balanced accuracy {report['balanced_accuracy']:.4f}  "
            f"macro-F1 {report['macro_f1']:.4f}  ({report['images']} images)")


"""A training run's folder: its configuration, split, metrics history, checkpoint metadata, and the state that lets
a run continue after a crash."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bmcell.core.checkpoint import RESUME_FILE, CheckpointError, save_checkpoint, save_resume_state
from bmcell.core.confidence import Confidence
from bmcell.core.config import TrainConfig, save_config
from bmcell.core.data.label_maps import resolve_label_map
from bmcell.core.data.prepare import SPLIT_FILE, PreparedData, load_prepared, prepare_data
from bmcell.core.fileio import atomic_write_bytes
from bmcell.core.models import get_arch
from bmcell.core.reports import plot_curves

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CACHE_DIR = "cache"


@dataclass
class RunState:
    """What the loop needs to continue: finished epochs, optimizer steps and the best score so far."""

    epoch: int = 0
    step: int = 0
    best_macro_f1: float = -1.0
    best_epoch: int = 0


def read_history(run_dir: Path, up_to_epoch: int) -> list[dict]:
    """Metrics of finished epochs, dropping any line written after the resumed checkpoint."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row["epoch"] <= up_to_epoch]


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically and redraw the curves."""
    atomic_write_bytes(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history).encode())
    plot_curves(history, run_dir / "curves.png")


def checkpoint_meta(config: TrainConfig, data: PreparedData, epoch: int, report: dict, state: RunState,
                     confidence: Confidence) -> dict:
    """Metadata stored beside the weights: everything needed to rebuild, preprocess and audit the model."""
    arch = get_arch(config.arch)
    return {
        "arch": config.arch, "classes": data.classes, "num_classes": len(data.classes),
        "image_size": config.image_size, "mean": list(arch.mean), "std": list(arch.std),
        "input_norm": config.input_norm, "confidence": confidence.to_dict(),
        "preprocessing": {"resize": "shorter side to image_size, bilinear, antialiased", "crop": "centre, square",
                          "scale": "uint8 / 255 to [0, 1]", "normalize": "(x - mean) / std", "channels": "RGB"},
        "label_map": data.label_map.to_dict(), "data": str(data.root),
        "split": {"file": "split.json", "sha256": data.split_sha256, "train": len(data.train), "val": len(data.val)},
        "config": config.to_dict(), "epoch": epoch, "best_epoch": state.best_epoch,
        "metrics": {k: v for k, v in report.items() if k != "loss"} | {"val_loss": report["loss"]},
    }


def start_or_resume(config: TrainConfig, resume: bool, warn: Callable[[str], None]) -> tuple[PreparedData, bool]:
    """Prepare a new run folder, or reopen an existing one; returns the data and whether an epoch can be resumed."""
    run_dir = Path(config.out)
    started = (run_dir / CONFIG_FILE).is_file() and (run_dir / SPLIT_FILE).is_file()
    if resume and not started:
        raise CheckpointError(f"--resume: {run_dir} holds no started run (config.json and split.json); "
                              "start without --resume")
    if not resume and (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume:
        return load_prepared(Path(config.data), run_dir), (run_dir / RESUME_FILE).is_file()
    run_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(Path(config.data), resolve_label_map(config.label_map), run_dir, config.seed,
                        config.val_fraction, config.strict, warn, Path(config.split) if config.split else None)
    save_config(config, run_dir / CONFIG_FILE)
    return data, False


def save_epoch(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: RunState,
                history: list[dict], is_best: bool, meta: dict) -> None:
    """Write the best (when it is) and last checkpoints, the metrics and curves, then the resume state."""
    if is_best:
        save_checkpoint(run_dir, "best", model, meta)
    save_checkpoint(run_dir, "last", model, meta)
    write_history(run_dir, history)
    save_resume_state(run_dir, model, optimizer, state.__dict__)

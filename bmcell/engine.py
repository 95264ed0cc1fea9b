"""The training loop: train_one_epoch(), predict_logits() and fit(), which resumes after a crash."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bmcell.checkpoint import (RESUME_FILE, CheckpointError, load_resume_state, save_checkpoint,
                               save_resume_state)
from bmcell.config import ConfigError, TrainConfig, save_config
from bmcell.data.dataset import CellImageDataset
from bmcell.data.prepare import SPLIT_FILE, PreparedData, class_counts, load_prepared, prepare_data
from bmcell.data.label_maps import resolve_label_map
from bmcell.data.transforms import eval_transform, train_transform
from bmcell.fileio import atomic_write_bytes
from bmcell.metrics import classification_report, confusion_matrix
from bmcell.models import build_model, get_arch, load_pretrained
from bmcell.reports import plot_curves

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


def select_device(spec: str) -> torch.device:
    """The device to run on: CUDA when present (for 'auto'), else CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(spec)


def make_loader(dataset: Dataset, batch_size: int, workers: int, sampler=None, train: bool = False) -> DataLoader:
    """A DataLoader; training batches drop a ragged tail so batch norm never sees a single image."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=train and len(dataset) > batch_size)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and normalisation weights."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0, as a multiple of the base learning rate."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _progress(console: Console) -> Progress:
    """A progress bar with loss, images/s and ETA."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
                    TimeRemainingColumn(), console=console, transient=True)


def _progress_line(task) -> str:
    """A plain-text progress line for output that is not a terminal."""
    eta = f"{task.time_remaining:.0f} s" if task.time_remaining is not None else "?"
    return (f"  {task.description}: batch {task.completed:.0f}/{task.total:.0f}  loss {task.fields['loss']:.4f}  "
            f"{task.fields['ips']:.0f} img/s  ETA {eta}")


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                    set_lr: Callable[[], float], progress: Progress, description: str) -> dict:
    """One pass over the training loader; returns mean loss, accuracy and throughput."""
    model.train()
    task = progress.add_task(description, total=len(loader), loss=float("nan"), ips=0.0)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for batch, (images, targets) in enumerate(loader, start=1):
        lr = set_lr()
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device):
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} (lr {lr:.2e}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        progress.update(task, advance=1, loss=loss_sum / seen, ips=seen / (time.perf_counter() - start))
        if not progress.console.is_terminal and batch % max(1, len(loader) // 10) == 0:
            progress.console.print(_progress_line(progress.tasks[-1]))  # logs and CI get no live bar
    progress.remove_task(task)
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen, "images_per_s": seen / seconds,
            "train_seconds": seconds}


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits and targets for every batch of a loader."""
    model.eval()
    task = progress.add_task("evaluate", total=len(loader), loss=float("nan"), ips=0.0) if progress else None
    logits, targets = [], []
    for images, batch_targets in loader:
        with _autocast(device):
            batch_logits = model(images.to(device, memory_format=torch.channels_last))
        logits.append(batch_logits.float().cpu())
        targets.append(batch_targets)
        if progress:
            progress.update(task, advance=1)
    if progress:
        progress.remove_task(task)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def evaluate_logits(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """Cross-entropy loss plus every metric of classification_report."""
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets).long()).item()
    report = classification_report(confusion_matrix(targets, logits.argmax(1), len(classes)), classes)
    return {"loss": loss, **report}


@dataclass
class RunState:
    """What the loop needs to continue: finished epochs, optimizer steps and the best score so far."""

    epoch: int = 0
    step: int = 0
    best_macro_f1: float = -1.0
    best_epoch: int = 0


def _read_history(run_dir: Path, up_to_epoch: int) -> list[dict]:
    """Metrics of finished epochs, dropping any line written after the resumed checkpoint."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row["epoch"] <= up_to_epoch]


def _write_history(run_dir: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically and redraw the curves."""
    atomic_write_bytes(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history).encode())
    plot_curves(history, run_dir / "curves.png")


def _checkpoint_meta(config: TrainConfig, data: PreparedData, epoch: int, report: dict, state: RunState) -> dict:
    """Metadata stored beside the weights: everything needed to rebuild, preprocess and audit the model."""
    arch = get_arch(config.arch)
    return {
        "arch": config.arch, "classes": data.classes, "num_classes": len(data.classes),
        "image_size": config.image_size, "mean": list(arch.mean), "std": list(arch.std),
        "preprocessing": {"resize": "shorter side to image_size, bilinear, antialiased", "crop": "centre, square",
                          "scale": "uint8 / 255 to [0, 1]", "normalize": "(x - mean) / std", "channels": "RGB"},
        "label_map": data.label_map.to_dict(), "data": str(data.root),
        "split": {"file": "split.json", "sha256": data.split_sha256, "train": len(data.train), "val": len(data.val)},
        "config": config.to_dict(), "epoch": epoch, "best_epoch": state.best_epoch,
        "metrics": {k: v for k, v in report.items() if k != "loss"} | {"val_loss": report["loss"]},
    }


def _start_or_resume(config: TrainConfig, resume: bool, warn: Callable[[str], None]) -> tuple[PreparedData, bool]:
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
                        config.val_fraction, config.strict, warn)
    save_config(config, run_dir / CONFIG_FILE)
    return data, False


def fit(config: TrainConfig, resume: bool = False, console: Console | None = None) -> Path:
    """Train (or continue training) per config; writes last/best checkpoints, metrics and curves; returns best.json."""
    console = console or Console(soft_wrap=True)
    run_dir = Path(config.out)
    data, from_state = _start_or_resume(config, resume, lambda m: console.print(f"[yellow]warning:[/] {m}"))
    device = select_device(config.device)
    model = build_model(config.arch, len(data.classes))
    if config.weights and not from_state:
        skipped = load_pretrained(model, Path(config.weights))
        console.print(f"loaded {config.weights}" + (f" (new classifier layers: {skipped})" if skipped else ""))
    model.to(device, memory_format=torch.channels_last)  # faster on CUDA and on CPU (oneDNN) alike
    optimizer = make_optimizer(model, config)
    state = RunState(**load_resume_state(run_dir, model, optimizer)) if from_state else RunState()
    history = _read_history(run_dir, state.epoch)

    arch = get_arch(config.arch)
    augmentation = train_transform(config.image_size, arch.mean, arch.std, config.augment)
    train_set = CellImageDataset(data.root, data.train, data.classes, augmentation)
    val_set = CellImageDataset(data.root, data.val, data.classes, eval_transform(config.image_size, arch.mean, arch.std))
    workers = config.workers if config.workers is not None else min(8, os.cpu_count() or 1)
    batches_per_epoch = max(1, len(train_set) // config.batch_size) if len(train_set) > config.batch_size else 1
    total_steps = batches_per_epoch * config.epochs
    warmup_steps = round(min(config.warmup_epochs, 0.1 * config.epochs) * batches_per_epoch)

    def set_lr() -> float:
        lr = config.lr * lr_factor(state.step, total_steps, warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        state.step += 1
        return lr

    console.print(f"{'resuming' if resume else 'training'} {config.arch} on {device} | {len(data.classes)} classes | "
                  f"train {len(train_set)} / val {len(val_set)} images | per class (train) "
                  f"{class_counts(data.train, data.classes)} | epochs {state.epoch + 1}..{config.epochs} -> {run_dir}")
    for epoch in range(state.epoch + 1, config.epochs + 1):
        torch.manual_seed(config.seed * 100_003 + epoch)
        sampler = None
        if config.balanced_sampler:
            from torchsampler import ImbalancedDatasetSampler

            sampler = ImbalancedDatasetSampler(train_set, labels=train_set.get_labels())
        with _progress(console) as progress:
            train = train_one_epoch(model, make_loader(train_set, config.batch_size, workers, sampler, train=True),
                                    optimizer, device, set_lr, progress, f"epoch {epoch}/{config.epochs}")
            logits, targets = predict_logits(model, make_loader(val_set, config.batch_size, workers), device, progress)
        report = evaluate_logits(logits, targets, data.classes)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **train, "val_loss": report["loss"],
               "val_accuracy": report["accuracy"], "val_balanced_accuracy": report["balanced_accuracy"],
               "val_macro_f1": report["macro_f1"]}
        history.append(row)
        state.epoch = epoch
        is_best = report["macro_f1"] > state.best_macro_f1
        if is_best:
            state.best_macro_f1, state.best_epoch = report["macro_f1"], epoch
            save_checkpoint(run_dir, "best", model, _checkpoint_meta(config, data, epoch, report, state))
        save_checkpoint(run_dir, "last", model, _checkpoint_meta(config, data, epoch, report, state))
        _write_history(run_dir, history)
        save_resume_state(run_dir, model, optimizer, state.__dict__)
        console.print(f"epoch {epoch}/{config.epochs}  loss {train['train_loss']:.4f}  "
                      f"train acc {train['train_accuracy']:.3f}  val loss {report['loss']:.4f}  "
                      f"val acc {report['accuracy']:.3f}  bal acc {report['balanced_accuracy']:.3f}  "
                      f"macro-F1 {report['macro_f1']:.3f}  {train['images_per_s']:.0f} img/s"
                      + ("  [green]best[/]" if is_best else ""))
    return run_dir / "best.json"

"""The training loop, read top to bottom: train_step(), train_one_epoch(), predict_logits() and fit(), which resumes
after a crash (the run folder's files: run_folder.py; where batches come from: batches.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bmcell.core.batches import make_batches, per_rank_batch, resolve_data_path
from bmcell.core.checkpoint import load_resume_state
from bmcell.core.confidence import fit_confidence
from bmcell.core.config import TrainConfig
from bmcell.core.data.noncell import OutlierBatches
from bmcell.core.data.prepare import class_counts
from bmcell.core.device import select_device
from bmcell.core.distillation import Teacher, distillation_loss, load_teacher
from bmcell.core.distributed import Dist
from bmcell.core.metrics import classification_report, confusion_matrix
from bmcell.core.models import build_model, get_arch, is_mobilevit, load_pretrained
from bmcell.core.run_folder import (
    CACHE_DIR,
    RunState,
    checkpoint_meta,
    read_history,
    run_lock,
    save_epoch,
    start_or_resume,
    store_novelty,
)

LINE_EVERY_S = 30  # seconds between plain progress lines when the output is not a terminal
SYNC_EVERY = 10  # optimizer steps between reading the loss back from the device (each read waits for the GPU)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and normalisation weights; the fused kernel when the model is on CUDA."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, fused=on_cuda or None)


def compiled_for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """The model under torch.compile for training steps: forward and backward compiled together (AOTAutograd +
    Inductor), and on CUDA replayed as CUDA graphs ("reduce-overhead"), which training's fixed batch shape allows
    (a ragged last batch is dropped). The optimizer step stays outside the graph (fused AdamW on CUDA). Evaluation
    keeps the eager model: its last batch may be smaller."""
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)


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
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)


def _progress_line(task) -> str:
    """A plain-text progress line for output that is not a terminal."""
    eta = f"{task.time_remaining:.0f} s" if task.time_remaining is not None else "?"
    return (f"  {task.description}: batch {task.completed:.0f}/{task.total:.0f}  loss {task.fields['loss']:.4f}  "
            f"{task.fields['ips']:.0f} img/s  ETA {eta}")


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
               device: torch.device, outliers: torch.Tensor | None = None, outlier_weight: float = 0.0,
               teacher: Teacher | None = None, distill_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward, backward and optimizer step; returns the summed loss and the number correct, on the device.
    With outliers (outlier exposure), their predictions are also pulled toward the uniform distribution; with a
    teacher, the cells' predictions also toward the teacher's where it is right (bmcell.core.distillation)."""
    n = len(targets)
    if outliers is not None:
        images = torch.cat([images, outliers])
    images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
    targets = targets.to(device, non_blocking=True)
    with _autocast(device):
        logits = model(images)
        loss = F.cross_entropy(logits[:n], targets)
        if outliers is not None:  # cross-entropy to uniform, less its constant log(classes)
            loss = loss - outlier_weight * F.log_softmax(logits[n:].float(), dim=1).mean()
        if teacher is not None:
            loss = loss + distill_weight * distillation_loss(logits[:n], teacher.logits(images[:n]), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().float() * n, (logits[:n].detach().argmax(1) == targets).sum()


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                    set_lr: Callable[[], float], progress: Progress, description: str,
                    outliers: OutlierBatches | None = None, outlier_weight: float = 0.0,
                    teacher: Teacher | None = None, distill_weight: float = 0.0) -> dict:
    """One pass over the training batches; returns mean loss, accuracy and throughput. The loss is read back every
    SYNC_EVERY steps, so the device is not stalled at each one."""
    model.train()
    task = progress.add_task(description, total=len(loader), loss=float("nan"), ips=0.0)
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    last_line = start
    for batch, (images, targets) in enumerate(loader, start=1):
        lr = set_lr()
        batch_loss, batch_correct = train_step(model, images, targets, optimizer, device,
                                               outliers.next() if outliers else None, outlier_weight,
                                               teacher, distill_weight)
        loss_sum += batch_loss
        correct += batch_correct
        seen += len(targets)
        log_line = not progress.console.is_terminal and time.perf_counter() - last_line >= LINE_EVERY_S
        if log_line:  # logs and CI get no live bar: a plain line now and then instead
            last_line = time.perf_counter()
        if batch % SYNC_EVERY == 0 or batch == len(loader) or log_line:
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"training loss became {mean_loss} (lr {lr:.2e}); lower --lr")
            progress.update(task, completed=batch, loss=mean_loss, ips=seen / (time.perf_counter() - start))
        if log_line:
            progress.console.print(_progress_line(progress.tasks[-1]))
    progress.remove_task(task)
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen,
            "images_per_s": seen / seconds, "train_seconds": seconds}


def combine_train_metrics(per_rank: list[dict]) -> dict:
    """One row from every process's training metrics (equal shares): mean loss and accuracy, summed throughput."""
    return {"train_loss": float(np.mean([r["train_loss"] for r in per_rank])),
            "train_accuracy": float(np.mean([r["train_accuracy"] for r in per_rank])),
            "images_per_s": sum(r["images_per_s"] for r in per_rank),
            "train_seconds": max(r["train_seconds"] for r in per_rank)}


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Iterable, device: torch.device,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits and targets for every batch of a loader, kept on the device until the end (one copy to the
    host per evaluation, not one wait per batch)."""
    model.eval()
    task = progress.add_task("evaluate", total=len(loader), loss=float("nan"), ips=0.0) if progress else None
    logits, targets = [], []
    for images, batch_targets in loader:
        with _autocast(device):
            batch_logits = model(images.to(device, memory_format=torch.channels_last))
        logits.append(batch_logits.float())
        targets.append(batch_targets)
        if progress:
            progress.update(task, advance=1)
    if progress:
        progress.remove_task(task)
    if not logits:  # a process dealt no validation image
        return np.empty((0, 0), np.float32), np.empty(0, np.int64)
    return torch.cat(logits).cpu().numpy(), torch.cat(targets).cpu().numpy()


def evaluate_logits(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """Cross-entropy loss plus every metric of classification_report."""
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets).long()).item()
    report = classification_report(confusion_matrix(targets, logits.argmax(1), len(classes)), classes)
    return {"loss": loss, **report}


def fit(config: TrainConfig, resume: bool = False, console: Console | None = None, dist: Dist = Dist()) -> Path:
    """Train (or continue training) per config; writes last/best checkpoints, metrics and curves; returns best.json.
    Under torchrun every process trains its share (DDP) and rank 0 alone prints and writes, holding the run folder
    (run_lock) throughout, so that a second training there is refused."""
    per_rank_batch(config.batch_size, dist.world_size)  # refused before anything is written
    with run_lock(Path(config.out)) if dist.is_main else nullcontext():
        return _fit_held(config, resume, console or Console(soft_wrap=True), dist)


def _fit_held(config: TrainConfig, resume: bool, console: Console, dist: Dist) -> Path:
    """fit() once the run folder is held: prepare or reopen it, then train epoch by epoch and fit novelty at the
    end."""
    run_dir = Path(config.out)
    with dist.main_first():  # rank 0 makes the split; the others then read it back
        data, from_state = start_or_resume(config, resume or not dist.is_main,
                                            lambda m: console.print(f"[yellow]warning:[/] {m}"))
    device = select_device(config.device)
    if dist.enabled:
        device = torch.device("cuda", dist.local_rank) if device.type == "cuda" else device
        console.print(f"rank {dist.rank}/{dist.world_size} training on {device}")
        console = console if dist.is_main else Console(quiet=True)
    model = build_model(config.arch, len(data.classes), config.input_norm)
    if config.weights and not from_state:
        skipped = load_pretrained(model, Path(config.weights))
        console.print(f"loaded {config.weights}" + (f" (new classifier layers: {skipped})" if skipped else ""))
    model.to(device, memory_format=torch.channels_last)  # faster on CUDA and on CPU (oneDNN) alike
    optimizer = make_optimizer(model, config)
    state = RunState(**load_resume_state(run_dir, model, optimizer)) if from_state else RunState()
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.enabled else model
    if config.compile:  # checkpoints, evaluation and the resume state keep using the eager `model` (same weights)
        trained = compiled_for_training(trained, device)
    history = read_history(run_dir, state.epoch)

    with dist.main_first():  # the decoded-image cache is written once
        batches = make_batches(config, data, device, dist, run_dir / CACHE_DIR)
    arch = get_arch(config.arch)
    teacher = load_teacher(Path(config.teacher), data.classes, config.image_size, arch.mean, arch.std).to(device) \
        if config.teacher else None
    if teacher is not None:
        console.print(f"distilling from {config.teacher} (weight {config.distill_weight}) on the images it "
                      "answers right")
    outliers = OutlierBatches(max(2, batches.batch_size // 4), config.image_size, arch.mean, arch.std,
                              config.seed * 7_919 + dist.rank) if config.outlier_exposure > 0 else None
    total_steps = batches.steps_per_epoch * config.epochs
    warmup_steps = round(min(config.warmup_epochs, 0.1 * config.epochs) * batches.steps_per_epoch)

    def set_lr() -> float:
        lr = config.lr * lr_factor(state.step, total_steps, warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        state.step += 1
        return lr

    console.print(f"{'resuming' if resume else 'training'} {config.arch} on {device} x {dist.world_size} | "
                  f"{resolve_data_path(config.data_path)} data path | {len(data.classes)} classes | "
                  f"train {len(data.train)} / val {len(data.val)} images | per class (train) "
                  f"{class_counts(data.train, data.classes)} | epochs {state.epoch + 1}..{config.epochs} -> {run_dir}")
    for epoch in range(state.epoch + 1, config.epochs + 1):
        torch.manual_seed(config.seed * 100_003 + epoch + 7_919 * dist.rank)
        with _progress(console) as progress:
            train = train_one_epoch(trained, batches.train(epoch), optimizer, device, set_lr, progress,
                                    f"epoch {epoch}/{config.epochs}", outliers, config.outlier_exposure,
                                    teacher, config.distill_weight)
            logits, targets = predict_logits(model, batches.make_val(), device, progress)
        train = combine_train_metrics(dist.all_gather(train))
        logits, targets = (np.concatenate(parts) for parts in
                           zip(*[part for part in dist.all_gather((logits, targets)) if len(part[1])]))
        report = evaluate_logits(logits, targets, data.classes)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **train, "val_loss": report["loss"],
               "val_accuracy": report["accuracy"], "val_balanced_accuracy": report["balanced_accuracy"],
               "val_macro_f1": report["macro_f1"], "val_images": len(targets), "world_size": dist.world_size}
        history.append(row)
        state.epoch = epoch
        is_best = report["macro_f1"] > state.best_macro_f1
        if is_best:
            state.best_macro_f1, state.best_epoch = report["macro_f1"], epoch
        if dist.is_main:
            confidence = fit_confidence(logits, targets, config.coverage, "validation split")
            save_epoch(run_dir, model, optimizer, state, history, is_best,
                        checkpoint_meta(config, data, epoch, report, state, confidence))
        console.print(f"epoch {epoch}/{config.epochs}  loss {train['train_loss']:.4f}  "
                      f"train acc {train['train_accuracy']:.3f}  val loss {report['loss']:.4f}  "
                      f"val acc {report['accuracy']:.3f}  bal acc {report['balanced_accuracy']:.3f}  "
                      f"macro-F1 {report['macro_f1']:.3f}  {train['images_per_s']:.0f} img/s"
                      + ("  [green]best[/]" if is_best else ""))
    if dist.is_main and state.epoch == config.epochs and is_mobilevit(model):  # what the finished run knows
        fitted: dict = {}
        for name in ("best", "last"):
            novelty = store_novelty(run_dir / f"{name}.json", data.root, data.train, data.val, device,
                                    batches.batch_size, 0, fitted)
            console.print(f"{name}: novelty fitted on {novelty.bank.shape[0]} training images, radius "
                          f"{novelty.radius:.4f} ({novelty.flagged_on_validation:.1%} of validation images flagged)")
    dist.barrier()  # the others leave once rank 0 has written the last epoch
    return run_dir / "best.json"

"""Training throughput of the plain and the fast data path on this machine: data alone, then full training steps
(forward, backward, optimizer) of the same loop `bmcell train` runs, timed after a warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch

from bmcell.core.batches import EpochBatches, make_batches
from bmcell.core.config import TrainConfig
from bmcell.core.data.prepare import PreparedData
from bmcell.core.device import select_device
from bmcell.core.engine import make_optimizer, train_step
from bmcell.core.models import build_model

PATHS = ("loader", "device")


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stream(batches: EpochBatches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches epoch after epoch, without end."""
    epoch = 0
    while True:
        epoch += 1
        yield from batches.train(epoch)


def images_per_second(batches: EpochBatches, step: Callable[[torch.Tensor, torch.Tensor], object],
                      device: torch.device, steps: int, warmup: int) -> float:
    """Images per second through step over `steps` batches, after `warmup` untimed ones."""
    seen, start = 0, 0.0
    for index, (images, targets) in enumerate(_stream(batches)):
        if index == warmup:
            _synchronize(device)
            start = time.perf_counter()
        if index == warmup + steps:
            break
        step(images, targets)
        seen += len(targets) if index >= warmup else 0
    _synchronize(device)
    return seen / (time.perf_counter() - start)


def bench_path(config: TrainConfig, data: PreparedData, cache_dir: Path, steps: int, warmup: int) -> dict:
    """Set-up time (decoding the cache, on the device path), data-only and training images/s of config's data path."""
    device = select_device(config.device)
    start = time.perf_counter()
    batches = make_batches(config, data, device, cache_dir=cache_dir)
    setup = time.perf_counter() - start
    data_only = images_per_second(batches, lambda images, _: images.to(device, non_blocking=True), device,
                                  steps, warmup)
    model = build_model(config.arch, len(data.classes)).to(device, memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, config)
    training = images_per_second(batches, lambda images, targets: train_step(model, images, targets, optimizer, device),
                                 device, steps, warmup)
    return {"path": config.data_path, "device": str(device), "setup_s": setup, "data_images_per_s": data_only,
            "train_images_per_s": training}


def measure_training_speed(config: TrainConfig, data: PreparedData, cache_dir: Path, steps: int, warmup: int,
                log: Callable[[str], None]) -> list[dict]:
    """One row per data path (PATHS), measured one after the other with the same settings."""
    rows = []
    for path in PATHS:
        log(f"measuring the {path} path: {warmup} warm-up + {steps} timed steps of {config.batch_size} images")
        rows.append(bench_path(replace(config, data_path=path), data, cache_dir, steps, warmup))
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, with each path's training speed relative to the first."""
    lines = ["| data path | device | set-up s | data only, img/s | training, img/s | training vs loader |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        ratio = row["train_images_per_s"] / rows[0]["train_images_per_s"]
        lines.append(f"| {row['path']} | {row['device']} | {row['setup_s']:.1f} | {row['data_images_per_s']:.0f} | "
                     f"{row['train_images_per_s']:.0f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"

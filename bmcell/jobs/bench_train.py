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
from bmcell.core.device import bf16_peak_tflops, select_device
from bmcell.core.engine import compiled_for_training, make_optimizer, train_step
from bmcell.core.models import build_model, count_flops

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


def bench_path(config: TrainConfig, data: PreparedData, cache_dir: Path, steps: int, warmup: int,
               gflop_per_image: float, compiled: bool = False) -> dict:
    """Set-up time (decoding the cache, on the device path), data-only and training images/s of config's data path,
    eager or with the compiled training step (its first step, which compiles, timed on its own), and the share of
    the device's bf16 peak the training FLOPs (gflop_per_image per image) reach."""
    device = select_device(config.device)
    start = time.perf_counter()
    batches = make_batches(config, data, device, cache_dir=cache_dir)
    setup = time.perf_counter() - start
    data_only = images_per_second(batches, lambda images, _: images.to(device, non_blocking=True), device,
                                  steps, warmup)
    model = build_model(config.arch, len(data.classes)).to(device, memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, config)
    stepped = compiled_for_training(model, device) if compiled else model
    images, targets = next(iter(batches.train(0)))
    start = time.perf_counter()
    train_step(stepped, images, targets, optimizer, device)  # compiles when compiled
    _synchronize(device)
    first_step = time.perf_counter() - start
    training = images_per_second(batches, lambda images, targets: train_step(stepped, images, targets, optimizer,
                                                                              device), device, steps, warmup)
    peak = bf16_peak_tflops(device)
    achieved = training * gflop_per_image / 1e3  # TFLOP/s
    return {"path": config.data_path, "step": "compiled" if compiled else "eager", "device": str(device),
            "setup_s": setup, "first_step_s": first_step, "data_images_per_s": data_only,
            "train_images_per_s": training, "train_tflops": achieved,
            "peak_fraction": achieved / peak if peak else None}


def measure_training_speed(config: TrainConfig, data: PreparedData, cache_dir: Path, steps: int, warmup: int,
                           log: Callable[[str], None], compiled: bool = False) -> list[dict]:
    """One row per data path (PATHS) with the eager step, then (compiled) the device path with the compiled step,
    measured one after the other with the same settings."""
    runs = [(path, False) for path in PATHS] + ([("device", True)] if compiled else [])
    # forward + backward taken as 3x the forward's FLOPs, counted once on CPU for every row
    gflop_per_image = 3 * count_flops(build_model(config.arch, len(data.classes)), config.image_size) / 1e9
    rows = []
    for path, compile_step in runs:
        log(f"measuring the {path} path, {'compiled' if compile_step else 'eager'} step: {warmup} warm-up + "
            f"{steps} timed steps of {config.batch_size} images")
        rows.append(bench_path(replace(config, data_path=path), data, cache_dir, steps, warmup, gflop_per_image,
                               compile_step))
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, with each row's training speed relative to the first."""
    lines = ["| data path | step | device | set-up s | first step s | data only, img/s | training, img/s | "
             "training TFLOP/s | of bf16 peak | training vs first row |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = row["train_images_per_s"] / rows[0]["train_images_per_s"]
        peak = f"{100 * row['peak_fraction']:.1f}%" if row["peak_fraction"] is not None else "-"
        lines.append(f"| {row['path']} | {row['step']} | {row['device']} | {row['setup_s']:.1f} | "
                     f"{row['first_step_s']:.1f} | {row['data_images_per_s']:.0f} | {row['train_images_per_s']:.0f} | "
                     f"{row['train_tflops']:.2f} | {peak} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"

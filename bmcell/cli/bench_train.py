"""`bmcell bench-train`: images/s of the plain DataLoader path and the fast device path, side by side."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.config import TrainConfig
from bmcell.core.data.label_maps import resolve_label_map
from bmcell.core.data.prepare import prepare_data
from bmcell.core.data.synthetic import write_synthetic_dataset
from bmcell.core.device import select_device
from bmcell.jobs.bench_train import markdown_table, measure_training_speed


@reports_errors
def bench_train(
    data: Optional[Path] = typer.Option(None, help="Class-per-folder image dataset; default: embedded synthetic cells."),
    arch: str = typer.Option("mobilevit_xs", help="Architecture (see `bmcell info --list`)."),
    image_size: int = typer.Option(256, help="Square input side, a multiple of 32."),
    batch_size: int = typer.Option(128, help="Images per training step."),
    steps: int = typer.Option(20, min=1, help="Timed steps per path and measurement."),
    warmup: int = typer.Option(3, min=1, help="Untimed steps first."),
    augment: str = typer.Option("cells", help="cells or other-labs."),
    workers: Optional[int] = typer.Option(None, help="DataLoader processes of the plain path (default: as train)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    compiled: Optional[bool] = typer.Option(None, "--compiled/--no-compiled", help="Also measure the compiled "
                                            "training step on the device path (default: on CUDA only; compiling "
                                            "MobileViT-XS takes minutes on a CPU)."),
) -> None:
    """Steady-state images/s of training steps (forward, backward, AdamW) and of the data alone, for both data paths."""
    config = TrainConfig(arch=arch, image_size=image_size, batch_size=batch_size, augment=augment, workers=workers,
                         device=device)
    source = str(data) if data else "synthetic cells"
    with tempfile.TemporaryDirectory(prefix="bmcell-bench-train-") as scratch:
        if data is None:
            data = Path(scratch) / "synthetic"
            counts = write_synthetic_dataset(data)
            console.print(f"no --data given: synthesized {sum(counts.values())} cell images")
        prepared = prepare_data(data, resolve_label_map(None), Path(scratch), config.seed, config.val_fraction,
                                False, lambda m: console.print(f"[yellow]warning:[/] {m}"))
        compile_step = compiled if compiled is not None else select_device(device).type == "cuda"
        rows = measure_training_speed(config, prepared, Path(scratch) / "cache", steps, warmup, console.print,
                                      compile_step)
    console.print(f"{arch}, {image_size} px, batch {batch_size}, augment {augment}, {len(prepared.train)} training "
                  f"images from {source}")
    console.print(markdown_table(rows), highlight=False)

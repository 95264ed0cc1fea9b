"""`bmcell train`: the paper's protocol by default, on the embedded synthetic cells when --data is not given."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.core.checkpoint import RESUME_FILE
from bmcell.core.config import RUNTIME_ONLY, ConfigError, TrainConfig, option_help, overrides_from, resolve_config
from bmcell.core.data.synthetic import write_synthetic_dataset
from bmcell.core.distributed import process_group
from bmcell.core.engine import fit
from bmcell.core.run_folder import SYNTHETIC_DATA, check_out_folder, read_config, run_lock


def _differs(key: str, saved, given) -> bool:
    """Whether an option given to --resume differs from the run's value (--data compared as a folder)."""
    if key == "data" and saved is not None:
        return Path(given).absolute() != Path(saved).absolute()
    return saved != given


def _resumed_config(out: Path, overrides: dict) -> TrainConfig:
    """The run's saved configuration; explicit options must agree with it (bar runtime-only ones). --out is where
    the run is, never compared: a run folder can be moved, copied or reached by another path."""
    saved = read_config(out)
    conflicts = {k: (saved.get(k), v) for k, v in overrides.items()
                 if v is not None and k not in RUNTIME_ONLY and k != "out" and _differs(k, saved.get(k), v)}
    if conflicts:
        details = ", ".join(f"{k}: run has {old!r}, given {new!r}" for k, (old, new) in conflicts.items())
        raise ConfigError(f"--resume continues the run as it was configured; drop these options: {details}")
    return TrainConfig(**(saved | {k: v for k, v in overrides.items() if v is not None and k in RUNTIME_ONLY}))


def default_synthetic_data(out: Path) -> Path:
    """Synthesize the embedded default dataset inside the run folder (once) and return its path."""
    folder = out / SYNTHETIC_DATA
    if not folder.is_dir():
        counts = write_synthetic_dataset(folder)
        console.print(f"no --data given: synthesized {sum(counts.values())} cell images into {folder}")
    return folder


@reports_errors
def train(
    data: Optional[Path] = typer.Option(None, help=option_help("data")),
    out: Optional[Path] = typer.Option(None, help=option_help("out")),
    arch: Optional[str] = typer.Option(None, help=option_help("arch")),
    epochs: Optional[int] = typer.Option(None, help=option_help("epochs")),
    batch_size: Optional[int] = typer.Option(None, help=option_help("batch_size")),
    lr: Optional[float] = typer.Option(None, help=option_help("lr")),
    weight_decay: Optional[float] = typer.Option(None, help=option_help("weight_decay")),
    warmup_epochs: Optional[float] = typer.Option(None, help=option_help("warmup_epochs")),
    image_size: Optional[int] = typer.Option(None, help=option_help("image_size")),
    label_map: Optional[str] = typer.Option(None, help=option_help("label_map")),
    val_fraction: Optional[float] = typer.Option(None, help=option_help("val_fraction")),
    split: Optional[Path] = typer.Option(None, help=option_help("split")),
    seed: Optional[int] = typer.Option(None, help=option_help("seed")),
    weights: Optional[Path] = typer.Option(None, help=option_help("weights")),
    balanced_sampler: Optional[bool] = typer.Option(None, "--balanced-sampler/--no-balanced-sampler",
                                                    help=option_help("balanced_sampler")),
    strict: Optional[bool] = typer.Option(None, "--strict", help=option_help("strict")),
    workers: Optional[int] = typer.Option(None, help=option_help("workers")),
    device: Optional[str] = typer.Option(None, help=option_help("device")),
    augment: Optional[str] = typer.Option(None, help=option_help("augment")),
    data_path: Optional[str] = typer.Option(None, help=option_help("data_path")),
    input_norm: Optional[str] = typer.Option(None, help=option_help("input_norm")),
    coverage: Optional[float] = typer.Option(None, help=option_help("coverage")),
    outlier_exposure: Optional[float] = typer.Option(None, help=option_help("outlier_exposure")),
    epoch_images: Optional[int] = typer.Option(None, help=option_help("epoch_images")),
    balance_sources: Optional[bool] = typer.Option(None, "--balance-sources/--no-balance-sources",
                                                   help=option_help("balance_sources")),
    teacher: Optional[Path] = typer.Option(None, help=option_help("teacher")),
    distill_weight: Optional[float] = typer.Option(None, help=option_help("distill_weight")),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=option_help("compile")),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file of these settings; options given here win."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
    verbose: bool = VERBOSE,
) -> None:
    """Train a cell classifier; writes last/best checkpoints, split.json, metrics.jsonl and curves.png to --out.
    Every option is a TrainConfig field (bmcell/core/config.py); the resolved set is saved as RUN/config.json."""
    overrides = overrides_from(locals())

    cfg = _resumed_config(Path(out or TrainConfig.out), overrides) if resume else resolve_config(config, overrides)
    check_out_folder(Path(cfg.out), resume, cfg.data)  # before anything is written there
    if cfg.data is not None and not resume:  # a run resumed from another working directory still finds its data
        cfg = replace(cfg, data=str(Path(cfg.data).absolute()))
    if cfg.teacher is not None and not resume:  # loaded again at each resume, from wherever that runs
        cfg = replace(cfg, teacher=str(Path(cfg.teacher).absolute()))
    # one process, or this one's place under torchrun; rank 0 holds --out, so that a second `bmcell train` there
    # (fresh or --resume) is refused before it writes anything
    with process_group(cfg.device) as dist, run_lock(Path(cfg.out)) if dist.is_main else nullcontext():
        if cfg.data is None:
            with dist.main_first():
                cfg = replace(cfg, data=str(default_synthetic_data(Path(cfg.out))))
        if resume and dist.is_main and not (Path(cfg.out) / RESUME_FILE).is_file():
            console.print(f"nothing to resume in {cfg.out}: no epoch was saved ({RESUME_FILE} is absent); training "
                          "starts at epoch 1 with the run's configuration and split")
        with other_libraries_logged(Path(cfg.out), verbose or not dist.is_main):
            best = fit(cfg, resume=resume, console=console, dist=dist)
    if dist.is_main:
        console.print(f"done: best checkpoint {best} (evaluate it with `bmcell evaluate {best.parent}`)")

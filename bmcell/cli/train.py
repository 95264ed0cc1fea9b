"""`bmcell train`: the paper's protocol by default, on the embedded synthetic cells when --data is not given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.config import ConfigError, TrainConfig, resolve_config

RUNTIME_ONLY = {"workers", "device", "strict", "data_path"}
DEFAULT_SYNTH_FOLDER = "synthetic-data"


def _resumed_config(out: Path, overrides: dict) -> TrainConfig:
    """The run's saved configuration; explicit options must agree with it (bar runtime-only ones)."""
    path = out / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume: {path} not found; is {out} a bmcell run folder?")
    saved = json.loads(path.read_text(encoding="utf-8"))
    conflicts = {k: (saved.get(k), v) for k, v in overrides.items()
                 if v is not None and k not in RUNTIME_ONLY and saved.get(k) != v}
    if conflicts:
        details = ", ".join(f"{k}: run has {old!r}, given {new!r}" for k, (old, new) in conflicts.items())
        raise ConfigError(f"--resume continues the run as it was configured; drop these options: {details}")
    return TrainConfig(**(saved | {k: v for k, v in overrides.items() if v is not None and k in RUNTIME_ONLY}))


def default_synthetic_data(out: Path) -> Path:
    """Synthesize the embedded default dataset inside the run folder (once) and return its path."""
    from bmcell.data.synthetic import write_synthetic_dataset

    folder = out / DEFAULT_SYNTH_FOLDER
    if not folder.is_dir():
        counts = write_synthetic_dataset(folder)
        console.print(f"no --data given: synthesized {sum(counts.values())} cell images into {folder}")
    return folder


@reports_errors
def train(
    data: Optional[Path] = typer.Option(None, help="Class-per-folder image dataset; default: embedded synthetic cells."),
    out: Optional[Path] = typer.Option(None, help="Run folder for checkpoints, split and metrics [default: runs/bmcell]."),
    arch: Optional[str] = typer.Option(None, help="Architecture (see `bmcell info --list`) [default: mobilevit_xs]."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [default: 200]."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size [default: 128]."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of AdamW [default: 1e-3]."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay [default: 0.05]."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up, capped at 10% of the run [default: 5]."),
    image_size: Optional[int] = typer.Option(None, help="Square input side, a multiple of 32 [default: 256]."),
    label_map: Optional[str] = typer.Option(None, help="identity, aml-fab8, pbc-granulocytic, or a YAML/JSON file."),
    val_fraction: Optional[float] = typer.Option(None, help="Validation share of each class [default: 0.1]."),
    split: Optional[Path] = typer.Option(None, help="Reuse this split instead of making one: another run's split.json "
                                         "or a CSV with columns path,subset (train/val), e.g. grouped by patient."),
    seed: Optional[int] = typer.Option(None, help="Seed of the split and of training [default: 0]."),
    weights: Optional[Path] = typer.Option(None, help="Start from these .safetensors weights instead of random init."),
    balanced_sampler: Optional[bool] = typer.Option(None, "--balanced-sampler/--no-balanced-sampler",
                                                    help="torchsampler's ImbalancedDatasetSampler [default: on]."),
    strict: Optional[bool] = typer.Option(None, "--strict", help="Fail on unusable image files instead of skipping."),
    workers: Optional[int] = typer.Option(None, help="Data-loading processes [default: CPU count, at most 8]."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N [default: auto]."),
    augment: Optional[str] = typer.Option(None, help="cells: PBC-like images; other-labs: also wide zoom, stain, "
                                          "blur, noise, JPEG for other microscopes [default: cells]."),
    data_path: Optional[str] = typer.Option(None, help="loader: DataLoader workers decode and augment every image; "
                                            "device: decode once (cache in RUN/cache), augment batches on the "
                                            "training device; auto: device [default: auto]."),
    input_norm: Optional[str] = typer.Option(None, help="dataset: the architecture's mean/std; per-image: each "
                                             "image's colour channels standardised inside the model, so a lab's "
                                             "stain and lamp colour matter less [default: dataset]."),
    coverage: Optional[float] = typer.Option(None, help="Share of validation images the calibrated abstention "
                                             "threshold answers; the rest read 'uncertain' [default: 0.95]."),
    outlier_exposure: Optional[float] = typer.Option(None, help="Weight of outlier exposure: batches of synthesised "
                                                     "non-cell images (noise, flat colours, patterns, drawings) "
                                                     "trained toward a uniform answer, so they fall under the "
                                                     "abstention threshold; 0: off [default: 0]."),
    balance_sources: Optional[bool] = typer.Option(None, "--balance-sources/--no-balance-sources",
                                                   help="In a `bmcell combine` folder, draw each source of a class "
                                                   "equally often, however many images it has [default: off]."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file of these settings; options given here win."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
) -> None:
    """Train a cell classifier; writes last/best checkpoints, split.json, metrics.jsonl and curves.png to --out."""
    from bmcell.distributed import process_group
    from bmcell.engine import fit

    overrides = {"out": str(out) if out else None, "data": str(data) if data else None, "arch": arch,
                 "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                 "warmup_epochs": warmup_epochs, "image_size": image_size, "label_map": label_map,
                 "val_fraction": val_fraction, "split": str(split) if split else None, "seed": seed,
                 "weights": str(weights) if weights else None,
                 "balanced_sampler": balanced_sampler, "strict": strict, "workers": workers, "device": device,
                 "augment": augment, "data_path": data_path,
                 "input_norm": input_norm, "coverage": coverage,
                 "outlier_exposure": outlier_exposure, "balance_sources": balance_sources}
    cfg = _resumed_config(Path(out or TrainConfig.out), overrides) if resume else resolve_config(config, overrides)
    with process_group(cfg.device) as dist:  # one process, or this one's place under torchrun
        if cfg.data is None:
            with dist.main_first():
                cfg = TrainConfig(**(cfg.to_dict() | {"data": str(default_synthetic_data(Path(cfg.out)))}))
        best = fit(cfg, resume=resume, console=console, dist=dist)
    if dist.is_main:
        console.print(f"done: best checkpoint {best} (evaluate it with `bmcell evaluate {best.parent}`)")

"""Training configuration: defaults (the paper's protocol) ← optional config file ← command-line overrides."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml
from bmcell.data.transforms import AUGMENTATIONS
from bmcell.errors import BmcellError
from bmcell.models import INPUT_NORMS


DATA_PATHS = ("auto", "loader", "device")


class ConfigError(BmcellError):
    """A configuration file or value that cannot be used."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved resolved as config.json in the run folder."""

    out: str = "runs/bmcell"
    data: str | None = None
    arch: str = "mobilevit_xs"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    image_size: int = 256
    label_map: str | None = None
    val_fraction: float = 0.1
    split: str | None = None  # another run's split.json or a CSV (path,subset) to reuse instead of a new split
    seed: int = 0
    weights: str | None = None
    balanced_sampler: bool = True
    strict: bool = False
    workers: int | None = None
    device: str = "auto"
    augment: str = "cells"
    data_path: str = "auto"  # loader: DataLoader workers; device: decoded once, augmented on the device; auto: device
    input_norm: str = "dataset"  # dataset: the architecture's mean/std; per-image: each image's channels standardised
    coverage: float = 0.95  # share of validation images the abstention threshold keeps (answers)
    outlier_exposure: float = 0.0  # weight of the uniform-prediction loss on synthesised non-cell images; 0: off
    balance_sources: bool = False  # within each class, draw every source of a `bmcell combine` folder equally often

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0, "warmup_epochs": self.warmup_epochs >= 0,
            "image_size": self.image_size >= 32 and self.image_size % 32 == 0,
            "val_fraction": 0 < self.val_fraction < 1, "workers": self.workers is None or self.workers >= 0,
            "device": self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "augment": self.augment in AUGMENTATIONS, "data_path": self.data_path in DATA_PATHS,
            "input_norm": self.input_norm in INPUT_NORMS, "coverage": 0 < self.coverage <= 1,
            "outlier_exposure": self.outlier_exposure >= 0,
            "balance_sources": self.balanced_sampler or not self.balance_sources,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            hints = {"image_size": "a multiple of 32, at least 32", "val_fraction": "between 0 and 1",
                     "device": "auto, cpu, cuda or cuda:N", "augment": " or ".join(AUGMENTATIONS),
                     "data_path": ", ".join(DATA_PATHS),
                     "input_norm": " or ".join(INPUT_NORMS), "coverage": "in (0, 1]",
                     "balance_sources": "needs the balanced sampler"}
            raise ConfigError("; ".join(f"invalid {n}={getattr(self, n)!r}" + (f" ({hints[n]})" if n in hints else "")
                                        for n in bad))

    def to_dict(self) -> dict:
        """A JSON-ready copy."""
        return asdict(self)


def load_config_file(path: Path) -> dict:
    """Read a YAML or JSON file of TrainConfig fields, rejecting unknown keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {error}") from None
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    return data


def resolve_config(config_file: Path | None, overrides: dict) -> TrainConfig:
    """Defaults, then the config file, then the overrides that were actually given (None means not given)."""
    values = load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved configuration as JSON."""
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")

"""Training configuration: defaults (the paper's protocol) ← optional config file ← command-line overrides."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from bmcell.core.data.transforms import AUGMENTATIONS
from bmcell.core.errors import BmcellError
from bmcell.core.models import INPUT_NORMS

DATA_PATHS = ("auto", "loader", "device")


class ConfigError(BmcellError):
    """A configuration file or value that cannot be used."""


def setting(default, help: str, runtime: bool = False):
    """A TrainConfig field with its command-line help; runtime settings may change when a run resumes."""
    return field(default=default, metadata={"help": help, "runtime": runtime})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved resolved as config.json in the run folder. Each field's help is
    the `bmcell train` option's help, with the default appended (option_help)."""

    out: str = setting("runs/bmcell", "Run folder for checkpoints, split and metrics.")
    data: str | None = setting(None, "Class-per-folder image dataset; without it, the embedded synthetic cells.")
    arch: str = setting("mobilevit_xs", "Architecture (see `bmcell info --list`).")
    epochs: int = setting(200, "Epochs.")
    batch_size: int = setting(128, "Batch size (the global batch under torchrun).")
    lr: float = setting(1e-3, "Peak learning rate of AdamW.")
    weight_decay: float = setting(0.05, "AdamW weight decay (none on biases and norms).")
    warmup_epochs: float = setting(5.0, "Linear warm-up epochs, capped at 10% of the run.")
    image_size: int = setting(256, "Square input side, a multiple of 32.")
    label_map: str | None = setting(None, "identity, aml-fab8, pbc-granulocytic, or a YAML/JSON file "
                                    "(none: identity).")
    val_fraction: float = setting(0.1, "Validation share of each class.")
    split: str | None = setting(None, "Reuse this split instead of making one: another run's split.json or a CSV "
                                "with columns path,subset (train/val), e.g. grouped by patient.")
    seed: int = setting(0, "Seed of the split and of training.")
    weights: str | None = setting(None, "Start from these .safetensors weights instead of random init.")
    balanced_sampler: bool = setting(True, "torchsampler's ImbalancedDatasetSampler weights (inverse class "
                                     "frequency).")
    strict: bool = setting(False, "Fail on unusable image files instead of skipping them.", runtime=True)
    workers: int | None = setting(None, "Data-loading processes (none: CPU count, at most 8).", runtime=True)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", runtime=True)
    augment: str = setting("cells", "cells: PBC-like images; other-labs: also wide zoom, stain, blur, noise, JPEG "
                           "for other microscopes.")
    data_path: str = setting("auto", "loader: DataLoader workers decode and augment every image; device: decode "
                             "once (cache in RUN/cache), augment batches on the training device; auto: device.",
                             runtime=True)
    input_norm: str = setting("dataset", "dataset: the architecture's mean/std; per-image: each image's colour "
                              "channels standardised inside the model, so a lab's stain and lamp colour matter less.")
    coverage: float = setting(0.95, "Share of validation images the calibrated abstention threshold answers; the "
                              "rest read 'uncertain'.")
    outlier_exposure: float = setting(0.0, "Weight of outlier exposure: batches of synthesised non-cell images "
                                      "(noise, flat colours, patterns, drawings) trained toward a uniform answer, so "
                                      "they fall under the abstention threshold; 0: off.")
    epoch_images: int | None = setting(None, "Training images drawn per epoch (none: as many as the training side "
                                       "holds): shorter epochs over a large folder, each a fresh draw from all of it.")
    balance_sources: bool = setting(False, "In a `bmcell combine` folder, draw each source of a class equally "
                                    "often, however many images it has.")
    teacher: str | None = setting(None, "Also learn this checkpoint's softened answers (knowledge distillation) on "
                                  "the training images it answers right, e.g. the model a fine-tune starts from, "
                                  "so that what it knew is kept; same classes and input size.")
    distill_weight: float = setting(1.0, "Weight of the teacher's term in the loss (with --teacher).")
    compile: bool = setting(False, "Compile the training step with torch.compile (forward and backward; CUDA graphs "
                            "on CUDA): faster steps after a one-time compile of a minute or more. Off by default "
                            "until `bmcell bench-train` has measured it faster on the GPU in use.", runtime=True)

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
            "epoch_images": self.epoch_images is None or self.epoch_images >= 1,
            "distill_weight": self.distill_weight >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            hints = {"image_size": "a multiple of 32, at least 32", "val_fraction": "between 0 and 1",
                     "device": "auto, cpu, cuda or cuda:N", "augment": " or ".join(AUGMENTATIONS),
                     "data_path": ", ".join(DATA_PATHS),
                     "input_norm": " or ".join(INPUT_NORMS), "coverage": "in (0, 1]",
                     "balance_sources": "needs the balanced sampler",
                     "epoch_images": "at least 1", "distill_weight": "at least 0"}
            raise ConfigError("; ".join(f"invalid {n}={getattr(self, n)!r}" + (f" ({hints[n]})" if n in hints else "")
                                        for n in bad))

    def to_dict(self) -> dict:
        """A JSON-ready copy."""
        return asdict(self)


def option_help(name: str) -> str:
    """A TrainConfig field's help with its default, for the command-line option of the same name."""
    spec = TrainConfig.__dataclass_fields__[name]
    return spec.metadata["help"] + ("" if spec.default is None else f" (default: {spec.default})")


RUNTIME_ONLY = frozenset(f.name for f in fields(TrainConfig) if f.metadata["runtime"])


def overrides_from(options: dict) -> dict:
    """The TrainConfig fields among a command's options (None: not given), paths as strings."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if k in names}


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

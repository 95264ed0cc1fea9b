"""Checkpoints: safetensors weights + a JSON metadata file, written atomically; resume state; safe loading."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from bmcell.core.confidence import Confidence
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    json_digest,
    replace_file,
    sha256_bytes,
    sha256_path,
)
from bmcell.core.models import EXTRA_TENSORS_PREFIX, build_model
from bmcell.core.novelty import Novelty, NoveltyScored, missing_tensors
from bmcell.core.versions import installed_versions
from bmcell.core.views import VIEW_COUNTS, ViewAveraged

FORMAT = "bmcell-checkpoint"
FORMAT_VERSION = 1
SAVED_KEYS = ("format", "format_version", "weights", "versions", "saved_at", "metadata_sha256")  # save_checkpoint's


def carried_meta(meta: dict) -> dict:
    """The metadata a checkpoint derived from this one starts from: without save_checkpoint's own keys and without
    the novelty statistics, which describe the source's features (re-fit them for the new weights)."""
    return {k: v for k, v in meta.items() if k not in SAVED_KEYS and k != "novelty"}


REQUIRED_KEYS = ("arch", "classes", "image_size", "mean", "std", "weights", "metadata_sha256")
RESUME_FILE = "last.resume.safetensors"
CHECKPOINT_PACKAGES = ("bmcell", "torch", "torchvision", "timm", "numpy", "pillow", "safetensors")


class CheckpointError(BmcellError):
    """A checkpoint that is missing, incomplete or does not match its metadata."""


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies, as safetensors requires."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _pending(json_path: Path) -> Path:
    """Where save_checkpoint puts a checkpoint's new metadata until its weights are in place."""
    return json_path.with_name(f".{json_path.name}.next")


def save_checkpoint(run_dir: Path, name: str, model: nn.Module, meta: dict,
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write <name>.safetensors (the model's weights and any extra tensors, e.g. the novelty bank) and <name>.json
    (which records their sha256); returns the JSON path.
    A kill at any moment leaves one whole checkpoint under the name, the previous or the new one: the new metadata
    is written aside first (.<name>.json.next), then the weights replace the old ones, then the metadata moves into
    place; load_checkpoint finishes a save that was stopped between the last two steps."""
    run_dir = Path(run_dir)
    weights_path, json_path = run_dir / f"{name}.safetensors", run_dir / f"{name}.json"
    data = save_safetensors_bytes(_cpu_tensors(model.state_dict() | (extra or {})), metadata={"format": FORMAT})
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta,
               "weights": {"file": weights_path.name, "sha256": sha256_bytes(data)},
               "versions": installed_versions(CHECKPOINT_PACKAGES),
               "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    payload["metadata_sha256"] = metadata_digest(payload)
    pending = _pending(json_path)
    atomic_write_json(pending, payload)
    try:
        atomic_write_bytes(weights_path, data)
    except BaseException:  # the old weights are untouched, so the old metadata still describes them
        pending.unlink(missing_ok=True)
        raise
    replace_file(pending, json_path)
    return json_path


def _finish_interrupted_save(json_path: Path) -> None:
    """Move a checkpoint's pending metadata into place when the weights beside it are the ones it describes (the
    save was stopped after writing the weights); a stale or broken one is left alone and never used."""
    pending = _pending(json_path)
    if not pending.is_file():
        return
    try:
        meta = json.loads(pending.read_text(encoding="utf-8"))
        weights = json_path.parent / meta["weights"]["file"]
        whole = (meta.get("metadata_sha256") == metadata_digest(meta) and weights.is_file()
                 and sha256_path(weights) == meta["weights"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if whole:
        with contextlib.suppress(OSError):  # a read-only folder: the metadata in place is then refused as stale
            replace_file(pending, json_path)


def metadata_digest(meta: dict) -> str:
    """sha256 of the metadata's canonical JSON, without the digest itself: edits after saving are detected."""
    return json_digest(meta, "metadata_sha256")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its metadata and its weights."""

    meta: dict
    state_dict: dict[str, torch.Tensor]
    json_path: Path
    novelty_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # beside the weights (Novelty.tensors)

    @property
    def classes(self) -> list[str]:
        """Class names in output order."""
        return list(self.meta["classes"])

    @property
    def run_dir(self) -> Path:
        """The folder holding the checkpoint (and its split file)."""
        return self.json_path.parent

    @property
    def arch(self) -> str:
        """The registry name of the architecture."""
        return self.meta["arch"]

    @property
    def image_size(self) -> int:
        """The square input size in pixels."""
        return int(self.meta["image_size"])

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel normalisation mean of [0, 1] inputs."""
        return tuple(self.meta["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel normalisation standard deviation of [0, 1] inputs."""
        return tuple(self.meta["std"])

    @property
    def weights_sha256(self) -> str:
        """sha256 of the safetensors weights file: the identity every export and reference-logits file refers to."""
        return self.meta["weights"]["sha256"]

    @property
    def weights_path(self) -> Path:
        """The safetensors file beside the metadata."""
        return self.run_dir / self.meta["weights"]["file"]

    @property
    def split_sha256(self) -> str:
        """sha256 of the train/validation split the checkpoint was trained with."""
        return self.meta["split"]["sha256"]

    @property
    def epoch(self) -> int | None:
        """The epoch the weights were saved after (None for a checkpoint not saved by training)."""
        return self.meta.get("epoch")

    @property
    def metrics(self) -> dict:
        """Validation metrics at saving time (accuracy, balanced accuracy, macro-F1, ...)."""
        return self.meta.get("metrics", {})

    @property
    def config(self) -> dict:
        """The resolved training configuration, as saved."""
        return self.meta.get("config", {})

    @property
    def label_map(self) -> dict:
        """The label map the training folder was read with, as a dict."""
        return self.meta["label_map"]

    @property
    def adapted_on(self) -> dict | None:
        """What `bmcell adapt` re-estimated the BatchNorm statistics on, if it did."""
        return self.meta.get("adapted_on")

    @property
    def finetuned_on(self) -> dict | None:
        """What `bmcell finetune` adapted the model on (the lab, its cells per class, their digest, the
        cross-validated accuracy), if it did."""
        return self.meta.get("finetuned_on")

    def recorded_data_folder(self) -> Path | None:
        """The folder the checkpoint was trained on, when it records one and that folder is here (a released
        model records none: its metadata holds no path of the machine it was trained on)."""
        folder = self.meta.get("data")
        return Path(folder) if folder and Path(folder).is_dir() else None

    def data_folder(self, override: Path | None = None) -> Path:
        """override, or the folder the checkpoint was trained on, which must still exist."""
        if override is not None:
            if not Path(override).is_dir():
                raise CheckpointError(f"--data {override} is not a folder")
            return Path(override)
        if not self.meta.get("data"):
            raise CheckpointError(f"{self.json_path} does not record the folder it was trained on (a released model "
                                  "keeps no machine's paths); pass --data DIR, that folder")
        folder = self.recorded_data_folder()
        if folder is None:
            raise CheckpointError(f"{self.meta['data']}, the folder {self.json_path} was trained on, is not there; "
                                  "pass --data DIR (that folder, moved or rebuilt)")
        return folder

    @property
    def confidence(self) -> Confidence | None:
        """The calibrated temperature and abstention threshold, when the checkpoint has them."""
        values = self.meta.get("confidence")
        return Confidence.from_dict(values) if values else None

    @property
    def novelty(self) -> Novelty | None:
        """The per-image novelty statistics (bmcell.core.novelty), when the checkpoint has them."""
        values = self.meta.get("novelty")
        return Novelty.from_parts(values, self.novelty_tensors) if values and self.novelty_tensors else None

    @property
    def input_norm(self) -> str:
        """How inputs are normalised before the network: 'dataset' (mean/std only) or 'per-image'."""
        return self.meta.get("input_norm", "dataset")

    def build_model(self) -> nn.Module:
        """The network with these weights loaded, in eval mode."""
        model = build_model(self.meta["arch"], len(self.classes), self.input_norm)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            raise CheckpointError(
                f"{self.json_path}: weights do not fit architecture {self.meta['arch']!r} with "
                f"{len(self.classes)} classes: {str(error).splitlines()[0]}"
            ) from None
        return model.eval()

    @property
    def views(self) -> int:
        """How many symmetries of the picture the model's answer is averaged over (bmcell.core.views): 1 or 8."""
        views = self.meta.get("views", 1)
        if views not in VIEW_COUNTS:
            raise CheckpointError(f"{self.json_path}: views is {views!r}; this bmcell knows {VIEW_COUNTS}")
        return views

    def scored_model(self) -> nn.Module:
        """build_model, with the novelty column after the logits when the checkpoint has novelty statistics, and
        its logits averaged over the picture's symmetries when the checkpoint says so: what every artefact runs."""
        novelty = self.novelty
        model = NoveltyScored(self.build_model(), novelty).eval() if novelty else self.build_model()
        return ViewAveraged(model, len(self.classes), self.image_size).eval() if self.views > 1 else model


def names_a_checkpoint(path: Path) -> bool:
    """Whether a command-line path is meant as a checkpoint: a run folder, NAME.json or NAME.safetensors."""
    return path.is_dir() or path.suffix in (".json", ".safetensors")


def resolve_checkpoint(path: Path) -> Path:
    """The metadata JSON for a run folder (its best checkpoint), a .json or a .safetensors path (finishing a save
    of it that a kill interrupted)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    _finish_interrupted_save(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint metadata {path} not found; pass a run folder, NAME.json or NAME.safetensors")
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and validate a checkpoint without unpickling anything."""
    json_path = resolve_checkpoint(path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{json_path}: metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not a bmcell checkpoint (format {FORMAT!r} expected)")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise CheckpointError(f"{json_path}: metadata lacks {missing}; re-save it with `bmcell train`")
    if meta.get("metadata_sha256") != metadata_digest(meta):
        raise CheckpointError(f"{json_path}: metadata was edited after it was saved (its sha256 does not match); "
                              "classes, mean/std or image size may no longer fit the weights: restore it or retrain")
    weights_path = json_path.parent / meta["weights"]["file"]
    if not weights_path.is_file():
        raise CheckpointError(f"{json_path}: weights file {weights_path.name} is missing beside it")
    data = weights_path.read_bytes()
    if sha256_bytes(data) != meta["weights"]["sha256"]:
        raise CheckpointError(
            f"{weights_path} does not match the sha256 in {json_path.name} (changed, or an interrupted write); "
            "use the other checkpoint (best/last) or retrain"
        )
    try:
        state = load_safetensors_bytes(data)
    except SafetensorError as error:
        raise CheckpointError(f"{weights_path}: unreadable safetensors ({error})") from None
    tensors = {key: state.pop(key) for key in [k for k in state if k.startswith(EXTRA_TENSORS_PREFIX)]}
    missing = missing_tensors(meta.get("novelty"), tensors)
    if missing:
        raise CheckpointError(f"{json_path}: the novelty statistics are incomplete (the metadata block and the stored "
                              f"features go together; {', '.join(missing)} missing or unexplained); re-save it with "
                              "`bmcell train` or `bmcell release`")
    if meta.get("novelty"):
        try:  # read once here, so that statistics this bmcell cannot use are one line now, not a trace later
            Novelty.from_parts(meta["novelty"], tensors)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{json_path}: unreadable novelty statistics ({error}); update bmcell or re-save "
                                  "it with `bmcell release`") from None
    return Checkpoint(meta, state, json_path, tensors)


def save_resume_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """One atomic file with the model, the optimizer and the loop state, enough to continue after a crash."""
    optim = optimizer.state_dict()
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    plain: dict[str, dict] = {}
    for index, values in optim["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    header = {"format": FORMAT, "state": json.dumps(state),
              "param_groups": json.dumps(optim["param_groups"]), "optimizer_plain": json.dumps(plain)}
    atomic_write_bytes(Path(run_dir) / RESUME_FILE, save_safetensors_bytes(_cpu_tensors(tensors), metadata=header))


def load_resume_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer from the resume file and return the loop state."""
    from safetensors import safe_open

    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {run_dir}: {RESUME_FILE} not found (did epoch 1 finish?)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable resume state ({error})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bmcell resume file")
    model_state = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: saved model does not fit this configuration ({str(error).splitlines()[0]})") from None
    optim_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            optim_state.setdefault(int(index), {})[name] = value
    for index, values in json.loads(header["optimizer_plain"]).items():
        optim_state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": optim_state, "param_groups": json.loads(header["param_groups"])})
    return json.loads(header["state"])

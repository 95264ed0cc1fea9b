"""A training run's folder: its configuration, split, metrics history, checkpoint metadata, and the state that lets
a run continue after a crash."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bmcell.core.batches import make_loader
from bmcell.core.checkpoint import (
    RESUME_FILE,
    SAVED_KEYS,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_resume_state,
)
from bmcell.core.confidence import Confidence
from bmcell.core.config import ConfigError, TrainConfig
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.label_maps import resolve_label_map
from bmcell.core.data.prepare import (
    BAD_FILES,
    SPLIT_FILE,
    PreparedData,
    load_prepared,
    prepare_data,
)
from bmcell.core.data.sources import record_sources
from bmcell.core.data.transforms import eval_transform
from bmcell.core.device import select_device
from bmcell.core.distillation import load_teacher
from bmcell.core.fileio import (
    DiskFullError,
    atomic_write_bytes,
    atomic_write_json,
    check_folder_path,
    format_bytes,
    is_disk_full,
)
from bmcell.core.models import build_model, get_arch, load_pretrained
from bmcell.core.novelty import Novelty, bank_pick, fit_novelty, novelty_features
from bmcell.core.reports import plot_curves

try:
    import fcntl
except ImportError:  # Windows: a folder cannot be locked there, and run_lock guards nothing
    fcntl = None

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CACHE_DIR = "cache"
LOG_FILE = "bmcell.log"  # other libraries' output, in every command's output folder (cli.common)
SYNTHETIC_DATA = "synthetic-data"  # the embedded cells `bmcell train` synthesizes into a run given no --data
# What `bmcell train` leaves in --out before a run has started (config.json), and what a file browser may add: a
# folder holding only these is a new run's
BEFORE_START = frozenset({LOG_FILE, SYNTHETIC_DATA, SPLIT_FILE, BAD_FILES, f".{SPLIT_FILE}.tmp", f".{CONFIG_FILE}.tmp",
                          ".DS_Store"})


@dataclass
class RunState:
    """What the loop needs to continue: finished epochs, optimizer steps and the best score so far."""

    epoch: int = 0
    step: int = 0
    best_macro_f1: float = -1.0
    best_epoch: int = 0


def read_history(run_dir: Path, up_to_epoch: int) -> list[dict]:
    """Metrics of finished epochs, dropping any line written after the resumed checkpoint."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [row for row in rows if row["epoch"] <= up_to_epoch]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a bmcell metrics file ({error}); was it written by `bmcell train`?") from None


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically and redraw the curves."""
    atomic_write_bytes(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history).encode())
    plot_curves(history, run_dir / "curves.png")


def checkpoint_meta(config: TrainConfig, data: PreparedData, epoch: int, report: dict, state: RunState,
                     confidence: Confidence) -> dict:
    """Metadata stored beside the weights: everything needed to rebuild, preprocess and audit the model."""
    arch = get_arch(config.arch)
    return {
        "arch": config.arch, "classes": data.classes, "num_classes": len(data.classes),
        "image_size": config.image_size, "mean": list(arch.mean), "std": list(arch.std),
        "input_norm": config.input_norm, "confidence": confidence.to_dict(),
        "preprocessing": {"resize": "shorter side to image_size, bilinear, antialiased", "crop": "centre, square",
                          "scale": "uint8 / 255 to [0, 1]", "normalize": "(x - mean) / std", "channels": "RGB"},
        "label_map": data.label_map.to_dict(), "data": str(data.root),
        "split": {"file": "split.json", "sha256": data.split_sha256, "train": len(data.train), "val": len(data.val)},
        "config": config.to_dict(), "epoch": epoch, "best_epoch": state.best_epoch,
        "metrics": {k: v for k, v in report.items() if k != "loss"} | {"val_loss": report["loss"]},
    }


def _is_within(path: Path, folder: Path) -> bool:
    """Whether path is folder or lies under it, as written (made absolute, '..' resolved) or with links followed."""
    paths = {Path(os.path.abspath(path)), Path(path).resolve()}
    folders = {Path(os.path.abspath(folder)), Path(folder).resolve()}
    return any(p.is_relative_to(f) for p in paths for f in folders)


def check_out_folder(run_dir: Path, resume: bool, data: str | Path | None = None) -> None:
    """Refuse, before anything is written, an --out a train command cannot use: a file or a path under one; with
    resume, a folder without a started run; without, a folder inside the data folder, a folder that holds a run, or
    one that holds anything but what an earlier attempt of ours leaves before a run starts (BEFORE_START)."""
    run_dir = Path(run_dir)
    check_folder_path(run_dir)
    if not resume and data is not None and _is_within(run_dir, Path(data)):
        raise CheckpointError(f"--out {run_dir} is inside the data folder {data}: the run's files would be taken "
                              f"for images of a class there; choose an --out outside {data}")
    if resume:
        if not ((run_dir / CONFIG_FILE).is_file() and (run_dir / SPLIT_FILE).is_file()):
            raise CheckpointError(f"--resume: {run_dir} holds no started run (config.json and split.json); "
                                  "start without --resume")
        return
    if (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in BEFORE_START) if run_dir.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CheckpointError(f"--out {run_dir} is not empty and is not a bmcell run (it holds {shown}); nothing "
                              "was written to it: choose a new or an empty folder")


def read_config(run_dir: Path) -> dict:
    """A run's saved configuration as it reads from where the folder is now: `out` is the folder itself (a run
    that was moved or copied, or is reached by another path, is the same run), and synthetic cells that the run
    made inside its folder moved with it."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: {path} not found; is {run_dir} a bmcell run folder?")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        old_out, data = saved.get("out"), saved.get("data")
    except (ValueError, AttributeError) as error:
        raise ConfigError(f"{path}: not a bmcell configuration ({error})") from None
    moved = saved | {"out": str(run_dir)}
    if data and old_out and Path(data) == Path(old_out) / SYNTHETIC_DATA:
        moved["data"] = str(run_dir / SYNTHETIC_DATA)
    return moved


_HELD: set[Path] = set()  # run folders this process holds (run_lock)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold run_dir for one training, from its checks to its last write: another `bmcell train` on the same folder (a
    fresh start or --resume) is refused meanwhile; within the process that holds it, run_lock passes. The lock is
    the operating system's (flock) on the folder itself: it leaves no file and ends with the process, however it
    ends (kill -9 included). Where a folder cannot be locked (Windows, some network file systems) nothing is
    guarded. A folder made here is removed again if left empty."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _HELD:
        yield
        return
    descriptor = os.open(run_dir, os.O_RDONLY) if fcntl else None
    _HELD.add(key)
    try:
        if descriptor is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CheckpointError(f"--out {run_dir} is in use: another `bmcell train` is still training there; "
                                      "wait for it to end (or stop it), then `--resume` continues the run") from None
            except OSError:  # a file system without locks: run unguarded
                pass
        yield
    finally:
        _HELD.discard(key)
        if descriptor is not None:
            os.close(descriptor)  # releases the lock
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def check_before_start(config: TrainConfig) -> None:
    """What a new run can check before writing anything: architecture, device and the starting weights (readable
    safetensors that fit the architecture). The data folder, label map, split, --balance-sources and --teacher are
    checked by start_or_resume before config.json is written, and the files it wrote are removed again when it
    refuses them."""
    get_arch(config.arch)
    select_device(config.device)
    if config.weights:  # the classifier layers' shapes may differ (they are skipped), so any class count will do
        load_pretrained(build_model(config.arch, 2, config.input_norm), Path(config.weights))


@contextlib.contextmanager
def _removed_on_failure(run_dir: Path) -> Iterator[None]:
    """Create run_dir when needed; when the block fails (a refusal, an error, Ctrl-C), remove what it added there, so
    that the corrected command can use the same folder."""
    existed = run_dir.is_dir()
    before = {p.name for p in run_dir.iterdir()} if existed else set()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in run_dir.iterdir():
            if path.name not in before:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise


def start_or_resume(config: TrainConfig, resume: bool, warn: Callable[[str], None]) -> tuple[PreparedData, bool]:
    """Prepare a new run folder, or reopen an existing one; returns the data and whether an epoch can be resumed.
    A new run is checked before its first write, and a refused one leaves the folder as it found it; a resumed
    run's config.json records where the folder is now."""
    run_dir = Path(config.out)
    check_out_folder(run_dir, resume, config.data)
    if resume:
        data = load_prepared(Path(config.data), run_dir)
        here = read_config(run_dir)
        if here != json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")):  # moved, copied, another path
            atomic_write_json(run_dir / CONFIG_FILE, here)
        return data, (run_dir / RESUME_FILE).is_file()
    label_map = resolve_label_map(config.label_map)
    check_before_start(config)
    with _removed_on_failure(run_dir):
        data = prepare_data(Path(config.data), label_map, run_dir, config.seed, config.val_fraction, config.strict,
                            warn, Path(config.split) if config.split else None)
        if config.balance_sources:  # refused now, not at the first batch, so that no started run is left behind
            record_sources(data.root, [r.path for r in data.train])
        if config.teacher:  # the same: a teacher of other classes or inputs is refused before the run starts
            arch = get_arch(config.arch)
            load_teacher(Path(config.teacher), data.classes, config.image_size, arch.mean, arch.std)
        atomic_write_json(run_dir / CONFIG_FILE, config.to_dict())  # the last write: from here the run has started
    return data, False


def _checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About the bytes of a run's checkpoints: best and last weights, and the resume state (weights and the
    optimizer's tensors)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(v.numel() * v.element_size() for values in optimizer.state.values() for v in values.values()
                  if isinstance(v, torch.Tensor))
    return 3 * weights + moments


def _not_saved(run_dir: Path, epoch: int, error: Exception, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """What a full disk stopped, what it left intact, how much space a save takes and how to continue."""
    cause = str(error) if isinstance(error, DiskFullError) else f"no space left on the disk of {run_dir} ({error})"
    kept = []
    for name in ("last", "best"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            saved_epoch = json.loads((run_dir / f"{name}.json").read_text(encoding="utf-8"))["epoch"]
            kept.append(f"{name}.json (epoch {saved_epoch})")
    resumes_at = epoch if (run_dir / RESUME_FILE).is_file() else 1  # the resume state is the last file saved
    size = format_bytes(_checkpoint_bytes(model, optimizer))
    return (f"saving epoch {epoch} stopped: {cause}. A run's checkpoints take about {size} in all (best, last and "
            "the resume state), and each new one is written beside the one it replaces. "
            + (f"The last good checkpoints are intact: {', '.join(kept)}. " if kept else "No epoch was saved yet. ")
            + f"Free some space, then `bmcell train --out {run_dir} --resume` continues at epoch {resumes_at}.")


def save_epoch(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: RunState,
                history: list[dict], is_best: bool, meta: dict) -> None:
    """Write the best (when it is) and last checkpoints, the metrics and curves, then the resume state. A full disk
    ends the run with a DiskFullError that says what was kept and how to continue; every file is whole either way."""
    try:
        if is_best:
            save_checkpoint(run_dir, "best", model, meta)
        save_checkpoint(run_dir, "last", model, meta)
        write_history(run_dir, history)
        save_resume_state(run_dir, model, optimizer, state.__dict__)
    except (OSError, DiskFullError) as error:  # curves.png is drawn by matplotlib: its error is a plain OSError
        if not is_disk_full(error):
            raise
        raise DiskFullError(_not_saved(run_dir, state.epoch, error, model, optimizer)) from None


def store_novelty(json_path: Path, root: Path, train: list[ImageRecord], val: list[ImageRecord],
                  device: torch.device, batch_size: int = 64, workers: int = 0,
                  fitted: dict[str, Novelty] | None = None) -> Novelty:
    """Fit a checkpoint's per-image novelty (the features of bank_pick's training images, the radius on the
    validation images) and save it into that checkpoint, in place. fitted: novelty already fitted, by weights
    sha256 (a run's best and last checkpoints often hold the same weights); the new fit is added to it."""
    checkpoint = load_checkpoint(json_path)
    model = checkpoint.build_model()
    transform = eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std)

    def features(records: list[ImageRecord]):
        dataset = CellImageDataset(root, records, checkpoint.classes, transform)
        return novelty_features(model, make_loader(dataset, batch_size, workers), device)

    fitted = {} if fitted is None else fitted
    if checkpoint.weights_sha256 not in fitted:
        fitted[checkpoint.weights_sha256] = fit_novelty(features(bank_pick(train)), features(val))
    novelty = fitted[checkpoint.weights_sha256]
    body = {k: v for k, v in checkpoint.meta.items() if k not in SAVED_KEYS}
    save_checkpoint(Path(json_path).parent, Path(json_path).stem, model, body | {"novelty": novelty.to_meta()},
                    novelty.tensors())
    return novelty

"""`bmcell compare`: several backbones trained and measured under one protocol on one split, in one table (the
paper's Tables 1-2: accuracy, balanced accuracy, macro-F1, parameters, FLOPs, CPU latency of eager PyTorch and of
the fastest int8 artefact)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bmcell.core.checkpoint import Checkpoint, load_checkpoint
from bmcell.core.config import TrainConfig
from bmcell.core.device import select_device
from bmcell.core.engine import fit
from bmcell.core.errors import BmcellError
from bmcell.core.evaluation import evaluate_checkpoint, records_for
from bmcell.core.fileio import atomic_write_json
from bmcell.core.models import count_flops, count_parameters, get_arch
from bmcell.core.reports import markdown_cell
from export.bench import BENCH_JSON, bench_row, eager_loader, run_bench
from export.formats import FORMATS
from export.parity import run_parity
from export.pipeline import export_checkpoint, folded_model, validation_set
from export.samples import MIN_GOLDEN, folder_images

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
INT8_FORMATS = ("executorch-int8", "onnx-int8", "ort-int8")


def _finished_epochs(run: Path) -> int:
    """How many epochs a run folder has finished (0 when it holds no checkpoint yet)."""
    last = run / "last.json"
    return json.loads(last.read_text())["epoch"] if last.is_file() else 0


def train_or_reuse(config: TrainConfig, log: Callable[[str], None]) -> Path:
    """best.json of the run in config.out: trained, resumed from its last epoch, or reused when already finished."""
    run = Path(config.out)
    done = _finished_epochs(run)
    if done >= config.epochs:
        log(f"{config.arch}: reusing the finished run in {run}")
        return run / "best.json"
    return fit(config, resume=(run / "config.json").is_file())


def int8_latency(checkpoint: Checkpoint, data: Path, calib: int, runs: int, log: Callable[[str], None]) -> dict:
    """Export the int8 artefacts of a checkpoint (once), check their parity and benchmark them against eager."""
    export_dir = checkpoint.run_dir / "export-int8"
    if not (export_dir / BENCH_JSON).is_file():
        images = folder_images(checkpoint, data, calib, MIN_GOLDEN, log)
        export_checkpoint(checkpoint, [FORMATS[name] for name in INT8_FORMATS], export_dir, images, log)
        run_parity(export_dir, validation_set(checkpoint, images), log)
        run_bench(export_dir, folded_model(checkpoint), runs, 5, log)
    rows = json.loads((export_dir / BENCH_JSON).read_text())["rows"]
    eager, artefacts = rows[0], [r for r in rows[1:] if "p50_ms_all_threads" in r]
    best_int8 = min(artefacts, key=lambda r: r["p50_ms_all_threads"])
    return {"eager_ms": eager["p50_ms_all_threads"], "eager_ms_1_thread": eager["p50_ms_1_thread"],
            "int8_artefact": best_int8["name"], "int8_ms": best_int8["p50_ms_all_threads"],
            "int8_ms_1_thread": best_int8["p50_ms_1_thread"], "int8_val_accuracy": best_int8.get("val_accuracy")}


def eager_latency(checkpoint: Checkpoint, runs: int) -> dict:
    """p50 batch-1 latency of the float model in eager PyTorch, 1 thread and all threads."""
    size = checkpoint.image_size
    example = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    row = bench_row("pytorch-eager", eager_loader(folded_model(checkpoint)), None, example, runs, 5)
    return {"eager_ms": row["p50_ms_all_threads"], "eager_ms_1_thread": row["p50_ms_1_thread"]}


def arch_row(best: Path, data: Path, int8: bool, calib: int, runs: int, log: Callable[[str], None]) -> dict:
    """One table row: validation metrics (per class too), size, FLOPs and latency of one trained backbone."""
    checkpoint = load_checkpoint(best)
    records = records_for(checkpoint, data, "val", log)
    report = evaluate_checkpoint(checkpoint, records, data, checkpoint.run_dir / "eval-val", select_device("auto"),
                                 64, 0)
    model = checkpoint.build_model()
    latency = int8_latency(checkpoint, data, calib, runs, log) if int8 else eager_latency(checkpoint, runs)
    return {"arch": checkpoint.arch, "epoch": checkpoint.epoch, "checkpoint": str(best),
            "split_sha256": checkpoint.split_sha256, "val_images": report["images"],
            "accuracy": report["accuracy"], "balanced_accuracy": report["balanced_accuracy"],
            "macro_f1": report["macro_f1"], "per_class": report["per_class"],
            "params": count_parameters(model), "gflops": count_flops(model, checkpoint.image_size) / 1e9, **latency}


def compare_architectures(data: Path, archs: list[str], out: Path, base: TrainConfig, int8: bool, calib: int,
                          runs: int, log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) every backbone in out/<arch> with the same protocol and split; write compare.json/.md."""
    if not archs:
        raise BmcellError("--archs names no architecture")
    duplicates = sorted({a for a in archs if archs.count(a) > 1})
    if duplicates:
        raise BmcellError(f"--archs names {duplicates} more than once")
    for arch in archs:
        get_arch(arch)  # every name checked before hours of training
    rows = []
    for arch in archs:
        config = TrainConfig(**(base.to_dict() | {"arch": arch, "data": str(data), "out": str(out / arch)}))
        log(f"[{len(rows) + 1}/{len(archs)}] {arch}")
        rows.append(arch_row(train_or_reuse(config, log), data, int8, calib, runs, log))
    splits = {row["split_sha256"] for row in rows}
    if len(splits) != 1:
        raise BmcellError(f"the runs in {out} were trained on different splits ({sorted(splits)}); compare needs one "
                          "split: use a fresh --out or the same --seed, --val-fraction and --label-map for every arch")
    report = {"data": str(data), "protocol": {k: v for k, v in base.to_dict().items() if k not in ("out", "data")},
              "split_sha256": splits.pop(), "latency": {"batch": 1, "device": "cpu", "runs": runs}, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / COMPARE_JSON, report)
    (out / COMPARE_MD).write_text(compare_markdown(report), encoding="utf-8")
    return report


def compare_markdown(report: dict) -> str:
    """The comparison as a Markdown table, with the protocol and the per-class recall of every backbone."""
    rows = report["rows"]
    protocol = report["protocol"]
    lines = [f"# Backbones on {report['data']} ({rows[0]['val_images']} validation images, one split "
             f"{report['split_sha256'][:12]})", "",
             f"Protocol: {protocol['epochs']} epochs, {protocol['image_size']} px, batch {protocol['batch_size']}, "
             f"lr {protocol['lr']}, augment {protocol['augment']}, balanced sampler {protocol['balanced_sampler']}, "
             f"label map {protocol['label_map'] or 'identity'}, seed {protocol['seed']}.", "",
             "| backbone | accuracy | balanced acc | macro-F1 | params (M) | GFLOPs | eager ms | int8 ms (artefact) "
             "| int8 acc |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        int8 = (f"{row['int8_ms']:.1f} ({row['int8_artefact']})" if "int8_ms" in row else "-")
        lines.append(f"| {row['arch']} | {row['accuracy']:.4f} | {row['balanced_accuracy']:.4f} | "
                     f"{row['macro_f1']:.4f} | {row['params'] / 1e6:.2f} | {row['gflops']:.2f} | "
                     f"{row['eager_ms']:.1f} | {int8} | {markdown_cell(row, 'int8_val_accuracy', '.4f')} |")
    classes = list(rows[0]["per_class"])
    lines += ["", "Recall per class:", "", "| backbone | " + " | ".join(classes) + " |",
              "|---|" + "---:|" * len(classes)]
    for row in rows:
        lines.append(f"| {row['arch']} | " + " | ".join(f"{row['per_class'][c]['recall']:.3f}" for c in classes) + " |")
    lines += ["", "Latency: p50 of batch-1 runs on this CPU with all threads (1-thread figures in compare.json); "
              "FLOPs: 2 per multiply-add, torch.utils.flop_counter."]
    return "\n".join(lines) + "\n"

"""The main job end to end on the embedded synthetic cells, small enough for a laptop CPU: synthesize, train,
evaluate, classify a few images, export every target, check parity, measure latency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.config import TrainConfig
from bmcell.core.data.synthetic import write_synthetic_dataset
from bmcell.core.device import select_device
from bmcell.core.engine import fit
from bmcell.core.evaluation import evaluate_checkpoint, records_for, report_summary
from bmcell.core.inference import Classifier
from export.bench import BENCH_MD, run_bench
from export.parity import PARITY_MD, failed_artefacts, run_parity
from export.pipeline import export_checkpoint, folded_model, validation_set
from export.samples import folder_images
from export.targets import select_formats

QUICK = {"arch": "mobilevit_xs", "image_size": 96, "epochs": 10, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 1.0}
QUICK_DATA = {"per_class": 60, "size": 96}
QUICK_EXPORT = {"calib": 128, "golden": 64, "runs": 50, "warmup": 5}


def first_free_folder(base: Path) -> Path:
    """base, or base-2, base-3... whichever does not exist yet."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def latency_lines(bench: dict) -> list[str]:
    """A compact latency table: p50 on all threads, speed-up over eager and validation accuracy per artefact."""
    lines = [f"  {'artefact':<18} {'p50 ms':>7} {'vs eager':>9} {'val acc':>8}"]
    for row in bench["rows"]:
        if "p50_ms_all_threads" not in row:
            lines.append(f"  {row['name']:<18} not run: {row.get('skipped', '')}")
            continue
        accuracy = f"{row['val_accuracy']:.3f}" if row.get("val_accuracy") is not None else "-"
        lines.append(f"  {row['name']:<18} {row['p50_ms_all_threads']:>7.2f} "
                     f"{row.get('speedup_vs_eager', 1.0):>8.2f}x {accuracy:>8}")
    return lines


def parity_summary(report: dict) -> str:
    """One line: how many artefacts passed, failed (named) and could not run here (with why)."""
    rows = report["artefacts"]
    passed = sum(r["status"] == "pass" for r in rows)
    failed = failed_artefacts(report)
    not_run = sorted({r["reason"].removeprefix("not run: ") for r in rows if r["status"] == "not run"})
    line = f"  {passed} of {len(rows)} artefacts within their tolerance tier"
    if failed:
        line += f"; [yellow]outside it: {', '.join(failed)}[/]"
    if not_run:
        line += f"; {sum(r['status'] == 'not run' for r in rows)} not run here ({'; '.join(not_run)})"
    return line


def run_quickstart(out: Path, epochs: int, console: Console, detail: Callable[[str], None]) -> None:
    """Every step into out/, each announced on console; per-artefact lines go to detail."""
    say = console.print
    data = out / "data"
    counts = write_synthetic_dataset(data, **QUICK_DATA)
    say(f"[bold]1/6[/] synthesized {sum(counts.values())} cell images ({len(counts)} classes) in {data}")
    say("[bold]2/6[/] training (a short run; `bmcell train` defaults to the paper's 200 epochs at 256 px)")
    config = TrainConfig(**(QUICK | {"epochs": epochs, "out": str(out / "run"), "data": str(data)}))
    best = fit(config, console=console)
    checkpoint = load_checkpoint(best)
    device = select_device("auto")
    records = records_for(checkpoint, data, "val", say)
    report = evaluate_checkpoint(checkpoint, records, data, out / "run" / "eval-val", device, 64, 0)
    say(f"[bold]3/6[/] validation split: {report_summary(report)}")
    samples = [data / records[i].path for i in range(0, len(records), max(1, len(records) // 4))][:4]
    for prediction in Classifier(checkpoint, device).predict(samples, top_k=3):
        top = ", ".join(f"{c} {p:.2f}" for c, p in prediction.top)
        answer = "uncertain - check by eye" if prediction.uncertain else prediction.top[0][0]
        say(f"  {Path(prediction.image).relative_to(data)} -> {answer} ({top})")
    export_dir = out / "run" / "export"
    formats = select_formats(["all"], "all")
    say(f"[bold]4/6[/] exporting {len(formats)} artefacts (every target, float and int8) to {export_dir}")
    images = folder_images(checkpoint, data, QUICK_EXPORT["calib"], QUICK_EXPORT["golden"], detail)
    export_checkpoint(checkpoint, formats, export_dir, images, detail)
    say("[bold]5/6[/] parity against the float32 reference")
    parity = run_parity(export_dir, validation_set(checkpoint, images), detail)
    say(parity_summary(parity))
    say("[bold]6/6[/] latency (batch 1, this CPU)")
    bench = run_bench(export_dir, folded_model(checkpoint), QUICK_EXPORT["runs"], QUICK_EXPORT["warmup"], detail)
    say("\n".join(latency_lines(bench)), highlight=False)
    say(f"\n[bold green]done.[/] data: {data}\n  checkpoint: {best} (+ .safetensors)\n"
        f"  curves: {out / 'run' / 'curves.png'}\n  evaluation: {out / 'run' / 'eval-val'}/report.md, confusion.png\n"
        f"  mobile artefacts: {export_dir} (manifest.json)\n  parity: {export_dir / PARITY_MD}\n"
        f"  latency: {export_dir / BENCH_MD}, bench.png\n"
        f"next: bmcell train --data YOUR_FOLDER --out runs/mine   (one sub-folder of images per class)")

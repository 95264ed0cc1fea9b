"""`bmcell quickstart`: the whole main job on the embedded synthetic cells, small enough for a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors

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


@reports_errors
def quickstart(
    out: Optional[Path] = typer.Option(None, help="Folder for everything it makes [default: runs/quickstart, or -2, -3...]."),
    epochs: int = typer.Option(QUICK["epochs"], help="Training epochs."),
) -> None:
    """Synthesize cells, train MobileViT-XS briefly, evaluate it, classify a few images, export every target, check
    parity and measure latency; prints where it all is."""
    from bmcell.checkpoint import load_checkpoint
    from bmcell.config import TrainConfig
    from bmcell.data.synthetic import write_synthetic_dataset
    from bmcell.engine import fit, select_device
    from bmcell.evaluation import evaluate_checkpoint, records_for, report_summary
    from bmcell.inference import Classifier
    from export.bench import BENCH_MD, run_bench
    from export.parity import PARITY_MD, failed_artefacts, run_parity
    from export.pipeline import export_checkpoint, folded_model, validation_set
    from export.targets import select_formats

    out = out or first_free_folder(Path("runs/quickstart"))
    data = out / "data"
    counts = write_synthetic_dataset(data, **QUICK_DATA)
    console.print(f"[bold]1/6[/] synthesized {sum(counts.values())} cell images in {data}: {counts}")
    console.print("[bold]2/6[/] training (a short run; `bmcell train` defaults to the paper's 200 epochs at 256 px)")
    config = TrainConfig(**(QUICK | {"epochs": epochs, "out": str(out / "run"), "data": str(data)}))
    best = fit(config, console=console)
    checkpoint = load_checkpoint(best)
    device = select_device("auto")
    records = records_for(checkpoint, data, "val", console.print)
    report = evaluate_checkpoint(checkpoint, records, data, out / "run" / "eval-val", device, 64, 0)
    console.print(f"[bold]3/6[/] validation split: {report_summary(report)}")
    samples = [data / records[i].path for i in range(0, len(records), max(1, len(records) // 4))][:4]
    for prediction in Classifier(checkpoint, device).predict(samples, top_k=3):
        top = ", ".join(f"{c} {p:.2f}" for c, p in prediction.top)
        answer = "uncertain - check by eye" if prediction.uncertain else prediction.top[0][0]
        console.print(f"  {Path(prediction.image).relative_to(data)} -> {answer} ({top})")
    export_dir = out / "run" / "export"
    console.print(f"[bold]4/6[/] exporting every target (fp32/fp16 and int8) to {export_dir}")
    export_checkpoint(checkpoint, select_formats(["all"], "all"), export_dir, data, QUICK_EXPORT["calib"],
                      QUICK_EXPORT["golden"], console.print)
    console.print("[bold]5/6[/] parity against the float32 reference")
    failed = failed_artefacts(run_parity(export_dir, validation_set(checkpoint, data), console.print))
    console.print("[bold]6/6[/] latency (batch 1, this CPU)")
    run_bench(export_dir, folded_model(checkpoint), QUICK_EXPORT["runs"], QUICK_EXPORT["warmup"], console.print)
    console.print((export_dir / BENCH_MD).read_text())
    verdict = (f"[yellow]outside their tolerance tier: {', '.join(failed)}[/] (see parity.md; `bmcell parity` exits 1 "
               "on this)" if failed else "[green]every runnable artefact within its tier[/]")
    console.print(
        f"\n[bold green]done.[/] data: {data}\n  checkpoint: {best} (+ .safetensors)\n"
        f"  curves: {out / 'run' / 'curves.png'}\n  evaluation: {out / 'run' / 'eval-val'}/report.md, confusion.png\n"
        f"  mobile artefacts: {export_dir} (manifest.json)\n  parity: {export_dir / PARITY_MD}: {verdict}\n"
        f"  latency: {export_dir / BENCH_MD}, bench.png\n"
        f"next: bmcell train --data YOUR_FOLDER --out runs/mine   (one sub-folder of images per class)"
    )

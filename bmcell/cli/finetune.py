"""`bmcell finetune [RUN] --data LABDIR --out RUN2`: adapt a model to one lab from a few labelled cells per class."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.crosslab import read_class_map
from bmcell.core.finetune import DEFAULT_FOLDS, MIN_PER_CLASS, Recipe
from bmcell.core.releases import refuse_out_inside_release
from bmcell.jobs.lab import finetune_run
from bmcell.jobs.release import MODELS_DIR, default_checkpoint


def _percent(scores: dict) -> str:
    """Accuracy with its 95% interval, as percentages."""
    low, high = scores["interval"]
    return f"{scores['accuracy']:.1%} (95% interval {low:.0%}-{high:.0%}, {scores['images']} cells)"


@reports_errors
def finetune(
    checkpoint: Optional[Path] = typer.Argument(None, help="Run folder (uses best), NAME.json or NAME.safetensors "
                                                "(default: the released model in models/)."),
    data: Path = typer.Option(..., "--data", help=f"The lab's labelled cells, one folder per class in the model's "
                              f"class names (or synonyms, or --class-map); at least {MIN_PER_CLASS} per class, about "
                              "20 is better; classes the lab lacks may be missing."),
    out: Path = typer.Option(..., help="New folder for the adapted model (never overwritten)."),
    class_map: Optional[Path] = typer.Option(None, help="YAML/JSON 'folder name: model class' (null leaves a "
                                             "folder out)."),
    own_data: Optional[Path] = typer.Option(None, help="The model's training folder to replay (default: the "
                                            "recorded one, else the release's sample set)."),
    folds: int = typer.Option(DEFAULT_FOLDS, min=2, help="Folds of the cross-validated accuracy estimate (at most "
                              "the smallest class's cell count)."),
    epochs: int = typer.Option(Recipe.epochs, min=1, help="Passes over the lab's cells (4 views each)."),
    seed: int = typer.Option(Recipe.seed, help="Seed of the folds and of the training draws."),
    verbose: bool = VERBOSE,
) -> None:
    """Adapt a model to a lab with a few of its labelled cells: trains the model's last layers on them while
    replaying its own training images (no class is forgotten), estimates the accuracy on the lab's next cells by
    k-fold cross-validation, and refits the confidence rule on the lab's cells."""
    refuse_out_inside_release(out, MODELS_DIR)
    source = load_checkpoint(checkpoint or default_checkpoint())
    mapping = read_class_map(class_map) if class_map else None
    with other_libraries_logged(out.parent if not out.exists() else out, verbose):
        best, report = finetune_run(source, data, out, mapping, own_data, Recipe(epochs=epochs, seed=seed), folds,
                                    lambda line: console.print(line, highlight=False),
                                    lambda m: console.print(f"[yellow]warning:[/] {m}", highlight=False))
    counts = ", ".join(f"{c} {n}" for c, n in report["per_class"].items())
    console.print(f"fine-tuned on {report['cells']} cells of {report['lab']} ({counts}) -> {best}", highlight=False)
    console.print(f"accuracy on this lab's cells: before {_percent(report['lab_before'])}; after, cross-validated "
                  f"({report['folds']}-fold) {_percent(report['lab_cross_validated'])}", highlight=False)
    console.print(f"its own data ({report['own_data']}): {report['own_data_before']['accuracy']:.1%} before, "
                  f"{report['own_data_after']['accuracy']:.1%} after", highlight=False)
    before, after = report["lab_before"]["accuracy"], report["lab_cross_validated"]["accuracy"]
    if after < before:
        console.print(f"[yellow]note:[/] on these cells the model as it was answered better ({before:.1%}) than "
                      f"fine-tuned ({after:.1%}, cross-validated): keep using it, or label more cells and try again",
                      highlight=False)
    if report["classes_not_labelled"]:
        kept = report["own_data_after"]["recall"]
        console.print("classes this lab did not label, kept from replay (recall on its own data): " + ", ".join(
            f"{c} {kept[c]:.0%}" for c in report["classes_not_labelled"] if c in kept), highlight=False)
    console.print(f"next: `bmcell check {out} --images PHOTOS`, `bmcell export {out} --target ...`", highlight=False)

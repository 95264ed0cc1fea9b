"""`bmcell release RUN --name NAME --data DIR`: package a checkpoint as a released model with its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.errors import BmcellError
from bmcell.jobs.release import MODEL_CARD, MODELS_DIR, package_release


@reports_errors
def release(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses best), NAME.json or NAME.safetensors."),
    name: str = typer.Option(..., help="Folder name under models/, e.g. mobilevit_xs-pbc8: a plain name, not a path."),
    data: Optional[Path] = typer.Option(None, help="The dataset it was trained on (default: the checkpoint's)."),
    other: list[Path] = typer.Option([], help="Another lab's class-per-folder images to report on; repeatable."),
    reference_images: int = typer.Option(64, min=64, help="Named validation images whose reference logits are kept."),
    reference_logits_file: Optional[Path] = typer.Option(
        None, "--reference-logits", help="reference_logits.json computed elsewhere (e.g. on a GPU machine) for these "
        "weights; checked, then used."),
    note: str = typer.Option("", help="How it was trained (hardware, wall time, what was shortened)."),
    attribution: str = typer.Option("", help="Licences and attribution of the training images, written in the model "
                                    "card's data section and beside the sample images the release ships "
                                    "(samples/README.md); needed for a source that is not on record (the card says "
                                    "which)."),
    models_dir: Optional[Path] = typer.Option(None, help="Where released models live (default: the repo's models/)."),
    evidence: list[Path] = typer.Option([], help="A Markdown file of further measurements (e.g. "
                                        "scripts/leave_one_lab_out.py's lolo.md, with its command), appended to the "
                                        "model card; repeatable."),
    views: int = typer.Option(1, help="8: the released model answers as the mean of its answers on the picture's 8 "
                              "symmetries (rotations and mirrors), in every artefact; its confidence is refitted "
                              "for it. 8x the compute per picture."),
) -> None:
    """Copy weights, metadata and split into models/NAME, evaluate on the validation split and on other labs'
    images, write reference logits for named images (reference_logits.json) and a model card from those numbers."""
    folder = load_checkpoint(checkpoint).data_folder(data)
    try:
        measured = "\n\n".join(Path(file).read_text(encoding="utf-8").strip() for file in evidence)
    except (OSError, UnicodeDecodeError) as error:
        raise BmcellError(f"--evidence: cannot read it as UTF-8 Markdown ({error})") from None
    dest = package_release(checkpoint, name, folder, other, reference_images, note, models_dir or MODELS_DIR,
                           console.print, reference_logits_file, attribution, measured, views)
    console.print((dest / MODEL_CARD).read_text())
    console.print(f"released {dest}")

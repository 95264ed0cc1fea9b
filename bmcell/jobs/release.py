"""`bmcell release`: package a trained checkpoint as a released model in models/<name>/ — weights, metadata, split,
evaluation reports on its own validation split and on other labs' images, a file of reference logits for
named images, and a model card generated from those numbers."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bmcell.core.checkpoint import SAVED_KEYS, Checkpoint, load_checkpoint, metadata_digest, save_checkpoint
from bmcell.core.confidence import fit_confidence
from bmcell.core.crosslab import CROSSLAB_JSON, CROSSLAB_MD, crosslab_report, markdown_table
from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.prepare import SPLIT_FILE, load_prepared
from bmcell.core.data.sources import SOURCES_FILE, record_sources
from bmcell.core.data.synthetic import is_synthetic_image
from bmcell.core.device import device_description, select_device
from bmcell.core.errors import BmcellError
from bmcell.core.evaluation import checkpoint_logits, evaluate_checkpoint, records_for
from bmcell.core.fileio import atomic_write_bytes, atomic_write_json, check_plain_name, sha256_path, staged_folder
from bmcell.core.models import is_mobilevit
from bmcell.core.novelty import STYLE_STAGE, UNKNOWN_TEXT, Novelty, split_output
from bmcell.core.releases import RELEASE_FILE
from bmcell.core.reports import markdown_report
from bmcell.core.run_folder import store_novelty
from bmcell.core.views import VIEW_COUNTS
from export.golden import reference_outputs
from export.samples import (
    DEFAULT_CALIBRATION,
    SAMPLES_DIR,
    SAMPLES_FILE,
    SAMPLES_FORMAT,
    SAMPLES_VERSION,
    balanced_pick,
    checkpoint_split,
    load_unit_images,
)

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = MODELS_DIR / "mobilevit_xs-pbc8-chula-bccd"
REFERENCE_LOGITS_FILE = "reference_logits.json"
MODEL_CARD = "MODEL_CARD.md"
RELEASE_CHECKPOINT = "best.json"  # a release's checkpoint, whichever of its run's it was
CROSSLAB_DIR = "crosslab"
NON_CELL_IMAGES = 160


def default_checkpoint() -> Path:
    """The released model's checkpoint (DEFAULT_MODEL/best.json), or an error saying how to get one."""
    path = DEFAULT_MODEL / RELEASE_CHECKPOINT
    if not path.is_file():
        raise BmcellError(f"no checkpoint given and no released model at {DEFAULT_MODEL}; pass a run folder "
                          "(see `bmcell train`)")
    return path


def _reference_on_this_machine(checkpoint: Checkpoint, data: Path, records: list[ImageRecord]
                               ) -> tuple[torch.Tensor, str, np.ndarray, np.ndarray | None]:
    """The records through the input contract, this machine's best device (named), and its float32 logits and
    novelty (None for a model without novelty)."""
    inputs = load_unit_images(data, records, checkpoint.image_size)
    device = select_device("auto")
    logits, novelty = split_output(reference_outputs(checkpoint, inputs, device), len(checkpoint.classes))
    return inputs, device_description(device), logits, novelty


def write_reference_logits(checkpoint: Checkpoint, data: Path, records: list[ImageRecord], path: Path) -> dict:
    """Reference float32 logits (and novelty, when the model has it) of named images (best device, TF32 off) with
    the statistics of their inputs."""
    inputs, device, logits, novelty = _reference_on_this_machine(checkpoint, data, records)
    reference = {"source_weights_sha256": checkpoint.weights_sha256, "device": device,
              "tf32": "off", "torch": torch.__version__, "image_size": checkpoint.image_size,
              "classes": checkpoint.classes,
              "images": [{"path": record.path, "input_mean": inputs[i].mean((1, 2)).tolist(),
                          "input_std": inputs[i].std((1, 2)).tolist(), "logits": logits[i].tolist(),
                          "top1": checkpoint.classes[int(logits[i].argmax())]}
                         | ({} if novelty is None else {"novelty": float(novelty[i])})
                         for i, record in enumerate(records)]}
    atomic_write_json(path, reference)
    return reference


GOLDEN_TOLERANCE = 1e-3  # |logit here - logit there| <= tolerance * (1 + |logit there|), float32 on two devices


def adopt_reference_logits(checkpoint: Checkpoint, data: Path, val: list[ImageRecord], source: Path, path: Path) -> dict:
    """Take reference logits computed elsewhere (e.g. on a GPU machine) after checking it belongs to these weights and
    this validation split and that this machine reproduces its logits within GOLDEN_TOLERANCE."""
    try:
        reference = json.loads(Path(source).read_text(encoding="utf-8"))
        names = [entry["path"] for entry in reference["images"]]
        expected = np.array([entry["logits"] for entry in reference["images"]], dtype=np.float32)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise BmcellError(f"--reference-logits {source}: not a reference-logits file written by `bmcell release` "
                          f"({error})") from None
    if reference.get("source_weights_sha256") != checkpoint.weights_sha256:
        raise BmcellError(f"--reference-logits {source} holds logits of other weights (sha256 "
                          f"{str(reference.get('source_weights_sha256'))[:12]}...); compute it for this checkpoint")
    by_path = {record.path: record for record in val}
    outside = [name for name in names if name not in by_path]
    if outside:
        raise BmcellError(f"--reference-logits {source} names {len(outside)} image(s) outside the validation split, "
                          f"e.g. {outside[:3]}")
    _, device, here, novelty = _reference_on_this_machine(checkpoint, data, [by_path[name] for name in names])
    error = float((np.abs(here - expected) / (1 + np.abs(expected))).max())
    if error > GOLDEN_TOLERANCE:
        raise BmcellError(f"--reference-logits {source}: this machine's logits differ by {error:.2e} (relative) from the "
                          f"file's; more than {GOLDEN_TOLERANCE:g}: different images or preprocessing?")
    reproduced = {"device": device, "max_relative_error": error}
    if novelty is not None and any("novelty" not in entry for entry in reference["images"]):
        # a file from before novelty: this machine's novelty completes it, so that parity can hold artefacts to it
        reference["images"] = [{"novelty": float(score)} | entry for entry, score in zip(reference["images"], novelty)]
        reproduced["novelty"] = "computed here: the file had none"
    atomic_write_json(path, reference | {"reproduced_on": reproduced})
    return reference


def _metrics_rows(report: dict) -> list[str]:
    """Markdown rows of precision, recall, F1 and support per class."""
    return [f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
            for name, row in report["per_class"].items() if row["support"]]


DATASET_CREDITS = {  # a source's folder name -> its citation and licence, as its README states them
    "pbc": "PBC: Acevedo A, Merino A, Alférez S, Molina Á, Boldú L, Rodellar J. *A dataset of microscopic "
           "peripheral blood cell images for development of automatic recognition systems.* Data in Brief 30 (2020) "
           "105474, doi:10.1016/j.dib.2020.105474 (Mendeley Data snkd93bnjr v1); healthy donors, Hospital Clinic of "
           "Barcelona, CellaVision DM96, May-Grünwald-Giemsa. Released, as we understand it, under CC BY 4.0 — "
           "confirm on that record before redistributing.",
    "chula_wbc": "chula_wbc: the \"WBC_Dataset\" of the Embedded System and IC Design Laboratory, Chulalongkorn "
                 "University, Bangkok (github.com/singgihbekti/WBC_Dataset, commit 45759ab; MIT licence; cite the "
                 "repository); a Raspberry Pi camera on a microscope, cropped to single cells.",
    "bccd": "bccd: white-cell crops of the BCCD blood-smear photographs (github.com/apple2373/BCCD, commit "
            "7751031e, from the MIT-licensed BCCD_Dataset; no licence of its own: research and testing; cite the "
            "repositories).",
}


SYNTHETIC = "synthetic"  # what a source is when `bmcell synth` drew every image of it


def source_kinds(data: Path, paths: list[str], sources: dict | None) -> dict[str, str]:
    """Each training source (a `bmcell combine` source of sources.json, else the training folder data) by name →
    what it is: SYNTHETIC when `bmcell synth` drew every one of its images among paths (relative to data), else
    its folder's name (a DATASET_CREDITS key for a dataset on record)."""
    if sources:
        roots = {name: Path(source["root"]).name for name, source in sources["sources"].items()}
        owners = record_sources(data, paths)
    else:
        folder = Path(data).resolve().name
        roots, owners = {folder: folder}, [folder] * len(paths)
    drawn = dict.fromkeys(roots, True)
    for owner, path in zip(owners, paths):
        drawn[owner] = drawn[owner] and is_synthetic_image(Path(data) / path)  # stops reading at a real image
    return {name: SYNTHETIC if drawn[name] else root for name, root in roots.items()}


def _credit(name: str, kind: str) -> str:
    """One source's line of the model card's data section: its citation and licence when on record."""
    if kind == SYNTHETIC:
        return (f"{name}: synthetic cells drawn by `bmcell synth` (bmcell's own generator: no patient's or donor's "
                "cells, no third-party data; Apache-2.0, like the code).")
    return DATASET_CREDITS.get(kind, f"{kind}: no citation or licence on record; its licence and citation are yours "
                                     "to state (`bmcell release --attribution`) before sharing the model.")


def data_credits(kinds: dict[str, str], attribution: str = "") -> list[str]:
    """The model card's data lines: each training source's citation and licence (source_kinds), the attribution
    given at release (--attribution), and the weights' terms."""
    lines = [f"- {_credit(name, kind)}" for name, kind in kinds.items()]
    if attribution.strip():
        lines += ["", f"Attribution given at release: {attribution.strip()}"]
    return lines + ["", "These weights derive from the data above and carry its attribution. Code: Apache-2.0."]


def model_card(name: str, checkpoint: Checkpoint, reports: dict[str, dict], reference: dict, note: str,
               kinds: dict[str, str], crosslab: dict | None = None, sources: dict | None = None, evidence: str = "",
               attribution: str = "") -> str:
    """The model card: what it is, data and licence (kinds: source_kinds; attribution: --attribution), split,
    metrics per class, novelty, further measurements (evidence: Markdown measured by scripts, with their
    commands), intended use and limitations."""
    config = checkpoint.config
    lines = [f"# {name}", "",
             f"{checkpoint.arch} (timm, trained from scratch) classifying {len(checkpoint.classes)} peripheral-blood cell "
             f"classes at {checkpoint.image_size}x{checkpoint.image_size}: {', '.join(checkpoint.classes)}.", "",
             "**Research use only. Not a medical device; not for diagnosis or patient management.**", "",
             "## Training", "", note, "",
             f"Protocol: {json.dumps({k: _portable_name(config.get(k)) for k in ('epochs', 'image_size', 'batch_size', 'lr', 'augment', 'weights', 'balanced_sampler', 'seed', 'val_fraction')})}; "
             f"best epoch {checkpoint.epoch} by validation macro-F1. Split: `{SPLIT_FILE}` ("
             + ("made by `bmcell combine`, see `sources.json`: grouped sources by series, the others by image"
                if sources else "stratified by class, image-level")
             + "), sha256 " + checkpoint.split_sha256[:16] + "...", "",
             "## Data and licence", "", *data_credits(kinds, attribution), "",
             "## Metrics", ""]
    for label, report in reports.items():
        lines += [f"### {label}: accuracy {report['accuracy']:.4f}, balanced accuracy "
                  f"{report['balanced_accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f} ({report['images']} images)",
                  "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|",
                  *_metrics_rows(report), ""]
    lines += ["## Other labs", ""]
    if crosslab:
        lines += [f"`bmcell crosslab` on other labs' images (classes mapped onto the model's; files in "
                  f"`{CROSSLAB_DIR}/`). A figure below its folder's majority baseline is worse than always answering "
                  "that folder's most common class.", "", *markdown_table(crosslab), ""]
    else:
        lines += ["Not measured at release: run `bmcell crosslab` on your own labelled images before relying on it.",
                  ""]
    tuned = checkpoint.finetuned_on
    if tuned:
        low, high = tuned["interval"]
        lines += ["## Adapted to a lab", "",
                  f"`bmcell finetune` adapted it to {tuned['lab']} with {tuned['cells']} of that lab's labelled cells "
                  f"({', '.join(f'{c} {n}' for c, n in tuned['per_class'].items())}; digest "
                  f"{tuned['cells_sha256'][:16]}...): {tuned['folds']}-fold cross-validated accuracy on them "
                  f"{tuned['accuracy']:.3f} (95% interval {low:.3f}-{high:.3f}). Classes it did not label, kept by "
                  f"replaying the source model's own images: {', '.join(tuned['classes_not_labelled']) or 'none'}.",
                  ""]
    confidence = checkpoint.confidence
    lines += ["## Confidence", "",
              (f"Probabilities are calibrated with temperature {confidence.temperature:.3f} and an answer is given "
               f"only when the top probability is at least {confidence.threshold:.3f} (otherwise \"uncertain — "
               f"check by eye\"); fitted on the {confidence.fitted_on} to answer {confidence.coverage_target:.0%} "
               "of them." if confidence else
               "No calibrated confidence: this checkpoint predates it, so `predict` and the apps never say "
               "\"uncertain\"."), ""]
    novelty = checkpoint.novelty
    lines += ["## Pictures unlike its training cells", "",
              (f"Every artefact computes a per-image novelty inside the model: "
               f"{_novelty_distances(novelty)}, over the distance 95% of its validation images stay within "
               f"({novelty.flagged_on_validation:.1%} of them flagged). At 1 or more `predict` and the apps answer "
               f"\"{UNKNOWN_TEXT}\" instead of a class. The share flagged on other labs and on non-cell images is in "
               "the other-lab table above." if novelty else
               "No novelty statistics: this checkpoint predates them, so pictures unlike any training cell still get "
               "a class (or \"uncertain\")."), ""]
    if checkpoint.views > 1:
        lines += ["## Views", "",
                  f"Every artefact answers with the mean of the network's logits over the picture's {checkpoint.views} "
                  "symmetries (four quarter turns, each mirrored: a cell on a slide has no up), computed inside the "
                  f"graph: {checkpoint.views}x the compute of one view. The confidence above was fitted on those mean "
                  "logits; the novelty is the picture's own (as given).", ""]
    if evidence.strip():
        lines += ["## Further measurements", "", evidence.strip(), ""]
    lines += ["## Golden file", "",
              f"`{REFERENCE_LOGITS_FILE}`: float32 reference logits of {len(reference['images'])} named validation "
              f"images, computed on {reference['device']} with TF32 {reference['tf32']} (torch {reference['torch']}); "
              "every exported artefact is "
              f"held against them. `{SAMPLES_DIR}/` holds those images and the int8 calibration images, unchanged, so "
              "that `bmcell export` needs no data folder (their licences: `samples/README.md`).", "",
              "## Intended use", "",
              _intended_use(kinds), "",
              "## Limitations", "",
              "- Image-level split" + (" of the ungrouped sources" if sources else "") + ": images of the same "
              "patient or smear may sit on both sides, so validation figures can be optimistic.",
              _sources_limitation(kinds, sources is not None),
              *(["- Normal cells only (no leukaemia blasts); `ig` pools promyelocytes, myelocytes and "
                 "metamyelocytes."] if "pbc" in kinds.values() else []),
              "- Not a medical device: research use only.", ""]
    return "\n".join(lines)


def _intended_use(kinds: dict[str, str]) -> str:
    """The model card's intended use, from what it was trained on."""
    if set(kinds.values()) == {SYNTHETIC}:
        return "Testing the pipeline (training, export, the apps): its training cells were drawn, not photographed."
    if "pbc" in kinds.values():
        return ("Research and engineering: a starting point for white-cell classification on single-cell crops "
                "similar to PBC's (one cell centred in a square May-Grünwald-Giemsa field, about a third of its "
                "width), and the model the sample apps ship with.")
    return "Research and engineering: white-cell classification on single-cell crops like its training images."


def _sources_limitation(kinds: dict[str, str], combined: bool) -> str:
    """The model card's limitation that follows from what it was trained on."""
    if set(kinds.values()) == {SYNTHETIC}:
        return ("- Trained on synthetic cells only: it shows the pipeline works, it is no model of real microscope "
                "images.")
    if combined:
        return (f"- Trained on {', '.join(kinds)} (`sources.json`, made by `bmcell combine`): a few labs, not every "
                "microscope — measure yours with `bmcell crosslab` before relying on it.")
    if list(kinds.values()) == ["pbc"]:
        return ("- One lab, one scanner (CellaVision DM96, Hospital Clinic of Barcelona): other microscopes, cameras "
                "and stains lower accuracy — see the other-lab figures above.")
    return (f"- One source ({', '.join(kinds)}): other microscopes, cameras and stains lower accuracy — measure yours "
            "with `bmcell crosslab` before relying on it.")


SAMPLE_VALIDATION = 128  # validation images a release ships: its golden set first, then more for accuracy
SAMPLES_README = "README.md"


def write_sample_set(checkpoint: Checkpoint, data: Path, golden: list[ImageRecord], folder: Path,
                     attribution: str, name: str) -> dict:
    """Copy the images an export needs into folder/samples (unchanged bytes, at their split paths): the int8
    calibration images export picks from the training side, the golden set (the reference-logits images) and more
    validation images, with samples.json (paths, labels, sha256) and a README naming their licences."""
    split = checkpoint_split(checkpoint, data)
    names = {r.path for r in golden}
    extra = [r for r in balanced_pick(split.val, SAMPLE_VALIDATION) if r.path not in names]
    validation = golden + extra[:max(0, SAMPLE_VALIDATION - len(golden))]
    calibration = balanced_pick(split.train, DEFAULT_CALIBRATION)
    target = Path(folder) / SAMPLES_DIR

    def copied(record: ImageRecord) -> dict:
        (target / record.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target / record.path, (Path(data) / record.path).read_bytes())
        return {"path": record.path, "label": record.label, "sha256": sha256_path(target / record.path)}

    payload = {"format": SAMPLES_FORMAT, "format_version": SAMPLES_VERSION, "split_sha256": checkpoint.split_sha256,
               "golden": len(golden), "calibration": [copied(r) for r in calibration],
               "validation": [copied(r) for r in validation], "attribution": attribution}
    atomic_write_json(target / SAMPLES_FILE, payload)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    (target / SAMPLES_README).write_text(
        f"# Sample images of {name}\n\n"
        f"{len(calibration) + len(validation)} images ({size / 1e6:.1f} MB) of this model's own split, unchanged, at "
        f"their split paths: {len(calibration)} training images (int8 calibration) and {len(validation)} validation "
        f"images, of which the first {len(golden)} are the golden set of `reference_logits.json`. `bmcell export` "
        "uses them when the training folder is not at hand (`--data DIR` overrides); `samples.json` lists each with "
        "its sha256.\n\n## Licences and attribution\n\n"
        + (attribution or "Those of the datasets named in `../MODEL_CARD.md` (Data and licence).") + "\n",
        encoding="utf-8")
    return payload


def _portable_name(value: object) -> object:
    """A path recorded by the machine that made a release, as its last component (a file keeps its folder's
    name: chula_wbc/labels.csv:column); anything else unchanged."""
    if not isinstance(value, str) or not (value.startswith(("/", "../", "~")) or ":\\" in value[:3]):
        return value
    parts = Path(value).parts
    return "/".join(parts[-2:]) if Path(value).suffix and len(parts) > 1 else Path(value).name


def _portable_checkpoint(path: Path) -> None:
    """best.json without the training machine's paths (the training folder and the run's paths: none), its
    metadata digest renewed; the weights and their sha256 are untouched."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["data"] = None
    meta["config"] = {key: None if _portable_name(value) != value else value
                      for key, value in meta.get("config", {}).items()}
    meta["metadata_sha256"] = metadata_digest(meta)
    atomic_write_json(path, meta)


CHECKPOINT_KEYS = ("checkpoint", "source_checkpoint")  # a checkpoint's metadata file: its name, best.json


def _portable_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON file with the paths under keys (at any depth) reduced to names; returns its content."""
    def portable(key: str, value: str) -> object:
        return Path(value).name if key in CHECKPOINT_KEYS else _portable_name(value)

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {k: portable(k, v) if k in keys and isinstance(v, str) else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    payload = walk(json.loads(path.read_text(encoding="utf-8")))
    atomic_write_json(path, payload)
    return payload


def _copy_as_release_checkpoint(checkpoint: Checkpoint, folder: Path) -> None:
    """The checkpoint (best, last or any NAME.json) as the release's best.json and best.safetensors."""
    weights = Path(RELEASE_CHECKPOINT).with_suffix(".safetensors").name
    shutil.copy2(checkpoint.weights_path, folder / weights)
    meta = json.loads(checkpoint.json_path.read_text(encoding="utf-8"))
    meta["weights"]["file"] = weights
    meta["metadata_sha256"] = metadata_digest(meta)
    atomic_write_json(folder / RELEASE_CHECKPOINT, meta)


def _answering_over_views(checkpoint: Checkpoint, views: int, data: Path, val: list[ImageRecord],
                          device: torch.device) -> Checkpoint:
    """The checkpoint, in place, answering over `views` views (bmcell.core.views), its confidence refitted on the
    validation split's logits from those views (their mean is less extreme than one view's)."""
    if views not in VIEW_COUNTS:
        raise BmcellError(f"--views {views}: use one of {VIEW_COUNTS}")
    body = {k: v for k, v in checkpoint.meta.items() if k not in SAVED_KEYS} | {"views": views}
    viewed = dataclasses.replace(checkpoint, meta=checkpoint.meta | {"views": views})  # in memory, for its logits
    if viewed.confidence is not None:
        logits, targets = checkpoint_logits(viewed, val, data, device, 64, 0)
        body["confidence"] = fit_confidence(logits, targets, viewed.confidence.coverage_target,
                                            "validation split").to_dict()
    novelty = checkpoint.novelty
    save_checkpoint(checkpoint.run_dir, checkpoint.json_path.stem, checkpoint.build_model(), body,
                    novelty.tensors() if novelty else None)
    return load_checkpoint(checkpoint.json_path)


def _novelty_distances(novelty: Novelty) -> str:
    """What a model card says the novelty compares."""
    content = (f"the cosine distance of the picture's pooled features to the nearest of {novelty.bank.shape[0]} "
               "stored training images")
    if novelty.style_bank is None:
        return content
    return (f"the larger of {content} (what it shows) and the same distance for the per-channel mean and spread of "
            f"stage {STYLE_STAGE}'s feature maps (how it looks: texture and colour), each")


def make_release_portable(folder: Path) -> None:
    """Rewrite a release's metadata so that it names no machine's paths: the checkpoint records no training folder,
    reports name folders and files by their names, sources.json its sources by folder name; the Markdown reports
    are regenerated from their JSON."""
    folder = Path(folder)
    _portable_checkpoint(folder / RELEASE_CHECKPOINT)
    arch = json.loads((folder / RELEASE_CHECKPOINT).read_text(encoding="utf-8"))["arch"]
    release = folder / RELEASE_FILE
    if release.is_file():
        _portable_json(release, ("source_checkpoint",))
    if (folder / SOURCES_FILE).is_file():
        recipe_keys = ("root",) + tuple(json.loads((folder / SOURCES_FILE).read_text())["recipe"]["source"])
        _portable_json(folder / SOURCES_FILE, recipe_keys)
    for report in folder.glob("eval-*/report.json"):
        content = _portable_json(report, ("checkpoint", "data"))
        (report.parent / "report.md").write_text(
            markdown_report(content, f"{arch} on {content['data']} ({content['images']} images)"), encoding="utf-8")
    crosslab = folder / CROSSLAB_DIR / CROSSLAB_JSON
    if crosslab.is_file():
        content = _portable_json(crosslab, ("checkpoint", "path"))
        (crosslab.parent / CROSSLAB_MD).write_text("\n".join(markdown_table(content)) + "\n", encoding="utf-8")
    found = recorded_paths(folder)
    if found:
        raise BmcellError(f"{folder} still records paths of this machine, e.g. {found[:3]}")


def recorded_paths(folder: Path) -> list[str]:
    """Every string in the JSON files under folder (the sample images' own folder aside) that is a path of the
    machine that wrote it: absolute, home-relative or leading outside the repository."""
    found = []

    def walk(node: object, file: Path) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value, file)
        elif isinstance(node, list):
            for value in node:
                walk(value, file)
        elif isinstance(node, str) and _portable_name(node) != node:
            found.append(f"{file.relative_to(folder)}: {node}")

    for file in sorted(Path(folder).rglob("*.json")):
        walk(json.loads(file.read_text(encoding="utf-8")), file)
    return found


def package_release(checkpoint_path: Path, name: str, data: Path, others: list[Path], reference_count: int,
                    note: str, models_dir: Path = MODELS_DIR, log: Callable[[str], None] = print,
                    reference_source: Path | None = None, attribution: str = "", evidence: str = "",
                    views: int = 1) -> Path:
    """Write models/<name>/ (built aside, moved in when complete): checkpoint files, evaluations, reference, the
    sample images export needs, the card (evidence: Markdown appended to it); no path of this machine in any of
    it. views: 8 to release the model answering as the mean over the picture's symmetries (bmcell.core.views)."""
    check_plain_name(name, "--name", "mobilevit_xs-pbc8")
    checkpoint = load_checkpoint(checkpoint_path)
    dest = models_dir / name
    if dest.exists():
        raise BmcellError(f"{dest} exists; remove it or choose another --name")
    with staged_folder(dest) as staging:
        _copy_as_release_checkpoint(checkpoint, staging)
        shutil.copy2(checkpoint.run_dir / SPLIT_FILE, staging / SPLIT_FILE)
        if (Path(data).parent / SOURCES_FILE).is_file():  # a `bmcell combine` folder: how to rebuild the data
            shutil.copy2(Path(data).parent / SOURCES_FILE, staging / SOURCES_FILE)
        released = load_checkpoint(staging / RELEASE_CHECKPOINT)
        device = select_device("auto")
        if (released.novelty is None or released.novelty.style_bank is None) and is_mobilevit(released.build_model()):
            # a run trained before novelty, or before its appearance distance: fitted as train fits it today
            prepared = load_prepared(data, released.run_dir, released.split_sha256)
            novelty = store_novelty(released.json_path, prepared.root, prepared.train, prepared.val, device)
            log(f"novelty fitted on {novelty.bank.shape[0]} training images: {novelty.flagged_on_validation:.1%} of "
                "validation images flagged")
            released = load_checkpoint(released.json_path)
        val = records_for(released, data, "val", log)
        if views != released.views:
            released = _answering_over_views(released, views, data, val, device)
            log(f"answers averaged over {views} views; confidence refitted: temperature "
                f"{released.confidence.temperature:.3f}, threshold {released.confidence.threshold:.3f}")
        reports = {}
        reports["own validation split"] = evaluate_checkpoint(released, val, data, staging / "eval-val", device,
                                                              64, 0)
        crosslab = crosslab_report(released, others, staging / CROSSLAB_DIR, device, non_cell=NON_CELL_IMAGES,
                                   warn=log) if others else None
        if reference_source is not None:
            reference = adopt_reference_logits(released, data, val, reference_source,
                                               staging / REFERENCE_LOGITS_FILE)
        elif len(val) < reference_count:
            raise BmcellError(f"the validation split has {len(val)} images; the reference logits need "
                              f"{reference_count}")
        else:
            reference = write_reference_logits(released, data, balanced_pick(val, reference_count),
                                               staging / REFERENCE_LOGITS_FILE)
        atomic_write_json(staging / RELEASE_FILE, {
            "name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_checkpoint": checkpoint.json_path.name, "note": note,
            "metrics": {label: {k: r[k] for k in ("images", "accuracy", "balanced_accuracy", "macro_f1")}
                        for label, r in reports.items()},
            "crosslab": {folder: {k: row[k] for k in ("images", "accuracy", "balanced_accuracy", "macro_f1",
                                                       "majority_baseline", "accuracy_folder_classes")}
                                 | {"abstention": row.get("abstention")}
                         for folder, row in crosslab["folders"].items()} if crosslab else None})
        sources = json.loads((staging / SOURCES_FILE).read_text()) if (staging / SOURCES_FILE).is_file() else None
        split = checkpoint_split(released, data)
        kinds = source_kinds(data, [record.path for record in split.train + split.val], sources)
        (staging / MODEL_CARD).write_text(model_card(name, released, reports, reference, note, kinds, crosslab,
                                                     sources, evidence, attribution),
                                          encoding="utf-8")
        by_path = {record.path: record for record in val}
        write_sample_set(released, data, [by_path[image["path"]] for image in reference["images"]], staging,
                         attribution, name)
        make_release_portable(staging)
    return dest

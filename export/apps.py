"""`bmcell export --app DIR`: copy one artefact, its labels and the manifest into a demo app as `bmcell_model/`."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import bmcell
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import staged_folder
from bmcell.core.releases import RELEASE_FILE
from export.manifest import MANIFEST, preprocessing_contract, read_manifest, verify_artefact
from export.parity import PARITY_JSON

BUNDLE = "bmcell_model"
PLACEHOLDER = "README.md"  # the committed note in an app's empty bundle folder; kept when a model is installed
PRECISIONS = ("auto", "int8", "float")
MODEL_CARD = "MODEL_CARD.md"
# What the apps show beside a class name that a user may not know (the PBC dataset's abbreviations).
CLASS_NAMES = {"ig": "immature granulocytes (promyelocytes, myelocytes, metamyelocytes)",
               "erythroblast": "erythroblast (nucleated red cell precursor)", "platelet": "platelet (thrombocyte)"}


@dataclass(frozen=True)
class App:
    """Where one kind of demo app keeps its model, and which artefacts it runs."""

    marker: str  # a path relative to the app folder that only this kind of app has
    bundle_parent: str  # the folder, relative to the app folder, that receives bmcell_model/
    int8_artefact: str  # the int8 model's artefact name
    float_artefact: str  # the float model's artefact name
    file: str  # the artefact's name inside bmcell_model/


APPS = {
    "android": App("app/build.gradle.kts", "app/src/main/assets", "executorch-int8", "executorch-fp32", "model.pte"),
    "ios": App("BmcellDemo", "BmcellDemo", "coreml-int8", "coreml-fp16", "model.mlpackage"),
    "web": App("sw.js", ".", "onnx-int8", "onnx-fp32", "model.onnx"),
}


def app_target(targets: list[str]) -> str:
    """The one app target (android, ios or web) among --target values that --app installs."""
    found = [t for t in dict.fromkeys(targets) if t in APPS]
    if len(found) != 1:
        raise BmcellError(f"--app needs exactly one of --target {', '.join(APPS)} to know which app it is; "
                          f"got --target {' '.join(targets)}")
    return found[0]


def check_app(kind: str, app_dir: Path, precision: str) -> App:
    """The app of that kind, after checking the folder is one, that its model folder can be written and that
    --app-precision is known (before a long export)."""
    if precision not in PRECISIONS:
        raise BmcellError(f"unknown --app-precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    app = APPS[kind]
    if not (Path(app_dir) / app.marker).exists():
        raise BmcellError(f"{app_dir} does not look like the {kind} demo app: it has no {app.marker}; "
                          f"pass the app's root folder to --app")
    parent = Path(app_dir) / app.bundle_parent
    for folder in (parent, parent / BUNDLE):  # the bundle is built beside the old one, which is then removed
        unwritable = _unwritable(folder)
        if unwritable is not None:
            raise BmcellError(f"--app {app_dir}: cannot write into {unwritable} (read-only); make it writable, or "
                              "copy the app somewhere you may write, and run again")
    return app


def _unwritable(folder: Path) -> Path | None:
    """The folder itself, when it exists and this user may not create or remove files in it (or, when it does not
    exist, the nearest existing folder above it, where it would be made); None when it can be written."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return None if os.access(folder, os.W_OK | os.X_OK) else folder


def parity_rows(export_dir: Path, name: str) -> list[dict]:
    """The artefact's rows of the export folder's parity report: this machine's first, then its rows on ARM64
    kernels when parity ran them (empty without a report or a row)."""
    path = export_dir / PARITY_JSON
    if not path.is_file():
        return []
    return [row for row in json.loads(path.read_text(encoding="utf-8"))["artefacts"] if row["name"] == name]


def parity_row(export_dir: Path, name: str) -> dict | None:
    """The artefact's row of the export folder's parity report on this machine (None without a report or a row)."""
    return next(iter(parity_rows(export_dir, name)), None)


def answers_like_float(row: dict | None) -> bool:
    """True when parity ran the artefact (its row), it passed, and it gave the float model's answer (a class or
    "uncertain") on every golden image."""
    return row is not None and row.get("status") == "pass" and row.get("answer_changes") == 0


def model_card_source(manifest: dict) -> Path | None:
    """The released model's MODEL_CARD.md beside the source checkpoint, when there is one."""
    card = Path(manifest["source_checkpoint"]["path"]).parent / MODEL_CARD
    return card if card.is_file() else None


def choose_artefact(manifest: dict, export_dir: Path, app: App, precision: str) -> dict:
    """The manifest entry to install. auto: int8 when exported, passed parity and answers as the float model does
    on every golden image, on this machine and on every ARM64 CPU model parity ran it on, else float. An int8
    artefact whose answers differ is refused even when asked for: the confidence rule was fitted on the float model,
    and the app would answer where `bmcell predict` is uncertain."""
    entries = {entry["name"]: entry for entry in manifest["artefacts"]}
    if precision == "auto":
        rows = parity_rows(export_dir, app.int8_artefact)
        int8 = app.int8_artefact in entries and bool(rows) and all(answers_like_float(row) for row in rows)
        wanted = app.int8_artefact if int8 else app.float_artefact
    else:
        wanted = app.int8_artefact if precision == "int8" else app.float_artefact
    if wanted not in entries:
        raise BmcellError(f"{export_dir} has no {wanted} artefact (it has {', '.join(entries) or 'none'}); "
                          f"export it first, e.g. `bmcell export RUN --target ... --quantize all`")
    for row in parity_rows(export_dir, wanted):
        where = f" on arm64 {row['cpu']}" if "cpu" in row else ""
        if row.get("status") == "fail":
            raise BmcellError(f"{wanted} failed parity{where} ({'; '.join(row.get('failures', []))}): not "
                              f"installed; see {export_dir / 'parity.md'}")
        changes = row.get("answer_changes") or 0
        if wanted == app.int8_artefact and changes:
            raise BmcellError(f"{wanted} answers differently from the float model{where} on {changes} golden "
                              f"image(s) ({export_dir / 'parity.md'}): installing it would make the app answer where "
                              "`bmcell predict` says uncertain, or the reverse; use --app-precision float (or auto)")
    return entries[wanted]


def precision_words(entry: dict, parity: dict, golden_images: int) -> str:
    """The precision an app runs, in words a technician reads: full precision, or a compact version and whether
    it was seen to give the full model's answers."""
    if entry["precision"] == "fp32":
        return "full-precision version"
    kind = {"int8": "compact 8-bit version", "fp16": "half-precision version"}.get(entry["precision"],
                                                                                  entry["precision"])
    if answers_like_float(parity):
        return f"{kind}: gives the full model's answers on all {golden_images} reference cells checked"
    return f"{kind}: not checked against the full model on this machine"


def lab_scores(source_folder: Path) -> list[dict]:
    """Per lab, what the released model scored at release (release.json's crosslab rows): set, images, accuracy;
    empty for a checkpoint that is not a release or was measured on no other lab."""
    path = source_folder / RELEASE_FILE
    if not path.is_file():
        return []
    crosslab = json.loads(path.read_text(encoding="utf-8")).get("crosslab") or {}
    return [{"set": name, "images": row["images"], "accuracy": row["accuracy"]} for name, row in crosslab.items()]


def adapted_to(manifest: dict) -> dict | None:
    """The lab a `bmcell finetune` adapted the model to: its name, labelled cells and cross-validated accuracy."""
    tuned = manifest.get("finetuned_on")
    return {k: tuned[k] for k in ("lab", "cells", "accuracy", "interval")} if tuned else None


def app_model_json(manifest: dict, entry: dict, app: App, export_dir: Path) -> dict:
    """model.json: what the app needs to run the artefact (the preprocessing contract included) and what it shows
    the user about the model: its name, version, measured accuracy and model card."""
    size = manifest["image_size"]
    source = manifest["source_checkpoint"]
    parity = parity_row(export_dir, entry["name"]) or {}
    return {"name": entry["name"], "file": app.file, "sha256": entry["sha256"], "bytes": entry["bytes"],
            "classes": manifest["classes"], "image_size": size, "input": entry["input"],
            "output": entry.get("output", {}).get("name", "logits"),
            "preprocessing": preprocessing_contract(size), "confidence": manifest.get("confidence"),
            "source_weights_sha256": source["weights_sha256"], "bmcell_version": bmcell.__version__,
            "lab_check": manifest.get("lab_check"), "novelty": manifest.get("novelty"),
            "model": {"name": Path(source["path"]).parent.name, "arch": manifest["arch"],
                      "precision": entry["precision"], "epoch": source.get("epoch"),
                      "val_accuracy": source["metrics"].get("accuracy"),
                      "artefact_val_accuracy": parity.get("val_accuracy"),
                      "parity": parity.get("status", "not checked"),
                      "model_card": MODEL_CARD if model_card_source(manifest) else None,
                      "class_names": CLASS_NAMES,
                      "precision_words": precision_words(entry, parity, manifest["golden"]["count"]),
                      "scores": lab_scores(Path(source["path"]).parent),
                      "labs": manifest.get("labs", []), "adapted_to": adapted_to(manifest)}}


def _copy(source: Path, destination: Path) -> None:
    """Copy a file or a folder (an .mlpackage is a folder)."""
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)


def install_bundle(export_dir: Path, kind: str, app_dir: Path, precision: str = "auto") -> Path:
    """Write <app>/<bundle parent>/bmcell_model/ (model, model.json, manifest.json), replacing any old one whole."""
    app = check_app(kind, app_dir, precision)
    app_dir, export_dir = Path(app_dir), Path(export_dir)
    manifest = read_manifest(export_dir)
    entry = choose_artefact(manifest, export_dir, app, precision)
    source = verify_artefact(export_dir, entry)
    parent = app_dir / app.bundle_parent
    parent.mkdir(parents=True, exist_ok=True)
    bundle = parent / BUNDLE
    with staged_folder(bundle, replace=True) as staging:
        _copy(source, staging / app.file)
        shutil.copy2(export_dir / MANIFEST, staging / MANIFEST)
        (staging / "model.json").write_text(json.dumps(app_model_json(manifest, entry, app, export_dir), indent=2)
                                            + "\n", encoding="utf-8")
        card = model_card_source(manifest)
        if card is not None:
            shutil.copy2(card, staging / MODEL_CARD)
        if (bundle / PLACEHOLDER).is_file():  # the committed note saying how to install a model stays
            shutil.copy2(bundle / PLACEHOLDER, staging / PLACEHOLDER)
    return bundle

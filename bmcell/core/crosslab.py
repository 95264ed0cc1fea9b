"""Cross-lab evaluation: a model on other labs' class-per-folder images. Each folder's classes are mapped onto the
model's (by name, common synonyms, or a user's class map), and each folder gets its own scores beside the baseline of
always answering its most common class, so a number can be read as better or worse than guessing."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.confidence import Confidence, calibrated, selective_report
from bmcell.core.data.folder import DatasetError, ImageRecord, check_images, list_image_files
from bmcell.core.data.label_maps import check_class_map
from bmcell.core.data.noncell import NON_CELL_KINDS, non_cell_batches
from bmcell.core.errors import BmcellError
from bmcell.core.evaluation import checkpoint_outputs, unit_outputs
from bmcell.core.fileio import atomic_write_json, check_folder_path, staged_folder
from bmcell.core.metrics import classification_report, confusion_matrix
from bmcell.core.novelty import THRESHOLD, split_output
from bmcell.core.releases import refuse_out_inside_release, release_folder
from bmcell.core.reports import plot_confusion, write_confusion_csv

CROSSLAB_JSON = "crosslab.json"
CROSSLAB_MD = "crosslab.md"
MAX_NON_CELL = 10_000  # synthesised non-cell images a report may ask for (a release measures 160)
NON_CELL_BATCH = 128  # non-cell images synthesised and scored at a time, so memory does not grow with their number

# Names other datasets give the classes of PBC's labelling (lower case, words joined by one space, no plural 's').
SYNONYMS: dict[str, str] = {
    **dict.fromkeys(["neutrophil", "neut", "neu", "seg", "segmented", "segmented neutrophil", "band",
                     "band neutrophil", "sne", "bne", "ngs", "ngb", "pmn"], "neutrophil"),
    **dict.fromkeys(["lymphocyte", "lymph", "lym", "lyt", "small lymphocyte", "typical lymphocyte"], "lymphocyte"),
    **dict.fromkeys(["monocyte", "mono", "mon"], "monocyte"),
    **dict.fromkeys(["eosinophil", "eos", "eo", "eosinophilic"], "eosinophil"),
    **dict.fromkeys(["basophil", "baso", "bas"], "basophil"),
    **dict.fromkeys(["erythroblast", "normoblast", "nrbc", "ebo", "nucleated red blood cell"], "erythroblast"),
    **dict.fromkeys(["ig", "immature granulocyte", "promyelocyte", "myelocyte", "metamyelocyte", "pmy", "my", "mmy",
                     "pmo", "myb", "mmz"], "ig"),
    **dict.fromkeys(["platelet", "thrombocyte", "plt", "giant thrombocyte"], "platelet"),
}


def canonical_name(name: str) -> str:
    """A class name compared loosely: lower case, '-'/'_' as spaces, a plural 's' dropped."""
    words = re.sub(r"[\s_\-]+", " ", name.strip().lower()).strip()
    return words[:-1] if words.endswith("s") and not words.endswith("ss") and len(words) > 3 else words


def read_class_map(path: Path) -> dict[str, str | None]:
    """A YAML/JSON mapping of folder class → model class (or null to leave a folder class out)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DatasetError(f"--class-map {path}: cannot read it as YAML/JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                             for k, v in data.items()):
        raise DatasetError(f"--class-map {path}: expected 'folder class: model class' lines (null to leave one out)")
    return data


def map_classes(folder_classes: list[str], model_classes: list[str],
                class_map: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """Each folder class → a model class: the user's map first, then the same name, then a known synonym; None when
    nothing fits (those images are counted but not scored)."""
    class_map = class_map or {}
    unknown = sorted(set(v for v in class_map.values() if v is not None) - set(model_classes))
    if unknown:
        raise DatasetError(f"the class map names classes the model does not have: {unknown}; "
                           f"the model's classes are {model_classes}")
    by_canonical = {canonical_name(c): c for c in model_classes}
    mapping: dict[str, str | None] = {}
    for name in folder_classes:
        if name in class_map:
            mapping[name] = class_map[name]
            continue
        key = canonical_name(name)
        target = by_canonical.get(key) or SYNONYMS.get(key)
        mapping[name] = target if target in model_classes else None
    return mapping


@dataclass(frozen=True)
class ForeignFolder:
    """Another lab's images mapped onto the model's classes, with what was left out."""

    root: Path
    records: list[ImageRecord]  # labels are model classes
    mapping: dict[str, str | None]
    unscored: dict[str, int]  # folder class → images with no model class
    bad_files: int


def read_foreign_folder(root: Path, model_classes: list[str], class_map: dict[str, str | None] | None,
                        warn: Callable[[str], None]) -> ForeignFolder:
    """List, check and map one folder; an error when none of its classes is one of the model's."""
    files = list_image_files(root)
    folder_class = {f: f.split("/", 1)[0] for f in files}
    mapping = map_classes(sorted(set(folder_class.values())), model_classes, class_map)
    if not any(mapping.values()):
        raise DatasetError(f"{root}: none of its classes {sorted(mapping)} is one of the model's {model_classes}; "
                           "pass --class-map FILE (YAML: 'their name: model class') to say which is which")
    scored = {f: mapping[c] for f, c in folder_class.items() if mapping[c] is not None}
    records, bad = check_images(root, scored)
    if not records:
        raise DatasetError(f"{root}: none of its {len(bad)} image(s) of the model's classes can be read (e.g. "
                           f"{bad[0].path}: {bad[0].reason}); nothing to score there")
    if bad:
        warn(f"{root}: skipping {len(bad)} unusable image(s), e.g. {bad[0].path}: {bad[0].reason}")
    unscored = Counter(c for c in folder_class.values() if mapping[c] is None)
    return ForeignFolder(Path(root), records, mapping, dict(unscored), len(bad))


def folder_scores(logits: np.ndarray, targets: np.ndarray, classes: list[str],
                  confidence: Confidence | None) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and recall per class (over the folder's classes), the majority-class
    baseline, accuracy when only the folder's classes may be answered, and abstention figures."""
    report = classification_report(confusion_matrix(targets, logits.argmax(1), len(classes)), classes)
    present = sorted(set(int(t) for t in targets))
    restricted = np.asarray(present)[logits[:, present].argmax(1)]
    counts = np.bincount(targets, minlength=len(classes))
    scores = {
        "images": int(len(targets)), "accuracy": report["accuracy"],
        "balanced_accuracy": report["balanced_accuracy"], "macro_f1": report["macro_f1"],
        "majority_baseline": float(counts.max() / counts.sum()), "majority_class": classes[int(counts.argmax())],
        "accuracy_folder_classes": float(np.mean(restricted == targets)),
        "recall": {c: report["per_class"][c]["recall"] for c in classes if report["per_class"][c]["support"]},
        "support": {c: report["per_class"][c]["support"] for c in classes if report["per_class"][c]["support"]},
        "predicted": {classes[i]: int(n) for i, n in enumerate(np.bincount(logits.argmax(1), minlength=len(classes)))
                      if n},
        "confusion_matrix": report["confusion_matrix"],
    }
    if confidence is not None:
        scores["abstention"] = selective_report(confidence, logits, targets)
    return scores


def non_cell_scores(checkpoint: Checkpoint, count: int, device: torch.device) -> dict:
    """How often the model abstains on synthesised non-cell images (noise, drawings, everyday-like scenes),
    NON_CELL_BATCH at a time."""
    outputs, kinds = [], []
    for images, batch_kinds in non_cell_batches(count, checkpoint.image_size, NON_CELL_BATCH):
        outputs.append(unit_outputs(checkpoint, images, device))
        kinds += batch_kinds
    logits, novelty = split_output(np.concatenate(outputs), len(checkpoint.classes))
    confidence = checkpoint.confidence
    probabilities, kept = calibrated(confidence, logits)
    top, flagged = probabilities.max(1), ~kept
    unlike = novelty >= THRESHOLD if novelty is not None else None
    kinds_arr = np.asarray(kinds)

    def share(values: np.ndarray | None, kind: str | None = None) -> float | None:
        return None if values is None else float(values[kinds_arr == kind].mean() if kind else values.mean())

    return {"images": len(kinds), "flagged": share(flagged if confidence else None),
            "unlike_training": share(unlike), "median_top_probability": float(np.median(top)),
            "per_kind": {k: {"images": int((kinds_arr == k).sum()), "flagged": share(flagged if confidence else None, k),
                             "unlike_training": share(unlike, k)} for k in NON_CELL_KINDS}}


def unique_names(folders: list[Path]) -> list[str]:
    """A report name per folder, also the name of its sub-folder of the report: its own name; where folders share
    one, joined to as many of their parent folders' names as tell them apart (a/lab2, b/lab2: a-lab2, b-lab2);
    numbered only when even that leaves two alike. Never crosslab.json or crosslab.md."""
    parts = [Path(folder).resolve().parts[1:] or ("data",) for folder in folders]
    depth = [1] * len(parts)

    def name(index: int) -> str:
        return "-".join(parts[index][-depth[index]:])

    while True:
        counts = Counter(name(i) for i in range(len(parts)))
        longer = [i for i in range(len(parts)) if counts[name(i)] > 1 and depth[i] < len(parts[i])]
        if not longer:
            break
        for index in longer:
            depth[index] += 1
    taken = {name(i) for i in range(len(parts))} | {CROSSLAB_JSON, CROSSLAB_MD}
    names: list[str] = []
    for candidate in (name(i) for i in range(len(parts))):
        if candidate in names or candidate in (CROSSLAB_JSON, CROSSLAB_MD):
            number = 2
            while f"{candidate}-{number}" in taken:
                number += 1
            candidate = f"{candidate}-{number}"
            taken.add(candidate)
        names.append(candidate)
    return names


def report_folder(run_dir: Path, out: Path | None, models_dir: Path) -> Path:
    """Where a report goes: out, else <run folder>/crosslab, or crosslab-<name> in the current folder for a
    released model (whose folder is read-only evidence); an out inside a released model's folder is refused."""
    release = release_folder(run_dir, models_dir)
    if out is None:
        out = Path(f"crosslab-{release.name}") if release else Path(run_dir) / "crosslab"
    refuse_out_inside_release(out, models_dir)
    return out


def check_report_folder(out: Path) -> None:
    """Refuse, before any work, an out that cannot take a report: a file, or a folder holding anything but an
    earlier crosslab report (which the new report replaces whole, so no stale folder stays beside it)."""
    check_folder_path(out)
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return
    try:
        earlier = json.loads((out / CROSSLAB_JSON).read_text(encoding="utf-8"))["folders"]
        ours = {CROSSLAB_JSON, CROSSLAB_MD, *earlier}
    except (OSError, ValueError, KeyError, TypeError):
        raise BmcellError(f"--out {out} is not empty and holds no crosslab report; nothing was written to it: "
                          "choose a new or an empty folder") from None
    foreign = [name for name in present if name not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise BmcellError(f"--out {out} holds an earlier crosslab report and also {shown}, which a new report would "
                          "remove; nothing was written to it: move them or choose another folder")


def check_folders_given(folders: list[Path]) -> None:
    """Refuse no --data folder, or one folder given twice."""
    if not folders:
        raise DatasetError("no folder to evaluate: pass --data DIR (repeatable)")
    twice = [f for f, n in Counter(Path(f).resolve() for f in folders).items() if n > 1]
    if twice:
        raise DatasetError(f"--data {twice[0]} is given more than once; give each folder once")


def crosslab_report(checkpoint: Checkpoint, folders: list[Path], out: Path, device: torch.device,
                    class_map: dict[str, str | None] | None = None, non_cell: int = 0, batch_size: int = 64,
                    workers: int = 0, warn: Callable[[str], None] = print) -> dict:
    """Evaluate the checkpoint on every folder; write crosslab.json, crosslab.md and per folder a confusion matrix
    (CSV, PNG) and predictions.csv. Every folder and option is checked before any image is classified; the report
    is built aside and replaces an earlier one in out whole, only when complete."""
    if not 0 <= non_cell <= MAX_NON_CELL:
        raise BmcellError(f"--non-cell {non_cell}: give 0 to {MAX_NON_CELL:,} synthesised non-cell images (the "
                          "release measures 160)")
    check_folders_given(folders)
    check_report_folder(out)
    classes = checkpoint.classes
    foreign = [read_foreign_folder(Path(f), classes, class_map, warn) for f in folders]
    check_class_map(class_map, {name for folder in foreign for name in folder.mapping}, "the --data folders")
    with staged_folder(out, replace=True) as staging:
        rows = {}
        for name, folder in zip(unique_names(folders), foreign):
            outputs, targets = checkpoint_outputs(checkpoint, folder.records, folder.root, device, batch_size,
                                                  workers)
            logits, novelty = split_output(outputs, len(classes))
            scores = folder_scores(logits, targets, classes, checkpoint.confidence)
            scores["unlike_training"] = None if novelty is None else float(np.mean(novelty >= THRESHOLD))
            rows[name] = {"path": str(folder.root), "mapping": folder.mapping, "unscored": folder.unscored,
                          "bad_files": folder.bad_files, **scores}
            _write_folder_files(staging / name, name, folder, logits, scores, classes, checkpoint.confidence)
        report = {"checkpoint": str(checkpoint.json_path), "arch": checkpoint.arch, "classes": classes,
                  "confidence": checkpoint.confidence.to_dict() if checkpoint.confidence else None,
                  "adapted_on": checkpoint.adapted_on, "folders": rows,
                  "non_cell": non_cell_scores(checkpoint, non_cell, device) if non_cell else None}
        atomic_write_json(staging / CROSSLAB_JSON, report)
        (staging / CROSSLAB_MD).write_text("\n".join(markdown_table(report)) + "\n", encoding="utf-8")
    return report


def _write_folder_files(folder_out: Path, name: str, folder: ForeignFolder, logits: np.ndarray, scores: dict,
                        classes: list[str], confidence: Confidence | None) -> None:
    """confusion.csv/png and predictions.csv of one folder."""
    folder_out.mkdir(parents=True, exist_ok=True)
    write_confusion_csv(scores["confusion_matrix"], classes, folder_out / "confusion.csv")
    plot_confusion(scores["confusion_matrix"], classes, folder_out / "confusion.png",
                   f"{name}: accuracy {scores['accuracy']:.3f} ({scores['images']} images)")
    probabilities, kept = calibrated(confidence, logits)
    with open(folder_out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true", "predicted", "probability", "answered"])
        for record, row, keep in zip(folder.records, probabilities, kept):
            writer.writerow([record.path, record.label, classes[row.argmax()], f"{row.max():.6f}",
                             "yes" if keep else "uncertain"])


def _fmt(value: float | None) -> str:
    """Three decimals, or a dash."""
    return "–" if value is None else f"{value:.3f}"


def markdown_table(report: dict) -> list[str]:
    """One row per folder: the headline scores, the baseline, abstention and the share flagged as unlike the training
    cells (novelty); then recall per class and non-cells."""
    lines = ["| folder | images | accuracy | balanced acc. | macro-F1 | majority baseline | acc. (folder's classes) "
             "| answered | acc. answered | unlike training |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["folders"].items():
        kept = row.get("abstention") or {}
        below = " (below baseline)" if row["accuracy"] < row["majority_baseline"] else ""
        lines.append(f"| {name} | {row['images']} | {_fmt(row['accuracy'])}{below} | "
                     f"{_fmt(row['balanced_accuracy'])} | {_fmt(row['macro_f1'])} | {_fmt(row['majority_baseline'])} | "
                     f"{_fmt(row['accuracy_folder_classes'])} | {_fmt(kept.get('coverage'))} | "
                     f"{_fmt(kept.get('accuracy_kept'))} | {_fmt(row.get('unlike_training'))} |")
    lines += ["", "Recall per class:", ""]
    for name, row in report["folders"].items():
        recalls = ", ".join(f"{c} {r:.2f} ({row['support'][c]})" for c, r in row["recall"].items())
        extra = f"; not scored (no model class): {row['unscored']}" if row["unscored"] else ""
        lines.append(f"- {name}: {recalls}{extra}")
    non_cell = report.get("non_cell")
    if non_cell:
        flagged = "no confidence threshold in this checkpoint" if non_cell["flagged"] is None else \
            f"{non_cell['flagged']:.3f} flagged as uncertain"
        if non_cell.get("unlike_training") is not None:
            flagged += f", {non_cell['unlike_training']:.3f} as unlike the training cells (novelty)"
        lines += ["", f"Non-cell images ({non_cell['images']} synthesised: {', '.join(non_cell['per_kind'])}): "
                      f"{flagged}; median top probability {non_cell['median_top_probability']:.3f}."]
    return lines

"""Cross-lab evaluation: folder classes mapped onto the model's, scores against the majority baseline, one table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.crosslab import canonical_name, crosslab_report, folder_scores, map_classes, read_class_map
from bmcell.core.data.folder import DatasetError
from bmcell.core.data.noncell import NON_CELL_KINDS, non_cell_images

PBC8 = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def test_other_labs_names_map_onto_the_models_classes():
    folder = ["Neutrophils", "seg", "LYMPH", "monocytes", "Eos", "myelocyte", "NRBC", "Thrombocytes",
              "smudge_cells", "Basophil"]
    mapping = map_classes(folder, PBC8)
    assert mapping == {"Neutrophils": "neutrophil", "seg": "neutrophil", "LYMPH": "lymphocyte",
                       "monocytes": "monocyte", "Eos": "eosinophil", "myelocyte": "ig", "NRBC": "erythroblast",
                       "Thrombocytes": "platelet", "smudge_cells": None, "Basophil": "basophil"}
    assert canonical_name("Band_Neutrophils") == "band neutrophil"
    assert map_classes(["smudge", "seg"], PBC8, {"smudge": "lymphocyte", "seg": None}) == \
        {"smudge": "lymphocyte", "seg": None}
    with pytest.raises(DatasetError, match="does not have"):
        map_classes(["a"], PBC8, {"a": "blast"})
    # a synonym only counts when the model has that class
    assert map_classes(["myelocyte"], ["neutrophil", "lymphocyte"]) == {"myelocyte": None}


def test_scores_against_the_majority_baseline_and_the_folders_classes():
    classes = ["a", "b", "c"]
    logits = np.array([[3, 2, 9], [0, 5, 9], [4, 1, 0], [1, 0, 0]], dtype=np.float32)  # c never in the folder
    targets = np.array([0, 1, 0, 0])
    scores = folder_scores(logits, targets, classes, None)
    assert scores["accuracy"] == 0.5 and scores["majority_baseline"] == 0.75 and scores["majority_class"] == "a"
    assert scores["accuracy_folder_classes"] == 1.0  # c is not a class of this folder: a and b are right
    assert scores["recall"] == {"a": pytest.approx(2 / 3), "b": 0.0}
    assert scores["balanced_accuracy"] == pytest.approx(1 / 3)
    assert scores["predicted"] == {"a": 2, "c": 2} and "abstention" not in scores


def test_non_cell_images_are_deterministic_and_in_range():
    images, kinds = non_cell_images(16, 64)
    again, _ = non_cell_images(16, 64)
    assert images.shape == (16, 3, 64, 64) and torch.equal(images, again)
    assert 0 <= images.min() and images.max() <= 1 and sorted(set(kinds)) == sorted(NON_CELL_KINDS)
    assert len({tuple(img.mean((1, 2)).tolist()) for img in images}) == 16


@pytest.fixture(scope="module")
def foreign_lab(synthetic_data, tmp_path_factory) -> Path:
    """The synthetic cells under another lab's folder names, plus a class the model does not have."""
    root = tmp_path_factory.mktemp("lab") / "lab-b"
    renames = {"neutrophil": "Neutrophils", "lymphocyte": "LYMPH", "eosinophil": "eos"}
    for source, name in renames.items():
        shutil.copytree(synthetic_data / source, root / name)
    shutil.copytree(synthetic_data / "monocyte", root / "smudge")
    (root / "eos" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_crosslab_report_and_command(tiny_run, foreign_lab, synthetic_data, tmp_path):
    checkpoint = load_checkpoint(tiny_run)
    report = crosslab_report(checkpoint, [foreign_lab, synthetic_data], tmp_path / "cl", torch.device("cpu"),
                             non_cell=16, warn=lambda m: None)
    row = report["folders"]["lab-b"]
    assert row["mapping"]["Neutrophils"] == "neutrophil" and row["mapping"]["smudge"] is None
    assert row["unscored"] == {"smudge": len(list((foreign_lab / "smudge").iterdir()))} and row["bad_files"] == 1
    assert set(row["support"]) == {"neutrophil", "lymphocyte", "eosinophil"}
    with open(tmp_path / "cl" / "lab-b" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == row["images"] == sum(row["support"].values())
    assert row["accuracy"] == pytest.approx(np.mean([r["true"] == r["predicted"] for r in rows]))
    answered = [r for r in rows if r["answered"] == "yes"]
    assert row["abstention"]["coverage"] == pytest.approx(len(answered) / len(rows))
    counts = [row["support"][c] for c in row["support"]]
    assert row["majority_baseline"] == pytest.approx(max(counts) / sum(counts))
    assert (tmp_path / "cl" / "lab-b" / "confusion.png").is_file()
    assert set(report["folders"]) == {"lab-b", "cells"}
    assert report["non_cell"]["images"] == 16 and 0 <= report["non_cell"]["flagged"] <= 1
    table = (tmp_path / "cl" / "crosslab.md").read_text()
    assert "| lab-b |" in table and "majority baseline" in table and "Non-cell images" in table
    assert json.loads((tmp_path / "cl" / "crosslab.json").read_text())["folders"]["cells"]["images"] > 0

    runner = CliRunner()
    result = runner.invoke(app, ["crosslab", str(tiny_run), "--data", str(foreign_lab), "--out",
                                 str(tmp_path / "cli"), "--non-cell", "8"])
    assert result.exit_code == 0, result.output
    assert "| lab-b |" in result.output and (tmp_path / "cli" / "crosslab.md").is_file()


def test_crosslab_refuses_folders_that_share_nothing(tiny_run, tmp_path, synthetic_data):
    other = tmp_path / "other"
    shutil.copytree(synthetic_data / "neutrophil", other / "blast")
    shutil.copytree(synthetic_data / "monocyte", other / "smudge")
    result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(synthetic_data), "--data", str(other),
                                      "--out", str(tmp_path / "cl")])
    assert result.exit_code == 2 and "none of its classes" in result.output and "--class-map" in result.output
    assert not (tmp_path / "cl").exists()  # every folder is checked before any work
    class_map = tmp_path / "map.yaml"
    class_map.write_text("blast: neutrophil\nsmudge: null\n")
    assert read_class_map(class_map) == {"blast": "neutrophil", "smudge": None}
    result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(other), "--class-map", str(class_map),
                                      "--out", str(tmp_path / "cl2"), "--non-cell", "0"])
    assert result.exit_code == 0, result.output
    class_map.write_text("- just a list\n")
    result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(other), "--class-map", str(class_map)])
    assert result.exit_code == 2 and "--class-map" in result.output

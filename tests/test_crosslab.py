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
from bmcell.core.crosslab import (
    MAX_NON_CELL,
    NON_CELL_BATCH,
    canonical_name,
    crosslab_report,
    folder_scores,
    map_classes,
    non_cell_scores,
    read_class_map,
    report_folder,
    unique_names,
)
from bmcell.core.data.folder import DatasetError
from bmcell.core.data.noncell import NON_CELL_KINDS, non_cell_batches, non_cell_images
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import sha256_path
from bmcell.jobs.release import DEFAULT_MODEL, MODELS_DIR

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


def small_lab(synthetic_data: Path, root: Path, per_class: int = 3) -> Path:
    """A few of the synthetic cells of two classes under root."""
    for name in ("neutrophil", "lymphocyte"):
        (root / name).mkdir(parents=True)
        for path in sorted((synthetic_data / name).iterdir())[:per_class]:
            shutil.copy(path, root / name / path.name)
    return root


def test_crosslab_refuses_a_folder_whose_images_are_all_unreadable(tiny_run, synthetic_data, tmp_path):
    broken = tmp_path / "broken"
    (broken / "neutrophil").mkdir(parents=True)
    for index in range(3):
        (broken / "neutrophil" / f"cell{index}.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(synthetic_data), "--data", str(broken),
                                      "--out", str(tmp_path / "cl"), "--non-cell", "0"])
    assert result.exit_code == 2 and f"{broken}: none of its 3 image(s)" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "cl").exists()


def test_report_names_never_collide_and_stay_readable(tiny_run, synthetic_data, tmp_path):
    coll = tmp_path / "coll"
    folders = [small_lab(synthetic_data, coll / "a" / "lab2"), small_lab(synthetic_data, coll / "b" / "lab2"),
               small_lab(synthetic_data, coll / "lab2-2")]
    assert unique_names(folders) == ["a-lab2", "b-lab2", "lab2-2"]
    assert unique_names([coll / "x", coll / "y"]) == ["x", "y"]  # no clash: the folders' own names
    # names that read alike even with every parent's name (/a/b and /a-b) are numbered; so are a report's files'
    assert unique_names([Path("/a/b"), Path("/q/b"), Path("/a-b")]) == ["a-b", "q-b", "a-b-2"]
    assert unique_names([tmp_path / "crosslab.json"]) == ["crosslab.json-2"]
    report = crosslab_report(load_checkpoint(tiny_run), folders, tmp_path / "cl", torch.device("cpu"),
                             warn=lambda m: None)
    assert {name: row["path"] for name, row in report["folders"].items()} == \
        {"a-lab2": str(folders[0]), "b-lab2": str(folders[1]), "lab2-2": str(folders[2])}
    assert all((tmp_path / "cl" / name / "predictions.csv").is_file() for name in report["folders"])
    with pytest.raises(DatasetError, match="more than once"):
        crosslab_report(load_checkpoint(tiny_run), [folders[0], folders[0]], tmp_path / "cl2", torch.device("cpu"))
    assert not (tmp_path / "cl2").exists()


def test_crosslab_never_writes_into_a_released_model(tiny_run, synthetic_data, tmp_path, monkeypatch):
    release = Path(shutil.copytree(tiny_run, tmp_path / "my-release"))
    (release / "release.json").write_text("{}")
    before = sha256_path(release)
    lab = small_lab(synthetic_data, tmp_path / "lab")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["crosslab", str(release), "--data", str(lab), "--non-cell", "0"])
    assert result.exit_code == 0, result.output
    assert (work / "crosslab-my-release" / "crosslab.json").is_file() and sha256_path(release) == before
    result = CliRunner().invoke(app, ["crosslab", str(release / "best.json"), "--data", str(lab), "--out",
                                      str(release / "crosslab"), "--non-cell", "0"])
    assert result.exit_code == 2 and "inside the released model" in result.output and "--out" in result.output
    assert sha256_path(release) == before
    # the repository's models/ folder: every folder in it is a release, with or without release.json
    assert report_folder(DEFAULT_MODEL, None, MODELS_DIR) == Path(f"crosslab-{DEFAULT_MODEL.name}")
    with pytest.raises(BmcellError, match="inside the released model"):
        report_folder(tiny_run, MODELS_DIR / "some-copy" / "crosslab", MODELS_DIR)
    assert report_folder(tiny_run, None, MODELS_DIR) == tiny_run / "crosslab"


def test_a_new_report_replaces_an_earlier_one_whole_and_nothing_else(tiny_run, synthetic_data, tmp_path):
    checkpoint, cpu = load_checkpoint(tiny_run), torch.device("cpu")
    first, second = small_lab(synthetic_data, tmp_path / "first"), small_lab(synthetic_data, tmp_path / "second")
    out = tmp_path / "cl"
    crosslab_report(checkpoint, [first], out, cpu)
    crosslab_report(checkpoint, [second], out, cpu)
    assert sorted(p.name for p in out.iterdir()) == ["crosslab.json", "crosslab.md", "second"]  # no stale first/
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BmcellError, match="notes.txt"):
        crosslab_report(checkpoint, [first], out, cpu)
    assert (out / "notes.txt").read_text() == "mine" and (out / "second").is_dir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("x")
    result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(first), "--out", str(other)])
    assert result.exit_code == 2 and "holds no crosslab report" in result.output
    assert [p.name for p in other.iterdir()] == ["data.csv"]


def test_crosslab_out_that_is_a_file_is_one_line(tiny_run, synthetic_data, tmp_path):
    file = tmp_path / "report.txt"
    file.write_text("keep")
    for out in (file, file / "sub"):
        result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(synthetic_data), "--out",
                                          str(out), "--non-cell", "0"])
        assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    assert file.read_text() == "keep"


def test_non_cell_images_are_bounded_and_streamed(tiny_run, synthetic_data, tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["crosslab", str(tiny_run), "--data", str(synthetic_data), "--out",
                                      str(tmp_path / "cl"), "--non-cell", str(MAX_NON_CELL + 1)])
    assert result.exit_code == 2 and f"0 to {MAX_NON_CELL:,}" in result.output, result.output
    assert not (tmp_path / "cl").exists()
    # batches are the same images as one whole draw, and scoring never holds more than one batch of them
    count = NON_CELL_BATCH + 5
    whole, kinds = non_cell_images(count, 64)
    batches = list(non_cell_batches(count, 64, NON_CELL_BATCH))
    assert torch.equal(torch.cat([b for b, _ in batches]), whole) and sum((k for _, k in batches), []) == kinds
    import bmcell.core.crosslab as crosslab_module

    sizes, score = [], crosslab_module.unit_outputs
    monkeypatch.setattr(crosslab_module, "unit_outputs", lambda c, images, d: sizes.append(len(images)) or
                        score(c, images, d))
    report = non_cell_scores(load_checkpoint(tiny_run), count, torch.device("cpu"))
    assert report["images"] == count and sizes == [NON_CELL_BATCH, 5]

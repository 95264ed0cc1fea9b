"""`bmcell finetune` (a lab's few labelled cells) and `bmcell check` (a lab's unlabelled photos) on tiny synthetic
runs: what they write, what they refuse, that replay keeps the classes a lab did not label, and the check's
verdicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.config import TrainConfig
from bmcell.core.data.folder import check_images, list_image_files
from bmcell.core.data.synthetic import write_synthetic_dataset
from bmcell.core.engine import fit
from bmcell.core.finetune import (
    LAB_CELLS_DIR,
    REPLAY_VIEWS,
    TRAIN_VIEWS,
    Recipe,
    listing_sha256,
    stratified_folds,
    top_logits,
    train_top,
    wilson_interval,
)
from bmcell.core.models import Top, build_model
from bmcell.core.shift import VERDICTS, atc_threshold, binomial_tail, verdict
from tests.conftest import TINY

LAB_CLASSES = {"neutrophil": "seg", "lymphocyte": "lymph", "eosinophil": "eosinophil"}  # model class → lab's name


def _tinted(source: Path, dest: Path) -> None:
    """The image with another lab's lamp: red and green dimmed."""
    image = Image.open(source).convert("RGB")
    Image.merge("RGB", [band.point(lambda v, f=f: int(v * f)) for band, f in
                        zip(image.split(), (0.6, 0.8, 1.0))]).save(dest)


@pytest.fixture(scope="module")
def lab_cells(tmp_path_factory) -> Path:
    """A lab's labelled cells: 7 per class of three classes, in the lab's own folder names, new cells (another
    seed) under another lamp."""
    raw = tmp_path_factory.mktemp("lab-raw") / "cells"
    write_synthetic_dataset(raw, per_class=24, size=64, seed=7)
    lab = tmp_path_factory.mktemp("lab") / "our-lab"
    for model_class, name in LAB_CLASSES.items():
        (lab / name).mkdir(parents=True)
        for path in sorted((raw / model_class).glob("*"))[:7]:
            _tinted(path, lab / name / f"{path.stem}.png")
    return lab


def _strings(node: object) -> list[str]:
    """Every string inside a JSON document."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_finetune_writes_a_checkpoint_that_is_used_like_any_other(tiny_run, lab_cells, tmp_path):
    out = tmp_path / "run-lab"
    result = CliRunner().invoke(app, ["finetune", str(tiny_run), "--data", str(lab_cells), "--out", str(out),
                                      "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "cross-validated (5-fold)" in result.output and "classes this lab did not label" in result.output
    source, tuned = load_checkpoint(tiny_run), load_checkpoint(out)
    assert tuned.classes == source.classes  # every class kept
    changed = {k for k in source.state_dict if not torch.equal(source.state_dict[k], tuned.state_dict[k])}
    assert changed and all(k.startswith(("final_conv.", "head.")) for k in changed)
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)  # statistics stay the source's

    info = tuned.meta["finetuned_on"]
    records, _ = check_images(lab_cells, {f: {v: k for k, v in LAB_CLASSES.items()}[f.split("/", 1)[0]]
                                          for f in list_image_files(lab_cells)})
    assert info["per_class"] == {"eosinophil": 7, "lymphocyte": 7, "neutrophil": 7} and info["cells"] == 21
    assert info["cells_sha256"] == listing_sha256(records) and info["folds"] == 5
    assert info["classes_not_labelled"] == [c for c in source.classes if c not in LAB_CLASSES]
    low, high = info["interval"]
    assert low <= info["accuracy"] <= high and high - low > 0.2  # 21 cells: an honestly wide interval
    report = json.loads((out / "finetune.json").read_text())
    for document in (tuned.meta["finetuned_on"], report):
        assert not [s for s in _strings(document) if s.startswith("/") or str(tmp_path) in s]
    assert "out-of-fold" in tuned.confidence.fitted_on and "21 labelled cells" in tuned.confidence.fitted_on
    assert tuned.confidence != source.confidence
    assert sum(1 for _ in (out / LAB_CELLS_DIR).rglob("*.png")) == 21

    assert CliRunner().invoke(app, ["evaluate", str(out), "--split", "val", "--workers", "0"]).exit_code == 0
    result = CliRunner().invoke(app, ["check", str(out), "--images", str(lab_cells), "--out", str(tmp_path / "chk")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "chk" / "check.json").read_text())["lab_cells_in_reference"] is True
    exported = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(out), "--target", "onnx", "--quantize", "none", "--calib", "8",
                                      "--out", str(exported)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["finetuned_on"]["cells"] == 21
    train = sum(1 for f in json.loads((tiny_run / "split.json").read_text())["files"] if f["subset"] == "train")
    assert manifest["labs"] == [{"name": "cells", "cells": train}]  # the run's training folder, by name
    check = manifest["lab_check"]
    assert 0 <= check["threshold"] <= 1 and check["min_images"] == 20 and check["images"] == manifest["golden"]["count"]
    result = CliRunner().invoke(app, ["finetune", str(tiny_run), "--data", str(lab_cells), "--out", str(out)])
    assert result.exit_code == 2 and "nothing is overwritten" in result.output


def _broken_lab(lab_cells: Path, tmp_path: Path, case: str) -> Path:
    """A copy of the lab folder with one kind of bad input."""
    lab = Path(shutil.copytree(lab_cells, tmp_path / "lab"))
    first = sorted((lab / "seg").iterdir())[0]
    if case == "unknown class":
        shutil.copytree(lab / "seg", lab / "blast")
    elif case == "too few":
        for path in sorted((lab / "lymph").iterdir())[2:]:
            path.unlink()
    elif case == "two classes":
        shutil.copy2(first, lab / "lymph" / "same-cell.png")
    elif case == "too small":
        Image.new("RGB", (20, 20), (200, 100, 150)).save(lab / "seg" / "icon.png")
    return lab


@pytest.mark.parametrize("case, message", [
    ("unknown class", "'blast'] are not classes of this model"),
    ("too few", "too few usable cells for {'lymphocyte': 2}"),
    ("two classes", "the same image is labelled as two classes"),
    ("too small", "under 32 px on a side"),
])
def test_finetune_refuses_bad_labelled_cells_before_writing(tiny_run, lab_cells, tmp_path, case, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["finetune", str(tiny_run), "--data", str(_broken_lab(lab_cells, tmp_path, case)),
                                      "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_finetune_names_and_skips_unreadable_files(tiny_run, lab_cells, tmp_path):
    lab = Path(shutil.copytree(lab_cells, tmp_path / "lab"))
    (lab / "seg" / "broken.png").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["finetune", str(tiny_run), "--data", str(lab), "--out", str(tmp_path / "o"),
                                      "--epochs", "1", "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "seg/broken.png" in result.output and load_checkpoint(tmp_path / "o").meta["finetuned_on"]["folds"] == 2


def test_replay_keeps_the_classes_the_lab_did_not_label():
    """Trained on three classes of a lab, the top still recognises new images of the other classes (replay holds
    them to their labels and to the source's answers); without replay it calls them the lab's classes (so this test
    can fail). Feature maps are drawn around one pattern per class, so the test does not hang on how well a tiny
    trunk happened to train."""
    torch.manual_seed(0)
    source = Top(build_model("mobilevit_xxs", 8)).eval()
    channels = source.final_conv.conv.in_channels
    patterns = 2 * torch.randn(8, channels, 1, 1)

    def maps(labels: list[int], views: int) -> torch.Tensor:
        return patterns[labels].unsqueeze(1) + torch.randn(len(labels), views, channels, 4, 4)

    lab_classes = [0, 3, 6]
    lab = [c for c in lab_classes for _ in range(7)]
    replay = [c for c in range(8) for _ in range(16)]
    others = [c for c in range(8) if c not in lab_classes for _ in range(12)]
    lab_maps, replay_maps, check = maps(lab, TRAIN_VIEWS), maps(replay, REPLAY_VIEWS), maps(others, 1)

    def recall(weight: float) -> float:
        top = train_top(source, lab_maps, torch.tensor(lab), replay_maps, torch.tensor(replay),
                        Recipe(epochs=20, lr=3e-3, replay_weight=weight))
        return float((top_logits(top, check).argmax(1) == np.array(others)).mean())

    kept, forgotten = recall(3.0), recall(0.0)
    assert kept >= 0.8, (kept, forgotten)
    assert forgotten == 0.0, (kept, forgotten)


def test_folds_and_intervals():
    targets = np.array([0] * 5 + [1] * 7 + [3] * 20)
    fold = stratified_folds(targets, 5, 0)
    for label in (0, 1, 3):
        counts = np.bincount(fold[targets == label], minlength=5)
        assert counts.max() - counts.min() <= 1  # each class spread evenly
    assert np.array_equal(fold, stratified_folds(targets, 5, 0))
    low, high = wilson_interval(18, 20)
    assert low == pytest.approx(0.699, abs=1e-3) and high == pytest.approx(0.972, abs=1e-3)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] < 0.9


def test_check_verdicts_and_atc():
    assert verdict(5, 100) == VERDICTS[0]  # 5% outside, as expected for like photos
    assert verdict(4, 30) == VERDICTS[0]  # 13%: over 10%, but 30 photos do not show it beyond chance (p 0.06)
    assert verdict(12, 100) == VERDICTS[1]  # 12% of 100: beyond chance (p 0.004)
    assert verdict(40, 400) == VERDICTS[0]  # 10%: at the bound
    assert verdict(60, 400) == VERDICTS[1] and verdict(300, 400) == VERDICTS[2]
    assert binomial_tail(0, 10, 0.05) == 1.0 and binomial_tail(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    probability = np.linspace(0.1, 1.0, 10)
    correct = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    threshold = atc_threshold(probability, correct)
    assert np.mean(probability >= threshold) == pytest.approx(0.7)


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory) -> Path:
    """A tiny run with a validation side large enough (about 80 images) for the check's 95% distance radius."""
    data = tmp_path_factory.mktemp("check-data") / "cells"
    write_synthetic_dataset(data, per_class=48, size=64, seed=3)
    out = tmp_path_factory.mktemp("check-run") / "run"
    fit(TrainConfig(out=str(out), data=str(data), epochs=2, data_path="loader", val_fraction=0.3, **TINY))
    return out


def test_check_tells_like_photos_from_shifted_ones(checked_run, tmp_path):
    """New cells of the model's own kind read as like its training data; the same cells inverted read as shifted,
    with a lower estimate; too few photos are refused."""
    like, shifted = tmp_path / "like", tmp_path / "shifted"
    like.mkdir(), shifted.mkdir()
    raw = tmp_path / "raw"
    write_synthetic_dataset(raw, per_class=8, size=64, seed=11)
    for index, path in enumerate(sorted(raw.rglob("*.jpg"))[:48]):
        image = Image.open(path).convert("RGB")
        image.save(like / f"{index}.png")
        Image.eval(image, lambda v: 255 - v).save(shifted / f"{index}.png")
    reports = {}
    for name in ("like", "shifted"):
        result = CliRunner().invoke(app, ["check", str(checked_run), "--images", str(tmp_path / name),
                                          "--out", str(tmp_path / f"{name}-report")])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / f"{name}-report" / "check.json").read_text())
    assert reports["like"]["verdict"] == VERDICTS[0], reports["like"]["outside_share"]
    assert reports["shifted"]["verdict"] != VERDICTS[0] and reports["shifted"]["outside_share"] > 0.5
    assert reports["shifted"]["estimated_accuracy"] < reports["like"]["estimated_accuracy"]
    assert "bmcell finetune" in " ".join(reports["shifted"]["next"])
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(like.iterdir())[:5]:
        shutil.copy2(path, few / path.name)
    result = CliRunner().invoke(app, ["check", str(checked_run), "--images", str(few)])
    assert result.exit_code == 2 and "a check needs at least 20" in " ".join(result.output.split())

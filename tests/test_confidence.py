"""Temperature scaling recovers a known temperature, the threshold keeps the stated coverage, and predict abstains."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import Checkpoint, load_checkpoint
from bmcell.core.confidence import (
    Confidence,
    expected_calibration_error,
    fit_confidence,
    fit_temperature,
    selective_report,
    softmax,
)
from bmcell.core.errors import BmcellError
from bmcell.core.inference import Classifier


def overconfident(temperature: float, n: int = 4000, classes: int = 5, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / temperature): the true temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (n, classes))
    probabilities = softmax(logits, temperature)
    targets = np.array([rng.choice(classes, p=p) for p in probabilities])
    return logits, targets


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_true_one(true_temperature):
    logits, targets = overconfident(true_temperature)
    assert fit_temperature(logits, targets) == pytest.approx(true_temperature, rel=0.12)


def test_calibration_lowers_ece_and_threshold_keeps_the_coverage():
    logits, targets = overconfident(2.5)
    confidence = fit_confidence(logits, targets, coverage=0.8)
    assert confidence.val_ece_after < confidence.val_ece_before
    assert confidence.val_coverage == pytest.approx(0.8, abs=0.01)
    kept = confidence.kept(logits)
    assert kept.mean() == pytest.approx(0.8, abs=0.01)
    correct = logits.argmax(1) == targets
    assert confidence.val_accuracy_kept == pytest.approx(correct[kept].mean())
    assert confidence.val_accuracy_kept > correct.mean()  # abstaining on the least confident helps
    assert selective_report(confidence, logits, targets)["coverage"] == pytest.approx(kept.mean())
    assert Confidence.from_dict(json.loads(json.dumps(confidence.to_dict()))) == confidence
    assert fit_confidence(logits, targets, coverage=1.0).threshold == 0.0
    top = confidence.probabilities(logits).max(1)  # no image on the threshold, where rounding would decide its answer
    assert np.abs(top - confidence.threshold).min() > 1e-6


def test_bad_confidence_input():
    with pytest.raises(BmcellError, match="coverage"):
        fit_confidence(np.zeros((4, 3)), np.zeros(4, dtype=int), coverage=0)
    with pytest.raises(BmcellError, match="not bmcell's"):
        Confidence.from_dict({"temperature": 1.0})
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_trained_checkpoint_has_confidence_and_predict_abstains(tiny_run):
    checkpoint = load_checkpoint(tiny_run)
    confidence = checkpoint.confidence
    assert confidence is not None and confidence.temperature > 0 and 0 <= confidence.threshold <= 1
    assert confidence.fitted_on.startswith("validation split")
    images = sorted(Path(checkpoint.meta["data"]).rglob("*.jpg"))[:4]
    strict = replace(confidence, threshold=1.0)  # nothing is confident enough (no top probability reaches 1)
    loose = replace(confidence, threshold=0.0)
    for conf, uncertain in ((strict, True), (loose, False)):
        meta = checkpoint.meta | {"confidence": conf.to_dict()}
        answers = Classifier(Checkpoint(meta, checkpoint.state_dict, checkpoint.json_path), "cpu").predict(images, 3)
        assert all(a.uncertain is uncertain for a in answers)
        probabilities = [p for _, p in answers[0].top]
        assert probabilities == sorted(probabilities, reverse=True)
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(images[0]), "--json"])
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.output)[0]["uncertain"], bool)


def test_outlier_exposure_pulls_non_cell_predictions_toward_uniform():
    import torch

    from bmcell.core.data.noncell import TRAINING_KINDS, OutlierBatches, non_cell_images
    from bmcell.core.engine import train_step
    from bmcell.core.models import build_model

    torch.manual_seed(0)
    model = build_model("mobilevit_xxs", 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    images, targets = torch.rand(8, 3, 64, 64), torch.arange(8) % 4
    outliers = OutlierBatches(4, 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), seed=0)
    unseen, kinds = non_cell_images(8, 64, seed=123, kinds_used=TRAINING_KINDS)

    def outlier_top() -> float:
        model.eval()
        with torch.no_grad():
            top = torch.softmax(model(unseen), 1).max(1).values.mean().item()
        model.train()
        return top

    for _ in range(10):  # first make the model confident on everything
        train_step(model, images, targets, optimizer, torch.device("cpu"))
    before = outlier_top()
    for _ in range(15):
        train_step(model, images, targets, optimizer, torch.device("cpu"), outliers.next(), 1.0)
    after = outlier_top()
    assert after < before and after < 0.5, (before, after)  # 0.25 is uniform over 4 classes
    assert set(kinds) == set(TRAINING_KINDS)


@pytest.mark.parametrize("edit, words", [({"temperature": float("nan")}, "temperature nan"),
                                         ({"temperature": 0}, "temperature 0"),
                                         ({"temperature": float("inf")}, "temperature inf"),
                                         ({"temperature": "1.0"}, "temperature '1.0'"),
                                         ({"threshold": 1.5}, "threshold 1.5"),
                                         ({"threshold": float("nan")}, "threshold nan"),
                                         ({"threshold": None}, "threshold None")])
def test_confidence_values_no_fit_gives_are_refused_on_load(edit, words):
    """A confidence block edited (and its digest recomputed) to values no fit gives is refused with one line,
    instead of NaN probabilities (and NaN, which is not JSON, in predict --json)."""
    good = fit_confidence(*overconfident(1.0, n=200)).to_dict()
    assert Confidence.from_dict(good | {"threshold": 0, "temperature": 2}).temperature == 2
    with pytest.raises(BmcellError, match=re.escape(words)):
        Confidence.from_dict(good | edit)


def test_predict_refuses_a_checkpoint_whose_confidence_was_edited(tiny_run, tmp_path):
    from bmcell.core.checkpoint import metadata_digest

    for name in ("best.json", "best.safetensors"):
        shutil.copy2(tiny_run / name, tmp_path / name)
    meta = json.loads((tmp_path / "best.json").read_text())
    meta["confidence"]["temperature"] = float("nan")
    meta["metadata_sha256"] = metadata_digest(meta)
    (tmp_path / "best.json").write_text(json.dumps(meta))
    image = sorted(Path(load_checkpoint(tiny_run).meta["data"]).rglob("*.jpg"))[0]
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "best.json"), str(image), "--json"])
    assert result.exit_code == 2 and "confidence temperature nan" in result.output, result.output
    assert "NaN" not in result.output and "Traceback" not in result.output

"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bmcell.core.metrics import classification_report, confusion_matrix


def test_hand_computed_example():
    targets = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    matrix = confusion_matrix(targets, predicted, 3)
    assert matrix.tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    report = classification_report(matrix, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.7)
    assert report["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    # precision a=3/4, b=1/2, c=3/4; recall a=3/4, b=1/2, c=3/4 -> F1 equals them
    assert report["macro_f1"] == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    assert report["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


def test_never_predicted_class_has_zero_precision_not_nan():
    matrix = confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
    report = classification_report(matrix, ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)

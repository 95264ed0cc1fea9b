"""Tests of the embedded synthetic white-cell generator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bmcell.core.data.synthetic import SYNTH_CLASSES, SYNTH_WEIGHTS, render_cell, write_synthetic_dataset

SIZE = 64
PER_CLASS = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """One small synthetic dataset shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("synthetic") / "cells"
    return root, write_synthetic_dataset(root, per_class=PER_CLASS, size=SIZE, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root, keyed by its POSIX path relative to root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _features(image: Image.Image) -> np.ndarray:
    """Mean colour of the central half of the image plus its fractions of dark and very dark pixels."""
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    side = rgb.shape[0]
    centre = rgb[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4]
    luminance = centre.mean(axis=-1)
    return np.concatenate([centre.reshape(-1, 3).mean(axis=0), [(luminance < 0.5).mean(), (luminance < 0.35).mean()]])


def test_weights_cover_the_classes_and_are_imbalanced() -> None:
    assert set(SYNTH_WEIGHTS) == set(SYNTH_CLASSES) and len(SYNTH_CLASSES) == 8
    ratio = max(SYNTH_WEIGHTS.values()) / min(SYNTH_WEIGHTS.values())
    assert 2.5 <= ratio <= 3.5


def test_counts_follow_the_weights(dataset: tuple[Path, dict[str, int]]) -> None:
    root, counts = dataset
    top = max(SYNTH_WEIGHTS.values())
    assert counts == {c: max(4, round(PER_CLASS * SYNTH_WEIGHTS[c] / top)) for c in SYNTH_CLASSES}
    assert max(counts.values()) == PER_CLASS
    assert max(counts.values()) / min(counts.values()) >= 2.5
    assert sorted(p.name for p in root.iterdir()) == sorted(SYNTH_CLASSES)
    for cls in SYNTH_CLASSES:
        names = sorted(p.name for p in (root / cls).iterdir())
        assert names == [f"{cls}_{i:04d}.jpg" for i in range(counts[cls])]


def test_images_are_rgb_jpegs_of_the_requested_size(dataset: tuple[Path, dict[str, int]]) -> None:
    root, counts = dataset
    paths = sorted(root.rglob("*.jpg"))
    assert len(paths) == sum(counts.values())
    for path in paths:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    first = write_synthetic_dataset(tmp_path / "a", per_class=6, size=48, seed=7)
    second = write_synthetic_dataset(tmp_path / "b", per_class=6, size=48, seed=7)
    assert first == second
    files = _files(tmp_path / "a")
    assert files and files == _files(tmp_path / "b")
    write_synthetic_dataset(tmp_path / "c", per_class=6, size=48, seed=8)
    other = _files(tmp_path / "c")
    assert other.keys() == files.keys() and other != files


def test_render_cell_is_deterministic_at_any_size() -> None:
    for size in (32, 100, 200):
        for cls in SYNTH_CLASSES:
            image = render_cell(cls, np.random.default_rng(size), size)
            assert (image.mode, image.size) == ("RGB", (size, size))
            again = render_cell(cls, np.random.default_rng(size), size)
            assert np.array_equal(np.asarray(image), np.asarray(again))


def test_tiny_per_class_never_exceeds_the_most_frequent_class(tmp_path: Path) -> None:
    assert write_synthetic_dataset(tmp_path / "one", per_class=1, size=32) == dict.fromkeys(SYNTH_CLASSES, 1)
    counts = write_synthetic_dataset(tmp_path / "six", per_class=6, size=32)
    assert max(counts.values()) == 6 and min(counts.values()) == 4


def test_an_existing_empty_folder_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert sum(write_synthetic_dataset(tmp_path / "empty", per_class=1, size=32).values()) == len(SYNTH_CLASSES)


def test_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic_dataset(tmp_path, per_class=1, size=32)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_refuses_a_file_as_the_output_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        write_synthetic_dataset(tmp_path / "file", per_class=1, size=32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": 31}, "at least 32"), ({"per_class": 0}, "per_class must be at least 1"), ({"seed": -1}, "seed")],
)
def test_refuses_bad_arguments_before_writing(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_synthetic_dataset(tmp_path / "out", **{"per_class": 1, "size": 32, **kwargs})
    assert not (tmp_path / "out").exists()


def test_render_cell_refuses_an_unknown_class_or_tiny_size() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown synthetic cell class 'macrophage'") + ".*neutrophil"):
        render_cell("macrophage", np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 32"):
        render_cell("neutrophil", np.random.default_rng(0), size=16)


def test_classes_are_separable_by_simple_colour_features(dataset: tuple[Path, dict[str, int]]) -> None:
    root, counts = dataset
    features, labels = [], []
    for label, cls in enumerate(SYNTH_CLASSES):
        for i in range(counts[cls]):
            with Image.open(root / cls / f"{cls}_{i:04d}.jpg") as image:
                features.append(_features(image))
            labels.append(label)
    x, y = np.asarray(features), np.asarray(labels)
    train = np.arange(len(y)) % 2 == 0
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    z = (x - mean) / std
    centroids = np.stack([z[train & (y == k)].mean(axis=0) for k in range(len(SYNTH_CLASSES))])
    predicted = np.argmin(((z[~train, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = float((predicted == y[~train]).mean())
    assert accuracy > 0.5, f"nearest-centroid accuracy {accuracy:.2f} is too close to chance (0.125)"

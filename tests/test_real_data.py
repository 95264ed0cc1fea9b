"""Smoke runs on a small subset of the real PBC images (skipped, saying why, where ../shared is absent)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.data.folder import apply_label_map, list_image_files
from bmcell.core.data.label_maps import resolve_label_map
from tests.conftest import TINY

runner = CliRunner()
PER_CLASS = 10


@pytest.fixture(scope="module")
def pbc_subset(pbc_root, tmp_path_factory):
    """The first PER_CLASS images of every PBC class, plus every granulocytic prefix, copied (PBC is read-only)."""
    out = tmp_path_factory.mktemp("pbc") / "pbc"
    for class_dir in sorted(p for p in pbc_root.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.jpg"))
        prefixes = {}
        for f in files:
            prefixes.setdefault(f.name.split("_")[0], []).append(f)
        chosen = files[:PER_CLASS] + [group[0] for group in prefixes.values()]
        (out / class_dir.name).mkdir(parents=True)
        for f in dict.fromkeys(chosen):
            shutil.copy(f, out / class_dir.name / f.name)
    return out


def test_pbc_label_maps_cover_the_real_prefixes(pbc_root):
    files = list_image_files(pbc_root)
    assert len(files) > 15_000
    labelled = apply_label_map(files, resolve_label_map("pbc-granulocytic"))
    counts = {c: sum(1 for v in labelled.values() if v == c) for c in set(labelled.values())}
    assert counts["promyelocyte"] == 532 and counts["myelocyte"] == 1015 and counts["metamyelocyte"] == 922
    assert counts["band_neutrophil"] == 1478 and counts["segmented_neutrophil"] == 1472
    assert counts["monocyte"] == 1277 and len(counts) == 7


@pytest.mark.slow
def test_pbc_subset_trains_and_evaluates(pbc_subset, tmp_path):
    run = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = runner.invoke(app, ["train", "--data", str(pbc_subset), "--out", str(run), "--epochs", "1", *args])
    assert result.exit_code == 0, result.output
    evaluated = runner.invoke(app, ["evaluate", str(run), "--split", "all", "--workers", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run / "eval-all" / "report.json").read_text())
    assert report["classes"] == sorted(p.name for p in pbc_subset.iterdir())
    assert report["images"] == sum(1 for _ in pbc_subset.rglob("*.jpg"))
    assert 0.0 <= report["macro_f1"] <= 1.0


@pytest.mark.slow
def test_pbc_subset_with_the_granulocytic_map(pbc_subset, tmp_path):
    run = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = runner.invoke(app, ["train", "--data", str(pbc_subset), "--out", str(run), "--epochs", "1",
                                 "--label-map", "pbc-granulocytic", *args])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "best.json").read_text())
    assert meta["classes"] == ["promyelocyte", "myelocyte", "metamyelocyte", "band_neutrophil",
                               "segmented_neutrophil", "monocyte", "other"]
    assert meta["label_map"]["name"] == "pbc-granulocytic"

"""`bmcell release`: a checkpoint becomes models/NAME with evaluations, a reference logits and a model card, and
predict/export fall back to it when no checkpoint is given."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bmcell.jobs.release
from bmcell.cli.main import app
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.config import TrainConfig
from bmcell.core.data.images import load_rgb
from bmcell.core.data.synthetic import write_synthetic_dataset
from bmcell.core.data.transforms import unit_transform
from bmcell.core.engine import fit
from bmcell.jobs.release import recorded_paths
from export.golden import reference_logits
from export.samples import SAMPLES_DIR, SAMPLES_FILE
from tests.conftest import TINY

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model on synthetic cells with a validation split of at least 64 images, and a second 'lab'."""
    root = tmp_path_factory.mktemp("release")
    write_synthetic_dataset(root / "cells", per_class=80, size=64, seed=3)
    write_synthetic_dataset(root / "other", per_class=4, size=80, seed=4)
    shutil.rmtree(root / "other" / "platelet")  # another lab with a subset of the classes
    fit(TrainConfig(**TINY, out=str(root / "run"), data=str(root / "cells"), epochs=1, val_fraction=0.2))
    return root


def test_release_packages_evaluations_golden_and_card(trained, tmp_path, monkeypatch):
    """Every file of the release, golden logits that the released weights reproduce, and the default fallback."""
    models = tmp_path / "models"
    (tmp_path / "lolo.md").write_text("### Leave one lab out\n\n| trained on | a |\n|---|---:|\n| b | 0.5 |\n")
    result = runner.invoke(app, ["release", str(trained / "run"), "--name", "tiny-pbc", "--models-dir", str(models),
                                 "--other", str(trained / "other"), "--note", "1 epoch on CPU (a test)",
                                 "--evidence", str(tmp_path / "lolo.md")])
    assert result.exit_code == 0, result.output
    dest = models / "tiny-pbc"
    for name in ("best.json", "best.safetensors", "split.json", "reference_logits.json", "release.json", "MODEL_CARD.md",
                 "eval-val/report.json", "crosslab/crosslab.md", "crosslab/other/confusion.png"):
        assert (dest / name).is_file(), name
    checkpoint = load_checkpoint(dest)
    golden = json.loads((dest / "reference_logits.json").read_text())
    assert len(golden["images"]) == 64 and golden["source_weights_sha256"] == checkpoint.weights_sha256
    first = golden["images"][0]
    image = unit_transform(checkpoint.image_size)(load_rgb(trained / "cells" / first["path"]))
    logits = reference_logits(checkpoint, image[None], torch.device("cpu"))[0]
    np.testing.assert_allclose(logits, first["logits"], atol=1e-4)
    card = (dest / "MODEL_CARD.md").read_text()
    assert "Research use only" in card and "1 epoch on CPU (a test)" in card and "| other |" in card
    assert "majority baseline" in card and "Non-cell images" in card and "uncertain" in card
    # the data section credits what the run was trained on (synthetic cells here), not PBC
    assert "cells: no citation or licence on record" in card and "10.1016/j.dib.2020.105474" not in card
    assert "Pictures unlike its training cells" in card
    assert "## Further measurements\n\n### Leave one lab out\n\n| trained on | a |" in card
    release = json.loads((dest / "release.json").read_text())
    assert set(release["metrics"]) == {"own validation split"}
    other_images = sorted((trained / "other").rglob("*.jpg"))
    assert release["crosslab"]["other"]["images"] == len(other_images)
    assert 0 <= release["crosslab"]["other"]["abstention"]["coverage"] <= 1

    monkeypatch.setattr(bmcell.jobs.release, "DEFAULT_MODEL", dest)
    predicted = runner.invoke(app, ["predict", str(other_images[0]), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output)[0]["top"][0]["class"] in checkpoint.classes

    again = runner.invoke(app, ["release", str(trained / "run"), "--name", "tiny-pbc", "--models-dir", str(models)])
    assert again.exit_code != 0 and "exists" in again.output


def test_a_release_exports_from_its_own_samples_and_names_no_machine_path(trained, tmp_path):
    """A release ships samples/ (int8 calibration, its golden set = the reference logits' images, more validation
    images) with their licences, and records no path of this machine. With no data folder, export takes its images
    from there and writes the same int8 artefact as an export from the training folder; a sample that changed or went
    missing is refused by name, and a checkpoint with neither says what to pass. A run's last checkpoint is released
    as the release's best.json."""
    models = tmp_path / "models"
    made = runner.invoke(app, ["release", str(trained / "run" / "last.json"), "--name", "t", "--models-dir",
                               str(models), "--attribution", "Synthetic cells made by bmcell synth (CC0)."])
    assert made.exit_code == 0, made.output
    dest = models / "t"
    assert sorted(p.name for p in dest.glob("*.safetensors")) == ["best.safetensors"]
    assert not (dest / "last.json").exists()
    assert recorded_paths(dest) == []
    for file in dest.rglob("*"):
        if file.suffix in (".json", ".md", ".csv"):
            assert str(trained) not in file.read_text(encoding="utf-8") and "/tmp/" not in file.read_text(), file
    checkpoint = load_checkpoint(dest)
    assert checkpoint.meta["data"] is None and checkpoint.config["out"] is None
    samples = json.loads((dest / SAMPLES_DIR / SAMPLES_FILE).read_text())
    golden = json.loads((dest / "reference_logits.json").read_text())
    assert [e["path"] for e in samples["validation"][:samples["golden"]]] == [i["path"] for i in golden["images"]]
    assert len(samples["calibration"]) == 128 and 64 <= len(samples["validation"]) <= 128
    assert "CC0" in (dest / SAMPLES_DIR / "README.md").read_text()

    def export(*extra):
        out = tmp_path / f"export-{len(list(tmp_path.glob('export-*')))}"
        result = runner.invoke(app, ["export", str(dest), "--target", "onnx", "--quantize", "int8", "--no-parity",
                                     "--out", str(out), *extra])
        return out, result

    from_samples, result = export()
    assert result.exit_code == 0 and "sample set" in result.output, result.output
    from_folder, result = export("--data", str(trained / "cells"))
    assert result.exit_code == 0 and "training folder" in result.output, result.output
    shas = [{a["name"]: a["sha256"] for a in json.loads((f / "manifest.json").read_text())["artefacts"]}
            for f in (from_samples, from_folder)]
    assert shas[0]["onnx-int8"] == shas[1]["onnx-int8"]  # (an .ort file's operator table is in hash order)

    first = dest / SAMPLES_DIR / samples["calibration"][0]["path"]
    first.write_bytes(first.read_bytes()[:-10])
    _, changed = export()
    assert changed.exit_code != 0 and "changed" in changed.output and first.name in changed.output
    first.unlink()
    _, missing = export()
    assert missing.exit_code != 0 and "missing" in missing.output and "--data" in missing.output
    shutil.rmtree(dest / SAMPLES_DIR)
    _, none = export()
    assert none.exit_code != 0 and "--data" in none.output and "Traceback" not in none.output


def test_release_adopts_a_reference_logits_file_computed_elsewhere_only_when_it_checks_out(trained, tmp_path):
    """--reference-logits: reference logits from another machine are kept when reproduced here, refused otherwise."""
    models = tmp_path / "models"
    first = runner.invoke(app, ["release", str(trained / "run"), "--name", "a", "--models-dir", str(models)])
    assert first.exit_code == 0, first.output
    golden = json.loads((models / "a" / "reference_logits.json").read_text())
    elsewhere = tmp_path / "gpu-reference_logits.json"
    elsewhere.write_text(json.dumps(golden | {"device": "NVIDIA H100 80GB HBM3"}))
    adopted = runner.invoke(app, ["release", str(trained / "run"), "--name", "b", "--models-dir", str(models),
                                  "--reference-logits", str(elsewhere)])
    assert adopted.exit_code == 0, adopted.output
    kept = json.loads((models / "b" / "reference_logits.json").read_text())
    assert kept["device"] == "NVIDIA H100 80GB HBM3" and kept["reproduced_on"]["max_relative_error"] < 1e-5
    assert "NVIDIA H100 80GB HBM3" in (models / "b" / "MODEL_CARD.md").read_text()

    golden["images"][3]["logits"][0] += 0.5
    elsewhere.write_text(json.dumps(golden))
    off = runner.invoke(app, ["release", str(trained / "run"), "--name", "c", "--models-dir", str(models),
                              "--reference-logits", str(elsewhere)])
    assert off.exit_code != 0 and "differ" in off.output and not (models / "c").exists()
    elsewhere.write_text(json.dumps(golden | {"source_weights_sha256": "0" * 64}))
    other = runner.invoke(app, ["release", str(trained / "run"), "--name", "c", "--models-dir", str(models),
                                "--reference-logits", str(elsewhere)])
    assert other.exit_code != 0 and "other weights" in other.output


def test_model_card_credits_each_training_source():
    from bmcell.jobs.release import data_credits

    sources = {"sources": {"pbc": {"root": "pbc"}, "chula": {"root": "chula_wbc"}, "x": {"root": "/data/mine"}}}
    lines = "\n".join(data_credits(sources, "unused"))
    assert "10.1016/j.dib.2020.105474" in lines and "singgihbekti/WBC_Dataset" in lines and "MIT" in lines
    assert "mine: no citation or licence on record" in lines


def test_release_without_a_model_says_how_to_get_one(tmp_path, monkeypatch):
    """No checkpoint and no released model: a clear error, not a traceback."""
    monkeypatch.setattr(bmcell.jobs.release, "DEFAULT_MODEL", tmp_path / "none")
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not really")
    result = runner.invoke(app, ["predict", str(image)])
    assert result.exit_code != 0 and "no released model" in result.output

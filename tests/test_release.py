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
from bmcell.core.novelty import STYLE_BANK_KEY
from bmcell.jobs.release import recorded_paths
from export.golden import reference_logits
from export.samples import SAMPLES_DIR, SAMPLES_FILE
from tests.conftest import TINY, rewritten_checkpoint

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
    older = tmp_path / "older"  # novelty from before the appearance distance: the release fits today's
    older.mkdir()
    rewritten_checkpoint(trained / "run", older, STYLE_BANK_KEY, lambda meta: meta["novelty"].pop("style"))
    result = runner.invoke(app, ["release", str(older), "--name", "tiny-pbc", "--models-dir", str(models),
                                 "--other", str(trained / "other"), "--note", "1 epoch on CPU (a test)",
                                 "--evidence", str(tmp_path / "lolo.md")])
    assert result.exit_code == 0, result.output
    dest = models / "tiny-pbc"
    for name in ("best.json", "best.safetensors", "split.json", "reference_logits.json", "release.json", "MODEL_CARD.md",
                 "eval-val/report.json", "crosslab/crosslab.md", "crosslab/other/confusion.png"):
        assert (dest / name).is_file(), name
    checkpoint = load_checkpoint(dest)
    assert checkpoint.novelty.style_bank is not None and "novelty fitted" in result.output
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
    assert "- cells: synthetic cells drawn by `bmcell synth`" in card and "Trained on synthetic cells only" in card
    assert "10.1016/j.dib.2020.105474" not in card and "CellaVision" not in card and "PBC" not in card
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


def test_release_with_views_refits_confidence_and_says_so_in_the_card(trained, tmp_path):
    models = tmp_path / "models"
    result = runner.invoke(app, ["release", str(trained / "run"), "--name", "tiny-d8", "--models-dir",
                                 str(models), "--views", "8"])
    assert result.exit_code == 0, result.output
    released, source = load_checkpoint(models / "tiny-d8"), load_checkpoint(trained / "run")
    assert released.views == 8 and source.views == 1
    assert released.weights_sha256 != "" and released.novelty is not None
    assert released.confidence.threshold != source.confidence.threshold  # refitted on the views' logits
    assert "## Views" in (models / "tiny-d8" / "MODEL_CARD.md").read_text()
    first = json.loads((models / "tiny-d8" / "reference_logits.json").read_text())["images"][0]
    image = unit_transform(released.image_size)(load_rgb(trained / "cells" / first["path"]))
    views = [torch.rot90(image, k, (1, 2)) for k in range(4)]
    views += [view.flip(2) for view in views]
    single = reference_logits(source, torch.stack(views), torch.device("cpu")).mean(0)
    np.testing.assert_allclose(first["logits"], single, atol=1e-4)  # the golden logits are the views' mean
    bad = runner.invoke(app, ["release", str(trained / "run"), "--name", "tiny-d3", "--models-dir", str(models),
                                "--views", "3"])
    assert bad.exit_code != 0 and "--views 3" in bad.output and not (models / "tiny-d3").exists()


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
    readme = (dest / SAMPLES_DIR / "README.md").read_text()
    assert readme.startswith("# Sample images of t\n") and "CC0" in readme  # the release's name, not its staging
    assert "Attribution given at release: Synthetic cells made by bmcell synth (CC0)." in (
        dest / "MODEL_CARD.md").read_text()

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
    assert all("novelty" in entry for entry in golden["images"]) and "novelty" not in kept["reproduced_on"]

    older = golden | {"images": [{k: v for k, v in entry.items() if k != "novelty"} for entry in golden["images"]]}
    elsewhere.write_text(json.dumps(older))  # a file from before novelty: this machine's novelty completes it
    completed = runner.invoke(app, ["release", str(trained / "run"), "--name", "n", "--models-dir", str(models),
                                    "--reference-logits", str(elsewhere)])
    assert completed.exit_code == 0, completed.output
    kept = json.loads((models / "n" / "reference_logits.json").read_text())
    assert kept["reproduced_on"]["novelty"].startswith("computed here")
    assert [e["novelty"] for e in kept["images"]] == pytest.approx([e["novelty"] for e in golden["images"]], abs=1e-5)

    golden["images"][3]["logits"][0] += 0.5
    elsewhere.write_text(json.dumps(golden))
    off = runner.invoke(app, ["release", str(trained / "run"), "--name", "c", "--models-dir", str(models),
                              "--reference-logits", str(elsewhere)])
    assert off.exit_code != 0 and "differ" in off.output and not (models / "c").exists()
    elsewhere.write_text(json.dumps(golden | {"source_weights_sha256": "0" * 64}))
    other = runner.invoke(app, ["release", str(trained / "run"), "--name", "c", "--models-dir", str(models),
                                "--reference-logits", str(elsewhere)])
    assert other.exit_code != 0 and "other weights" in other.output


def test_model_card_credits_each_training_source(tmp_path):
    """Each source of a combine folder is credited for what it is: a dataset on record by its citation and licence,
    cells `bmcell synth` drew as synthetic, any other folder by name with its licence left to the user to state."""
    from bmcell.core.data.sources import Source, combine_sources
    from bmcell.jobs.release import SYNTHETIC, data_credits, source_kinds
    from tests.conftest import jpeg_bytes

    write_synthetic_dataset(tmp_path / "drawn", per_class=4, size=32, seed=5)
    for label in ("lymphocyte", "neutrophil"):
        for i in range(4):
            (tmp_path / "mine" / label).mkdir(parents=True, exist_ok=True)
            (tmp_path / "mine" / label / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    (tmp_path / "mine" / "lymphocyte" / "4.jpg").write_bytes((tmp_path / "drawn" / "ig" / "ig_0000.jpg").read_bytes())
    summary = combine_sources([Source("a", tmp_path / "drawn"), Source("b", tmp_path / "mine")], tmp_path / "c")
    data = tmp_path / "c" / "data"
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    kinds = source_kinds(data, paths, summary)
    assert kinds == {"a": SYNTHETIC, "b": "mine"}  # one drawn image among real ones does not make b synthetic
    assert source_kinds(tmp_path / "drawn", [p.relative_to(tmp_path / "drawn").as_posix()
                                             for p in (tmp_path / "drawn").rglob("*.jpg")], None) == {"drawn": SYNTHETIC}
    lines = "\n".join(data_credits(kinds | {"pbc": "pbc", "chula": "chula_wbc", "bccd": "bccd"}, "Mine: CC BY 4.0."))
    assert "10.1016/j.dib.2020.105474" in lines and "singgihbekti/WBC_Dataset" in lines and "MIT" in lines
    assert "apple2373/BCCD" in lines and "- a: synthetic cells drawn by `bmcell synth`" in lines
    assert "mine: no citation or licence on record; its licence and citation are yours to state" in lines
    assert "Attribution given at release: Mine: CC BY 4.0." in lines


def test_shipped_model_cards_credit_every_source_they_were_trained_on():
    """Each released model made from a `bmcell combine` folder credits every source of its sources.json."""
    from bmcell.jobs.release import MODELS_DIR, data_credits

    combined = [folder for folder in sorted(MODELS_DIR.iterdir()) if (folder / "sources.json").is_file()]
    assert combined, f"no release of a combine folder in {MODELS_DIR}"
    for folder in combined:
        sources = json.loads((folder / "sources.json").read_text())["sources"]
        card = (folder / "MODEL_CARD.md").read_text()
        credits = data_credits({name: source["root"] for name, source in sources.items()})
        missing = [line for line in credits if line.startswith("- ") and line not in card]
        assert not missing, (folder.name, missing)


def test_release_without_a_model_says_how_to_get_one(tmp_path, monkeypatch):
    """No checkpoint and no released model: a clear error, not a traceback."""
    monkeypatch.setattr(bmcell.jobs.release, "DEFAULT_MODEL", tmp_path / "none")
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not really")
    result = runner.invoke(app, ["predict", str(image)])
    assert result.exit_code != 0 and "no released model" in result.output


@pytest.mark.parametrize("name", ["../../x", "../x", "a/b", "..", ".", ".hidden", "/abs", "x\\y", ""])
def test_release_name_must_be_a_plain_folder_name(tmp_path, name):
    """--name becomes models/NAME: a path (../../x) would write outside --models-dir; refused before any file."""
    from bmcell.jobs.release import DEFAULT_MODEL

    models = tmp_path / "deep" / "er" / "models"
    models.mkdir(parents=True)
    result = runner.invoke(app, ["release", str(DEFAULT_MODEL), "--name", name, "--models-dir", str(models),
                                 "--data", str(tmp_path)])
    assert result.exit_code == 2 and "not a plain folder name" in result.output, result.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["deep", "deep/er",
                                                                                       "deep/er/models"]

"""The released model in models/: it loads, `bmcell predict` uses it by default, and its mobile artefacts agree with
the reference logits' reference logits (computed when it was released) on the named PBC images."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.confidence import calibrated
from bmcell.core.data.images import load_rgb
from bmcell.core.data.transforms import unit_transform
from bmcell.core.novelty import split_output
from bmcell.jobs.release import DEFAULT_MODEL, MODELS_DIR, REFERENCE_LOGITS_FILE, recorded_paths
from export.formats import FORMATS
from export.golden import read_export_golden
from export.parity import agreement, judge, novelty_agreement
from export.samples import SAMPLES_DIR, read_sample_set
from tests.contract.preprocessing import GOLDEN, PBC_IMAGES, reference_images, released_top1

runner = CliRunner()
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "best.json").is_file(), reason=f"no released model in {DEFAULT_MODEL}")
ARTEFACTS = ["onnx-fp32", "onnx-int8", "executorch-fp32", "executorch-int8"]  # what the apps ship
# The eight-view release's int8 artefacts on its 64 golden images (from its sample set, docs/export.md): onnx-int8
# 32.4 dB (AVX2 at db4bc16 and AVX-512 VNNI at 4c0abce), executorch-int8 30.8 dB (float64 calibration, 4c0abce), each
# with one image flipped at a margin of 0.031 and no answer changed. This floor catches a regression below them.
INT8_FLOOR = {"sqnr_db": 25.0, "top1_agreement": 0.96}


@pytest.fixture(scope="module")
def released():
    """The released checkpoint and its reference logits."""
    return load_checkpoint(DEFAULT_MODEL), json.loads((DEFAULT_MODEL / REFERENCE_LOGITS_FILE).read_text())


@pytest.fixture(scope="module")
def golden_inputs(released):
    """The reference logits' named images, from the release's own sample set, through the input contract, checked
    against the stored statistics."""
    checkpoint, golden = released
    transform = unit_transform(checkpoint.image_size)
    samples = DEFAULT_MODEL / SAMPLES_DIR
    inputs = torch.stack([transform(load_rgb(samples / image["path"])) for image in golden["images"]])
    means = np.array([image["input_mean"] for image in golden["images"]])
    np.testing.assert_allclose(inputs.mean((2, 3)).numpy(), means, atol=1e-6)
    return inputs


def stored_outputs(golden: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """The reference logits file's logits and novelty (None for a model without novelty)."""
    images = golden["images"]
    novelty = np.array([image["novelty"] for image in images]) if "novelty" in images[0] else None
    return np.array([image["logits"] for image in images]), novelty


ON_THRESHOLD = 1e-4  # calibrated probability: float32 runtimes differ by ~1e-6 there


def against_stored(golden: dict, outputs: np.ndarray) -> dict:
    """agreement of an output's logits with the stored logits, and of its novelty with the stored novelty."""
    logits, novelty = stored_outputs(golden)
    found_logits, found_novelty = split_output(outputs, logits.shape[1])
    return agreement(logits, found_logits) | novelty_agreement(novelty, found_novelty)


def test_released_model_is_complete_and_the_default(released, tmp_path):
    """Weights, card and reference logits are there, and predict without a checkpoint answers with its classes."""
    checkpoint, golden = released
    assert golden["source_weights_sha256"] == checkpoint.weights_sha256 and len(golden["images"]) >= 64
    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    assert "Research use only" in card and "Limitations" in card
    image = tmp_path / "cell.png"
    from PIL import Image

    Image.new("RGB", (300, 300), (200, 150, 190)).save(image)
    result = runner.invoke(app, ["predict", str(image), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["top"][0]["class"] in checkpoint.classes


def test_reference_logits_reproduce(released, golden_inputs, released_export):
    """This machine's float model gives the reference logits' logits and novelty (computed on the release machine's
    device): the session's export computed them for its golden set, the same images (checked pixel for pixel)."""
    checkpoint, golden = released
    out = released_export[0]
    inputs, outputs, _ = read_export_golden(out, json.loads((out / "manifest.json").read_text()))
    np.testing.assert_array_equal(np.round(inputs * 255), np.round(golden_inputs.numpy() * 255))  # the same pixels
    assert (checkpoint.novelty is None) == (stored_outputs(golden)[1] is None)
    numbers = against_stored(golden, outputs)
    assert not judge("fp32", numbers), numbers


def test_preprocessing_golden_top1_is_the_released_models(released, pbc_root):
    """tests/contract/preprocessing.json fixes the released model's top-1 for its PBC images (the apps' contract)."""
    checkpoint, _ = released
    stored = json.loads(GOLDEN.read_text()).get("released_model")
    assert stored and stored["weights_sha256"] == checkpoint.weights_sha256, \
        "preprocessing.json is not for this released model: run `python -m tests.contract.preprocessing`"
    images = {name: path for name, path in reference_images(pbc_root).items() if name in stored["top1"]}
    assert len(images) == len(PBC_IMAGES)
    assert released_top1(images)["top1"] == stored["top1"]


def test_the_release_exports_from_its_own_samples(released, released_export):
    """No data folder at hand: calibration and golden set come from samples/, the golden set is the reference
    logits' images, every float artefact passes its tier, and only int8 artefacts may miss theirs (exit 1, named)."""
    out, result = released_export
    assert "sample set" in result.output, result.output
    _, golden = released
    info = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "parity.json").read_text())
    rows = {row["name"]: row for row in report["artefacts"]}
    assert set(ARTEFACTS) <= set(rows)
    assert all(row["status"] == "pass" for row in rows.values() if row["precision"] == "fp32"), rows
    failed = sorted(name for name, row in rows.items() if row["status"] == "fail")
    assert result.exit_code == (1 if failed else 0), result.output
    assert all(rows[name]["precision"] == "int8" and name in result.output for name in failed)
    assert info["golden"]["count"] == len(golden["images"]) and report["validation"]["images"] == 128
    for name in ("executorch-fp32", "executorch-int8"):  # the Android app's programs: all inside XNNPACK
        declared = FORMATS[name].inspect(out / FORMATS[name].filename())
        assert declared["non_delegated_ops"] == {} and declared["delegate_calls"] == {"XnnpackBackend": 1}, declared


@pytest.mark.parametrize("name", ARTEFACTS)
def test_mobile_artefacts_agree_with_the_reference_logits_file(released, golden_inputs, released_export, name):
    """Every mobile artefact of the released model against the stored reference logits: float ones within their
    tier, int8 ones above the floor measured at release (INT8_FLOOR)."""
    _, golden = released
    fmt = FORMATS[name]
    outputs = fmt.load(released_export[0] / fmt.filename())(golden_inputs.numpy())
    numbers = against_stored(golden, outputs)
    if fmt.precision == "int8":
        assert numbers["sqnr_db"] >= INT8_FLOOR["sqnr_db"], (numbers, judge(fmt.precision, numbers))
        assert numbers["top1_agreement"] >= INT8_FLOOR["top1_agreement"], (numbers, judge(fmt.precision, numbers))
    else:
        assert not judge(fmt.precision, numbers), numbers


@pytest.fixture(scope="module")
def predicted_answers(released) -> list[int]:
    """`bmcell predict`'s answer on each golden image: its class index, -1 for "uncertain", -2 for "does not look like
    a cell this model knows"."""
    checkpoint, golden = released
    paths = [str(DEFAULT_MODEL / SAMPLES_DIR / image["path"]) for image in golden["images"]]
    predicted = runner.invoke(app, ["predict", *paths, "--json", "--top-k", "1"])
    assert predicted.exit_code == 0, predicted.output
    return [-2 if answer["unknown"] else -1 if answer["uncertain"] else
            checkpoint.classes.index(answer["top"][0]["class"]) for answer in json.loads(predicted.output)]


@pytest.mark.parametrize("kind", ["android", "web"])
def test_the_installed_artefact_is_uncertain_exactly_where_predict_is(released, golden_inputs, released_export,
                                                                      predicted_answers, tmp_path, kind):
    """--app-precision auto installs an artefact whose answers (a class, "uncertain" or "does not look like a cell
    this model knows") on the golden set are `bmcell predict`'s; an int8 one is installed only then, and the app is
    told its precision in words."""
    from export.apps import APPS, install_bundle
    from export.formats import FORMATS
    from export.parity import answers

    checkpoint, golden = released
    app_dir = tmp_path / kind
    (app_dir / APPS[kind].marker).parent.mkdir(parents=True, exist_ok=True)
    (app_dir / APPS[kind].marker).write_text("")
    bundle = install_bundle(released_export[0], kind, app_dir, "auto")
    model = json.loads((bundle / "model.json").read_text())
    fmt = FORMATS[model["name"]]
    outputs = fmt.load(bundle / APPS[kind].file)(golden_inputs.numpy())
    confidence = model["confidence"]
    said = predicted_answers
    values, novelty = split_output(outputs, len(checkpoint.classes))
    found = answers(values, fmt.output_kind, confidence, novelty).tolist()
    # an image whose calibrated top probability is within float rounding of the threshold may go either way (this
    # release's threshold was fitted on a golden image's own probability: 3e-7 from it; fits now stay clear of it)
    top = calibrated(checkpoint.confidence, stored_outputs(golden)[0])[0].max(1)
    on_edge = np.abs(top - checkpoint.confidence.threshold) < ON_THRESHOLD
    assert on_edge.sum() <= 1
    assert [f for f, edge in zip(found, on_edge) if not edge] == [s for s, edge in zip(said, on_edge) if not edge]
    assert all({f, s} <= {-1, c} for f, s, c, edge in zip(found, said, stored_outputs(golden)[0].argmax(1), on_edge)
               if edge)
    assert model["model"]["precision_words"] and "int8" not in model["model"]["precision_words"]
    crosslab = json.loads((DEFAULT_MODEL / "release.json").read_text())["crosslab"]
    assert {row["set"] for row in model["model"]["scores"]} == set(crosslab)


def test_release_metadata_records_no_machine_path():
    """No file of any release under models/ names a path of the machine that made it (absolute, home-relative or
    leading out of the repository), and each ships the sample set its export needs, a few MB."""
    for release in sorted(p for p in MODELS_DIR.iterdir() if p.is_dir()):
        assert recorded_paths(release) == [], release
        for file in release.rglob("*"):
            if file.suffix in (".md", ".csv", ".json"):
                text = file.read_text(encoding="utf-8")
                assert not re.search(r"(/work/|/tmp/|/home/|/root/|\.\./shared|[A-Z]:\\)", text), file
        sample_set = read_sample_set(load_checkpoint(release))
        assert sample_set is not None and len(sample_set["calibration"]) >= 128, release
        assert sum(f.stat().st_size for f in (release / SAMPLES_DIR).rglob("*")) < 8e6

"""The released model in models/: it loads, `bmcell predict` uses it by default, and its mobile artefacts agree with
the reference logits' reference logits (computed when it was released) on the named PBC images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.data.images import load_rgb
from bmcell.core.data.transforms import unit_transform
from bmcell.jobs.release import DEFAULT_MODEL, REFERENCE_LOGITS_FILE
from export.formats.base import ExportInputs
from export.parity import agreement, judge
from export.pipeline import embedded_metadata, folded_model
from export.samples import balanced_pick, checkpoint_split, load_unit_images
from tests.conftest import lazy_exporter
from tests.contract.preprocessing import GOLDEN, PBC_IMAGES, reference_images, released_top1

runner = CliRunner()
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "best.json").is_file(), reason=f"no released model in {DEFAULT_MODEL}")
ARTEFACTS = ["onnx-fp32", "onnx-int8", "executorch-fp32", "executorch-int8"]  # what the apps ship
# The two-lab release's int8 artefacts miss the int8 tier's 0.99 top-1 agreement by one image (measured at release on
# this CPU: onnx-int8 26.9 dB, executorch-int8 27.3 dB, both 63 of 64 golden images; the flipped one, a chula_wbc
# cell, has a reference margin of 0.17 logits): `bmcell parity` reports it and the apps' --app-precision auto installs
# the float model. This floor catches a regression below those numbers (a little below them, for other CPUs).
INT8_FLOOR = {"sqnr_db": 25.0, "top1_agreement": 0.96}


@pytest.fixture(scope="module")
def released():
    """The released checkpoint and its reference logits."""
    return load_checkpoint(DEFAULT_MODEL), json.loads((DEFAULT_MODEL / REFERENCE_LOGITS_FILE).read_text())


@pytest.fixture(scope="module")
def golden_inputs(released, released_data):
    """The reference logits' named images through the input contract, checked against the stored statistics."""
    checkpoint, golden = released
    transform = unit_transform(checkpoint.image_size)
    inputs = torch.stack([transform(load_rgb(released_data / image["path"])) for image in golden["images"]])
    means = np.array([image["input_mean"] for image in golden["images"]])
    np.testing.assert_allclose(inputs.mean((2, 3)).numpy(), means, atol=1e-6)
    return inputs


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


def test_reference_logits_reproduce(released, golden_inputs):
    """This machine's float model gives the reference logits' logits (computed on the release machine's device)."""
    checkpoint, golden = released
    with torch.no_grad():
        logits = folded_model(checkpoint)(golden_inputs).numpy()
    reference = np.array([image["logits"] for image in golden["images"]])
    assert not judge("fp32", agreement(reference, logits)), agreement(reference, logits)


def test_preprocessing_golden_top1_is_the_released_models(released, pbc_root):
    """tests/contract/preprocessing.json fixes the released model's top-1 for its PBC images (the apps' contract)."""
    checkpoint, _ = released
    stored = json.loads(GOLDEN.read_text()).get("released_model")
    assert stored and stored["weights_sha256"] == checkpoint.weights_sha256, \
        "preprocessing.json is not for this released model: run `python -m tests.contract.preprocessing`"
    images = {name: path for name, path in reference_images(pbc_root).items() if name in stored["top1"]}
    assert len(images) == len(PBC_IMAGES)
    assert released_top1(images)["top1"] == stored["top1"]


@pytest.fixture(scope="module")
def exporter(released, golden_inputs, released_data, tmp_path_factory):
    """Exports each artefact of the released model on first use; int8 calibrated on 64 of its training images."""
    checkpoint, _ = released
    train = balanced_pick(checkpoint_split(checkpoint, released_data).train, 64)
    calibration = load_unit_images(released_data, train, checkpoint.image_size)
    inputs = ExportInputs(model=folded_model(checkpoint), example=golden_inputs[:1], calibration=calibration,
                          classes=checkpoint.classes, metadata=embedded_metadata(checkpoint))
    return lazy_exporter(tmp_path_factory.mktemp("released"), inputs)


@pytest.mark.parametrize("name", ARTEFACTS)
def test_mobile_artefacts_agree_with_the_reference_logits_file(released, golden_inputs, exporter, name):
    """Every runnable mobile artefact of the released model within its tier against the stored reference logits."""
    from export.formats import FORMATS

    _, golden = released
    fmt = FORMATS[name]
    outputs = fmt.load(exporter(name))(golden_inputs.numpy())
    numbers = agreement(np.array([image["logits"] for image in golden["images"]]), outputs)
    if fmt.precision == "int8":  # held to what was measured at release, not the int8 tier (see models/README.md)
        assert numbers["sqnr_db"] >= INT8_FLOOR["sqnr_db"], (numbers, judge(fmt.precision, numbers))
        assert numbers["top1_agreement"] >= INT8_FLOOR["top1_agreement"], (numbers, judge(fmt.precision, numbers))
    else:
        assert not judge(fmt.precision, numbers), numbers

"""Core ML formats: both packages export, declare an RGB image input, the classifier labels and the metadata in
their spec (read without the Core ML runtime), int8 stores quantised weights; on Linux they say why they cannot run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

from bmcell.core.data.synthetic import SYNTH_CLASSES, render_cell  # noqa: E402
from bmcell.core.data.transforms import unit_transform  # noqa: E402
from bmcell.core.models import build_model  # noqa: E402
from export.formats import FORMATS  # noqa: E402
from export.formats.base import ExportError, ExportInputs  # noqa: E402
from export.manifest import size_bytes  # noqa: E402
from export.wrapper import NormalizedClassifier  # noqa: E402
from tests.conftest import lazy_exporter  # noqa: E402

SIZE = 64
CLASSES = ["lymphocyte", "neutrophil", "monocyte"]
METADATA = {"description": "bmcell test classifier", "image_size": str(SIZE), "license": "Apache-2.0",
            "bmcell_version": "9.9.9", "mean": "[0.1, 0.2, 0.3]", "std": "[0.9, 0.8, 0.7]"}
TEMPERATURE = 1.5
NAMES = ["coreml-fp16", "coreml-int8"]  # each export takes about 15 s on 2 cores: tests that need one are slow
on_macos = sys.platform == "darwin"


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """8 synthetic cells through the artefacts' preprocessing: 1x3x64x64 float32 in [0, 1] each."""
    rng = np.random.default_rng(0)
    transform = unit_transform(SIZE)
    return torch.stack([transform(render_cell(SYNTH_CLASSES[i % len(SYNTH_CLASSES)], rng, SIZE)) for i in range(8)])


@pytest.fixture(scope="module")
def inputs(images) -> ExportInputs:
    """A tiny random-weight MobileViT with its normalisation folded in."""
    torch.manual_seed(0)
    model = NormalizedClassifier(build_model("mobilevit_xxs", len(CLASSES)).eval(), [0.1, 0.2, 0.3],
                                 [0.9, 0.8, 0.7]).eval()
    return ExportInputs(model=model, example=images[:1], calibration=images, classes=CLASSES, metadata=METADATA,
                        temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def artefact(tmp_path_factory, inputs):
    """Each format's artefact, exported once per module on first use."""
    return lazy_exporter(tmp_path_factory.mktemp("coreml"), inputs)


def test_registry_lists_both_coreml_formats():
    assert [(FORMATS[n].precision, FORMATS[n].suffix, FORMATS[n].input_kind) for n in NAMES] == [
        ("fp16", ".mlpackage", "image"), ("int8", ".mlpackage", "image")]
    assert {FORMATS[n].family for n in NAMES} == {"coreml"}


def test_registry_import_leaves_coremltools_unloaded():
    code = "import sys, export.formats; print('coremltools' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "False"


@pytest.mark.slow
@pytest.mark.skipif(on_macos, reason="Core ML runs on macOS")
@pytest.mark.parametrize("name", NAMES)
def test_off_macos_says_why_it_cannot_run(artefact, name):
    fmt = FORMATS[name]
    assert fmt.cannot_run_here() == "Core ML runtime needs macOS"
    with pytest.raises(ExportError, match=f"{name}: cannot load .*Core ML runtime needs macOS"):
        fmt.load(artefact(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_spec_declares_image_input_labels_and_metadata(artefact, name):
    declared = FORMATS[name].inspect(artefact(name))
    assert artefact(name).is_dir()
    assert declared["inputs"] == [{"name": "image", "type": "image", "width": SIZE, "height": SIZE,
                                   "color_space": "RGB"}]
    assert declared["input_size"] == [SIZE, SIZE]
    assert declared["outputs"] == ["classLabel", "classLabel_probs"]
    assert declared["labels"] == CLASSES
    assert declared["metadata"].items() >= METADATA.items()
    assert (declared["description"], declared["license"], declared["version"], declared["author"]) == (
        METADATA["description"], METADATA["license"], METADATA["bmcell_version"], "bmcell")
    assert declared["ops"]["classify"] == 1 and declared["ops"]["conv"] > 0
    # Every Core ML consumer reads real probabilities: the classifier's scores come out of a softmax (at the
    # calibrated temperature), and the spec says so.
    assert declared["output_kind"] == "probabilities"
    assert "softmax(logits / 1.5)" in declared["output_description"]["classLabel_probs"]


@pytest.mark.slow
def test_int8_stores_quantised_weights_and_is_smaller(artefact):
    fp16, int8 = (FORMATS[n].inspect(artefact(n)) for n in NAMES)
    assert fp16["quantized_weights"] == 0
    assert int8["quantized_weights"] > 0.5 * (int8["ops"]["conv"] + int8["ops"]["linear"])
    assert size_bytes(artefact("coreml-int8")) < 0.7 * size_bytes(artefact("coreml-fp16"))


def test_inspect_of_a_bad_package_names_the_format(tmp_path):
    bad = tmp_path / "model-coreml-fp16.mlpackage"
    bad.mkdir()
    (bad / "Manifest.json").write_text("not json")
    with pytest.raises(ExportError, match="coreml-fp16: cannot read the Core ML spec of .*model-coreml-fp16"):
        FORMATS["coreml-fp16"].inspect(bad)


@pytest.mark.slow
@pytest.mark.skipif(not on_macos, reason="Core ML runtime needs macOS")
@pytest.mark.parametrize("name", NAMES)
def test_on_macos_probabilities_follow_eager(artefact, inputs, images, name):
    with torch.no_grad():
        reference = torch.softmax(inputs.model(images) / TEMPERATURE, dim=1).numpy()
    out = FORMATS[name].load(artefact(name))(images.numpy())
    assert out.shape == reference.shape
    assert np.allclose(out.sum(1), 1, atol=1e-2) and np.abs(out - reference).max() < 0.05

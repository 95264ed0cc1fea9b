"""ONNX formats: fp32 and ORT fp32 reproduce eager PyTorch, int8 stays close while running int8 kernels, the
metadata and labels round-trip, every artefact is one file, and bad files fail with a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from bmcell.core.data.synthetic import SYNTH_CLASSES, render_cell  # noqa: E402
from bmcell.core.data.transforms import unit_transform  # noqa: E402
from bmcell.core.models import build_model  # noqa: E402
from export.formats import FORMATS  # noqa: E402
from export.formats.base import ExportError, ExportInputs  # noqa: E402
from export.wrapper import NormalizedClassifier  # noqa: E402
from tests.conftest import lazy_exporter  # noqa: E402

SIZE = 64
CLASSES = ["lymphocyte", "neutrophil", "monocyte"]
METADATA = {"description": "bmcell test classifier", "image_size": str(SIZE), "license": "Apache-2.0",
            "mean": "[0.1, 0.2, 0.3]", "std": "[0.9, 0.8, 0.7]"}
# Exporting all four formats of this tiny model takes about 40 s on 2 cores: tests that need an artefact are slow.
CALIBRATION = 24  # images[:24] calibrate, the rest are held out for the comparisons
INT8_MIN_SQNR_DB = 17.0  # measured 20.5 dB on this random-weight model
NAMES = ["onnx-fp32", "onnx-int8", "ort-fp32", "ort-int8"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """40 synthetic cells through the artefacts' preprocessing: 1x3x64x64 float32 in [0, 1] each."""
    rng = np.random.default_rng(0)
    transform = unit_transform(SIZE)
    return torch.stack([transform(render_cell(SYNTH_CLASSES[i % len(SYNTH_CLASSES)], rng, SIZE))
                        for i in range(40)])


@pytest.fixture(scope="module")
def inputs(images) -> ExportInputs:
    """A tiny random-weight MobileViT with its normalisation folded in."""
    torch.manual_seed(0)
    model = NormalizedClassifier(build_model("mobilevit_xxs", len(CLASSES)).eval(), [0.1, 0.2, 0.3],
                                 [0.9, 0.8, 0.7]).eval()
    return ExportInputs(model=model, example=images[:1], calibration=images[:CALIBRATION], classes=CLASSES,
                        metadata=METADATA)


@pytest.fixture(scope="module")
def held_out(images, inputs) -> tuple[np.ndarray, np.ndarray]:
    """Images not used for calibration, and the eager model's logits for them."""
    with torch.no_grad():
        return images[CALIBRATION:].numpy(), inputs.model(images[CALIBRATION:]).numpy()


@pytest.fixture(scope="module")
def artefact(tmp_path_factory, inputs):
    """Each format's artefact, exported once per module on first use."""
    return lazy_exporter(tmp_path_factory.mktemp("onnx"), inputs)


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio of output against reference, in dB."""
    noise = np.sum((reference.astype(np.float64) - output) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def test_registry_lists_the_four_onnx_formats():
    formats = {name: FORMATS[name] for name in NAMES}
    assert {n: (f.family, f.precision, f.suffix) for n, f in formats.items()} == {
        "onnx-fp32": ("onnx", "fp32", ".onnx"), "onnx-int8": ("onnx", "int8", ".onnx"),
        "ort-fp32": ("onnx", "fp32", ".ort"), "ort-int8": ("onnx", "int8", ".ort")}
    assert formats["ort-int8"].runtime == "ONNX Runtime Mobile"
    assert all(f.cannot_run_here() is None for f in formats.values())


def test_registry_import_leaves_onnx_packages_unloaded():
    code = ("import sys, export.formats; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx-fp32", "ort-fp32"])
def test_fp32_reproduces_eager_logits(artefact, held_out, name):
    images, reference = held_out
    for threads in (None, 1):
        out = FORMATS[name].load(artefact(name), threads)(images)
        assert out.shape == reference.shape and out.dtype == np.float32
        assert np.abs(out - reference).max() < 1e-4
        assert np.array_equal(out.argmax(1), reference.argmax(1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx-int8", "ort-int8"])
def test_int8_stays_close_to_eager(artefact, held_out, name):
    images, reference = held_out
    out = FORMATS[name].load(artefact(name))(images)
    assert out.shape == reference.shape
    assert sqnr_db(reference, out) > INT8_MIN_SQNR_DB  # no top-1 check: random weights give near-equal logits


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx-int8", "ort-int8"])
def test_int8_runs_integer_kernels_and_keeps_attention_float(artefact, name):
    declared = FORMATS[name].inspect(artefact(name))
    fp32_convs = sum(node.op_type == "Conv" for node in onnx.load(str(artefact("onnx-fp32"))).graph.node)
    assert declared["int8_ops"]["QLinearConv"] == fp32_convs  # every convolution runs in int8
    assert declared["int8_ops"]["QGemm"] > 0 and "QLinearSoftmax" not in declared["int8_ops"]
    assert set(declared["float_ops"]) <= {"Sub", "Div", "LayerNormalization", "Softmax", "MatMul", "ReduceMean"}
    assert declared["float_ops"]["Softmax"] == declared["float_ops"]["MatMul"] > 0  # one per attention block
    assert declared["conversion_ops"]["QuantizeLinear"] > 0
    assert artefact(name).stat().st_size < 0.45 * artefact(name.replace("int8", "fp32")).stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_metadata_and_labels_round_trip(artefact, name):
    declared = FORMATS[name].inspect(artefact(name))
    assert declared["labels"] == CLASSES
    assert declared["metadata"].items() >= METADATA.items()
    assert declared["inputs"] == [{"name": "image", "shape": [1, 3, SIZE, SIZE], "type": "tensor(float)"}]
    assert declared["outputs"] == [{"name": "logits", "shape": [1, len(CLASSES)], "type": "tensor(float)"}]
    assert declared["input_size"] == [SIZE, SIZE]
    assert (declared["producer"], declared["description"]) == ("bmcell", METADATA["description"])
    assert ("float_ops" in declared) == name.endswith("int8")


@pytest.mark.slow
def test_onnx_files_are_self_contained(artefact):
    paths = [artefact(name) for name in NAMES]
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted(p.name for p in paths)  # nothing beside
    for path in paths[:2]:
        model = onnx.load(str(path), load_external_data=False)
        assert model.graph.initializer and not any(onnx.external_data_helper.uses_external_data(t)
                                                   for t in model.graph.initializer)


@pytest.mark.parametrize("name", ["onnx-fp32", "ort-int8"])
def test_bad_files_fail_with_the_format_and_cause(tmp_path, name):
    fmt = FORMATS[name]
    corrupt = tmp_path / fmt.filename()
    corrupt.write_bytes(b"this is not a model" * 100)
    for action in (fmt.load, fmt.inspect):
        with pytest.raises(ExportError, match=f"{name}: ONNX Runtime cannot load .*{corrupt.name}"):
            action(corrupt)
    with pytest.raises(ExportError, match=f"{name}: .*missing.onnx is not a file"):
        fmt.load(tmp_path / "missing.onnx")


def test_int8_without_calibration_images_is_refused(inputs, tmp_path):
    empty = ExportInputs(inputs.model, inputs.example, inputs.calibration[:0], CLASSES, METADATA)
    with pytest.raises(ExportError, match="calibration images; none were given"):
        FORMATS["onnx-int8"].export(empty, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()

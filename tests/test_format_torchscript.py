"""TorchScript artefacts (.pt and the lite interpreter's .ptl): exported once, checked against the eager model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmcell.core.data.synthetic import SYNTH_CLASSES, render_cell
from bmcell.core.data.transforms import unit_transform
from bmcell.core.models import build_model
from export.formats import FORMATS
from export.formats.base import ExportError, ExportInputs
from export.wrapper import NormalizedClassifier
from tests.conftest import lazy_exporter

SIZE = 64
CLASSES = ["blast", "lymphocyte", "neutrophil"]
METADATA = {"image_size": str(SIZE), "mean": "[0.1, 0.2, 0.3]", "std": "[0.9, 0.8, 0.7]", "license": "Apache-2.0"}
NAMES = ("torchscript-fp32", "torchscript-lite")


def export_inputs(count: int = 8) -> ExportInputs:
    """A tiny random MobileViT with normalisation folded in, and `count` synthetic cells as [0, 1] images."""
    torch.manual_seed(0)
    model = NormalizedClassifier(build_model("mobilevit_xxs", len(CLASSES)).eval(), [0.1, 0.2, 0.3], [0.9, 0.8, 0.7])
    rng = np.random.default_rng(0)
    transform = unit_transform(SIZE)
    images = torch.stack([transform(render_cell(SYNTH_CLASSES[i % len(SYNTH_CLASSES)], rng, SIZE))
                          for i in range(count)])
    return ExportInputs(model=model.eval(), example=images[:1], calibration=images, classes=CLASSES,
                        metadata=METADATA)


def eager_logits(inputs: ExportInputs) -> np.ndarray:
    """The reference: the eager model on every calibration image."""
    with torch.no_grad():
        return inputs.model(inputs.calibration).numpy()


@pytest.fixture(scope="module")
def inputs() -> ExportInputs:
    return export_inputs()


@pytest.fixture(scope="module")
def artefact(inputs, tmp_path_factory):
    """name → path of that format's artefact, exported on first use, once for the whole module."""
    return lazy_exporter(tmp_path_factory.mktemp("torchscript"), inputs)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_eager(name, inputs, artefact):
    fmt = FORMATS[name]
    assert fmt.cannot_run_here() is None
    reference = eager_logits(inputs)
    out = fmt.load(artefact(name))(inputs.calibration.numpy())
    assert out.dtype == np.float32 and out.shape == reference.shape == (8, len(CLASSES))
    assert np.abs(out - reference).max() < 1e-4
    assert (out.argmax(1) == reference.argmax(1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_threads_are_honoured_and_restored(name, inputs, artefact):
    run = FORMATS[name].load(artefact(name), threads=1)
    before = torch.get_num_threads()
    out = run(inputs.calibration[:2].numpy())
    assert torch.get_num_threads() == before
    assert np.abs(out - eager_logits(inputs)[:2]).max() < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_inspect_returns_the_embedded_labels_and_metadata(name, inputs, artefact):
    declared = FORMATS[name].inspect(artefact(name))
    assert declared["labels"] == CLASSES
    assert declared["metadata"].items() >= METADATA.items()
    assert declared["inputs"] == [{"shape": [1, 3, SIZE, SIZE], "dtype": "float32"}]
    assert declared["outputs"] == [{"shape": [1, len(CLASSES)], "dtype": "float32"}]
    assert declared["input_size"] == [SIZE, SIZE]


def test_each_archive_is_for_its_runtime(artefact):
    from torch.jit.mobile import _load_for_lite_interpreter

    assert type(_load_for_lite_interpreter(str(artefact("torchscript-lite")))).__name__ == "LiteScriptModule"
    with pytest.raises(RuntimeError, match="bytecode"):  # a plain TorchScript archive has no lite bytecode
        _load_for_lite_interpreter(str(artefact("torchscript-fp32")))
    assert FORMATS["torchscript-fp32"].inspect(artefact("torchscript-fp32"))["optimisation"] == "torch.jit.freeze"
    lite = FORMATS["torchscript-lite"].inspect(artefact("torchscript-lite"))["optimisation"]
    expected = "optimize_for_mobile" if torch._C._is_xnnpack_enabled() else "torch.jit.freeze"
    assert lite.startswith(expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("damage", ["truncate", "flip-middle", "missing"])
def test_a_damaged_file_raises_an_export_error_naming_it(name, damage, artefact, tmp_path):
    path = tmp_path / artefact(name).name
    data = bytearray(artefact(name).read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip-middle":  # inside the weights: torch would load it and give other logits
        middle = len(data) // 2
        data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
        path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"{name}.*{path.name}"):
        FORMATS[name].load(path)
    if damage != "missing":
        with pytest.raises(ExportError, match=f"{name}.*{path.name}"):
            FORMATS[name].inspect(path)

"""ExecuTorch programs lowered to XNNPACK (fp32 and int8): exported once, run by the runtime, checked against eager."""

from __future__ import annotations

import numpy as np
import pytest

from bmcell.core.models import count_flops
from export.formats import FORMATS
from export.formats.base import ExportError
from tests.conftest import lazy_exporter
from tests.test_format_torchscript import CLASSES, METADATA, SIZE, eager_logits, export_inputs

pytest.importorskip("executorch.runtime", reason="executorch is not installed")

# Lowering MobileViT to XNNPACK takes 1-2 min for fp32 and 3-4 min for int8 on 2 busy cores; each format is exported
# on first use, so `-k "not int8"` runs without the int8 export.
pytestmark = pytest.mark.slow

NAMES = ("executorch-fp32", "executorch-int8")
# Measured on this tiny random model, 8 calibration images, scored on those images: 18.1 dB.
MIN_SQNR_DB = 15.0


def sqnr_db(reference: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio of out against reference, in dB."""
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - out) ** 2)))


@pytest.fixture(scope="module")
def inputs():
    return export_inputs()


@pytest.fixture(scope="module")
def artefact(inputs, tmp_path_factory):
    """name → path of that format's artefact, exported on first use, once for the whole module."""
    return lazy_exporter(tmp_path_factory.mktemp("executorch"), inputs)


def test_fp32_matches_eager(inputs, artefact):
    fmt = FORMATS["executorch-fp32"]
    assert fmt.cannot_run_here() is None
    reference = eager_logits(inputs)
    out = fmt.load(artefact("executorch-fp32"))(inputs.calibration.numpy())
    assert out.dtype == np.float32 and out.shape == reference.shape == (8, len(CLASSES))
    assert np.abs(out - reference).max() < 1e-4
    assert (out.argmax(1) == reference.argmax(1)).all()


def test_int8_is_close_to_eager(inputs, artefact):
    reference = eager_logits(inputs)
    out = FORMATS["executorch-int8"].load(artefact("executorch-int8"))(inputs.calibration.numpy())
    assert out.dtype == np.float32 and out.shape == reference.shape
    sqnr = sqnr_db(reference, out)
    print(f"executorch-int8 SQNR {sqnr:.1f} dB, max abs error {np.abs(out - reference).max():.2e}")
    assert sqnr > MIN_SQNR_DB
    assert artefact("executorch-int8").stat().st_size < artefact("executorch-fp32").stat().st_size / 2


@pytest.mark.parametrize("name", NAMES)
def test_inspect_reads_back_labels_metadata_and_ops(name, inputs, artefact):
    declared = FORMATS[name].inspect(artefact(name))
    assert declared["labels"] == CLASSES
    assert declared["metadata"] == METADATA
    assert declared["image_size"] == SIZE and declared["input_size"] == [SIZE, SIZE]
    assert declared["inputs"] == [{"shape": [1, 3, SIZE, SIZE], "dtype": "float32"}]
    assert declared["outputs"] == [{"shape": [1, len(CLASSES)], "dtype": "float32"}]
    print(f"{name}: {declared['delegate_calls']} delegate calls; outside XNNPACK: {declared['non_delegated_ops']}")
    # The whole MobileViT runs inside one XNNPACK delegate (export.delegable): a portable operator here is a slow
    # single-threaded kernel on a phone, with copies in and out of the delegate around it.
    assert declared["delegate_calls"] == {"XnnpackBackend": 1}
    assert declared["non_delegated_ops"] == {}
    assert declared["delegated_op_share"] == declared["delegated_flop_share"] == 1.0
    # FLOPs read from the program's XNNPACK nodes: torch's counter (convolutions and products) plus about 3% for the
    # element-wise operators it leaves out
    assert declared["delegated_ops"] > 100
    assert 1.0 <= declared["flops"] / count_flops(inputs.model, SIZE) < 1.1
    # int8: convolutions and linear layers (most FLOPs); attention's products and softmax and the norms stay float
    assert 0.5 < declared["int8_flop_share"] < 1 if name.endswith("int8") else declared["int8_flop_share"] == 0


def test_threads_resize_the_pool_and_stale_runners_refuse_to_run(inputs, artefact):
    path = artefact("executorch-fp32")
    images = inputs.calibration[:2].numpy()
    one = FORMATS["executorch-fp32"].load(path, threads=1)
    expected = one(images)
    two = FORMATS["executorch-fp32"].load(path, threads=2)
    np.testing.assert_allclose(two(images), expected, atol=1e-5)
    with pytest.raises(ExportError, match="threadpool was resized"):
        one(images)  # XNNPACK would run it on the destroyed pool


def test_wrong_image_size_is_refused(artefact):
    run = FORMATS["executorch-fp32"].load(artefact("executorch-fp32"))
    with pytest.raises(ExportError, match="takes Nx3x64x64 images"):
        run(np.zeros((1, 3, 32, 32), dtype=np.float32))


# A flipped byte inside the weights cannot be detected: a .pte carries no checksum (the manifest's sha256 does).
@pytest.mark.parametrize("damage", ["truncate", "flip-header", "missing"])
def test_a_damaged_file_raises_an_export_error_naming_it(damage, artefact, tmp_path):
    name = "executorch-fp32"
    path = tmp_path / artefact(name).name
    data = bytearray(artefact(name).read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip-header":
        data[:64] = bytes(b ^ 0xFF for b in data[:64])
        path.write_bytes(bytes(data))
    for call in (FORMATS[name].load, FORMATS[name].inspect):
        with pytest.raises(ExportError, match=f"{name}.*{path.name}"):
            call(path)

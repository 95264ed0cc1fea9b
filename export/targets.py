"""Export targets: which format families a target means, and which precisions --quantize keeps."""

from __future__ import annotations

from bmcell.core.errors import BmcellError
from export.formats import FORMATS
from export.formats.base import ExportFormat

TARGET_FAMILIES = {
    "android": ("executorch",),  # what android_demo runs; TorchScript's Lite Interpreter is deprecated by PyTorch
    "ios": ("coreml",),
    "onnx": ("onnx",),
    "torchscript": ("torchscript",),
    "web": ("onnx",),  # the web app runs model-onnx-*.onnx with onnxruntime-web
}
TARGET_FAMILIES["all"] = tuple(dict.fromkeys(f for families in TARGET_FAMILIES.values() for f in families))
QUANTIZE = {"none": ("fp32", "fp16"), "int8": ("int8",), "all": ("fp32", "fp16", "int8")}


def select_formats(targets: list[str], quantize: str) -> list[ExportFormat]:
    """The formats of the given targets at the precisions --quantize keeps, in registry order."""
    unknown = [t for t in targets if t not in TARGET_FAMILIES]
    if unknown:
        raise BmcellError(f"unknown target(s) {unknown}; choose from {', '.join(TARGET_FAMILIES)}")
    if quantize not in QUANTIZE:
        raise BmcellError(f"unknown --quantize {quantize!r}; choose from {', '.join(QUANTIZE)}")
    families = {f for t in targets for f in TARGET_FAMILIES[t]}
    return [fmt for fmt in FORMATS.values() if fmt.family in families and fmt.precision in QUANTIZE[quantize]]

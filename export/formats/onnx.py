"""ONNX artefacts for ONNX Runtime: fp32 from torch.onnx (dynamo), int8 by static QDQ quantisation calibrated on real
images, and both again in the ORT format that ONNX Runtime Mobile loads."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import bmcell
from export.formats.base import ExportError, ExportFormat, ExportInputs, Runner
from export.ranges import widen_to_grid

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

INPUT = "image"
OUTPUT = "logits"
# onnx-int8 leaves these op types in float. Softmax: ORT's QLinearSoftmax cost ~6x the float Softmax on x86
# (profiled on mobilevit_xs). LayerNormalization: ORT's CPU provider has no int8 kernel for it.
FLOAT_OP_TYPES = frozenset({"Softmax", "LayerNormalization"})
VIEW_CONSTANTS = ("reversal", "view_mean")  # bmcell.core.views.ViewAveraged's buffers (their initializers' names)
CONVERSION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
INTEGER_TYPES = frozenset({"uint8", "int8"})
CALIBRATION_PERCENTILE = 99.999  # activation ranges keep this share of calibration values; outliers clip
# The calibrator keeps every intermediate tensor of the images it is given before it histograms them (about 250 MB
# per image for MobileViT-XS at 256 px), so images go to it a few at a time: the histograms accumulate across chunks.
MAX_CALIBRATION_CHUNK = 8


def calibration_chunk(count: int, views: int = 1) -> int:
    """The largest chunk size up to MAX_CALIBRATION_CHUNK network passes (images x views) that divides count (ORT
    needs equal strides): ORT holds every intermediate output of a chunk in memory."""
    most = max(1, MAX_CALIBRATION_CHUNK // views)
    return max(size for size in range(1, most + 1) if count % size == 0)


class _CalibrationImages:
    """Feeds quantize_static the calibration images, one batch-1 input at a time, over the range ORT sets for each
    chunk (a CalibrationDataReader with set_range, for CalibStridedMinMax)."""

    def __init__(self, images: np.ndarray) -> None:
        self._all = images
        self.set_range(0, len(images))

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Give the images [start_index, end_index) next."""
        self._images = iter(self._all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next image as the model's input feed, or None when this range is done."""
        image = next(self._images, None)
        return None if image is None else {INPUT: np.ascontiguousarray(image[None], dtype=np.float32)}


def _metadata(inputs: ExportInputs) -> dict[str, str]:
    """The metadata_props to embed: all of inputs.metadata, and the labels as JSON under "classes"."""
    return inputs.metadata | {"classes": json.dumps(inputs.classes)}


def _embed_metadata(path: Path, inputs: ExportInputs) -> None:
    """Rewrite the ONNX file at path with the metadata added to metadata_props (the quantiser's own entries kept),
    doc_string and producer fields."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {prop.key: prop.value for prop in model.metadata_props} | _metadata(inputs))
    model.doc_string = inputs.metadata.get("description", "bmcell classifier")
    model.producer_name, model.producer_version = "bmcell", bmcell.__version__
    onnx.save_model(model, str(path))  # no external data: a model under 2 GB stays one self-contained file


def _export_fp32(inputs: ExportInputs, path: Path) -> None:
    """torch.onnx (dynamo) export with a static batch of 1, then the metadata."""
    torch.onnx.export(inputs.model, (inputs.example,), str(path), dynamo=True, external_data=False,
                      input_names=[INPUT], output_names=[OUTPUT], verbose=False)
    _embed_metadata(path, inputs)


def _novelty_nodes(model: onnx.ModelProto) -> set[str]:
    """The nodes of the novelty distance (bmcell.core.novelty.NoveltyDistance) and the output's concatenation: those
    that feed the output but not the classifier, whose weights are named ...head.fc...; empty for a model without
    novelty."""
    producer = {output: node for node in model.graph.node for output in node.output}

    def ancestors(names: list[str]) -> set[str]:
        seen, stack = set(), list(names)
        while stack:
            node = producer.get(stack.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                stack.extend(node.input)
        return seen

    classifier = [node.output[0] for node in model.graph.node if any("head.fc" in name for name in node.input)]
    if not any("novelty" in tensor.name for tensor in model.graph.initializer):
        return set()
    return ancestors([output.name for output in model.graph.output]) - ancestors(classifier)


def _without_novelty(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its novelty nodes, its outputs the tensors those nodes read: what ORT calibrates. The
    novelty distance stays float, and a barely trained model's nearest similarities lie within a few float steps of
    each other, which ORT's histogram cannot split into bins."""
    import onnx

    novelty = _novelty_nodes(model)
    if not novelty:
        return model
    kept = [node for node in model.graph.node if node.name not in novelty]
    produced = {output for node in kept for output in node.output}
    read = dict.fromkeys(name for node in model.graph.node if node.name in novelty for name in node.input
                         if name in produced)
    infos = {info.name: info for info in model.graph.value_info}
    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(model)
    del trimmed.graph.node[:], trimmed.graph.output[:]
    trimmed.graph.node.extend(kept)
    trimmed.graph.output.extend(infos[name] for name in read)
    return trimmed


def _float_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes onnx-int8 keeps in float: FLOAT_OP_TYPES, the attention products (MatMuls of two activations), the
    novelty distance (cosine distances to the stored training images differ by less than int8's steps) and the
    views' mirrors and mean (bmcell.core.views: exact in float). Were the attention product after a Softmax
    quantised, ORT would fuse DQ -> Softmax -> Q into the slow QLinearSoftmax."""
    weights = {tensor.name for tensor in model.graph.initializer}
    novelty = _novelty_nodes(model)
    return [node.name for node in model.graph.node if node.op_type in FLOAT_OP_TYPES or node.name in novelty
            or (node.op_type == "MatMul" and not weights.intersection(node.input))
            or any(name.endswith(VIEW_CONSTANTS) for name in node.input)]


def _grid_ranges(cache: Path) -> None:
    """Rewrite ORT's calibration cache with every tensor's range widened to export.ranges' grid."""
    from onnxruntime.quantization.calibrate import load_tensors_data, save_tensors_data

    ranges = load_tensors_data(cache)
    for data in ranges.data.values():
        low, high = widen_to_grid(float(data.lowest), float(data.highest))
        data.lowest, data.highest = np.float32(low), np.float32(high)
    save_tensors_data(ranges, cache)


def _export_int8(inputs: ExportInputs, path: Path) -> None:
    """The fp32 export, ORT's pre-processing, then static QDQ quantisation calibrated on every calibration image:
    uint8 activations and uint8 per-channel weights, _float_nodes left in float, activation ranges clipped at the
    CALIBRATION_PERCENTILE of their calibration histograms, then widened to export.ranges' grid (ORT calibrates
    _without_novelty into a cache file, the ranges on it are widened, and the model is quantised from that cache).
    Measured on a 1-epoch PBC MobileViT-XS (128 px, 512 validation images): u8u8 kept logit SQNR 24.7 dB and top-1
    agreement 0.959, where the faster u8s8 pair needs 7-bit weights on AVX2 without VNNI (its kernel sums products
    in int16 and saturates) and fell to 17.6 dB / 0.912, and s8s8 ran 3x slower than fp32 on this CPU at no better
    accuracy (21.8 dB / 0.924). Percentile ranges instead of min/max: 25.2 vs 24.3 dB there, and 26.0 vs 23.7 dB
    (agreement 0.973 vs 0.934) on the quickstart model."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(inputs.calibration) == 0:
        raise ExportError("ONNX int8: static quantisation needs calibration images; none were given")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx", Path(tmp) / "ranges.json"
        calibrated = Path(tmp) / "calibrated.onnx"
        _export_fp32(inputs, fp32)
        # ORT's symbolic shape inference does not know ReduceMax with its axes as an input (opset 18 on), which the
        # novelty distance uses; ONNX's own shape inference does, and the shapes are static.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=inputs.novelty)
        model = onnx.load(str(prepared))
        onnx.save_model(_without_novelty(model), str(calibrated))
        options = dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                       per_channel=True, nodes_to_exclude=_float_nodes(model),
                       calibrate_method=CalibrationMethod.Percentile, calibration_cache_path=str(cache),
                       extra_options={"CalibPercentile": CALIBRATION_PERCENTILE,
                                      "CalibStridedMinMax": calibration_chunk(len(inputs.calibration),
                                                                                inputs.views)})
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrator narrates on stdout
            quantize_static(str(calibrated), str(Path(tmp) / "first.onnx"),
                            _CalibrationImages(inputs.calibration.numpy()), **options)
        _grid_ranges(cache)
        quantize_static(str(prepared), str(path), None, **options)
    _embed_metadata(path, inputs)


WRITERS = {"fp32": _export_fp32, "int8": _export_int8}


def _session_options(threads: int | None) -> ort.SessionOptions:
    """CPU session options: intra-op threads (0: ORT chooses), one inter-op thread, every graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _session(name: str, path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of path, or an ExportError naming the format and the cause."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ExportError(f"{name}: {path} is not a file")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types for bad files
        raise ExportError(f"{name}: ONNX Runtime cannot load {path}: {error}") from error


def _op_account(name: str, path: Path, shape: list[int]) -> dict[str, dict[str, int]]:
    """The ops ORT executes on one input (from its profiler): int8 kernels (an 8-bit integer input), float kernels
    (none), and the Q/DQ conversions between them."""
    options = _session_options(1)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = _session(name, path, options)
        session.run(None, {INPUT: np.zeros(shape, dtype=np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    account = {"int8_ops": Counter(), "float_ops": Counter(), "conversion_ops": Counter()}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            dtypes = {dtype for tensor in event["args"].get("input_type_shape", []) for dtype in tensor}
            kind = ("conversion_ops" if op in CONVERSION_OPS
                    else "int8_ops" if INTEGER_TYPES.intersection(dtypes) else "float_ops")
            account[kind][op] += 1
    return {kind: dict(counts) for kind, counts in account.items()}


class OnnxFormat(ExportFormat):
    """A self-contained .onnx file: input "image" 1x3xHxW float32 RGB in [0, 1], output "logits" 1xC."""

    family = "onnx"
    suffix = ".onnx"
    runtime = "ONNX Runtime"

    def export(self, inputs: ExportInputs, path: Path) -> None:
        """Write the ONNX model of this precision to path."""
        WRITERS[self.precision](inputs, path)

    def load(self, path: Path, threads: int | None = None) -> Runner:
        """An ONNX Runtime CPU session; the graph takes batch 1, so a batch runs image by image."""
        session = _session(self.name, path, _session_options(threads))

        def run(images: np.ndarray) -> np.ndarray:
            images = np.ascontiguousarray(images, dtype=np.float32)
            return np.concatenate([session.run([OUTPUT], {INPUT: images[i:i + 1]})[0] for i in range(len(images))])

        return run

    def inspect(self, path: Path) -> dict:
        """Inputs, outputs, embedded metadata and labels; for int8, the ops ORT executes in int8 and in float."""
        session = _session(self.name, path, _session_options(1))
        meta, inputs, outputs = session.get_modelmeta(), session.get_inputs(), session.get_outputs()
        metadata = dict(meta.custom_metadata_map)
        declared = {
            "inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in inputs],
            "outputs": [{"name": o.name, "shape": o.shape, "type": o.type} for o in outputs],
            "input_size": inputs[0].shape[2:], "producer": meta.producer_name, "description": meta.description,
            "metadata": metadata, "labels": json.loads(metadata["classes"]) if "classes" in metadata else None,
        }
        if self.precision == "int8":
            declared |= _op_account(self.name, path, inputs[0].shape)
        return declared


class OrtFormat(OnnxFormat):
    """The same model in the ORT format (.ort): optimised, pre-serialised, what ONNX Runtime Mobile loads."""

    suffix = ".ort"
    runtime = "ONNX Runtime Mobile"

    def export(self, inputs: ExportInputs, path: Path) -> None:
        """Convert the ONNX model of this precision with ORT's convert_onnx_models_to_ort (fixed optimisations at
        level "all", NCHWc layout left out so the file suits any CPU): the one this export already wrote, so that
        both files hold the same calibration, or else one exported into a temporary folder."""
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

        with tempfile.TemporaryDirectory() as tmp:
            model, converted = Path(tmp) / "model.onnx", Path(tmp) / "ort"
            source = inputs.exported.get(f"onnx-{self.precision}")
            if source is not None:
                shutil.copy2(source, model)
            else:
                super().export(inputs, model)
            with contextlib.redirect_stdout(io.StringIO()):  # the tool narrates each step on stdout
                convert_onnx_models_to_ort(model, output_dir=converted, optimization_styles=[OptimizationStyle.Fixed])
            shutil.move(converted / "model.ort", path)


class OnnxFp32(OnnxFormat):
    """ONNX, float32."""

    name = "onnx-fp32"
    precision = "fp32"


class OnnxInt8(OnnxFormat):
    """ONNX, static int8 QDQ."""

    name = "onnx-int8"
    precision = "int8"


class OrtFp32(OrtFormat):
    """ORT format, float32."""

    name = "ort-fp32"
    precision = "fp32"


class OrtInt8(OrtFormat):
    """ORT format, static int8 QDQ (fused into integer kernels at conversion)."""

    name = "ort-int8"
    precision = "int8"


FORMATS = [OnnxFp32(), OnnxInt8(), OrtFp32(), OrtInt8()]

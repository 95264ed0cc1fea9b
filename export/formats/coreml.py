"""Core ML ML Programs (.mlpackage folders) for iOS and macOS: an RGB image in, the class label and per-class
calibrated probabilities out (softmax of logits / temperature inside the model, so every Core ML consumer — Vision,
Xcode's preview, a user's own app — reads real probabilities); fp16 compute, and the same with int8 weights."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from export.formats.base import ExportError, ExportFormat, ExportInputs, Runner

if TYPE_CHECKING:
    import coremltools as ct

IMAGE = "image"
LABEL = "classLabel"  # coremltools' classifier outputs: the top label, and a label -> score dictionary
SCORES = "classLabel_probs"
PROBABILITIES = "probabilities"  # the probabilities' tensor before the classifier turns it into SCORES
NOVELTY = "novelty"  # export.manifest.NOVELTY_OUTPUT
OUTPUT_NOTE = "calibrated probability of every class: softmax(logits / {:.4g}), summing to 1"
# MIL ops that turn stored low-bit weights into fp16 at load time (iOS16 and iOS18 opsets).
QUANTIZED_WEIGHT_OPS = frozenset({"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"})


def _convert(inputs: ExportInputs) -> ct.models.MLModel:
    """torch.export the model, then convert it to an fp16 ML Program classifier whose input is an RGB image that
    Core ML scales by 1/255 into the [0, 1] tensor the model takes."""
    import coremltools as ct

    classes = len(inputs.classes) if inputs.novelty else None
    model = torch.nn.Sequential(inputs.model, Calibrated(inputs.temperature, classes)).eval()
    program = torch.export.export(model, (inputs.example,)).run_decompositions({})
    image = ct.ImageType(name=IMAGE, shape=tuple(inputs.example.shape), scale=1 / 255.0,
                         color_layout=ct.colorlayout.RGB)
    options = {"classifier_config": ct.ClassifierConfig(list(inputs.classes)), "convert_to": "mlprogram",
               "compute_precision": ct.precision.FLOAT16, "minimum_deployment_target": ct.target.iOS16}
    if not inputs.novelty:
        return ct.convert(program, inputs=[image], **options)
    # Two outputs: coremltools' classifier takes the last for the probabilities and cannot then describe the other
    # (it matches output types to outputs by position), so convert to MIL first, drop the positional types, finish.
    mil = ct.convert(program, inputs=[image], outputs=[ct.TensorType(name=NOVELTY), ct.TensorType(name=PROBABILITIES)],
                     **(options | {"convert_to": "milinternal"}))
    mil.functions["main"].output_types = None
    return ct.convert(mil, **options)


class Calibrated(torch.nn.Module):
    """softmax(logits / temperature) over the classes: the calibrated probabilities the apps' threshold applies to;
    with classes given, the output's column after them is the novelty, passed on as another output (first)."""

    def __init__(self, temperature: float, classes: int | None = None) -> None:
        super().__init__()
        self.temperature, self.classes = float(temperature), classes

    def forward(self, output: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Probabilities, one row per image (and the novelty column)."""
        if self.classes is None:
            return torch.softmax(output / self.temperature, dim=1)
        return output[:, self.classes:], torch.softmax(output[:, :self.classes] / self.temperature, dim=1)  # novelty first


def _describe(model: ct.models.MLModel, inputs: ExportInputs) -> None:
    """Embed the metadata: description, version, licence, author, every metadata entry, and feature descriptions."""
    metadata = inputs.metadata | {"classes": json.dumps(inputs.classes),
                                  "output": OUTPUT_NOTE.format(inputs.temperature)}
    model.short_description = metadata.get("description", "bmcell classifier")
    model.version = metadata.get("bmcell_version", "")
    model.license = metadata.get("license", "")
    model.author = "bmcell"
    model.user_defined_metadata.update(metadata)
    height, width = inputs.example.shape[-2:]
    model.input_description[IMAGE] = f"RGB image, {width}x{height} (resize the shorter side, centre-crop)"
    model.output_description[LABEL] = "the most likely class"
    model.output_description[SCORES] = OUTPUT_NOTE.format(inputs.temperature)


def _program_ops(spec: ct.proto.Model_pb2.Model) -> Counter[str]:
    """Op types of the ML Program's main function."""
    main = spec.mlProgram.functions["main"]
    return Counter(op.type for op in main.block_specializations[main.opset].operations)


def _labels(spec: ct.proto.Model_pb2.Model) -> list[str] | None:
    """The class labels of the program's classify op, or None when it has none."""
    main = spec.mlProgram.functions["main"]
    classify = next((op for op in main.block_specializations[main.opset].operations if op.type == "classify"), None)
    if classify is None:
        return None
    values = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [value.immediateValue.tensor.strings.values[0] for value in values]


def _output_kind(spec: ct.proto.Model_pb2.Model) -> str:
    """'probabilities' when the classify op's scores come from a softmax (through casts only), else 'logits'."""
    main = spec.mlProgram.functions["main"]
    operations = main.block_specializations[main.opset].operations
    producer = {output.name: op for op in operations for output in op.outputs}
    classify = next((op for op in operations if op.type == "classify"), None)
    if classify is None:
        return "logits"
    op = producer.get(classify.inputs["probabilities"].arguments[0].name)
    while op is not None and op.type == "cast":
        op = producer.get(op.inputs["x"].arguments[0].name)
    return "probabilities" if op is not None and op.type == "softmax" else "logits"


class CoreMLFormat(ExportFormat):
    """An .mlpackage: input "image" (RGB, HxW), outputs "classLabel", "classLabel_probs" (label -> probability) and,
    for a model with novelty statistics, "novelty" (1x1)."""

    family = "coreml"
    suffix = ".mlpackage"
    runtime = "Core ML (iOS/macOS)"
    input_kind = "image"
    output_kind = "probabilities"

    def export(self, inputs: ExportInputs, path: Path) -> None:
        """Convert, compress at this precision, embed the metadata, save the package."""
        model = self.compress(_convert(inputs))
        _describe(model, inputs)
        model.save(str(path))

    def compress(self, model: ct.models.MLModel) -> ct.models.MLModel:
        """The fp16 model as it is."""
        return model

    def cannot_run_here(self) -> str | None:
        """Core ML runs on Apple platforms only."""
        return None if sys.platform == "darwin" else "Core ML runtime needs macOS"

    def load(self, path: Path, threads: int | None = None) -> Runner:
        """A Core ML model fed uint8 RGB pictures of the [0, 1] inputs; Core ML picks its own threads and units."""
        reason = self.cannot_run_here()
        if reason:
            raise ExportError(f"{self.name}: cannot load {path}: {reason}")
        import coremltools as ct
        from PIL import Image

        try:
            model = ct.models.MLModel(str(path))
        except Exception as error:  # coremltools raises assorted types for a bad package
            raise ExportError(f"{self.name}: Core ML cannot load {path}: {error}") from error
        classes = _labels(model.get_spec())

        def run(images: np.ndarray) -> np.ndarray:
            pixels = np.round(np.clip(np.asarray(images), 0.0, 1.0) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
            results = [model.predict({IMAGE: Image.fromarray(picture, "RGB")}) for picture in pixels]
            return np.array([[result[SCORES][c] for c in classes]
                             + ([float(np.ravel(result[NOVELTY])[0])] if NOVELTY in result else [])
                             for result in results], dtype=np.float32)

        return run

    def inspect(self, path: Path) -> dict:
        """What the package's spec declares, read without the Core ML runtime: input image, outputs, labels,
        metadata, and how many weights are stored quantised."""
        import coremltools as ct

        try:
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        except Exception as error:  # coremltools raises assorted types for a bad package
            raise ExportError(f"{self.name}: cannot read the Core ML spec of {path}: {error}") from error
        image = spec.description.input[0].type.imageType
        ops = _program_ops(spec)
        meta = spec.description.metadata
        return {
            "inputs": [{"name": spec.description.input[0].name, "type": "image", "width": image.width,
                        "height": image.height,
                        "color_space": ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)}],
            "outputs": [output.name for output in spec.description.output],
            "input_size": [image.height, image.width], "labels": _labels(spec),
            "description": meta.shortDescription, "version": meta.versionString, "license": meta.license,
            "author": meta.author, "metadata": dict(meta.userDefined),
            "quantized_weights": sum(ops[op] for op in QUANTIZED_WEIGHT_OPS),
            "output_kind": _output_kind(spec),
            "output_description": {output.name: output.shortDescription for output in spec.description.output},
            "ops": dict(ops),
        }


class CoreMLFp16(CoreMLFormat):
    """Core ML, fp16 weights and compute."""

    name = "coreml-fp16"
    precision = "fp16"


class CoreMLInt8(CoreMLFormat):
    """Core ML, int8 per-channel symmetric weights (dequantised to fp16 at load), fp16 compute."""

    name = "coreml-int8"
    precision = "int8"

    def compress(self, model: ct.models.MLModel) -> ct.models.MLModel:
        """Linear symmetric int8 quantisation of the weights, one scale per output channel."""
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return linear_quantize_weights(model, config=OptimizationConfig(global_config=config))


FORMATS = [CoreMLFp16(), CoreMLInt8()]

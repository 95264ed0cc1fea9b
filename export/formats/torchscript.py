"""TorchScript artefacts: the model traced and frozen for the TorchScript runtime (.pt), and the same graph for the
PyTorch Mobile lite interpreter (.ptl); labels, metadata and the tensor signature travel as extra files inside."""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from export.formats.base import ExportError, ExportFormat, ExportInputs, Runner

LABELS_FILE = "labels.json"  # the class names in output order
METADATA_FILE = "metadata.json"  # inputs.metadata
SIGNATURE_FILE = "signature.json"  # input and output tensors, and how the graph was optimised
EXTRA_FILES = (LABELS_FILE, METADATA_FILE, SIGNATURE_FILE)

Loaded = TypeVar("Loaded")


def _traced(inputs: ExportInputs) -> torch.jit.ScriptModule:
    """torch.jit.trace on the example image, checked against eager by check_trace.

    timm's MobileViT computes its patch grid with math.ceil and an `if` on tensor sizes: tracing records them as
    constants and warns (TracerWarning, silenced for this call only). That is right here, as every artefact takes a
    fixed 1x3xHxW input. (torch.jit.script also compiles it; tracing gives the plain graph mobile runtimes prefer.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(inputs.model.eval(), (inputs.example,))


def _tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """Shape and dtype name of a tensor."""
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}


def _extra_files(inputs: ExportInputs, optimisation: str) -> dict[str, str]:
    """The extra files to embed: labels, metadata, and the input and output tensors with the optimisation applied."""
    with torch.no_grad():
        logits = inputs.model(inputs.example)
    signature = {"inputs": [_tensor(inputs.example)], "outputs": [_tensor(logits)], "optimisation": optimisation}
    return {LABELS_FILE: json.dumps(inputs.classes), METADATA_FILE: json.dumps(inputs.metadata),
            SIGNATURE_FILE: json.dumps(signature)}


class TorchScriptFormat(ExportFormat):
    """A frozen traced graph: forward takes 1x3xHxW float32 RGB in [0, 1] and returns 1xC logits."""

    family = "torchscript"
    precision = "fp32"

    def _optimised(self, traced: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, str]:
        """The graph to save and what was done to it: frozen (weights inlined, conv-bn folded, dropout removed)."""
        return torch.jit.freeze(traced), "torch.jit.freeze"

    def _save(self, module: torch.jit.ScriptModule, path: Path, extra_files: dict[str, str]) -> None:
        """Write the TorchScript archive."""
        torch.jit.save(module, str(path), _extra_files=extra_files)

    def _load(self, path: str) -> Callable[..., torch.Tensor]:
        """Load the archive into its runtime."""
        return torch.jit.load(path)

    def _checked(self, path: Path, load: Callable[[str], Loaded]) -> Loaded:
        """load(path) once every member of the archive passed its CRC check (torch's reader checks none), or an
        ExportError naming the format, the file and the cause."""
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{self.name}: {path} is not a file")
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, EOFError, ValueError) as error:
            raise ExportError(f"{self.name}: {path.name} is not a readable TorchScript archive, or is truncated "
                              f"({error})") from error
        if damaged is not None:
            raise ExportError(f"{self.name}: {path.name} is corrupted: its member {damaged} fails its CRC check")
        try:
            return load(str(path))
        except (RuntimeError, ValueError) as error:
            raise ExportError(f"{self.name}: cannot load {path.name} ({str(error).splitlines()[0]})") from error

    def export(self, inputs: ExportInputs, path: Path) -> None:
        """Trace, optimise for this runtime, save with the extra files."""
        module, optimisation = self._optimised(_traced(inputs))
        self._save(module, path, _extra_files(inputs, optimisation))

    def load(self, path: Path, threads: int | None = None) -> Runner:
        """The module, run image by image; threads sets torch's intra-op threads for each call, restored after."""
        module = self._checked(path, self._load)

        def run(images: np.ndarray) -> np.ndarray:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads or previous)
            try:
                with torch.no_grad():
                    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
                    return torch.cat([module(image[None]) for image in batch]).numpy()
            finally:
                torch.set_num_threads(previous)

        return run

    def inspect(self, path: Path) -> dict:
        """The embedded labels, metadata, tensor signature and optimisation, read from the archive's extra files."""
        extra = dict.fromkeys(EXTRA_FILES, "")
        self._checked(path, lambda file: torch.jit.load(file, _extra_files=extra))
        missing = [name for name, content in extra.items() if not content]
        if missing:
            raise ExportError(f"{self.name}: {Path(path).name} lacks the extra files {missing}: not a bmcell export")
        signature = json.loads(extra[SIGNATURE_FILE])
        return signature | {"input_size": signature["inputs"][0]["shape"][2:],
                            "labels": json.loads(extra[LABELS_FILE]), "metadata": json.loads(extra[METADATA_FILE])}


class TorchScriptFp32(TorchScriptFormat):
    """For the full TorchScript runtime (torch.jit.load, LibTorch)."""

    name = "torchscript-fp32"
    suffix = ".pt"
    runtime = "TorchScript"


class TorchScriptLite(TorchScriptFormat):
    """For the PyTorch Mobile lite interpreter (org.pytorch:pytorch_android_lite, LibTorch-Lite)."""

    name = "torchscript-lite"
    suffix = ".ptl"
    runtime = "PyTorch Mobile (lite interpreter)"

    def _optimised(self, traced: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, str]:
        """optimize_for_mobile where torch was built with XNNPACK (its passes assert without it, as in the CUDA
        wheels of torch 2.14): the frozen graph otherwise, which also leaves no XNNPACK-prepacked ops the lite
        interpreter here could not run."""
        if torch._C._is_xnnpack_enabled():
            from torch.utils.mobile_optimizer import optimize_for_mobile

            return optimize_for_mobile(traced), "optimize_for_mobile"
        return torch.jit.freeze(traced), "torch.jit.freeze (this torch has no XNNPACK for optimize_for_mobile)"

    def _save(self, module: torch.jit.ScriptModule, path: Path, extra_files: dict[str, str]) -> None:
        """Write the lite interpreter's bytecode archive."""
        module._save_for_lite_interpreter(str(path), _extra_files=extra_files)

    def _load(self, path: str) -> Callable[..., torch.Tensor]:
        """Load the archive into the lite interpreter."""
        from torch.jit.mobile import _load_for_lite_interpreter

        return _load_for_lite_interpreter(path)


FORMATS = [TorchScriptFp32(), TorchScriptLite()]

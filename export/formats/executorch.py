"""ExecuTorch programs (.pte) lowered to XNNPACK, as the Android and iOS apps run them: fp32, and int8 by PT2E static
quantisation (symmetric, per-channel weights) calibrated on real images."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bmcell.core.novelty import NoveltyDistance
from bmcell.core.views import ViewAveraged
from export.delegable import KEPT_FLOAT, delegable
from export.delegation import program_ops
from export.formats.base import ExportError, ExportFormat, ExportInputs, Runner
from export.ranges import widen_to_grid

if TYPE_CHECKING:
    from executorch.runtime import Program

# Constant methods embedded in every program; an app calls them like forward, inspect() reads them back.
LABELS = "get_labels"  # the class names in output order (a list of strings)
METADATA = "get_metadata"  # inputs.metadata as a JSON object (a string)
IMAGE_SIZE = "get_image_size"  # side of the square input (an int)


class _Threadpool:
    """ExecuTorch's one process-wide threadpool, whose size is the only thread control its Python runtime offers.

    XNNPACK keeps a pointer to the pool that existed when a method was loaded, and a resize destroys that pool: a
    method loaded before a resize would run on freed memory (it aborts the process). So every resize starts a new
    generation and a runner refuses to run once the generation it was loaded in has passed.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.default: int | None = None

    def resize(self, threads: int | None) -> int:
        """Give the pool `threads` threads (None: the runtime's own default, one per core); the generation now."""
        from executorch.extension.pybindings import portable_lib

        current = portable_lib._threadpool_get_thread_count()
        if self.default is None:
            self.default = current
        wanted = threads or self.default
        if wanted != current:
            portable_lib._unsafe_reset_threadpool(wanted)
            self.generation += 1
        return self.generation


_THREADPOOL = _Threadpool()


def _constant_methods(inputs: ExportInputs) -> dict[str, Any]:
    """Labels, metadata and input size, as values the emitter accepts (str, int, float, bool, lists of them)."""
    return {LABELS: list(inputs.classes), METADATA: json.dumps(inputs.metadata),
            IMAGE_SIZE: int(inputs.example.shape[-1])}


def _tensor_info(info: Any) -> dict[str, Any]:
    """Shape and torch dtype name (e.g. float32) of a runtime TensorInfo."""
    from executorch.exir.scalar_type import ScalarType
    from executorch.exir.tensor import enum_to_scalar_map

    dtype = enum_to_scalar_map[ScalarType(info.dtype())]
    return {"shape": list(info.sizes()), "dtype": str(dtype).removeprefix("torch.")}


class ExecuTorchFormat(ExportFormat):
    """A .pte program: forward takes 1x3xHxW float32 RGB in [0, 1] and returns 1xC logits; get_labels,
    get_metadata and get_image_size return what the app needs to preprocess and name the classes."""

    family = "executorch"
    suffix = ".pte"
    runtime = "ExecuTorch XNNPACK"

    def _to_lower(self, exported: torch.export.ExportedProgram, inputs: ExportInputs) -> torch.export.ExportedProgram:
        """The program handed to XNNPACK: the float graph as exported."""
        return exported

    def export(self, inputs: ExportInputs, path: Path) -> None:
        """torch.export of the model in operators XNNPACK takes whole (export.delegable), this precision's graph,
        XNNPACK lowering with the constant methods, then the .pte bytes."""
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        exported = torch.export.export(delegable(inputs.model).eval(), (inputs.example,))
        edge = to_edge_transform_and_lower(self._to_lower(exported, inputs), partitioner=[XnnpackPartitioner()],
                                           constant_methods=_constant_methods(inputs))
        Path(path).write_bytes(edge.to_executorch().buffer)

    def cannot_run_here(self) -> str | None:
        """Why this machine cannot run the program: no ExecuTorch runtime, or one built without XNNPACK."""
        try:
            from executorch.runtime import Runtime
        except ImportError as error:
            return f"the ExecuTorch runtime is not installed ({error})"
        if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
            return "this ExecuTorch runtime has no XNNPACK backend"
        return None

    @contextmanager
    def _runtime_errors(self, path: Path) -> Iterator[None]:
        """The runtime's RuntimeErrors as ExportErrors naming the file (the runtime logs the detail on stderr, its
        exception only gives the error code)."""
        try:
            yield
        except RuntimeError as error:
            raise ExportError(f"{self.name}: ExecuTorch cannot load {path.name}: not a valid program, or truncated "
                              f"or corrupted ({error})") from error

    def _program(self, path: Path) -> Program:
        """The program at path through the runtime, or an ExportError naming the file and the cause."""
        from executorch.runtime import Runtime

        if not path.is_file():
            raise ExportError(f"{self.name}: {path} is not a file")
        with path.open("rb") as file:
            identifier = file.read(8)[4:]
        # Checked here because the runtime logs a wrong identifier verbatim, and bytes that are not UTF-8 make its
        # log sink throw inside C++, which aborts the process.
        if not (identifier[:2] == b"ET" and identifier[2:].isdigit()):
            raise ExportError(f"{self.name}: {path.name} is not an ExecuTorch program (its header lacks the ETnn "
                              f"identifier: corrupted, or another kind of file)")
        with self._runtime_errors(path):
            return Runtime.get().load_program(path)

    def load(self, path: Path, threads: int | None = None) -> Runner:
        """The forward method, run image by image (the graph takes batch 1). threads resizes ExecuTorch's shared
        threadpool, which invalidates runners loaded before with another count: they raise ExportError if called."""
        path = Path(path)
        program = self._program(path)
        generation = _THREADPOOL.resize(threads)  # before load_method: XNNPACK takes the pool when a method loads
        with self._runtime_errors(path):
            forward = program.load_method("forward")
        shape = tuple(forward.metadata.input_tensor_meta(0).sizes())

        def run(images: np.ndarray) -> np.ndarray:
            if _THREADPOOL.generation != generation:
                raise ExportError(f"{self.name}: the ExecuTorch threadpool was resized after {path.name} was "
                                  f"loaded (a later load with another thread count); load it again")
            batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
            if tuple(batch.shape[1:]) != shape[1:]:
                raise ExportError(f"{self.name}: {path.name} takes Nx{'x'.join(map(str, shape[1:]))} images, "
                                  f"got {'x'.join(map(str, batch.shape))}")
            return np.concatenate([forward.execute([image[None]])[0].numpy() for image in batch])

        return run

    def inspect(self, path: Path) -> dict:
        """Input and output tensors; labels, metadata and image size from the constant methods, run by the runtime;
        the delegate calls, the operators that stayed on the portable kernels and the delegated shares of
        operators and FLOPs, read from the program (export.delegation)."""
        path = Path(path)
        program = self._program(path)
        with self._runtime_errors(path):
            meta = program.metadata("forward")
            labels = program.load_method(LABELS).execute([])
            (metadata,) = program.load_method(METADATA).execute([])
            (image_size,) = program.load_method(IMAGE_SIZE).execute([])
        inputs = [_tensor_info(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        return {
            "inputs": inputs,
            "outputs": [_tensor_info(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())],
            "input_size": inputs[0]["shape"][2:],
            "labels": list(labels),
            "metadata": json.loads(metadata),
            "image_size": image_size,
        } | program_ops(path)


@functools.cache
def _grid_histogram_observer() -> type:
    """XNNPACK's activation observer (a HistogramObserver) whose chosen range is widened to export.ranges' grid
    before it becomes a scale and zero point (defined on first use: torchao is imported only to export)."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    class GridHistogramObserver(HistogramObserver):
        """HistogramObserver, its range on export.ranges' grid."""

        def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
            """The histogram's L2-optimal range, widened to the grid, as scale and zero point."""
            if self.min_val == float("inf") and self.max_val == float("-inf"):
                return super().calculate_qparams()  # never observed: torchao's default and warning
            low, high = widen_to_grid(*(float(v) for v in self._non_linear_param_search()))
            return self._calculate_qparams(torch.tensor(low), torch.tensor(high))

    return GridHistogramObserver


def quantized(node: torch.fx.Node) -> bool:
    """Whether int8 artefacts quantise a graph node. Kept in float: the novelty distance
    (bmcell.core.novelty.NoveltyDistance: cosine distances to the stored training images differ by less than int8's
    steps), the views' own mirrors and mean (bmcell.core.views.ViewAveraged: exact in float), and the own arithmetic
    of export.delegable's rewrites (attention's scaling, products and softmax; the norms' statistics), which the
    fused operators they replace kept in float; their linear layers are quantised."""
    stack = [getattr(kind, "__name__", str(kind)) for _, kind in node.meta.get("nn_module_stack", {}).values()]
    if any(name.endswith(NoveltyDistance.__name__) for name in stack):
        return False
    return not (stack and stack[-1].endswith(tuple(kind.__name__ for kind in (*KEPT_FLOAT, ViewAveraged))))


def _quantization_config() -> Any:
    """XNNPACK's symmetric config (int8 per-tensor activations, per-channel symmetric weights), its activation
    observer on the grid."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True)
    activation = dataclasses.replace(config.input_activation,
                                     observer_or_fake_quant_ctr=_grid_histogram_observer().with_args(eps=2 ** -12))
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


class ExecuTorchFp32(ExecuTorchFormat):
    """The float32 graph, lowered to XNNPACK."""

    name = "executorch-fp32"
    precision = "fp32"


class ExecuTorchInt8(ExecuTorchFormat):
    """PT2E static int8 (XNNPACKQuantizer, symmetric, per-channel weights; activation ranges on export.ranges'
    grid), lowered to XNNPACK."""

    name = "executorch-int8"
    precision = "int8"

    def _to_lower(self, exported: torch.export.ExportedProgram, inputs: ExportInputs) -> torch.export.ExportedProgram:
        """Observers inserted, every calibration image run through one at a time in float64, converted, then
        re-exported. Float64 so that the observers' histograms do not depend on the build machine's float kernels:
        float32 activations a few ulps apart move values across histogram bins, and the histogram's range search,
        a greedy walk, can then stop bins apart (seen: 8.76 vs 8.71, either side of a grid point)."""
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        if len(inputs.calibration) == 0:
            raise ExportError(f"{self.name}: static quantisation needs calibration images and none were given")
        quantizer = XNNPACKQuantizer().set_global(_quantization_config())
        quantizer.set_filter_function(quantized)
        prepared = prepare_pt2e(exported.module(), quantizer).double()
        with torch.no_grad():
            for image in inputs.calibration:
                prepared(image[None].double())
        return torch.export.export(convert_pt2e(prepared.float()), (inputs.example,))


FORMATS = [ExecuTorchFp32(), ExecuTorchInt8()]

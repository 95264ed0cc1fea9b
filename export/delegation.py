"""What an ExecuTorch program runs, read from the .pte itself: the operators left on ExecuTorch's portable kernels and
the nodes inside each XNNPACK delegate, each with its FLOPs, so that a bench can say how much of the graph a phone
runs inside XNNPACK.

FLOPs, one rule on both sides: convolutions, linear layers and matrix products 2 per multiply-add (as
bmcell.core.models.count_flops); data movement (reshape, transpose, slice, concatenation, copies) none; every other
operator one per element of its largest tensor."""

from __future__ import annotations

import importlib.resources
import json
import math
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

XNNPACK = "XnnpackBackend"

_XNN_MOVEMENT = ("XNNStaticTranspose", "XNNStaticReshape", "XNNStaticSlice", "XNNStaticConstantPad", "XNNCopy",
                 "XNNConcatenate", "XNNEvenSplit")  # name prefixes
_XNN_CONVOLUTIONS = ("XNNConv2d", "XNNDepthwiseConv2d", "XNNConvTranspose2d")
_XNN_MATRIX_PRODUCTS = ("XNNFullyConnected", "XNNBatchMatrixMultiply")
_PORTABLE_MOVEMENT = ("view_copy", "permute_copy", "expand_copy", "squeeze_copy", "unsqueeze_copy", "slice_copy",
                      "select_copy", "transpose_copy", "cat", "split", "clone", "_to_dim_order_copy",
                      "_clone_dim_order", "alias_copy", "full")  # operator names after the namespace
_PORTABLE_MATRIX_PRODUCTS = ("mm", "bmm", "addmm", "linear", "convolution")
_XNN_INTEGER = ("xnn_datatype_qint8", "xnn_datatype_quint8", "xnn_datatype_qcint8", "xnn_datatype_qdint8")


def _elements(shape: list[int]) -> int:
    """Number of elements of a tensor of this shape."""
    return math.prod(shape)


def _xnnpack_graph(payload: bytes) -> dict:
    """An XNNPACK delegate's serialised graph as JSON (nodes and values), decoded by ExecuTorch's own flatc and the
    schema it was written with."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    header = XNNHeader.from_bytes(payload[:XNNHeader.EXPECTED_LENGTH])
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with tempfile.TemporaryDirectory() as folder, importlib.resources.as_file(schema) as schema_path:
        graph = Path(folder, "graph.bin")
        graph.write_bytes(payload[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size])
        subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o", folder, str(schema_path),
                        "--", str(graph)], check=True, capture_output=True)
        return json.loads(Path(folder, "graph.json").read_text())


def _xnnpack_node_flops(kind: str, node: dict, shapes: dict[int, list[int]]) -> int:
    """FLOPs of one XNNPACK node (absent ids are 0: flatc leaves default values out)."""
    if kind.startswith(_XNN_MOVEMENT):
        return 0
    output = _elements(shapes[node.get("output_id", 0)])
    if kind in _XNN_CONVOLUTIONS:
        return 2 * output * node["kernel_height"] * node["kernel_width"] * node.get("group_input_channels", 1)
    if kind in _XNN_MATRIX_PRODUCTS:
        return 2 * output * shapes[node.get("input1_id", 0)][-1]
    return max(_elements(shapes[node.get(key, 0)]) for key in node if key.endswith("_id"))


def _xnnpack_ops(payload: bytes) -> list[tuple[str, int, bool]]:
    """(node kind, FLOPs, whether its output is int8) of every node of one XNNPACK delegate."""
    graph = _xnnpack_graph(payload)
    shapes, integer = {}, {}
    for value in graph["xvalues"]:
        tensor = value["xvalue_union"]
        tensor = tensor.get("tensor_value", tensor)  # a quantised value wraps its tensor
        shapes[tensor.get("id_out", 0)] = tensor.get("dims", [])
        integer[tensor.get("id_out", 0)] = tensor.get("datatype", "").startswith(_XNN_INTEGER)
    return [(node["xnode_union_type"], _xnnpack_node_flops(node["xnode_union_type"], node["xnode_union"], shapes),
             integer[node["xnode_union"].get("output_id", 0)]) for node in graph["xnodes"]]


def _portable_flops(operator: str, shapes: list[list[int]]) -> int:
    """FLOPs of one portable kernel call from its tensor arguments' shapes (inputs, then the out tensor)."""
    name = operator.split("::")[-1].split(".")[0]  # aten::mean.out, dim_order_ops::_to_dim_order_copy.out
    if name.startswith(_PORTABLE_MOVEMENT) or not shapes:
        return 0
    if name in _PORTABLE_MATRIX_PRODUCTS:
        if name == "convolution":  # input, weight O x I/groups x kH x kW, ...
            per_output = math.prod(shapes[1][1:])
        elif name == "linear":  # input, weight N x K, ...
            per_output = shapes[1][-1]
        else:  # mm, bmm, addmm: the second factor, (B x) K x N, comes just before the out tensor
            per_output = shapes[-2][-2]
        return 2 * _elements(shapes[-1]) * per_output
    return max(_elements(shape) for shape in shapes)


def program_ops(path: Path) -> dict[str, Any]:
    """The forward method as stored in the program: delegate calls per backend, the operators left outside any
    delegate (ExecuTorch's portable CPU kernels), the shares of operators and FLOPs inside XNNPACK delegates, and the
    share of FLOPs that XNNPACK computes in int8 (its nodes with an int8 output; portable kernels count as float)."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall, Tensor

    program = deserialize_pte_binary(Path(path).read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == "forward")
    calls = [instruction.instr_args for chain in plan.chains for instruction in chain.instructions]
    operators = [f"{op.name}.{op.overload}" if op.overload else op.name for op in plan.operators]
    delegated: list[tuple[str, int, bool]] = []
    portable: list[tuple[str, int]] = []
    for call in calls:
        if isinstance(call, DelegateCall) and plan.delegates[call.delegate_index].id == XNNPACK:
            reference = plan.delegates[call.delegate_index].processed
            delegated += _xnnpack_ops(program.backend_delegate_data[reference.index].data)
        elif isinstance(call, KernelCall):
            operator = operators[call.op_index]
            shapes = [list(plan.values[i].val.sizes) for i in call.args if isinstance(plan.values[i].val, Tensor)]
            portable.append((operator, _portable_flops(operator, shapes)))
    delegated_flops, portable_flops = sum(f for _, f, _ in delegated), sum(f for _, f in portable)
    return {
        "delegate_calls": dict(Counter(plan.delegates[c.delegate_index].id for c in calls
                                       if isinstance(c, DelegateCall))),
        "non_delegated_ops": dict(Counter(op for op, _ in portable)),
        "delegated_ops": len(delegated),
        "delegated_op_share": len(delegated) / max(len(delegated) + len(portable), 1),
        "delegated_flop_share": delegated_flops / max(delegated_flops + portable_flops, 1),
        "flops": delegated_flops + portable_flops,
        "int8_flop_share": sum(f for _, f, integer in delegated if integer) / max(delegated_flops + portable_flops, 1),
    }

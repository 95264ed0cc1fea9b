"""export.delegation's FLOP rule for operators left on ExecuTorch's portable kernels (the XNNPACK side is checked
against torch's FLOP counter in tests/test_format_executorch.py)."""

from __future__ import annotations

import pytest

from export.delegation import _portable_flops


@pytest.mark.parametrize(("operator", "shapes", "flops"), [
    ("aten::convolution.out", [[1, 3, 8, 8], [4, 3, 3, 3], [4], [1, 4, 8, 8]], 2 * 4 * 8 * 8 * 3 * 3 * 3),
    ("aten::addmm.out", [[8], [2, 16], [16, 8], [2, 8]], 2 * 2 * 8 * 16),
    ("aten::bmm.out", [[3, 2, 5], [3, 5, 4], [3, 2, 4]], 2 * 3 * 2 * 4 * 5),
    ("aten::linear.out", [[2, 16], [8, 16], [8], [2, 8]], 2 * 2 * 8 * 16),
    ("aten::mean.out", [[1, 8, 4, 4], [1, 8, 1, 1]], 8 * 4 * 4),  # one per element of the largest tensor
    ("aten::native_layer_norm.out", [[1, 4, 16], [16], [16], [1, 4, 16]], 4 * 16),
    ("aten::expand_copy.out", [[1, 16], [4, 16]], 0),  # data movement
    ("dim_order_ops::_to_dim_order_copy.out", [[], []], 0),
])
def test_portable_operator_flops(operator, shapes, flops):
    assert _portable_flops(operator, shapes) == flops

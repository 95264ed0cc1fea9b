"""MobileViT in operators XNNPACK takes whole, for the ExecuTorch artefacts: the same weights and the same function,
written without the operators its partitioner leaves on ExecuTorch's portable kernels.

- timm's Attention: scaled_dot_product_attention decomposes with a mask path (logical_not, eq, full_like, any, where),
  `unbind` of the packed q/k/v gives squeeze_copy (and `split`, split_with_sizes_copy), and 4-D matmuls give
  expand_copy. Here: three slices of the packed projection, heads folded into the batch, two 3-D bmm and a softmax.
- nn.LayerNorm and nn.GroupNorm (the `_gn` variants): native_layer_norm and native_group_norm have no XNNPACK
  lowering. Here: mean, centring, variance and rsqrt, the means taken over the two innermost dimensions of a 4-D view,
  the one form of mean.dim XNNPACK lowers (its global average pooling).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class DelegableAttention(nn.Module):
    """timm's multi-head self-attention (no masks, no q/k norms, no gate) as split, bmm and softmax."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.qkv, self.proj = attention.qkv, attention.proj
        self.num_heads, self.head_dim, self.scale = attention.num_heads, attention.head_dim, attention.scale
        self.attn_dim = attention.num_heads * attention.head_dim

    def _heads(self, x: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        """(B, N, H*d) -> (B*H, N, d)."""
        return x.reshape(batch, tokens, self.num_heads, self.head_dim).permute(0, 2, 1, 3) \
            .reshape(batch * self.num_heads, tokens, self.head_dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("DelegableAttention computes unmasked self-attention only")
        batch, tokens, _ = x.shape
        packed, width = self.qkv(x), self.attn_dim
        q, k, v = (self._heads(packed[..., i * width:(i + 1) * width], batch, tokens) for i in range(3))
        weights = torch.bmm(q * self.scale, k.transpose(1, 2)).softmax(dim=-1)
        out = torch.bmm(weights, v).reshape(batch, self.num_heads, tokens, self.head_dim).permute(0, 2, 1, 3)
        return self.proj(out.reshape(batch, tokens, self.attn_dim))


def _standardise(grid: torch.Tensor, eps: float) -> torch.Tensor:
    """A 4-D view standardised over its two innermost dimensions (mean, centring, variance, rsqrt)."""
    centred = grid - grid.mean(dim=(2, 3), keepdim=True)
    return centred * torch.rsqrt((centred * centred).mean(dim=(2, 3), keepdim=True) + eps)


def _then(norm: nn.Module) -> nn.Module:
    """What a norm applies after normalising: timm's norm-act layers (GroupNorm1Act, LayerNormAct) their dropout
    and activation, plain norms nothing."""
    return nn.Sequential(norm.drop, norm.act) if hasattr(norm, "act") else nn.Identity()


class DelegableLayerNorm(nn.Module):
    """LayerNorm over the last dimension, standardised as an N x 1 x C x 1 view."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps, self.then = norm.weight, norm.bias, norm.eps, _then(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _standardise(x.reshape(-1, 1, x.shape[-1], 1), self.eps).reshape(x.shape)
        return self.then(out * self.weight + self.bias if self.weight is not None else out)


class DelegableGroupNorm(nn.Module):
    """GroupNorm of N x C x H x W maps (the `_gn` MobileViTs' one group), standardised as an N x G x (C/G)HW x 1
    view."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps, self.groups = norm.weight, norm.bias, norm.eps, norm.num_groups
        self.then = _then(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _standardise(x.reshape(x.shape[0], self.groups, -1, 1), self.eps).reshape(x.shape)
        if self.weight is not None:
            channels = (1, -1) + (1,) * (x.dim() - 2)
            out = out * self.weight.reshape(channels) + self.bias.reshape(channels)
        return self.then(out)


KEPT_FLOAT = (DelegableAttention, DelegableLayerNorm, DelegableGroupNorm)  # their own arithmetic stays float in int8


def _is_plain_attention(module: nn.Module) -> bool:
    """timm's Attention with nothing DelegableAttention leaves out (q/k norm, output norm, gate)."""
    from timm.layers.attention import Attention

    return (isinstance(module, Attention) and isinstance(module.q_norm, nn.Identity)
            and isinstance(module.k_norm, nn.Identity) and isinstance(module.norm, nn.Identity)
            and getattr(module, "gate", None) is None)


def delegable(model: nn.Module) -> nn.Module:
    """A copy of the model with every plain timm Attention, last-dimension LayerNorm and GroupNorm rewritten (the
    model itself is left as it is); a model without them comes back as an unchanged copy."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if _is_plain_attention(module):
            replacement = DelegableAttention(module)
        elif isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            replacement = DelegableLayerNorm(module)
        elif isinstance(module, nn.GroupNorm):
            replacement = DelegableGroupNorm(module)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return model

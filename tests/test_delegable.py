"""export.delegable: MobileViT rewritten in operators XNNPACK takes whole computes what timm's modules compute."""

from __future__ import annotations

import pytest
import torch
from timm.layers.attention import Attention
from torch import nn

from bmcell.core.models import build_model
from export.delegable import DelegableAttention, DelegableGroupNorm, DelegableLayerNorm, delegable


@pytest.mark.parametrize("arch", ["mobilevit_xxs", "mobilevit_xxs_gn"])
def test_the_rewrite_computes_what_the_model_computes_and_leaves_it_untouched(arch):
    torch.manual_seed(0)
    model = build_model(arch, 8, input_norm="per-image").eval()
    images = torch.rand(2, 3, 64, 64)
    rewritten = delegable(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(rewritten(images), model(images), rtol=1e-4, atol=1e-5)
    kinds = {type(m) for m in rewritten.modules()}
    assert Attention not in kinds and nn.LayerNorm not in kinds and not any(issubclass(k, nn.GroupNorm) for k in kinds)
    assert DelegableAttention in kinds
    assert (DelegableGroupNorm if arch.endswith("_gn") else DelegableLayerNorm) in kinds
    assert any(isinstance(m, Attention) for m in model.modules())  # the model given is not changed
    assert sum(p.numel() for p in rewritten.parameters()) == sum(p.numel() for p in model.parameters())


def test_the_rewritten_attention_refuses_a_mask():
    attention = DelegableAttention(Attention(16, num_heads=2))
    with pytest.raises(ValueError, match="unmasked"):
        attention(torch.rand(1, 4, 16), attn_mask=torch.ones(4, 4, dtype=torch.bool))


def test_attention_with_query_key_norms_is_left_as_it_is():
    model = nn.Sequential(Attention(16, num_heads=2, qk_norm=True, norm_layer=nn.LayerNorm))
    assert isinstance(delegable(model)[0], Attention)

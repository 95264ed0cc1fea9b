"""The registry builds every architecture with the published sizes; FLOPs follow the 2-per-multiply-add convention."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from bmcell.core.models import (
    REGISTRY,
    ModelError,
    PerImageStandardized,
    build_model,
    count_flops,
    count_parameters,
    get_arch,
    load_pretrained,
)

# Parameter counts with 1000 ImageNet classes, as published by torchvision and timm.
PUBLISHED_PARAMS = {
    "resnet50": 25_557_032, "densenet121": 7_978_856, "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032, "mobilevit_xxs": 1_272_024, "mobilevit_xs": 2_317_848, "mobilevit_s": 5_578_632,
}


def test_registry_has_the_paper_models_and_groupnorm_mobilevits():
    assert set(REGISTRY) == set(PUBLISHED_PARAMS) | {f"mobilevit_{s}_gn" for s in ("xxs", "xs", "s")}
    # GroupNorm has the same affine parameters as BatchNorm: the same parameter count
    assert count_parameters(build_model("mobilevit_xs_gn", 1000)) == PUBLISHED_PARAMS["mobilevit_xs"]


def test_per_image_standardisation_ignores_colour_cast_and_loads_plain_weights(tmp_path):
    model = build_model("mobilevit_xxs", 8, "per-image").eval()
    assert isinstance(model, PerImageStandardized)
    images = torch.rand(2, 3, 64, 64)
    gain, offset = torch.tensor([0.6, 0.9, 1.3]).view(1, 3, 1, 1), torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    with torch.no_grad():  # another lamp or stain shifting and scaling each channel changes nothing
        assert torch.allclose(model(images), model(images * gain + offset), atol=2e-3)
    plain = build_model("mobilevit_xxs", 8)
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    assert load_pretrained(model, path) == []
    assert torch.equal(model.net.stem.conv.weight, plain.stem.conv.weight)
    with pytest.raises(ModelError, match="per-image"):
        build_model("mobilevit_xxs", 8, "per-lab")


@pytest.mark.parametrize("arch", sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(arch):
    assert count_parameters(build_model(arch, 1000)) == PUBLISHED_PARAMS[arch]


def test_mobilevit_xs_eight_classes_against_the_paper():
    model = build_model("mobilevit_xs", 8)
    params, flops = count_parameters(model), count_flops(model, 256)
    assert params == 1_935_928  # the paper reports 1.998 M: -3.1 %, the same network with an 8-way head
    assert flops == pytest.approx(1.799e9, rel=0.03)  # the paper's 1.799 GFLOPs


def test_resnet50_flops_match_torchvision_docs():
    # torchvision documents 4.09 GFLOPS counted as multiply-adds at 224x224
    assert count_flops(build_model("resnet50", 1000), 224) == pytest.approx(2 * 4.09e9, rel=0.01)


def test_preprocessing_comes_from_each_models_own_config():
    assert get_arch("mobilevit_xs").mean == (0.0, 0.0, 0.0) and get_arch("mobilevit_xs").std == (1.0, 1.0, 1.0)
    assert get_arch("resnet50").mean == pytest.approx((0.485, 0.456, 0.406))


def test_unknown_arch_and_too_few_classes():
    with pytest.raises(ModelError, match="mobilevit_xs"):
        build_model("mobilevit_xl", 8)
    with pytest.raises(ModelError, match="at least 2"):
        build_model("mobilevit_xxs", 1)


def test_pretrained_weights_skip_only_a_resized_head(tmp_path):
    source = build_model("mobilevit_xxs", 1000)
    path = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("mobilevit_xxs", 8)
    skipped = load_pretrained(target, path)
    assert sorted(skipped) == ["head.fc.bias", "head.fc.weight"]
    assert torch.equal(target.stem.conv.weight, source.stem.conv.weight)


def test_pretrained_weights_refuse_pickles_and_wrong_networks(tmp_path):
    pickle_path = tmp_path / "weights.pth"
    pickle_path.write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match="only .safetensors"):
        load_pretrained(build_model("mobilevit_xxs", 8), pickle_path)
    other = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("mobilenet_v2", 8).state_dict().items()}, str(other))
    with pytest.raises(ModelError, match="does not fit"):
        load_pretrained(build_model("mobilevit_xxs", 8), other)

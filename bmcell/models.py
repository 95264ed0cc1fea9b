"""Model registry: an architecture name → a freshly initialised network and its own preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from bmcell.errors import BmcellError


class ModelError(BmcellError):
    """An unknown architecture or weights that do not fit it."""


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and how its inputs are normalised."""

    name: str
    source: str
    build: Callable[[int], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


REGISTRY: dict[str, ArchSpec] = {}


def _register_timm(name: str) -> None:
    """Register a timm architecture, taking mean/std from timm's own data config."""
    import timm

    def build(num_classes: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    config = timm.models.get_pretrained_cfg(name)
    REGISTRY[name] = ArchSpec(name, "timm", build, tuple(config.mean), tuple(config.std))


def _register_torchvision(name: str, weights_enum: str) -> None:
    """Register a torchvision architecture (random init), normalised as its ImageNet weights expect."""
    import torchvision.models as tvm

    preset = getattr(tvm, weights_enum).DEFAULT.transforms()

    def build(num_classes: int) -> nn.Module:
        return tvm.get_model(name, weights=None, num_classes=num_classes)

    REGISTRY[name] = ArchSpec(name, "torchvision", build, tuple(preset.mean), tuple(preset.std))


for _name in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"):
    _register_timm(_name)
for _name, _weights in (("resnet50", "ResNet50_Weights"), ("densenet121", "DenseNet121_Weights"),
                        ("mobilenet_v2", "MobileNet_V2_Weights"), ("mobilenet_v3_large", "MobileNet_V3_Large_Weights")):
    _register_torchvision(_name, _weights)


def get_arch(name: str) -> ArchSpec:
    """The registered architecture called `name`, or an error listing the choices."""
    if name not in REGISTRY:
        raise ModelError(f"unknown architecture {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build_model(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised network of architecture `name` with `num_classes` outputs."""
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    return get_arch(name).build(num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass on a 1x3xSxS input, 2 FLOPs per multiply-add (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops()


def load_pretrained(model: nn.Module, path: Path) -> list[str]:
    """Load safetensors weights into model, skipping the classifier layers whose shape differs; returns those."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"{path}: only .safetensors weights are accepted (pickled .pt/.pth files are never loaded)")
    try:
        weights = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ModelError(f"{path}: cannot read safetensors weights ({error})") from None
    own = model.state_dict()
    skipped = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    for key in skipped:
        del weights[key]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ModelError(
            f"{path} does not fit this architecture: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return skipped

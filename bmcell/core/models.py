"""Model registry: an architecture name → a freshly initialised network and its own preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bmcell.core.errors import BmcellError


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


def _register_timm_groupnorm(base: str) -> None:
    """Register `<base>_gn`: the timm MobileViT with every BatchNorm replaced by a one-group GroupNorm, which
    normalises each image by its own statistics, so no lab's batch statistics are stored in the weights."""
    import dataclasses

    from timm.models import byobnet, mobilevit

    config = dataclasses.replace(mobilevit.model_cfgs[base], norm_layer="groupnorm1")

    def build(num_classes: int) -> nn.Module:
        return byobnet.ByobNet(config, num_classes=num_classes)

    spec = REGISTRY[base]
    REGISTRY[f"{base}_gn"] = ArchSpec(f"{base}_gn", "timm", build, spec.mean, spec.std)


def _register_torchvision(name: str, weights_enum: str) -> None:
    """Register a torchvision architecture (random init), normalised as its ImageNet weights expect."""
    import torchvision.models as tvm

    preset = getattr(tvm, weights_enum).DEFAULT.transforms()

    def build(num_classes: int) -> nn.Module:
        return tvm.get_model(name, weights=None, num_classes=num_classes)

    REGISTRY[name] = ArchSpec(name, "torchvision", build, tuple(preset.mean), tuple(preset.std))


for _name in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"):
    _register_timm(_name)
    _register_timm_groupnorm(_name)
for _name, _weights in (("resnet50", "ResNet50_Weights"), ("densenet121", "DenseNet121_Weights"),
                        ("mobilenet_v2", "MobileNet_V2_Weights"), ("mobilenet_v3_large", "MobileNet_V3_Large_Weights")):
    _register_torchvision(_name, _weights)


INPUT_NORMS = ("dataset", "per-image")


class PerImageStandardized(nn.Module):
    """Each image's channels standardised to zero mean and unit variance before the network: an image's overall
    colour and brightness (stain, lamp, camera) no longer reach the network, only its contrasts. Plain arithmetic,
    so every exported artefact carries it."""

    def __init__(self, net: nn.Module, eps: float = 1e-3) -> None:
        super().__init__()
        self.net = net
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise per image and channel over the pixels, then classify."""
        return self.net(standardise_per_image(x, self.eps))


def standardise_per_image(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Each image's channels to zero mean and unit variance over its pixels."""
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    return centred / (centred * centred).mean(dim=(2, 3), keepdim=True).add(eps).sqrt()


def get_arch(name: str) -> ArchSpec:
    """The registered architecture called `name`, or an error listing the choices."""
    if name not in REGISTRY:
        raise ModelError(f"unknown architecture {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build_model(name: str, num_classes: int, input_norm: str = "dataset") -> nn.Module:
    """A randomly initialised network of architecture `name` with `num_classes` outputs; input_norm 'per-image'
    puts PerImageStandardized in front of it."""
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    if input_norm not in INPUT_NORMS:
        raise ModelError(f"unknown input normalisation {input_norm!r}; choose one of: {', '.join(INPUT_NORMS)}")
    net = get_arch(name).build(num_classes)
    return PerImageStandardized(net) if input_norm == "per-image" else net


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


EXTRA_TENSORS_PREFIX = "novelty."  # tensors a checkpoint stores beside the weights (the novelty bank) begin so


def load_pretrained(model: nn.Module, path: Path) -> list[str]:
    """Load safetensors weights into model (a checkpoint's extra tensors, EXTRA_TENSORS_PREFIX, ignored), skipping
    the classifier layers whose shape differs; returns those."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"{path}: only .safetensors weights are accepted (pickled .pt/.pth files are never loaded)")
    try:
        weights = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ModelError(f"{path}: cannot read safetensors weights ({error})") from None
    if isinstance(model, PerImageStandardized):
        model = model.net  # the same network behind the standardisation: weights of either kind fit it
    weights = {k.removeprefix("net."): v for k, v in weights.items() if not k.startswith(EXTRA_TENSORS_PREFIX)}
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


class Trunk(nn.Module):
    """Everything of a MobileViT up to and including its last stage (with the per-image standardisation when the
    model has one): the part `bmcell finetune` keeps frozen and runs once per image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.eps = model.eps if isinstance(model, PerImageStandardized) else None
        net = network_of(model)
        self.stem, self.stages = net.stem, net.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps of the last stage."""
        return self.stage_outputs(x)[-1]

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage, in order, from one pass."""
        if self.eps is not None:
            x = standardise_per_image(x, self.eps)
        maps = [self.stem(x)]
        for block in self.stages:
            maps.append(block(maps[-1]))
        return maps[1:]


class Top(nn.Module):
    """The last 1x1 convolution and the classifier head of a MobileViT: the part `bmcell finetune` trains."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        net = network_of(model)
        self.final_conv, self.head = net.final_conv, net.head

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector the classifier reads."""
        return self.head.global_pool(self.final_conv(maps))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Logits from the trunk's feature maps."""
        return self.head(self.final_conv(maps))


def is_mobilevit(model: nn.Module) -> bool:
    """Whether the network (behind an optional per-image standardisation) splits into Trunk and Top."""
    net = model.net if isinstance(model, PerImageStandardized) else model
    return all(hasattr(net, part) for part in ("stem", "stages", "final_conv", "head"))


def network_of(model: nn.Module) -> nn.Module:
    """The MobileViT behind an optional per-image standardisation, or an error for other architectures."""
    net = model.net if isinstance(model, PerImageStandardized) else model
    if not is_mobilevit(model):
        raise ModelError(f"{type(net).__name__} is not a MobileViT: fine-tuning to a lab and the shift check need the "
                         "MobileViT architectures (mobilevit_xxs/xs/s and their _gn variants)")
    return net

"""Knowledge distillation from a teacher checkpoint (Hinton et al., 2015), as learning without forgetting: while a
run fine-tunes on new sources, it also matches the softened answers of the model it started from on the training
images that model gets right, so that what it knew (e.g. PBC) is kept; images the teacher gets wrong (another lab's
cells, for a PBC-only teacher) are learned from their labels alone."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bmcell.core.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

TEMPERATURE = 2.0  # softens both answers, so the teacher's ranking of the other classes is learned too


class Teacher:
    """A frozen checkpoint whose answers, in the run's class order, a run also learns from."""

    def __init__(self, model: nn.Module, order: list[int]) -> None:
        self.model = model.eval().requires_grad_(False)
        self.order = torch.tensor(order)

    def to(self, device: torch.device) -> Teacher:
        """The teacher on the training device, channels-last like the student."""
        self.model.to(device, memory_format=torch.channels_last)
        self.order = self.order.to(device)
        return self

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of a batch, columns in the run's class order."""
        return self.model(images).float().index_select(1, self.order)


def load_teacher(path: Path, classes: list[str], image_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> Teacher:
    """The checkpoint at path as a teacher for a run of these classes and inputs; refused, with what differs, when
    it knows other classes or takes other inputs."""
    checkpoint = load_checkpoint(resolve_checkpoint(Path(path)))
    if sorted(checkpoint.classes) != sorted(classes):
        raise CheckpointError(f"teacher {path} knows the classes {checkpoint.classes}, this run {classes}: a teacher "
                              "needs the same classes (map them with --label-map)")
    inputs = (checkpoint.image_size, tuple(checkpoint.mean), tuple(checkpoint.std))
    if inputs != (image_size, tuple(mean), tuple(std)):
        raise CheckpointError(f"teacher {path} takes {inputs[0]} px images normalised with mean {inputs[1]} and std "
                              f"{inputs[2]}, this run {image_size} px with {tuple(mean)} and {tuple(std)}: train at "
                              "the teacher's size, with an architecture of the same normalisation")
    return Teacher(checkpoint.build_model(), [checkpoint.classes.index(name) for name in classes])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of TEMPERATURE^2 x KL(teacher || student) of the softened answers, counting only the
    images the teacher answers right (the others add 0)."""
    right = (teacher.argmax(1) == targets).float()
    divergence = F.kl_div(F.log_softmax(student.float() / TEMPERATURE, 1), F.log_softmax(teacher / TEMPERATURE, 1),
                          reduction="none", log_target=True).sum(1)
    return TEMPERATURE ** 2 * (divergence * right).mean()

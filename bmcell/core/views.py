"""A model that answers as the mean of its answers on the eight symmetries of the square picture (the dihedral
group: four rotations, each mirrored), inside the graph, so that every exported artefact and app answers the same.

A cell photographed under a microscope has no up and no handedness; averaging the logits over the eight views makes
the answer independent of how the slide lay, and is more accurate on held-out labs than one view
(models/README.md). The picture's novelty column is the first view's (the picture as given): its radii were
fitted on single views. Every operation is one that the export backends take whole (XNNPACK delegates all of it):
a mirror is a product with the reversal matrix, a quarter turn a transpose then a mirror, the mean a product with
a column of 1/8."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DIHEDRAL_VIEWS = 8  # the only view count besides 1 (the picture as given)
VIEW_COUNTS = (1, DIHEDRAL_VIEWS)


def dihedral_views(x: torch.Tensor, reversal: torch.Tensor) -> torch.Tensor:
    """The 8 symmetries of a batch of square N x C x S x S pictures, stacked view by view: 8N x C x S x S, the
    picture as given first. reversal: the S x S matrix that mirrors the last dimension (x @ reversal.T)."""
    def mirror(t: torch.Tensor) -> torch.Tensor:
        return F.linear(t, reversal)

    def transpose(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 1, 3, 2)

    given, mirrored = x, mirror(x)
    turned, turned_mirrored = transpose(given), transpose(mirrored)
    views = [given, mirrored, turned, turned_mirrored, mirror(turned), mirror(turned_mirrored)]
    views += [transpose(views[4]), transpose(views[5])]
    return torch.cat(views, dim=0)


class ViewAveraged(nn.Module):
    """model's output averaged over the 8 views in its first `classes` columns (the logits), the columns after them
    (the novelty) the picture's own: N x K like the model's."""

    def __init__(self, model: nn.Module, classes: int, image_size: int) -> None:
        super().__init__()
        self.model, self.classes = model, classes
        self.register_buffer("reversal", torch.eye(image_size).flip(0).contiguous())
        self.register_buffer("view_mean", torch.full((1, DIHEDRAL_VIEWS), 1.0 / DIHEDRAL_VIEWS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean logits over the views, then the given picture's other columns."""
        if x.shape[-1] != self.reversal.shape[0] or x.shape[-2] != self.reversal.shape[0]:
            raise ValueError(f"view averaging needs {self.reversal.shape[0]} x {self.reversal.shape[0]} pictures, "
                             f"got {tuple(x.shape[-2:])}")
        out = self.model(dihedral_views(x, self.reversal))
        per_view = out[:, :self.classes].reshape(DIHEDRAL_VIEWS, -1)  # 8 x (N * classes)
        logits = F.linear(per_view.permute(1, 0), self.view_mean).reshape(-1, self.classes)
        if out.shape[1] == self.classes:
            return logits
        return torch.cat([logits, out[:logits.shape[0], self.classes:]], dim=1)

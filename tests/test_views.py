"""Answers averaged over the picture's 8 symmetries (bmcell.core.views): the views, the mean and the checkpoint
switch (`bmcell release --views 8`: tests/test_release.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from bmcell.core.checkpoint import CheckpointError, load_checkpoint, metadata_digest
from bmcell.core.views import DIHEDRAL_VIEWS, ViewAveraged, dihedral_views


def symmetries(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of N x C x S x S pictures by torch's own rot90 and flip."""
    turns = [torch.rot90(x, k, (2, 3)) for k in range(4)]
    return turns + [t.flip(3) for t in turns]


class Pooled(nn.Module):
    """A toy model: a fixed projection of a position-weighted pooling (not symmetric), then a last column."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.position = torch.rand(1, 1, 8, 8, generator=generator)
        self.projection = torch.randn(3, 4, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x * self.position).mean((2, 3)) @ self.projection
        return torch.cat([logits, x[:, :1, 0, 0]], dim=1)


def test_the_views_are_the_eight_symmetries_the_given_picture_first():
    x = torch.randn(2, 3, 8, 8)
    views = dihedral_views(x, torch.eye(8).flip(0)).reshape(DIHEDRAL_VIEWS, *x.shape)
    expected = symmetries(x)
    found = [next(i for i, e in enumerate(expected) if torch.equal(view, e)) for view in views]
    assert sorted(found) == list(range(8)) and found[0] == 0


def test_logits_are_the_mean_over_views_and_the_last_column_the_pictures_own():
    model, x = Pooled(), torch.randn(3, 3, 8, 8)
    out = ViewAveraged(model, 4, 8)(x)
    per_view = torch.stack([model(view) for view in symmetries(x)])
    assert out.shape == (3, 5)
    torch.testing.assert_close(out[:, :4], per_view[:, :, :4].mean(0), atol=1e-5, rtol=1e-5)
    assert torch.equal(out[:, 4], model(x)[:, 4])
    turned = ViewAveraged(model, 4, 8)(torch.rot90(x, 1, (2, 3)))  # a quarter turn changes nothing but rounding
    torch.testing.assert_close(turned[:, :4], out[:, :4], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="8 x 8 pictures"):
        ViewAveraged(model, 4, 8)(torch.randn(1, 3, 16, 16))


def edit_meta(folder, edit) -> None:
    """Edit a checkpoint's metadata in place and re-sign it."""
    meta = json.loads((folder / "best.json").read_text())
    edit(meta)
    meta["metadata_sha256"] = metadata_digest(meta)
    (folder / "best.json").write_text(json.dumps(meta))


def test_a_checkpoint_with_views_scores_through_them_and_refuses_unknown_counts(tiny_run, tmp_path):
    for name in ("best.json", "best.safetensors", "split.json"):
        shutil.copy2(tiny_run / name, tmp_path / name)
    plain = load_checkpoint(tmp_path)
    x = torch.rand(2, 3, plain.image_size, plain.image_size)
    with torch.no_grad():
        single = torch.stack([plain.scored_model()(view) for view in symmetries(x)])
    edit_meta(tmp_path, lambda meta: meta.update(views=8))
    viewed = load_checkpoint(tmp_path)
    assert viewed.views == 8 and isinstance(viewed.scored_model(), ViewAveraged)
    with torch.no_grad():
        out = viewed.scored_model()(x)
    classes = len(viewed.classes)
    torch.testing.assert_close(out[:, :classes], single[:, :, :classes].mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, classes:], single[0, :, classes:], atol=1e-4, rtol=1e-4)  # as given
    edit_meta(tmp_path, lambda meta: meta.update(views=3))
    with pytest.raises(CheckpointError, match="views is 3"):
        load_checkpoint(tmp_path).scored_model()

"""The other-labs augmentation: zoomed crops keep a centred cell in frame on both data paths; HED jitter is exact
at identity and stays in range."""

from __future__ import annotations

from dataclasses import replace

import torch

from bmcell.core.data.device_data import augment_batch
from bmcell.core.data.stain import RandomHEDJitter, hed_jitter
from bmcell.core.data.transforms import AUGMENTATIONS, CentredResizedCrop


def centred_dot(size: int = 96) -> torch.Tensor:
    """A black image with a white 10%-wide square at its centre (the 'cell')."""
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    low, high = size * 45 // 100, size * 55 // 100
    image[:, low:high, low:high] = 255
    return image


def test_centred_crop_keeps_the_cell_on_the_cpu_path():
    """200 of the widest zooms (down to 15% of the area) all still show the centre square."""
    crop = CentredResizedCrop(32, scale=(0.15, 0.15), ratio=(0.75, 1.33), jitter=0.4)
    assert all(crop(centred_dot()).float().max() > 200 for _ in range(200))


def test_centred_crop_keeps_the_cell_on_the_device_path():
    """The device path's other-labs crops and zoom-outs (one draw per image) keep the centre square in every image
    (colour, stain, blur and noise switched off: this checks the geometry)."""
    geometry = replace(AUGMENTATIONS["other-labs"], colour=(0, 0, 0, 0), hed=None, blur=(0, 0.3, 2.0),
                       noise=(0, 0.03))
    batch = centred_dot()[None].repeat(200, 1, 1, 1)
    out = augment_batch(batch, 32, geometry)
    brightest = out.amax(dim=(1, 2, 3))
    assert out.shape == (200, 3, 32, 32) and bool((brightest > 0.5).all())


def test_hed_jitter_identity_and_range():
    """Scale 1 and shift 0 give the image back; random jitter stays in [0, 1] and changes colours per image."""
    images = torch.rand(4, 3, 16, 16) * 0.9 + 0.05
    same = hed_jitter(images, torch.ones(4, 3), torch.zeros(4, 3))
    assert torch.allclose(same, images, atol=1e-5)
    jittered = RandomHEDJitter(sigma=0.25, bias=0.08)(images)
    assert jittered.min() >= 0 and jittered.max() <= 1
    shift = (jittered - images).mean(dim=(2, 3))
    assert not torch.allclose(shift[0], shift[1])

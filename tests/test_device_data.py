"""The fast data path on CPU: augmentation shapes and ranges, per-image draws, sampling, the decoded-image cache."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchvision.transforms import v2

import bmcell.core.data.cache as cache
from bmcell.core.batches import make_batches
from bmcell.core.config import TrainConfig
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.device_data import augment_batch, crop_thetas
from bmcell.core.data.label_maps import resolve_label_map
from bmcell.core.data.prepare import prepare_data
from bmcell.core.data.sampling import EpochSampler
from bmcell.core.data.transforms import AUGMENTATIONS, CentredResizedCrop, augmentation_ops, eval_transform
from tests.conftest import TINY


@pytest.fixture(scope="module")
def prepared(synthetic_data, tmp_path_factory):
    return prepare_data(synthetic_data, resolve_label_map(None), tmp_path_factory.mktemp("run"), 0, 0.2, False, print)


@pytest.mark.parametrize("augment", sorted(AUGMENTATIONS))
def test_both_data_paths_read_one_recipe(augment):
    """The plain path's torchvision ops carry the recipe's numbers (the device path takes the recipe itself)."""
    aug = AUGMENTATIONS[augment]
    ops = augmentation_ops(aug, 64)
    crop = next(op for op in ops if isinstance(op, (v2.RandomResizedCrop, CentredResizedCrop)))
    assert tuple(crop.scale) == aug.scale and tuple(crop.ratio) == aug.ratio
    jitter = next(op for op in ops if isinstance(op, v2.ColorJitter))
    assert jitter.brightness == (1 - aug.colour[0], 1 + aug.colour[0]) and jitter.hue == (-aug.colour[3], aug.colour[3])
    applied = [type(op.transforms[0]).__name__ for op in ops if isinstance(op, v2.RandomApply)]
    assert ("GaussianBlur" in applied) == (aug.blur[0] > 0) and ("JPEG" in applied) == (aug.jpeg[0] > 0)


@pytest.mark.parametrize("augment", sorted(AUGMENTATIONS))
def test_augment_batch_shapes_ranges_and_per_image_draws(augment):
    torch.manual_seed(0)
    one = torch.randint(0, 256, (1, 3, 72, 72), dtype=torch.uint8)
    out = augment_batch(one.expand(8, -1, -1, -1), 64, AUGMENTATIONS[augment])
    assert out.shape == (8, 3, 64, 64) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    flat = out.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(8) for j in range(i))  # each image its own draw


def test_crop_without_scaling_is_a_flip_or_rotation():
    aug = AUGMENTATIONS["cells"]
    thetas = crop_thetas(64, type(aug)(scale=(1.0, 1.0), ratio=(1.0, 1.0), colour=aug.colour), torch.device("cpu"))
    linear = thetas[:, :, :2]
    assert torch.allclose(linear @ linear.transpose(1, 2), torch.eye(2).expand(64, 2, 2))  # orthogonal
    assert torch.allclose(thetas[:, :, 2], torch.zeros(64, 2))  # centred
    assert len({tuple(m.flatten().tolist()) for m in linear}) == 8  # all 8 symmetries of the square occur


def test_balanced_sampler_evens_classes_and_ranks_draw_their_own_share():
    labels = [0] * 90 + [1] * 10
    counts = Counter()
    for epoch in range(20):
        sampler = EpochSampler(labels, balanced=True, seed=0)
        sampler.set_epoch(epoch)
        counts.update(labels[i] for i in sampler)
    assert 0.45 < counts[1] / sum(counts.values()) < 0.55
    ranks = [EpochSampler(labels, True, 0, rank, 2) for rank in (0, 1)]
    assert [len(r) for r in ranks] == [50, 50]
    assert not torch.equal(ranks[0].indices(), ranks[1].indices())
    shards = [EpochSampler(labels, False, 0, rank, 2).indices() for rank in (0, 1)]
    assert sorted(torch.cat(shards).tolist()) == list(range(100))  # a permutation dealt out: no duplicates


def test_device_path_decodes_once_and_validation_matches_eval_transform(prepared, tmp_path, monkeypatch):
    calls = []
    real_load = cache.load_rgb
    monkeypatch.setattr(cache, "load_rgb", lambda path: calls.append(path) or real_load(path))
    config = TrainConfig(**TINY, data_path="device", device="cpu")
    batches = make_batches(config, prepared, torch.device("cpu"), cache_dir=tmp_path)
    assert len(calls) == len(prepared.train) + len(prepared.val)
    for epoch in (1, 2):
        for images, targets in batches.train(epoch):
            assert images.shape == (16, 3, 64, 64) and targets.dtype == torch.int64
            assert images.is_contiguous(memory_format=torch.channels_last)
    make_batches(config, prepared, torch.device("cpu"), cache_dir=tmp_path)  # a resumed run reads the cache
    assert len(calls) == len(prepared.train) + len(prepared.val)

    reference = CellImageDataset(prepared.root, prepared.val, prepared.classes, eval_transform(64, (0, 0, 0), (1, 1, 1)))
    images, targets = next(iter(batches.make_val()))
    assert torch.allclose(images[0], reference[0][0], atol=1e-6) and targets[0] == reference[0][1]

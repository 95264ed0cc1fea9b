"""Per-image novelty: fitted at the end of training, stored in the checkpoint, computed inside the model graph,
shown by `bmcell predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import CheckpointError, carried_meta, load_checkpoint, save_checkpoint
from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.prepare import load_prepared
from bmcell.core.novelty import (
    BANK_KEY,
    FLAG_QUANTILE,
    MIN_RADIUS,
    STYLE_BANK_KEY,
    STYLE_STAGE,
    THRESHOLD,
    UNKNOWN_TEXT,
    NoveltyDistance,
    NoveltyFeatures,
    appearance,
    bank_pick,
    fit_novelty,
)
from bmcell.core.run_folder import store_novelty
from tests.conftest import rewritten_checkpoint

runner = CliRunner()


def test_fitted_radius_flags_the_quantile_and_far_features():
    rng = np.random.default_rng(0)
    centre, look = rng.normal(size=16), rng.normal(size=8)
    bank = NoveltyFeatures(centre + 0.5 * rng.normal(size=(50, 16)), look + 0.5 * rng.normal(size=(50, 8)))
    validation = NoveltyFeatures(centre + 0.5 * rng.normal(size=(200, 16)), look + 0.5 * rng.normal(size=(200, 8)))
    novelty = fit_novelty(bank, validation)
    assert novelty.flagged_on_validation == pytest.approx(1 - FLAG_QUANTILE, abs=0.01)
    assert novelty.bank.shape == (50, 16) and novelty.style_bank.shape == (50, 8)
    assert torch.allclose(novelty.bank.norm(dim=1), torch.ones(50))
    coinciding = NoveltyFeatures(bank.pooled[:20] * 1.0001, bank.style[:20] * 1.0001)
    assert fit_novelty(bank, coinciding).radius == 0.01  # all alike: the floor


def test_the_larger_of_the_two_distances_flags_the_quantile_and_either_kind_of_stranger():
    rng = np.random.default_rng(0)
    content = rng.normal(size=16)
    channel_mean, channel_spread = rng.normal(size=(6, 1, 1)), rng.uniform(1, 2, (6, 1, 1))

    def maps(n: int, flip: float = 1.0) -> torch.Tensor:
        """n images' feature maps of 6 channels, each channel's mean and spread jittered around the usual ones."""
        mean = flip * channel_mean + 0.3 * rng.normal(size=(n, 6, 1, 1))
        spread = channel_spread * rng.uniform(0.8, 1.25, (n, 6, 1, 1)) * (3.0 if flip < 0 else 1.0)
        return torch.tensor(mean + spread * rng.normal(size=(n, 6, 8, 8)), dtype=torch.float32)

    def pooled(n: int, flip: float = 1.0) -> torch.Tensor:
        return torch.tensor(flip * content + 0.5 * rng.normal(size=(n, 16)), dtype=torch.float32)

    def features(n: int) -> NoveltyFeatures:
        return NoveltyFeatures(pooled(n).numpy(), appearance(maps(n)).numpy())

    novelty = fit_novelty(features(300), features(400))
    assert novelty.flagged_on_validation == pytest.approx(1 - FLAG_QUANTILE, abs=0.01)
    assert novelty.style_bank.shape == (300, 12) and novelty.to_meta()["style"]["stage"] == STYLE_STAGE
    distance = NoveltyDistance(novelty)

    def flagged(content_rows: torch.Tensor, style_maps: torch.Tensor) -> float:
        return float((distance(content_rows, style_maps)[:, 0] >= THRESHOLD).float().mean())

    assert flagged(pooled(200), maps(200)) < 0.15  # like the validation images
    assert flagged(pooled(200, -1.0), maps(200)) > 0.9  # usual appearance, content like nothing stored
    assert flagged(pooled(200), maps(200, -1.0)) > 0.9  # usual content, appearance like nothing stored


def test_bank_pick_spreads_over_classes_and_sources():
    records = [ImageRecord(f"{c}/{s}/{i}.jpg", c, "") for c in ("a", "b") for s, n in (("big", 90), ("small", 5))
               for i in range(n)]
    picked = bank_pick(records, count=20)
    groups = {"/".join(r.path.split("/")[:2]) for r in picked}
    assert len(picked) == 20 and groups == {"a/big", "a/small", "b/big", "b/small"}
    assert sum(r.path.startswith("a/small") for r in picked) == 5  # a small source is taken whole before the big
    assert bank_pick(records, count=20) == picked  # seeded


def test_trained_run_carries_novelty_and_its_logits_are_unchanged(tiny_run, synthetic_data):
    checkpoint = load_checkpoint(tiny_run / "best.json")
    novelty = checkpoint.novelty
    assert novelty is not None and checkpoint.meta["novelty"]["threshold"] == THRESHOLD
    data = load_prepared(synthetic_data, tiny_run, checkpoint.split_sha256)
    assert novelty.bank.shape[0] == min(len(data.train), 1024) and novelty.validation_images == len(data.val)
    assert novelty.style_bank.shape[0] == novelty.bank.shape[0] and novelty.style_radius >= MIN_RADIUS
    x = torch.rand(3, 3, checkpoint.image_size, checkpoint.image_size)
    with torch.no_grad():
        scored, plain = checkpoint.scored_model()(x), checkpoint.build_model()(x)
    assert scored.shape == (3, len(checkpoint.classes) + 1)
    assert torch.equal(scored[:, :-1], plain)  # the same operations: identical logits
    assert (scored[:, -1] >= 0).all()


@pytest.mark.parametrize("drop", [BANK_KEY, STYLE_BANK_KEY])
def test_checkpoint_with_half_the_novelty_is_refused(tiny_run, tmp_path, drop):
    with pytest.raises(CheckpointError, match="novelty statistics are incomplete"):
        load_checkpoint(rewritten_checkpoint(tiny_run, tmp_path, drop))


def test_a_checkpoint_from_before_the_appearance_distance_keeps_its_content_distance(tiny_run, tmp_path):
    older = load_checkpoint(rewritten_checkpoint(tiny_run, tmp_path, STYLE_BANK_KEY,
                                                 lambda meta: meta["novelty"].pop("style")))
    assert older.novelty.style_bank is None
    x = torch.rand(2, 3, older.image_size, older.image_size)
    with torch.no_grad():
        scored = older.scored_model()(x)
        pooled = older.scored_model().top.features(older.scored_model().trunk(x))
    expected = (1 - (torch.nn.functional.normalize(pooled) @ older.novelty.bank.T).amax(1)) / older.novelty.radius
    assert torch.allclose(scored[:, -1], expected, atol=1e-5)


def test_predict_says_when_a_picture_is_unlike_every_training_cell(tiny_run, synthetic_data, tmp_path):
    cell = next(p for p in sorted(synthetic_data.rglob("*")) if p.suffix in (".png", ".jpg"))
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[::4] = 255  # black and white stripes: nothing like a stained cell
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    result = runner.invoke(app, ["predict", str(tiny_run), str(cell), str(tmp_path / "stripes.png"), "--json"])
    assert result.exit_code == 0, result.output
    answers = {a["image"]: a for a in json.loads(result.output)}
    stripes_answer = answers[str(tmp_path / "stripes.png")]
    assert stripes_answer["unknown"] and stripes_answer["novelty"] >= THRESHOLD
    assert answers[str(cell)]["novelty"] < stripes_answer["novelty"]
    table = runner.invoke(app, ["predict", str(tiny_run), str(tmp_path / "stripes.png")])
    assert all(word in table.output for word in UNKNOWN_TEXT.split())  # folded to the column's width


def test_int8_onnx_exports_a_model_whose_features_barely_differ(tiny_run, synthetic_data, tmp_path):
    """A barely trained model can map every image to nearly one feature vector (the quickstart's one-epoch model did
    on CI): its nearest similarities then lie within a few float steps of each other, and onnx-int8 still exports."""
    checkpoint = load_checkpoint(tiny_run / "best.json")
    model = checkpoint.build_model()
    with torch.no_grad():
        model.final_conv.conv.weight.mul_(1e-6)  # the pooled features: nearly the BatchNorm's constant for any image
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_bytes((tiny_run / "split.json").read_bytes())
    save_checkpoint(run, "best", model, carried_meta(checkpoint.meta))
    data = load_prepared(synthetic_data, run, checkpoint.split_sha256)
    novelty = store_novelty(run / "best.json", synthetic_data, data.train, data.val, torch.device("cpu"))
    assert novelty.radius == pytest.approx(MIN_RADIUS, rel=0.1)
    result = runner.invoke(app, ["export", str(run), "--target", "onnx", "--quantize", "int8", "--calib", "8",
                                 "--no-parity"])
    assert result.exit_code == 0, result.output


def test_a_checkpoint_with_novelty_starts_another_training(tiny_run):
    """--weights from a run trained with novelty: its stored features are not weights and are left out."""
    from bmcell.core.models import load_pretrained

    checkpoint = load_checkpoint(tiny_run / "best.json")
    model = checkpoint.build_model()
    assert load_pretrained(model, checkpoint.weights_path) == []
    assert torch.equal(model.state_dict()["head.fc.weight"], checkpoint.build_model().state_dict()["head.fc.weight"])

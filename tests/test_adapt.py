"""AdaBN calibration: BatchNorm statistics become the lab's, learned weights stay, bad folders fail before work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.adapt import MIN_ADAPT_IMAGES, batchnorm_layers
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.data.images import load_rgb
from bmcell.core.data.transforms import eval_transform
from bmcell.core.models import build_model


@pytest.fixture(scope="module")
def lab_photos(synthetic_data, tmp_path_factory) -> Path:
    """Unlabelled photos of another 'microscope': the synthetic cells darkened and tinted, in one flat folder."""
    root = tmp_path_factory.mktemp("lab-photos")
    for index, path in enumerate(sorted(synthetic_data.rglob("*.jpg"))[:40]):
        image = Image.open(path).convert("RGB")
        tinted = Image.merge("RGB", [band.point(lambda v, f=f: int(v * f)) for band, f in
                                     zip(image.split(), (0.6, 0.8, 1.0))])
        tinted.save(root / f"photo_{index:03d}.png")
    return root


def test_adapt_reestimates_batchnorm_and_keeps_the_weights(tiny_run, lab_photos, tmp_path):
    out = tmp_path / "adapted"
    result = CliRunner().invoke(app, ["adapt", str(tiny_run), "--images", str(lab_photos), "--out", str(out),
                                      "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    source, adapted = load_checkpoint(tiny_run), load_checkpoint(out)
    stats = {k for k in source.state_dict if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert stats and all(torch.equal(source.state_dict[k], adapted.state_dict[k])
                         for k in source.state_dict if k not in stats)
    assert not torch.equal(source.state_dict["stem.bn.running_mean"], adapted.state_dict["stem.bn.running_mean"])
    info = adapted.meta["adapted_on"]
    assert info["images"] == 40 and info["source_weights_sha256"] == source.weights_sha256
    assert adapted.meta["confidence"] == source.meta["confidence"] and (out / "split.json").is_file()
    # AdaBN maps the lab's features onto the source's, so the source's novelty statistics describe them
    assert source.novelty is not None and adapted.meta["novelty"] == source.meta["novelty"]
    assert torch.equal(adapted.novelty.bank, source.novelty.bank)

    # the stem's running mean is the mean of what the stem's BatchNorm sees on these photos
    model, seen = adapted.build_model(), []
    model.stem.bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    meta = adapted.meta
    transform = eval_transform(meta["image_size"], tuple(meta["mean"]), tuple(meta["std"]))
    with torch.no_grad():
        model(torch.stack([transform(load_rgb(p)) for p in sorted(lab_photos.iterdir())]))
    assert torch.allclose(seen[0].mean((0, 2, 3)), adapted.state_dict["stem.bn.running_mean"], atol=1e-4)

    result = CliRunner().invoke(app, ["evaluate", str(out), "--split", "val", "--workers", "0"])
    assert result.exit_code == 0, result.output  # the adapted checkpoint is used like any other
    result = CliRunner().invoke(app, ["adapt", str(tiny_run), "--images", str(lab_photos), "--out", str(out)])
    assert result.exit_code == 2 and "nothing is overwritten" in result.output


def test_adapt_refuses_bad_folders_before_any_work(tiny_run, lab_photos, tmp_path):
    runner = CliRunner()

    def adapt(images: Path, out: str = "out") -> str:
        result = runner.invoke(app, ["adapt", str(tiny_run), "--images", str(images), "--out", str(tmp_path / out)])
        assert result.exit_code == 2, result.output
        assert not (tmp_path / out).exists()
        return result.output

    assert "not a folder" in adapt(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert "no usable image" in adapt(empty)
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(lab_photos.iterdir())[:MIN_ADAPT_IMAGES - 1]:
        shutil.copy(path, few / path.name)
    (few / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    assert f"at least {MIN_ADAPT_IMAGES}" in adapt(few)
    tiny = tmp_path / "tiny"
    shutil.copytree(lab_photos, tiny)
    Image.new("RGB", (16, 16)).save(tiny / "icon.png")
    assert "under 32 px" in adapt(tiny)


def test_groupnorm_variants_have_no_batchnorm_and_need_no_calibration():
    model = build_model("mobilevit_xxs_gn", 8)
    assert not batchnorm_layers(model) and batchnorm_layers(build_model("mobilevit_xxs", 8))
    model.eval()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():  # no batch statistics: an image's output does not depend on its batch
        assert torch.allclose(model(images)[:1], model(images[:1]), atol=1e-5)


def test_adapt_out_that_is_a_file_is_one_line(tiny_run, lab_photos, tmp_path):
    file = tmp_path / "adapted.txt"
    file.write_text("keep")
    for out in (file, file / "sub"):
        result = CliRunner().invoke(app, ["adapt", str(tiny_run), "--images", str(lab_photos), "--out", str(out)])
        assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    assert file.read_text() == "keep"


def test_adapt_works_on_a_checkpoint_copied_without_its_split(tiny_run, lab_photos, tmp_path):
    copied = tmp_path / "copied"
    copied.mkdir()
    for name in ("best.json", "best.safetensors"):
        shutil.copy(tiny_run / name, copied / name)
    out = tmp_path / "adapted"
    result = CliRunner().invoke(app, ["adapt", str(copied), "--images", str(lab_photos), "--out", str(out),
                                      "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "no split.json" in result.output  # the re-estimation needs only the lab's photos; the warning says so
    assert sorted(p.name for p in out.iterdir()) == ["best.json", "best.safetensors"]
    assert load_checkpoint(out).adapted_on["images"] == 40


def test_adapt_of_a_release_carries_its_samples_and_never_writes_inside_it(tiny_run, lab_photos, tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    for name in ("best.json", "best.safetensors", "split.json"):
        shutil.copy(tiny_run / name, release / name)
    (release / "release.json").write_text("{}")
    (release / "samples" / "basophil").mkdir(parents=True)
    (release / "samples" / "samples.json").write_text('{"images": []}')
    before = sorted(str(p.relative_to(release)) for p in release.rglob("*"))
    inside = release / "adapted"
    refused = CliRunner().invoke(app, ["adapt", str(release), "--images", str(lab_photos), "--out", str(inside)])
    assert refused.exit_code == 2 and "inside the released model" in refused.output, refused.output
    assert sorted(str(p.relative_to(release)) for p in release.rglob("*")) == before
    refused = CliRunner().invoke(app, ["finetune", str(release), "--data", str(lab_photos), "--out", str(inside)])
    assert refused.exit_code == 2 and "inside the released model" in refused.output, refused.output
    assert sorted(str(p.relative_to(release)) for p in release.rglob("*")) == before

    out = tmp_path / "adapted"
    result = CliRunner().invoke(app, ["adapt", str(release), "--images", str(lab_photos), "--out", str(out),
                                      "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert (out / "samples" / "samples.json").read_text() == '{"images": []}'  # it exports with no data at hand

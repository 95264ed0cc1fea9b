"""Knowledge distillation from a teacher checkpoint (bmcell.core.distillation, `bmcell train --teacher`)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.checkpoint import CheckpointError, load_checkpoint
from bmcell.core.distillation import TEMPERATURE, distillation_loss, load_teacher
from bmcell.core.engine import train_step
from bmcell.core.models import get_arch

runner = CliRunner()


def test_distillation_counts_only_the_images_the_teacher_gets_right():
    """Zero where the student answers as the teacher; a wrong teacher answer adds nothing; the mean is over the
    whole batch."""
    teacher = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 1.0]])
    student = torch.tensor([[0.5, 0.2, 0.1], [1.0, 0.0, 0.0]])
    assert distillation_loss(teacher, teacher, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-7)
    row0 = F.kl_div(F.log_softmax(student[:1] / TEMPERATURE, 1), F.softmax(teacher[:1] / TEMPERATURE, 1),
                    reduction="sum")
    # the teacher answers class 1 for the second image, labelled 2: only the first counts, halved by the mean
    found = distillation_loss(student, teacher, torch.tensor([0, 2]))
    assert found.item() == pytest.approx(TEMPERATURE ** 2 * row0.item() / 2, rel=1e-5)
    assert found.item() > 0


def test_teacher_answers_in_the_runs_class_order_and_refuses_other_classes_or_inputs(tiny_run):
    """Columns follow the run's classes by name; other classes or another input size are refused, saying which."""
    checkpoint = load_checkpoint(tiny_run / "best.json")
    arch = get_arch(checkpoint.arch)
    reordered = list(reversed(checkpoint.classes))
    teacher = load_teacher(tiny_run, reordered, checkpoint.image_size, arch.mean, arch.std)
    images = torch.rand(3, 3, checkpoint.image_size, checkpoint.image_size)
    with torch.no_grad():
        direct = checkpoint.build_model()(images)
    assert torch.allclose(teacher.logits(images), direct.flip(1), atol=1e-5)
    with pytest.raises(CheckpointError, match="same classes"):
        load_teacher(tiny_run, checkpoint.classes + ["blast"], checkpoint.image_size, arch.mean, arch.std)
    with pytest.raises(CheckpointError, match="px"):
        load_teacher(tiny_run, checkpoint.classes, checkpoint.image_size + 32, arch.mean, arch.std)


def test_train_step_adds_the_weighted_teacher_term(tiny_run):
    """With a teacher, a step's loss is the plain one plus distill_weight x the distillation term."""
    checkpoint = load_checkpoint(tiny_run / "best.json")
    arch = get_arch(checkpoint.arch)
    teacher = load_teacher(tiny_run, checkpoint.classes, checkpoint.image_size, arch.mean, arch.std)
    torch.manual_seed(0)
    student = checkpoint.build_model()
    for parameter in student.parameters():  # a student that answers otherwise than the teacher
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    student.train()
    images = torch.rand(6, 3, checkpoint.image_size, checkpoint.image_size)
    targets = teacher.logits(images).argmax(1)  # the teacher is right on every image
    with torch.no_grad():
        expected = distillation_loss(copy.deepcopy(student)(images), teacher.logits(images), targets).item()
    losses = []
    for weight, with_teacher in ((0.0, None), (0.5, teacher)):
        model = copy.deepcopy(student)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        summed, _ = train_step(model, images, targets, optimizer, torch.device("cpu"), teacher=with_teacher,
                               distill_weight=weight)
        losses.append(summed.item() / len(targets))
    assert expected > 0
    assert losses[1] - losses[0] == pytest.approx(0.5 * expected, rel=1e-3)


def test_train_cli_with_a_teacher_and_refusing_one_of_other_inputs(tiny_run, synthetic_data, tmp_path):
    """`bmcell train --teacher` runs and records the teacher's absolute path; a teacher of another input size is
    refused before the run starts (nothing left in --out)."""
    common = ["train", "--data", str(synthetic_data), "--epochs", "1", "--arch", TINY["arch"], "--batch-size", "16",
              "--workers", "0", "--data-path", "loader"]
    out = tmp_path / "taught"
    result = runner.invoke(app, common + ["--out", str(out), "--image-size", "64", "--teacher", str(tiny_run),
                                          "--distill-weight", "2"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["teacher"] == str(tiny_run.absolute()) and config["distill_weight"] == 2.0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    refused = tmp_path / "refused"
    result = runner.invoke(app, common + ["--out", str(refused), "--image-size", "96", "--teacher", str(tiny_run)])
    assert result.exit_code != 0
    assert "teacher" in result.output and "64 px" in result.output
    assert not (refused / "config.json").exists()

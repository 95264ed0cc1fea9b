"""The compiled training step (`--compile`): the same losses as the eager step, a run that resumes, and
`bmcell bench-train` reporting eager and compiled side by side. Compiling runs Inductor on this CPU (a C++ compiler
builds the kernels), so the network here is a small stand-in: the wiring is what is tested, not MobileViT."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import bmcell.core.engine as engine
from bmcell.cli.main import app
from bmcell.core.config import TrainConfig
from bmcell.core.device import bf16_peak_tflops
from bmcell.core.engine import compiled_for_training, fit, make_optimizer, train_step
from bmcell.jobs.bench_train import markdown_table
from tests.conftest import TINY

# Inductor's CPU kernels reorder float sums; over a few steps the losses stay within this relative difference.
LOSS_TOLERANCE = 1e-4


def small_net(num_classes: int = 4) -> nn.Module:
    """Conv, BatchNorm, ReLU, pooling and a linear head: the op kinds of the real networks, compiled in seconds."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def test_compiled_step_gives_the_eager_losses():
    torch.manual_seed(0)
    eager = small_net().to(memory_format=torch.channels_last).train()
    twin = copy.deepcopy(eager)
    config = TrainConfig(lr=1e-2)
    eager_optimizer, twin_optimizer = make_optimizer(eager, config), make_optimizer(twin, config)
    compiled = compiled_for_training(twin, torch.device("cpu"))
    images, targets = torch.rand(8, 3, 32, 32), torch.randint(0, 4, (8,))
    for _ in range(4):
        expected = train_step(eager, images, targets, eager_optimizer, torch.device("cpu"))[0].item()
        got = train_step(compiled, images, targets, twin_optimizer, torch.device("cpu"))[0].item()
        assert abs(got - expected) <= LOSS_TOLERANCE * abs(expected), (got, expected)
    # (Weights are not compared: a conv bias before BatchNorm gets a gradient of rounding noise only, which AdamW
    # normalises into full-size steps of either sign, in eager and compiled runs alike.)


def test_a_compiled_run_saves_plain_weights_and_resumes(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "build_model", lambda arch, classes, input_norm="dataset": small_net(classes))
    settings = TINY | {"data": str(synthetic_data), "out": str(tmp_path / "run"), "compile": True,
                       "data_path": "device"}
    fit(TrainConfig(**(settings | {"epochs": 1})))
    fit(TrainConfig(**(settings | {"epochs": 2})), resume=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2] and rows[1]["train_loss"] < rows[0]["train_loss"] * 1.5
    saved = json.loads((tmp_path / "run" / "last.json").read_text())
    assert saved["epoch"] == 2 and saved["config"]["compile"] is True
    from safetensors.torch import load_file

    assert not [k for k in load_file(tmp_path / "run" / "last.safetensors") if "_orig_mod" in k]


def test_bench_train_table_reports_first_step_tflops_and_peak(synthetic_data):
    result = CliRunner().invoke(app, ["bench-train", "--data", str(synthetic_data), "--arch", "mobilevit_xxs",
                                      "--image-size", "64", "--batch-size", "8", "--steps", "2", "--warmup", "1",
                                      "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("| loader") or line.startswith("| device")]
    assert len(table) == 2 and all("| eager | cpu |" in line for line in table)  # compiled: on CUDA by default
    assert bf16_peak_tflops(torch.device("cpu")) is None
    row = {"path": "device", "step": "compiled", "device": "cuda:0", "setup_s": 1.0, "first_step_s": 60.0,
           "data_images_per_s": 9000.0, "train_images_per_s": 5000.0, "train_tflops": 27.0, "peak_fraction": 0.0273}
    assert "| device | compiled | cuda:0 | 1.0 | 60.0 | 9000 | 5000 | 27.00 | 2.7% | 1.00x |" in markdown_table([row])


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA GeForce GTX 1080", None)])
def test_bf16_peak_by_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bf16_peak_tflops(torch.device("cuda", 0)) == peak

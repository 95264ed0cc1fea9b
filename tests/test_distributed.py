"""Two real ranks under torchrun (gloo on CPU): stopped mid-run, resumed, one set of files, whole validation split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bmcell.cli.common import LOG_FILE
from bmcell.core.checkpoint import load_checkpoint
from tests.conftest import TINY

TINY_ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
RUN_FILES = {"best.json", "best.safetensors", "last.json", "last.safetensors", "last.resume.safetensors",
             "config.json", "split.json", "metrics.jsonl", "curves.png", "cache", LOG_FILE}


def _torchrun(*args: str, processes: int = 2) -> subprocess.Popen:
    """`torchrun --nproc-per-node PROCESSES -m bmcell train ARGS` on CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "bmcell", "train", "--device", "cpu", *args]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_two_ranks_train_resume_and_write_one_run(synthetic_data, tmp_path):
    run = tmp_path / "run"
    first = _torchrun("--data", str(synthetic_data), "--out", str(run), "--epochs", "2", *TINY_ARGS)
    deadline = time.monotonic() + 120
    while not (run / "last.resume.safetensors").exists():  # stopped as soon as epoch 1 is saved
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "epoch 1 did not finish in time"
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks and waits for them
    first.wait(timeout=60)
    output = first.stdout.read()
    assert "rank 0/2 training on cpu" in output and "rank 1/2 training on cpu" in output

    resumed = _torchrun("--out", str(run), "--resume")
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, output
    assert "rank 1/2" in output and output.count("done:") == 1, output
    assert output.count("epoch 2/2  loss") == 1, output  # rank 0 alone reports the resumed epoch

    assert {p.name for p in run.iterdir()} == RUN_FILES
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    split = json.loads((run / "split.json").read_text())
    val_images = sum(1 for f in split["files"] if f["subset"] == "val")
    assert [(r["epoch"], r["world_size"], r["val_images"]) for r in rows] == [(1, 2, val_images), (2, 2, val_images)]
    checkpoint = load_checkpoint(run / "last.json")
    assert checkpoint.epoch == 2 and checkpoint.build_model() is not None
    assert not any(key.startswith("module.") for key in checkpoint.state_dict)


@pytest.mark.slow
def test_more_ranks_than_validation_images(synthetic_data, tmp_path):
    files = sorted(p.relative_to(synthetic_data).as_posix() for p in synthetic_data.rglob("*.jpg"))
    split = tmp_path / "split.csv"  # two validation images for three processes: the third is dealt none
    split.write_text("path,subset\n" + "".join(f"{f},{'val' if i < 2 else 'train'}\n" for i, f in enumerate(files)))
    run = tmp_path / "run"
    done = _torchrun("--data", str(synthetic_data), "--split", str(split), "--out", str(run), "--epochs", "1",
                     *TINY_ARGS, "--batch-size", "12", processes=3)
    output, _ = done.communicate(timeout=240)
    assert done.returncode == 0, output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["world_size"], r["val_images"]) for r in rows] == [(3, 2)]

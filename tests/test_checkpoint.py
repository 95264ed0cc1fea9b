"""Checkpoints load without unpickling, refuse anything that does not match, and resume state round-trips."""

from __future__ import annotations

import errno
import json
import os
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from bmcell.core import fileio
from bmcell.core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resume_state,
    save_checkpoint,
    save_resume_state,
)
from bmcell.core.fileio import DiskFullError, atomic_write_bytes
from bmcell.core.models import build_model

META = {"arch": "mobilevit_xxs", "classes": ["a", "b", "c"], "image_size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("mobilevit_xxs", 3)
    save_checkpoint(tmp_path, "best", model, META)
    return tmp_path, model


def test_round_trip_from_folder_json_or_weights(saved):
    run_dir, model = saved
    for path in (run_dir, run_dir / "best.json", run_dir / "best.safetensors"):
        loaded = load_checkpoint(path).build_model()
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    meta = json.loads((run_dir / "best.json").read_text())
    assert meta["versions"]["torch"] == version("torch")
    assert len(meta["weights"]["sha256"]) == 64


def test_changed_weights_are_refused(saved):
    run_dir, _ = saved
    data = bytearray((run_dir / "best.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (run_dir / "best.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_checkpoint(run_dir)


@pytest.mark.parametrize("change", ["drop-classes", "not-json", "other-format", "no-weights-file"])
def test_broken_metadata_is_refused(saved, change):
    run_dir, _ = saved
    meta_path = run_dir / "best.json"
    meta = json.loads(meta_path.read_text())
    if change == "drop-classes":
        del meta["classes"]
    elif change == "other-format":
        meta["format"] = "something-else"
    elif change == "no-weights-file":
        (run_dir / "best.safetensors").unlink()
    meta_path.write_text("{not json" if change == "not-json" else json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_checkpoint(run_dir)


@pytest.mark.parametrize(("key", "value"), [("mean", [0.5, 0.5, 0.5]), ("classes", ["c", "b", "a"]),
                                            ("image_size", 128)])
def test_edited_metadata_is_refused(saved, key, value):
    run_dir, _ = saved
    meta = json.loads((run_dir / "best.json").read_text())
    meta[key] = value
    (run_dir / "best.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="edited after it was saved"):
        load_checkpoint(run_dir)


def test_metadata_that_does_not_fit_the_weights(tmp_path):
    save_checkpoint(tmp_path, "best", build_model("mobilevit_xxs", 3), META | {"classes": ["a", "b", "c", "d"]})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path).build_model()


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


def test_resume_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("mobilevit_xxs", 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    save_resume_state(tmp_path, model, optimizer, {"epoch": 4, "step": 40, "best_macro_f1": 0.5, "best_epoch": 3})
    fresh = build_model("mobilevit_xxs", 3)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    state = load_resume_state(tmp_path, fresh, fresh_optimizer)
    assert state == {"epoch": 4, "step": 40, "best_macro_f1": 0.5, "best_epoch": 3}
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    original, restored = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k]["exp_avg_sq"], restored[k]["exp_avg_sq"]) for k in original)


class Killed(BaseException):
    """A kill -9 at one exact point: nothing after it runs (no cleanup an Exception would trigger)."""


def _killed_at(monkeypatch, dest_name: str) -> None:
    """os.replace onto a file called dest_name is where the process dies."""
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == dest_name:
            raise Killed(f"killed before {dest_name} was replaced")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize(("dies_before", "survivor"), [("best.safetensors", "old"), ("best.json", "new")])
def test_a_kill_between_weights_and_metadata_leaves_one_whole_best(saved, monkeypatch, dies_before, survivor):
    run_dir, old = saved
    torch.manual_seed(1)
    new = build_model("mobilevit_xxs", 3)
    _killed_at(monkeypatch, dies_before)
    with pytest.raises(Killed):
        save_checkpoint(run_dir, "best", new, META | {"epoch": 2})
    monkeypatch.undo()
    loaded = load_checkpoint(run_dir)  # finishes the interrupted save when its weights were already in place
    expected = {"old": old, "new": new}[survivor]
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in expected.state_dict().items())
    assert loaded.meta.get("epoch") == (2 if survivor == "new" else None)
    assert load_checkpoint(run_dir / "best.safetensors").weights_sha256 == loaded.weights_sha256
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.json", "best.safetensors"]


def test_a_stale_pending_metadata_is_never_used(saved):
    run_dir, _ = saved
    pending = run_dir / ".best.json.next"
    meta = json.loads((run_dir / "best.json").read_text())
    pending.write_text(json.dumps(meta | {"weights": {"file": "best.safetensors", "sha256": "0" * 64}}))
    assert load_checkpoint(run_dir).weights_sha256 == meta["weights"]["sha256"]
    assert pending.exists()  # left alone: it describes weights that were never written


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"previous")

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=r"no space left .* last\.safetensors \(3\.0 MB needed, .* free\)"):
        atomic_write_bytes(target, b"x" * 3_000_000)
    monkeypatch.undo()
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]

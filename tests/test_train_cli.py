"""End to end through the CLI: train, kill -9 mid-epoch, resume, evaluate, predict; bad files; misuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bmcell.cli.common import LOG_FILE
from bmcell.cli.main import app
from tests.conftest import TINY, jpeg_bytes

runner = CliRunner()
TINY_ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def _bmcell(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bmcell", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "COLUMNS": "200"})


def _train_then_kill_when(marker: Path, *args: str) -> None:
    """Start `bmcell train` in a subprocess and SIGKILL it as soon as `marker` exists."""
    process = _bmcell("train", *args)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"{marker.name} did not appear in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_kill_resume_evaluate_predict(synthetic_data, tmp_path):
    run = tmp_path / "run"
    # killed as soon as epoch 1 is saved: inside epoch 2
    _train_then_kill_when(run / "last.resume.safetensors", "--data", str(synthetic_data), "--out", str(run),
                          "--epochs", "3", *TINY_ARGS)
    assert json.loads((run / "last.json").read_text())["epoch"] == 1

    refused = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(run), *TINY_ARGS])
    assert refused.exit_code == 2 and "--resume" in refused.output
    conflicting = runner.invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "5"])
    assert conflicting.exit_code == 2 and "epochs" in conflicting.output

    resumed = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "epochs 2..3" in resumed.output.replace("\n", " ")
    assert _epochs(run) == [1, 2, 3]
    last = json.loads((run / "last.json").read_text())
    assert last["epoch"] == 3 and last["config"]["epochs"] == 3
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(last["metrics"])
    assert (run / "curves.png").stat().st_size > 10_000

    evaluated = runner.invoke(app, ["evaluate", str(run), "--workers", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run / "eval-val" / "report.json").read_text())
    assert report["images"] == json.loads((run / "best.json").read_text())["split"]["val"]
    assert set(report["per_class"]) == set(last["classes"])
    for name in ("report.md", "confusion.csv", "confusion.png", "predictions.csv"):
        assert (run / "eval-val" / name).stat().st_size > 0

    all_images = runner.invoke(app, ["evaluate", str(run), "--split", "all", "--workers", "0", "--out",
                                     str(tmp_path / "all")])
    assert all_images.exit_code == 0, all_images.output
    assert json.loads((tmp_path / "all" / "report.json").read_text())["images"] == sum(
        1 for _ in synthetic_data.rglob("*.jpg"))

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a nonsense")
    good = sorted(synthetic_data.rglob("*.jpg"))[:2]
    predicted = runner.invoke(app, ["predict", str(run), str(good[0]), str(bad), str(good[1]), "--json"])
    assert predicted.exit_code == 1
    answers = json.loads(predicted.stdout[: predicted.stdout.rindex("]") + 1])
    assert [a.get("error") is None for a in answers] == [True, False, True]
    assert "bad.jpg" in answers[1]["error"]
    top = answers[0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert {t["class"] for t in top} <= set(last["classes"])


@pytest.mark.slow
def test_kill_in_the_first_epoch_then_resume(synthetic_data, tmp_path):
    run = tmp_path / "run"
    # killed as soon as the split is saved, before any epoch has finished
    _train_then_kill_when(run / "config.json", "--data", str(synthetic_data), "--out", str(run), "--epochs", "1",
                          *TINY_ARGS)
    assert not (run / "last.json").exists()
    resumed = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert _epochs(run) == [1]


@pytest.mark.slow
def test_folder_with_bad_files_and_odd_modes_trains(synthetic_copy, tmp_path):
    import numpy as np
    from PIL import Image

    (synthetic_copy / "platelet" / "zero.jpg").write_bytes(b"")
    (synthetic_copy / "platelet" / "truncated.jpg").write_bytes(jpeg_bytes(3)[:250])
    (synthetic_copy / "basophil" / "text.png").write_text("hello")
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16)).save(
        synthetic_copy / "lymphocyte" / "sixteen.tif")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 4), dtype=np.uint8)).save(
        synthetic_copy / "monocyte" / "alpha.png")
    Image.open(next((synthetic_copy / "neutrophil").glob("*.jpg"))).save(synthetic_copy / "neutrophil" / "cell.webp")
    files = sorted(p.relative_to(synthetic_copy).as_posix() for p in synthetic_copy.rglob("*.*"))
    by_patient = tmp_path / "by_patient.csv"  # a user's own split: every fifth file held out
    by_patient.write_text("path,subset\n" + "".join(f"{f},{'val' if i % 5 == 0 else 'train'}\n"
                                                    for i, f in enumerate(files)))
    result = runner.invoke(app, ["train", "--data", str(synthetic_copy), "--out", str(tmp_path / "run"),
                                 "--epochs", "1", "--split", str(by_patient), *TINY_ARGS])
    assert result.exit_code == 0, result.output
    output = result.output.replace("\n", " ")
    for name in ("zero.jpg", "truncated.jpg", "text.png"):
        assert output.count(name) == 1
    assert "sixteen.tif" not in output and "alpha.png" not in output
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    used = {f["path"] for f in split["files"]}
    assert {"lymphocyte/sixteen.tif", "monocyte/alpha.png", "neutrophil/cell.webp"} <= used
    assert not {"platelet/zero.jpg", "platelet/truncated.jpg", "basophil/text.png"} & used
    assert {f["path"]: f["subset"] for f in split["files"]} == {
        f: ("val" if i % 5 == 0 else "train") for i, f in enumerate(files) if f in used}


def test_clear_errors_before_any_work(tmp_path, synthetic_data):
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r1")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    odd_size = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(tmp_path / "r2"),
                                   "--image-size", "100"])
    assert odd_size.exit_code == 2 and "multiple of 32" in odd_size.output
    unknown = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(tmp_path / "r3"),
                                  "--arch", "resnet5"])
    assert unknown.exit_code == 2 and "unknown architecture" in unknown.output
    nothing = runner.invoke(app, ["train", "--out", str(tmp_path / "r4"), "--resume"])
    assert nothing.exit_code == 2 and "config.json not found" in nothing.output
    no_split = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(tmp_path / "r5"),
                                   "--split", str(tmp_path / "split.csv")])
    assert no_split.exit_code == 2 and "split file" in no_split.output and "not found" in no_split.output
    no_ckpt = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert no_ckpt.exit_code == 2 and "not found" in no_ckpt.output


def test_config_file_then_cli_overrides(tmp_path):
    from bmcell.core.config import ConfigError, resolve_config

    path = tmp_path / "train.yaml"
    path.write_text("epochs: 7\nlr: 0.0005\narch: mobilevit_xxs\n")
    config = resolve_config(path, {"epochs": 3, "lr": None})
    assert (config.epochs, config.lr, config.arch, config.batch_size) == (3, 0.0005, "mobilevit_xxs", 128)
    path.write_text("epochs: 7\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve_config(path, {})


def test_info_prints_params_and_flops():
    result = runner.invoke(app, ["info", "--arch", "mobilevit_xs", "--num-classes", "8", "--image-size", "256",
                                 "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == 1_935_928 and "2 FLOPs per multiply-add" in info["flops_convention"]


def test_synth_command(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "s"), "--per-class", "5", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s").rglob("*.jpg"))) > 8
    again = runner.invoke(app, ["synth", str(tmp_path / "s")])
    assert again.exit_code == 2 and "not empty" in again.output


@pytest.mark.slow
def test_quickstart_runs_the_whole_job(tmp_path):
    result = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "qs"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "done." in result.output
    assert (tmp_path / "qs" / "run" / "best.safetensors").is_file()
    assert (tmp_path / "qs" / "run" / "eval-val" / "report.md").is_file()
    export_dir = tmp_path / "qs" / "run" / "export"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert {a["name"] for a in manifest["artefacts"]} >= {"executorch-fp32", "executorch-int8", "onnx-fp32",
                                                         "onnx-int8", "coreml-fp16", "torchscript-lite"}
    assert manifest["confidence"]["temperature"] > 0 and 0 <= manifest["confidence"]["threshold"] <= 1
    assert manifest["input_norm"] == "dataset" and manifest["adapted_on"] is None
    parity = json.loads((export_dir / "parity.json").read_text())
    assert {r["name"]: r["status"] for r in parity["artefacts"]}["onnx-fp32"] == "pass"
    bench = (export_dir / "bench.md").read_text()
    assert "pytorch-eager" in bench and "executorch-int8" in bench and (export_dir / "bench.png").is_file()
    assert "mobile artefacts:" in result.output
    lines = result.output.splitlines()
    assert len(lines) <= 50, result.output  # one screen of our own lines
    for noise in ("Warning", "Failed to load", "Running MIL", "passes/s", "ops/s", "INFO:"):
        assert noise not in result.output, result.output
    assert "Running MIL" in (tmp_path / "qs" / LOG_FILE).read_text()  # coremltools' progress bars, kept


def test_predict_table_clamps_top_k_and_shows_the_distinguishing_end_of_each_path(tmp_path):
    """`predict --top-k 999` draws one column per class of the model (as --json gives), not 999; on an 80-column
    terminal the image column keeps the end of each path that tells the images apart."""
    from bmcell.cli.predict import distinguishing_ends
    from bmcell.jobs.release import DEFAULT_MODEL

    paths = ["a/x/cell.jpg", "b/x/cell.jpg", "c/y/other.jpg"]
    assert distinguishing_ends(paths, 30) == paths
    assert distinguishing_ends(paths, 12) == ["a/x/cell.jpg", "b/x/cell.jpg", "…/other.jpg"]
    assert distinguishing_ends(["/data/x/slide_0001.jpg", "/data/x/slide_0002.jpg"], 8) == ["…001.jpg", "…002.jpg"]
    if not (DEFAULT_MODEL / "best.json").is_file():
        pytest.skip("the released model is absent")
    classes = json.loads((DEFAULT_MODEL / "best.json").read_text())["classes"]
    folder = tmp_path / "a-long-folder-name-for-one-microscope-session" / "slides-of-the-second-of-may-2024"
    folder.mkdir(parents=True)
    images = []
    for i in range(3):
        images.append(folder / f"slide_A_field_{i:03d}_cell.jpg")
        images[-1].write_bytes(jpeg_bytes(i))
    shown = subprocess.run([sys.executable, "-m", "bmcell", "predict", *map(str, images), "--top-k", "999"],
                           check=False, capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"},
                           timeout=300)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= 80, shown.stdout
    header = " ".join(lines[:4])
    assert f"#{len(classes)}" in header and f"#{len(classes) + 1}" not in header, shown.stdout
    for image in images:
        rows = [line for line in lines if f"field_{image.name[14:17]}_cell.jpg" in line]
        assert len(rows) == 1, shown.stdout  # each image's row names it, and names no other


@pytest.mark.slow
def test_a_full_disk_stops_training_with_what_to_do(synthetic_data, tmp_path, monkeypatch):
    import errno

    from bmcell.core import fileio
    from bmcell.core.checkpoint import load_checkpoint

    class HalfWritten:  # the disk fills up half-way through a write
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

    last_writes = []

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - fileio's own `with` closes it
        if Path(path).name == ".last.safetensors.tmp":
            last_writes.append(path)
            if len(last_writes) == 2:  # epoch 2's last checkpoint
                return HalfWritten(handle)
        return handle

    run = tmp_path / "run"
    monkeypatch.setattr(fileio, "open", open_on_a_filling_disk, raising=False)
    full = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(run), "--epochs", "2", *TINY_ARGS])
    monkeypatch.undo()
    output = full.output.replace("\n", " ")
    assert full.exit_code == 2, output
    assert "Traceback" not in output and "saving epoch 2 stopped: no space left" in output, output
    assert "to write last.safetensors" in output and "MB needed" in output and "free" in output, output
    assert "last.json (epoch 1)" in output and f"bmcell train --out {run} --resume` continues at epoch 2" in output
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.next"))
    assert load_checkpoint(run / "last.json").epoch == 1
    assert load_checkpoint(run).build_model() is not None

    resumed = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert _epochs(run) == [1, 2] and load_checkpoint(run / "last.json").epoch == 2


def test_a_moved_run_resumes_where_it_is(tiny_run, tmp_path, monkeypatch):
    import shutil

    moved = tmp_path / "elsewhere" / "runA"
    shutil.copytree(tiny_run, moved)
    recorded = json.loads((tiny_run / "config.json").read_text())
    monkeypatch.chdir(moved.parent)  # another working directory, another path to the same run
    resumed = runner.invoke(app, ["train", "--out", "runA", "--resume", "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((moved / "config.json").read_text()) == recorded | {"out": "runA"}
    assert json.loads((tiny_run / "config.json").read_text()) == recorded  # the original is left as it was
    again = runner.invoke(app, ["train", "--out", str(moved), "--resume", "--workers", "0", "--data",
                                recorded["data"], "--epochs", str(recorded["epochs"])])
    assert again.exit_code == 0, again.output


def test_a_moved_run_takes_its_synthetic_cells_along(tmp_path):
    from bmcell.core.run_folder import SYNTHETIC_DATA, read_config

    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    new.mkdir(parents=True)
    (new / "config.json").write_text(json.dumps({"out": str(old), "data": str(old / SYNTHETIC_DATA), "epochs": 2}))
    assert read_config(new) == {"out": str(new), "data": str(new / SYNTHETIC_DATA), "epochs": 2}


def test_a_refused_start_leaves_the_folder_usable(synthetic_copy, tmp_path):
    import torch
    from safetensors.torch import save_file

    from bmcell.core.run_folder import check_out_folder

    evil, garbage, other = tmp_path / "evil.pt", tmp_path / "garbage.safetensors", tmp_path / "other.safetensors"
    evil.write_bytes(b"\x80\x04\x95 a pickle")
    garbage.write_bytes(b"not safetensors at all")
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    (synthetic_copy / "platelet" / "empty.jpg").write_bytes(b"")
    run = tmp_path / "run"
    refusals = {("--weights", str(evil)): "only .safetensors", ("--weights", str(garbage)): "cannot read",
                ("--weights", str(other)): "does not fit", ("--strict",): "--strict",
                ("--label-map", str(tmp_path / "nope.yaml")): "label map",
                ("--split", str(tmp_path / "nope.csv")): "split",
                ("--balance-sources",): "bmcell combine"}  # refused once the data is listed: not a combine folder
    for options, message in refusals.items():
        refused = runner.invoke(app, ["train", "--data", str(synthetic_copy), "--out", str(run), *options, *TINY_ARGS])
        assert refused.exit_code == 2 and message in refused.output, (options, refused.output)
        assert {p.name for p in run.iterdir()} <= {LOG_FILE}, options  # no config.json, split.json, bad_files.txt
        check_out_folder(run, resume=False)  # the corrected command may use the same folder


def test_an_unrelated_folder_is_refused_before_anything_is_written(synthetic_data, tmp_path):
    from bmcell.core.run_folder import SYNTHETIC_DATA, check_out_folder

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "metrics.jsonl").write_text("epoch,loss\n1,0.5\n")
    (theirs / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in theirs.iterdir()}
    for data in (["--data", str(synthetic_data)], []):  # without --data nothing is synthesized there either
        refused = runner.invoke(app, ["train", *data, "--out", str(theirs), "--epochs", "1", *TINY_ARGS])
        assert refused.exit_code == 2, refused.output
        assert "not a bmcell run" in refused.output and "metrics.jsonl, notes.txt" in refused.output
        assert {p.name: p.read_bytes() for p in theirs.iterdir()} == before
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    not_a_folder = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(a_file), *TINY_ARGS])
    assert not_a_folder.exit_code == 2 and "is a file" in not_a_folder.output
    under_a_file = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(a_file / "run"),
                                       *TINY_ARGS])
    assert under_a_file.exit_code == 2 and f"{a_file} is a file, not a folder" in under_a_file.output
    ours = tmp_path / "ours"  # what an earlier attempt of ours leaves before a run starts is not unrelated
    (ours / SYNTHETIC_DATA).mkdir(parents=True)
    (ours / LOG_FILE).write_text("=== an earlier attempt\n")
    check_out_folder(ours, resume=False)


@pytest.mark.slow
def test_resuming_a_run_with_no_saved_epoch_says_so(synthetic_data, tmp_path):
    from bmcell.core.config import TrainConfig
    from bmcell.core.run_folder import start_or_resume

    run = tmp_path / "run"  # as a kill during epoch 1 leaves it: configuration and split, no epoch saved
    start_or_resume(TrainConfig(out=str(run), data=str(synthetic_data), epochs=1, **TINY), False, print)
    resumed = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "nothing to resume" in resumed.output and "starts at epoch 1" in resumed.output
    assert _epochs(run) == [1]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else b"" for p in folder.rglob("*")}


def test_an_out_folder_inside_the_data_folder_is_refused_before_anything_is_written(synthetic_copy, tmp_path,
                                                                                    monkeypatch):
    """A run inside its data folder became a class folder ('myrun' without images, or curves.png an image of ig)."""
    link = tmp_path / "link"
    link.symlink_to(synthetic_copy)
    before = _files(synthetic_copy)
    monkeypatch.chdir(tmp_path)
    for data, out in ((synthetic_copy, synthetic_copy / "myrun"), (synthetic_copy, synthetic_copy / "ig" / "run"),
                      ("cells", "link/../cells/myrun"), (link, synthetic_copy / "myrun"), (synthetic_copy, link / "r"),
                      (synthetic_copy, synthetic_copy)):
        refused = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--epochs", "1", *TINY_ARGS])
        assert refused.exit_code == 2 and "is inside the data folder" in refused.output, (data, out, refused.output)
        assert _files(synthetic_copy) == before, (data, out)
    beside = tmp_path / "cells-run"  # a sibling whose name starts like the data folder's is not inside it
    from bmcell.core.run_folder import check_out_folder

    check_out_folder(beside, resume=False, data=synthetic_copy)


def test_a_folder_with_too_few_different_images_is_refused_before_training(tmp_path):
    """3 classes of 12 byte-identical copies each: nothing can be set aside for validation (copies stay on one side).
    It trained an epoch, then died on torch.cat with config, split and cache left behind."""
    for i, name in enumerate(("ig", "monocyte", "platelet")):
        (tmp_path / "same" / name).mkdir(parents=True)
        for copy in range(12):
            (tmp_path / "same" / name / f"{copy}.jpg").write_bytes(jpeg_bytes(i))
    run = tmp_path / "run"
    refused = runner.invoke(app, ["train", "--data", str(tmp_path / "same"), "--out", str(run), *TINY_ARGS])
    assert refused.exit_code == 2, refused.output
    assert "set aside for validation" in refused.output and "only 3 different picture(s)" in refused.output
    assert {p.name for p in run.iterdir()} <= {LOG_FILE}


def _hold_run(run: Path, held, release) -> None:
    """What a `bmcell train` still training in run holds, in another process."""
    from bmcell.core.run_folder import run_lock

    with run_lock(run):
        held.set()
        release.wait(120)


def test_a_second_training_on_a_run_still_training_is_refused(synthetic_data, tmp_path):
    """`train --out r --resume` while the first training of r ran was not refused: both wrote the same files."""
    import multiprocessing

    from bmcell.core.config import TrainConfig
    from bmcell.core.run_folder import start_or_resume

    run, fresh = tmp_path / "run", tmp_path / "fresh"
    start_or_resume(TrainConfig(out=str(run), data=str(synthetic_data), epochs=1, **TINY), False, print)
    fresh.mkdir()
    before = _files(run)
    context = multiprocessing.get_context("fork")  # the test's modules already imported: the holder starts at once
    held, release = context.Event(), context.Event()
    holders = [context.Process(target=_hold_run, args=(folder, held, release)) for folder in (run, fresh)]
    try:
        for holder in holders:
            held.clear()
            holder.start()
            assert held.wait(60)
        resumed = runner.invoke(app, ["train", "--out", str(run), "--resume"])
        assert resumed.exit_code == 2 and "is in use: another `bmcell train` is still training" in resumed.output, \
            resumed.output
        assert _files(run) == before  # not even a line in its bmcell.log
        started = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(fresh), *TINY_ARGS])
        assert started.exit_code == 2 and "is in use" in started.output, started.output
        assert not any(fresh.iterdir())
    finally:
        release.set()
        for holder in (h for h in holders if h.pid is not None):  # started
            holder.join(60)

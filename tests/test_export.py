"""Export end to end on a tiny trained model: every format, the manifest, parity (which can fail), the benchmark."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bmcell.cli.common import LOG_FILE
from bmcell.cli.main import app
from bmcell.core.config import TrainConfig
from bmcell.core.data.synthetic import write_synthetic_dataset
from bmcell.core.engine import fit
from bmcell.core.errors import BmcellError
from export.formats import FORMATS
from export.formats.base import ExportError
from export.golden import read_golden
from export.parity import agreement, expected_output, judge, structure_failures
from export.targets import select_formats
from tests.conftest import TINY, built_arm64_environment

runner = CliRunner()
EXPECTED = {"torchscript-fp32", "torchscript-lite", "executorch-fp32", "executorch-int8", "onnx-fp32", "onnx-int8",
            "ort-fp32", "ort-int8", "coreml-fp16", "coreml-int8"}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Enough synthetic cells for a golden set of 64 and a model that learns."""
    root = tmp_path_factory.mktemp("cells") / "cells"
    write_synthetic_dataset(root, per_class=30, size=64, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cells):
    """A tiny MobileViT trained long enough to give confident predictions."""
    run = tmp_path_factory.mktemp("export") / "run"
    fit(TrainConfig(**TINY, out=str(run), data=str(cells), epochs=10, lr=2e-3, warmup_epochs=1))
    return run


@pytest.fixture(scope="module")
def exported(trained):
    """Every target at every precision, with parity."""
    result = runner.invoke(app, ["export", str(trained), "--target", "all", "--quantize", "all", "--calib", "32"])
    return trained / "export", result


def test_every_format_is_registered():
    assert set(FORMATS) == EXPECTED


def test_android_target_is_what_the_android_app_runs():
    """--target android writes the ExecuTorch programs android_demo runs; TorchScript only when asked for."""
    assert [fmt.name for fmt in select_formats(["android"], "all")] == ["executorch-fp32", "executorch-int8"]
    assert {fmt.name for fmt in select_formats(["android", "torchscript"], "none")} == {
        "executorch-fp32", "torchscript-fp32", "torchscript-lite"}


def test_export_all_writes_every_artefact_and_checks_parity(exported):
    folder, result = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {a["name"] for a in manifest["artefacts"]} == EXPECTED
    for entry in manifest["artefacts"]:
        assert (folder / entry["file"]).exists()
        assert entry["bytes"] > 0 and len(entry["sha256"]) == 64
        assert entry["output"]["classes"] == manifest["classes"]
        assert {"tool_versions", "source_checkpoint", "golden"} <= set(manifest)
    assert not list(folder.glob("*.data")), "ONNX must be one self-contained file"
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["golden"]["count"] == 64
    rows = {r["name"]: r for r in parity["artefacts"]}
    assert rows["coreml-fp16"]["status"] == "not run" and "macOS" in rows["coreml-fp16"]["reason"]
    assert rows["coreml-int8"]["declared"]["labels"] == manifest["classes"]
    for name in EXPECTED - {"coreml-fp16", "coreml-int8"}:
        assert rows[name]["val_accuracy"] is not None and rows[name]["status"] in ("pass", "fail")
    for fp32 in ("onnx-fp32", "executorch-fp32", "torchscript-fp32", "torchscript-lite", "ort-fp32"):
        assert rows[fp32]["status"] == "pass"
        assert rows[fp32]["max_relative_error"] < 1e-3 and rows[fp32]["top1_agreement"] == 1.0
    for int8 in ("onnx-int8", "executorch-int8", "ort-int8"):
        assert rows[int8]["sqnr_db"] > 15  # the tier's agreement bound may fail on a model this small
    # every artefact carries the per-image novelty after the logits, held to the reference's like them
    classes = len(manifest["classes"])
    assert manifest["novelty"]["output_index"] == classes and manifest["novelty"]["threshold"] == 1.0
    assert all(entry["output"]["shape"] == [1, classes + 1] for entry in manifest["artefacts"])
    assert "novelty" in rows["coreml-fp16"]["declared"]["outputs"]
    for fp32 in ("onnx-fp32", "executorch-fp32", "torchscript-fp32", "ort-fp32"):
        assert rows[fp32]["flag_agreement"] == 1.0 and rows[fp32]["novelty_max_abs_error"] < 1e-3
    for int8 in ("onnx-int8", "executorch-int8", "ort-int8"):
        assert 0 <= rows[int8]["flag_agreement"] <= 1 and rows[int8]["novelty_max_abs_error"] >= 0
    # the exit status follows the report: 0 only when no artefact failed
    assert (result.exit_code == 0) == parity["passed"], result.output
    assert result.exit_code in (0, 1)


def test_int8_files_are_smaller(exported):
    folder, _ = exported
    sizes = {a["name"]: a["bytes"] for a in json.loads((folder / "manifest.json").read_text())["artefacts"]}
    for family in ("executorch", "onnx", "ort"):
        assert sizes[f"{family}-int8"] < sizes[f"{family}-fp32"]
    assert sizes["coreml-int8"] < sizes["coreml-fp16"]


def test_flipping_one_byte_fails_parity(exported, tmp_path):
    folder, _ = exported
    copy = shutil.copytree(folder, tmp_path / "export")
    path = copy / "model-onnx-fp32.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = runner.invoke(app, ["parity", str(copy), "--golden-only"])
    assert result.exit_code == 1
    assert "onnx-fp32" in result.output and "sha256" in result.output


def test_wrong_preprocessing_fails_parity(trained, tmp_path, monkeypatch):
    import export.pipeline as pipeline
    from export.wrapper import NormalizedClassifier

    def wrong_mean_std(checkpoint):
        return NormalizedClassifier(checkpoint.scored_model(), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()

    monkeypatch.setattr(pipeline, "folded_model", wrong_mean_std)
    result = runner.invoke(app, ["export", str(trained), "--target", "onnx", "--quantize", "none",
                                 "--out", str(tmp_path / "wrong")])
    assert result.exit_code == 1
    row = json.loads((tmp_path / "wrong" / "parity.json").read_text())["artefacts"][0]
    assert row["name"] == "onnx-fp32" and row["status"] == "fail"
    assert any("max relative error" in f for f in row["failures"])


def test_golden_set_of_another_model_is_refused(exported, tmp_path, cells):
    folder, _ = exported
    other_run = tmp_path / "other"
    fit(TrainConfig(**TINY, out=str(other_run), data=str(cells), epochs=1, seed=7))
    other = runner.invoke(app, ["export", str(other_run), "--target", "onnx", "--quantize", "none", "--no-parity"])
    assert other.exit_code == 0, other.output
    copy = shutil.copytree(folder, tmp_path / "mixed")
    shutil.copy(other_run / "export" / "golden.safetensors", copy / "golden.safetensors")
    result = runner.invoke(app, ["parity", str(copy), "--golden-only"])
    assert result.exit_code == 2 and "another model" in result.output


def test_bad_export_requests(trained, tmp_path):
    unknown = runner.invoke(app, ["export", str(trained), "--target", "windows-phone", "--out", str(tmp_path / "a")])
    assert unknown.exit_code == 2 and "unknown target" in unknown.output
    assert not (tmp_path / "a").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    busy = runner.invoke(app, ["export", str(trained), "--target", "onnx", "--out", str(occupied)])
    assert busy.exit_code == 2 and "not empty" in busy.output
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    edited = tmp_path / "edited"
    shutil.copytree(trained, edited, ignore=shutil.ignore_patterns("export*"))
    meta = json.loads((edited / "best.json").read_text())
    meta["std"] = [0.5, 0.5, 0.5]
    (edited / "best.json").write_text(json.dumps(meta))
    refused = runner.invoke(app, ["export", str(edited), "--target", "onnx"])
    assert refused.exit_code == 2 and "edited" in refused.output
    assert not (edited / "export").exists()
    assert not list(tmp_path.glob(".*partial*")) and not list(trained.glob(".*partial*"))


def test_bench_has_a_row_per_artefact_and_prints_only_our_lines(exported):
    """`bmcell bench` as a user runs it: a row per artefact; ExecuTorch's native log lines (written straight to
    file descriptor 2) and other libraries' warnings land in bmcell.log, not between our lines."""
    folder, _ = exported
    result = subprocess.run([sys.executable, "-m", "bmcell", "bench", str(folder), "--runs", "50", "--warmup", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    for noise in ("threadpool.cpp", "cpuinfo_utils", "Warning", "Failed to load"):
        assert noise not in shown, shown
    assert "pytorch-eager" in result.stdout and "executorch-int8" in result.stdout
    assert "threadpool.cpp" in (folder / LOG_FILE).read_text()  # kept, not lost
    report = json.loads((folder / "bench.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == EXPECTED | {"pytorch-eager"}
    for name, row in rows.items():
        if name.startswith("coreml"):
            assert "macOS" in row["skipped"]
        else:
            assert 0 < row["p50_ms_all_threads"] <= row["p90_ms_all_threads"]
            assert row["p50_ms_1_thread"] > 0 and row["load_ms"] > 0 and row["speedup_vs_eager"] > 0
        # A MobileViT with the novelty distance runs wholly inside XNNPACK, int8 and fp32 (export.delegable and the
        # novelty graph's pooling forms): any operator left on the portable kernels fails here.
        if name.startswith("executorch"):
            assert row["delegated_op_share"] == row["delegated_flop_share"] == 1.0, row
            assert "non delegated" not in row["notes"] and ("of FLOPs in int8" in row["notes"]) == (
                row["precision"] == "int8"), row
    assert (folder / "bench.md").read_text().count("\n|") >= len(EXPECTED) + 2
    assert "| 100.0% / 100.0% |" in (folder / "bench.md").read_text()
    assert (folder / "bench.png").stat().st_size > 5000


def test_agreement_failure_names_the_flipped_images_margins():
    """A flip on a near-tie is reported with its reference margin and the images the output's error can flip."""
    reference = np.array([[2.0, 1.99, 0.0], [5.0, 0.0, 0.0], [0.0, 4.0, 1.0], [3.0, 0.0, 2.9]])
    output = reference + np.array([[-0.02, 0.02, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    numbers = agreement(reference, output)
    assert numbers["top1_agreement"] == 0.75
    assert numbers["flipped_margins"] == pytest.approx([0.01])
    assert numbers["images_within_error"] == 1  # only the 0.01 tie lies below 2x the RMS error (0.016)
    failures = judge("int8", numbers)
    assert len(failures) == 1 and "1 flipped, reference margins 0.010" in failures[0]


def test_core_ml_is_held_to_calibrated_probabilities_and_must_declare_them():
    """Core ML outputs softmax(logits / temperature): parity compares it with the reference's, and a package whose
    classifier scores are still logits fails even where Core ML cannot run."""
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=np.float32)
    manifest = {"confidence": {"temperature": 2.0}}
    expected = expected_output(FORMATS["coreml-fp16"], logits, manifest)
    scaled = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    assert np.allclose(expected, scaled) and np.allclose(expected.sum(1), 1)
    assert expected_output(FORMATS["onnx-fp32"], logits, manifest) is logits
    declared = {"output_kind": "logits", "labels": ["a", "b", "c"], "input_size": [64, 64]}
    assert structure_failures(FORMATS["coreml-int8"], declared, ["a", "b", "c"], 64) == [
        "outputs logits, but coreml-int8 must output probabilities"]
    assert not structure_failures(FORMATS["coreml-int8"], declared | {"output_kind": "probabilities"},
                                  ["a", "b", "c"], 64)


def _golden_tensor_offsets(path) -> dict[str, tuple[int, int]]:
    """Where each tensor's bytes lie in a safetensors file: {name: (start, end)} from the start of the file."""
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_length])
    return {name: (8 + header_length + start, 8 + header_length + end)
            for name, (start, end) in ((k, v["data_offsets"]) for k, v in header.items() if k != "__metadata__")}


@pytest.mark.parametrize("alteration", ["eight-logit-signs", "one-input-pixel"])
def test_altered_golden_set_is_named_not_blamed_on_the_artefacts(exported, tmp_path, alteration):
    """An altered golden set (the sign of 8 reference logits, or one input pixel) is refused before any artefact is
    judged, naming golden.safetensors, instead of failing onnx-fp32 on "max relative error"."""
    import torch

    from export.bench import run_bench
    from export.manifest import ManifestError

    folder, _ = exported
    copy = shutil.copytree(folder, tmp_path / "export")
    golden = copy / "golden.safetensors"
    data = bytearray(golden.read_bytes())
    offsets = _golden_tensor_offsets(golden)
    if alteration == "eight-logit-signs":
        start = offsets["logits"][0]
        for i in range(8):
            data[start + 4 * i + 3] ^= 0x80  # float32 little-endian: the sign bit is in the last byte
    else:
        data[offsets["inputs"][0] + 1000] ^= 0x01
    golden.write_bytes(bytes(data))
    result = runner.invoke(app, ["parity", str(copy), "--golden-only"])
    assert result.exit_code == 2, result.output
    assert "golden.safetensors" in result.output and "changed after export" in result.output
    assert "onnx-fp32" not in result.output and "relative error" not in result.output
    with pytest.raises(ManifestError, match="golden.safetensors"):
        run_bench(copy, torch.nn.Identity())


def test_edited_or_undigested_manifest_is_refused(exported, tmp_path):
    """manifest.json carries the digest of its own content: a field no checksum covers (the input contract's "kind")
    edited by hand is refused, and so is a manifest without the digest (an older export)."""
    from bmcell.core.fileio import json_digest
    from export.manifest import DIGEST_KEY

    folder, _ = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest[DIGEST_KEY] == json_digest(manifest, DIGEST_KEY)
    copy = shutil.copytree(folder, tmp_path / "edited")
    edited = json.loads(json.dumps(manifest))
    entry = next(a for a in edited["artefacts"] if a["input"]["kind"] == "tensor")
    entry["input"]["kind"] = "teosor"
    (copy / "manifest.json").write_text(json.dumps(edited, indent=2))
    result = runner.invoke(app, ["parity", str(copy), "--golden-only"])
    assert result.exit_code == 2 and "manifest.json was edited after export" in result.output, result.output
    older = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    (copy / "manifest.json").write_text(json.dumps(older, indent=2))
    result = runner.invoke(app, ["parity", str(copy), "--golden-only"])
    assert result.exit_code == 2 and f"no {DIGEST_KEY}" in result.output and "export the checkpoint again" in \
        result.output, result.output


INT8 = ("onnx-int8", "ort-int8", "executorch-int8")
VERDICT_KEYS = ("status", "top1_agreement", "answer_changes")  # (the failure texts quote margins of the reference,
# whose last digits move with the PyTorch kernels that computed it)


def _int8_identities(out):
    """{name: (identity, golden-set verdict)} of an export folder's int8 artefacts after `bmcell parity
    --golden-only`; the identity is the file's sha256 or, for the ORT format (whose operator table ONNX Runtime
    writes in the order of a per-process-seeded hash map), the sha256 of its outputs on the golden images."""
    manifest = json.loads((out / "manifest.json").read_text())
    shas = {a["name"]: a["sha256"] for a in manifest["artefacts"]}
    inputs, _, _ = read_golden(out / "golden.safetensors", manifest["source_checkpoint"]["weights_sha256"])
    outputs = FORMATS["ort-int8"].load(out / "model-ort-int8.ort")(inputs)
    shas["ort-int8"] = hashlib.sha256(outputs.tobytes()).hexdigest()
    rows = {r["name"]: r for r in json.loads((out / "parity.json").read_text())["artefacts"]}
    return {name: (shas[name], {key: rows[name][key] for key in VERDICT_KEYS}) for name in INT8}


def test_int8_artefacts_and_verdicts_are_reproducible_across_runs_and_instruction_sets(exported, tmp_path):
    """A second export of one checkpoint gives byte-identical int8 artefacts and the same parity verdicts, also when
    it runs PyTorch's kernels at another instruction set (ATEN_CPU_CAPABILITY=default: no AVX2/AVX-512; oneDNN
    capped at SSE4.1), which moves the float activations the calibration sees by a few ulps."""
    folder, _ = exported
    first = shutil.copytree(folder, tmp_path / "a")
    assert runner.invoke(app, ["parity", str(first), "--golden-only"]).exit_code in (0, 1)
    env = os.environ | {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    second = tmp_path / "b"
    for command in (["export", str(folder.parent), "--target", "android", "--target", "onnx", "--quantize", "int8",
                     "--calib", "32", "--no-parity", "--out", str(second)], ["parity", str(second), "--golden-only"]):
        done = subprocess.run([sys.executable, "-m", "bmcell", *command], capture_output=True, text=True, env=env)
        assert done.returncode in (0, 1), done.stdout + done.stderr
    assert _int8_identities(second) == _int8_identities(first)


def test_app_folder_that_cannot_be_written_is_refused_before_exporting(tmp_path, monkeypatch):
    """--app into a folder this user may not write: one line naming it, before any export (no --out folder).
    Whether a folder is writable comes from os.access, stood in for here (root may write anywhere)."""
    from export.apps import check_app
    from tests.test_apps import fake_app

    web, android = fake_app(tmp_path / "web", "web"), fake_app(tmp_path / "android", "android")
    (web / "bmcell_model").mkdir()
    access = os.access
    read_only = {web, web / "bmcell_model", android / "app"}

    def fake_access(path, mode):
        return access(path, mode) and not (mode & os.W_OK and Path(path) in read_only)

    monkeypatch.setattr(os, "access", fake_access)
    with pytest.raises(BmcellError, match=f"cannot write into {re.escape(str(web))} "):
        check_app("web", web, "auto")
    read_only.remove(web)  # the app folder may be written, its old bundle not: it could not be replaced
    with pytest.raises(BmcellError, match=f"cannot write into {re.escape(str(web / 'bmcell_model'))} "):
        check_app("web", web, "auto")
    with pytest.raises(BmcellError, match=f"cannot write into {re.escape(str(android / 'app'))} "):
        check_app("android", android, "auto")  # app/src/main/assets does not exist yet: made under app/
    read_only.clear()
    assert check_app("web", web, "auto").file == "model.onnx"
    read_only.add(web)
    result = runner.invoke(app, ["export", "--target", "web", "--app", str(web), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "cannot write into" in result.output, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / LOG_FILE).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder: the os.access stand-in above "
                    "covers the check")
def test_read_only_app_folder_is_refused(tmp_path):
    from export.apps import check_app
    from tests.test_apps import fake_app

    web = fake_app(tmp_path / "web", "web")
    web.chmod(0o555)
    try:
        with pytest.raises(BmcellError, match="cannot write into"):
            check_app("web", web, "auto")
    finally:
        web.chmod(0o755)


def test_arm64_parity_holds_executorch_int8_and_onnx_fp32_to_their_tiers_on_two_cpu_models(exported, tmp_path):
    """The artefacts run on ARM64 kernels under qemu-aarch64 (NEON-only cortex-a53, and max: dot product, i8mm, SVE,
    SME), each row judged by its precision's tier as this machine's row is, and compared with this machine's output."""
    built_arm64_environment()
    folder = tmp_path / "export"
    shutil.copytree(exported[0], folder)
    result = runner.invoke(app, ["parity", str(folder), "--golden-only", "--arch", "arm64", "--arm64-artefact",
                                 "executorch-int8", "--arm64-artefact", "onnx-fp32"])
    report = json.loads((folder / "parity.json").read_text())
    rows = {(row["name"], row.get("cpu")): row for row in report["artefacts"]}
    emulated = [key for key in rows if key[1] is not None]
    assert sorted(emulated) == [(name, cpu) for name in ("executorch-int8", "onnx-fp32") for cpu in ("cortex-a53", "max")]
    for name, cpu in emulated:
        row, native = rows[(name, cpu)], rows[(name, None)]
        assert row["arch"] == "arm64" and native["arch"] != "arm64"
        assert row["failures"] == judge(row["precision"], row)  # the same tier as this machine's row
        assert row["status"] == ("fail" if row["failures"] else "pass")
        difference = row["vs_native"]
        assert difference["top1_agreement"] == 1.0, (name, cpu, difference)
        if name == "onnx-fp32":  # float kernels: rounding only
            assert row["status"] == "pass" and difference["max_abs_error"] < 1e-4, difference
        assert f"{name} @ arm64 {cpu}" in (folder / "parity.md").read_text()
        if row["status"] == "fail":
            assert f"{name} @ arm64 {cpu}" in result.output
    assert "## ARM64 kernels against this machine's" in (folder / "parity.md").read_text()
    assert result.exit_code == (0 if report["passed"] else 1), result.output


def test_arm64_instruction_counts_repeat(exported):
    """Guest instructions per inference of the ExecuTorch artefacts under qemu's counting plugin: positive, per CPU
    model, the same to 1e-4 twice (a thread pool's start and stop vary by tens to hundreds of instructions: 482 in
    14 million seen at 7ee4e16); ONNX Runtime
    artefacts are refused with the reason."""
    from export.arm64.emulated import COUNTED_CPUS, instructions_per_inference
    from export.arm64.environment import counting_environment
    from export.golden import read_export_golden
    from export.manifest import read_manifest

    built_arm64_environment()
    env = counting_environment()
    folder = exported[0]
    image = read_export_golden(folder, read_manifest(folder))[0][0]
    path = folder / FORMATS["executorch-int8"].filename()
    counts = {cpu: instructions_per_inference(env, FORMATS["executorch-int8"], path, image, cpu) for cpu in COUNTED_CPUS}
    assert all(count > 1e6 for count in counts.values()), counts
    again = instructions_per_inference(env, FORMATS["executorch-int8"], path, image, "cortex-a53")
    assert abs(again - counts["cortex-a53"]) <= 1e-4 * counts["cortex-a53"], (again, counts)
    with pytest.raises(ExportError, match="not counted"):
        instructions_per_inference(env, FORMATS["onnx-fp32"], folder / FORMATS["onnx-fp32"].filename(), image, "max")

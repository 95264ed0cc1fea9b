"""`bmcell compare`: one split and one protocol for every backbone, a table with int8 latency, resumable runs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bmcell.cli.main import app
from tests.conftest import TINY

runner = CliRunner()
PROTOCOL = ["--epochs", "1", "--image-size", str(TINY["image_size"]), "--batch-size", str(TINY["batch_size"]),
            "--workers", "0", "--runs", "10"]


def test_compare_tabulates_every_backbone_on_one_split(synthetic_data, tmp_path):
    """Two backbones, the first also through int8 export: one split, metrics, params, FLOPs, latencies."""
    out = tmp_path / "cmp"
    first = runner.invoke(app, ["compare", "--data", str(synthetic_data), "--archs", "mobilevit_xxs", "--out", str(out),
                                "--calib", "16", *PROTOCOL])
    assert first.exit_code == 0, first.output
    int8_row = json.loads((out / "compare.json").read_text())["rows"][0]
    assert int8_row["int8_artefact"] in ("executorch-int8", "onnx-int8", "ort-int8")
    assert int8_row["int8_ms"] > 0 and 0 <= int8_row["int8_val_accuracy"] <= 1

    second = runner.invoke(app, ["compare", "--data", str(synthetic_data), "--archs", "mobilevit_xxs,mobilenet_v2",
                                 "--out", str(out), "--no-int8", *PROTOCOL])
    assert second.exit_code == 0, second.output
    assert "mobilevit_xxs: reusing the finished run" in second.output
    report = json.loads((out / "compare.json").read_text())
    rows = {row["arch"]: row for row in report["rows"]}
    assert set(rows) == {"mobilevit_xxs", "mobilenet_v2"}
    assert len({row["split_sha256"] for row in rows.values()}) == 1 == len({row["val_images"] for row in rows.values()})
    assert rows["mobilenet_v2"]["params"] > rows["mobilevit_xxs"]["params"] > 0
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1 and row["gflops"] > 0 and row["eager_ms"] > 0
        assert (out / row["arch"] / "eval-val" / "confusion.png").is_file()
    table = (out / "compare.md").read_text()
    assert "| mobilenet_v2 |" in table and "Recall per class" in table


def test_compare_refuses_bad_requests(synthetic_data, tmp_path):
    """An unknown or repeated architecture is a clear error before any training."""
    unknown = runner.invoke(app, ["compare", "--data", str(synthetic_data), "--archs", "mobilevit_xxs,alexnet",
                                  "--out", str(tmp_path / "a"), *PROTOCOL])
    assert unknown.exit_code != 0 and "alexnet" in unknown.output
    repeated = runner.invoke(app, ["compare", "--data", str(synthetic_data), "--archs", "resnet50,resnet50",
                                   "--out", str(tmp_path / "b"), *PROTOCOL])
    assert repeated.exit_code != 0 and "more than once" in repeated.output

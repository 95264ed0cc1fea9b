"""`bmcell export --app`: the bundle each demo app expects, the artefact rule, atomic replacement and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmcell.core.errors import BmcellError
from bmcell.core.fileio import sha256_path
from export.apps import APPS, app_target, install_bundle
from export.manifest import FORMAT, FORMAT_VERSION, preprocessing_contract, write_manifest

CLASSES = ["lymphocyte", "neutrophil"]


def fake_export(folder: Path, names: list[str], passed: list[str] | None = None,
                changed: dict[str, int] | None = None) -> Path:
    """An export folder with small stand-in artefacts, a manifest and a parity report in which the artefacts in
    passed (default: all) pass, and those in changed answer differently from the float model on that many golden
    images."""
    folder.mkdir()
    artefacts = []
    for name in names:
        path = folder / f"model-{name}.bin"
        path.write_bytes(name.encode() * 10)
        artefacts.append({"name": name, "file": path.name, "sha256": sha256_path(path), "bytes": path.stat().st_size,
                          "input": {"name": "image", "shape": [1, 3, 64, 64]},
                          "precision": "int8" if "int8" in name else "fp32"})
    release = folder.parent / "models" / "cells-v1"  # a released model: its card travels with the app's bundle
    release.mkdir(parents=True)
    (release / "MODEL_CARD.md").write_text("# cells-v1\n")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "classes": CLASSES, "image_size": 64,
                "arch": "mobilevit_xs", "golden": {"count": 64}, "artefacts": artefacts,
                "source_checkpoint": {"weights_sha256": "ab" * 32, "path": str(release / "best.json"), "epoch": 7,
                                      "metrics": {"accuracy": 0.9, "balanced_accuracy": 0.8, "macro_f1": 0.85}}}
    write_manifest(folder / "manifest.json", manifest)
    passed = names if passed is None else passed
    rows = [{"name": n, "status": "pass" if n in passed else "fail", "val_accuracy": 0.875,
             "answer_changes": (changed or {}).get(n, 0), "failures": [] if n in passed else ["SQNR 9.0 dB < 15.0 dB"]}
            for n in names]
    (folder / "parity.json").write_text(json.dumps({"artefacts": rows}))
    return folder


def fake_app(folder: Path, kind: str) -> Path:
    """A folder with only the marker that identifies the kind of app."""
    marker = folder / APPS[kind].marker
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.mkdir() if kind == "ios" else marker.write_text("")
    return folder


@pytest.mark.parametrize("kind, where, file", [("android", "app/src/main/assets", "model.pte"),
                                               ("ios", "BmcellDemo", "model.mlpackage"), ("web", ".", "model.onnx")])
def test_bundle_layout_and_model_json(tmp_path, kind, where, file):
    app = APPS[kind]
    export = fake_export(tmp_path / "export", [app.float_artefact, app.int8_artefact])
    bundle = install_bundle(export, kind, fake_app(tmp_path / "app", kind))
    assert bundle == tmp_path / "app" / where / "bmcell_model"
    assert sorted(p.name for p in bundle.iterdir()) == sorted([file, "model.json", "manifest.json", "MODEL_CARD.md"])
    card = json.loads((bundle / "model.json").read_text())
    manifest = json.loads((export / "manifest.json").read_text())
    entry = next(a for a in manifest["artefacts"] if a["name"] == app.int8_artefact)
    assert card["name"] == app.int8_artefact and card["file"] == file and card["sha256"] == entry["sha256"]
    assert card["bytes"] == entry["bytes"] and card["input"] == entry["input"] and card["classes"] == CLASSES
    assert card["preprocessing"] == preprocessing_contract(64) and card["image_size"] == 64
    assert card["preprocessing"]["scale"] == 0.00392156862745098 and card["source_weights_sha256"] == "ab" * 32
    assert sha256_path(bundle / file) == entry["sha256"]
    # What the app shows the user about the model: name, precision, measured accuracy, parity, card, class names.
    assert card["model"] == {"name": "cells-v1", "arch": "mobilevit_xs", "precision": "int8", "epoch": 7,
                             "val_accuracy": 0.9, "artefact_val_accuracy": 0.875, "parity": "pass",
                             "model_card": "MODEL_CARD.md", "class_names": card["model"]["class_names"],
                             "precision_words": "compact 8-bit version: gives the full model's answers on all 64 "
                                                "reference cells checked", "scores": [], "labs": [],
                             "adapted_to": None}
    assert card["lab_check"] is None  # a manifest from before the accuracy check: the web app hides the batch check
    assert "immature granulocytes" in card["model"]["class_names"]["ig"]


def test_auto_takes_float_unless_int8_passed_parity(tmp_path):
    """auto installs int8 only when it passed parity; an artefact that failed parity is never installed."""
    export = fake_export(tmp_path / "export", ["onnx-fp32", "onnx-int8"], passed=["onnx-fp32"])
    bundle = install_bundle(export, "web", fake_app(tmp_path / "app", "web"))
    model = json.loads((bundle / "model.json").read_text())
    assert model["name"] == "onnx-fp32" and model["model"]["precision_words"] == "full-precision version"
    with pytest.raises(BmcellError, match="onnx-int8 failed parity .SQNR 9.0 dB"):
        install_bundle(export, "web", tmp_path / "app", "int8")
    assert json.loads((bundle / "model.json").read_text())["name"] == "onnx-fp32"  # the bundle stays as it was


def test_int8_that_answers_otherwise_than_the_float_model_is_not_installed(tmp_path):
    """An int8 artefact within its tier that gives another answer (a class, or "uncertain") than the float model on
    a golden image: auto installs float, and asking for int8 is refused, saying why."""
    export = fake_export(tmp_path / "export", ["onnx-fp32", "onnx-int8"], changed={"onnx-int8": 2})
    bundle = install_bundle(export, "web", fake_app(tmp_path / "app", "web"))
    assert json.loads((bundle / "model.json").read_text())["name"] == "onnx-fp32"
    with pytest.raises(BmcellError, match="answers differently from the float model on 2 golden"):
        install_bundle(export, "web", tmp_path / "app", "int8")


def test_reinstall_replaces_the_bundle_but_keeps_its_placeholder(tmp_path):
    export = fake_export(tmp_path / "export", ["onnx-fp32"])
    bundle = install_bundle(export, "web", fake_app(tmp_path / "app", "web"))
    (bundle / "stale.txt").write_text("old")
    (bundle / "README.md").write_text("run bmcell export --app to put a model here")  # the committed placeholder
    install_bundle(export, "web", tmp_path / "app")
    assert not (bundle / "stale.txt").exists()
    assert (bundle / "README.md").read_text() == "run bmcell export --app to put a model here"
    assert [p.name for p in (tmp_path / "app").iterdir() if p.name.startswith(".")] == []


def test_refusals(tmp_path):
    export = fake_export(tmp_path / "export", ["onnx-fp32"])
    with pytest.raises(BmcellError, match="does not look like the android demo app"):
        install_bundle(export, "android", tmp_path)
    app = fake_app(tmp_path / "app", "web")
    with pytest.raises(BmcellError, match="no onnx-int8 artefact"):
        install_bundle(export, "web", app, "int8")
    with pytest.raises(BmcellError, match="--app-precision"):
        install_bundle(export, "web", app, "fp8")
    (export / "model-onnx-fp32.bin").write_bytes(b"tampered")
    with pytest.raises(BmcellError, match="does not match its sha256"):
        install_bundle(export, "web", app)
    assert not (app / "bmcell_model").exists()
    with pytest.raises(BmcellError, match="exactly one of --target"):
        app_target(["android", "ios"])
    assert app_target(["web", "onnx"]) == "web"

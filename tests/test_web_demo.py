"""The web app in headless Chromium: the bytes a first visit and an online reload download (the runtime and the model
once, then nothing), the "ready offline" line, the header (version, precision and scores in plain words) and the
model card rendered as HTML within a phone's width; then offline: its preprocessing against the contract vectors,
its predictions against onnxruntime in Python, every class with full names, the time of each classification, the
centre square the model sees, a large picture overtaken by a small one (only the latest result shown), its error
messages for a file that is not an image and for a TIFF, and a main screen free of jargon with the answer right under
the pickers; then, with model.json replaced, its calibrated probabilities, its confident, "low confidence" and
"uncertain — check by eye" answers, its refusal of an unusable confidence block, the per-lab scores, a crafted model
card (links, tables, nothing run as HTML), and a model.json without the "model" block. A quicker job with a tiny
model checks the labs, adapted and route lines of the header and "Check a batch of my photos": its progress, the
files it cannot read, and an estimated accuracy equal to the share Python computes from the same model's logits; and
model.json's "novelty" block: a model whose output is its class scores then a novelty score (the export's, or a
stand-in grafted onto the ONNX file until the export writes one), "does not look like a cell this model knows" for a
picture at or above the threshold, the batch check's count of them, the refusal of unusable blocks and of a model
whose output length model.json does not declare, and, once the export writes the block, photographs that are not
cells flagged by the exported model (tests/data/noncell)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.config import TrainConfig
from bmcell.core.engine import fit
from bmcell.jobs.release import DEFAULT_MODEL
from export.apps import install_bundle
from tests.conftest import PBC, TINY
from tests.contract.preprocessing import GOLDEN, SIZES, python_unit_bytes, reference_images, tensor_facts
from tests.contract.wording import (
    CHECK,
    FINETUNE,
    NOVELTY_PANEL_LINE,
    ROUTE_LINE,
    UNKNOWN_CELL,
    UNKNOWN_CELL_WHY,
    novelty_line,
)

WEB_DEMO = Path(__file__).resolve().parents[1] / "web_demo"
APP_FILES = ("index.html", "style.css", "app.js", "preprocess.js", "assets.js", "sw.js", "manifest.webmanifest",
             "icon.svg", "package.json", "tools")
ARTIFACTS = WEB_DEMO / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
RELEASED = (DEFAULT_MODEL / "best.json").is_file()
NONCELL = Path(__file__).resolve().parent / "data" / "noncell"  # photographs that are not cells (see its README)


def missing_toolchain() -> str | None:
    """Why the browser test cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install chromium, or set CHROMIUM)"
    for package in ("playwright-core", "onnxruntime-web"):
        if not (WEB_DEMO / "node_modules" / package).is_dir():
            return f"web_demo/node_modules/{package} is absent (run `npm ci` in web_demo)"
    return None


def require_toolchain() -> None:
    """Skip (or, with BMCELL_REQUIRE_BROWSER set, fail) when the browser tool chain is incomplete."""
    reason = missing_toolchain()
    if reason:
        if os.environ.get("BMCELL_REQUIRE_BROWSER"):
            pytest.fail(f"BMCELL_REQUIRE_BROWSER is set but the browser tool chain is incomplete: {reason}")
        pytest.skip(f"browser test skipped: {reason}")


def export_model(root: Path, request: pytest.FixtureRequest, synthetic_data: Path) -> Path:
    """onnx-fp32 and onnx-int8 of the released model (the session's export of it, from its own sample set), or of a
    tiny model trained here when there is none, without a parity report (so that the int8 model installs whatever
    parity said of it: these tests hold the browser to Python's onnxruntime, not to the tier); returns the folder."""
    out = root / "export"
    if RELEASED:
        shutil.copytree(request.getfixturevalue("released_export")[0], out, ignore=shutil.ignore_patterns("parity.*"))
        return out
    fit(TrainConfig(**TINY, out=str(root / "run"), data=str(synthetic_data), epochs=1))
    result = CliRunner().invoke(app, ["export", str(root / "run"), "--target", "web", "--quantize", "all", "--calib",
                                      "32", "--no-parity", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def site_with(root: Path, name: str, export_dir: Path, precision: str) -> Path:
    """A copy of web_demo (ONNX Runtime Web set up) with the export's float or int8 model installed."""
    site = root / name
    site.mkdir()
    for file in APP_FILES:
        (shutil.copytree if (WEB_DEMO / file).is_dir() else shutil.copy)(WEB_DEMO / file, site / file)
    (site / "node_modules").symlink_to(WEB_DEMO / "node_modules")
    subprocess.run(["node", "tools/setup.mjs"], cwd=site, check=True, capture_output=True)
    install_bundle(export_dir, "web", site, precision)
    return site


def run_browser(site: Path, job: dict) -> dict:
    """Serve the site with `bmcell serve-demo` and run tests/browser.mjs on it; the page's report."""
    server = subprocess.Popen([sys.executable, "-m", "bmcell", "serve-demo", str(site), "--port", "0", "--host",
                               "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split(" at ")[1].split()[0]
        done = subprocess.run(["node", str(WEB_DEMO / "tests" / "browser.mjs"), json.dumps(job | {"url": url})],
                              cwd=WEB_DEMO, capture_output=True, text=True, timeout=300)
    finally:
        server.terminate()
        server.wait()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "failure" not in report, report["failure"] + "\n" + "\n".join(report["log"])
    return report


CONFIDENCE_TEMPERATURE = 1.5  # not 1: the page must divide the logits by model.json's temperature
UNUSABLE_CONFIDENCE = {  # model.json "confidence" blocks the page must refuse, and the word its message must name
    "temperature_zero": ({"temperature": 0, "threshold": 0.5}, "temperature"),
    "temperature_text": ({"temperature": "abc", "threshold": 0.5}, "temperature"),
    "temperature_negative": ({"temperature": -1.0, "threshold": 0.5}, "temperature"),
    "threshold_above_one": ({"temperature": 1.0, "threshold": 1.5}, "threshold"),
    "threshold_missing": ({"temperature": 1.0}, "threshold"),
    "confident_from_text": ({"temperature": 1.0, "threshold": 0.5, "confident_from": "high"}, "confident_from"),
    "confident_from_below_threshold": ({"temperature": 1.0, "threshold": 0.5, "confident_from": 0.4}, "confident_from"),
    "confident_from_above_one": ({"temperature": 1.0, "threshold": 0.5, "confident_from": 1.5}, "confident_from"),
}
# The "model" block's release facts in the calibrated variant: per-lab scores (with entries the page must ignore),
# the precision in words, and full class names with brackets (an answer must not nest them).
SCORES = [{"set": "chula", "images": 162, "accuracy": 0.691}, {"set": "pbc", "images": 1537, "accuracy": 0.975},
          {"set": "many", "images": "lots", "accuracy": 0.5}, {"set": "", "images": 3, "accuracy": 0.5},
          {"set": "over", "images": 10, "accuracy": 1.5}, {"set": "half", "images": 2.5, "accuracy": 0.5}, "junk"]
SCORES_LINE = "Tested on 1,537 pbc cells: 97.5 % right · 162 chula cells: 69.1 % right"
PRECISION_WORDS = {"int8": "compact 8-bit version", "fp16": "half-precision version", "fp32": "full-precision version"}
RELEASE_WORDS = "compact 8-bit version, gives the same answers as the full model on all 64 reference cells"
# A model card using every construct the page renders, a wide table, an unsafe link and HTML that must stay text.
CRAFTED_CARD = """# Crafted card

Plain text with **bold words**, *italic words*, `code_name`, a [safe link](https://example.org/card), an
[unsafe link](javascript:window.injected=1) and <img src=x onerror="window.injected=2"> as text.

## A wide table

| set | images | accuracy | balanced accuracy | macro-F1 | majority baseline | answered | accuracy answered |
|---|---:|---:|---:|---:|---:|---:|---:|
| a_very_long_laboratory_name | 1537 | 0.975 | 0.980 | 0.977 | 0.195 | 0.997 | 0.976 |

### Notes

- first item
- second item with **bold**
#### Small heading
models/a_long_unbroken_path/without_any_spaces/in_it/mobilevit_xs-pbc8-chula/best.safetensors/and_more_of_it
"""
CRAFTED_HEADINGS = ["Crafted card", "A wide table", "Notes", "Small heading"]


NEVER_FLAGGED = 1e9  # a novelty threshold no picture reaches


def never_flagged(card: dict) -> dict:
    """model.json with its novelty block (when the export wrote one) kept but its threshold out of reach: the tests of
    the confidence levels see those levels alone, whatever the novelty of their pictures (the generated reference
    images are not cells)."""
    novelty = card.get("novelty")
    return card | {"novelty": novelty | {"threshold": NEVER_FLAGGED}} if novelty else card


def three_levels(tops: dict[str, float]) -> tuple[str, str, str]:
    """The most and the least confident reference images, and the one in between farthest from both."""
    sure, unsure = max(tops, key=tops.get), min(tops, key=tops.get)
    middle = max((name for name in tops if name not in (sure, unsure)),
                 key=lambda name: min(tops[name] - tops[unsure], tops[sure] - tops[name]))
    return sure, middle, unsure


def noncell_photos() -> list[Path]:
    """The photographs that are not cells (tests/data/noncell)."""
    photos = sorted(NONCELL.glob("*.jpg"))
    assert photos, NONCELL
    return photos


def confidence_variants(bundle: Path, images: dict[str, Path], root: Path) -> tuple[list[dict], dict]:
    """The browser jobs that replace model.json, and what the calibrated ones should do. "calibrated": at
    CONFIDENCE_TEMPERATURE, a threshold halfway between the least and the middle confident reference image's top
    probability and confident_from halfway between the middle and the most confident one's, so the three get an
    "uncertain", a "low" and a "confident" answer; with release facts (SCORES, RELEASE_WORDS, bracketed class names).
    "defaults": as an older export writes it (no confident_from, scores or precision_words), with a threshold that
    puts the middle image between it and the default confident_from, (1 + threshold) / 2. A novelty block is kept,
    never flagging (never_flagged). The three are picked among the reference images and the photographs that are not
    cells: without PBC's images the three generated ones alone can sit closer together than these limits allow."""
    card = never_flagged(json.loads((bundle / "model.json").read_text()))
    images = images | {f"noncell/{path.name}": path for path in noncell_photos()}
    tops = {name: float(python_probabilities(bundle, path, CONFIDENCE_TEMPERATURE).max())
            for name, path in images.items()}
    sure, middle, unsure = three_levels(tops)
    threshold, confident_from = (tops[unsure] + tops[middle]) / 2, (tops[middle] + tops[sure]) / 2
    default_threshold = (max(2 * tops[middle] - 1, 0) + tops[middle]) / 2
    # far from each limit compared with browser vs Python (1e-4)
    assert min(tops[middle] - tops[unsure], tops[sure] - tops[middle]) > 4e-3, tops
    assert min(tops[middle] - default_threshold, (1 + default_threshold) / 2 - tops[middle]) > 2e-3, tops
    calibrated = {"temperature": CONFIDENCE_TEMPERATURE, "threshold": threshold, "confident_from": confident_from,
                  "coverage_target": 0.95, "fitted_on": "validation split (test)",
                  "rule": "probabilities = softmax(logits / temperature); answer the top class only when its "
                          "probability >= threshold, otherwise 'uncertain - check by eye'"}
    release = card["model"] | {"scores": SCORES, "precision_words": RELEASE_WORDS,
                               "class_names": {label: f"{label} (full name, in brackets)" for label in card["classes"]}}
    older_model = {key: value for key, value in card["model"].items() if key not in ("scores", "precision_words")}
    paths = [str(images[name]) for name in (sure, middle, unsure)]
    variants = [{"name": "calibrated", "model_json": card | {"confidence": calibrated, "model": release},
                 "images": paths, "screenshot": str(root / "uncertain-phone.png")},
                {"name": "defaults", "images": [str(images[middle])], "screenshot": str(root / "low-phone.png"),
                 "model_json": card | {"confidence": {"temperature": CONFIDENCE_TEMPERATURE,
                                                      "threshold": default_threshold},
                                       "model": older_model | {"precision": "int8"}}},
                {"name": "no_confidence", "model_json": card | {"confidence": None}, "images": [str(images[sure])]},
                {"name": "crafted_card", "model_json": card | {"model": card["model"] | {"model_card": "MODEL_CARD.md"}},
                 "model_card": CRAFTED_CARD}]
    variants += [{"name": name, "model_json": card | {"confidence": block}}
                 for name, (block, _) in UNUSABLE_CONFIDENCE.items()]
    older = {key: value for key, value in card.items() if key not in ("model", "bmcell_version")}
    variants.append({"name": "no_model_block", "model_json": older, "images": [str(images[sure])]})
    return variants, {"sure": images[sure], "middle": images[middle], "unsure": images[unsure], "threshold": threshold,
                      "confident_from": confident_from, "default_threshold": default_threshold, "tops": tops}


def race_images(root: Path) -> dict[str, str]:
    """A large photo (6000x4000 JPEG: about a second to decode and resize) and a small non-square picture (480x240:
    a red and a blue band left and right of the centre square, which the model sees and the page must show)."""
    from PIL import Image

    y, x = np.mgrid[0:4000, 0:6000]
    large = np.stack([x * 255 // 6000, y * 255 // 4000, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(large).save(root / "large.jpg", quality=85)
    small = np.zeros((240, 480, 3), np.uint8)
    small[:, :120], small[:, 360:] = (220, 30, 30), (30, 30, 220)
    y, x = np.mgrid[0:240, 0:240]
    small[:, 120:360] = np.stack([x, y, 255 - x], -1)
    Image.fromarray(small).save(root / "wide.png")
    return {"large": str(root / "large.jpg"), "small": str(root / "wide.png")}


def bad_files(root: Path, picture: Path) -> dict[str, Path]:
    """Files the page must refuse with a message: text named .jpg, and a TIFF of a good picture (the CLI reads it,
    browsers do not)."""
    from PIL import Image

    notes = root / "notes.jpg"
    notes.write_text("not a picture")
    with Image.open(picture) as image:
        image.convert("RGB").save(root / "cell.tif")
    return {"not_image": notes, "tiff": root / "cell.tif"}


def exported_novelty_variants(bundle: Path, images: dict[str, Path]) -> list[dict]:
    """The browser job "exported_novelty": model.json as exported, novelty block included, on the photographs that
    are not cells and the images given; none while the export writes no novelty block."""
    card = json.loads((bundle / "model.json").read_text())
    if not card.get("novelty"):
        return []
    return [{"name": "exported_novelty", "model_json": card,
             "images": [str(path) for path in [*noncell_photos(), *images.values()]]}]


@pytest.fixture(scope="module")
def browser_runs(tmp_path_factory, request, synthetic_data):
    """The released model (or a tiny one) in copies of web_demo, in headless Chromium: the float model on every
    reference image with the golden tensors, a non-image and a screenshot, then with model.json's confidence block
    replaced (calibrated, null, unusable, no "model" block) and, once the export writes a novelty block, as exported
    on photographs that are not cells and the reference images; the int8 model on the same images. Both count the
    bytes of a first visit and an online reload."""
    require_toolchain()
    root = tmp_path_factory.mktemp("web")
    export_dir = export_model(root, request, synthetic_data)
    images = reference_images(PBC if PBC.is_dir() else None)
    bad = bad_files(root, next(iter(images.values())))
    float_site = site_with(root, "web_float", export_dir, "float")
    variants, expected = confidence_variants(float_site / "bmcell_model", images, root)
    variants += exported_novelty_variants(float_site / "bmcell_model", images)
    race = race_images(root)
    report = run_browser(float_site, {"images": [str(p) for p in images.values()], "sizes": list(SIZES),
                                      "bad": [str(path) for path in bad.values()],
                                      "screenshot": str(root / "offline-phone.png"),
                                      "card_screenshot": str(root / "card-phone.png"), "race": race,
                                      "variants": variants})
    ARTIFACTS.mkdir(exist_ok=True)
    for screenshot in ("offline-phone.png", "uncertain-phone.png", "low-phone.png", "card-phone.png"):
        if (root / screenshot).is_file():  # card-phone.png only when the model has a card
            shutil.copy(root / screenshot, ARTIFACTS / screenshot)
    int8_site = site_with(root, "web_int8", export_dir, "int8")
    int8_report = run_browser(int8_site, {"images": [str(p) for p in images.values()], "sizes": [],
                                          "swap_model": {"site": str(int8_site),
                                                         "bundle": str(float_site / "bmcell_model")}})
    return {"float": (report, images, float_site / "bmcell_model"),
            "int8": (int8_report, images, int8_site / "bmcell_model"),
            "confidence": (report["variants"], expected, float_site / "bmcell_model"),
            "race": (report["race"], race, float_site / "bmcell_model"),
            "exported": (report["variants"].get("exported_novelty"), float_site / "bmcell_model", images),
            "bad": (report["bad"], bad),
            "sites": {"float": (report, float_site), "int8": (int8_report, int8_site)}}


@pytest.fixture(scope="module")
def browser_run(browser_runs):
    """The float model's browser run: (report, reference images, installed bundle)."""
    return browser_runs["float"]


def python_outputs(bundle: Path, path: Path, card: dict | None = None) -> tuple[np.ndarray, float | None]:
    """onnxruntime's output for the image through the Python preprocessing, split as model.json's contract says: the
    class logits (float64), and the novelty score after them (None without a novelty block). card: the model.json to
    read (its file in the bundle), by default the bundle's."""
    import onnxruntime as ort

    card = card or json.loads((bundle / "model.json").read_text())
    session = ort.InferenceSession(str(bundle / card["file"]), providers=["CPUExecutionProvider"])
    tensor = python_unit_bytes(path, card["image_size"]).astype(np.float32) * np.float32(1 / 255)
    output = session.run(None, {session.get_inputs()[0].name: tensor[None]})[0][0].astype(np.float64)
    classes, novelty = len(card["classes"]), card.get("novelty")
    assert len(output) == classes + (1 if novelty else 0), (len(output), classes, novelty)
    return output[:classes], float(output[novelty["output_index"]]) if novelty else None


def python_probabilities(bundle: Path, path: Path, temperature: float | None = None,
                         card: dict | None = None) -> np.ndarray:
    """Softmax of onnxruntime's logits / temperature for the image through the Python preprocessing; by default
    the temperature of the bundle's model.json (1 when its confidence is null)."""
    card = card or json.loads((bundle / "model.json").read_text())
    if temperature is None:
        temperature = (card.get("confidence") or {}).get("temperature", 1.0)
    logits = python_outputs(bundle, path, card)[0] / temperature
    exps = np.exp(logits - logits.max())
    return exps / exps.sum()


def check_images(browser_run, prefix: str) -> list[float]:
    """Assert the browser matches the golden tensors and Python's predictions; return the max abs tensor errors."""
    report, images, bundle = browser_run
    golden = json.loads(GOLDEN.read_text())["images"]
    errors = []
    for name, path in images.items():
        if not name.startswith(prefix):
            continue
        answer = report["images"][str(path)]
        assert "error" not in answer, answer["error"]
        for size in SIZES:
            web = np.array(answer["tensors"][str(size)], dtype=np.uint8).reshape(3, size, size)
            python = python_unit_bytes(path, size)
            errors.append(int(np.abs(web.astype(int) - python).max()))
            assert tensor_facts(python) == golden[name]["sizes"][str(size)], f"Python drifted from golden: {name}"
            assert tensor_facts(web) == golden[name]["sizes"][str(size)], \
                f"{name} at {size}: web differs from golden at {int((web != python).sum())} values"
        expected = python_probabilities(bundle, path)
        assert int(np.argmax(answer["probabilities"])) == int(expected.argmax()), name
        np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-4, err_msg=name)
    return errors


def test_web_demo_works_offline_and_matches_python(browser_run):
    report, _, bundle = browser_run
    card = json.loads((bundle / "model.json").read_text())
    cached = set(report["cached"])
    assert {"/", "/index.html", "/app.js", "/preprocess.js", "/assets.js", "/bmcell_model/model.json"} <= cached
    assert f"/bmcell_model/model.onnx?v={card['sha256'][:16]}" in cached
    assert report["offline_model"] == "onnx-fp32"
    assert max(check_images(browser_run, "generated/")) == 0
    assert (ARTIFACTS / "offline-phone.png").stat().st_size > 10_000
    confidence = json.loads((bundle / "model.json").read_text())["confidence"]
    assert ("uncalibrated" in report["page"]["note"]) == (confidence is None)


def test_web_demo_explains_files_it_cannot_read(browser_runs):
    """A text file named .jpg is "not an image"; a TIFF (which `bmcell predict` reads) is named as such, with what
    to do instead: convert it to PNG or JPEG, or use `bmcell predict`."""
    answers, files = browser_runs["bad"]
    assert "not an image" in answers[str(files["not_image"])]["error"]
    tiff = answers[str(files["tiff"])]
    assert tiff["error"].startswith("cell.tif: TIFF"), tiff
    for words in ("not read", "PNG or JPEG", "bmcell predict"):
        assert words in tiff["error"], tiff["error"]
    assert tiff["page"]["status_class"] == "error" and tiff["page"]["status"] == tiff["error"]


def test_web_demo_answers_above_the_threshold_and_is_uncertain_below(browser_runs):
    """model.json's temperature is applied (probabilities as Python's softmax(logits / T)), the image at or above
    confident_from gets its class as a confident answer, the one below the threshold "uncertain — check by eye" with
    the classes secondary."""
    variants, expected, bundle = browser_runs["confidence"]
    calibrated = variants["calibrated"]
    assert calibrated["error"] is None
    assert "calibrated (temperature 1.5)" in calibrated["page"]["details"]
    assert f"{100 * expected['threshold']:.1f} %" in calibrated["page"]["note"]
    for path in (expected["sure"], expected["middle"], expected["unsure"]):
        answer = calibrated["images"][str(path)]
        assert "error" not in answer, answer["error"]
        python = python_probabilities(bundle, path, CONFIDENCE_TEMPERATURE)
        np.testing.assert_allclose(answer["probabilities"], python, atol=1e-4, err_msg=str(path))
        assert len(answer["page"]["top"].splitlines()) >= 3  # the class list is still there, under the answer

    sure = calibrated["images"][str(expected["sure"])]
    assert sure["uncertain"] is False and sure["level"] == "confident" and sure["page"]["answer_class"] == "confident"
    assert sure["page"]["answer"].startswith(sure["top"][0]["label"]), sure["page"]
    assert "uncertain" not in sure["page"]["answer"].lower() and "low confidence" not in sure["page"]["answer"]
    assert sure["page"]["top_class"] != "secondary"

    unsure = calibrated["images"][str(expected["unsure"])]
    assert unsure["uncertain"] is True and unsure["level"] == "uncertain"
    assert unsure["page"]["answer_class"] == "uncertain"
    assert unsure["page"]["answer"].startswith("uncertain — check by eye"), unsure["page"]
    assert unsure["page"]["top_class"] == "secondary"
    assert unsure["page"]["top-heading"] == "Class probabilities"
    assert (ARTIFACTS / "uncertain-phone.png").stat().st_size > 10_000


def test_web_demo_marks_an_answer_between_threshold_and_confident_from_as_low_confidence(browser_runs):
    """A top probability from the threshold up to confident_from: the class, in a box of its own that says "low
    confidence — check by eye" and what a confident answer needs; confident_from defaults to (1 + threshold) / 2."""
    variants, expected, _ = browser_runs["confidence"]
    calibrated = variants["calibrated"]
    note = calibrated["page"]["note"]
    assert f"{100 * expected['confident_from']:.1f} %" in note and f"{100 * expected['threshold']:.1f} %" in note
    assert f"confident from {100 * expected['confident_from']:.1f} %" in calibrated["page"]["details"]
    low = calibrated["images"][str(expected["middle"])]
    assert low["level"] == "low" and low["uncertain"] is False, low
    assert low["page"]["answer_class"] == "low" and low["page"]["top_class"] != "secondary"
    lines = low["page"]["answer"].splitlines()
    assert lines[0].lower() == "low confidence — check by eye" and lines[1].startswith(low["top"][0]["label"]), lines
    assert f"a confident answer needs {100 * expected['confident_from']:.1f} %" in lines[2], lines

    defaults = variants["defaults"]
    assert defaults["error"] is None
    confident_from = (1 + expected["default_threshold"]) / 2
    assert f"confident from {100 * confident_from:.1f} %" in defaults["page"]["details"]
    answer = defaults["images"][str(expected["middle"])]
    assert answer["level"] == "low" and answer["page"]["answer_class"] == "low", answer
    assert f"a confident answer needs {100 * confident_from:.1f} %" in answer["page"]["answer"]
    assert (ARTIFACTS / "low-phone.png").stat().st_size > 10_000


def test_web_demo_without_calibrated_confidence_answers_as_before(browser_runs):
    """confidence: null → temperature 1, never "uncertain" or "low", and a note that the percentages are
    uncalibrated."""
    variants, expected, bundle = browser_runs["confidence"]
    plain = variants["no_confidence"]
    assert plain["error"] is None and "uncalibrated" in plain["page"]["note"]
    answer = plain["images"][str(expected["sure"])]
    assert answer["uncertain"] is False and answer["level"] == "confident"
    assert answer["page"]["answer_class"] == "confident"
    np.testing.assert_allclose(answer["probabilities"], python_probabilities(bundle, expected["sure"], 1.0), atol=1e-4)


def assert_refused(refused: dict, *words: str) -> None:
    """The page refused the model on screen, its message holding every one of words: the model line says so and no
    picture can be chosen."""
    assert refused["error"] and all(word in refused["error"] for word in words), (words, refused)
    page = refused["page"]
    assert page["status_class"] == "error" and all(word in page["status"] for word in (*words, "refusing")), page
    assert page["model"] == "no usable model" and not page["file_enabled"] and page["answer"] == ""


@pytest.mark.parametrize("name", sorted(UNUSABLE_CONFIDENCE))
def test_web_demo_refuses_an_unusable_confidence_block(browser_runs, name):
    """A temperature that is not a finite number > 0, a threshold outside [0, 1] or a confident_from outside
    [threshold, 1] is refused on screen."""
    variants, _, _ = browser_runs["confidence"]
    assert_refused(variants[name], UNUSABLE_CONFIDENCE[name][1])


# Browser vs Python on a novelty score: float32 sums in another order (the stand-in's mean of every input value, the
# export's cosine similarity over the features, divided by a radius that can be small) differ by up to 2e-4 measured.
NOVELTY_TOLERANCE = 2e-3


def require_novelty_output(card: dict) -> None:
    """Skip while the fixture's export writes no novelty block into model.json (nor the novelty score its model
    would then output after the class scores)."""
    if not card.get("novelty"):
        pytest.skip("fixture export has no novelty output yet")


def assert_flagged(answer: dict, novelty: float, threshold: float, classes: int) -> None:
    """The page's answer for a picture whose novelty score (Python's: novelty) reaches the threshold: the browser's
    score is Python's, the level "unknown", the answer box says "does not look like a cell this model knows" and
    why, styled apart from "uncertain", with every class listed but secondary and how unlike the training cells the
    picture is."""
    assert "error" not in answer, answer["error"]
    assert abs(answer["novelty"] - novelty) < NOVELTY_TOLERANCE, (answer["novelty"], novelty)
    assert answer["level"] == "unknown" and answer["unknown"] is True and answer["uncertain"] is False, answer
    page = answer["page"]
    assert page["answer_class"] == "unknown" and page["answer"].splitlines() == [UNKNOWN_CELL, UNKNOWN_CELL_WHY], page
    assert page["top_class"] == "secondary" and page["top-heading"] == "Class probabilities", page
    assert len([line for line in page["top"].splitlines() if line.strip()]) == classes, page["top"]
    assert page["novelty"] == novelty_line(answer["novelty"], threshold), page["novelty"]


@pytest.mark.parametrize("runs", ["browser_runs", "lab_runs"])
def test_web_demo_flags_a_photograph_that_is_not_a_cell(request, runs):
    """The model as exported with model.json's novelty block (the released model, or a tiny one; the session's tiny
    run): photographs of a coffee cup and of an astronaut (tests/data/noncell) get "does not look like a cell this
    model knows" (assert_flagged) by the score Python's onnxruntime computes; every reference image the level
    Python's score gives it; the header says the model flags pictures unlike its training cells."""
    variant, bundle, images = request.getfixturevalue(runs)["exported"]
    card = json.loads((bundle / "model.json").read_text())
    require_novelty_output(card)
    threshold, classes = card["novelty"]["threshold"], len(card["classes"])
    assert variant["error"] is None and variant["page"]["flags"] == NOVELTY_PANEL_LINE, variant["page"]
    for path in noncell_photos():
        novelty = python_outputs(bundle, path)[1]
        assert novelty >= threshold, f"the export does not flag {path.name}: novelty {novelty:.3f} < {threshold}"
        assert_flagged(variant["images"][str(path)], novelty, threshold, classes)
    for name, path in images.items():
        answer, novelty = variant["images"][str(path)], python_outputs(bundle, path)[1]
        assert abs(answer["novelty"] - novelty) < NOVELTY_TOLERANCE, (name, answer["novelty"], novelty)
        if abs(novelty - threshold) > 2 * NOVELTY_TOLERANCE:  # far from the threshold compared with browser vs Python
            assert (answer["level"] == "unknown") == (novelty >= threshold), (name, answer["level"], novelty)


def test_web_demo_on_real_pbc_images(browser_run, pbc_root):
    assert max(check_images(browser_run, "pbc/")) == 0


@pytest.mark.skipif(not RELEASED, reason=f"no released model in {DEFAULT_MODEL}")
def test_web_demo_gives_the_released_models_golden_top1(browser_run, pbc_root):
    """The browser's top-1 for the PBC reference images is the one preprocessing.json fixes for the released model."""
    report, images, bundle = browser_run
    expected = json.loads(GOLDEN.read_text())["released_model"]
    assert json.loads((bundle / "model.json").read_text())["source_weights_sha256"] == expected["weights_sha256"]
    for name, top1 in expected["top1"].items():
        answer = report["images"][str(images[name])]
        assert answer["top"][0]["label"] == top1, (name, answer["top"])


INT8_LOG_TOLERANCE = 0.5  # centred log-probabilities (logits over the temperature): ORT Web's WASM int8 kernels vs
# native onnxruntime's; 0.26 measured on the three-lab release (a PBC neutrophil, on an AVX2 machine, whose u8s8
# kernels round differently). Compared in log space: near 0.5 a probability moves 0.06 for a 0.26 logit step.


def centred_log(probabilities) -> np.ndarray:
    """Log-probabilities less their mean: the logits over the temperature, up to rounding."""
    logs = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-30, None))
    return logs - logs.mean()


def test_int8_model_in_the_browser_matches_python(browser_runs):
    """The int8 model the app installs with --app-precision int8: the browser's logits (centred log-probabilities)
    within a few quantisation steps of Python onnxruntime's, and the same top-1 unless the two leading classes are
    that close."""
    report, images, bundle = browser_runs["int8"]
    assert report["offline_model"] == "onnx-int8"
    for path in images.values():
        answer = report["images"][str(path)]
        assert "error" not in answer, answer["error"]
        expected = python_probabilities(bundle, path)
        found, wanted = centred_log(answer["probabilities"]), centred_log(expected)
        assert np.abs(found - wanted).max() <= INT8_LOG_TOLERANCE, (path, found, wanted)
        second, first = np.sort(wanted)[-2:]
        if first - second > 2 * INT8_LOG_TOLERANCE:  # a near-tie may flip within the tolerance
            assert int(np.argmax(answer["probabilities"])) == int(expected.argmax()), path


def runtime_and_model_bytes(site: Path) -> dict[str, int]:
    """URL path -> size of onnxruntime-web's files (vendor/ort.json) and of the installed model."""
    runtime = json.loads((site / "vendor" / "ort.json").read_text())["files"]
    sizes = {f"/vendor/{name}": facts["bytes"] for name, facts in runtime.items()}
    card = json.loads((site / "bmcell_model" / "model.json").read_text())
    sizes[f"/bmcell_model/{card['file']}"] = (site / "bmcell_model" / card["file"]).stat().st_size
    return sizes


@pytest.mark.parametrize("precision", ["float", "int8"])
def test_web_demo_downloads_runtime_and_model_once(browser_runs, precision):
    """Bytes sent by the server (counted by a proxy, the service worker's requests included): a first visit
    downloads the runtime and the model once (at most 1.2 x their size, the small app shell included), and says
    "ready offline"; an online reload downloads neither: the page gets them from the service worker's cache."""
    report, site = browser_runs["sites"][precision]
    sizes = runtime_and_model_bytes(site)
    first, reload = report["bytes"]["first"], report["bytes"]["reload"]
    for path, size in sizes.items():
        assert first[path]["bytes"] == size and first[path]["requests"] == 1, (path, first[path], size)
    first_total = sum(entry["bytes"] for entry in first.values())
    assert first_total <= 1.2 * sum(sizes.values()), first
    assert all(reload.get(path, {"bytes": 0})["bytes"] == 0 for path in sizes), reload
    assert sum(entry["bytes"] for entry in reload.values()) <= 100_000, reload
    served = {entry["url"]: entry["fromServiceWorker"] for entry in report["reload_responses"]}
    assert all(served[path] for path in sizes), served
    assert report["offline_first"].startswith("✓ Ready offline") and report["offline_reload"].startswith("✓ Ready")
    print(f"{precision}: first visit {first_total:,} bytes (runtime + model {sum(sizes.values()):,}); "
          f"reload {sum(entry['bytes'] for entry in reload.values()):,} bytes")


def expected_header(model: dict) -> tuple[str, str]:
    """The precision and scores lines app.js shows for model.json's "model" block: precision_words (else words for
    the precision), and the well-formed per-lab scores, largest set first (else the overall accuracy)."""
    def fraction(value) -> bool:
        return type(value) in (int, float) and 0 <= value <= 1

    scores = sorted((score for score in model.get("scores") or [] if isinstance(score, dict)
                     and isinstance(score.get("set"), str) and score["set"] and type(score.get("images")) is int
                     and score["images"] > 0 and fraction(score.get("accuracy"))), key=lambda score: -score["images"])
    if scores:
        line = "Tested on " + " · ".join(f"{score['images']:,} {score['set']} cells: {100 * score['accuracy']:.1f} % "
                                         "right" for score in scores)
    else:
        accuracy = next((value for value in (model.get("artefact_val_accuracy"), model.get("val_accuracy"))
                         if fraction(value)), None)
        line = "" if accuracy is None else f"Right on {100 * accuracy:.1f} % of its test images"
    words = model.get("precision_words") or PRECISION_WORDS.get(model.get("precision"), "")
    return words, line


def test_web_demo_names_the_release_and_links_its_model_card(browser_runs):
    """The header: "Model NAME · bmcell VERSION · model card", the precision in words, the accuracy in plain words
    (per lab when model.json has scores), the card readable offline; the sha256 check and the other technical facts
    under "Model details". Both the float and the int8 app."""
    for precision in ("float", "int8"):
        report, _, bundle = browser_runs[precision]
        card = json.loads((bundle / "model.json").read_text())
        model = card["model"]
        page = report["offline_page"]
        expected = f"Model {model['name']} · bmcell {card['bmcell_version']}"
        if model["model_card"]:
            expected += " · model card"
            assert page["card_link"].endswith(f"/bmcell_model/{model['model_card']}")
            assert f"/bmcell_model/{model['model_card']}" in report["cached"]
        else:
            assert page["card_link"] is None
        assert page["model"] == expected, page["model"]
        assert (page["precision"], page["scores"]) == expected_header(model), page
        assert "sha256" not in page["model"]
        assert f"sha256 {card['sha256'][:12]}… verified" in page["details"]
        assert "onnxruntime-web" in page["details"] and card["name"] in page["details"]


def test_web_demo_shows_per_lab_scores_and_the_precision_in_words(browser_runs):
    """model.json's scores, per lab, largest set first, malformed entries ignored; precision_words as given. An
    older model.json (no scores, no precision_words): the overall accuracy and words for its precision."""
    variants, _, bundle = browser_runs["confidence"]
    page = variants["calibrated"]["page"]
    assert page["scores"] == SCORES_LINE and page["precision"] == RELEASE_WORDS, page
    model = json.loads((bundle / "model.json").read_text())["model"]
    page = variants["defaults"]["page"]
    assert page["precision"] == "compact 8-bit version", page
    assert page["scores"] == expected_header(model | {"scores": None})[1] != "", page


def assert_fits_a_phone(card: dict) -> None:
    """The model card dialog at a 390 px viewport: nothing outside a table's scrolling box wider than the screen."""
    assert card["viewport"] == 390 and card["page_width"] <= 390, card
    assert card["dialog"]["left"] >= 0 and card["dialog"]["right"] <= 390, card["dialog"]
    assert card["dialog"]["scroll_width"] <= card["dialog"]["client_width"], card["dialog"]
    assert card["rightmost"] <= 390, card["rightmost"]
    assert all(table["right"] <= 390 for table in card["tables"]), card["tables"]


def test_web_demo_renders_the_model_card_as_html_within_a_phone_screen(browser_runs):
    """The released model's card (when it has one) and a crafted one: headings, paragraphs, lists and tables as HTML
    (no <pre>, no Markdown marks left), wide tables scrolling in their own box, the dialog within 390 px; only
    http(s) links become links (new tab, rel=noopener) and HTML in the card stays text."""
    report, _, bundle = browser_runs["float"]
    model = json.loads((bundle / "model.json").read_text())["model"]
    if model["model_card"]:
        markdown = (bundle / model["model_card"]).read_text(encoding="utf-8")
        card = report["model_card"]
        headings = [re.sub(r"[*`]", "", line.lstrip("#").strip()) for line in markdown.splitlines()
                    if re.match(r"#{1,4}\s", line)]
        assert card["headings"] == headings, card["headings"]
        assert card["tags"].get("table", 0) == len(re.findall(r"(?m)^\|(\s*:?-+:?\s*\|)+\s*$", markdown))
        assert "pre" not in card["tags"] and "**" not in card["text"] and "|---" not in card["text"], card["tags"]
        assert_fits_a_phone(card)
        assert (ARTIFACTS / "card-phone.png").stat().st_size > 10_000

    crafted = browser_runs["confidence"][0]["crafted_card"]["model_card"]
    assert crafted["headings"] == CRAFTED_HEADINGS
    tags = crafted["tags"]
    for tag, count in {"h2": 1, "h3": 1, "h4": 1, "h5": 1, "table": 1, "th": 8, "td": 8, "ul": 1, "li": 2,
                       "strong": 2, "em": 1, "code": 1, "a": 1}.items():
        assert tags.get(tag) == count, (tag, tags)
    assert "pre" not in tags and "img" not in tags and crafted["injected"] is None, tags
    assert crafted["links"] == [{"text": "safe link", "href": "https://example.org/card", "rel": "noopener",
                                 "target": "_blank"}]
    text = crafted["text"]
    assert "unsafe link" in text and "javascript:" not in text and '<img src=x onerror="window.injected=2">' in text
    assert "**" not in text and "`" not in text and "|---" not in text
    assert_fits_a_phone(crafted)
    assert crafted["tables"][0]["scroll_width"] > crafted["tables"][0]["client_width"]  # it scrolls, within 390 px


MAIN_SCREEN = ("model", "precision", "scores", "labs", "adapted", "flags", "route", "status", "offline", "answer",
               "timing", "novelty", "note", "top-heading", "top", "caption", "batch")
JARGON = ("(int8)", "(fp32)", "top-1", "validation split", "validation images", "calibrated probability")


def answer_pages(browser_runs) -> list[dict]:
    """What the page showed after each classification: float and int8 apps, and the calibrated variants."""
    variants = browser_runs["confidence"][0]
    runs = [browser_runs["float"][0], browser_runs["int8"][0], variants["calibrated"], variants["defaults"]]
    return [answer["page"] for run in runs for answer in run["images"].values()]


def test_web_demo_main_screen_speaks_plainly_with_the_answer_under_the_pickers(browser_runs):
    """No jargon on the main screen (precision codes, "top-1", "validation split", "calibrated probability"); after a
    classification the answer comes right under the pickers (no status line repeating it, the offline line further
    down); no brackets nested after a class name ("((" or ") (")."""
    pages = answer_pages(browser_runs)
    pages += [browser_runs["float"][0]["first_page"], browser_runs["int8"][0]["offline_page"]]
    for page in pages:
        screen = "\n".join(page[key] for key in MAIN_SCREEN)
        assert not [word for word in JARGON if word in screen], screen
    for page in answer_pages(browser_runs):
        order = page["order"]
        assert page["status"] == "" and order[:2] == ["pick", "answer"], order
        assert order.index("offline") > order.index("top"), order
        for key in ("answer", "top", "note"):
            assert "((" not in page[key] and ") (" not in page[key] and ")(" not in page[key], page[key]


def test_web_demo_without_the_model_block_still_runs(browser_runs):
    """A model.json from an older export (no "model" block, no bmcell_version): the file name as the version line,
    plain class labels, no card link."""
    variants, expected, _ = browser_runs["confidence"]
    older = variants["no_model_block"]
    assert older["error"] is None
    assert older["page"]["model"] == "Model onnx-fp32" and older["page"]["card_link"] is None
    assert older["page"]["precision"] == older["page"]["scores"] == ""
    answer = older["images"][str(expected["sure"])]
    # a class, or "uncertain" naming the most probable one (this picture is not a cell: near the threshold)
    assert "error" not in answer and answer["top"][0]["label"] in answer["page"]["answer"]


def test_web_demo_lists_every_class_with_full_names_and_times_each_run(browser_run):
    """Every class, most probable first, abbreviations with their full names, tiny probabilities as "<0.1 %"; the
    time of the classification; a gallery picker without `capture` and a separate camera button with it."""
    report, images, bundle = browser_run
    card = json.loads((bundle / "model.json").read_text())
    names = card["model"]["class_names"]
    for path in images.values():
        answer = report["images"][str(path)]
        lines = [line for line in answer["page"]["top"].splitlines() if line.strip()]
        assert len(lines) == len(card["classes"]), lines
        for line, entry in zip(lines, answer["top"]):
            label, p = entry["label"], entry["probability"]
            assert line.startswith(label), (line, label)
            if label in names:
                assert names[label] in line, line
            shown = line.rsplit(" ", 2)[-2]
            if 100 * p < 0.05:
                assert shown == "<0.1", line
            else:
                assert abs(float(shown) - 100 * p) <= 0.05 + 1e-9, line
        assert answer["top"] == sorted(answer["top"], key=lambda entry: -entry["probability"])
        assert re.fullmatch(r"Classified in \d+ ms on this device \(reading the picture \d+ ms, resizing \d+ ms, "
                            r"model \d+ ms\)\.", answer["page"]["timing"]), answer["page"]["timing"]
        assert answer["timing"]["model_ms"] > 0 and answer["timing"]["total_ms"] >= answer["timing"]["model_ms"]
    inputs = {entry["id"]: entry for entry in report["page"]["inputs"]}
    assert inputs["file"]["capture"] is None and inputs["camera"]["capture"] == "environment"


def test_web_demo_shows_only_the_latest_pictures_result(browser_runs):
    """A large picture chosen, then at once a small one: the large one's run ends last and is dropped; the page shows
    the small one's answer and crop."""
    race, files, bundle = browser_runs["race"]
    outcomes = {entry["file"]: entry["outcome"] for entry in race["runs"]}
    assert outcomes == {"large.jpg": "dropped", "wide.png": "shown"}, race["runs"]
    assert race["last"]["file"] == "wide.png" and race["page"]["caption"].startswith("wide.png:")
    expected = python_probabilities(bundle, Path(files["small"]))
    np.testing.assert_allclose(race["last"]["probabilities"], expected, atol=1e-4)


def test_web_demo_shows_the_centre_square_the_model_sees(browser_runs):
    """The preview of a 480x240 picture is its centre square as the model gets it: a square canvas of the model's
    input size whose pixels are Python's resize + centre crop, shown square on screen; the caption says so."""
    race, files, bundle = browser_runs["race"]
    size = json.loads((bundle / "model.json").read_text())["image_size"]
    preview = race["preview"]
    assert preview["width"] == preview["height"] == size and preview["visible"]
    assert abs(preview["shown"]["width"] - preview["shown"]["height"]) < 1, preview["shown"]
    shown = np.array(preview["chw"], dtype=np.uint8).reshape(3, size, size)
    assert np.array_equal(shown, python_unit_bytes(Path(files["small"]), size))
    assert "centre 240 × 240 px square of the 480 × 240 px picture" in race["page"]["caption"]


def test_web_demo_picks_up_a_newly_installed_model_online(browser_runs):
    """With the int8 app cached, the float model installed in its place: the next online reload uses it, downloads
    it once and not the runtime again, is ready offline again, and keeps only the new model in the cache."""
    report, site = browser_runs["sites"]["int8"]
    _, float_site = browser_runs["sites"]["float"]
    swap = report["swap_model"]
    assert swap["model"] == "onnx-fp32" and swap["offline"].startswith("✓ Ready offline")
    sizes = runtime_and_model_bytes(float_site)
    model_path = next(path for path in sizes if path.startswith("/bmcell_model/"))
    assert swap["bytes"][model_path]["bytes"] == sizes[model_path], swap["bytes"]
    assert all(swap["bytes"].get(path, {"bytes": 0})["bytes"] == 0 for path in sizes if path != model_path)
    card = json.loads((float_site / "bmcell_model" / "model.json").read_text())
    models = [url for url in swap["cached"] if url.startswith(model_path)]
    assert models == [f"{model_path}?v={card['sha256'][:16]}"], swap["cached"]


# The labs line, the adapted line and the route line of the model panel (issue 21): model.json's "labs" (entries the
# page must ignore or show by name only mixed in) and "adapted_to".
LABS = [{"name": "pbc", "cells": 1200}, {"name": "chula", "cells": 345}, {"name": "", "cells": 3},
        {"name": "scanner2", "cells": None}, {"name": "odd", "cells": 2.5}, "junk", {"cells": 10}]
LABS_LINE = "Trained on cells from: pbc (1,200 cells), chula (345 cells), scanner2, odd."
ADAPTED = {"lab": "mylab", "cells": 100, "accuracy": 0.87, "interval": [0.79, 0.92]}
ADAPTED_LINE = ("Adapted to mylab with 100 of its own labelled cells: about 87 % right on them (95 % interval "
                "79–92 %).")
LAB_JARGON = ("ATC", "logit", "OOD", "out-of-distribution", "softmax", "temperature", *JARGON)
BATCH_PHOTOS = 24  # over lab_check's min_images (20)


def batch_photos(synthetic_data: Path) -> list[Path]:
    """BATCH_PHOTOS synthetic cells spread over every class."""
    everything = sorted(p for p in synthetic_data.rglob("*.jpg"))
    photos = everything[::len(everything) // BATCH_PHOTOS][:BATCH_PHOTOS]
    assert len(photos) == BATCH_PHOTOS
    return photos


def threshold_between(values: list[float], low: float, high: float) -> tuple[float, float]:
    """A threshold in the widest gap between the sorted values (top probabilities, novelty scores) from quantile low
    to high, and that gap."""
    ranked = sorted(values)
    i = max(range(int(low * len(ranked)), int(high * len(ranked))), key=lambda i: ranked[i + 1] - ranked[i])
    return (ranked[i] + ranked[i + 1]) / 2, ranked[i + 1] - ranked[i]


def lab_check_thresholds(bundle: Path, photos: list[Path]) -> tuple[float, float, float]:
    """A temperature and the confidence and lab-check thresholds at which the photos' calibrated top probabilities
    are split about 1/3 : 2/3 and 2/3 : 1/3, each threshold at least 5e-3 from every photo (50 x the browser vs
    Python tolerance). The temperature is the first of 25 from 1.5 down to 0.01 (a geometric grid: a coarser one
    missed the narrow band that works for some trainings) that spreads them so (a tiny model's logits barely differ:
    its probabilities are all near 1 / classes)."""
    log_p = np.array([np.log(python_probabilities(bundle, path, 1.0)) for path in photos])  # logits + a constant
    for temperature in np.geomspace(1.5, 0.01, 25):
        scaled = log_p / temperature
        exps = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        tops = list((exps.max(axis=1) / exps.sum(axis=1)).astype(float))
        answer, answer_gap = threshold_between(tops, 0.2, 0.45)
        check, check_gap = threshold_between(tops, 0.55, 0.8)
        if min(answer_gap, check_gap) > 5e-3:
            return float(temperature), answer, check
    raise AssertionError(f"no temperature spreads the photos' top probabilities: {log_p}")


# model.json's "novelty" block as export/apps.py writes it, but output_index (the number of classes) and threshold.
NOVELTY_BLOCK = {"threshold": 1.0, "coreml_output": "novelty", "flagged_on_validation": 0.05,
                 "rule": "novelty = cosine distance of the pooled features to the nearest training image / radius; at "
                         "or above threshold: does not look like a cell this model knows"}
UNUSABLE_NOVELTY = {  # name: (model.json "novelty" made from a usable block and the classes, words its refusal names)
    "threshold_zero": (lambda block, classes: block | {"threshold": 0}, "threshold 0 (must be a finite number > 0)"),
    "threshold_negative": (lambda block, classes: block | {"threshold": -1.0}, "threshold -1"),
    "threshold_text": (lambda block, classes: block | {"threshold": "1.0"}, 'threshold "1.0"'),
    "threshold_missing": (lambda block, classes: {k: v for k, v in block.items() if k != "threshold"}, "threshold"),
    "index_before_the_end": (lambda block, classes: block | {"output_index": classes - 1}, "output_index"),
    "index_text": (lambda block, classes: block | {"output_index": str(classes)}, "output_index"),
    "index_missing": (lambda block, classes: {k: v for k, v in block.items() if k != "output_index"}, "output_index"),
    "not_an_object": (lambda block, classes: 5, "novelty must be null or an object"),
}


def graft_novelty(source: Path, target: Path, classes: int) -> None:
    """A copy of an ONNX classifier whose output is its class logits, then a stand-in novelty score (twice the mean
    input value: 1 for a mid-grey picture), declared as C + 1 values: the contract of model.json's novelty block,
    for a model exported before the export computed the real score."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph, output = model.graph, model.graph.output[0]
    scores = f"{output.name}_classes"
    for node in graph.node:  # the node that made the output now makes the class scores
        node.output[:] = [scores if name == output.name else name for name in node.output]
        node.input[:] = [scores if name == output.name else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "novelty_scale"))
    graph.node.extend([
        helper.make_node("ReduceMean", [graph.input[0].name], ["novelty_mean"], keepdims=1),  # over every axis
        helper.make_node("Flatten", ["novelty_mean"], ["novelty_column"], axis=1),  # 1 x 1
        helper.make_node("Mul", ["novelty_column", "novelty_scale"], ["novelty_score"]),
        helper.make_node("Concat", [scores, "novelty_score"], [output.name], axis=1),
    ])
    output.type.tensor_type.shape.dim[-1].dim_value = classes + 1
    onnx.save_model(model, str(target))


def novelty_card(bundle: Path, card: dict) -> dict:
    """model.json for a model that outputs a novelty score after its class scores: card itself when the export wrote
    a novelty block, else card for model-novelty.onnx, the bundle's model with a stand-in score (graft_novelty)."""
    if card.get("novelty"):
        return card
    classes = len(card["classes"])
    grafted = bundle / "model-novelty.onnx"
    graft_novelty(bundle / card["file"], grafted, classes)
    data = grafted.read_bytes()
    return card | {"file": grafted.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                   "novelty": NOVELTY_BLOCK | {"output_index": classes}}


def novelty_variants(bundle: Path, new: dict, photos: list[Path], root: Path) -> tuple[list[dict], dict]:
    """The browser jobs for model.json's novelty block, and what they should do. "novelty": new (its confidence and
    lab check) for a model that outputs a novelty score (novelty_card), its threshold in the widest gap between the
    batch photos' scores (the export's own are 0 for its training images, as most batch photos are), given the least
    and the most novel photo, then every batch photo;
    "novelty_mismatch": a novelty block with a model that has no novelty output (or, once the export writes one, the
    reverse); one job per UNUSABLE_NOVELTY block."""
    card = novelty_card(bundle, new)
    scores = {str(path): python_outputs(bundle, path, card)[1] for path in photos}
    threshold, gap = threshold_between(list(scores.values()), 0, 1 - 1 / len(scores))  # some photos either side
    assert gap > 4 * NOVELTY_TOLERANCE, scores  # far from every photo compared with browser vs Python
    card = card | {"novelty": card["novelty"] | {"threshold": threshold}}
    classes = len(card["classes"])
    if new.get("novelty"):
        mismatched = {key: value for key, value in new.items() if key != "novelty"}
        mismatch_words = (f"output has {classes + 1} values", f"lists {classes} classes and no novelty score")
    else:
        mismatched = new | {"novelty": card["novelty"]}
        mismatch_words = (f"output has {classes} values", f"declares novelty at index {classes}")
    known, flagged = min(scores, key=scores.get), max(scores, key=scores.get)
    variants = [{"name": "novelty", "model_json": card, "images": [known, flagged],
                 "batches": [{"name": "all", "files": [str(path) for path in photos]}],
                 "screenshot": str(root / "unknown-phone.png")},
                {"name": "novelty_mismatch", "model_json": mismatched}]
    variants += [{"name": f"novelty_{name}", "model_json": new | {"novelty": make(card["novelty"], classes)}}
                 for name, (make, _) in UNUSABLE_NOVELTY.items()]
    return variants, {"card": card, "scores": scores, "known": known, "flagged": flagged,
                      "mismatch_words": mismatch_words}


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory, tiny_run, synthetic_data):
    """A tiny model (the session's tiny run, exported here without int8 or parity: quick) in a copy of web_demo,
    in headless Chromium with model.json replaced: with labs, adapted_to and a confidence block and lab_check whose
    thresholds sit between the batch photos' calibrated top probabilities, given 5 photos, then BATCH_PHOTOS photos
    and a file that is not a picture (the screenshot shows this batch's result); with adapted_to and lab_check null;
    as an older export has it (none of the three); with an unusable lab_check; with novelty blocks
    (novelty_variants); as exported, on photographs that are not cells, once the export writes a novelty block."""
    require_toolchain()
    root = tmp_path_factory.mktemp("web-lab")
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--target", "web", "--quantize", "none", "--no-parity",
                                      "--out", str(root / "export")])
    assert result.exit_code == 0, result.output
    site = site_with(root, "web_lab", root / "export", "float")
    bundle = site / "bmcell_model"
    card = json.loads((bundle / "model.json").read_text())
    photos = batch_photos(synthetic_data)
    temperature, answer_threshold, check_threshold = lab_check_thresholds(bundle, photos)
    tops = {str(path): float(python_probabilities(bundle, path, temperature).max()) for path in photos}
    confidence = {"temperature": temperature, "threshold": answer_threshold}
    lab_check = {"threshold": check_threshold, "validation_accuracy": 0.914, "min_images": 20}
    not_a_picture = root / "notes.jpg"
    not_a_picture.write_text("not a picture")
    new = card | {"confidence": confidence, "lab_check": lab_check,
                  "model": card["model"] | {"labs": LABS, "adapted_to": ADAPTED}}
    older = {key: value for key, value in card.items() if key != "lab_check"} | {
        "confidence": confidence,
        "model": {key: value for key, value in card["model"].items() if key not in ("labs", "adapted_to")}}
    variants = [
        {"name": "lab", "model_json": new, "screenshot": str(root / "batch-phone.png"),
         "batches": [{"name": "few", "files": [str(p) for p in photos[:5]]},
                     {"name": "all", "files": [str(p) for p in photos[:10]] + [str(not_a_picture)] +
                      [str(p) for p in photos[10:]]}]},
        {"name": "not_adapted", "model_json": new | {"lab_check": None,
                                                     "model": new["model"] | {"adapted_to": None}}},
        {"name": "older", "model_json": older},
        {"name": "unusable_check", "model_json": new | {"lab_check": {"threshold": 1.5}}},
    ]
    more, novelty = novelty_variants(bundle, new, photos, root)
    more += exported_novelty_variants(bundle, {})
    report = run_browser(site, {"variants_only": True, "variants": variants + more})
    ARTIFACTS.mkdir(exist_ok=True)
    for screenshot in ("batch-phone.png", "unknown-phone.png"):
        shutil.copy(root / screenshot, ARTIFACTS / screenshot)
    exported = new.get("novelty")  # the lab variant's: the export's own block, once it writes one
    flagged = {path: bool(exported) and novelty["scores"][path] >= exported["threshold"] for path in tops}
    return {"variants": report["variants"], "tops": tops, "confidence": confidence, "lab_check": lab_check,
            "photos": photos, "flagged": flagged, "novelty": novelty, "bundle": bundle,
            "exported_novelty": bool(exported),
            "exported": (report["variants"].get("exported_novelty"), bundle, {})}


def test_web_demo_names_the_labs_the_adaptation_and_how_to_adapt(lab_runs):
    """The header says which labs' cells the model was trained on (malformed entries dropped, unknown counts left
    out), the lab it was adapted to with how right it was there and its 95 % interval, and how to adapt it to your
    lab (the commands as code), in plain words; without adapted_to only the labs and the route; an older model.json
    (none of the new fields) the route line only, and no batch check (the reason under "Model details")."""
    variants = lab_runs["variants"]
    for name in ("lab", "not_adapted", "older", "unusable_check", "novelty"):
        assert variants[name]["error"] is None, (name, variants[name]["error"])
    page = variants["lab"]["page"]
    assert page["labs"] == LABS_LINE and page["adapted"] == ADAPTED_LINE, page
    assert page["route"] == ROUTE_LINE and page["route_code"] == [FINETUNE, CHECK], page
    screen = "\n".join(page[key] for key in ("labs", "adapted", "route", "batch"))
    assert not [word for word in LAB_JARGON if word in screen], screen
    assert page["batch_enabled"] and "Check a batch of my photos" in page["batch"], page["batch"]
    assert "accuracy check for a batch of photos" in page["details"] and "91.4 %" in page["details"]

    not_adapted = variants["not_adapted"]["page"]
    assert (not_adapted["labs"], not_adapted["adapted"], not_adapted["route"]) == (LABS_LINE, "", ROUTE_LINE)
    for name in ("not_adapted", "older", "unusable_check"):
        shown = variants[name]["page"]
        assert shown["batch"] == "" and not shown["batch_enabled"], (name, shown["batch"])
        assert "no batch check" in shown["details"] and "re-export it with this version of bmcell" in shown["details"]
    older = variants["older"]["page"]
    assert (older["labs"], older["adapted"], older["route"]) == ("", "", ROUTE_LINE), older
    assert "carries no accuracy check" in older["details"]
    assert "unusable" in variants["unusable_check"]["page"]["details"]
    if not lab_runs["exported_novelty"]:  # an export without a novelty block: no line about it but in the details
        for name in ("lab", "older"):
            shown = variants[name]["page"]
            assert shown["flags"] == "" and "no check for pictures unlike the training cells" in shown["details"]


def test_web_demo_estimates_the_accuracy_on_a_batch_of_photos(lab_runs):
    """"Check a batch of my photos" with BATCH_PHOTOS photos and a text file: each photo through the single-photo
    path (top probabilities as Python's softmax(logits / temperature)), progress "i / n" photo by photo with the page
    drawing frames meanwhile, the file it could not read named, the share it would answer (top >= the confidence
    threshold, and not flagged by the export's novelty block when it writes one) and the estimated accuracy equal to
    the share Python computes from the same model's logits (top >= lab_check's threshold), with the sentence on its
    limits; under min_images photos no estimate."""
    batch = lab_runs["variants"]["lab"]["batches"]["all"]
    summary, tops = batch["summary"], lab_runs["tops"]
    files = BATCH_PHOTOS + 1
    assert summary["files"] == files and summary["read"] == BATCH_PHOTOS
    assert [entry["file"] for entry in summary["unread"]] == ["notes.jpg"], summary["unread"]
    assert "not an image" in summary["unread"][0]["error"]
    browser_tops = {entry["file"]: entry["top"] for entry in summary["photos"]}
    for path, top in tops.items():
        assert abs(browser_tops[Path(path).name] - top) < 1e-4, (path, browser_tops[Path(path).name], top)
    threshold, flagged = lab_runs["lab_check"]["threshold"], lab_runs["flagged"]
    expected = sum(top >= threshold for top in tops.values()) / BATCH_PHOTOS
    answer_threshold = lab_runs["confidence"]["threshold"]
    named = sum(top >= answer_threshold and not flagged[path] for path, top in tops.items())
    uncertain = sum(top < answer_threshold and not flagged[path] for path, top in tops.items())
    answered = named / BATCH_PHOTOS
    assert summary["estimate"] == expected and summary["answered"] == answered, (summary, expected, answered)
    assert (summary["named"], summary["uncertain"]) == (named, uncertain), summary
    assert 0 < expected < 1 and 0 < answered < 1  # the thresholds split the photos: neither share is trivially 0 or 1

    assert batch["progress"] == [f"Checking your photos: {i} / {files}" for i in range(1, files + 1)], batch["progress"]
    assert batch["frames"] > 1, batch["frames"]  # the page kept drawing while it worked
    text = batch["page"]["batch-result"]
    assert f"Estimated accuracy on these photos: about {math.floor(100 * expected + 0.5)} % or lower." in text, text
    assert f"Read {BATCH_PHOTOS} of {files} photos; could not read: notes.jpg." in text, text
    assert (f"would name a cell type for {named} of them ({math.floor(100 * answered + 0.5)} %); "
            f"{uncertain} would be “uncertain — check by eye”") in text, text
    if not lab_runs["exported_novelty"]:
        assert summary["unknown"] is None and UNKNOWN_CELL not in text, summary
    for words in ("confidence alone", "too high", "bmcell finetune", "bmcell check", "91 %"):
        assert words in text, (words, text)
    assert not [word for word in LAB_JARGON if word in text], text
    assert batch["page"]["batch-status"] == ""
    assert (ARTIFACTS / "batch-phone.png").stat().st_size > 10_000

    few = lab_runs["variants"]["lab"]["batches"]["few"]
    assert few["summary"]["read"] == 5 and few["summary"]["estimate"] is None, few["summary"]
    assert "Choose at least 20 photos for an estimate" in few["page"]["batch-result"], few["page"]
    assert "Estimated accuracy" not in few["page"]["batch-result"]


def test_web_demo_says_a_picture_does_not_look_like_a_cell_it_knows(lab_runs):
    """A model that outputs its class scores, then a novelty score (the export's, or until it writes one a stand-in
    grafted on the tiny model), with model.json's novelty threshold between the batch photos' scores: the page splits
    the output as the contract says (probabilities from the class scores alone, as Python's; the score as Python's),
    flags the most novel photo (assert_flagged) and gives the least novel one its confidence level, with how unlike
    the training cells it is; the header says that the model flags pictures unlike its training cells, the details
    from which score and how often on its own test cells."""
    variant, novelty, bundle = lab_runs["variants"]["novelty"], lab_runs["novelty"], lab_runs["bundle"]
    card = novelty["card"]
    threshold, classes = card["novelty"]["threshold"], len(card["classes"])
    flagged_share = 100 * card["novelty"]["flagged_on_validation"]
    page = variant["page"]
    assert page["flags"] == NOVELTY_PANEL_LINE, page["flags"]
    assert (f"at least {threshold:.2f} × the usual distance ({flagged_share:.1f} % of its own test cells are flagged "
            "too)") in page["details"], page["details"]
    for path in (novelty["known"], novelty["flagged"]):
        answer = variant["images"][path]
        assert "error" not in answer, answer["error"]
        np.testing.assert_allclose(answer["probabilities"], python_probabilities(bundle, Path(path), card=card),
                                   atol=1e-4, err_msg=path)
    assert_flagged(variant["images"][novelty["flagged"]], novelty["scores"][novelty["flagged"]], threshold, classes)

    known = variant["images"][novelty["known"]]
    assert abs(known["novelty"] - novelty["scores"][novelty["known"]]) < NOVELTY_TOLERANCE, known["novelty"]
    assert known["level"] in ("confident", "low", "uncertain") and known["unknown"] is False, known
    assert known["uncertain"] == (max(known["probabilities"]) < card["confidence"]["threshold"]), known
    assert known["page"]["answer_class"] == known["level"] and UNKNOWN_CELL not in known["page"]["answer"]
    assert known["page"]["novelty"] == novelty_line(known["novelty"], threshold), known["page"]["novelty"]
    screen = "\n".join(known["page"][key] for key in MAIN_SCREEN)
    assert not [word for word in LAB_JARGON if word in screen], screen


def test_web_demo_counts_the_batch_photos_that_do_not_look_like_known_cells(lab_runs):
    """"Check a batch of my photos" with a novelty block: how many photos do not look like a cell this model knows
    (those Python's scores put at or above the threshold), beside the share of its own test cells flagged; those are
    neither named nor "uncertain"."""
    novelty = lab_runs["novelty"]
    batch = lab_runs["variants"]["novelty"]["batches"]["all"]
    summary, threshold = batch["summary"], novelty["card"]["novelty"]["threshold"]
    flagged = {Path(path).name for path, score in novelty["scores"].items() if score >= threshold}
    assert {photo["file"] for photo in summary["photos"] if photo["level"] == "unknown"} == flagged, summary["photos"]
    assert summary["unknown"] == len(flagged) and 0 < len(flagged) < BATCH_PHOTOS, summary
    assert summary["named"] + summary["uncertain"] + summary["unknown"] == summary["read"] == BATCH_PHOTOS, summary
    text = batch["page"]["batch-result"]
    share = math.floor(100 * len(flagged) / BATCH_PHOTOS + 0.5)
    own = math.floor(100 * novelty["card"]["novelty"]["flagged_on_validation"] + 0.5)
    assert (f"{len(flagged)} of the {BATCH_PHOTOS} photos do not look like a cell this model knows ({share} %; among "
            f"its own test cells: {own} %).") in text, text
    assert f"{summary['uncertain']} would be “uncertain — check by eye”" in text, text
    assert not [word for word in LAB_JARGON if word in text], text
    assert (ARTIFACTS / "unknown-phone.png").stat().st_size > 10_000


@pytest.mark.parametrize("name", [*sorted(UNUSABLE_NOVELTY), "output_length"])
def test_web_demo_refuses_an_unusable_novelty_block(lab_runs, name):
    """A novelty threshold that is not a finite number > 0, an output_index other than the number of classes, a
    block that is not an object, and a model whose output length is not what model.json declares (a novelty block
    for a model that outputs its class scores only, or once the export writes one, the reverse) are refused on
    screen."""
    variants = lab_runs["variants"]
    if name == "output_length":
        assert_refused(variants["novelty_mismatch"], *lab_runs["novelty"]["mismatch_words"])
    else:
        assert_refused(variants[f"novelty_{name}"], UNUSABLE_NOVELTY[name][1])

"""The web app in headless Chromium: the bytes a first visit and an online reload download (the runtime and the model
once, then nothing), the "ready offline" line, the version line and the model card; then offline: its preprocessing
against the contract vectors, its predictions against onnxruntime in Python, every class with full names, the time
of each classification, the centre square the model sees, a large picture overtaken by a small one (only the latest
result shown) and its error message for a file that is not an image; then, with model.json's "confidence" block
replaced, its calibrated probabilities, its "uncertain — check by eye" answer below the threshold, and its refusal
of an unusable block; and a model.json without the "model" block."""

from __future__ import annotations

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

from bmcell.cli.main import app
from bmcell.core.config import TrainConfig
from bmcell.core.engine import fit
from bmcell.jobs.release import DEFAULT_MODEL
from export.apps import install_bundle
from tests.conftest import PBC, TINY, released_data_folder
from tests.contract.preprocessing import GOLDEN, SIZES, python_unit_bytes, reference_images, tensor_facts

WEB_DEMO = Path(__file__).resolve().parents[1] / "web_demo"
APP_FILES = ("index.html", "style.css", "app.js", "preprocess.js", "assets.js", "sw.js", "manifest.webmanifest",
             "icon.svg", "package.json", "tools")
ARTIFACTS = WEB_DEMO / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
RELEASED = (DEFAULT_MODEL / "best.json").is_file()


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


def export_model(root: Path, synthetic_data: Path) -> Path:
    """Export onnx-fp32 and onnx-int8 of the released model (its training data for the golden set and calibration),
    or of a tiny model trained here when there is none; returns the export folder."""
    released_data = released_data_folder(root) if RELEASED else None
    if released_data is not None:
        source = ["--data", str(released_data)]
    else:
        fit(TrainConfig(**TINY, out=str(root / "run"), data=str(synthetic_data), epochs=1))
        source = [str(root / "run")]
    result = CliRunner().invoke(app, ["export", *source, "--target", "web", "--quantize", "all", "--calib", "32",
                                      "--no-parity", "--out", str(root / "export")])
    assert result.exit_code == 0, result.output
    return root / "export"


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
}


def confidence_variants(bundle: Path, images: dict[str, Path], root: Path) -> tuple[list[dict], dict]:
    """The browser jobs that replace model.json's confidence block, and what the calibrated one should do: at
    CONFIDENCE_TEMPERATURE, a threshold halfway between the most and the least confident reference image's top
    probability, so the first is answered and the second is "uncertain"."""
    card = json.loads((bundle / "model.json").read_text())
    tops = {name: float(python_probabilities(bundle, path, CONFIDENCE_TEMPERATURE).max())
            for name, path in images.items()}
    sure, unsure = max(tops, key=tops.get), min(tops, key=tops.get)
    threshold = (tops[sure] + tops[unsure]) / 2
    assert tops[sure] - tops[unsure] > 2e-3, tops  # far from the threshold compared with browser vs Python (1e-4)
    calibrated = {"temperature": CONFIDENCE_TEMPERATURE, "threshold": threshold, "coverage_target": 0.95,
                  "fitted_on": "validation split (test)",
                  "rule": "probabilities = softmax(logits / temperature); answer the top class only when its "
                          "probability >= threshold, otherwise 'uncertain - check by eye'"}
    variants = [{"name": "calibrated", "model_json": card | {"confidence": calibrated},
                 "images": [str(images[sure]), str(images[unsure])], "screenshot": str(root / "uncertain-phone.png")},
                {"name": "no_confidence", "model_json": card | {"confidence": None}, "images": [str(images[sure])]}]
    variants += [{"name": name, "model_json": card | {"confidence": block}}
                 for name, (block, _) in UNUSABLE_CONFIDENCE.items()]
    older = {key: value for key, value in card.items() if key not in ("model", "bmcell_version")}
    variants.append({"name": "no_model_block", "model_json": older, "images": [str(images[sure])]})
    return variants, {"sure": images[sure], "unsure": images[unsure], "threshold": threshold, "tops": tops}


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


@pytest.fixture(scope="module")
def browser_runs(tmp_path_factory, synthetic_data):
    """The released model (or a tiny one) in copies of web_demo, in headless Chromium: the float model on every
    reference image with the golden tensors, a non-image and a screenshot, then with model.json's confidence block
    replaced (calibrated, null, unusable, no "model" block); the int8 model on the same images. Both count the bytes
    of a first visit and an online reload."""
    reason = missing_toolchain()
    if reason:
        if os.environ.get("BMCELL_REQUIRE_BROWSER"):
            pytest.fail(f"BMCELL_REQUIRE_BROWSER is set but the browser tool chain is incomplete: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    root = tmp_path_factory.mktemp("web")
    export_dir = export_model(root, synthetic_data)
    images = reference_images(PBC if PBC.is_dir() else None)
    bad = root / "notes.jpg"
    bad.write_text("not a picture")
    float_site = site_with(root, "web_float", export_dir, "float")
    variants, expected = confidence_variants(float_site / "bmcell_model", images, root)
    race = race_images(root)
    report = run_browser(float_site, {"images": [str(p) for p in images.values()], "sizes": list(SIZES),
                                      "bad": str(bad), "screenshot": str(root / "offline-phone.png"),
                                      "race": race, "variants": variants})
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(root / "offline-phone.png", ARTIFACTS / "offline-phone.png")
    shutil.copy(root / "uncertain-phone.png", ARTIFACTS / "uncertain-phone.png")
    int8_site = site_with(root, "web_int8", export_dir, "int8")
    int8_report = run_browser(int8_site, {"images": [str(p) for p in images.values()], "sizes": [],
                                          "swap_model": {"site": str(int8_site),
                                                         "bundle": str(float_site / "bmcell_model")}})
    return {"float": (report, images, float_site / "bmcell_model"),
            "int8": (int8_report, images, int8_site / "bmcell_model"),
            "confidence": (report["variants"], expected, float_site / "bmcell_model"),
            "race": (report["race"], race, float_site / "bmcell_model"),
            "sites": {"float": (report, float_site), "int8": (int8_report, int8_site)}}


@pytest.fixture(scope="module")
def browser_run(browser_runs):
    """The float model's browser run: (report, reference images, installed bundle)."""
    return browser_runs["float"]


def python_probabilities(bundle: Path, path: Path, temperature: float | None = None) -> np.ndarray:
    """Softmax of onnxruntime's logits / temperature for the image through the Python preprocessing; by default
    the temperature of the bundle's model.json (1 when its confidence is null)."""
    import onnxruntime as ort

    card = json.loads((bundle / "model.json").read_text())
    if temperature is None:
        temperature = (card.get("confidence") or {}).get("temperature", 1.0)
    session = ort.InferenceSession(str(bundle / card["file"]), providers=["CPUExecutionProvider"])
    tensor = python_unit_bytes(path, card["image_size"]).astype(np.float32) * np.float32(1 / 255)
    logits = session.run(None, {session.get_inputs()[0].name: tensor[None]})[0][0].astype(np.float64) / temperature
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
    assert "not an image" in report["bad"]["error"]
    assert (ARTIFACTS / "offline-phone.png").stat().st_size > 10_000
    confidence = json.loads((bundle / "model.json").read_text())["confidence"]
    assert ("no calibrated confidence" in report["page"]["note"]) == (confidence is None)


def test_web_demo_answers_above_the_threshold_and_is_uncertain_below(browser_runs):
    """model.json's temperature is applied (probabilities as Python's softmax(logits / T)), the image above the
    threshold gets its class as the answer, the one below it "uncertain — check by eye" with the classes secondary."""
    variants, expected, bundle = browser_runs["confidence"]
    calibrated = variants["calibrated"]
    assert calibrated["error"] is None
    assert "calibrated (temperature 1.5)" in calibrated["page"]["details"]
    assert f"{100 * expected['threshold']:.1f} %" in calibrated["page"]["note"]
    for path in (expected["sure"], expected["unsure"]):
        answer = calibrated["images"][str(path)]
        assert "error" not in answer, answer["error"]
        python = python_probabilities(bundle, path, CONFIDENCE_TEMPERATURE)
        np.testing.assert_allclose(answer["probabilities"], python, atol=1e-4, err_msg=str(path))
        assert len(answer["page"]["top"].splitlines()) >= 3  # the class list is still there, under the answer

    sure = calibrated["images"][str(expected["sure"])]
    assert sure["uncertain"] is False and sure["page"]["answer_class"] == "confident"
    assert sure["page"]["answer"].startswith(sure["top"][0]["label"]), sure["page"]
    assert "uncertain" not in sure["page"]["answer"].lower() and "uncertain" not in sure["page"]["status"].lower()
    assert sure["page"]["top_class"] != "secondary"

    unsure = calibrated["images"][str(expected["unsure"])]
    assert unsure["uncertain"] is True and unsure["page"]["answer_class"] == "uncertain"
    assert unsure["page"]["answer"].startswith("uncertain — check by eye"), unsure["page"]
    assert "uncertain" in unsure["page"]["status"]
    assert unsure["page"]["top_class"] == "secondary"
    assert unsure["page"]["top-heading"] == "Class probabilities"
    assert (ARTIFACTS / "uncertain-phone.png").stat().st_size > 10_000


def test_web_demo_without_calibrated_confidence_answers_as_before(browser_runs):
    """confidence: null → temperature 1, never "uncertain", and a note that the model has no calibrated confidence."""
    variants, expected, bundle = browser_runs["confidence"]
    plain = variants["no_confidence"]
    assert plain["error"] is None and "no calibrated confidence" in plain["page"]["note"]
    answer = plain["images"][str(expected["sure"])]
    assert answer["uncertain"] is False and answer["page"]["answer_class"] == "confident"
    np.testing.assert_allclose(answer["probabilities"], python_probabilities(bundle, expected["sure"], 1.0), atol=1e-4)


@pytest.mark.parametrize("name", sorted(UNUSABLE_CONFIDENCE))
def test_web_demo_refuses_an_unusable_confidence_block(browser_runs, name):
    """A temperature that is not a finite number > 0, or a threshold outside [0, 1], is refused on screen."""
    variants, _, _ = browser_runs["confidence"]
    refused = variants[name]
    word = UNUSABLE_CONFIDENCE[name][1]
    assert refused["error"] and word in refused["error"], refused
    page = refused["page"]
    assert page["status_class"] == "error" and word in page["status"] and "refusing" in page["status"], page
    assert page["model"] == "no usable model" and not page["file_enabled"] and page["answer"] == ""


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


INT8_PROBABILITY_TOLERANCE = 4e-2  # ORT Web WASM int8 kernels vs native: 0.025 measured on the 256 px release (rgba.png, not a cell)


def test_int8_model_in_the_browser_matches_python(browser_runs):
    """The int8 model the app installs with --app-precision int8: the browser's probabilities within a quantisation
    step of Python onnxruntime's, and the same top-1 unless the two leading classes are that close."""
    report, images, bundle = browser_runs["int8"]
    assert report["offline_model"] == "onnx-int8"
    for path in images.values():
        answer = report["images"][str(path)]
        assert "error" not in answer, answer["error"]
        expected = python_probabilities(bundle, path)
        np.testing.assert_allclose(answer["probabilities"], expected, atol=INT8_PROBABILITY_TOLERANCE, err_msg=str(path))
        second, first = np.sort(expected)[-2:]
        if first - second > 2 * INT8_PROBABILITY_TOLERANCE:  # a near-tie may flip within the tolerance
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


def test_web_demo_names_the_release_and_links_its_model_card(browser_run):
    """The header: "Model NAME (PRECISION) · bmcell VERSION · X % on its validation images · model card", the card
    readable offline; the sha256 check and the other technical facts under "Model details"."""
    report, _, bundle = browser_run
    card = json.loads((bundle / "model.json").read_text())
    model = card["model"]
    page = report["offline_page"]
    expected = f"Model {model['name']} ({model['precision']}) · bmcell {card['bmcell_version']}"
    accuracy = model["artefact_val_accuracy"] or model["val_accuracy"]
    if accuracy is not None:
        expected += f" · {100 * accuracy:.1f} % on its validation images"
    if model["model_card"]:
        expected += " · model card"
        assert page["card_link"].endswith(f"/bmcell_model/{model['model_card']}")
        assert report["model_card"]["text"] == (bundle / model["model_card"]).read_text(encoding="utf-8")
        assert f"/bmcell_model/{model['model_card']}" in report["cached"]
    else:
        assert page["card_link"] is None
    assert page["model"] == expected, page["model"]
    assert "sha256" not in page["model"]
    assert f"sha256 {card['sha256'][:12]}… verified" in page["details"]
    assert "onnxruntime-web" in page["details"] and card["name"] in page["details"]


def test_web_demo_without_the_model_block_still_runs(browser_runs):
    """A model.json from an older export (no "model" block, no bmcell_version): the file name as the version line,
    plain class labels, no card link."""
    variants, expected, _ = browser_runs["confidence"]
    older = variants["no_model_block"]
    assert older["error"] is None
    assert older["page"]["model"] == "Model onnx-fp32" and older["page"]["card_link"] is None
    answer = older["images"][str(expected["sure"])]
    assert "error" not in answer and answer["page"]["answer"].startswith(answer["top"][0]["label"])


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

"""The web app in headless Chromium, offline: its preprocessing against the golden vectors, its predictions against
onnxruntime in Python, and its error message for a file that is not an image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.config import TrainConfig
from bmcell.engine import fit
from bmcell.release import DEFAULT_MODEL
from tests.conftest import PBC, TINY
from tests.golden.preprocessing import GOLDEN, SIZES, python_unit_bytes, reference_images, tensor_facts

WEB_DEMO = Path(__file__).resolve().parents[1] / "web_demo"
APP_FILES = ("index.html", "style.css", "app.js", "preprocess.js", "sw.js", "manifest.webmanifest", "icon.svg",
             "package.json", "tools")
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


def export_args(root: Path, synthetic_data: Path) -> list[str]:
    """`bmcell export` arguments for the released model (with PBC for its golden set), else a tiny model trained here."""
    if RELEASED and PBC.is_dir():
        return ["--data", str(PBC), "--out", str(root / "export")]
    run = root / "run"
    fit(TrainConfig(**TINY, out=str(run), data=str(synthetic_data), epochs=1))
    return [str(run)]


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory, synthetic_data):
    """Install the released model (or a tiny one) in a copy of web_demo, serve it, run tests/browser.mjs once."""
    reason = missing_toolchain()
    if reason:
        if os.environ.get("BMCELL_REQUIRE_BROWSER"):
            pytest.fail(f"BMCELL_REQUIRE_BROWSER is set but the browser tool chain is incomplete: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    root = tmp_path_factory.mktemp("web")
    site = root / "web_demo"
    site.mkdir()
    for name in APP_FILES:
        (shutil.copytree if (WEB_DEMO / name).is_dir() else shutil.copy)(WEB_DEMO / name, site / name)
    (site / "node_modules").symlink_to(WEB_DEMO / "node_modules")
    subprocess.run(["node", "tools/setup.mjs"], cwd=site, check=True, capture_output=True)
    result = CliRunner().invoke(app, ["export", *export_args(root, synthetic_data), "--target", "web", "--quantize", "none", "--calib", "8",
                                      "--no-parity", "--app", str(site)])
    assert result.exit_code == 0, result.output
    server = subprocess.Popen([sys.executable, "-m", "bmcell", "serve-demo", str(site), "--port", "0", "--host",
                               "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        images = reference_images(PBC if PBC.is_dir() else None)
        bad = root / "notes.jpg"
        bad.write_text("not a picture")
        job = {"url": url, "images": [str(p) for p in images.values()], "sizes": list(SIZES), "bad": str(bad),
               "screenshot": str(root / "offline-phone.png")}
        done = subprocess.run(["node", str(WEB_DEMO / "tests" / "browser.mjs"), json.dumps(job)], cwd=WEB_DEMO,
                              capture_output=True, text=True, timeout=240)
    finally:
        server.terminate()
        server.wait()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "failure" not in report, report["failure"] + "\n" + "\n".join(report["log"])
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(root / "offline-phone.png", ARTIFACTS / "offline-phone.png")
    return report, images, site / "bmcell_model"


def python_probabilities(bundle: Path, path: Path) -> np.ndarray:
    """Softmax of onnxruntime's logits for the image through the Python preprocessing."""
    import onnxruntime as ort

    card = json.loads((bundle / "model.json").read_text())
    session = ort.InferenceSession(str(bundle / card["file"]), providers=["CPUExecutionProvider"])
    tensor = python_unit_bytes(path, card["image_size"]).astype(np.float32) * np.float32(1 / 255)
    logits = session.run(None, {session.get_inputs()[0].name: tensor[None]})[0][0].astype(np.float64)
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
    report, _, _ = browser_run
    assert report["cached"] >= 15 and report["offline_model"] == "onnx-fp32"
    assert max(check_images(browser_run, "generated/")) == 0
    assert "not an image" in report["bad"]["error"]
    assert (ARTIFACTS / "offline-phone.png").stat().st_size > 10_000


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

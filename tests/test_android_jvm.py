"""The Android app's plain-Kotlin files compiled with kotlinc and run on a JVM: its preprocessing against the
contract vectors (tests/contract/preprocessing.json) and the Python reference, bit for bit; its confidence rule, its
novelty rule (model.json's "novelty": pictures unlike every training cell) and the texts its screen shows (the model
header, answers at each confidence level, pictures that do not look like a known cell, probabilities, class names,
failures).

android_demo/app/src/main/java/org/bmcell/demo/PreprocessCore.kt holds all of the app's preprocessing arithmetic
(EXIF orientation, alpha on white, the antialiased resize, centre crop, x 1/255); Preprocessing.kt only decodes with
Android's BitmapFactory and reads the EXIF tag. Here Pillow decodes instead (load_rgb's decoder), and the Kotlin gets
the decoded bytes, so what is compared is exactly the arithmetic after decoding: the crop bytes and the float32
tensor must have the same sha256 as Python's — any change to the resampling fails this test.

Needs a JDK (`java`) and kotlinc (npm package kotlin-compiler; .ci/run installs both and sets BMCELL_KOTLINC and
BMCELL_REQUIRE_KOTLIN=1). Without them the test skips with the reason, unless BMCELL_REQUIRE_KOTLIN is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bmcell.core.data.images import load_rgb
from bmcell.core.data.transforms import unit_transform
from tests.conftest import PBC
from tests.contract.preprocessing import GOLDEN, python_unit_bytes, reference_images
from tests.contract.wording import NOVELTY_PANEL_LINE, ROUTE_LINE, UNKNOWN_CELL, UNKNOWN_CELL_WHY, novelty_line

ROOT = Path(__file__).resolve().parents[1]
KOTLIN = ROOT / "android_demo/app/src/main/java/org/bmcell/demo"
SOURCES = [KOTLIN / "PreprocessCore.kt", KOTLIN / "Confidence.kt", KOTLIN / "Novelty.kt", KOTLIN / "Messages.kt"]
HARNESS = ROOT / "android_demo/app/src/test/jvm/ContractCheck.kt"
MAIN_CLASS = "org.bmcell.demo.ContractCheckKt"

# Pictures the contract file does not hold, compared with Python computed here: (width, height, S). Strong shrinks
# (300x700 → 96 is where the app's former floating-point resize was one grey level off on 15 % of the pixels, issue
# 14), a 12-megapixel photo, enlargements, one axis only, no resize at all, odd sizes.
SYNTHETIC = [(300, 700, 96), (700, 300, 96), (2000, 1500, 224), (4000, 3000, 256), (80, 70, 256), (257, 256, 256),
             (256, 300, 256), (256, 256, 256), (1000, 999, 64), (37, 1000, 64), (361, 363, 256), (5, 3, 7)]


def kotlinc() -> str | None:
    """BMCELL_KOTLINC, else kotlinc on PATH."""
    return os.environ.get("BMCELL_KOTLINC") or shutil.which("kotlinc")


def missing_toolchain() -> str | None:
    """Why the JVM test cannot run here, or None."""
    if shutil.which("java") is None:
        return "java is not installed (apt-get install openjdk-17-jdk-headless)"
    compiler = kotlinc()
    if compiler is None or not Path(compiler).exists() and shutil.which(compiler) is None:
        return "kotlinc is not installed (npm install kotlin-compiler, then set BMCELL_KOTLINC or put it on PATH)"
    return None


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    """The plain-Kotlin files and ContractCheck.kt compiled once into a jar (kotlinc takes ~20-40 s)."""
    reason = missing_toolchain()
    if reason is not None:
        if os.environ.get("BMCELL_REQUIRE_KOTLIN"):
            pytest.fail(f"BMCELL_REQUIRE_KOTLIN is set but the Kotlin tool chain is incomplete: {reason}")
        pytest.skip(f"Android JVM test skipped: {reason}")
    jar = tmp_path_factory.mktemp("kotlin") / "contract-check.jar"
    done = subprocess.run([kotlinc(), *map(str, SOURCES), str(HARNESS), "-include-runtime", "-d", str(jar)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and jar.is_file(), done.stdout + done.stderr
    assert "warning:" not in done.stderr, done.stderr  # the app's files compile cleanly, not just compile
    return jar


class Jobs:
    """The lines of one harness run and the files they name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lines: list[str] = []

    def file(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def add(self, *fields) -> str:
        self.lines.append("\t".join(map(str, fields)))
        return str(fields[1])

    def run(self, jar: Path) -> dict[str, list[str]]:
        """Run every job in one JVM; job id → its result fields."""
        jobs = self.file("jobs.tsv", ("\n".join(self.lines) + "\n").encode())
        done = subprocess.run(["java", "-cp", str(jar), MAIN_CLASS, str(jobs), str(self.folder / "out")],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        results = {}
        for line in done.stdout.splitlines():
            id_, *fields = line.split("\t")
            results[id_] = fields
        assert len(results) == len(self.lines), done.stdout
        return results


def raw_rgba(path: Path) -> tuple[bytes, int, int, int]:
    """The picture as a decoder hands it over before load_rgb's steps: RGBA as stored, and its EXIF orientation."""
    with Image.open(path) as image:
        orientation = image.getexif().get(0x0112, 1)
        return image.convert("RGBA").tobytes(), image.width, image.height, orientation


def python_tensor(path: Path, size: int) -> np.ndarray:
    """The float32 tensor Python feeds the model (3xSxS)."""
    return unit_transform(size)(load_rgb(path)).numpy()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def difference(jobs: Jobs, name: str, python: np.ndarray) -> str:
    """How far a Kotlin output file is from Python's bytes: for the failure message."""
    path = jobs.folder / "out" / name
    if not path.is_file():
        return "no output (the job failed)"
    kotlin = np.frombuffer(path.read_bytes(), np.uint8).astype(int)
    if kotlin.size != python.size:
        return f"{kotlin.size} values, expected {python.size}"
    delta = np.abs(kotlin - python.astype(int).ravel())
    return f"max |diff| {delta.max()} grey levels on {np.count_nonzero(delta) / delta.size:.2%} of the values"


@pytest.fixture(scope="module")
def golden_images() -> dict[str, Path]:
    """The contract images present here (the PBC ones need the shared PBC folder)."""
    return {name: path for name, path in reference_images(PBC if PBC.is_dir() else None).items()}


def test_preprocessing_is_bit_exact_against_the_contract_vectors(harness, golden_images, tmp_path):
    """Every case of preprocessing.json: load_rgb's RGB bytes through the Kotlin resize/crop/scale give the crop whose
    sha256 the file records, and the float32 tensor Python computes, bit for bit. The same pictures as Pillow decodes
    them before load_rgb's steps (RGBA as stored, EXIF tag) through the Kotlin orientation and compositing as well."""
    golden = json.loads(GOLDEN.read_text())["images"]
    jobs = Jobs(tmp_path)
    expected = {}
    for index, (name, path) in enumerate(golden_images.items()):
        rgb = load_rgb(path)
        rgb_file = jobs.file(f"{index}.rgb", rgb.tobytes())
        rgba, width, height, orientation = raw_rgba(path)
        rgba_file = jobs.file(f"{index}.rgba", rgba)
        for size, facts in golden[name]["sizes"].items():
            tensor = python_tensor(path, int(size))
            python = (tensor * 255).round().astype(np.uint8)
            assert sha256(python.tobytes()) == facts["sha256_uint8_chw"]  # the contract file is current
            truth = (facts["sha256_uint8_chw"], sha256(tensor.astype("<f4").tobytes()), python)
            expected[jobs.add("unit", f"{index}-{size}", rgb_file, rgb.width, rgb.height, size)] = (
                f"{name} S={size}", *truth)
            expected[jobs.add("rgba", f"{index}-{size}-raw", rgba_file, width, height, 4 * width, orientation,
                              size)] = (f"{name} S={size} from RGBA + EXIF {orientation}", *truth)
    results = jobs.run(harness)

    failures = [f"{case}: {difference(jobs, f'{id_}.crop', python)}"
                for id_, (case, crop_sha, tensor_sha, python) in expected.items()
                if results[id_] != [crop_sha, tensor_sha]]
    assert not failures, failures
    cases = {name for name in golden if name in golden_images}
    assert len(expected) == 2 * sum(len(golden[name]["sizes"]) for name in cases)
    assert len(cases) == len(golden) or not PBC.is_dir()  # every case runs where the PBC images are present


def test_preprocessing_is_bit_exact_for_strong_shrinks_and_enlargements(harness, tmp_path):
    """Random pictures of the SYNTHETIC sizes (PNG, so Pillow's decode is the bytes written): Kotlin's crop and
    tensor are Python's, bit for bit."""
    rng = np.random.default_rng(14)
    jobs = Jobs(tmp_path)
    expected = {}
    for width, height, size in SYNTHETIC:
        # Smooth gradients plus noise: both the interpolation and the rounding are exercised.
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], -1)
        pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(pixels).save(path)
        tensor = python_tensor(path, size)
        python = (tensor * 255).round().astype(np.uint8)
        assert (python == python_unit_bytes(path, size)).all()
        id_ = jobs.add("unit", f"{width}x{height}-{size}", jobs.file(f"{width}x{height}.rgb", pixels.tobytes()),
                       width, height, size)
        expected[id_] = (sha256(python.tobytes()), sha256(tensor.astype("<f4").tobytes()), python)
    results = jobs.run(harness)
    failures = [f"{id_}: {difference(jobs, f'{id_}.crop', python)}"
                for id_, (crop_sha, tensor_sha, python) in expected.items() if results[id_] != [crop_sha, tensor_sha]]
    assert not failures, failures


def test_orientation_and_alpha_on_white_match_load_rgb(harness, tmp_path):
    """All 8 EXIF orientations of a non-square semi-transparent PNG, and every (value, alpha) pair of 8-bit RGBA:
    the Kotlin upright RGB picture is load_rgb's, byte for byte."""
    rng = np.random.default_rng(8)
    jobs = Jobs(tmp_path)
    expected = {}
    stored = rng.integers(0, 256, (23, 37, 4), dtype=np.uint8)
    stored[0, 0] = (255, 0, 0, 255)  # a corner marker: a wrong transpose cannot match by symmetry
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"orientation-{orientation}.png"
        Image.fromarray(stored, "RGBA").save(path, exif=exif)
        rgba, width, height, tag = raw_rgba(path)
        assert tag == orientation and rgba == stored.tobytes()
        id_ = jobs.add("rgba", f"orientation-{orientation}", jobs.file(f"o{orientation}.rgba", rgba), width, height,
                       4 * width, orientation, 0)
        expected[id_] = load_rgb(path)
    # Every channel value under every alpha: R = value, G = 255 - value, B = alpha's complement, A = alpha.
    value, alpha = np.meshgrid(np.arange(256), np.arange(256))
    pairs = np.stack([value, 255 - value, 255 - alpha, alpha], -1).astype(np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(pairs, "RGBA").save(path)
    # Rows padded to more bytes than 4 x width, as an Android bitmap's rowBytes may be.
    padded = np.zeros((256, 256 * 4 + 12), np.uint8)
    padded[:, :1024] = pairs.reshape(256, -1)
    id_ = jobs.add("rgba", "alpha", jobs.file("alpha.rgba", padded.tobytes()), 256, 256, 256 * 4 + 12, 1, 0)
    expected[id_] = load_rgb(path)
    results = jobs.run(harness)
    failures = [(id_, results[id_][1:], difference(jobs, f"{id_}.rgb", np.asarray(image)))
                for id_, image in expected.items()
                if results[id_] != [sha256(image.tobytes()), str(image.width), str(image.height)]]
    assert not failures, failures


def test_confidence_rule_matches_the_contract(harness, tmp_path):
    """Confidence.kt: softmax(logits / temperature) to double precision, the ranking, "uncertain" exactly below the
    threshold, and the refusal of unusable temperatures, thresholds and confident_from values (the same blocks the
    web test refuses); confident_from absent is halfway from the threshold to 1."""
    jobs = Jobs(tmp_path)
    rng = np.random.default_rng(5)
    cases = {}
    for i, temperature in enumerate([1.0, 1.5, 0.7, 3.0]):
        logits = rng.normal(0, 4, 8).astype(np.float32)
        text = ",".join(repr(float(v)) for v in logits)
        scaled = logits.astype(np.float64) / temperature
        probabilities = np.exp(scaled - scaled.max())
        probabilities /= probabilities.sum()
        jobs.add("softmax", f"softmax-{i}", temperature, text)
        top = float(probabilities.max())
        for label, threshold in (("above", top - 1e-9), ("equal", top), ("below", min(top + 1e-9, 1.0))):
            # confident_from at the threshold: no low-confidence band, only the threshold decides
            jobs.add("answer", f"answer-{i}-{label}", temperature, repr(threshold), repr(threshold), text)
        cases[i] = (probabilities, top)
    refused = {"temperature_zero": ("0", "0.5", "null", "temperature"),
               "temperature_text": ("abc", "0.5", "null", "temperature"),
               "temperature_negative": ("-1.0", "0.5", "null", "temperature"),
               "temperature_nan": ("NaN", "0.5", "null", "temperature"),
               "temperature_infinite": ("Infinity", "0.5", "null", "temperature"),
               "threshold_above_one": ("1.0", "1.5", "null", "threshold"),
               "threshold_negative": ("1.0", "-0.1", "null", "threshold"),
               "threshold_missing": ("1.0", "null", "null", "threshold"),
               "temperature_missing": ("null", "0.5", "null", "temperature"),
               "confident_from_text": ("1.0", "0.6", "high", "confident_from high"),
               "confident_from_below_threshold": ("1.0", "0.6", "0.5", "confident_from 0.5"),
               "confident_from_above_one": ("1.0", "0.6", "1.5", "confident_from 1.5"),
               "confident_from_negative": ("1.0", "0.6", "-0.1", "confident_from -0.1"),
               "confident_from_nan": ("1.0", "0.6", "NaN", "confident_from NaN")}
    for name, (temperature, threshold, confident_from, _) in refused.items():
        jobs.add("rule", name, temperature, threshold, confident_from)
    usable = {"usable": ("1.25", "0.9", "null"), "confident_at_threshold": ("1.0", "0.6", "0.6"),
              "confident_only_at_one": ("1.0", "0.6", "1.0"), "confident_between": ("1.0", "0.6", "0.75")}
    for name, fields in usable.items():
        jobs.add("rule", name, *fields)
    results = jobs.run(harness)

    for i, (probabilities, top) in cases.items():
        kotlin = np.array([float(v) for v in results[f"softmax-{i}"]])
        assert np.allclose(kotlin, probabilities, rtol=1e-13, atol=1e-16), (kotlin, probabilities)
        order = ",".join(f"c{k}" for k in np.argsort(-probabilities, kind="stable"))
        # the threshold rule: answered when the top probability >= threshold (the equal case computes the same top)
        assert results[f"answer-{i}-above"][:2] == ["confident", order]
        assert results[f"answer-{i}-below"][0] == "uncertain" or top + 1e-9 > 1.0
        assert results[f"answer-{i}-equal"][0] in ("confident", "uncertain")  # last-bit ties may go either way
    for name, (_, _, _, words) in refused.items():
        assert results[name][0] == "refused" and words in results[name][1], (name, results[name])
        # confident_from is judged against a usable threshold only, as the web app does
        assert ("confident_from" in results[name][1]) == name.startswith("confident_from"), (name, results[name])
    assert "(must be a number from the threshold, 0.6, to 1)" in results["confident_from_text"][1]
    for name, (temperature, threshold, confident_from) in usable.items():
        expected = (1 + float(threshold)) / 2 if confident_from == "null" else float(confident_from)
        assert results[name][0] == "ok" and [float(v) for v in results[name][1:]] == [
            float(temperature), float(threshold), expected], (name, results[name])


def test_answer_levels_around_the_threshold_and_confident_from(harness, tmp_path):
    """Three levels: uncertain below the threshold (no class named), low confidence from the threshold up to
    confident_from (the class headed "low confidence — check by eye"), confident from confident_from on; exactly at
    each boundary, confident_from absent = (1 + threshold) / 2, and the sentence under each answer, with the
    percentage never in brackets right after a class name that has brackets of its own."""
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    exps = np.exp(logits - logits.max())  # float64, as Confidence.kt::softmax
    top = float(exps[0] / exps.sum())  # 0.6439…: "64.4 %"
    assert f"{100 * top:.2f}" == "64.39"
    text = ",".join(repr(float(v)) for v in logits)
    cases = {  # name: (threshold, confident_from, level)
        "confident": (0.5, 0.6, "confident"), "low": (0.5, 0.9, "low"), "uncertain": (0.7, 0.9, "uncertain"),
        "at_confident_from": (0.5, top - 1e-9, "confident"), "just_below_confident_from": (0.5, top + 1e-9, "low"),
        "at_threshold": (top - 1e-9, 0.9, "low"), "just_below_threshold": (top + 1e-9, 0.9, "uncertain"),
        "default_low": (0.5, None, "low"),  # confident from 0.75
        "default_confident": (0.2, None, "confident"),  # confident from 0.6
    }
    jobs = Jobs(tmp_path)
    for name, (threshold, confident_from, _) in cases.items():
        jobs.add("answer", name, "1.0", repr(threshold), "null" if confident_from is None else repr(confident_from),
                 text)
    results = jobs.run(harness)

    named = "c0 — class 0 (spelled out)  64.4 %"
    for name, (_, _, level) in cases.items():
        assert results[name][:2] == [level, "c0,c1,c2,c3"], (name, results[name])
        headline, note = results[name][2:]
        assert headline == {"confident": named, "low": f"low confidence — check by eye {named}",  # a line break
                            "uncertain": "uncertain — check by eye"}[level], (name, headline)
        assert (note == "-") == (level == "confident"), (name, note)
        assert not re.search(r"\)\s*\(", headline + note), (name, headline, note)  # no "(…) (64.4 %)"
    assert results["low"][3] == "A confident answer needs 90.0 %."
    assert results["default_low"][3] == "A confident answer needs 75.0 %."
    assert results["uncertain"][3] == ("Most probable: c0 — class 0 (spelled out) at 64.4 %, below the 70.0 % this "
                                       "model needs to name a cell type.")


def header_job(jobs: Jobs, id_: str, model_json: dict, manifest_precision: str | None = None) -> None:
    """A header job for a model.json (and its manifest entry's precision): its "model" block's fields as ContractCheck
    reads them, "null" for a missing one."""
    def field(value) -> str:
        return "null" if value is None else str(value)

    fields = [model_json["name"], field(manifest_precision), field(model_json.get("bmcell_version"))]
    block = model_json.get("model")
    if block is not None:
        scores = ";".join(",".join(f"{key}={field(value)}" for key, value in entry.items())
                          if isinstance(entry, dict) else field(entry) for entry in block.get("scores") or [])
        fields += [field(block.get(key)) for key in ("name", "precision", "precision_words", "val_accuracy",
                                                     "artefact_val_accuracy")] + [scores]
    jobs.add("header", id_, *fields)


def test_model_header(harness, tmp_path):
    """Messages.kt's header, as the web app words it: "Model NAME · bmcell VERSION", then the precision in words
    (model.json's precision_words, else words for the precision), then the per-lab scores, largest set first and
    malformed entries dropped, else the overall accuracy; for bundles with the new fields, without them, and without
    a "model" block."""
    words = "compact 8-bit version: gives the full model's answers on all 64 reference cells checked"
    malformed = [{"set": "", "images": 5, "accuracy": 0.5}, {"set": "zero", "images": 0, "accuracy": 0.5},
                 {"set": "half", "images": 2.5, "accuracy": 0.5}, {"set": "over", "images": 10, "accuracy": 1.5},
                 {"set": "words", "images": "ten", "accuracy": 0.5}, {"set": "short", "images": 10}, "junk", None]
    scores = [{"set": "chula", "images": 162, "accuracy": 0.691}, *malformed,
              {"set": "pbc", "images": 1537, "accuracy": 0.975}]
    release = {"name": "mobilevit_xs-pbc8-chula", "precision": "int8", "val_accuracy": 0.91,
               "artefact_val_accuracy": 0.895}
    bundles = {  # id: (model.json, manifest precision, expected headline, precision line, scores line)
        "new": ({"name": "executorch-int8", "bmcell_version": "0.1.0",
                 "model": {**release, "precision_words": words, "scores": scores}}, "int8",
                "Model mobilevit_xs-pbc8-chula · bmcell 0.1.0", words,
                "Tested on 1,537 pbc cells: 97.5 % right · 162 chula cells: 69.1 % right"),
        "older": ({"name": "executorch-int8", "bmcell_version": "0.1.0", "model": release}, "int8",
                  "Model mobilevit_xs-pbc8-chula · bmcell 0.1.0", "compact 8-bit version",
                  "Right on 89.5 % of its test images"),
        "fp16-checkpoint-accuracy": ({"name": "coreml-fp16", "bmcell_version": "0.1.0",
                                      "model": {**release, "precision": "fp16", "artefact_val_accuracy": None,
                                                "scores": malformed}}, None,
                                     "Model mobilevit_xs-pbc8-chula · bmcell 0.1.0", "half-precision version",
                                     "Right on 91.0 % of its test images"),
        "fp32-nothing-measured": ({"name": "executorch-fp32", "model": {"name": "run", "precision": "fp32",
                                                                        "scores": []}}, "fp32",
                                  "Model run", "full-precision version", "-"),
        "no-model-block": ({"name": "executorch-int8", "bmcell_version": "0.0.9"}, "int8",
                           "Model executorch-int8 · bmcell 0.0.9", "compact 8-bit version", "-"),
        "unknown-precision": ({"name": "executorch-x"}, "int4", "Model executorch-x", "-", "-"),
    }
    jobs = Jobs(tmp_path)
    for id_, (model_json, manifest_precision, *_) in bundles.items():
        header_job(jobs, id_, model_json, manifest_precision)
    results = jobs.run(harness)
    for id_, (*_, headline, precision, scores_line) in bundles.items():
        assert results[id_] == [headline, precision, scores_line], (id_, results[id_])


def test_screen_texts(harness, tmp_path):
    """Messages.kt: probabilities as the iOS app shows them ("<0.1 %" not "0.0 %"), full class names, the model's
    confidence rule in words, and a sentence for every kind of failure (never a bare exception)."""
    jobs = Jobs(tmp_path)
    percents = {0.0: "<0.1 %", 0.0004: "<0.1 %", 0.00049: "<0.1 %", 0.0006: "0.1 %", 0.0123: "1.2 %",
                0.9734: "97.3 %", 1.0: "100.0 %"}
    for i, p in enumerate(percents):
        jobs.add("percent", f"percent-{i}", repr(p))
    jobs.add("name", "name-full", "abc", "a b c (explained)")
    jobs.add("name", "name-plain", "abc")
    kinds = {"io": ["free some space", "No space left"], "link": ["native library", "arm64-v8a"],
             "wrapped-link": ["native library"], "oom": ["not enough memory"], "bundle": ["Refusing to load"],
             "bad-image": ["not an image"], "runtime": ["IllegalStateException", "8 classes"],
             "no-message": ["NullPointerException"]}
    for kind in kinds:
        jobs.add("failure", f"failure-{kind}", kind)
    jobs.add("describe", "describe-none")
    jobs.add("describe", "describe-three-levels", "1.25", "0.6", "0.8", "the pbc validation split")
    jobs.add("describe", "describe-no-low-band", "1.0", "0.6", "0.6", "null")
    results = jobs.run(harness)
    for i, (p, text) in enumerate(percents.items()):
        assert results[f"percent-{i}"] == [text], (p, results[f"percent-{i}"])
    assert results["name-full"] == ["abc — a b c (explained)"] and results["name-plain"] == ["abc"]
    for kind, words in kinds.items():
        message = results[f"failure-{kind}"][0]
        prefix = "" if kind == "bundle" else "Doing: "  # a BundleError's message is already the whole sentence
        assert message.startswith(prefix) and all(word in message for word in words), (kind, message)
    assert results["failure-bundle"] == ["Refusing to load model.pte: its sha256 does not match"]
    assert results["describe-none"] == ["This model has no calibrated confidence: its probabilities are not calibrated "
                                        "and no answer is marked uncertain or low confidence."]
    assert results["describe-three-levels"] == [
        'Calibrated (temperature 1.25): from 80.0 %: a confident answer; 60.0 % to 80.0 %: "low confidence — check by '
        'eye"; below 60.0 %: "uncertain — check by eye"; threshold fitted on: the pbc validation split.']
    assert results["describe-no-low-band"] == ['Calibrated (temperature 1.0): from 60.0 %: a confident answer; below '
                                               '60.0 %: "uncertain — check by eye".']




def panel_field(entry) -> str:
    """A labs entry or adapted_to as ContractCheck's panel job reads it: an object as "key=value,…" (a list as
    "a|b"), None as "null", anything else as text."""
    def value(item) -> str:
        if isinstance(item, list):
            return "|".join(map(value, item))
        return "null" if item is None else str(item)

    if isinstance(entry, dict):
        return ",".join(f"{key}={value(item)}" for key, item in entry.items())
    return value(entry)


def test_model_panel_names_the_labs_the_adaptation_and_how_to_adapt(harness, tmp_path):
    """Messages.kt's panel lines, as the web app words them: "Trained on cells from: pbc (1,200 cells), …" (the labs
    in model.json's order, malformed entries dropped, unknown counts left out), "Adapted to LAB with N of its own
    labelled cells: about 87 % right on them (95 % interval 79–92 %)." (whole percents rounded half up, the parts
    without a usable value left out, nothing without a lab name), and always the same route line; no jargon."""
    labs = [{"name": "pbc", "cells": 1200}, {"name": "chula", "cells": 345}, {"name": "", "cells": 3},
            {"name": "scanner2", "cells": None}, {"name": "odd", "cells": 2.5}, "junk", {"cells": 10},
            {"name": "words", "cells": "many"}]
    cases = {  # id: (labs, adapted_to, labs line, adapted line)
        "adapted": (labs, {"lab": "mylab", "cells": 100, "accuracy": 0.87, "interval": [0.79, 0.92]},
                    "Trained on cells from: pbc (1,200 cells), chula (345 cells), scanner2, odd, words.",
                    "Adapted to mylab with 100 of its own labelled cells: about 87 % right on them (95 % interval "
                    "79–92 %)."),
        "rounding": ([{"name": "one", "cells": 1}, {"name": "big", "cells": 1234567}],
                     {"lab": "lab b", "cells": 1, "accuracy": 0.875, "interval": [0.625, 0.9375]},
                     "Trained on cells from: one (1 cell), big (1,234,567 cells).",
                     "Adapted to lab b with 1 of its own labelled cells: about 88 % right on them (95 % interval "
                     "63–94 %)."),
        "unknown": ([{"name": "pbc", "cells": None}], {"lab": "mylab", "cells": None, "accuracy": None,
                                                        "interval": [0.7, 0.8]},
                    "Trained on cells from: pbc.", "Adapted to mylab with its own labelled cells."),
        "reversed_interval": ([], {"lab": "mylab", "cells": 20, "accuracy": 0.9, "interval": [0.95, 0.8]}, "-",
                              "Adapted to mylab with 20 of its own labelled cells: about 90 % right on them."),
        "bad_values": ([], {"lab": "mylab", "cells": "many", "accuracy": 1.5, "interval": [0.5, 1.5]}, "-",
                       "Adapted to mylab with its own labelled cells."),
        "not_adapted": (["junk", {"name": ""}], None, "-", "-"),
        "no_lab_name": ([], {"lab": "", "cells": 5, "accuracy": 0.9}, "-", "-"),
    }
    jobs = Jobs(tmp_path)
    for id_, (lab_entries, adapted, *_) in cases.items():
        jobs.add("panel", id_, ";".join(map(panel_field, lab_entries)), panel_field(adapted))
    results = jobs.run(harness)
    for id_, (_, _, labs_line, adapted_line) in cases.items():
        assert results[id_] == [labs_line, adapted_line, ROUTE_LINE], (id_, results[id_])
    jargon = ("ATC", "logit", "OOD", "softmax", "temperature", "calibrat")
    assert not [word for word in jargon if word in "\n".join(results["adapted"])], results["adapted"]


LOGITS = [2.0, 1.0, 0.0, -1.0]  # top probability 0.6439… at temperature 1: "64.4 %"


def verdict_job(jobs: Jobs, id_: str, output: list[float], confidence: tuple | None, novelty_threshold) -> None:
    """A verdict job: the output of a model with len(LOGITS) classes under a confidence rule (temperature, threshold,
    confident_from; None: no rule) and a novelty rule with that threshold (None: no novelty block)."""
    rule = ("null", "null", "null") if confidence is None else tuple(map(repr, confidence))
    jobs.add("verdict", id_, len(LOGITS), *rule, "null" if novelty_threshold is None else repr(novelty_threshold),
             ",".join(repr(float(v)) for v in output))


def test_novelty_flags_pictures_unlike_the_training_cells(harness, tmp_path):
    """Novelty.kt with Confidence.kt and Messages.kt: an output of C class scores then a novelty score is split (the
    probabilities from the class scores alone); a score at or above model.json's novelty threshold answers "does not
    look like a cell this model knows" with why, whatever the probabilities and with or without a confidence rule;
    just below it the confidence level as before, with how unlike the training cells the picture is; without a novelty
    block C values answer exactly as before, and an output of C + 1 values without a block, or of C with one, is
    refused."""
    exps = np.exp(np.array(LOGITS) - max(LOGITS))
    probabilities = exps / exps.sum()
    confident, strict = (1.0, 0.5, 0.6), (1.0, 0.7, 0.9)  # the top probability is confident, uncertain
    cases = {  # id: (output, confidence rule, novelty threshold, level)
        "flagged": (LOGITS + [1.5], confident, 1.0, "unknown"),
        "at_threshold": (LOGITS + [1.0], confident, 1.0, "unknown"),
        "flagged_uncertain": (LOGITS + [2.5], strict, 1.0, "unknown"),
        "flagged_without_confidence": (LOGITS + [3.0], None, 2.0, "unknown"),
        "just_below": (LOGITS + [0.999], confident, 1.0, "confident"),
        "below_uncertain": (LOGITS + [0.25], strict, 1.0, "uncertain"),
        "no_block": (LOGITS, confident, None, "confident"),
        "no_block_uncertain": (LOGITS, strict, None, "uncertain"),
    }
    refused = {  # id: (output, novelty threshold, words)
        "extra_value_without_block": (LOGITS + [0.5], None, ["output has 5 values", "4 classes and no novelty score"]),
        "block_without_value": (LOGITS, 1.0, ["output has 4 values", "declares novelty at index 4"]),
        "two_extra_values": (LOGITS + [0.5, 0.5], 1.0, ["output has 6 values", "declares novelty at index 4"]),
    }
    jobs = Jobs(tmp_path)
    for id_, (output, confidence, threshold, _) in cases.items():
        verdict_job(jobs, id_, output, confidence, threshold)
        if threshold is None:  # the same output through the answer job, as before novelty blocks existed
            jobs.add("answer", f"{id_}-before", *map(repr, confidence), ",".join(repr(float(v)) for v in output))
    for id_, (output, threshold, _) in refused.items():
        verdict_job(jobs, id_, output, confident, threshold)
    results = jobs.run(harness)

    for id_, (output, _, threshold, level) in cases.items():
        got_level, labels, headline, note, line, shown = results[id_]
        assert (got_level, labels) == (level, "c0,c1,c2,c3"), (id_, results[id_])
        np.testing.assert_allclose([float(v) for v in shown.split(",")], probabilities, rtol=1e-6, err_msg=id_)
        assert line == ("-" if threshold is None else novelty_line(output[-1], threshold)), (id_, line)
        if level == "unknown":
            assert (headline, note) == (UNKNOWN_CELL, UNKNOWN_CELL_WHY), (id_, headline, note)
        else:
            assert UNKNOWN_CELL not in headline and note != UNKNOWN_CELL_WHY, (id_, headline, note)
        if threshold is None:
            assert results[f"{id_}-before"] == [got_level, labels, headline, note], (id_, results[f"{id_}-before"])
    assert results["just_below"][4] == "Unlike the cells it was trained on: 1.00 × the usual distance (flagged from " \
                                      "1.00 ×)."  # 0.999 rounds to 1.00: the level, not the line, decides
    assert results["below_uncertain"][2] == "uncertain — check by eye"
    for id_, (_, _, words) in refused.items():
        assert results[id_][0] == "error" and all(word in results[id_][1] for word in words), (id_, results[id_])


def test_novelty_rule_refuses_unusable_blocks(harness, tmp_path):
    """Novelty.kt's noveltyRule, as ModelBundle.kt applies model.json's "novelty": a threshold that is not a finite
    number > 0 and an output_index other than the number of classes are refused naming the field (the blocks the web
    test refuses); a usable block gives the model panel's line (the web app's words) and the description of its
    threshold and of the share of its own test cells it flags; a model without one says it flags nothing."""
    usable = {"usable": ("1.0", "8", "8", "0.05"), "no_share": ("1.25", "8", "8", "null"),
              "share_out_of_range": ("1.0", "3", "3", "1.5"), "index_as_decimal": ("0.8", "8.0", "8", "0.1")}
    refused = {"threshold_zero": ("0", "8", "threshold 0.0 (must be a finite number > 0)"),
               "threshold_negative": ("-1.0", "8", "threshold -1.0"),
               "threshold_text": ("abc", "8", "threshold abc"),
               "threshold_nan": ("NaN", "8", "threshold NaN"),
               "threshold_infinite": ("Infinity", "8", "threshold Infinity"),
               "threshold_missing": ("null", "8", "threshold null"),
               "index_before_the_end": ("1.0", "7", "output_index 7.0 (must be 8: the score after the 8 class scores)"),
               "index_past_the_end": ("1.0", "9", "output_index 9.0"),
               "index_text": ("1.0", "eight", "output_index eight"),
               "index_missing": ("1.0", "null", "output_index null")}
    jobs = Jobs(tmp_path)
    for id_, fields in usable.items():
        jobs.add("novelty", id_, *fields)
    for id_, (threshold, index, _) in refused.items():
        jobs.add("novelty", id_, threshold, index, "8", "0.05")
    jobs.add("novelty", "none")
    results = jobs.run(harness)

    for id_, (threshold, index, classes, share) in usable.items():
        status, got_threshold, got_index, got_share, panel, description = results[id_]
        assert (status, float(got_threshold), got_index) == ("ok", float(threshold), classes), (id_, results[id_])
        assert panel == NOVELTY_PANEL_LINE, (id_, panel)
        expected_share = share if share in ("0.05", "0.1") else "-"
        assert got_share == expected_share, (id_, got_share)
        assert description.startswith(f"It flags a picture as “{UNKNOWN_CELL}” when its distance to the nearest "
                                      f"training cell is at least {float(threshold):.2f} × the usual distance"), id_
        assert ("of its own test cells are flagged too" in description) == (expected_share != "-"), (id_, description)
    assert results["usable"][5].endswith("(5.0 % of its own test cells are flagged too).")
    for id_, (_, _, words) in refused.items():
        assert results[id_][0] == "refused" and words in results[id_][1], (id_, results[id_])
    assert "threshold" not in results["index_text"][1] and "output_index" not in results["threshold_text"][1]
    assert results["none"] == ["-", "It does not flag pictures unlike its training cells: re-export it with this "
                                    "version of bmcell."]


"""What can be checked of android_demo/ and ios_demo/ without an Android SDK or Xcode: the projects' files, their
dependencies, that class names, input size and preprocessing come from model.json and not from code, the model
bundle's placeholders and git rules, and that the benchmark modes write bench.json's fields."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bmcell.core.data.label_maps import BUILTIN_LABEL_MAPS
from bmcell.core.data.synthetic import SYNTH_CLASSES
from bmcell.core.fileio import sha256_path
from tests.contract.wording import NOVELTY_PANEL_LINE, UNKNOWN_CELL, UNKNOWN_CELL_WHY

ROOT = Path(__file__).resolve().parents[1]
ANDROID = ROOT / "android_demo"
IOS = ROOT / "ios_demo"
KOTLIN = ANDROID / "app/src/main/java/org/bmcell/demo"
SWIFT = IOS / "BmcellDemo"
ANDROID_BUNDLE = ANDROID / "app/src/main/assets/bmcell_model"
IOS_BUNDLE = SWIFT / "bmcell_model"

# PBC's eight folders and the maturation-series names of the paper: none may appear in app code. Built-in label
# maps add theirs (below), except "other", which is an ordinary English word.
KNOWN_CLASSES = {"basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet",
                 "myeloblast", "promyelocyte", "myelocyte", "metamyelocyte", *SYNTH_CLASSES}


def _code_files() -> list[Path]:
    """Every source, layout, manifest and build file of both apps (not the READMEs)."""
    suffixes = {".kt", ".kts", ".xml", ".swift", ".yml", ".properties"}
    return sorted(p for root in (ANDROID, IOS) for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)


def _label_map_classes() -> set[str]:
    """Class names that the built-in label maps produce (the aml-fab8 and pbc-granulocytic outputs)."""
    names = set()
    for build in BUILTIN_LABEL_MAPS.values():
        label_map = build()
        names.update(v for v in getattr(label_map, "rules", {}).values() if isinstance(v, str))
        names.update(getattr(label_map, "classes", None) or [])
        if isinstance(getattr(label_map, "default", None), str):
            names.add(label_map.default)
    return names


def test_android_project_has_its_files():
    for relative in ("settings.gradle.kts", "build.gradle.kts", "gradle.properties",
                     "gradle/wrapper/gradle-wrapper.properties", "app/build.gradle.kts",
                     "app/src/main/AndroidManifest.xml", "README.md", ".gitignore"):
        assert (ANDROID / relative).is_file(), relative
    for name in ("MainActivity", "CameraActivity", "BenchmarkActivity", "ModelBundle", "Preprocessing", "Classifier"):
        assert (KOTLIN / f"{name}.kt").is_file(), name
    # No fabricated binary: the wrapper jar is generated with `gradle wrapper`, as the README says.
    assert not (ANDROID / "gradle/wrapper/gradle-wrapper.jar").exists()
    assert "gradle wrapper" in (ANDROID / "README.md").read_text()


def test_android_build_uses_executorch_camerax_and_a_matching_gradle():
    app = (ANDROID / "app/build.gradle.kts").read_text()
    assert re.search(r'"org\.pytorch:executorch-android:\d+\.\d+\.\d+"', app)
    for artefact in ("camera-core", "camera-camera2", "camera-lifecycle", "camera-view"):
        assert f"androidx.camera:{artefact}:" in app, artefact
    assert int(re.search(r"minSdk\s*=\s*(\d+)", app).group(1)) >= 23  # executorch-android's minSdk

    agp = re.search(r'"com\.android\.application"\) version "(\d+)\.(\d+)', (ANDROID / "build.gradle.kts").read_text())
    wrapper = (ANDROID / "gradle/wrapper/gradle-wrapper.properties").read_text()
    gradle = tuple(int(x) for x in re.search(r"gradle-(\d+(?:\.\d+)*)-bin\.zip", wrapper).group(1).split("."))
    if (int(agp.group(1)), int(agp.group(2))) >= (9, 2):
        assert gradle >= (9, 4, 1)  # AGP 9.2's minimum Gradle


def test_android_manifest_declares_camera_and_an_isolated_benchmark():
    manifest = (ANDROID / "app/src/main/AndroidManifest.xml").read_text()
    assert "android.permission.CAMERA" in manifest
    bench = re.search(r'<activity\s[^>]*android:name="\.BenchmarkActivity"[^>]*>', manifest, re.S).group(0)
    assert 'android:exported="true"' in bench  # started with `adb shell am start`
    assert 'android:process=":bench"' in bench  # its own process: ExecuTorch's threadpool is per process


def test_ios_project_has_its_files_and_a_valid_xcodegen_spec():
    for name in ("BmcellDemoApp", "ContentView", "CameraPicker", "Benchmark", "ModelBundle", "Preprocessing",
                 "Classifier"):
        assert (SWIFT / f"{name}.swift").is_file(), name
    spec = yaml.safe_load((IOS / "project.yml").read_text())
    target = spec["targets"]["BmcellDemo"]
    assert target["type"] == "application" and target["platform"] == "iOS"
    assert float(spec["options"]["deploymentTarget"]["iOS"]) >= 16  # PhotosPicker
    folder = [s for s in target["sources"] if s.get("path") == "BmcellDemo/bmcell_model"]
    assert folder and folder[0]["type"] == "folder"  # copied as is, so the .mlpackage sha256 can be checked
    info = target["info"]["properties"]
    assert info["NSCameraUsageDescription"] and info["UIFileSharingEnabled"] is True
    assert not list(IOS.glob("*.xcodeproj"))  # generated by XcodeGen, not committed


def test_no_class_name_is_typed_into_the_apps():
    names = {n.lower() for n in KNOWN_CLASSES | _label_map_classes()} - {"other"}
    assert {"neutrophil", "segmented_neutrophil", "ig"} <= names
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names))) + r")\b", re.I)
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _code_files() for m in pattern.finditer(p.read_text())]
    assert not hits, hits


def test_apps_read_classes_size_and_preprocessing_from_model_json():
    kotlin = (KOTLIN / "ModelBundle.kt").read_text()
    for key in ("model.json", "classes", "image_size", "sha256", "bytes", "preprocessing", "resize_shorter_side_to",
                "center_crop", "interpolation", "scale", "mean", "std"):
        assert f'"{key}"' in kotlin, key
    swift = (SWIFT / "ModelBundle.swift").read_text()
    for key in ("model.json", "image_size", "resize_shorter_side_to", "center_crop"):
        assert f'"{key}"' in swift, key
    for field in ("classes", "sha256", "bytes", "preprocessing", "interpolation", "scale", "mean", "std"):
        assert re.search(rf"let {field}\b", swift), field
    # Neither app sizes its input with a literal: 256, 224 and 96 appear nowhere in the preprocessing or classifier.
    for path in (KOTLIN / "Preprocessing.kt", KOTLIN / "Classifier.kt", SWIFT / "Preprocessing.swift",
                 SWIFT / "Classifier.swift"):
        assert not re.search(r"\b(256|224|96)\b", path.read_text()), path.name


UNCERTAIN_TEXT = "uncertain — check by eye"
LOW_CONFIDENCE_TEXT = "low confidence — check by eye"


def test_apps_read_the_confidence_block_and_say_uncertain_below_the_threshold():
    """model.json's "confidence" (export/apps.py): both apps read its temperature, threshold and confident_from,
    divide the logits by the temperature before softmax, refuse an unusable block, show "uncertain — check by eye"
    below the threshold and "low confidence — check by eye" below confident_from, and document the threshold and the
    calibration commands."""
    assert '"confidence": manifest.get("confidence")' in (ROOT / "export/apps.py").read_text()
    kotlin_bundle = (KOTLIN / "ModelBundle.kt").read_text()
    for key in ("confidence", "temperature", "threshold", "confident_from"):
        assert f'"{key}"' in kotlin_bundle, key
    assert "val confidence: ConfidenceRule?" in kotlin_bundle and "refusing the model" in kotlin_bundle
    logic = (KOTLIN / "Confidence.kt").read_text()
    assert not re.search(r"^import (android|androidx|org\.pytorch|org\.json)\.", logic, re.M)  # plain Kotlin
    assert f'UNCERTAIN_TEXT = "{UNCERTAIN_TEXT}"' in logic
    assert f'LOW_CONFIDENCE_TEXT = "{LOW_CONFIDENCE_TEXT}"' in logic
    assert "logits[it] / temperature" in logic and "top < rule.threshold" in logic and "top < rule.confidentFrom" in logic
    assert "t.isFinite()" in logic and "t <= 0.0" in logic and "it in 0.0..1.0" in logic and "c !in p..1.0" in logic
    assert "info.confidence" in (KOTLIN / "Classifier.kt").read_text()
    messages = (KOTLIN / "Messages.kt").read_text()
    assert "UNCERTAIN_TEXT" in messages and "LOW_CONFIDENCE_TEXT" in messages
    assert "no calibrated confidence" in messages
    activity = (KOTLIN / "MainActivity.kt").read_text()
    assert "answerHeadline(outcome" in activity and "outcome.level" in activity
    assert 'android:id="@+id/answer"' in (ANDROID / "app/src/main/res/layout/activity_main.xml").read_text()

    swift_bundle = (SWIFT / "ModelBundle.swift").read_text()
    for key in ("confidence", "temperature", "threshold", "confident_from"):
        assert f'"{key}"' in swift_bundle, key
    assert "let confidence: ConfidenceSpec?" in swift_bundle and "refusing the model" in swift_bundle
    assert "$0.isFinite && $0 > 0" in swift_bundle and "$0 >= 0 && $0 <= 1" in swift_bundle
    classifier = (SWIFT / "Classifier.swift").read_text()
    assert f'let uncertainText = "{UNCERTAIN_TEXT}"' in classifier
    assert "$0 / temperature" in classifier and "top < $0" in classifier and "confidence: info.confidence" in classifier
    view = (SWIFT / "ContentView.swift").read_text()
    assert "uncertainText" in view and "answered.uncertain" in view and "no calibrated confidence" in view
    assert f'let lowConfidenceText = "{LOW_CONFIDENCE_TEXT}"' in view and "confidentFrom" in view

    for readme, target in ((ANDROID / "README.md", "android_demo"), (IOS / "README.md", "ios_demo"),
                           (ROOT / "web_demo/README.md", "web_demo")):
        text = readme.read_text()
        assert "## Uncertain and low-confidence answers" in text and "## Calibrating to your microscope" in text, readme
        assert UNCERTAIN_TEXT in text and LOW_CONFIDENCE_TEXT in text and "validation split" in text, readme
        assert "confident_from" in text, readme
        assert "bmcell adapt RUN --images" in text and "bmcell crosslab RUN_ADAPTED --data" in text, readme
        assert f"--app {target}" in text.split("## Calibrating to your microscope")[1], readme


def test_preprocessing_units_follow_the_python_contract():
    for path, half_even in ((KOTLIN / "Preprocessing.kt", "Math.rint"),
                            (SWIFT / "Preprocessing.swift", ".toNearestOrEven")):
        text = path.read_text()
        assert "bmcell/core/data/transforms.py::unit_transform" in text, path.name
        for step in ("decode", "onWhite", "resizeShorterSide", "centerCrop", "antialias"):
            assert step in text, (path.name, step)
        assert half_even in text, path.name  # torchvision's crop offset uses Python's round(), half to even
    assert "inSampleSize" in (KOTLIN / "Preprocessing.kt").read_text()
    assert "ExifInterface" in (KOTLIN / "Preprocessing.kt").read_text()
    swift = (SWIFT / "Preprocessing.swift").read_text()
    assert "CGImageSourceCreateThumbnailAtIndex" in swift and "kCGImageSourceCreateThumbnailWithTransform" in swift
    assert ".centerCrop" in (SWIFT / "Classifier.swift").read_text()  # the Vision option matching the contract


def test_apps_refuse_a_model_whose_sha256_differs(tmp_path):
    kotlin = (KOTLIN / "ModelBundle.kt").read_text()
    assert 'MessageDigest.getInstance("SHA-256")' in kotlin and "Refusing to load" in kotlin
    swift = (SWIFT / "ModelBundle.swift").read_text()
    assert "SHA256()" in swift and "Refusing to load" in swift
    # The .mlpackage hash is sha256_path's: per file in sorted order, its relative path, a NUL byte, then the bytes,
    # which is what the Swift app recomputes (Data([0]) between name and contents).
    (tmp_path / "Data").mkdir()
    (tmp_path / "Data" / "weights.bin").write_bytes(b"\x01\x02")
    (tmp_path / "Manifest.json").write_bytes(b"{}")
    expected = hashlib.sha256(b"Data/weights.bin\0\x01\x02Manifest.json\0{}").hexdigest()
    assert sha256_path(tmp_path) == expected
    assert "Data([0])" in swift


def test_benchmark_modes_write_bench_json_fields():
    bench = (ROOT / "export/bench.py").read_text()
    # The fields bench.json's rows get in export/bench.py; a rename there should fail here until the apps follow.
    assert 'f"p50_ms_{label}"' in bench and '("1_thread", 1), ("all_threads", all_threads)' in bench
    row = ["name", "load_ms", "p50_ms_1_thread", "p90_ms_1_thread", "p50_ms_all_threads", "p90_ms_all_threads",
           "precision", "runtime", "bytes", "val_accuracy", "notes"]
    report = ["device", "threads_all", "runs", "warmup", "batch", "image_size", "rows"]
    for key in row[6:] + report:
        assert f'"{key}"' in bench, key
    for path in (KOTLIN / "BenchmarkActivity.kt", SWIFT / "Benchmark.swift"):
        text = path.read_text()
        missing = [key for key in row + report if f'"{key}"' not in text]
        assert not missing, (path.name, missing)
        assert '"runs"' in text and '"warmup"' in text  # the intent extras / launch arguments


def test_model_bundle_folders_hold_only_a_placeholder_that_says_how_to_fill_them():
    for folder, target in ((ANDROID_BUNDLE, "android_demo"), (IOS_BUNDLE, "ios_demo")):
        readme = folder / "README.md"
        assert readme.is_file()
        assert f"--app {target}" in readme.read_text()
    for source, target in ((KOTLIN / "ModelBundle.kt", "--target android --app android_demo"),
                           (SWIFT / "ModelBundle.swift", "--target ios --app ios_demo")):
        assert target in source.read_text()  # the message shown when the bundle is missing


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git work tree")
def test_gitignore_keeps_models_out_and_placeholders_in():
    def ignored(path: Path) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", str(path.relative_to(ROOT))], cwd=ROOT).returncode == 0

    for folder, artefact in ((ANDROID_BUNDLE, "model.pte"), (IOS_BUNDLE, "model.mlpackage/Manifest.json")):
        assert ignored(folder / artefact) and ignored(folder / "model.json") and ignored(folder / "manifest.json")
        assert not ignored(folder / "README.md")
    assert ignored(ANDROID / "local.properties") and ignored(ANDROID / "app/build/outputs/apk/debug/app-debug.apk")
    assert ignored(IOS / "BmcellDemo.xcodeproj/project.pbxproj")


def test_ios_reads_probabilities_keeps_stored_colour_values_and_shows_only_the_newest_result():
    """The Core ML package outputs calibrated probabilities (model.json "output"), so the iOS app takes Vision's
    values as they are (softmax only for older logits bundles); step 3 draws in the picture's own colour space (no
    sRGB colour matching: grey levels and Display P3 values are kept, as PIL keeps them); a classification that
    finishes after a newer one started is dropped; the header names the model and its measured accuracy."""
    assert '"output": entry.get("output", {}).get("name", "logits")' in (ROOT / "export/apps.py").read_text()
    classifier = (SWIFT / "Classifier.swift").read_text()
    assert 'info.output == "probabilities"' in classifier and "softmax(scores, temperature:" in classifier
    preprocessing = (SWIFT / "Preprocessing.swift").read_text()
    step3 = preprocessing[preprocessing.index("static func onWhite"):preprocessing.index("// MARK: Step 4")]
    assert "sRGB" not in step3 and "greyOnWhite" in step3
    assert "image.colorSpace?.model == .monochrome" in preprocessing and "$0.model == .rgb" in preprocessing
    view = (SWIFT / "ContentView.swift").read_text()
    assert "guard mine == latest" in view and "ModelBundle.modelCard(info)" in view and "<0.1 %" in view
    assert "answered.ranked.enumerated()" in view and "prefix(3)" not in view  # every class, not the top 3
    bundle = (SWIFT / "ModelBundle.swift").read_text()
    for key in ('"val_accuracy"', '"model_card"', '"class_names"', "case name, file, sha256, bytes, classes, "
                "preprocessing, output, model"):
        assert key in bundle, key
    readme = (IOS / "README.md").read_text()
    assert "Display P3" in readme and "calibrated probabilities" in readme


def string_literals(source: str) -> str:
    """The double-quoted string literals of a piece of source, joined (a constant split over lines with +)."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', source))


def test_apps_name_the_labs_the_adaptation_and_how_to_adapt():
    """model.json's "model"."labs" and "adapted_to" (issue 21): the three apps read both, leniently, show "Trained
    on cells from: …" and "Adapted to … of its own labelled cells: about … right on them (95 % interval …)", and
    say how to adapt the model to another lab in the same words (Messages.kt's ADAPT_ROUTE_TEXT, which the JVM test
    checks; the Swift and the web app's copies must be the same text). Only the web app reads "lab_check"."""
    kotlin = (KOTLIN / "Messages.kt").read_text()
    kotlin_route = string_literals(re.search(r"const val ADAPT_ROUTE_TEXT =(.*?)\n\n", kotlin, re.S).group(1))
    view = (SWIFT / "ContentView.swift").read_text()
    swift_route = string_literals(re.search(r"let adaptRouteText =(.*?)\n\n", view, re.S).group(1))
    web = (ROOT / "web_demo/app.js").read_text()
    nodes = re.search(r"function routeNodes\(\) \{(.*?)\n\}", web, re.S).group(1)
    web_route = string_literals(re.sub(r'element\("code",\s*', "", nodes))
    assert kotlin_route == swift_route == web_route, (kotlin_route, swift_route, web_route)
    for words in ("another microscope, stain or camera", "about 20 cells per class (at least 5)",
                  "bmcell finetune MODEL --data YOUR_FOLDER --out NEW_MODEL",
                  "bmcell check MODEL --images YOUR_PHOTOS"):
        assert words in kotlin_route, words

    bundle = (KOTLIN / "ModelBundle.kt").read_text()
    assert 'block.optJSONArray("labs")' in bundle and 'block.optJSONObject("adapted_to")' in bundle
    activity = (KOTLIN / "MainActivity.kt").read_text()
    assert "labsLine(it.model)" in activity and "adaptedLine(it.model)" in activity and "ADAPT_ROUTE_TEXT" in activity
    assert 'android:id="@+id/model_route"' in (ANDROID / "app/src/main/res/layout/activity_main.xml").read_text()

    swift_bundle = (SWIFT / "ModelBundle.swift").read_text()
    for key in ('case name, arch, precision, parity, scores, labs', 'case adaptedTo = "adapted_to"',
                "case lab, cells, accuracy, interval", "let labs: TrainedLabs?", "let adaptedTo: AdaptedTo?"):
        assert key in swift_bundle, key
    # The lenient readers never throw: a malformed entry drops that fact, not the model.
    assert swift_bundle.count("init(from decoder: Decoder) {") >= 3
    for words in ('"Trained on cells from: "', "of its own labelled cells", "right on them", "(95 % interval ",
                  "Self.labsLine(info.model)", "Self.adaptedLine(info.model)", "modelRoute = adaptRouteText"):
        assert words in view, words
    for words in ('"Trained on cells from: "', "of its own labelled cells", "right on them", "(95 % interval "):
        assert words in kotlin, words

    for key in ("info.labs", "info.adapted_to", "card.lab_check", "block.min_images", "block.validation_accuracy"):
        assert key in web, key
    for source in (kotlin, view, (SWIFT / "ModelBundle.swift").read_text(), bundle):
        assert "lab_check" not in source  # the batch check is the web app's only


def string_constant(source: str, declaration: str, **interpolated: str) -> str:
    """The text of a top-level string constant of Kotlin or Swift source ("const val NAME", "let name"), over as many
    lines as it continues, with each interpolation (Kotlin's $NAME, Swift's \\(name)) replaced by interpolated[NAME]."""
    text = string_literals(re.search(rf"{re.escape(declaration)} =(.*?)\n(?!\s)", source, re.S).group(1))
    for name, value in interpolated.items():
        text = text.replace(f"${name}", value).replace(f"\\({name})", value)
    return text


def test_apps_read_the_novelty_block_and_say_a_picture_does_not_look_like_a_known_cell():
    """model.json's "novelty" (a per-image novelty score inside the model): both apps read its threshold and
    output_index, refuse an unusable block and a model whose outputs model.json does not declare; Android splits the
    C + 1 values of its program's output (Novelty.kt, plain Kotlin: run on a JVM by test_android_jvm.py), iOS reads
    the Core ML output coreml_output names, through Core ML directly (Vision hands over a classifier's labels only);
    both say "does not look like a cell this model knows", why, and the panel line in the words the web app and the
    JVM test use (tests/contract/wording.py), and show how unlike the training cells the picture is."""
    bundle = (KOTLIN / "ModelBundle.kt").read_text()
    for key in ('"novelty"', '"output_index"', '"flagged_on_validation"', "val novelty: NoveltyRule?",
                "parseNovelty(json, classes.size)", "model.json's novelty has an unusable"):
        assert key in bundle, key
    novelty = (KOTLIN / "Novelty.kt").read_text()
    assert not re.search(r"^import (android|androidx|org\.pytorch|org\.json)\.", novelty, re.M)  # plain Kotlin
    unknown = string_constant(novelty, "const val UNKNOWN_CELL_TEXT")
    assert unknown == UNKNOWN_CELL and string_constant(novelty, "const val UNKNOWN_CELL_WHY") == UNKNOWN_CELL_WHY
    assert string_constant(novelty, "const val NOVELTY_PANEL_TEXT", UNKNOWN_CELL_TEXT=unknown) == NOVELTY_PANEL_LINE
    assert "novelty >= rule.threshold" in novelty and "t.isFinite()" in novelty
    classifier = (KOTLIN / "Classifier.kt").read_text()
    assert "outputProblem(output.size, info.classes.size, info.novelty)" in classifier and "info.novelty)" in classifier
    assert "classifier.output(input)" in (KOTLIN / "BenchmarkActivity.kt").read_text()
    activity = (KOTLIN / "MainActivity.kt").read_text()
    for call in ("noveltyPanelLine(it.novelty)", "noveltyDescription(info.novelty)",
                 "noveltyLine(outcome, info.novelty)", "ConfidenceLevel.UNKNOWN to UNKNOWN_COLOR"):
        assert call in activity, call

    swift_bundle = (SWIFT / "ModelBundle.swift").read_text()
    for key in ('case novelty = "novelty"', 'case outputIndex = "output_index"', 'case coremlOutput = "coreml_output"',
                'case flaggedOnValidation = "flagged_on_validation"', "let novelty: NoveltySpec?",
                "try checkNovelty(info)", "novelty.outputIndex != Double(classes)", "$0.isFinite && $0 > 0",
                "model.json's novelty has an unusable"):
        assert key in swift_bundle, key
    swift = (SWIFT / "Classifier.swift").read_text()
    unknown = string_constant(swift, "let unknownCellText")
    assert unknown == UNKNOWN_CELL and string_constant(swift, "let unknownCellWhy") == UNKNOWN_CELL_WHY
    for key in ("MLFeatureValue(cgImage: picture", "loaded.model.prediction(from:", "$0.coremlOutput",
                "try Self.checkOutputs(description, novelty: loaded.info.novelty)", "return novelty >= threshold",
                "noveltyRule: info.novelty"):
        assert key in swift, key
    view = (SWIFT / "ContentView.swift").read_text()
    assert string_constant(view, "let noveltyPanelText", unknownCellText=unknown) == NOVELTY_PANEL_LINE
    for key in ("if answered.unknown { return .unknown }", "case .unknown: return unknownCellText",
                "if level == .unknown { return unknownCellWhy }", "Self.noveltyLine(answered, info.novelty)",
                "Self.describeNovelty(info.novelty)", "info.novelty.map { _ in noveltyPanelText }",
                '"Unlike the cells it was trained on: '):
        assert key in view, key

    for readme in (ANDROID / "README.md", IOS / "README.md", ROOT / "web_demo/README.md", ROOT / "docs/apps.md"):
        text = readme.read_text()
        assert UNKNOWN_CELL in text and '"novelty"' in text, readme


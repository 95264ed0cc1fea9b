"""Parity: every artefact's logits against the float32 reference, judged by documented tolerance tiers."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bmcell.core.confidence import softmax
from bmcell.core.fileio import atomic_write_json
from bmcell.core.novelty import THRESHOLD, UNKNOWN_TEXT, split_output
from bmcell.core.reports import markdown_cell
from export.arm64.emulated import CPU_PROFILES, run_emulated, runs_emulated
from export.arm64.environment import Arm64Environment
from export.formats import FORMATS
from export.formats.base import ExportError, ExportFormat, Runner
from export.golden import read_export_golden
from export.manifest import ManifestError, read_manifest, verify_artefact

PARITY_JSON = "parity.json"
PARITY_MD = "parity.md"


@dataclass(frozen=True)
class Tier:
    """Bounds an artefact of one precision must meet; None means not judged by that number."""

    min_top1_agreement: float
    max_relative_error: float | None = None  # max |out - ref| / max |ref| over the golden set
    min_sqnr_db: float | None = None
    max_accuracy_drop: float | None = None  # validation accuracy, in percentage points below the reference
    min_flag_agreement: float = 1.0  # share of golden images flagged "unlike the training cells" as the reference is
    max_novelty_error: float | None = None  # max |novelty - reference novelty|, in radii


TIERS = {
    "fp32": Tier(min_top1_agreement=1.0, max_relative_error=1e-3, min_sqnr_db=60.0, max_accuracy_drop=0.1,
                 max_novelty_error=1e-3),
    "fp16": Tier(min_top1_agreement=0.99, max_relative_error=2e-2, min_sqnr_db=30.0, max_accuracy_drop=0.5,
                 min_flag_agreement=0.97, max_novelty_error=0.1),
    "int8": Tier(min_top1_agreement=0.99, min_sqnr_db=15.0, max_accuracy_drop=1.0, min_flag_agreement=0.95),
}


def reference_margins(reference: np.ndarray) -> np.ndarray:
    """Per image, how far the reference's top-1 logit lies above its runner-up."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def agreement(reference: np.ndarray, output: np.ndarray) -> dict:
    """Max absolute and relative error, SQNR (dB) and top-1 agreement of output against reference logits, and
    what explains disagreements: the reference margins of the flipped images, and how many golden images have a
    margin below twice the output's RMS logit error (images any error of that size can flip)."""
    if output.shape != reference.shape:
        raise ManifestError(f"output shape {output.shape} differs from the reference's {reference.shape}")
    error = output.astype(np.float64) - reference.astype(np.float64)
    noise = float(np.sum(error ** 2))
    margins = reference_margins(reference)
    flipped = output.argmax(1) != reference.argmax(1)
    rms_error = float(np.sqrt(np.mean(error ** 2)))
    return {
        "max_abs_error": float(np.abs(error).max()),
        "max_relative_error": float(np.abs(error).max() / max(np.abs(reference).max(), 1e-12)),
        "sqnr_db": float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise)),
        "top1_agreement": float(1 - np.mean(flipped)),
        "rms_error": rms_error,
        "flipped_margins": sorted(float(m) for m in margins[flipped]),
        "images_within_error": int(np.sum(margins < 2 * rms_error)),
    }


def novelty_agreement(reference: np.ndarray | None, output: np.ndarray | None) -> dict:
    """How far the artefact's novelty column is from the reference's, and on how many golden images its flag
    ("does not look like a cell this model knows") agrees; empty for a model without novelty."""
    if reference is None:
        return {}
    if output is None:
        raise ManifestError("the model has a novelty column but the artefact's output lacks it")
    flags = (reference >= THRESHOLD) != (output >= THRESHOLD)
    return {"novelty_max_abs_error": float(np.abs(output.astype(np.float64) - reference).max()),
            "flag_agreement": float(1 - np.mean(flags)), "flag_changes": int(np.sum(flags)),
            "reference_flagged": int(np.sum(reference >= THRESHOLD))}


def _agreement_failure(numbers: dict, bound: float) -> str:
    """The agreement failure, with the flipped images' reference margins against the output's logit error."""
    margins = ", ".join(f"{m:.3f}" for m in numbers["flipped_margins"][:5])
    return (f"top-1 agreement {numbers['top1_agreement']:.4f} < {bound} "
            f"({len(numbers['flipped_margins'])} flipped, reference margins {margins}; "
            f"{numbers['images_within_error']} golden images have a margin below 2x the RMS logit error "
            f"{numbers['rms_error']:.3f})")


def accuracy(run: Runner, inputs: np.ndarray, targets: np.ndarray, classes: int, batch: int = 16) -> float:
    """Top-1 accuracy of a runner over inputs (over the classes' columns: a novelty column is not a class)."""
    predictions = np.concatenate([run(inputs[i:i + batch])[:, :classes].argmax(1)
                                  for i in range(0, len(inputs), batch)])
    return float(np.mean(predictions == targets))


def judge(precision: str, numbers: dict) -> list[str]:
    """The tier's bounds that the numbers break, each naming the number; empty when it passes."""
    tier = TIERS[precision]
    failures = []
    if numbers["top1_agreement"] < tier.min_top1_agreement:
        failures.append(_agreement_failure(numbers, tier.min_top1_agreement))
    if tier.max_relative_error is not None and numbers["max_relative_error"] > tier.max_relative_error:
        failures.append(f"max relative error {numbers['max_relative_error']:.2e} > {tier.max_relative_error:.0e}")
    if tier.min_sqnr_db is not None and numbers["sqnr_db"] < tier.min_sqnr_db:
        failures.append(f"SQNR {numbers['sqnr_db']:.1f} dB < {tier.min_sqnr_db} dB")
    if "flag_agreement" in numbers and numbers["flag_agreement"] < tier.min_flag_agreement:
        failures.append(f"novelty flag agreement {numbers['flag_agreement']:.4f} < {tier.min_flag_agreement} "
                        f"({numbers['flag_changes']} golden images flagged differently)")
    if tier.max_novelty_error is not None and numbers.get("novelty_max_abs_error", 0.0) > tier.max_novelty_error:
        failures.append(f"novelty max error {numbers['novelty_max_abs_error']:.2e} > {tier.max_novelty_error:.0e}")
    drop = numbers.get("accuracy_drop_points")
    if tier.max_accuracy_drop is not None and drop is not None and drop > tier.max_accuracy_drop:
        failures.append(f"validation accuracy drop {drop:.2f} points > {tier.max_accuracy_drop}")
    return failures


def structure_failures(fmt: ExportFormat, declared: dict, classes: list[str], image_size: int) -> list[str]:
    """Checks of what an artefact declares (labels, input size, logits or probabilities) when it cannot be run here."""
    failures = []
    if declared.get("output_kind", fmt.output_kind) != fmt.output_kind:
        failures.append(f"outputs {declared['output_kind']}, but {fmt.name} must output {fmt.output_kind}")
    if declared.get("labels") is not None and list(declared["labels"]) != classes:
        failures.append(f"embedded labels {declared['labels']} differ from the manifest's {classes}")
    size = declared.get("input_size")
    if size is not None and list(size) != [image_size, image_size]:
        failures.append(f"input size {size} differs from {image_size}x{image_size}")
    return failures


def expected_output(fmt: ExportFormat, reference: np.ndarray, manifest: dict) -> np.ndarray:
    """The reference in the artefact's output kind: logits, or calibrated softmax(logits / temperature)."""
    if fmt.output_kind == "logits":
        return reference
    return softmax(reference, (manifest.get("confidence") or {}).get("temperature", 1.0))


def answers(output: np.ndarray, output_kind: str, confidence: dict | None,
            novelty: np.ndarray | None = None) -> np.ndarray:
    """What an app shows for each image: -2 when the novelty flags it ("does not look like a cell this model
    knows"), else under the manifest's confidence rule the top class's index, or -1 for "uncertain" (calibrated top
    probability below the threshold); without a rule, always the top class."""
    temperature, threshold = (confidence["temperature"], confidence["threshold"]) if confidence else (1.0, 0.0)
    probabilities = output if output_kind == "probabilities" else softmax(output, temperature)
    shown = np.where(probabilities.max(1) >= threshold, probabilities.argmax(1), -1)
    return shown if novelty is None else np.where(novelty >= THRESHOLD, -2, shown)


def answer_changes(fmt: ExportFormat, reference: np.ndarray, output: np.ndarray, manifest: dict,
                   names: list[str]) -> dict:
    """The golden images on which the artefact's answer (a class, "uncertain" or "does not look like a cell this
    model knows") differs from the float reference's, which `bmcell predict` gives: count and, for the first few,
    the image and both answers. reference and output are whole outputs (logits, then novelty when present)."""
    confidence, classes = manifest.get("confidence"), len(manifest["classes"])
    (reference_values, reference_novelty), (values, novelty) = \
        split_output(reference, classes), split_output(output, classes)
    expected = answers(reference_values, "logits", confidence, reference_novelty)
    found = answers(values, fmt.output_kind, confidence, novelty)
    label = [UNKNOWN_TEXT, "uncertain", *manifest["classes"]]  # index -2 reads label[0], -1 label[1]
    changed = np.flatnonzero(expected != found)
    return {"answer_changes": int(len(changed)),
            "changed_answers": [{"image": names[i], "reference": label[expected[i] + 2],
                                 "artefact": label[found[i] + 2]} for i in changed[:5]]}


def judged(precision: str, numbers: dict) -> dict:
    """The numbers with the tier's verdict: status and the bounds they break."""
    failures = judge(precision, numbers)
    return numbers | {"status": "fail" if failures else "pass", "failures": failures}


def output_numbers(fmt: ExportFormat, reference: np.ndarray, output: np.ndarray, manifest: dict,
                   names: list[str]) -> dict:
    """An artefact's whole output against the reference's: logit agreement, novelty and answers."""
    classes = len(manifest["classes"])
    (reference_values, reference_novelty), (values, novelty) = \
        split_output(reference, classes), split_output(output, classes)
    return agreement(expected_output(fmt, reference_values, manifest), values) \
        | novelty_agreement(reference_novelty, novelty) | answer_changes(fmt, reference, output, manifest, names)


def kernel_difference(fmt: ExportFormat, native: np.ndarray, emulated: np.ndarray, manifest: dict) -> dict:
    """How far the same artefact's output on ARM64 kernels is from its output on this machine's: max error, SQNR,
    top-1 agreement and answers that differ (class, "uncertain" or "does not look like a cell")."""
    classes, confidence = len(manifest["classes"]), manifest.get("confidence")
    (native_values, native_novelty), (values, novelty) = split_output(native, classes), split_output(emulated, classes)
    numbers = agreement(native_values, values)
    shown = answers(native_values, fmt.output_kind, confidence, native_novelty) != \
        answers(values, fmt.output_kind, confidence, novelty)
    return {"max_abs_error": numbers["max_abs_error"], "sqnr_db": numbers["sqnr_db"],
            "top1_agreement": numbers["top1_agreement"], "answers_differ": int(np.sum(shown))}


@dataclass(frozen=True)
class Arm64Parity:
    """Parity rows on ARM64 kernels: the built environment, the qemu CPU models, the runtimes' thread count, and
    the artefacts to run there (empty: every ExecuTorch and ONNX Runtime one)."""

    env: Arm64Environment
    cpus: tuple[str, ...] = tuple(CPU_PROFILES)
    threads: int = 1
    artefacts: tuple[str, ...] = ()

    def runs(self, fmt: ExportFormat) -> bool:
        """Whether this artefact gets rows on ARM64 kernels."""
        return runs_emulated(fmt) and (not self.artefacts or fmt.name in self.artefacts)


def row_label(row: dict) -> str:
    """An artefact row's name, with the architecture and CPU model for a row run under emulation."""
    return row["name"] + (f" @ arm64 {row['cpu']}" if "cpu" in row else "")


def _emulated_rows(fmt: ExportFormat, path: Path, entry: dict, inputs: np.ndarray, reference: np.ndarray,
                   native: np.ndarray, manifest: dict, names: list[str], arm64: Arm64Parity) -> list[dict]:
    """The artefact's rows on ARM64 kernels, one per CPU model, judged by its precision's tier (golden set only)."""
    rows = []
    for cpu in arm64.cpus:
        row = {"name": entry["name"], "precision": entry["precision"], "file": entry["file"], "arch": "arm64",
               "cpu": cpu}
        try:
            output = run_emulated(arm64.env, fmt, path, inputs, cpu, arm64.threads)
            numbers = output_numbers(fmt, reference, output, manifest, names) | \
                {"vs_native": kernel_difference(fmt, native, output, manifest)}
            row |= judged(entry["precision"], numbers)
        except (ManifestError, ExportError, ValueError, OSError) as error:
            row |= {"status": "fail", "failures": [f"{type(error).__name__}: {error}"]}
        rows.append(row)
    return rows


def run_parity(export_dir: Path, validation: tuple[np.ndarray, np.ndarray, float] | None,
               log: Callable[[str], None] = print, arm64: Arm64Parity | None = None) -> dict:
    """Check every artefact in an export folder; validation is (inputs, targets, reference accuracy) or None;
    arm64 adds each ExecuTorch and ONNX Runtime artefact's rows on ARM64 kernels (emulated)."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    inputs, reference, info = read_export_golden(export_dir, manifest)
    names = json.loads(info.get("images", "[]")) or [str(i) for i in range(len(inputs))]
    rows = []
    for entry in manifest["artefacts"]:
        row = {"name": entry["name"], "precision": entry["precision"], "file": entry["file"],
               "arch": platform.machine()}
        extra = []
        try:
            path = verify_artefact(export_dir, entry)
            fmt = FORMATS[entry["name"]]
            reason = fmt.cannot_run_here()
            if reason:
                declared = fmt.inspect(path)
                failures = structure_failures(fmt, declared, manifest["classes"], manifest["image_size"])
                row |= {"status": "fail" if failures else "not run", "reason": f"not run: {reason}",
                        "declared": declared, "failures": failures}
            else:
                run = fmt.load(path)
                output = run(inputs)
                numbers = output_numbers(fmt, reference, output, manifest, names)
                if validation is not None:
                    val_inputs, val_targets, reference_accuracy = validation
                    numbers["val_accuracy"] = accuracy(run, val_inputs, val_targets, len(manifest["classes"]))
                    numbers["accuracy_drop_points"] = 100 * (reference_accuracy - numbers["val_accuracy"])
                row |= judged(entry["precision"], numbers)
                if arm64 is not None and arm64.runs(fmt):
                    extra = _emulated_rows(fmt, path, entry, inputs, reference, output, manifest, names, arm64)
        except (ManifestError, KeyError, RuntimeError, ValueError, OSError) as error:
            row |= {"status": "fail", "failures": [f"{type(error).__name__}: {error}"]}
        for done in (row, *extra):
            log(f"{row_label(done):<36} {done['status']:<8} " + ("; ".join(done["failures"]) or done.get("reason", "")))
        rows += [row, *extra]
    report = {"golden": {"count": len(inputs), "device": info["device"], "tf32": info["tf32"]},
              "validation": None if validation is None else {"images": len(validation[1]),
                                                             "reference_accuracy": validation[2]},
              "tiers": {k: asdict(v) for k, v in TIERS.items()}, "artefacts": rows,
              "passed": all(r["status"] != "fail" for r in rows)}
    atomic_write_json(export_dir / PARITY_JSON, report)
    (export_dir / PARITY_MD).write_text(parity_markdown(report), encoding="utf-8")
    return report


def failed_artefacts(report: dict) -> list[str]:
    """Names of the artefacts a parity report failed."""
    return [row_label(row) for row in report["artefacts"] if row["status"] == "fail"]


def parity_markdown(report: dict) -> str:
    """The parity report as a Markdown table."""
    golden = report["golden"]
    lines = [f"# Parity against the float32 reference ({golden['count']} golden images, reference on "
             f"{golden['device']}, TF32 {golden['tf32']})", "",
             "| artefact | precision | status | max abs err | max rel err | SQNR dB | top-1 agree | answers changed "
             "| val acc | drop (pts) | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]

    for row in report["artefacts"]:
        notes = "; ".join(row.get("failures", [])) or row.get("reason", "")
        lines.append(f"| {row_label(row)} | {row['precision']} | {row['status']} | {markdown_cell(row, 'max_abs_error', '.2e')} | "
                     f"{markdown_cell(row, 'max_relative_error', '.2e')} | {markdown_cell(row, 'sqnr_db', '.1f')} | "
                     f"{markdown_cell(row, 'top1_agreement', '.4f')} | {markdown_cell(row, 'answer_changes', 'd')} | "
                     f"{markdown_cell(row, 'val_accuracy', '.4f')} | "
                     f"{markdown_cell(row, 'accuracy_drop_points', '.2f')} | {notes} |")
    if report["validation"]:
        lines += ["", f"Validation split: {report['validation']['images']} images, reference accuracy "
                      f"{report['validation']['reference_accuracy']:.4f}."]
    emulated = [row for row in report["artefacts"] if "vs_native" in row]
    if emulated:
        lines += ["", f"## ARM64 kernels against this machine's ({emulated[0]['arch']} under qemu-aarch64 vs "
                      f"{report['artefacts'][0]['arch']}, same artefact, golden set)", "",
                  "| artefact | CPU model | max abs diff | SQNR dB | top-1 agree | answers differ |",
                  "|---|---|---:|---:|---:|---:|"]
        for row in emulated:
            diff = row["vs_native"]
            lines.append(f"| {row['name']} | {row['cpu']} | {markdown_cell(diff, 'max_abs_error', '.2e')} | "
                         f"{markdown_cell(diff, 'sqnr_db', '.1f')} | {markdown_cell(diff, 'top1_agreement', '.4f')} | "
                         f"{markdown_cell(diff, 'answers_differ', 'd')} |")
        lines += ["", "CPU models: " + "; ".join(f"{cpu}: {words}" for cpu, words in CPU_PROFILES.items())
                  + ". Emulated rows run the golden set only (no validation accuracy)."]
    lines += ["", "Answers changed: golden images on which the artefact's answer under the confidence rule (a class, "
                  "or \"uncertain\") differs from the float model's, i.e. from `bmcell predict`; an app installs an "
                  "int8 artefact only when there are none.", "", "Tiers: " + json.dumps(report["tiers"])]
    return "\n".join(lines) + "\n"

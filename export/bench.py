"""`bmcell bench`: load time and batch-1 latency of eager PyTorch and every runnable artefact, in one table."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bmcell.core.fileio import atomic_write_json
from bmcell.core.reports import markdown_cell
from export.arm64.emulated import COUNTED_CPUS, COUNTED_FAMILIES, instructions_per_inference
from export.arm64.environment import Arm64Environment, Arm64Error
from export.formats import FORMATS
from export.formats.base import ExportError, ExportFormat, Runner
from export.golden import read_export_golden
from export.manifest import read_manifest, verify_artefact

BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
BENCH_PNG = "bench.png"
DELEGATED_SHARES = ("delegated_op_share", "delegated_flop_share")  # what an ExecuTorch artefact runs inside XNNPACK


def latency_ms(run: Runner, example: np.ndarray, runs: int, warmup: int) -> tuple[float, float]:
    """p50 and p90 in milliseconds of `runs` batch-1 calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run(example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(example)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def eager_loader(model: torch.nn.Module) -> Callable[[Path | None, int | None], Runner]:
    """A loader for eager PyTorch with the same signature as a format's load()."""

    def load(_: Path | None, threads: int | None = None) -> Runner:
        @torch.no_grad()
        def run(batch: np.ndarray) -> np.ndarray:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads or os.cpu_count() or 1)
            try:
                return model(torch.from_numpy(batch)).numpy()
            finally:
                torch.set_num_threads(previous)

        return run

    return load


def bench_row(name: str, load: Callable, path: Path | None, example: np.ndarray, runs: int, warmup: int) -> dict:
    """Load time and latency with 1 thread and with all threads for one artefact."""
    all_threads = os.cpu_count() or 1
    start = time.perf_counter()
    load(path, all_threads)
    row = {"name": name, "load_ms": (time.perf_counter() - start) * 1000}
    for label, threads in (("1_thread", 1), ("all_threads", all_threads)):
        p50, p90 = latency_ms(load(path, threads), example, runs, warmup)
        row[f"p50_ms_{label}"], row[f"p90_ms_{label}"] = p50, p90
    return row


def instruction_counts(env: Arm64Environment, fmt: ExportFormat, path: Path, example: np.ndarray) -> dict:
    """Guest instructions per inference of the artefact on each counted ARM64 CPU model; a failure is one line."""
    try:
        return {f"instructions_{cpu}": instructions_per_inference(env, fmt, path, example[0], cpu)
                for cpu in COUNTED_CPUS}
    except ExportError as error:
        raise Arm64Error(f"cannot count instructions: {error}") from error


def run_bench(export_dir: Path, eager: torch.nn.Module, runs: int = 50, warmup: int = 10,
              log: Callable[[str], None] = print, counting: Arm64Environment | None = None) -> dict:
    """Benchmark eager PyTorch and every artefact that runs here; write bench.json, bench.md and bench.png. With a
    counting environment, also each ExecuTorch artefact's ARM64 instructions per inference (emulated)."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    inputs, _, _ = read_export_golden(export_dir, manifest)
    example = inputs[:1]
    parity_path = export_dir / "parity.json"
    parity = {r["name"]: r for r in json.loads(parity_path.read_text())["artefacts"]} if parity_path.is_file() else {}
    rows = [bench_row("pytorch-eager", eager_loader(eager.eval()), None, example, runs, warmup)
            | {"precision": "fp32", "runtime": "PyTorch eager", "bytes": None}]
    log(_line(rows[0]))
    for entry in manifest["artefacts"]:
        path = verify_artefact(export_dir, entry)
        fmt = FORMATS[entry["name"]]
        declared = fmt.inspect(path)
        base = {"name": entry["name"], "precision": entry["precision"], "runtime": entry["runtime"],
                "bytes": entry["bytes"], "val_accuracy": parity.get(entry["name"], {}).get("val_accuracy"),
                "notes": _notes(declared)} | {key: declared[key] for key in DELEGATED_SHARES if key in declared}
        reason = fmt.cannot_run_here()
        row = base | {"skipped": reason} if reason else bench_row(entry["name"], fmt.load, path, example, runs,
                                                                   warmup) | base
        if counting is not None and fmt.family in COUNTED_FAMILIES:
            row |= instruction_counts(counting, fmt, path, example)
        rows.append(row)
        log(_line(row))
    eager_ms = rows[0]["p50_ms_all_threads"]
    for row in rows:
        if "p50_ms_all_threads" in row:
            row["speedup_vs_eager"] = eager_ms / row["p50_ms_all_threads"]
    report = {"device": _cpu_name(), "threads_all": os.cpu_count(), "runs": runs, "warmup": warmup,
              "batch": 1, "image_size": manifest["image_size"], "rows": rows,
              "instruction_cpus": COUNTED_CPUS if counting is not None else None}
    atomic_write_json(export_dir / BENCH_JSON, report)
    (export_dir / BENCH_MD).write_text(bench_markdown(report), encoding="utf-8")
    plot_bench(report, export_dir / BENCH_PNG)
    return report


def _notes(declared: dict) -> str:
    """What stays float or falls back, from what an artefact declares about itself."""
    parts = []
    for key in ("non_delegated_ops", "float_ops"):
        if declared.get(key):
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(declared[key].items(), key=lambda kv: -kv[1]))
            parts.append(f"{key.replace('_', ' ')}: {ops}")
    if declared.get("int8_flop_share"):
        parts.append(f"{100 * declared['int8_flop_share']:.1f}% of FLOPs in int8")
    return "; ".join(parts)


def _line(row: dict) -> str:
    """One console line for a benchmark row."""
    if row.get("skipped"):
        return f"{row['name']:<18} not run: {row['skipped']}"
    return (f"{row['name']:<18} load {row['load_ms']:8.1f} ms   p50 {row['p50_ms_1_thread']:7.2f} ms (1 thread)  "
            f"{row['p50_ms_all_threads']:7.2f} ms (all)   p90 {row['p90_ms_all_threads']:7.2f} ms")


def _cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def bench_markdown(report: dict) -> str:
    """The benchmark as one Markdown table, one row per format."""
    lines = [f"# Latency, batch 1, {report['image_size']}x{report['image_size']}, {report['device']} "
             f"({report['runs']} runs after {report['warmup']} warm-up)", "",
             "| artefact | precision | runtime | size MB | load ms | p50 ms 1 thread | p90 ms 1 thread | "
             f"p50 ms {report['threads_all']} threads | p90 ms {report['threads_all']} threads | speed-up vs eager | val acc | "
             "delegated ops / FLOPs | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    for row in report["rows"]:
        size = f"{row['bytes'] / 1e6:.2f}" if row.get("bytes") else "-"
        notes = f"not run: {row['skipped']}" if row.get("skipped") else row.get("notes", "")
        lines.append(f"| {row['name']} | {row['precision']} | {row['runtime']} | {size} | {markdown_cell(row, 'load_ms', '.0f')} | "
                     f"{markdown_cell(row, 'p50_ms_1_thread', '.2f')} | {markdown_cell(row, 'p90_ms_1_thread', '.2f')} | "
                     f"{markdown_cell(row, 'p50_ms_all_threads', '.2f')} | {markdown_cell(row, 'p90_ms_all_threads', '.2f')} | "
                     f"{markdown_cell(row, 'speedup_vs_eager', '.2f')}x | {markdown_cell(row, 'val_accuracy', '.4f')} | "
                     f"{_delegated_cell(row)} | {notes} |")
    lines += ["", "Delegated: the share of an ExecuTorch program's operators, and of their FLOPs, that run inside "
              "XNNPACK delegates rather than on ExecuTorch's portable single-threaded kernels (read from the .pte; "
              "rules in export/delegation.py)."] if any(DELEGATED_SHARES[0] in row for row in report["rows"]) else []
    return "\n".join(lines + instructions_markdown(report)) + "\n"


def _delegated_cell(row: dict) -> str:
    """'ops % / FLOPs %' inside XNNPACK for an ExecuTorch row, '-' for the others."""
    if DELEGATED_SHARES[0] not in row:
        return "-"
    return " / ".join(f"{100 * row[key]:.1f}%" for key in DELEGATED_SHARES)


def instructions_markdown(report: dict) -> list[str]:
    """The ARM64 instruction counts as a table (empty when none were counted): per inference, in millions, and
    against the first counted artefact (executorch-fp32 when it was exported) on the same CPU model."""
    cpus = report.get("instruction_cpus")
    rows = [row for row in report["rows"] if cpus and f"instructions_{next(iter(cpus))}" in row]
    if not rows:
        return []
    lines = ["", "## ARM64 guest instructions per inference (qemu-aarch64 and a counting plugin; batch 1, 1 thread)",
             "", "| artefact | " + " | ".join(f"{cpu} (M) | vs {rows[0]['name']}" for cpu in cpus) + " |",
             "|---|" + "---:|---:|" * len(cpus)]
    for row in rows:
        cells = [f"{row[f'instructions_{cpu}'] / 1e6:.1f} | {row[f'instructions_{cpu}'] / rows[0][f'instructions_{cpu}']:.2f}x"
                 for cpu in cpus]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", "CPU models as qemu runs them: " + ", ".join(f"{cpu} = `-cpu {model}`" for cpu, model in cpus.items())
              + ". Counts repeat to about 1e-4 (the thread pool's start and stop): a comparison between commits, "
              "not a latency."]
    return lines


def plot_bench(report: dict, path: Path) -> None:
    """A horizontal bar chart of p50 latency, 1 thread and all threads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if "p50_ms_all_threads" in r]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ax.barh(y - 0.2, [r["p50_ms_1_thread"] for r in rows], 0.4, label="1 thread")
    ax.barh(y + 0.2, [r["p50_ms_all_threads"] for r in rows], 0.4, label=f"{report['threads_all']} threads")
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel="p50 latency, ms (batch 1)", title=f"{report['device']}")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

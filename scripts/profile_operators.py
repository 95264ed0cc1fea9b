"""Where an export's ExecuTorch and ONNX artefacts spend their time, operator by operator (issue 25): each .pte run by
ExecuTorch with ETDump profiling (XNNPACK's per-operator events), each .onnx by ONNX Runtime with its profiler (the
session options `bmcell bench` uses), and per kind of operator (for XNNPACK, datatypes folded, so an fp32 convolution
and an int8 one are one row) the sum over the graph of each operator's median time: one table per runtime, its
artefacts side by side. Profiling adds a little time per operator: compare rows, not totals with `bmcell bench`.

Usage: python scripts/profile_operators.py EXPORT_DIR [--threads 2] [--runs 30]"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from export.formats import FORMATS
from export.formats.onnx import _session_options
from export.golden import read_export_golden
from export.manifest import read_manifest, verify_artefact


def executorch_times(path: Path, image: torch.Tensor, threads: int, runs: int) -> tuple[dict[str, float], Counter]:
    """Per kind of delegated operator: the summed median milliseconds of its instances, and how many there are."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    for _ in range(runs):
        module.forward([image])
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Inspector warns that no debug buffer was kept (none is needed)
        module.write_etdump_result_to_file(f"{folder}/run.etdp")
        frame = Inspector(etdump_path=f"{folder}/run.etdp").to_dataframe()
    times: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    for _, event in frame[(frame.event_block_name == "Execute") & frame.is_delegated_op].iterrows():
        kind = re.sub(r"\s*\([^)]*\)", "", event.event_name).rsplit(" #", 1)[0]
        times[kind] += event["p50 (ms)"]
        counts[kind] += 1
    return times, counts


def onnxruntime_times(path: Path, image: np.ndarray, threads: int, runs: int) -> tuple[dict[str, float], Counter]:
    """Per ONNX operator type after ONNX Runtime's graph optimisations: the summed median milliseconds of its nodes,
    and how many there are."""
    import onnxruntime as ort

    options = _session_options(threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = f"{folder}/ort"
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: image})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[(event["args"]["op_name"], event["name"])].append(event["dur"] / 1000)
    times: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    for (kind, _), durations in per_node.items():
        times[kind] += statistics.median(durations)
        counts[kind] += 1
    return times, counts


def print_table(title: str, profiles: dict[str, tuple[dict[str, float], Counter]]) -> None:
    """One Markdown table: a row per operator kind, slowest first, a column per artefact, and the totals."""
    names = list(profiles)
    kinds = sorted({k for times, _ in profiles.values() for k in times},
                   key=lambda k: -max(times.get(k, 0.0) for times, _ in profiles.values()))
    print(f"\n| {title} | " + " | ".join(f"{n} ms (count)" for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for kind in kinds:
        cells = [f"{times[kind]:.2f} ({counts[kind]})" if kind in times else "-" for times, counts in
                 (profiles[n] for n in names)]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("| total | " + " | ".join(f"{sum(profiles[n][0].values()):.2f}" for n in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    manifest = read_manifest(args.export_dir)
    inputs, _, _ = read_export_golden(args.export_dir, manifest)
    image = torch.from_numpy(inputs[:1].copy())
    executorch, onnx = {}, {}
    for entry in manifest["artefacts"]:
        family, path = FORMATS[entry["name"]].family, verify_artefact(args.export_dir, entry)
        if family == "executorch":
            executorch[entry["name"]] = executorch_times(path, image, args.threads, args.runs)
        elif family == "onnx" and path.suffix == ".onnx":
            onnx[entry["name"]] = onnxruntime_times(path, inputs[:1], args.threads, args.runs)
    print(f"median ms per inference, {args.threads} threads, {args.runs} runs, summed over each kind's operators")
    for title, profiles in (("XNNPACK operator (ExecuTorch)", executorch), ("ONNX Runtime operator", onnx)):
        if profiles:
            print_table(title, profiles)


if __name__ == "__main__":
    main()

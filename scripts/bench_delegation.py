"""How much of each MobileViT size's ExecuTorch programs runs inside XNNPACK (issue 25): for every architecture, a
randomly initialised network with a novelty distance over BANK_IMAGES stored images (as a trained release carries),
exported to executorch-fp32 and executorch-int8 exactly as `bmcell export --target android` does, and read back from
the .pte: delegate calls, operators left on the portable kernels, delegated shares of operators and FLOPs, the
share of FLOPs computed in int8, export time.

Usage: python scripts/bench_delegation.py [--arch mobilevit_xxs,mobilevit_xs,mobilevit_s,mobilevit_xs_gn] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bmcell.core.data.synthetic import SYNTH_CLASSES, render_cell
from bmcell.core.data.transforms import unit_transform
from bmcell.core.models import build_model, get_arch
from bmcell.core.novelty import BANK_IMAGES, NoveltyFeatures, NoveltyScored, fit_novelty, novelty_features
from export.delegation import program_ops
from export.formats import FORMATS
from export.formats.base import ExportInputs
from export.wrapper import NormalizedClassifier

CALIBRATION = 16


def export_inputs(arch: str, size: int) -> ExportInputs:
    """A random `arch` with a novelty bank of BANK_IMAGES rows (the calibration cells' features, repeated), its
    normalisation folded in, and CALIBRATION synthetic cells."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    transform = unit_transform(size)
    images = torch.stack([transform(render_cell(SYNTH_CLASSES[i % len(SYNTH_CLASSES)], rng, size))
                          for i in range(CALIBRATION)])
    net = build_model(arch, len(SYNTH_CLASSES)).eval()
    spec = get_arch(arch)
    normalised = (images - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    features = novelty_features(net, [(normalised, None)], torch.device("cpu"))
    bank = NoveltyFeatures.concatenate([features] * (BANK_IMAGES // CALIBRATION))
    model = NormalizedClassifier(NoveltyScored(net, fit_novelty(bank, features)), list(spec.mean), list(spec.std))
    return ExportInputs(model=model.eval(), example=images[:1], calibration=images, classes=list(SYNTH_CLASSES),
                        metadata={}, novelty=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilevit_xxs,mobilevit_xs,mobilevit_s,mobilevit_xs_gn")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print("| architecture | artefact | export s | delegate calls | portable ops | delegated ops | "
          "delegated FLOPs | FLOPs in int8 | GFLOPs |\n|---|---|---:|---:|---|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.arch.split(","):
            inputs = export_inputs(arch, args.size)
            for name in ("executorch-fp32", "executorch-int8"):
                path = Path(folder, f"{arch}-{name}.pte")
                start = time.perf_counter()
                FORMATS[name].export(inputs, path)
                seconds = time.perf_counter() - start
                ops = program_ops(path)
                portable = ", ".join(f"{op} x{n}" for op, n in ops["non_delegated_ops"].items()) or "none"
                total = ops["delegated_ops"] + sum(ops["non_delegated_ops"].values())
                print(f"| {arch} | {name} | {seconds:.0f} | {sum(ops['delegate_calls'].values())} | {portable} | "
                      f"{100 * ops['delegated_op_share']:.1f}% of {total} | "
                      f"{100 * ops['delegated_flop_share']:.2f}% | {100 * ops['int8_flop_share']:.1f}% | "
                      f"{ops['flops'] / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Weight-space interpolation of a fine-tuned model with the model it descends from (WiSE-FT, Wortsman et al.,
CVPR 2022): does mixing the PBC-only weights back in recover PBC accuracy without giving up the other labs?

    python scripts/interpolate_weights.py OUT --base models/mobilevit_xs-pbc8 --tuned RUN/best.json --alpha 0.75
    bmcell crosslab OUT --data DIR/heldout/pbc --data DIR/heldout/chula --data DIR/heldout/bccd

Writes OUT/best.json: every floating-point tensor (weights and batch-norm running statistics) is
(1 - alpha) * base + alpha * tuned; integer tensors and the metadata (confidence included) are the tuned
checkpoint's. The novelty statistics are dropped (they describe the tuned model's features), so crosslab reports
accuracy and abstention only: an experiment's checkpoint, not a release."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bmcell.core.checkpoint import carried_meta, load_checkpoint, resolve_checkpoint, save_checkpoint


def interpolated(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                 alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * base + alpha * tuned for floating-point tensors; the tuned model's integer tensors."""
    if base.keys() != tuned.keys() or any(base[k].shape != tuned[k].shape for k in tuned):
        raise SystemExit("the two checkpoints are not the same architecture and classes")
    return {k: torch.lerp(base[k].float(), v.float(), alpha).to(v.dtype) if v.is_floating_point() else v
            for k, v in tuned.items()}


def main() -> None:
    """Write the interpolated checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--base", type=Path, required=True, help="the model the tuned one was fine-tuned from")
    parser.add_argument("--tuned", type=Path, required=True)
    parser.add_argument("--alpha", type=float, required=True, help="weight of the tuned model, in [0, 1]")
    args = parser.parse_args()
    base, tuned = (load_checkpoint(resolve_checkpoint(p)) for p in (args.base, args.tuned))
    if base.classes != tuned.classes or base.arch != tuned.arch:
        raise SystemExit(f"base {base.arch} {base.classes} differs from tuned {tuned.arch} {tuned.classes}")
    model = tuned.build_model()
    model.load_state_dict(interpolated(base.state_dict, tuned.state_dict, args.alpha))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = carried_meta(tuned.meta) | {"interpolation": {"alpha": args.alpha, "base": base.meta["weights"]["sha256"],
                                                         "tuned": tuned.meta["weights"]["sha256"]}}
    print(save_checkpoint(args.out, "best", model, meta))


if __name__ == "__main__":
    main()

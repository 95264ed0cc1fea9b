"""`bmcell info`: parameters and FLOPs of a registered architecture."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from bmcell.cli.common import console, reports_errors
from bmcell.core.models import REGISTRY, build_model, count_flops, count_parameters


@reports_errors
def info(
    arch: str = typer.Option("mobilevit_xs", help="Architecture name."),
    num_classes: int = typer.Option(8, help="Number of output classes."),
    image_size: int = typer.Option(256, help="Square input side."),
    list_archs: bool = typer.Option(False, "--list", help="List every registered architecture and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print parameters and forward FLOPs (2 FLOPs per multiply-add, torch.utils.flop_counter) of one architecture."""
    if list_archs:
        for spec in REGISTRY.values():
            typer.echo(f"{spec.name}\t{spec.source}\tmean={spec.mean} std={spec.std}")
        return
    model = build_model(arch, num_classes)
    result = {"arch": arch, "num_classes": num_classes, "image_size": image_size,
              "parameters": count_parameters(model), "flops": count_flops(model, image_size),
              "flops_convention": "2 FLOPs per multiply-add, batch 1, torch.utils.flop_counter.FlopCounterMode"}
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table("architecture", "classes", "input", "parameters", "GFLOPs")
    table.add_row(arch, str(num_classes), f"{image_size}x{image_size}",
                  f"{result['parameters']:,} ({result['parameters'] / 1e6:.3f} M)", f"{result['flops'] / 1e9:.3f}")
    console.print(table)
    console.print(f"FLOPs: {result['flops_convention']}")

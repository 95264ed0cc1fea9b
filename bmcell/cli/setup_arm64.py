"""`bmcell setup-arm64`: build (or check) the aarch64 environment that `bmcell parity --arch arm64` runs artefacts in."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from export.arm64.environment import (
    Arm64Environment,
    build_environment,
    default_root,
    environment_status,
    missing_prerequisites,
)


@reports_errors
def setup_arm64(
    root: Optional[Path] = typer.Option(None, help="Where to build it (default: $BMCELL_ARM64, else a folder under "
                                        "~/.cache/bmcell keyed on the runtimes' versions)."),
    check: bool = typer.Option(False, "--check", help="Only say what is built and what is missing; build nothing."),
) -> None:
    """Build the aarch64 environment from the package registries (qemu-aarch64, Python 3.11, the runtimes' aarch64
    wheels, ExecuTorch's runner); idempotent: parts already built are kept."""
    if check:
        env = Arm64Environment(default_root(root))
        for part, built in environment_status(env).items():
            console.print(f"{part:<8} {'built' if built else 'missing'}")
        for problem in missing_prerequisites():
            console.print(f"missing: {problem}")
        console.print(f"environment: {env.root}")
        return
    env = build_environment(root, console.print)
    console.print(f"[green]aarch64 environment ready[/] in {env.root}")

"""What every command shares: turning bmcell errors into one clear line and a non-zero exit."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console

from bmcell.errors import BmcellError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_USAGE = 2


def reports_errors(command: Callable) -> Callable:
    """Wrap a command so a BmcellError prints `error: ...` and exits with status 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BmcellError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]; a training run continues with `bmcell train --out DIR --resume`")
            raise typer.Exit(130) from None

    return wrapper

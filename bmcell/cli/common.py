"""What every command shares: bmcell errors as one clear line and a non-zero exit, and other libraries' output
kept in a log file instead of between our lines."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import typer
from rich.console import Console

from bmcell.core.errors import BmcellError
from bmcell.core.run_folder import LOG_FILE

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_USAGE = 2
VERBOSE = typer.Option(False, "--verbose", help="Show other libraries' warnings, progress bars and log lines "
                       f"(by default they go to {LOG_FILE} in the output folder).")


@dataclass(frozen=True)
class RunLog:
    """Where other libraries' output went, and a function for our own detail lines (printed with --verbose)."""

    path: Path
    detail: Callable[[str], None]


@contextlib.contextmanager
def other_libraries_logged(folder: Path, verbose: bool) -> Iterator[RunLog]:
    """Send what other libraries print (Python warnings, progress bars, logging, native stderr lines) to
    folder/bmcell.log while the block runs; our console lines and bmcell's own logged warnings still show.
    With verbose, nothing is redirected. An exception leaves the block normally, so its traceback is shown."""
    log_path = Path(folder) / LOG_FILE
    if verbose:
        yield RunLog(log_path, console.print)
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sink = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - kept open: see below
    sink.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} bmcell {' '.join(sys.argv[1:])}\n")
    sink.flush()
    real_stderr = sys.stderr
    native = _redirect_native_stderr(sink)
    ours = logging.StreamHandler(native.shown if native else real_stderr)
    ours.setFormatter(logging.Formatter("warning: %(message)s"))
    bmcell_log = logging.getLogger("bmcell")
    bmcell_log.addHandler(ours)
    bmcell_log.propagate = False
    sys.stderr = sink
    failed = False
    try:
        yield RunLog(log_path, lambda line: print(line, file=sink, flush=True))
    except (BmcellError, typer.Exit):  # our own message says it all
        raise
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr = real_stderr
        bmcell_log.removeHandler(ours)
        bmcell_log.propagate = True
        sink.flush()  # not closed: a library may have kept it as its log stream; it closes at exit
        if native:
            native.restore()
        if failed:
            err_console.print(f"other libraries' messages from this run: {log_path}")


@dataclass
class _NativeStderr:
    """File descriptor 2 pointed at a log file, with the terminal's descriptor kept for restoring and for our lines."""

    saved_fd: int
    shown: TextIO

    def restore(self) -> None:
        """Point descriptor 2 back at the terminal."""
        self.shown.flush()
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        self.shown.close()


def _redirect_native_stderr(sink: TextIO) -> _NativeStderr | None:
    """Point descriptor 2 (where native libraries write) at sink; None when stderr is not descriptor 2 (tests)."""
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    return _NativeStderr(saved, os.fdopen(os.dup(saved), "w", buffering=1))


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

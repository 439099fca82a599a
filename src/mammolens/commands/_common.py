"""Helpers every command uses: error handling, JSON output, QC summaries.

Progress bars live in :mod:`mammolens.progress` (library code uses them too); ``progress``
and ``with_epoch_progress`` are re-exported here for the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mammolens.errors import EXIT_ERROR, EXIT_REJECTED, MammolensError
from mammolens.jsonio import to_json
from mammolens.progress import progress_bar as progress
from mammolens.progress import stderr_console, with_epoch_progress
from mammolens.qc import QCTable

__all__ = [
    "cli_errors", "config_option", "console", "device_option", "emit_json", "exit_with", "json_option", "model_option",
    "out", "progress", "quiet_option", "report_qc", "set_option", "to_json", "with_epoch_progress",
]

#: messages, progress and tables for people go to stderr; results (JSON) to stdout
console = stderr_console()
out = Console()


# Options the training-side commands (train, cv, pretrain-*) share, defined once so their
# flags and help read the same everywhere.
def config_option(default: str) -> Any:
    return typer.Option(default, "--config", help="Preset (tiny, paper, mias) or a YAML file.")


def model_option() -> Any:
    return typer.Option("", "--model", "-m", help="attention or baseline (overrides model.kind), or a name like attention_resnet18.")


def set_option() -> Any:
    return typer.Option([], "--set", help="Override a config value: --set optim.lr=3e-4 (repeatable).")


def device_option(default: str = "auto") -> Any:
    return typer.Option(default, "--device", help="cpu, cuda or auto.")


def json_option(what: str = "the result") -> Any:
    return typer.Option(False, "--json", help=f"Print {what} as JSON to stdout.")


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help="No progress bars.")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library errors into a one-line message and exit status 1 (no traceback)."""
    try:
        yield
    except MammolensError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_ERROR) from None
    except FileNotFoundError as e:
        console.print(f"[bold red]error:[/] {e.filename or ''}: file not found")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is kept; run the same command again to resume")
        raise typer.Exit(130) from None


def emit_json(obj: Any) -> None:
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def report_qc(qc: QCTable, qc_path: Path | None, *, what: str = "input(s)") -> int:
    """Print a summary of rejected/flagged inputs; return the exit status (0 or 3)."""
    rej = qc.rejected
    if qc.flagged:
        console.print(f"[yellow]{len(qc.flagged)} {what} flagged[/] (used, but see the QC table)")
    if not rej:
        return 0
    table = Table(title=f"{len(rej)} {what} rejected", show_header=True, header_style="bold red")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, n in qc.reasons("reject").most_common():
        table.add_row(reason, str(n))
    console.print(table)
    if qc_path is not None:
        console.print(f"QC table: {qc_path}")
    return EXIT_REJECTED


def exit_with(status: int) -> None:
    if status:
        raise typer.Exit(status)

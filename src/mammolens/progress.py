"""Progress bars for people: rich bars on stderr, shared by the library stages and the CLI.

Library functions take a plain ``progress(done, total)`` callable (or ``None``) so they
stay usable without a terminal; this module turns that protocol into a rich bar. It lives
in the library (not in :mod:`mammolens.commands`) so that library code never imports the
CLI layer. rich is imported lazily: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.progress import Progress

_console: Console | None = None


def stderr_console() -> Console:
    """The one rich console on stderr (messages and bars for people; results go to stdout)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def progress_bar(transient: bool = False) -> Progress:
    """A rich progress bar (to stderr) with count, elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=transient,
    )


@contextmanager
def callback_bar(
    name: str, enabled: bool = True, *, total: int | None = None, transient: bool = True
) -> Iterator[Callable[[int, int], None] | None]:
    """A bar as a ``progress(done, total)`` callable for a library function (``None`` when off).

    Examples
    --------
    >>> with callback_bar("preprocess", enabled=False) as cb:
    ...     cb is None
    True
    """
    if not enabled:
        yield None
        return
    with progress_bar(transient=transient) as bar:
        task = bar.add_task(name, total=total)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield step


def with_epoch_progress(
    run: Callable[[Callable[[dict[str, float]], None] | None], Any],
    *,
    title: str,
    epochs: int,
    describe: Callable[[dict[str, float]], str],
    show: bool,
) -> Any:
    """Call ``run(on_epoch)`` with a per-epoch progress bar (``run(None)`` when not ``show``).

    ``on_epoch`` takes a training function's epoch record (with ``epoch``, 1-based) and
    shows ``"{title}: {describe(record)}"``.
    """
    if not show:
        return run(None)
    with progress_bar() as bar:
        task = bar.add_task(title, total=epochs)

        def on_epoch(rec: dict[str, float]) -> None:
            bar.update(task, completed=int(rec["epoch"]), description=f"{title}: {describe(rec)}")

        return run(on_epoch)

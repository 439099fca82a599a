"""The ``mammolens`` command line: one Typer app, one command per stage.

Each command lives in :mod:`mammolens.commands` and is a thin call into the library.
Command modules must not import torch (or other heavy libraries) at import time, so
``mammolens --help`` and ``mammolens stats ...`` start fast.
"""

from __future__ import annotations

import importlib

import typer

from mammolens import __version__

app = typer.Typer(
    name="mammolens",
    help="Breast cancer detection in screening mammography: data -> model -> statistics -> reading room.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: single commands, in data-flow order: name -> "module:function"
COMMANDS: dict[str, str] = {
    "synth": "mammolens.commands.synth:synth",
    "ingest": "mammolens.commands.ingest:ingest",
    "preprocess": "mammolens.commands.preprocess:preprocess",
    "split": "mammolens.commands.split:split",
    "pretrain-ssl": "mammolens.commands.pretrain_ssl:pretrain_ssl",
    "pretrain-patches": "mammolens.commands.pretrain_patches:pretrain_patches",
    "train": "mammolens.commands.train:train",
    "cv": "mammolens.commands.cv:cv",
    "cv-compare": "mammolens.commands.cv:cv_compare",
    "predict": "mammolens.commands.predict:predict",
    "evaluate": "mammolens.commands.evaluate:evaluate",
    "export": "mammolens.commands.export:export",
    "demo": "mammolens.commands.demo:demo",
    "serve": "mammolens.commands.serve:serve",
}
#: command groups (Typer sub-apps): name -> "module:app"
GROUPS: dict[str, str] = {
    "stats": "mammolens.commands.stats:app",
    "users": "mammolens.commands.users:app",
}


class CommandImportError(ImportError):
    """A command's module failed to import: the CLI refuses to start without it."""


def _load(target: str):
    """Import ``"module:attr"``; a module that fails to import stops the CLI, naming it.

    A command silently missing from ``--help`` hides a broken install or a bug, so
    every import error (a missing dependency included) is raised with the command's target.
    """
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CommandImportError(f"mammolens: cannot load command {target!r}: {type(e).__name__}: {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise CommandImportError(f"mammolens: cannot load command {target!r}: {module_name} has no {attr!r}") from e


def _register() -> None:
    for name, target in COMMANDS.items():
        app.command(name)(_load(target))
    for name, target in GROUPS.items():
        app.add_typer(_load(target), name=name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mammolens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """mammolens: one command per stage (synth, ingest, preprocess, split, train, predict, evaluate, serve)."""


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``mammolens users``: reader / admin accounts of the service."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json

app = typer.Typer(name="users", help="Manage accounts of `mammolens serve` (readers and admins).", no_args_is_help=True)

DB_OPT = typer.Option(None, "--db", help="Database URL (default: sqlite:///DATA/mammolens.db).")
DATA_OPT = typer.Option(Path("mammolens-data"), "--data", help="Service data folder (for the default SQLite database).")


def _database(db: str | None, data: Path):
    from mammolens.serve.db import Database

    if db is None:
        data.mkdir(parents=True, exist_ok=True)
        db = f"sqlite:///{data.resolve() / 'mammolens.db'}"
    return Database(db)


def _password(env: str) -> str:
    pw = os.environ.get(env, "")
    if pw:
        return pw
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="User name (letters, digits, '_', '.', '-')."),
    role: str = typer.Option("reader", "--role", help="reader or admin."),
    db: str = DB_OPT,
    data: Path = DATA_OPT,
    password_env: str = typer.Option("MAMMOLENS_PASSWORD", "--password-env", help="Environment variable holding the password (else prompted)."),
    json_out: bool = typer.Option(False, "--json", help="Print the new account as JSON."),
) -> None:
    """Create an account; the password comes from $MAMMOLENS_PASSWORD or a prompt.

    Example: mammolens users add alice --role admin --db postgresql://mammolens@127.0.0.1/mammolens
    """
    with cli_errors():
        from mammolens.serve.auth import create_user

        database = _database(db, data)
        pw = _password(password_env)
        with database.session() as s:
            u = create_user(s, name, pw, role=role)
            out = {"id": u.id, "username": u.username, "role": u.role}
        database.dispose()
        if json_out:
            emit_json(out)
        else:
            console.print(f"created {out['role']} {out['username']!r}")


@app.command("list")
def list_users(db: str = DB_OPT, data: Path = DATA_OPT, json_out: bool = typer.Option(False, "--json")) -> None:
    """List accounts. Example: mammolens users list --json"""
    with cli_errors():
        from mammolens.serve import queries

        database = _database(db, data)
        with database.session() as s:
            rows = [{"id": u.id, "username": u.username, "role": u.role, "active": u.active}
                    for u in queries.list_users(s)]
        database.dispose()
        if json_out:
            emit_json(rows)
        else:
            for r in rows:
                console.print(f"{r['id']:>4}  {r['username']:<24} {r['role']:<7} {'active' if r['active'] else 'disabled'}")


@app.command("passwd")
def passwd(
    name: str = typer.Argument(..., help="User name."),
    db: str = DB_OPT,
    data: Path = DATA_OPT,
    password_env: str = typer.Option("MAMMOLENS_PASSWORD", "--password-env"),
) -> None:
    """Set a new password (ends the user's sessions). Example: mammolens users passwd alice"""
    with cli_errors():
        from mammolens.errors import ConfigError
        from mammolens.serve import queries
        from mammolens.serve.auth import set_password

        database = _database(db, data)
        pw = _password(password_env)
        with database.session() as s:
            u = queries.user_by_name(s, name)
            if u is None:
                raise ConfigError(f"no user {name!r}")
            set_password(s, u, pw)
        database.dispose()
        console.print(f"password of {name!r} changed")


@app.command("disable")
def disable(name: str = typer.Argument(...), db: str = DB_OPT, data: Path = DATA_OPT) -> None:
    """Disable an account (ends its sessions). Example: mammolens users disable bob"""
    with cli_errors():
        from mammolens.errors import ConfigError
        from mammolens.serve import queries

        database = _database(db, data)
        with database.session() as s:
            u = queries.user_by_name(s, name)
            if u is None:
                raise ConfigError(f"no user {name!r}")
            queries.update_user(s, u, active=False, role=None)
        database.dispose()
        console.print(f"{name!r} disabled")

"""One owner of the service's SQL: ``mammolens.serve.queries``.

Every statement on the service database is built and run there; the routes, the worker,
the DICOM outputs, the intake, the accounts and the ``mammolens users`` command call its
functions. (Loading a row by primary key, adding, deleting and changing ORM objects in
the caller's own session is the unit of work, not a query, and stays with the caller.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import mammolens

PKG = Path(mammolens.__file__).parent
OWNER = PKG / "serve" / "queries.py"
# engine set-up (SQLite PRAGMAs on the DBAPI cursor, the read snapshot's BEGIN) and the
# Alembic migrations are the database's plumbing, not queries of the service
PLUMBING = {PKG / "serve" / "db.py"}
MIGRATIONS = PKG / "serve" / "migrations"

#: SQLAlchemy's statement builders
BUILDERS = {"select", "update", "delete", "insert", "text", "func", "union", "exists", "literal_column"}
#: Session methods that run SQL statements
RUNNERS = {"execute", "scalar", "scalars", "query", "exec_driver_sql"}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            out += [f"{path.relative_to(PKG)}:{node.lineno}: imports sqlalchemy.{a.name}" for a in node.names if a.name in BUILDERS]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RUNNERS:
            out.append(f"{path.relative_to(PKG)}:{node.lineno}: .{node.func.attr}(...)")
    return out


def test_only_serve_queries_builds_and_runs_sql():
    files = [
        p for p in sorted(PKG.rglob("*.py"))
        if p != OWNER and p not in PLUMBING and MIGRATIONS not in p.parents
    ]
    assert len(files) > 50 and PKG / "serve" / "worker.py" in files  # the scan covers the package
    offences = [o for p in files for o in _offences(p)]
    assert offences == [], "SQL outside mammolens.serve.queries:\n" + "\n".join(offences)


def test_the_scan_sees_sql_where_there_is_some():
    """The check above would notice a query: it finds the owner's own."""
    found = _offences(OWNER)
    assert any(".execute(" in o for o in found) and any("sqlalchemy.select" in o for o in found)

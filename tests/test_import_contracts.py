"""The layering rules of docs/architecture.md ("Import contracts"), checked on the source.

Every ``import`` in ``src/mammolens`` counts, including those inside functions (the package
imports heavy libraries lazily, and a lazy import is still a dependency). The graph is built
from the source with :mod:`ast`, so the check is fast and needs no extra tool.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "mammolens"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The longest prefix of a dotted name that is a module of the package (else the name)."""
    mods = _modules()
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in mods:
            return cand
    return name


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


@cache
def _imports(module: str) -> tuple[tuple[str, int, bool], ...]:
    """(imported name, line, only under TYPE_CHECKING) for every import in ``module``."""
    path = _modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_stmt(sub, True)
                for sub in child.orelse:
                    visit_stmt(sub, typing_only)
                continue
            visit_stmt(child, typing_only)

    def visit_stmt(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append((_resolve(a.name), node.lineno, typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            for a in node.names:
                # ``from pkg import mod`` imports the module pkg.mod when it exists
                full = f"{root}.{a.name}"
                found.append((_resolve(full) if full in _modules() else _resolve(root), node.lineno, typing_only))
        visit(node, typing_only)

    visit(tree, False)
    return tuple(found)


def _violations(sources: list[str], forbidden: tuple[str, ...], *, allow: tuple[str, ...] = ()) -> list[str]:
    bad: list[str] = []
    for mod in sources:
        for name, line, _ in _imports(mod):
            hit = any(name == f or name.startswith(f + ".") for f in forbidden)
            ok = any(name == a or name.startswith(a + ".") for a in allow)
            if hit and not ok:
                msg = f"{_modules()[mod].relative_to(SRC)}:{line} imports {name}"
                if msg not in bad:
                    bad.append(msg)
    return bad


def _in(prefix: str) -> list[str]:
    return [m for m in _modules() if m == prefix or m.startswith(prefix + ".")]


def _outside(*prefixes: str) -> list[str]:
    return [m for m in _modules() if not any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_the_graph_sees_lazy_and_relative_imports():
    # a sanity check of the checker itself: a function-level import is found
    names = {n for n, _, _ in _imports("mammolens.cli")}
    assert "importlib" in names and "typer" in names
    assert any(n == "mammolens.errors" for n, _, _ in _imports("mammolens.commands._common"))


def test_only_the_cli_layer_imports_commands_or_typer():
    lib = _outside("mammolens.commands", "mammolens.cli")
    assert _violations(lib, ("mammolens.commands", "typer", "click")) == []


def test_io_imports_nothing_from_data():
    assert _violations(_in("mammolens.io"), ("mammolens.data",)) == []


def test_stats_imports_no_torch_and_no_pipeline_stage():
    # stats runs on anyone's scores on any machine: numpy/scipy/pandas, plus the manifest's
    # level keys (breast = patient, study, laterality) so that every stage groups alike
    heavy = ("torch", "torchvision", "pytorch_lightning", "lightning")
    stages = ("mammolens.models", "mammolens.train", "mammolens.predict", "mammolens.evaluate",
              "mammolens.serve", "mammolens.commands", "mammolens.data", "mammolens.io")
    allow = ("mammolens.data.manifest",)
    assert _violations(_in("mammolens.stats"), heavy + stages, allow=allow) == []


def test_only_serve_and_its_commands_import_serve():
    # the service uses the library, never the reverse; `mammolens serve` / `users` start it
    lib = _outside("mammolens.serve", "mammolens.commands", "mammolens.cli")
    assert _violations(lib, ("mammolens.serve",)) == []


def _circles() -> list[list[str]]:
    """Groups of modules that import each other at run time (Tarjan's strongly connected components)."""
    mods = _modules()
    graph = {m: sorted({n for n, _, typing_only in _imports(m) if not typing_only and n in mods and n != m}) for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            connect(v)
    return sorted(found)


#: circles tolerated for now (none: data.cache~preprocess, io.dicom~images and
#: predict.api~predictor were broken by giving the shared concept one home)
KNOWN_CIRCLES: list[list[str]] = []


def test_no_new_import_circles():
    # a circle means two modules own one concept between them: give it one home instead
    assert [c for c in _circles() if c not in KNOWN_CIRCLES] == []

"""The package's layers, read from the source: which module may import which.

Every ``import`` and ``from … import`` of every module is read from its syntax tree, those
inside functions included (a lazy import is still a dependency), so these checks cost no
import and see what a reviewer would. The rules:

- ``wire.py`` — the protocol between a tenant's machine and the server — imports nothing of
  the package and only the standard library;
- ``client/`` — what runs on a tenant's machine — imports only itself and ``wire``, and no
  Flask, SQLAlchemy or Alembic;
- nothing outside ``client/`` imports ``client/``: server code shares the wire, not the client;
- inside ``auth/`` imports run one way: no module reaches itself through others.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "mlflow_tenant_plugins"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
SERVER_LIBRARIES = ("flask", "sqlalchemy", "alembic", "werkzeug")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, wherever in the file; ``from pkg import mod`` counts as
    ``pkg.mod`` when that is a module of the package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in MODULES)
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _ours(found: set[str]) -> set[str]:
    return {m for m in found if _under(m, PACKAGE) and m != PACKAGE}


def _modules_under(prefix: str) -> Iterator[str]:
    return (m for m in MODULES if _under(m, prefix))


def test_the_source_tree_is_where_the_checks_look() -> None:
    assert f"{PACKAGE}.wire" in MODULES and f"{PACKAGE}.auth.authenticator" in MODULES
    assert len(list(_modules_under(f"{PACKAGE}.client"))) >= 3


def test_wire_imports_nothing_of_the_package_and_only_the_standard_library() -> None:
    found = imports_of(f"{PACKAGE}.wire")
    assert not _ours(found)
    outside = {m for m in found if m.split(".")[0] not in sys.stdlib_module_names
               and m != "__future__"}
    assert not outside, f"wire.py imports {sorted(outside)}: keep it standard library only"


def test_the_wire_spells_mlflows_workspace_header_as_mlflow_does() -> None:
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

    from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

    assert WORKSPACE_HEADER == WORKSPACE_HEADER_NAME


@pytest.mark.parametrize("name", sorted(_modules_under(f"{PACKAGE}.client")))
def test_client_modules_import_only_the_client_and_the_wire(name: str) -> None:
    found = imports_of(name)
    ours = {m for m in _ours(found) if not _under(m, f"{PACKAGE}.client")
            and m != f"{PACKAGE}.wire"}
    assert not ours, f"{name} (runs on a tenant's machine) imports {sorted(ours)}"
    libraries = {m for m in found if m.split(".")[0] in SERVER_LIBRARIES}
    assert not libraries, f"{name} (runs on a tenant's machine) imports {sorted(libraries)}"


def test_nothing_outside_the_client_imports_the_client() -> None:
    offenders = {name: sorted(m for m in imports_of(name) if _under(m, f"{PACKAGE}.client"))
                 for name in MODULES if not _under(name, f"{PACKAGE}.client")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, (
        f"server-side modules import client/: {offenders}; share constants and formats "
        "through mlflow_tenant_plugins.wire instead")


def _cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> … -> start in ``graph``, or None."""
    stack: list[tuple[str, list[str]]] = [(n, [start, n]) for n in sorted(graph[start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == start:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((n, [*path, n]) for n in sorted(graph.get(node, ())))
    return None


def test_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert _cycle_through("a", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle_through("a", {"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_inside_auth() -> None:
    auth = f"{PACKAGE}.auth"
    inside = [m for m in _modules_under(auth) if m != auth]
    graph = {m: {i for i in imports_of(m) if i in inside and i != m} for m in inside}
    cycles = [c for m in inside if (c := _cycle_through(m, graph))]
    assert not cycles, "auth/ modules import each other in circles: " + "; ".join(
        " -> ".join(p.removeprefix(auth + ".") for p in c) for c in cycles)


# -- MLflow's internals: only mlflow_hooks/ touches them -----------------------------------
HOOKS = f"{PACKAGE}.mlflow_hooks"


def mlflow_private_uses(source: str) -> list[str]:
    """MLflow private names ``source`` reaches for: ``from mlflow… import _x`` (or a private
    module), ``alias._y`` on a name bound to an mlflow module or import, ``import
    mlflow.server.auth`` (importing basic-auth configures it), and ``_MLFLOW_…`` strings
    (the environment ``mlflow server`` hands its workers)."""
    found: list[str] = []
    aliases: set[str] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "mlflow":
                    continue
                aliases.add(alias.asname or "mlflow")
                if any(p.startswith("_") for p in alias.name.split(".")) or _under(
                        alias.name, "mlflow.server.auth"):
                    found.append(alias.name)
        elif isinstance(node, ast.ImportFrom) and not node.level and (
                node.module or "").split(".")[0] == "mlflow":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if (alias.name.startswith("_")
                        or any(p.startswith("_") for p in node.module.split("."))
                        or _under(full, "mlflow.server.auth")
                        or _under(node.module, "mlflow.server.auth")):
                    found.append(full)
                else:
                    aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{base.id}….{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("_MLFLOW_")):
            found.append(repr(node.value))
    return found


def test_the_private_name_finder_sees_each_way_in() -> None:
    source = (
        "import os\nimport mlflow.server.auth as engine\n"
        "from mlflow.server import handlers\nfrom mlflow.prompt.constants import _P\n"
        "from mlflow.tracking._workspace import registry\n"
        "def f():\n    handlers._get_tracking_store()\n    os._exit\n"
        "    return '_MLFLOW_SERVER_FILE_STORE'\n")
    assert sorted(mlflow_private_uses(source)) == sorted([
        "mlflow.server.auth", "mlflow.prompt.constants._P",
        "mlflow.tracking._workspace.registry", "handlers…._get_tracking_store",
        "'_MLFLOW_SERVER_FILE_STORE'"])
    assert mlflow_private_uses("from mlflow.exceptions import MlflowException\n") == []


def test_only_the_hooks_package_touches_mlflow_internals() -> None:
    offenders = {name: uses for name in MODULES if not _under(name, HOOKS)
                 if (uses := mlflow_private_uses(MODULES[name].read_text()))}
    assert not offenders, (
        f"MLflow internals outside {HOOKS}: {offenders}; add a named hook there (with the "
        "MLflow versions it was checked against and a SHAPE entry) and call it")


def test_the_installed_mlflow_has_every_hooked_internal_outside_basic_auth() -> None:
    """basic-auth's own entries are checked by every server start (importing the engine here
    would configure it for this test process)."""
    from mlflow_tenant_plugins.mlflow_hooks import SHAPE, missing_from_mlflow

    outside = tuple(e for e in SHAPE if not _under(e[0], "mlflow.server.auth"))
    assert len(outside) >= 10 and missing_from_mlflow(outside) is None


def test_a_changed_mlflow_shape_refuses_to_start_in_one_line() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.version import VERSION

    from mlflow_tenant_plugins.mlflow_hooks import check_mlflow_shape

    with pytest.raises(MlflowException) as info:
        check_mlflow_shape((("mlflow.server.handlers", "_no_such_getter"),))
    message = info.value.message
    assert "\n" not in message
    assert "mlflow.server.handlers._no_such_getter" in message and VERSION in message

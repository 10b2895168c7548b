"""docs/architecture.md stays true: every file it points to exists, and every MLflow hook
(a public function of ``mlflow_hooks/``) is named in it, so a new hook is explained there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGE = ROOT / "mlflow_tenant_plugins"


def _paths(text: str) -> set[str]:
    """Backticked names that look like files or folders (``x.py``, ``x/``, ``docs/x.md``)."""
    found = set()
    for span in re.findall(r"`([^`\s]+)`", text):
        if re.fullmatch(r"[\w./*-]+(\.py|\.md|/)", span):
            found.add(span)
    return found


def _exists(path: str) -> bool:
    if "*" in path:
        return any(PACKAGE.glob(path)) or any(ROOT.glob(path))
    return (ROOT / path).exists() or (PACKAGE / path).exists()


def test_every_path_the_architecture_doc_names_exists():
    paths = _paths(DOC)
    assert len(paths) > 40
    assert sorted(p for p in paths if not _exists(p)) == []


def test_every_mlflow_hook_is_named_in_the_architecture_doc():
    hooks = set()
    for module in (PACKAGE / "mlflow_hooks").glob("*.py"):
        if module.name == "__init__.py":
            continue
        tree = ast.parse(module.read_text())
        hooks |= {n.name for n in tree.body
                  if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert hooks
    assert sorted(h for h in hooks if f"`{h}`" not in DOC) == []


def test_the_path_finder_sees_a_missing_file():
    assert _paths("see `auth/nowhere.py` and `docs/x.md`, not `a b`") == {
        "auth/nowhere.py", "docs/x.md"}
    assert not _exists("auth/nowhere.py")

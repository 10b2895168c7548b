"""The floors of docs/architecture.md, read from the source as tests/test_layers.py reads it:
``tenancy/`` is the ground floor (it stands on the wire and the hooks only), and the parts on
it never reach up to the modules that assemble the server."""

from __future__ import annotations

import pytest

from tests.test_layers import MODULES, _modules_under, _ours, _under, imports_of

GROUND = "mlflow_tenant_plugins.tenancy"
BELOW_GROUND = ("mlflow_tenant_plugins.wire", "mlflow_tenant_plugins.mlflow_hooks")
PARTS = ("mlflow_tenant_plugins.auth", "mlflow_tenant_plugins.artifacts",
         "mlflow_tenant_plugins.deployments", "mlflow_tenant_plugins.monitoring")
TOP = ("mlflow_tenant_plugins.server", "mlflow_tenant_plugins.cli",
       "mlflow_tenant_plugins.admin_api")


def _above(found: set[str], allowed: tuple[str, ...]) -> set[str]:
    return {m for m in _ours(found) if not any(_under(m, a) for a in allowed)}


@pytest.mark.parametrize("name", sorted(_modules_under(GROUND)))
def test_the_ground_floor_imports_only_itself_the_wire_and_the_hooks(name: str) -> None:
    assert _above(imports_of(name), (GROUND, *BELOW_GROUND)) == set()


@pytest.mark.parametrize("name", sorted(m for m in MODULES if any(_under(m, p) for p in PARTS)))
def test_no_part_imports_the_modules_that_assemble_the_server(name: str) -> None:
    assert {m for m in _ours(imports_of(name)) if any(_under(m, t) for t in TOP)} == set()


def test_the_floor_checks_see_a_violation() -> None:
    assert _above({"mlflow_tenant_plugins.auth.engine", "mlflow_tenant_plugins.wire"},
                  (GROUND, *BELOW_GROUND)) == {"mlflow_tenant_plugins.auth.engine"}

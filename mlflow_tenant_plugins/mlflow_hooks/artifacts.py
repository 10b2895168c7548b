"""Hooks into MLflow's artifact serving (checked against MLflow 3.17.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def proxied_artifact_repository() -> Any:
    """The repository MLflow's proxied artifact routes serve from
    (``handlers._get_artifact_repo_mlflow_artifacts``; with our wrap, the request tenant's).
    Checked against MLflow 3.17.2."""
    from mlflow.server import handlers

    return handlers._get_artifact_repo_mlflow_artifacts()


def wrap_proxied_artifact_repository(wrap: Callable[[Any], Any]) -> None:
    """Gap in MLflow's proxied artifacts with workspaces: the getter caches the first
    repository it builds — bound by ``for_workspace`` to whichever tenant made the first
    request — and serves it to every later request. Each call now returns
    ``wrap(cached repository)``. Idempotent. Checked against MLflow 3.17.2."""
    from mlflow.server import handlers

    cached = handlers._get_artifact_repo_mlflow_artifacts
    if getattr(cached, "tenant_per_request", False):
        return

    def per_request():
        return wrap(cached())

    per_request.tenant_per_request = True
    handlers._get_artifact_repo_mlflow_artifacts = per_request


def tenant_artifact_repository(tenant: str) -> Any:
    """The proxied destination repository bound to ``tenant``: MLflow caches one repository
    per process; a workspace-aware one (MLflow's ``for_workspace`` hook, e.g. tenant-s3) is
    bound to the tenant here, for server work done on a tenant's behalf."""
    repo = proxied_artifact_repository()
    bind = getattr(getattr(repo, "origin", repo), "for_workspace", None)
    return bind(tenant) if bind is not None else repo


def proxied_artifact_path(uri: str) -> str:
    """Where an ``mlflow-artifacts:`` URI lives in the destination repository, scoped to the
    request's workspace exactly as MLflow's artifact routes scope it
    (``_get_proxied_run_artifact_destination_path``,
    ``_get_workspace_scoped_repo_path_if_enabled``). Checked against MLflow 3.17.2."""
    from mlflow.server import handlers

    path = handlers._get_proxied_run_artifact_destination_path(uri)
    return handlers._get_workspace_scoped_repo_path_if_enabled(path)


def artifact_repository_registry() -> Any:
    """The process's artifact repository registry (``_artifact_repository_registry``), whose
    ``get_artifact_repository`` every repository MLflow builds goes through: the place to
    fence them. Checked against MLflow 3.17.2."""
    from mlflow.store.artifact import artifact_repository_registry as registry_module

    return registry_module._artifact_repository_registry

"""Every place this package reaches into MLflow's internals, and the startup check that they
are still there.

The rest of the package imports MLflow's public API or this package (tests/test_layers.py
enforces it). Each hook is a named function whose docstring says why it is needed and the
MLflow versions it was checked against (:data:`CHECKED_AGAINST`). When MLflow's shape
changes, :func:`check_mlflow_shape` (called by ``create_app`` before anything is patched)
refuses to start in one line naming the missing attribute and the installed version.

- :mod:`.basic_auth` — MLflow's basic-auth engine (``mlflow.server.auth``): its generated ini
  and environment, its store, validator table and the functions route coverage classifies
  routes with;
- :mod:`.server` — the server's memoized stores, its workspace store, the environment
  ``mlflow server`` hands its workers, the error-code table, prompt placeholders;
- :mod:`.artifacts` — the proxied-artifact repository getter and the artifact repository
  registry.
"""

from __future__ import annotations

import importlib

CHECKED_AGAINST = ("3.17.2",)

# (module, attribute) every hook below relies on; basic-auth last (importing it reads the
# generated ini, so it is checked only once the engine is configured).
SHAPE: tuple[tuple[str, str], ...] = (
    ("mlflow.exceptions", "ERROR_CODE_TO_HTTP_STATUS"),
    ("mlflow.prompt.constants", "_PROMPT_SOURCE_PLACEHOLDERS"),
    ("mlflow.server.handlers", "_get_tracking_store"),
    ("mlflow.server.handlers", "_get_model_registry_store"),
    ("mlflow.server.handlers", "_get_artifact_repo_mlflow_artifacts"),
    ("mlflow.server.handlers", "_get_proxied_run_artifact_destination_path"),
    ("mlflow.server.handlers", "_get_workspace_scoped_repo_path_if_enabled"),
    ("mlflow.server.workspace_helpers", "_get_workspace_store"),
    ("mlflow.server.workspace_helpers", "_workspace_store"),
    ("mlflow.store.artifact.artifact_repo", "_is_object_key_within_path"),
    ("mlflow.store.artifact.artifact_repository_registry", "_artifact_repository_registry"),
    ("mlflow.server.auth.sqlalchemy_store", "SqlAlchemyStore"),
    ("mlflow.server.auth.db.utils", "migrate_if_needed"),
    ("mlflow.server.auth", "auth_config"),
    ("mlflow.server.auth", "store"),
    ("mlflow.server.auth", "app"),
    ("mlflow.server.auth", "create_app"),
    ("mlflow.server.auth", "BEFORE_REQUEST_VALIDATORS"),
    ("mlflow.server.auth", "FASTAPI_ENDPOINT_RESPONSE_FILTERS"),
    ("mlflow.server.auth", "authenticate_request"),
    ("mlflow.server.auth", "is_unprotected_route"),
    ("mlflow.server.auth", "_get_tracking_store"),
    ("mlflow.server.auth", "_find_validator"),
    ("mlflow.server.auth", "_find_fastapi_validator"),
    ("mlflow.server.auth", "_authorized_outside_before_request"),
    ("mlflow.server.auth", "_is_proxy_artifact_path"),
    ("mlflow.server.auth", "_get_proxy_artifact_validator"),
)


def missing_from_mlflow(shape: tuple[tuple[str, str], ...] = SHAPE) -> str | None:
    """The first ``module.attribute`` of ``shape`` the installed MLflow lacks, or None."""
    for module_name, attribute in shape:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return module_name
        if not hasattr(module, attribute):
            return f"{module_name}.{attribute}"
    return None


def _renamed_server_env() -> str | None:
    """The first worker environment variable MLflow no longer spells as we do, or None."""
    from mlflow.server import constants, handlers

    from mlflow_tenant_plugins.mlflow_hooks.server import SERVER_ENV

    for attribute, name in SERVER_ENV.items():
        module = handlers if attribute == "STATIC_PREFIX_ENV_VAR" else constants
        if getattr(module, attribute, None) != name:
            return f"{module.__name__}.{attribute} == {name!r}"
    return None


def check_mlflow_shape(shape: tuple[tuple[str, str], ...] = SHAPE) -> None:
    """Refuse to start, in one line, when an MLflow internal a hook needs is gone."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_STATE
    from mlflow.version import VERSION

    missing = missing_from_mlflow(shape) or (_renamed_server_env() if shape is SHAPE else None)
    if missing is not None:
        raise MlflowException(
            f"tenant-auth needs {missing}, which MLflow {VERSION} does not have (checked "
            f"against MLflow {', '.join(CHECKED_AGAINST)}): install a checked version",
            INVALID_STATE,
        )

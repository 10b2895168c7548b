"""Hooks into MLflow's tracking server outside basic-auth (checked against MLflow 3.17.2).

MLflow memoizes its stores per process behind private getters, passes its command line to
workers in ``_MLFLOW_*`` environment variables, and keeps a few tables as module globals;
these are the named accessors the rest of the package uses instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any


def tracking_store() -> Any:
    """The server's workspace-aware tracking store (``handlers._get_tracking_store``), memoized
    per process with the server's backend URI and artifact root; every public method honours
    the request's workspace. Checked against MLflow 3.17.2."""
    from mlflow.server import handlers

    return handlers._get_tracking_store()


def registry_store() -> Any:
    """The server's model registry store (``handlers._get_model_registry_store``). Checked
    against MLflow 3.17.2."""
    from mlflow.server import handlers

    return handlers._get_model_registry_store()


def open_server_stores(tracking_uri: str, artifact_root: str, registry_uri: str) -> None:
    """Build (and so migrate) the tracking and registry stores for these URIs the way the
    server does: ``mlflow-tenants db upgrade`` and worker startup run MLflow's own schema
    migrations under our lock. Checked against MLflow 3.17.2."""
    from mlflow.server import handlers

    handlers._get_tracking_store(tracking_uri, artifact_root)
    handlers._get_model_registry_store(registry_uri)


def wrap_workspace_store(wrap: Callable[[Any], Any], already: type) -> None:
    """Replace the workspace store MLflow memoizes for request resolution
    (``workspace_helpers._workspace_store``) with ``wrap(store)``, unless it is already an
    ``already``. MLflow has no public setter; read on every request that names a workspace.
    Checked against MLflow 3.17.2."""
    from mlflow.server import workspace_helpers

    store = workspace_helpers._get_workspace_store()
    if not isinstance(store, already):
        workspace_helpers._workspace_store = wrap(store)


# The environment ``mlflow server`` hands its workers (``mlflow.server.constants`` and
# ``handlers.STATIC_PREFIX_ENV_VAR`` spell them; :func:`check_mlflow_shape` checks they still
# do). Spelled here so reading settings does not import ``mlflow.server`` (a Flask app).
SERVER_ENV = {
    "BACKEND_STORE_URI_ENV_VAR": "_MLFLOW_SERVER_FILE_STORE",  # --backend-store-uri
    "REGISTRY_STORE_URI_ENV_VAR": "_MLFLOW_SERVER_REGISTRY_STORE",  # --registry-store-uri
    "ARTIFACTS_DESTINATION_ENV_VAR": "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
    "STATIC_PREFIX_ENV_VAR": "_MLFLOW_STATIC_PREFIX",  # --static-prefix
}
BACKEND_STORE_ENV = SERVER_ENV["BACKEND_STORE_URI_ENV_VAR"]


def backend_store_uri(environ: Mapping[str, str] | None = None) -> str:
    """The ``--backend-store-uri`` that ``mlflow server`` hands its workers ('' outside a
    server). Checked against MLflow 3.17.2."""
    return (os.environ if environ is None else environ).get(BACKEND_STORE_ENV, "")


def registry_store_uri() -> str:
    """The server's ``--registry-store-uri`` ('' when unset: MLflow uses the backend store).
    Checked against MLflow 3.17.2."""
    return os.environ.get(SERVER_ENV["REGISTRY_STORE_URI_ENV_VAR"], "")


def artifacts_destination() -> str:
    """The server's ``--artifacts-destination`` ('' when unset). Checked against MLflow
    3.17.2."""
    return os.environ.get(SERVER_ENV["ARTIFACTS_DESTINATION_ENV_VAR"], "")


def static_prefix() -> str:
    """The server's ``--static-prefix`` ('' when none), as its workers read it. Checked
    against MLflow 3.17.2."""
    return os.environ.get(SERVER_ENV["STATIC_PREFIX_ENV_VAR"], "")


def set_http_status(error_code: str, status: int) -> None:
    """Make every ``MlflowException`` with ``error_code`` answer ``status``: MLflow's
    ``ERROR_CODE_TO_HTTP_STATUS`` table, read by ``get_http_status_code`` on every Flask and
    FastAPI error path (no public way to map a code). Checked against MLflow 3.17.2."""
    from mlflow.exceptions import ERROR_CODE_TO_HTTP_STATUS

    ERROR_CODE_TO_HTTP_STATUS[error_code] = status


def prompt_source_placeholders() -> frozenset[str]:
    """The ``source`` values MLflow gives prompt versions (``_PROMPT_SOURCE_PLACEHOLDERS``):
    placeholders, never read as a location. Checked against MLflow 3.17.2."""
    from mlflow.prompt.constants import _PROMPT_SOURCE_PLACEHOLDERS

    return frozenset(_PROMPT_SOURCE_PLACEHOLDERS)


def is_object_key_within_path(key: str, path: str) -> bool:
    """MLflow's own rule for whether an object key lies under an artifact path
    (``artifact_repo._is_object_key_within_path``), so our listing agrees with S3's.
    Checked against MLflow 3.17.2."""
    from mlflow.store.artifact.artifact_repo import _is_object_key_within_path

    return _is_object_key_within_path(key, path)


def tenant_workspace(tenant: str) -> Any:
    """A context in which MLflow's server-side stores act in ``tenant``'s workspace
    (``ServerWorkspaceContext``), for work the server does on a tenant's behalf outside a
    request of that tenant; no-op without workspaces. Checked against MLflow 3.17.2."""
    from contextlib import nullcontext

    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    if not MLFLOW_ENABLE_WORKSPACES.get():
        return nullcontext()
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    return ServerWorkspaceContext(tenant)

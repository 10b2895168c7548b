"""Every schema of the platform's database migrated once, under one lock, before anything
else in a worker touches the database.

``mlflow server --workers N`` runs the app factory in N processes at once, and several
instances may start together. MLflow migrates its tracking and model-registry schema in the
``mlflow server`` process (unlocked: two instances on a fresh database race) and basic-auth's
schema in every worker (unlocked: workers race to create ``alembic_version_auth``, and one dies
with ``UniqueViolation``). Running all of them here first, inside the lock of
:func:`mlflow_tenant_plugins.tenancy.db.migration_lock`, leaves MLflow only schemas at head to
verify. Called once basic-auth's ini is written: importing its migration module reads it.
MLflow internals used (checked against 3.17.2): ``mlflow.server.handlers.
_get_tracking_store`` / ``_get_model_registry_store`` (the stores MLflow caches per process, so
MLflow reuses the ones made here) and ``mlflow.server.auth.db.utils.migrate_if_needed``.
"""

from __future__ import annotations

import os

import sqlalchemy

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.mlflow_hooks import server as mlflow_server
from mlflow_tenant_plugins.tenancy.db import get_engine, migration_lock

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _is_sql(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in _SQL_SCHEMES


def migrate_platform(settings: Settings, backend_store_uri: str | None = None) -> None:
    """Migrate MLflow's tracking and registry schema (the server's backend store, when it is a
    database), basic-auth's and the tenant registry's, each once, under the database's lock."""
    tracking = backend_store_uri or mlflow_server.backend_store_uri()
    with migration_lock(settings.database_uri):
        if tracking and _is_sql(tracking):
            with migration_lock(tracking):  # the same lock when it is the same database
                _migrate_tracking(tracking)
        _migrate_basic_auth(settings.database_uri)
        get_engine(settings.database_uri)  # the registry (its own lock is re-entered)


def _migrate_tracking(uri: str) -> None:
    from mlflow.server.constants import ARTIFACT_ROOT_ENV_VAR
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    # Outside a server (`mlflow-tenants db upgrade`): the root `mlflow server` gives the
    # default experiment when it serves artifacts, as tenant-auth's destinations require.
    root = os.environ.get(ARTIFACT_ROOT_ENV_VAR) or resolve_default_artifact_root(True, "", uri)
    mlflow_server.open_server_stores(uri, root, mlflow_server.registry_store_uri() or uri)


def _migrate_basic_auth(uri: str) -> None:
    from mlflow_tenant_plugins.mlflow_hooks.basic_auth import migrate_user_schema

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        migrate_user_schema(engine)
    finally:
        engine.dispose()

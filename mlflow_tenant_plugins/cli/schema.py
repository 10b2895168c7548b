"""``mlflow-tenants db upgrade``: every schema of the platform's database migrated once, under
the lock the server's workers take, before several instances start on it.

``mlflow server`` migrates MLflow's tracking schema in its own process, before the tenant-auth
app (and its lock) is loaded: two instances starting together on a new database race there.
Run this once first (a deploy step), and every instance finds every schema at head."""

from __future__ import annotations

import dataclasses

from mlflow_tenant_plugins.cli.common import App, emit, verb
from mlflow_tenant_plugins.cli.database import resolve
from mlflow_tenant_plugins.cli.root import cli


@cli.group("db")
def db_group() -> None:
    """The platform's database schema."""


@verb(db_group, "upgrade")
def upgrade(app: App, as_json: bool) -> None:
    """Migrate MLflow's tracking and registry schema, basic-auth's and the tenant registry's."""
    import logging

    from mlflow_tenant_plugins.config import load_settings
    from mlflow_tenant_plugins.startup_migrations import migrate_platform

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from sqlalchemy.engine import make_url

    database, tracking = resolve(app.db, app.tracking_uri)
    settings = dataclasses.replace(load_settings(), database_uri=database)
    migrate_platform(settings, backend_store_uri=tracking)
    shown = {name: make_url(uri).render_as_string(hide_password=True)
             for name, uri in (("database", database), ("tracking", tracking))}
    emit(as_json, {**shown, "upgraded": True},
         [f"every schema is at head in {shown['database']}"
          + (f" (tracking: {shown['tracking']})" if tracking != database else "")])

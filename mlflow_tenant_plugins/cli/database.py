"""Which database ``mlflow-tenants`` works on: the platform's own, or none at all.

The server learns its database from the configuration or, when that names none, from its
``--backend-store-uri`` — which the CLI cannot see. Guessing there made the CLI create
``./mlflow.db`` beside a server on PostgreSQL, and the keys made in it were refused with 401.
So the CLI uses, in order: ``--db``; ``database_uri`` from ``MLFLOW_TENANT_DATABASE_URI`` or
the file named by ``MLFLOW_TENANT_CONFIG`` (the server's own configuration); the embedded
default's ``./mlflow.db`` only when a tenant-auth server has already made its registry there.
Otherwise it refuses with one line saying how to name the database. It creates a sqlite file
only when ``--db`` names it: a file named by the configuration that does not exist is a
database the server does not use (a typo, or a relative path read from another directory).
"""

from __future__ import annotations

import os
import sqlite3

import click

EMBEDDED_DEFAULT = "mlflow.db"  # what `mlflow server` uses with no --backend-store-uri
_REGISTRY_TABLE = "alembic_version_tenants"  # tenancy.db.VERSION_TABLE, without its imports
HOW_TO_NAME = ("name the server's database (its --backend-store-uri, e.g. postgresql://…) with "
               "--db URI, MLFLOW_TENANT_DATABASE_URI=URI, or database_uri in the TOML file named "
               "by MLFLOW_TENANT_CONFIG")


def resolve(db: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """(registry database, tracking store) for the CLI, or a one-line UsageError."""
    if db:  # an explicit --db wins over the configuration as a whole, and may create a file
        return db, tracking_uri or db
    from mlflow_tenant_plugins.config import database_source, load_settings

    settings = load_settings()
    source = database_source()
    if source is None:
        database = _embedded_default()
        return database, tracking_uri or settings.tracking_uri or database
    _require_existing_sqlite(settings.database_uri, source)
    return settings.database_uri, tracking_uri or settings.effective_tracking_uri


def _embedded_default() -> str:
    path = os.path.abspath(EMBEDDED_DEFAULT)
    if not _holds_registry(path):
        raise click.UsageError(f"no database configured: {HOW_TO_NAME}")
    click.echo(f"note: no database configured; using the embedded default {path} (made by a "
               "tenant-auth server started here without --backend-store-uri); --db URI or "
               "MLFLOW_TENANT_DATABASE_URI names another", err=True)
    return f"sqlite:///{path}"


def _holds_registry(path: str) -> bool:
    """True when ``path`` is a sqlite database with the tenant registry in it; never creates
    the file (read-only URI)."""
    if not os.path.isfile(path):
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (_REGISTRY_TABLE,)).fetchone()
        return row is not None
    except sqlite3.Error:  # not a database at all
        return False
    finally:
        conn.close()


def _require_existing_sqlite(uri: str, source: str) -> None:
    """A sqlite file the configuration names must exist: the server makes it at its first
    start, the CLI does not make one the server may never open."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)  # a malformed URI raises ArgumentError: one line from the CLI
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    path = os.path.abspath(url.database)
    if not os.path.exists(path):
        raise click.UsageError(
            f"database {uri} (named {source}) does not exist at {path}: start the server on it "
            "first (it creates it), fix the name, or pass --db URI to create it"
        )

"""Hooks into MLflow's basic-auth engine, ``mlflow.server.auth`` (checked against MLflow
3.17.2).

The engine configures itself from an ini file and ``MLFLOW_AUTH_*`` variables when it is
first imported, keeps its user store and validator table as module globals, and has no public
API for classifying a route: every use of those is here. Import the engine only through
:func:`load_engine`, after :func:`configure_engine`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

AUTHORIZATION_FUNCTION = "mlflow_tenant_plugins.auth.engine:authorization_function"
# basic-auth's bootstrap admin (is_admin in MLflow's store). Outside every principal namespace
# (principals are ``key:…``, ``admin:…``, ``oidc:…``, ``proxy:…``, ``iam:…``), so no credential
# of the platform can ever speak for it.
BOOTSTRAP_ADMIN = "mlflow-bootstrap-admin"


def _write_ini(database_uri: str) -> Path:
    """basic-auth reads its settings from an ini file at import; we generate it.

    ``default_permission = NO_PERMISSIONS``: nobody gets anything from a default, every grant
    comes from a tenant role. The admin password is random and never used: our
    ``authorization_function`` replaces password checks.
    """
    body = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {BOOTSTRAP_ADMIN}\n"
        f"admin_password = {secrets.token_urlsafe(24)}\n"
        f"authorization_function = {AUTHORIZATION_FUNCTION}\n"
        "grant_default_workspace_access = false\n"
    )
    fd, tmp = tempfile.mkstemp(prefix="mlt-auth-", suffix=".ini")
    with os.fdopen(fd, "w") as f:
        f.write(body)
    os.chmod(tmp, 0o600)
    return Path(tmp)


def configure_engine(database_uri: str, flask_secret: Callable[[], str]) -> None:
    """Point basic-auth at our ini (``MLFLOW_AUTH_CONFIG_PATH``) before it is imported; keep
    the bootstrap admin's name (``MLFLOW_AUTH_ADMIN_USERNAME`` overrides the ini), fail closed
    by default, and give every worker the same Flask secret (CSRF tokens must validate
    everywhere). Checked against MLflow 3.17.2."""
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(_write_ini(database_uri))
    os.environ["MLFLOW_AUTH_ADMIN_USERNAME"] = BOOTSTRAP_ADMIN
    os.environ.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    os.environ.setdefault("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "true")
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = flask_secret()


def load_engine() -> ModuleType:
    """The configured engine module; refuses when it was imported before
    :func:`configure_engine` (it would run with the wrong ini). Checked against MLflow
    3.17.2."""
    import mlflow.server.auth as engine  # reads MLFLOW_AUTH_CONFIG_PATH at import

    if engine.auth_config.authorization_function != AUTHORIZATION_FUNCTION:
        raise MlflowException(
            "mlflow.server.auth was imported before tenant-auth could configure it",
            INVALID_STATE,
        )
    return engine


def _engine() -> ModuleType:
    import mlflow.server.auth as engine

    return engine


def wrap_user_store(wrap: Callable[[Any], Any]) -> None:
    """Replace the engine's user/grant store (module global ``store``, read at call time by
    every engine function) with ``wrap(store)``. Checked against MLflow 3.17.2."""
    engine = _engine()
    engine.store = wrap(engine.store)


def user_is_admin(username: str) -> bool:
    """Whether basic-auth's store marks ``username`` ``is_admin`` (the engine then skips every
    check); False for an unknown user. Checked against MLflow 3.17.2."""
    try:
        return bool(_engine().store.get_user(username).is_admin)
    except Exception:  # no such user yet: the engine refuses it on its own
        return False


def wrap_engine_tracking_store(wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
                               marker: str, engine: Any = None) -> None:
    """Replace the engine's tracking-store accessor (``mlflow.server.auth._get_tracking_store``,
    a module global it reads at call time; MLflow's handlers keep theirs) with
    ``wrap(accessor)``, unless the current one carries ``marker``. ``engine`` defaults to the
    real module. Checked against MLflow 3.17.2."""
    engine = engine if engine is not None else _engine()
    current = engine._get_tracking_store
    if getattr(current, marker, False):
        return
    wrapped = wrap(current)
    setattr(wrapped, marker, True)
    engine._get_tracking_store = wrapped


def register_validator(path: str, method: str, validator: Callable[[], bool]) -> None:
    """Give a route of ours an entry in the engine's ``BEFORE_REQUEST_VALIDATORS`` (without one,
    the fail-closed net answers 403). Checked against MLflow 3.17.2."""
    _engine().BEFORE_REQUEST_VALIDATORS[(path, method)] = validator


def has_validator(path: str, method: str) -> bool:
    return bool(_engine().BEFORE_REQUEST_VALIDATORS.get((path, method)))


def is_unprotected_route(path: str) -> bool:
    """The engine's own list of routes served without login (health, static files, …).
    Public in ``mlflow.server.auth``, but importing that module configures basic-auth, so
    the import waits for the first call. Checked against MLflow 3.17.2."""
    return _engine().is_unprotected_route(path)


def flask_app() -> Any:
    """MLflow's Flask app as the engine wraps it."""
    return _engine().app


def create_app() -> Any:
    """The engine's app factory (``mlflow.server.auth.create_app``)."""
    return _engine().create_app()


@contextlib.contextmanager
def authenticated_as(username: str) -> Iterator[None]:
    """Run the engine's validators as ``username`` (swapping its ``authenticate_request``):
    route coverage calls each validator once at startup for a principal that exists nowhere.
    Checked against MLflow 3.17.2."""
    from werkzeug.datastructures import Authorization

    engine = _engine()
    real = engine.authenticate_request
    engine.authenticate_request = lambda: Authorization("basic", {"username": username})
    try:
        yield
    finally:
        engine.authenticate_request = real


def find_validator(request: Any) -> Callable[[], bool] | None:
    """The engine's validator for a Flask request (``_find_validator``). MLflow 3.17.2."""
    return _engine()._find_validator(request)


def authorized_outside_before_request(request: Any) -> bool:
    """Whether MLflow filters this Flask route's response by the caller
    (``_authorized_outside_before_request``). Checked against MLflow 3.17.2."""
    return bool(_engine()._authorized_outside_before_request(request))


def is_proxy_artifact_path(path: str) -> bool:
    """``_is_proxy_artifact_path``. Checked against MLflow 3.17.2."""
    return bool(_engine()._is_proxy_artifact_path(path))


def proxy_artifact_validator(method: str, view_args: Any) -> Callable[[], bool] | None:
    """``_get_proxy_artifact_validator``. Checked against MLflow 3.17.2."""
    return _engine()._get_proxy_artifact_validator(method, view_args)


def find_fastapi_validator(path: str, method: str) -> Any:
    """The engine's validator for a native FastAPI route (``_find_fastapi_validator``).
    Checked against MLflow 3.17.2."""
    return _engine()._find_fastapi_validator(path, method)


def fastapi_response_filters() -> dict:
    """FastAPI endpoints whose responses MLflow filters by the caller
    (``FASTAPI_ENDPOINT_RESPONSE_FILTERS``). Checked against MLflow 3.17.2."""
    return _engine().FASTAPI_ENDPOINT_RESPONSE_FILTERS


def open_user_store(database_uri: str) -> Any:
    """basic-auth's user/role store on ``database_uri``, for the registry to keep MLflow's
    workspace roles in step (``mlflow.server.auth.sqlalchemy_store``; importing it imports the
    engine package, which reads its configuration). Checked against MLflow 3.17.2."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    return store


def migrate_user_schema(engine: Any) -> None:
    """Bring basic-auth's tables to head on a SQLAlchemy ``engine``
    (``mlflow.server.auth.db.utils.migrate_if_needed``). Checked against MLflow 3.17.2."""
    from mlflow.server.auth.db.utils import migrate_if_needed

    migrate_if_needed(engine, "head")

"""The ``tenant-auth`` app: MLflow's basic-auth engine, configured with our authentication,
our tenant -> workspace mapping, and our routes.

``mlflow server --app-name tenant-auth --enable-workspaces …`` runs :func:`create_app` in
every worker. It keeps no table of route permissions of its own: MLflow's engine authorizes
every MLflow route from the workspace roles the registry keeps in step, fail-closed; our own
routes are registered in the engine's validator table and check roles in their handlers.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_tenant_plugins.auth.edge import EdgeLimits, EdgeMiddleware
from mlflow_tenant_plugins.config import Settings, load_settings
from mlflow_tenant_plugins.startup_checks import secure_mlflow_settings
from mlflow_tenant_plugins.startup_migrations import migrate_platform
from mlflow_tenant_plugins.tenancy import TenantRegistry

_logger = logging.getLogger(__name__)

AUTHORIZATION_FUNCTION = "mlflow_tenant_plugins.auth.engine:authorization_function"
# basic-auth's bootstrap admin (is_admin in MLflow's store). Outside every principal namespace
# (principals are ``key:…``, ``admin:…``, ``oidc:…``, ``proxy:…``, ``iam:…``), so no credential
# of the platform can ever speak for it.
BOOTSTRAP_ADMIN = "mlflow-bootstrap-admin"


def _write_auth_ini(settings: Settings) -> Path:
    """basic-auth reads its settings from an ini file at import; we generate it.

    ``default_permission = NO_PERMISSIONS``: nobody gets anything from a default, every grant
    comes from a tenant role. The admin password is random and never used: our
    ``authorization_function`` replaces password checks.
    """
    body = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {settings.database_uri}\n"
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


def _configure_engine(settings: Settings, registry: TenantRegistry) -> None:
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() not in ("true", "1"):
        raise MlflowException(
            "tenant-auth needs workspaces: start the server with --enable-workspaces",
            INVALID_STATE,
        )
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(_write_auth_ini(settings))
    # basic-auth lets these override the ini; the bootstrap admin must keep our name.
    os.environ["MLFLOW_AUTH_ADMIN_USERNAME"] = BOOTSTRAP_ADMIN
    os.environ.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    os.environ.setdefault("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "true")
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        # Static across workers and instances (CSRF tokens must validate everywhere).
        os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = registry.shared_secret("flask-secret-key")


def create_app():
    secure_mlflow_settings()  # no MLFLOW_*_ALLOW_PRIVATE_IPS; bundled model catalogue
    settings = load_settings()
    registry = TenantRegistry.from_settings(settings)
    _configure_engine(settings, registry)
    migrate_platform(settings)  # every schema once, under one lock, before MLflow's own

    import mlflow.server.auth as engine  # reads MLFLOW_AUTH_CONFIG_PATH at import

    if engine.auth_config.authorization_function != AUTHORIZATION_FUNCTION:
        raise MlflowException(
            "mlflow.server.auth was imported before tenant-auth could configure it",
            INVALID_STATE,
        )
    from mlflow_tenant_plugins import monitoring, sources
    from mlflow_tenant_plugins.artifacts import startup as artifact_startup
    from mlflow_tenant_plugins.auth import engine as auth_engine
    from mlflow_tenant_plugins.auth import run_locator
    from mlflow_tenant_plugins.auth.authenticator import Authenticator, build_methods
    from mlflow_tenant_plugins.auth.middleware import TenantMiddleware
    from mlflow_tenant_plugins.routes import register_routes

    authenticator = Authenticator(
        registry,
        settings.auth_cache_ttl_seconds,
        list(settings.auth_methods),
        extra_methods=build_methods(settings, registry),
    )
    auth_engine.install(authenticator)
    if settings.auth_cache_ttl_seconds > 0:
        from mlflow_tenant_plugins.auth.store_cache import (
            CachedAuthStore,
            cache_workspace_resolution,
        )

        # The engine's functions read the module global `store` at call time.
        engine.store = CachedAuthStore(engine.store, settings.auth_cache_ttl_seconds)
        cache_workspace_resolution(settings.auth_cache_ttl_seconds)
    run_locator.install(engine)
    register_routes(engine, registry)
    _bind_artifact_destination_per_request()
    _warm_artifacts_in_background()
    app = engine.create_app()
    artifact_startup.prepare_app(app)  # tenant-s3 without credentials: refuse to start
    sources.install(engine.app)  # tenants name only their own locations; repositories fenced
    _check_route_coverage(engine, app)
    _install_first_hour(app)
    app.add_middleware(TenantMiddleware, authenticator=authenticator)
    # Outside the tenant middleware: per-tenant metrics, and the usage publisher if set.
    monitoring.install(app, settings, registry)
    # Added last, so outermost: every route, /health and static files included, sees only
    # unambiguous headers and bounded bodies (auth.edge explains the rules).
    app.add_middleware(EdgeMiddleware, single_headers=_single_headers(settings),
                       limits=EdgeLimits(int(settings.max_request_body_bytes),
                                         int(settings.max_artifact_upload_bytes)))
    return app


def _single_headers(settings: Settings) -> tuple[str, ...]:
    """Headers that may appear at most once: the edge's own, and every identity header an
    enabled authentication method reads."""
    from mlflow_tenant_plugins.auth.edge import BASE_SINGLE_HEADERS
    from mlflow_tenant_plugins.auth.iam import _HEADER as IAM_HEADER
    from mlflow_tenant_plugins.auth.oidc import HEADER as OIDC_HEADER

    return (*BASE_SINGLE_HEADERS, IAM_HEADER, OIDC_HEADER, "x-amzn-oidc-identity",
            "x-amzn-oidc-accesstoken", settings.proxy_user_header,
            settings.proxy_tenant_header, settings.proxy_role_header)


def _install_first_hour(app) -> None:
    """Stock-client code works unchanged in a tenant: experiment "0" is the tenant's own
    default experiment (inside the tenant middleware, which leaves the caller in the scope),
    and an object not in the tenant answers 404 instead of the engine's 403."""
    from mlflow.server import app as flask_app

    from mlflow_tenant_plugins.auth import not_found
    from mlflow_tenant_plugins.auth.experiment_zero import DefaultExperimentAlias
    from mlflow_tenant_plugins.auth.not_found_native import NativeNotFound
    from mlflow_tenant_plugins.auth.server_stores import tracking_store
    from mlflow_tenant_plugins.tenancy.default_experiment import DefaultExperiments

    not_found.install(flask_app)
    app.add_middleware(NativeNotFound)
    app.add_middleware(DefaultExperimentAlias, experiments=DefaultExperiments(tracking_store))


def _bind_artifact_destination_per_request() -> None:
    """Gap in MLflow's proxied artifacts with workspaces: ``_get_artifact_repo_mlflow_artifacts``
    caches the first repository it builds — bound by ``for_workspace`` to whichever tenant made
    the first artifact request — and serves it to every later request. We wrap it so each
    request gets its own tenant's repository (tests/test_artifacts_server.py names the gap)."""
    from mlflow.server import handlers

    from mlflow_tenant_plugins.artifacts.repository import repository_for_request

    cached = handlers._get_artifact_repo_mlflow_artifacts
    if getattr(cached, "tenant_per_request", False):
        return

    def per_request():
        return repository_for_request(cached())

    per_request.tenant_per_request = True
    handlers._get_artifact_repo_mlflow_artifacts = per_request


def _warm_artifacts_in_background() -> None:
    """With a ``tenant-s3`` destination, each worker builds its artifact runtime at startup
    (database engine, botocore's endpoint rules, the STS or ambient client): otherwise the
    worker's first upload pays about a second for it."""
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR

    if os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR, "").startswith("tenant-s3:"):
        threading.Thread(target=_warm_artifacts, name="tenant-s3-warm", daemon=True).start()


def _warm_artifacts() -> None:
    """In the background, so startup is not delayed; a failure here only means the first
    upload pays the cost (and reports any real error to its caller)."""
    from mlflow_tenant_plugins.artifacts.runtime import runtime_for

    started = time.monotonic()
    try:
        runtime_for().warm()
        _logger.info("tenant-s3: warmed up in %.2f s", time.monotonic() - started)
    except Exception:
        _logger.warning("tenant-s3: warming up failed; the first artifact request will retry",
                        exc_info=True)


def _check_route_coverage(engine, app) -> None:
    """Refuse to serve a route nobody authorizes: with fail-closed off, or with one of our
    routes missing its validator, a route could be open to every authenticated caller."""
    from mlflow.environment_variables import MLFLOW_BASIC_AUTH_FAIL_CLOSED

    from mlflow_tenant_plugins import coverage
    from mlflow_tenant_plugins.routes import set_route_classes

    if not MLFLOW_BASIC_AUTH_FAIL_CLOSED.get():
        raise MlflowException(
            "tenant-auth requires MLFLOW_BASIC_AUTH_FAIL_CLOSED=true", INVALID_STATE
        )
    routes = coverage.classify_routes(engine, app)
    bad = [r for r in routes if r.access == "unclassified"]
    if bad:
        raise MlflowException(f"routes without authorization: {bad}", INVALID_STATE)
    set_route_classes(routes)
    _logger.info("tenant-auth route coverage: %d routes %s", len(routes), coverage.summary(routes))

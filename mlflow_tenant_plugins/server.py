"""The ``tenant-auth`` app: MLflow's basic-auth engine, configured with our authentication,
our tenant -> workspace mapping, and our routes.

``mlflow server --app-name tenant-auth --enable-workspaces …`` runs :func:`create_app` in
every worker. It keeps no table of route permissions of its own: MLflow's engine authorizes
every MLflow route from the workspace roles the registry keeps in step, fail-closed; our own
routes are registered in the engine's validator table and check roles in their handlers.
:func:`create_app` reads as the order of assembly; every MLflow internal it touches is behind
``mlflow_hooks``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_tenant_plugins.auth.edge import EdgeLimits, EdgeMiddleware
from mlflow_tenant_plugins.config import Settings, load_settings
from mlflow_tenant_plugins.mlflow_hooks import basic_auth, check_mlflow_shape
from mlflow_tenant_plugins.mlflow_hooks import server as mlflow_server
from mlflow_tenant_plugins.mlflow_hooks.artifacts import wrap_proxied_artifact_repository
from mlflow_tenant_plugins.platform import Once, Platform, attach
from mlflow_tenant_plugins.startup_checks import secure_mlflow_settings
from mlflow_tenant_plugins.startup_migrations import migrate_platform
from mlflow_tenant_plugins.tenancy import TenantRegistry

_logger = logging.getLogger(__name__)


def create_app():
    """Build the platform once for this worker, in the order of assembly."""
    from mlflow_tenant_plugins import billing, healing, monitoring, sources
    from mlflow_tenant_plugins.artifacts import startup as artifact_startup
    from mlflow_tenant_plugins.artifacts.repository import repository_for_request
    from mlflow_tenant_plugins.auth import run_locator
    from mlflow_tenant_plugins.auth.authenticator import Authenticator, build_methods
    from mlflow_tenant_plugins.auth.store_cache import cache_engine_lookups
    from mlflow_tenant_plugins.jobs import reconcile as job_reconcile
    from mlflow_tenant_plugins.routes import register_routes

    # 1. Settings: refuse MLflow's unsafe switches; ours are read here, once, for every part.
    secure_mlflow_settings()  # no MLFLOW_*_ALLOW_PRIVATE_IPS; bundled model catalogue
    settings = load_settings()
    registry = TenantRegistry.from_settings(settings)

    # 2. MLflow's basic-auth engine: configured before its import, every schema migrated once
    #    (under one lock, before MLflow's own), then the MLflow internals we hook checked.
    _require_workspaces()
    basic_auth.configure_engine(settings.database_uri,
                                lambda: registry.shared_secret("flask-secret-key"))
    migrate_platform(settings)
    basic_auth.load_engine()
    check_mlflow_shape()

    # 3. Who the caller is: our authenticator, and caches in front of the engine's lookups.
    authenticator = Authenticator(registry, settings.auth_cache_ttl_seconds,
                                  list(settings.auth_methods),
                                  extra_methods=build_methods(settings, registry))
    if settings.auth_cache_ttl_seconds > 0:
        cache_engine_lookups(settings.auth_cache_ttl_seconds)
    run_locator.install()

    # 4. MLflow's Flask app: our routes (each in the validator table), artifacts served per
    #    tenant, tenants naming only their own locations; then the engine builds the ASGI app.
    flask_app = basic_auth.flask_app()
    register_routes(flask_app)
    wrap_proxied_artifact_repository(repository_for_request)
    _warm_artifacts_in_background(settings)
    app = basic_auth.create_app()
    artifact_startup.prepare_app(app, settings)  # tenant-s3 without credentials: refuse
    sources.install(flask_app)  # tenants name only their own locations; repositories fenced

    # 5. Refuse to serve a route nobody authorizes.
    route_classes = _check_route_coverage(app)

    # 6. The platform, for every Flask handler (app.extensions) and middleware.
    jobs = Once(lambda: _job_service(settings, registry))
    deployments = Once(lambda: _deployment_service(settings, registry))
    metrics = monitoring.build_metrics()
    platform = Platform(
        settings=settings,
        registry=registry,
        authenticator=authenticator,
        route_classes=tuple(route_classes),
        metrics=metrics,
        deployments=deployments,
        jobs=jobs,
        publisher=monitoring.start_publisher(registry, settings),
        job_reconciler=job_reconcile.start(registry, settings, jobs),
        metering=billing.start_sampler(registry, settings,
                                       platform_endpoints(settings, deployments)),
        # The ledger heals itself: S3 and SageMaker recounted periodically, under a lease.
        healing=healing.start(registry, settings, mlflow_server.artifacts_destination(),
                              deployments, metrics),
    )
    attach(flask_app, platform)

    # 7. Middlewares. Starlette runs the last one added outermost, so a request passes them
    #    bottom to top: the edge sees every request first, raw; monitoring observes what the
    #    tenant middleware answers; the tenant middleware authenticates and fixes the
    #    workspace; the first-hour middlewares then work on an authenticated tenant request
    #    (innermost of all, prepare_app's upload-length reader, added in step 4).
    _add_first_hour(flask_app, app)  # innermost: experiment '0', 404s inside the tenant
    from mlflow_tenant_plugins.auth.middleware import TenantMiddleware

    billing.add_request_meter(app, registry, settings)  # inside: the tenant is checked
    app.add_middleware(TenantMiddleware, authenticator=authenticator)
    monitoring.add_middleware(app, platform.metrics, registry)
    app.add_middleware(EdgeMiddleware, single_headers=_single_headers(settings),
                       limits=EdgeLimits(int(settings.max_request_body_bytes),
                                         int(settings.max_artifact_upload_bytes)))
    return app


def _require_workspaces() -> None:
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() not in ("true", "1"):
        raise MlflowException(
            "tenant-auth needs workspaces: start the server with --enable-workspaces",
            INVALID_STATE,
        )


def _deployment_service(settings: Settings, registry: TenantRegistry) -> Any:
    """The deployment service, on the platform's registry and settings, reading models from
    the server's own stores. Built on first use (it makes AWS clients)."""
    from mlflow_tenant_plugins.deployments.model_source import ModelResolver
    from mlflow_tenant_plugins.deployments.routes import server_fetch
    from mlflow_tenant_plugins.deployments.service import DeploymentService

    tracking = mlflow_server.backend_store_uri() or None
    resolver = ModelResolver(tracking_uri=tracking,
                             registry_uri=mlflow_server.registry_store_uri() or tracking,
                             fetch=server_fetch)
    return DeploymentService(registry, settings, resolver=resolver)


def platform_endpoints(settings: Settings, deployments: Callable[[], Any]
                       ) -> Callable[[], Callable[[str], dict[str, int]] | None]:
    """What the metering sampler asks, each run, for the counter of a tenant's endpoint
    instances by type (``{instance type: instances running now}``, from SageMaker through
    the deployment service ``deployments()``, built on first use), or None when the platform
    deploys nothing: without ``deploy_execution_role_arn`` (or without an AWS region or
    endpoint) every deploy is refused, so no endpoint can exist, and the sampler makes no
    AWS call."""
    if not settings.deploy_execution_role_arn or not (settings.aws_region
                                                      or settings.aws_endpoint_url):
        return lambda: None
    return lambda: deployments().instances


def _job_service(settings: Settings, registry: TenantRegistry) -> Any:
    """The job service on the configured engine. Built on first use (SageMaker: AWS clients)."""
    from mlflow_tenant_plugins.jobs import identity
    from mlflow_tenant_plugins.jobs.engines import build_engine, image_uris
    from mlflow_tenant_plugins.jobs.runs import TenantRuns
    from mlflow_tenant_plugins.jobs.service import JobService

    engine = build_engine(settings)
    options: dict[str, Any] = {"identity": identity.local_key(registry)}
    if settings.jobs_executor == "sagemaker":
        template = identity.role_template(settings)
        options = {"identity": identity.execution_role(registry, settings),
                   "role_arn": lambda tenant: template.format(tenant=tenant),
                   "image_uri": image_uris(settings).get}
    return JobService(registry, settings, engine, TenantRuns(mlflow_server.tracking_store),
                      destination=mlflow_server.artifacts_destination(), **options)


def _single_headers(settings: Settings) -> tuple[str, ...]:
    """Headers that may appear at most once: the edge's own, and every identity header an
    enabled authentication method reads."""
    from mlflow_tenant_plugins.auth.edge import BASE_SINGLE_HEADERS
    from mlflow_tenant_plugins.auth.oidc import HEADER as OIDC_HEADER
    from mlflow_tenant_plugins.wire import IAM_HEADER

    return (*BASE_SINGLE_HEADERS, IAM_HEADER.lower(), OIDC_HEADER, "x-amzn-oidc-identity",
            "x-amzn-oidc-accesstoken", settings.proxy_user_header,
            settings.proxy_tenant_header, settings.proxy_role_header)


def _add_first_hour(flask_app, app) -> None:
    """Stock-client code works unchanged in a tenant: experiment "0" is the tenant's own
    default experiment (inside the tenant middleware, which leaves the caller in the scope),
    and an object not in the tenant answers 404 instead of the engine's 403."""
    from mlflow_tenant_plugins.auth import not_found
    from mlflow_tenant_plugins.auth.experiment_zero import DefaultExperimentAlias
    from mlflow_tenant_plugins.auth.not_found_native import NativeNotFound
    from mlflow_tenant_plugins.tenancy.default_experiment import DefaultExperiments

    not_found.install(flask_app)
    app.add_middleware(NativeNotFound)
    app.add_middleware(DefaultExperimentAlias,
                       experiments=DefaultExperiments(mlflow_server.tracking_store))


def _warm_artifacts_in_background(settings: Settings) -> None:
    """With a ``tenant-s3`` destination, each worker builds its artifact runtime at startup
    (database engine, botocore's endpoint rules, the STS or ambient client): otherwise the
    worker's first upload pays about a second for it."""
    if mlflow_server.artifacts_destination().startswith("tenant-s3:"):
        threading.Thread(target=_warm_artifacts, args=(settings,), name="tenant-s3-warm",
                         daemon=True).start()


def _warm_artifacts(settings: Settings) -> None:
    """In the background, so startup is not delayed; a failure here only means the first
    upload pays the cost (and reports any real error to its caller)."""
    from mlflow_tenant_plugins.artifacts.runtime import runtime_for

    started = time.monotonic()
    try:
        runtime_for(settings).warm()
        _logger.info("tenant-s3: warmed up in %.2f s", time.monotonic() - started)
    except Exception:
        _logger.warning("tenant-s3: warming up failed; the first artifact request will retry",
                        exc_info=True)


def _check_route_coverage(app) -> list:
    """Refuse to serve a route nobody authorizes: with fail-closed off, or with one of our
    routes missing its validator, a route could be open to every authenticated caller."""
    from mlflow.environment_variables import MLFLOW_BASIC_AUTH_FAIL_CLOSED

    from mlflow_tenant_plugins import coverage

    if not MLFLOW_BASIC_AUTH_FAIL_CLOSED.get():
        raise MlflowException(
            "tenant-auth requires MLFLOW_BASIC_AUTH_FAIL_CLOSED=true", INVALID_STATE
        )
    routes = coverage.classify_routes(app)
    bad = [r for r in routes if r.access == "unclassified"]
    if bad:
        raise MlflowException(f"routes without authorization: {bad}", INVALID_STATE)
    _logger.info("tenant-auth route coverage: %d routes %s", len(routes), coverage.summary(routes))
    return routes

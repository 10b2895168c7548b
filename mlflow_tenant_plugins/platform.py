"""The running platform as one object: what ``create_app`` builds once per worker and hands
to every part that serves requests.

Flask handlers (the admin API, the usage page, the deployment routes, MLflow's engine calling
our ``authorization_function``) read it from ``app.extensions[EXTENSION]`` through
:func:`current_platform`; ASGI middlewares get the parts they need as constructor arguments.
Nothing is kept in module globals: tests mount the same blueprints on an app that carries a
platform of their own (:func:`attach`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from mlflow_tenant_plugins.auth.authenticator import Authenticator
    from mlflow_tenant_plugins.config import Settings
    from mlflow_tenant_plugins.coverage import RouteClass
    from mlflow_tenant_plugins.deployments.service import DeploymentService
    from mlflow_tenant_plugins.jobs.service import JobService
    from mlflow_tenant_plugins.monitoring.metrics import TenantMetrics
    from mlflow_tenant_plugins.tenancy import TenantRegistry

EXTENSION = "mlflow_tenant_plugins"
T = TypeVar("T")


class Once(Generic[T]):
    """A part built on first use, once per worker, for parts whose construction is heavy
    (the deployment service makes AWS clients) and that many workers never use."""

    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None

    def __call__(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

    @property
    def built(self) -> T | None:
        return self._value


@dataclass(frozen=True)
class Platform:
    settings: Settings
    registry: TenantRegistry
    authenticator: Authenticator | None = None
    # How every served route is authorized (the startup classification, coverage.py).
    route_classes: tuple[RouteClass, ...] = ()
    # Per-tenant Prometheus series, when the server runs with --expose-prometheus.
    metrics: TenantMetrics | None = None
    deployments: Callable[[], DeploymentService] | None = None
    jobs: Callable[[], JobService] | None = None
    # The periodic CloudWatch publisher, when configured (kept so it is not collected).
    publisher: Any = field(default=None, compare=False)
    # The periodic job reconcile, when jobs are on (kept so it is not collected).
    job_reconciler: Any = field(default=None, compare=False)
    # The metering sampler, when metering is on (kept so it is not collected).
    metering: Any = field(default=None, compare=False)
    # The periodic ledger reconcile (healing.py), when on (kept so it is not collected).
    healing: Any = field(default=None, compare=False)

    def deployment_service(self) -> DeploymentService:
        if self.deployments is None:
            raise RuntimeError("this platform serves no deployments")
        return self.deployments()

    def job_service(self) -> JobService:
        if self.jobs is None:
            raise RuntimeError("this platform runs no jobs")
        return self.jobs()


def attach(app: Any, platform: Platform) -> None:
    """Make ``platform`` the one Flask handlers of ``app`` see."""
    app.extensions[EXTENSION] = platform


def current_platform() -> Platform:
    """The platform of the Flask app serving the current request."""
    from flask import current_app

    platform = current_app.extensions.get(EXTENSION)
    if platform is None:
        raise RuntimeError("tenant-auth is not initialised: start the server with "
                           "`mlflow server --app-name tenant-auth`")
    return platform

"""Per-tenant Prometheus series, for ``mlflow server --expose-prometheus DIR``.

MLflow's exporter (prometheus_flask_exporter) serves ``/metrics`` from prometheus_client's
multiprocess files in DIR (``prometheus_multiproc_dir``), so every uvicorn worker writes its
own file and a scrape adds them up; the series here are made the same way. They are observed
by one ASGI middleware outside the tenant middleware, which leaves the request's
authentication result in the scope: it sees every request, who made it, and the answer.

``/metrics`` itself is platform-admin only: it carries every tenant's figures, and MLflow's
fail-closed engine refuses it to anyone else (Prometheus scrapes with an admin key as a
bearer token).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import anyio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from mlflow_tenant_plugins.auth.base import Refusal
from mlflow_tenant_plugins.monitoring import labels
from mlflow_tenant_plugins.monitoring.snapshot import TenantUsage
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.errors import QUOTA_HTTP_STATUS
from mlflow_tenant_plugins.tenancy.usage import RESOURCES

_logger = logging.getLogger(__name__)
PREFIX = "mlflow_tenant"
METRICS_PATH = "/metrics"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MAX_ERROR_BODY = 8192  # bytes of a quota refusal's body kept to read the quota it names


def prometheus_enabled() -> bool:
    """True when the server runs with ``--expose-prometheus`` (MLflow sets this variable)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                or os.environ.get("prometheus_multiproc_dir"))


class TenantMetrics:
    """The series. One instance per worker on the default registry (the app factory's);
    tests make their own on a registry of their own."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        def kw(doc: str) -> dict:
            return {"documentation": doc, "registry": registry}

        self.requests = Counter(
            f"{PREFIX}_requests", labelnames=("tenant", "route_group", "status_class"),
            **kw("Requests by the caller's tenant, route group and status class."))
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds", labelnames=("tenant", "route_group"),
            buckets=LATENCY_BUCKETS, **kw("Request latency, first byte in to last byte out."))
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures", labelnames=("method",),
            **kw("Requests refused 401, by the authentication method they tried."))
        self.permission_denials = Counter(
            f"{PREFIX}_permission_denials", labelnames=("tenant", "route_group"),
            **kw("Requests refused 403 PERMISSION_DENIED, by the caller's tenant."))
        self.quota_refusals = Counter(
            f"{PREFIX}_quota_refusals", labelnames=("tenant", "quota"),
            **kw("Requests refused RESOURCE_EXHAUSTED (HTTP 409), by the quota they hit."))
        # Gauges hold the same database figures in every worker: the newest write wins.
        self.used = Gauge(
            f"{PREFIX}_resource_used", labelnames=("tenant", "resource"),
            multiprocess_mode="mostrecent",
            **kw("Use of a quota-bound resource (storage_bytes in bytes, endpoints, "
                 "instances)."))
        self.limit = Gauge(
            f"{PREFIX}_resource_limit", labelnames=("tenant", "resource"),
            multiprocess_mode="mostrecent", **kw("The tenant's quota for the resource."))
        self._known: set[str] = set()

    def observe(self, result: Identity | Refusal | None, status: int, path: str,
                seconds: float, body: bytes) -> None:
        tenant = labels.tenant_label(result)
        group = labels.route_group(path)
        self.requests.labels(tenant, group, labels.status_class(status)).inc()
        self.latency.labels(tenant, group).observe(seconds)
        if status == 401:
            self.auth_failures.labels(labels.auth_method(result)).inc()
        elif status == 403:
            self.permission_denials.labels(tenant, group).inc()
        elif status == QUOTA_HTTP_STATUS:
            quota = labels.quota_refused(body)
            if quota is not None:
                self.quota_refusals.labels(tenant, quota).inc()

    def set_usage(self, usages: list[TenantUsage]) -> None:
        """Gauges from a snapshot; tenants gone since the last one drop to zero (multiprocess
        files cannot forget a label set until the workers restart)."""
        seen = {u.tenant for u in usages}
        for tenant in self._known - seen:
            for resource in RESOURCES:
                self.used.labels(tenant, resource).set(0)
                self.limit.labels(tenant, resource).set(0)
        for u in usages:
            for resource in RESOURCES:
                self.used.labels(u.tenant, resource).set(u.used.get(resource, 0))
                self.limit.labels(u.tenant, resource).set(u.limits.get(resource, 0))
        self._known = seen


class MetricsMiddleware:
    """Counts every request after the tenant middleware (inside it) has answered; refreshes
    the usage gauges from the database when ``/metrics`` is scraped (at most once a
    second per worker, off the event loop). Observing never fails a request."""

    def __init__(self, app, metrics: TenantMetrics, usage: Callable[[], list[TenantUsage]],
                 min_refresh_seconds: float = 1.0):
        from mlflow_tenant_plugins.auth.middleware import AUTH_RESULT_SCOPE_KEY
        from mlflow_tenant_plugins.mlflow_hooks.basic_auth import is_unprotected_route

        self.is_unprotected = is_unprotected_route
        self.scope_key = AUTH_RESULT_SCOPE_KEY
        self.app = app
        self.metrics = metrics
        self.usage = usage
        self.min_refresh_seconds = min_refresh_seconds
        self._refreshed = 0.0
        self._refresh_lock = threading.Lock()

    def refresh_gauges(self) -> None:
        with self._refresh_lock:
            if time.monotonic() - self._refreshed < self.min_refresh_seconds:
                return
            try:
                self.metrics.set_usage(self.usage())
            except Exception:
                _logger.exception("could not refresh the tenant usage gauges")
            self._refreshed = time.monotonic()

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path or self.is_unprotected(path):
            await self.app(scope, receive, send)
            return
        if path == METRICS_PATH:
            await anyio.to_thread.run_sync(self.refresh_gauges)
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500
        body = bytearray()

        async def observed(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif status == QUOTA_HTTP_STATUS and len(body) < _MAX_ERROR_BODY:
                body.extend(message.get("body", b"")[:_MAX_ERROR_BODY])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            try:
                self.metrics.observe(scope.get(self.scope_key), status, path,
                                     time.perf_counter() - started, bytes(body))
            except Exception:
                _logger.exception("could not record request metrics")

"""Monitoring for the platform engineer: per-tenant Prometheus series (``metrics``), tenant
usage and quota alarms in CloudWatch (``publisher``, one publisher at a time by a ``lease``),
and an admin usage page (``page``). Server side only; nothing here is imported by clients.

The app factory builds the parts once per worker (:func:`build_metrics`,
:func:`start_publisher`), keeps them on the platform and adds the middleware
(:func:`add_middleware`).
"""

from __future__ import annotations

from typing import Any


def build_metrics() -> Any:
    """The per-tenant series on the process's default Prometheus registry, when the server runs
    with ``--expose-prometheus``; None otherwise."""
    from mlflow_tenant_plugins.monitoring.metrics import TenantMetrics, prometheus_enabled

    return TenantMetrics() if prometheus_enabled() else None


def add_middleware(app: Any, metrics: Any, registry: Any) -> None:
    """The metrics observer, when there are metrics to observe into."""
    from mlflow_tenant_plugins.monitoring.metrics import MetricsMiddleware
    from mlflow_tenant_plugins.monitoring.snapshot import snapshot

    if metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=metrics, usage=lambda: snapshot(registry))


def start_publisher(registry: Any, settings: Any) -> Any:
    """The periodic CloudWatch publisher when configured (None otherwise)."""
    from mlflow_tenant_plugins.monitoring.publisher import start_periodic

    return start_periodic(registry, settings)

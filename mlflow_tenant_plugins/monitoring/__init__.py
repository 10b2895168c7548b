"""Monitoring for the platform engineer: per-tenant Prometheus series (``metrics``), tenant
usage and quota alarms in CloudWatch (``publisher``, one publisher at a time by a ``lease``),
and an admin usage page (``page``). Server side only; nothing here is imported by clients.
"""

from __future__ import annotations

from typing import Any

_started: dict[str, Any] = {}


def install(app: Any, settings: Any, registry: Any) -> None:
    """Called by the app factory once per worker: the metrics observer when the server runs
    with ``--expose-prometheus``, and the periodic CloudWatch publisher when configured."""
    from mlflow_tenant_plugins.monitoring.metrics import (
        MetricsMiddleware,
        get_metrics,
        prometheus_enabled,
    )
    from mlflow_tenant_plugins.monitoring.publisher import start_periodic
    from mlflow_tenant_plugins.monitoring.snapshot import snapshot

    if prometheus_enabled():
        app.add_middleware(MetricsMiddleware, metrics=get_metrics(),
                           usage=lambda: snapshot(registry))
    if "publisher" not in _started:
        _started["publisher"] = start_periodic(registry, settings)

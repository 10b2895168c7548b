"""Charging tenants for what they use: the price table, monthly statements, the sampler that
keeps the meters (``tenancy/meters.py``) current, request counting, budgets and the
cross-check with AWS Cost Explorer. Server and admin CLI only."""

from __future__ import annotations

from typing import Any


def add_request_meter(app: Any, registry: Any, settings: Any) -> None:
    """Count requests per tenant for statements (every worker; flushed every few seconds)."""
    from mlflow_tenant_plugins.billing.requests import RequestCounter, RequestMeter
    from mlflow_tenant_plugins.tenancy.meters import Meters

    if settings.metering_flush_seconds <= 0:
        return
    counter = RequestCounter(Meters(registry.engine), settings.metering_flush_seconds).start()
    app.add_middleware(RequestMeter, counter=counter)


def start_sampler(registry: Any, settings: Any, endpoints: Any) -> Any:
    """The periodic metering sampler (None when ``metering_interval_seconds`` is 0)."""
    from mlflow_tenant_plugins.billing.sampler import start

    return start(registry, settings, endpoints)

"""A ledger that heals itself: the reconciles an admin runs by hand (``usage --reconcile``,
``usage --reconcile-deployments``) run inside the server every
``ledger_reconcile_interval_seconds``, by one worker of one instance at a time (a lease in the
database), so a worker that died mid-deploy or an object changed outside MLflow no longer
leaves the ledger wrong until someone notices.

Each correction is logged (tenant, resource, before, after) and counted in
``mlflow_tenant_ledger_corrections_total{resource}`` on ``/metrics`` (with
``--expose-prometheus``). Tenants with work in flight are left alone (``busy``), as by hand.
Endpoints and instances are reconciled when the platform deploys (``deploy_execution_role_arn``
set): a deployment in flight has a record, and its tenant is left alone. Storage only with
``ledger_reconcile_storage = "on"`` (and a ``tenant-s3`` destination): an S3 recount cannot tell
a delete in flight (the object gone, its size not yet given back) from drift, and would give
that size back twice — found by the concurrent-deletes attack replay when the recount ran
beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlflow_tenant_plugins.monitoring.lease import Lease, Periodic

_logger = logging.getLogger(__name__)
LEASE_KEY = "ledger-reconcile"


_COUNTER: list[Any] = []  # one per process: prometheus_client refuses a second registration


def corrections_counter(metrics: Any) -> Callable[[str, int], None]:
    """Count corrections on /metrics when the server exposes Prometheus; else only log."""
    if metrics is None:
        return lambda resource, n: None
    if not _COUNTER:
        from prometheus_client import Counter

        _COUNTER.append(Counter("mlflow_tenant_ledger_corrections", "Usage ledger corrections "
                                "by the periodic reconcile, by resource.",
                                labelnames=("resource",)))
    counter = _COUNTER[0]
    return lambda resource, n: counter.labels(resource=resource).inc(n)


def reconcile_once(registry: Any, settings: Any, destination: str,
                   deployments: Callable[[], Any] | None,
                   count: Callable[[str, int], None]) -> int:
    """One pass over every tenant; the number of corrections."""
    corrected = 0
    if destination.startswith("tenant-s3:"):
        from mlflow_tenant_plugins.artifacts.reconcile import reconcile

        for t in reconcile(registry, destination, settings=settings, dry_run=False).changed:
            _logger.warning("ledger reconcile: tenant %s storage_bytes %d -> %d (S3)",
                            t.tenant, t.ledger_bytes, t.s3_bytes + t.reserved)
            count("storage_bytes", 1)
            corrected += 1
    if deployments is not None:
        from mlflow_tenant_plugins.deployments.reconcile import reconcile as reconcile_deploys

        for t in reconcile_deploys(deployments(), None, dry_run=False):
            if t.status != "corrected":
                continue
            for resource, held in t.sagemaker.items():
                if held != t.ledger.get(resource):
                    _logger.warning("ledger reconcile: tenant %s %s %s -> %d (SageMaker)",
                                    t.tenant, resource, t.ledger.get(resource), held)
                    count(resource, 1)
                    corrected += 1
    return corrected


def start(registry: Any, settings: Any, destination: str,
          deployments: Callable[[], Any] | None, metrics: Any) -> Periodic | None:
    interval = settings.ledger_reconcile_interval_seconds
    if interval <= 0:
        return None
    if settings.ledger_reconcile_storage != "on":
        destination = ""  # see the setting: a recount races deletes in flight
    if not settings.deploy_execution_role_arn:
        deployments = None
    if deployments is None and not destination.startswith("tenant-s3:"):
        return None
    count = corrections_counter(metrics)
    lease = Lease(registry.engine, LEASE_KEY, max(3 * interval, 60.0))
    return Periodic(lambda: reconcile_once(registry, settings, destination, deployments,
                                           count),
                    lease, interval, name="mlt-ledger-reconcile").start()

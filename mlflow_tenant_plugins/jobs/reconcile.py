"""The server follows jobs nobody is watching: every ``jobs_reconcile_interval_seconds``, one
worker of one instance (a lease in the database) refreshes every job not yet ended. That ends
runs whose client went away, releases quotas of jobs however they ended, stops local jobs past
their maximum runtime, and fails (releasing what it held) a submission a dead worker left
behind."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlflow_tenant_plugins.monitoring.lease import Lease, Periodic

_logger = logging.getLogger(__name__)
LEASE_KEY = "job-reconciler"


def start(registry: Any, settings: Any, service: Callable[[], Any]) -> Periodic | None:
    """Start the reconcile thread when jobs are on and the interval is set."""
    interval = settings.jobs_reconcile_interval_seconds
    if not settings.jobs_executor or interval <= 0:
        return None
    lease = Lease(registry.engine, LEASE_KEY, max(3 * interval, 30.0))

    def task() -> None:
        ended = service().reconcile()
        if ended:
            _logger.info("job reconcile: %d job(s) ended", ended)

    return Periodic(task, lease, interval, name="mlt-job-reconciler").start()

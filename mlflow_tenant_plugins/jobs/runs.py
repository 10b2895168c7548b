"""The MLflow side of a job on the server: the run it belongs to, read and ended inside the
tenant's workspace, so a job can only ever be attached to (and end) a run of its own tenant."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.mlflow_hooks.server import tenant_workspace

_logger = logging.getLogger(__name__)


class TenantRuns:
    """Runs of one tenant, through the server's tracking store."""

    def __init__(self, store: Callable[[], Any]):
        self._store = store

    def get(self, tenant: str, run_id: str) -> Any:
        """The run, or a 404 that does not say whether another tenant has it."""
        try:
            with tenant_workspace(tenant):
                return self._store().get_run(run_id)
        except MlflowException:
            raise MlflowException(f"run '{run_id}' not found in tenant '{tenant}'",
                                  RESOURCE_DOES_NOT_EXIST) from None

    def end(self, tenant: str, run_id: str, status: str, reason: str | None,
            job_id: str) -> None:
        """Set the run's terminal status from its job's (unless the run already ended, as a
        project that completed ends its own run) and record why a job failed."""
        try:
            with tenant_workspace(tenant):
                store = self._store()
                run = store.get_run(run_id)
                if reason:
                    from mlflow.entities import RunTag

                    store.set_tag(run_id, RunTag(spec.FAILURE_TAG, reason[:5000]))
                current = run.info.status
                # A stopped job's entry point was interrupted, which MLflow records as FAILED.
                if not RunStatus.is_terminated(RunStatus.from_string(current)) or (
                        status == "KILLED" and current == "FAILED"):
                    import time

                    store.update_run_info(run_id, RunStatus.from_string(status),
                                          int(time.time() * 1000), None)
        except Exception:
            _logger.warning("job %s: could not end run %s of tenant %s", job_id, run_id,
                            tenant, exc_info=True)

    def tag(self, tenant: str, run_id: str, key: str, value: str) -> None:
        from mlflow.entities import RunTag

        with tenant_workspace(tenant):
            self._store().set_tag(run_id, RunTag(key, value))

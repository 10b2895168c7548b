"""Errors of the tenancy layer that other parts raise or catch. Kept free of SQLAlchemy so
that importing them (e.g. from the artifact repository MLflow loads in every client process)
stays light."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_EXHAUSTED

from mlflow_tenant_plugins.tenancy.quotas import format_size


def _describe(resource: str, n: int) -> str:
    return format_size(n) if resource == "storage_bytes" else str(n)


class QuotaExceeded(MlflowException):
    """429 RESOURCE_EXHAUSTED naming the quota, its limit and the current use."""

    def __init__(self, tenant: str, resource: str, requested: int, used: int, limit: int,
                 note: str = ""):
        self.tenant, self.resource = tenant, resource
        self.requested, self.used, self.limit = requested, used, limit
        super().__init__(
            f"quota exceeded for tenant '{tenant}': {resource} limit is "
            f"{_describe(resource, limit)} ({limit}), {_describe(resource, used)} ({used}) in use, "
            f"this request needs {_describe(resource, requested)} ({requested}) more"
            + (f" ({note})" if note else ""),
            RESOURCE_EXHAUSTED,
        )

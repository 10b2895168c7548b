"""Errors of the tenancy layer that other parts raise or catch. Kept free of SQLAlchemy so
that importing them (e.g. from the artifact repository MLflow loads in every client process)
stays light.

Quota refusals answer :data:`QUOTA_HTTP_STATUS` (409), not MLflow's default 429 for
``RESOURCE_EXHAUSTED``: the stock client retries 408/429/500/502/503/504 with backoff
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7, factor 2), so a 429 reached the user after about four
minutes as ``too many 429 error responses``, without the quota's message. A full quota is not
transient. 409 Conflict ("the request conflicts with the current state of the resource; the
user might resolve it and resubmit") is not retried, is a client-side status (a tenant's full
quota must not page the operators' 5xx alarms as 507 would), and is not 403, which tenants read
as a missing grant. The JSON body keeps ``error_code: RESOURCE_EXHAUSTED``, which is what code
should test. 429 with ``Retry-After`` stays for real rate limits.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_EXHAUSTED, ErrorCode

from mlflow_tenant_plugins.mlflow_hooks.server import set_http_status
from mlflow_tenant_plugins.tenancy.quotas import format_size
from mlflow_tenant_plugins.wire import QUOTA_FIELD

QUOTA_HTTP_STATUS = 409
QUOTA_ERROR_CODE = ErrorCode.Name(RESOURCE_EXHAUSTED)


def use_quota_http_status() -> None:
    """Make every ``RESOURCE_EXHAUSTED`` raised in this process — ours as :class:`QuotaExceeded`
    or as a plain ``MlflowException`` (deployment checks) — answer :data:`QUOTA_HTTP_STATUS`.

    Through ``mlflow_hooks.server.set_http_status``. MLflow itself raises
    ``RESOURCE_EXHAUSTED`` nowhere, so only this package's quota refusals change. Idempotent;
    run when this module is imported."""
    set_http_status(QUOTA_ERROR_CODE, QUOTA_HTTP_STATUS)


use_quota_http_status()


def _describe(resource: str, n: int) -> str:
    return format_size(n) if resource == "storage_bytes" else str(n)


class QuotaExceeded(MlflowException):
    """409 ``RESOURCE_EXHAUSTED`` naming the quota, its limit and the current use; the JSON
    body also names the quota in :data:`~mlflow_tenant_plugins.wire.QUOTA_FIELD`, for
    monitoring (and scripts) to read without parsing the message."""

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
            **{QUOTA_FIELD: resource},
        )

    def get_http_status_code(self) -> int:
        return QUOTA_HTTP_STATUS

"""The platform's job API as seen from a tenant's machine (``/api/2.0/tenants/jobs``).

Requests go to the tracking server with MLflow's own REST helpers, as the deployment client
does, so whatever authenticates the tenant's other MLflow calls (``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_AUTH=tenant``, the workspace from ``MLFLOW_WORKSPACE`` or the profile)
authenticates these too. Errors come back as :class:`MlflowException` carrying the server's
message and error code (a full quota: ``RESOURCE_EXHAUSTED``). Nothing server-side imported.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_tenant_plugins.wire import JOBS_PREFIX

TIMEOUT = 120


def tracking_uri() -> str:
    """The tracking server's http(s) address, or an error saying jobs need one."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        raise MlflowException(
            "tenant-sagemaker runs projects on the platform: set MLFLOW_TRACKING_URI to the "
            f"platform server's http(s) address (it is {uri!r})", INVALID_PARAMETER_VALUE)
    return uri


def _call(method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    endpoint = JOBS_PREFIX + path
    # Writes are not retried (a retried submit could start a second job); reads are, on
    # 502/503/504 only: a 409 (a full quota) is an answer, not a glitch.
    response = http_request(
        get_default_host_creds(tracking_uri()), endpoint, method,
        max_retries=0 if method == "POST" else 3, retry_codes=(502, 503, 504),
        json=body, params=params, timeout=TIMEOUT,
    )
    return json.loads(verify_rest_response(response, endpoint).text or "{}")


def submit(run_id: str, entry_point: str, parameters: dict[str, str],
           config: dict[str, Any]) -> dict[str, Any]:
    """Start a job that runs ``entry_point`` of the project uploaded to ``run_id``."""
    body = {"run_id": run_id, "entry_point": entry_point,
            "parameters": {str(k): str(v) for k, v in parameters.items()}, "config": config}
    return _call("POST", "/submit", body=body)["job"]


def check(entry_point: str, config: dict[str, Any]) -> None:
    """Ask the platform whether it would start this job now (quotas, instance type, runtime,
    validation), before a run is created: a refusal then leaves nothing behind."""
    _call("POST", "/check", body={"entry_point": entry_point, "config": config})


def get(job_id: str) -> dict[str, Any]:
    return _call("GET", "/get", params={"job_id": str(job_id)})["job"]


def list_jobs(status: str = "active") -> list[dict[str, Any]]:
    """The tenant's jobs: ``active`` (queued, starting, running) or ``all``."""
    return _call("GET", "/list", params={"status": status})["jobs"]


def logs(job_id: str, token: str | None = None) -> tuple[list[str], str | None]:
    """(lines after ``token``, the token to read on with); the token is None when the job
    has nothing more to read yet."""
    params = {"job_id": str(job_id)}
    if token:
        params["token"] = token
    out = _call("GET", "/logs", params=params)
    return list(out.get("lines") or []), out.get("next_token")


def stop(job_id: str) -> dict[str, Any]:
    """Ask the platform to stop the job (a job already ended is left as it is)."""
    return _call("POST", "/stop", body={"job_id": str(job_id)})["job"]

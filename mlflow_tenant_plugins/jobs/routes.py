"""REST routes of the jobs the platform runs for tenants (``mlflow run -b tenant-sagemaker``).

Exact paths, parameters in the query or JSON body (MLflow's validator table matches exact
paths). The tenant is the request's (``current_tenant()``), never one named in the body; a job
of another tenant answers the same 404 as a job that does not exist. Errors are MLflow-format
JSON that the stock client does not retry: 400 INVALID_PARAMETER_VALUE, 403
PERMISSION_DENIED, 404 RESOURCE_DOES_NOT_EXIST, 409 RESOURCE_EXHAUSTED (a full quota, named)
or RESOURCE_CONFLICT (the run already has a job).

    POST /api/2.0/tenants/jobs/check   {entry_point?, config?}: would it start now?  editor
    POST /api/2.0/tenants/jobs/submit  {run_id, entry_point?, parameters?, config?}  editor
    GET  /api/2.0/tenants/jobs/get     ?job_id=                                     viewer
    GET  /api/2.0/tenants/jobs/list    ?status=active|all                           viewer
    GET  /api/2.0/tenants/jobs/logs    ?job_id=&token=                              editor
    POST /api/2.0/tenants/jobs/stop    {job_id}          editor (own jobs), deployer (any)
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins.auth.identity import current_tenant, require_role
from mlflow_tenant_plugins.platform import current_platform
from mlflow_tenant_plugins.tenancy import Role
from mlflow_tenant_plugins.wire import JOBS_PREFIX

ROUTES: dict[str, tuple[str, Role]] = {
    "/check": ("POST", Role.EDITOR),
    "/submit": ("POST", Role.EDITOR),
    "/get": ("GET", Role.VIEWER),
    "/list": ("GET", Role.VIEWER),
    "/logs": ("GET", Role.EDITOR),
    "/stop": ("POST", Role.EDITOR),
}
blueprint = Blueprint("tenant_jobs", __name__, url_prefix=JOBS_PREFIX)


def _service():
    return current_platform().job_service()


def _authorize(path: str):
    tenant = current_tenant()
    return tenant, require_role(ROUTES[path][1], tenant)


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise MlflowException.invalid_parameter_value("expected a JSON object in the body")
    return data


def _str(data, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value in (None, ""):
        if required:
            raise MlflowException.invalid_parameter_value(f"missing parameter '{key}'")
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise MlflowException.invalid_parameter_value(f"'{key}' must be a short string")
    return value


@blueprint.route("/submit", methods=["POST"])
@catch_mlflow_exception
def submit():
    tenant, identity = _authorize("/submit")
    data = _body()
    job = _service().submit(tenant, identity.principal, _str(data, "run_id"),
                            _str(data, "entry_point", False) or "main",
                            data.get("parameters") or {}, data.get("config") or {})
    return jsonify({"job": job})


@blueprint.route("/check", methods=["POST"])
@catch_mlflow_exception
def check():
    tenant, _ = _authorize("/check")
    _service().check(tenant, _body().get("config") or {})
    return jsonify({"ok": True})


@blueprint.route("/get", methods=["GET"])
@catch_mlflow_exception
def get():
    tenant, _ = _authorize("/get")
    return jsonify({"job": _service().get(tenant, _str(request.args, "job_id"))})


@blueprint.route("/list", methods=["GET"])
@catch_mlflow_exception
def list_jobs():
    tenant, _ = _authorize("/list")
    status = request.args.get("status") or "all"
    if status not in ("active", "all"):
        raise MlflowException.invalid_parameter_value("'status' must be 'active' or 'all'")
    return jsonify({"jobs": _service().list(tenant, active_only=status == "active")})


@blueprint.route("/logs", methods=["GET"])
@catch_mlflow_exception
def logs():
    tenant, _ = _authorize("/logs")
    page = _service().logs(tenant, _str(request.args, "job_id"),
                           _str(request.args, "token", False))
    return jsonify({"lines": page.lines, "next_token": page.next_token})


@blueprint.route("/stop", methods=["POST"])
@catch_mlflow_exception
def stop():
    tenant, identity = _authorize("/stop")
    may_stop_any = identity.has_role(tenant, Role.DEPLOYER)
    job = _service().stop(tenant, _str(_body(), "job_id"), identity.principal, may_stop_any)
    return jsonify({"job": job})

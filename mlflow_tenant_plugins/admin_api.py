"""The tenant admin REST API, ``/api/2.0/tenants/…``: what ``mlflow-tenants`` does, over HTTP.

Platform admins manage every tenant; a tenant's admins manage its own keys and members;
every member may read its tenant, its usage and who it is. Paths are exact (parameters in
the query or JSON body, as MLflow's own REST API does) so each one has an exact entry in
MLflow's validator table. Errors are MLflow-format JSON.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins.auth.identity import (
    current_identity,
    require_platform_admin,
    require_role,
)
from mlflow_tenant_plugins.platform import current_platform
from mlflow_tenant_plugins.tenancy import Quotas, Role, TenantRegistry, principals
from mlflow_tenant_plugins.tenancy.entities import Budget, Tenant
from mlflow_tenant_plugins.tenancy.quotas import TYPE_LISTS, parse_count, parse_size
from mlflow_tenant_plugins.wire import API_PREFIX

PREFIX = API_PREFIX
blueprint = Blueprint("tenant_admin", __name__, url_prefix=PREFIX)


def _reg() -> TenantRegistry:
    return current_platform().registry


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise MlflowException.invalid_parameter_value("expected a JSON object in the body")
    return data


def _param(name: str, required: bool = True) -> str | None:
    value = request.args.get(name)
    if value is None and request.method != "GET":
        value = _body().get(name)
    if required and (value is None or value == ""):
        raise MlflowException.invalid_parameter_value(f"missing parameter '{name}'")
    return value


def _quotas(spec: dict | None, base: Quotas | None = None) -> Quotas | None:
    if spec is None:
        return base
    if not isinstance(spec, dict):
        raise MlflowException.invalid_parameter_value("'quotas' must be an object")
    current = (base or Quotas()).to_dict()
    unknown = set(spec) - set(current)
    if unknown:
        raise MlflowException.invalid_parameter_value(
            f"unknown quota(s) {sorted(unknown)}; valid: {sorted(current)}"
        )
    merged = {**current, **spec}
    lists = {}
    for name in TYPE_LISTS:
        types = merged[name]
        if isinstance(types, str):
            types = [t.strip() for t in types.split(",") if t.strip()]
        lists[name] = tuple(types)
    return Quotas(
        storage_bytes=parse_size(merged["storage_bytes"]),
        endpoints=parse_count(merged["endpoints"], "endpoints quota"),
        instances=parse_count(merged["instances"], "instances quota"),
        instances_per_endpoint=parse_count(
            merged["instances_per_endpoint"], "instances-per-endpoint quota"
        ),
        jobs=parse_count(merged["jobs"], "jobs quota"),
        training_instances=parse_count(merged["training_instances"],
                                       "training-instances quota"),
        max_job_runtime_seconds=parse_count(merged["max_job_runtime_seconds"],
                                            "max-job-runtime-seconds quota"),
        training_instance_hours=parse_count(merged["training_instance_hours"],
                                            "training-instance-hours quota"),
        storage_mode=str(merged["storage_mode"]),
        storage_allowance_bytes=parse_size(merged["storage_allowance_bytes"]),
        **lists,
    )


def _budget(body: dict, current: Tenant | None = None) -> Budget | None:
    """``"budget": {"amount": 250, "on_budget": "notify" | "refuse-new"}`` of a create or
    update body: keys left out keep their current values (an update) or defaults (a create);
    ``"amount": null`` or ``"budget": null`` clears the budget. None: no change."""
    if "budget" not in body:
        return None
    spec = body["budget"]
    if spec is None:
        return Budget(None, current.on_budget if current else "notify")
    if not isinstance(spec, dict):
        raise MlflowException.invalid_parameter_value(
            '\'budget\' must be an object, e.g. {"amount": 250, "on_budget": "refuse-new"}')
    unknown = set(spec) - {"amount", "on_budget"}
    if unknown:
        raise MlflowException.invalid_parameter_value(
            f"unknown budget key(s) {sorted(unknown)}; valid: ['amount', 'on_budget']")
    amount = spec["amount"] if "amount" in spec else (current.budget_amount if current
                                                       else None)
    on_budget = spec.get("on_budget", current.on_budget if current else "notify")
    return Budget(amount, on_budget)  # checks both: 400 naming the bad one


def _usage(tenant: str) -> dict:
    return {"tenant": tenant, "usage": [u.to_dict() for u in _reg().ledger.for_tenant(tenant)]}


# -- tenants (platform admins; members may read their own) ---------------------------------
@blueprint.route("/list", methods=["GET"])
@catch_mlflow_exception
def list_tenants():
    require_platform_admin()
    return jsonify({"tenants": [t.to_dict() for t in _reg().list_tenants()]})


@blueprint.route("/create", methods=["POST"])
@catch_mlflow_exception
def create_tenant():
    require_platform_admin()
    body = _body()
    tenant = _reg().create_tenant(
        _param("name"),
        display_name=body.get("display_name"),
        quotas=_quotas(body.get("quotas")),
        alarm_topic_arn=body.get("alarm_topic_arn"),
        require_validation=bool(body.get("require_validation", False)),
        budget=_budget(body),
    )
    return jsonify({"tenant": tenant.to_dict()})


@blueprint.route("/get", methods=["GET"])
@catch_mlflow_exception
def get_tenant():
    name = _param("name")
    require_role(Role.VIEWER, name)
    return jsonify({"tenant": _reg().get_tenant(name).to_dict()})


@blueprint.route("/update", methods=["POST"])
@catch_mlflow_exception
def update_tenant():
    require_platform_admin()
    body, name = _body(), _param("name")
    current = _reg().get_tenant(name)
    rv = body.get("require_validation")
    tenant = _reg().update_tenant(
        name,
        display_name=body.get("display_name"),
        quotas=_quotas(body.get("quotas"), current.quotas) if "quotas" in body else None,
        alarm_topic_arn=body.get("alarm_topic_arn"),
        require_validation=None if rv is None else bool(rv),
        budget=_budget(body, current),
    )
    return jsonify({"tenant": tenant.to_dict()})


@blueprint.route("/suspend", methods=["POST"])
@catch_mlflow_exception
def suspend_tenant():
    require_platform_admin()
    return jsonify({"tenant": _reg().set_status(_param("name"), "suspended").to_dict()})


@blueprint.route("/resume", methods=["POST"])
@catch_mlflow_exception
def resume_tenant():
    require_platform_admin()
    return jsonify({"tenant": _reg().set_status(_param("name"), "active").to_dict()})


@blueprint.route("/delete", methods=["POST"])
@catch_mlflow_exception
def delete_tenant():
    require_platform_admin()
    _reg().delete_tenant(_param("name"), force=bool(_body().get("force", False)))
    return jsonify({})


# -- keys and members (tenant admins for their tenant) ------------------------------------
@blueprint.route("/keys/create", methods=["POST"])
@catch_mlflow_exception
def create_key():
    body, tenant = _body(), _param("tenant")
    require_role(Role.ADMIN, tenant)
    if "principal" in body:
        raise MlflowException.invalid_parameter_value(
            "a key speaks for a principal of its own (key:<key id>), assigned by the platform; "
            "remove 'principal' from the request"
        )
    expires = body.get("expires_in_seconds")
    key, secret = _reg().create_key(
        tenant,
        Role.parse(_param("role")),
        description=str(body.get("description", "")),
        expires_in=timedelta(seconds=parse_count(expires, "expires_in_seconds"))
        if expires is not None
        else None,
    )
    return jsonify({"key": key.to_dict(), "secret": secret})


@blueprint.route("/keys/list", methods=["GET"])
@catch_mlflow_exception
def list_keys():
    tenant = _param("tenant")
    require_role(Role.ADMIN, tenant)
    return jsonify({"keys": [k.to_dict() for k in _reg().list_keys(tenant)]})


@blueprint.route("/keys/revoke", methods=["POST"])
@catch_mlflow_exception
def revoke_key():
    """Authorized before the lookup: a tenant admin's search is confined to its own tenant, so
    another tenant's key id and an unknown one get the same 404 (no oracle for key ids)."""
    key_id = _param("key_id")
    identity = current_identity()
    if not identity.platform_admin:
        tenant = identity.tenant
        require_role(Role.ADMIN, tenant)
        if not any(k.key_id == key_id for k in _reg().list_keys(tenant)):
            raise MlflowException(f"key '{key_id}' does not exist in tenant '{tenant}'",
                                  RESOURCE_DOES_NOT_EXIST)
    return jsonify({"key": _reg().revoke_key(key_id).to_dict()})


@blueprint.route("/members/list", methods=["GET"])
@catch_mlflow_exception
def list_members():
    tenant = _param("tenant")
    require_role(Role.ADMIN, tenant)
    return jsonify({"members": [m.to_dict() for m in _reg().members(tenant)]})


@blueprint.route("/members/bind", methods=["POST"])
@catch_mlflow_exception
def bind_member():
    tenant = _param("tenant")
    require_role(Role.ADMIN, tenant)
    # People and workload identities only: a key's principal is bound when the key is made,
    # and platform admins are made with database access, never over the API.
    principal = principals.validate(_param("principal"), principals.BINDABLE)
    member = _reg().bind(principal, tenant, Role.parse(_param("role")))
    return jsonify({"member": member.to_dict()})


@blueprint.route("/members/unbind", methods=["POST"])
@catch_mlflow_exception
def unbind_member():
    tenant = _param("tenant")
    require_role(Role.ADMIN, tenant)
    _reg().unbind(_param("principal"), tenant)
    return jsonify({})


# -- anyone authenticated ------------------------------------------------------------------
@blueprint.route("/usage", methods=["GET"])
@catch_mlflow_exception
def usage():
    tenant = _param("tenant", required=False)
    if tenant:
        require_role(Role.VIEWER, tenant)
        return jsonify({"tenants": [_usage(tenant)]})
    identity = current_identity()
    if identity.platform_admin:
        return jsonify({"tenants": [_usage(t.name) for t in _reg().list_tenants()]})
    return jsonify({"tenants": [_usage(identity.tenant)]})


@blueprint.route("/whoami", methods=["GET"])
@catch_mlflow_exception
def whoami():
    i = current_identity()
    return jsonify({
        "principal": i.principal,
        "tenant": i.tenant,
        "role": i.role.value if i.role else None,
        "platform_admin": i.platform_admin,
        "method": i.method,
    })

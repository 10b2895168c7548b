"""``GET /api/2.0/tenants/statement?tenant=&month=YYYY-MM``: a tenant's statement, for that
tenant's admins and platform admins (a tenant never sees another's: the same 403 as any route
of another tenant). ``tenant`` defaults to the caller's; ``month`` to the current one (UTC).
A query parameter rather than a path segment: MLflow's validator table matches exact paths."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins.auth.identity import current_tenant, require_role
from mlflow_tenant_plugins.billing.prices import PriceTable
from mlflow_tenant_plugins.billing.statement import statements
from mlflow_tenant_plugins.platform import current_platform
from mlflow_tenant_plugins.tenancy import Role
from mlflow_tenant_plugins.tenancy.meters import month_bounds, month_of
from mlflow_tenant_plugins.wire import API_PREFIX

blueprint = Blueprint("tenant_billing", __name__, url_prefix=API_PREFIX)


def check_month(month: str | None, now: datetime) -> str:
    month = month or month_of(now)
    try:
        month_bounds(month)
    except ValueError as exc:
        raise MlflowException.invalid_parameter_value(str(exc)) from None
    return month


@blueprint.route("/statement", methods=["GET"])
@catch_mlflow_exception
def statement():
    tenant = request.args.get("tenant") or current_tenant()
    require_role(Role.ADMIN, tenant)
    now = datetime.now(UTC)
    month = check_month(request.args.get("month"), now)
    platform = current_platform()
    platform.registry.get_tenant(tenant)
    [one] = statements(platform.registry, PriceTable.from_settings(platform.settings), month,
                       now, tenant)
    return jsonify({"statement": one.to_dict()})

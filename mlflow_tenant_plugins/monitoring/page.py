"""The admin usage page, ``GET /api/2.0/tenants/usage-page`` (platform admins only).

Server-rendered HTML (a Jinja template shipped in the package, no JavaScript): each tenant's
storage, endpoints and instances as bars against its quotas, coloured by how close they are
to the alarm threshold, and the CloudWatch alarm states of its endpoints. Endpoints are
looked up only for tenants whose ledger shows some, so a platform without deployments makes
no AWS call here; an AWS failure shows in the tenant's row instead of failing the page.

A tenant in storage overage mode also shows its allowance (a mark on the bar) and the billable
excess over it; the bar stays against the ceiling, where writes are refused. Hard-mode rows
are as before.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass, field
from typing import Any

import jinja2
from flask import Blueprint
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins.auth.identity import require_platform_admin
from mlflow_tenant_plugins.monitoring.snapshot import TenantUsage, snapshot
from mlflow_tenant_plugins.platform import current_platform
from mlflow_tenant_plugins.tenancy.models import utcnow
from mlflow_tenant_plugins.tenancy.quotas import Quotas, format_size
from mlflow_tenant_plugins.tenancy.text import printable
from mlflow_tenant_plugins.wire import API_PREFIX

_logger = logging.getLogger(__name__)
PATH = "/usage-page"
blueprint = Blueprint("tenant_monitoring", __name__, url_prefix=API_PREFIX)
_LABELS = {"storage_bytes": "storage", "endpoints": "endpoints", "instances": "instances"}
# Every value is HTML-escaped whatever the template's name (Flask decides by file name).
_JINJA = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


@dataclass(frozen=True)
class Bar:
    resource: str
    used: str
    limit: str
    percent: int  # of the quota, may exceed 100
    width: int  # of the bar, 0–100
    level: str  # ok / warn / over


@dataclass(frozen=True)
class Overage:
    """Storage in overage mode: included up to ``allowance``, the excess billable."""

    allowance: str
    billable: str
    billable_bytes: int
    allowance_width: int  # where the allowance falls on the bar, 0–100


@dataclass
class Row:
    tenant: str
    status: str
    bars: list[Bar]
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    overage: Overage | None = None


def overage(u: TenantUsage, quotas: Quotas | None) -> Overage | None:
    if quotas is None or quotas.storage_mode != "overage":
        return None
    allowance, used = quotas.storage_allowance_bytes, u.used["storage_bytes"]
    ceiling = u.limits["storage_bytes"]
    billable = quotas.billable_bytes(used)
    width = max(0, min(100, round(100 * allowance / ceiling))) if ceiling else 0
    return Overage(format_size(allowance), format_size(billable), billable, width)


def bar(u: TenantUsage, resource: str, threshold: float) -> Bar:
    def fmt(n: int) -> str:
        return format_size(n) if resource == "storage_bytes" else str(n)

    fraction = u.utilization(resource)
    percent = round(100 * fraction)
    level = "over" if 100 * fraction >= threshold else (
        "warn" if 100 * fraction >= 0.75 * threshold else "ok")
    return Bar(_LABELS[resource], fmt(u.used[resource]), fmt(u.limits[resource]), percent,
               max(0, min(100, percent)), level)


def endpoint_alarms(tenant: str) -> list[dict[str, Any]]:
    """The tenant's deployments with their alarms' states, through the deployment service
    (its ownership check by tag is the one every deployment call makes)."""
    from mlflow_tenant_plugins.deployments import alarms
    from mlflow_tenant_plugins.deployments.names import Names
    service = current_platform().deployment_service()
    out = []
    for dep in service.list(tenant):
        states = alarms.describe(service.aws.cloudwatch, Names(tenant, dep["name"]))
        out.append({"name": dep["name"], "status": dep.get("status", ""),
                    "alarms": [{"name": a["name"], "metric": a["metric"],
                                "state": a.get("state") or "UNKNOWN"} for a in states]})
    return out


def _text(value: Any) -> str:
    """Tenant-reachable text as the page shows it: control and format characters escaped
    (HTML escaping is the template's)."""
    return printable(str(value))


def _shown(endpoint: dict[str, Any]) -> dict[str, Any]:
    """An endpoint's names and states, any of which a tenant may have had a hand in, as text."""
    return {"name": _text(endpoint["name"]), "status": _text(endpoint["status"]),
            "alarms": [{k: _text(a[k]) for k in ("name", "metric", "state")}
                       for a in endpoint["alarms"]]}


def build_rows(usages: list[TenantUsage], threshold: float,
               quotas: dict[str, Quotas] | None = None) -> list[Row]:
    rows = []
    for u in usages:
        row = Row(_text(u.tenant), _text(u.status), [bar(u, r, threshold) for r in _LABELS],
                  overage=overage(u, (quotas or {}).get(u.tenant)))
        if u.used["endpoints"] == 0:
            row.note = "no endpoints"
        else:
            try:
                row.endpoints = [_shown(e) for e in endpoint_alarms(u.tenant)]
                row.note = "" if row.endpoints else "no endpoints"
            except Exception as exc:
                _logger.warning("alarm states of tenant %s unavailable", u.tenant, exc_info=True)
                row.note = f"alarm states unavailable: {type(exc).__name__}"
        rows.append(row)
    return rows


def render(usages: list[TenantUsage], threshold: float,
           quotas: dict[str, Quotas] | None = None) -> str:
    """The page; ``quotas`` (tenant -> its quotas) adds the storage terms of tenants in
    overage mode (without it every tenant shows as hard mode does)."""
    rows = build_rows(usages, threshold, quotas)
    template = (importlib.resources.files(__package__) / "templates" / "usage_page.html")
    return _JINJA.from_string(template.read_text(encoding="utf-8")).render(
        rows=rows,
        threshold=f"{threshold:g}",
        warn=f"{0.75 * threshold:g}",
        over=sum(1 for u in usages if 100 * u.max_utilization >= threshold),
        alarming=sum(1 for r in rows for e in r.endpoints for a in e["alarms"]
                     if a["state"] == "ALARM"),
        generated=utcnow().strftime("%Y-%m-%d %H:%M:%S"),
    )


@blueprint.route(PATH, methods=["GET"])
@catch_mlflow_exception
def usage_page():
    require_platform_admin()
    platform = current_platform()
    threshold = platform.settings.usage_alarm_threshold_percent
    quotas = {t.name: t.quotas for t in platform.registry.list_tenants()}
    html = render(snapshot(platform.registry), threshold, quotas)
    return html, 200, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}

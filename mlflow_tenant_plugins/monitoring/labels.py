"""Bounded label values for the per-tenant series.

Every label comes from a fixed set or from a verified identity, never from raw request text
(paths, ids, header values), so the number of series grows with the number of tenants only.
"""

from __future__ import annotations

import json
import re

from mlflow_tenant_plugins.auth.base import NO_METHOD, Refusal
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.wire import API_PREFIX, DEPLOYMENTS_PREFIX, QUOTA_FIELD

# Tenant label for callers that are not a tenant's.
PLATFORM = "_platform"  # a platform admin (acting anywhere)
UNAUTHENTICATED = "_unauthenticated"

# First match wins; paths are matched after ``/ajax-api`` is folded into ``/api``.
ROUTE_GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("deployments", re.compile(f"^{re.escape(DEPLOYMENTS_PREFIX)}(/|$)")),
    ("tenant-admin", re.compile(f"^{re.escape(API_PREFIX)}(/|$)")),
    ("metrics", re.compile(r"^/metrics/?$")),
    ("artifacts", re.compile(r"/mlflow-artifacts(/|$)|/artifacts(/|$)|/get-artifact$")),
    ("auth-admin", re.compile(r"/(users|roles|permissions)(/|$)")),
    ("workspaces", re.compile(r"/workspaces(/|$)")),
    ("traces", re.compile(r"^/v1/traces|/traces(/|$)|/spans(/|$)")),
    ("model-registry", re.compile(r"/(registered-models|model-versions|webhooks)(/|$)")),
    ("logged-models", re.compile(r"/logged-models(/|$)")),
    ("tracking", re.compile(r"/(experiments|runs|metrics)(/|$)")),
    ("gateway", re.compile(r"gateway|/endpoints(/|$)|/secrets(/|$)")),
    ("graphql", re.compile(r"/graphql$")),
    ("assistant", re.compile(r"/assistant(/|$)")),
    ("ui", re.compile(r"^/$|^/index\.html$|^/static-files(/|$)")),
)
OTHER = "other"
ROUTE_GROUP_NAMES = (*(g for g, _ in ROUTE_GROUPS), OTHER)

# Quotas a RESOURCE_EXHAUSTED refusal may name (tenancy.usage.RESOURCES plus deploy-time checks).
QUOTAS = ("storage_bytes", "endpoints", "instances", "instances_per_endpoint")
# Only for the one refusal that does not name its quota in wire.QUOTA_FIELD yet: the
# deployment service's instances_per_endpoint check raises a plain MlflowException.
_QUOTA_IN_MESSAGE = re.compile(r":\s*([a-z_]+) limit is")


def route_group(path: str) -> str:
    """The fixed group a request path belongs to (never the path itself)."""
    if path.startswith("/ajax-api/"):
        path = "/api/" + path.removeprefix("/ajax-api/")
    for name, pattern in ROUTE_GROUPS:
        if pattern.search(path):
            return name
    return OTHER


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def tenant_label(result: Identity | Refusal | None) -> str:
    """The tenant a request is counted for: the caller's own (verified) tenant; platform
    admins and unauthenticated callers in labels of their own. A workspace the caller named
    is not used: it is request text, and a refused cross-tenant attempt counts for the
    caller's tenant, where it belongs."""
    if isinstance(result, Identity):
        if result.platform_admin or not result.tenant:
            return PLATFORM
        return result.tenant
    return UNAUTHENTICATED


def quota_refused(body: bytes) -> str | None:
    """The quota a refusal body names, if it is a RESOURCE_EXHAUSTED refusal; else None."""
    try:
        data = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("error_code") != "RESOURCE_EXHAUSTED":
        return None
    named = data.get(QUOTA_FIELD)
    if named is None:
        match = _QUOTA_IN_MESSAGE.search(str(data.get("message", "")))
        named = match.group(1) if match else None
    return named if named in QUOTAS else OTHER


def auth_method(result: Identity | Refusal | None) -> str:
    """The method that decided a request's authentication, as the result records it
    ("none" when no method found credentials, or nothing was authenticated)."""
    return (result.method if result is not None else "") or NO_METHOD

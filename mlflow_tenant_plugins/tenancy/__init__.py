"""The ground floor: tenants, principals, role bindings, API keys, quotas and usage.

Imports no other part of the package. Its names are loaded on first use (PEP 562), so that
importing a light module such as ``tenancy.errors`` does not pull in SQLAlchemy and the
registry (MLflow imports our artifact repository in every client process).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ROLES": "roles",
    "Role": "roles",
    "Quotas": "quotas",
    "parse_size": "quotas",
    "TenantRegistry": "registry",
    "RESOURCES": "usage",
    "UsageLedger": "usage",
}

__all__ = [  # noqa: RUF022 - same order as _EXPORTS
    "ROLES", "Role", "Quotas", "parse_size", "TenantRegistry", "RESOURCES", "UsageLedger",
]

if TYPE_CHECKING:
    from mlflow_tenant_plugins.tenancy.quotas import Quotas, parse_size
    from mlflow_tenant_plugins.tenancy.registry import TenantRegistry
    from mlflow_tenant_plugins.tenancy.roles import ROLES, Role
    from mlflow_tenant_plugins.tenancy.usage import RESOURCES, UsageLedger


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

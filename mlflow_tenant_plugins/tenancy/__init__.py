"""The ground floor: tenants, principals, role bindings, API keys, quotas and usage.

Imports no other part of the package.
"""

from mlflow_tenant_plugins.tenancy.quotas import Quotas, parse_size
from mlflow_tenant_plugins.tenancy.registry import TenantRegistry
from mlflow_tenant_plugins.tenancy.roles import ROLES, Role
from mlflow_tenant_plugins.tenancy.usage import RESOURCES, UsageLedger

__all__ = ["RESOURCES", "ROLES", "Quotas", "Role", "TenantRegistry", "UsageLedger", "parse_size"]

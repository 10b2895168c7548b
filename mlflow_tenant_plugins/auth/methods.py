"""The authentication methods beyond API keys, by the name ``auth_methods`` uses.

A method is ``method(headers, client_addr) -> Identity | Refusal | None``: None when the
request carries none of its credentials (the next method may try). Each is on only when
listed in the ``auth_methods`` setting.
"""

from __future__ import annotations

from mlflow_tenant_plugins.auth.authenticator import Method
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry


def build_methods(settings: Settings, registry: TenantRegistry) -> dict[str, Method]:
    """Methods are built only when enabled, so an unused one costs nothing."""
    return {}

"""Identities asserted by an authority we trust (the ALB's OIDC claims, a trusted proxy's
headers), mapped onto the registry. Shared by the ``oidc`` and ``proxy`` methods."""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.auth.base import Refusal
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.registry import validate_principal_name
from mlflow_tenant_plugins.tenancy.roles import Role

_logger = logging.getLogger(__name__)

NO_TENANT_REASON = "this identity is not bound to an active tenant"
EXTERNAL_ROLES = ("registry", "asserted")


def parse_role(value: object, source: str, method: str = "") -> Role | Refusal:
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        return Refusal(f"{source} is not a role (valid: {', '.join(r.value for r in Role)})",
                       method=method)


def external_identity(registry: TenantRegistry, principal: str, tenant: str | None,
                      role: Role, method: str, provision: bool = False,
                      requested: str | None = None) -> Identity | Refusal:
    """The identity an authority we trust (the ALB, the proxy) asserts.

    With ``provision`` off (``external_roles = "registry"``, the default) only *who* comes
    from the assertion: the tenant names which of the principal's bindings to act in, and the
    role is the registry's (``member bind``); an asserted role is ignored, so a user-writable
    IdP attribute or a header the proxy forgot to strip grants nothing. With it on
    (``"asserted"``) the principal is provisioned on first sight with the asserted tenant and
    role — only for an IdP and proxy whose every claim and header the platform controls.

    Without a tenant the workspace the request names (``requested``) picks among the
    principal's bindings, else its home binding (its oldest) is used (or, for a platform admin,
    none).
    Refusals do not say whether the tenant exists.
    """
    no_tenant = Refusal(NO_TENANT_REASON, method=method)
    try:
        validate_principal_name(principal)
    except MlflowException:
        return Refusal(f"the {method} identity is not a valid principal name", method=method)
    admin = registry.is_platform_admin(principal)
    bindings = registry.bindings_of(principal)
    if tenant is None and not provision and requested in bindings:
        # The workspace the request names picks among the principal's own bindings (never
        # provisions: with asserted roles that would bind the user wherever it pointed).
        tenant = requested
    if tenant is None:
        if admin:
            return Identity(principal, None, None, True, method)
        if bindings:
            # The home tenant: the oldest binding. Another tenant's admin binding this
            # person later cannot move it, nor lock it out by making its tenant ambiguous;
            # to act in another of its tenants the person names it (MLFLOW_WORKSPACE).
            home, its_role = next(iter(bindings.items()))
            return Identity(principal, home, its_role, False, method)
        return Refusal(f"the {method} identity names no tenant", method=method)
    if not provision:
        if tenant not in bindings:
            return no_tenant
        return Identity(principal, tenant, bindings[tenant], admin, method)
    if bindings.get(tenant) != role:
        try:
            if not registry.get_tenant(tenant).active:
                return no_tenant
            registry.bind(principal, tenant, role)
        except MlflowException:
            return no_tenant
        except Exception:
            # Another worker provisioning the same principal at the same moment loses a
            # unique-constraint race; what it wanted is then in place.
            if registry.bindings_of(principal).get(tenant) != role:
                raise
        _logger.info("provisioned %s principal %s as %s in tenant %s",
                     method, principal, role.value, tenant)
    return Identity(principal, tenant, role, admin, method)


def provisions(settings: Settings) -> bool:
    """Whether asserted identities are provisioned with their asserted tenant and role."""
    if settings.external_roles not in EXTERNAL_ROLES:
        raise ConfigError(f"external_roles must be one of {EXTERNAL_ROLES}, "
                          f"got {settings.external_roles!r}")
    return settings.external_roles == "asserted"

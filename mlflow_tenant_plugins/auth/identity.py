"""The verified identity of the current request, for our own route handlers.

MLflow's engine has already authenticated the request (``authorization_function``) before
any handler runs; handlers of ours ask here who the caller is and which tenant it acts in.
"""

from __future__ import annotations

from flask import request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED
from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

from mlflow_tenant_plugins.auth.engine import authenticate_current_request, set_identity
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.roles import Role

__all__ = ["current_identity", "current_tenant", "require_platform_admin", "require_role",
           "set_identity"]


def current_identity() -> Identity:
    """The caller; raises 401 when the request carries no verified identity."""
    identity = authenticate_current_request()
    if identity is None:
        raise MlflowException("authentication required", UNAUTHENTICATED)
    return identity


def current_tenant() -> str:
    """The tenant the request acts in: its workspace header, which the tenant-auth
    middleware fills in from the caller's own tenant when the client sent none."""
    tenant = (request.headers.get(WORKSPACE_HEADER_NAME) or "").strip()
    identity = current_identity()
    if not tenant:
        if identity.tenant is None:
            raise MlflowException.invalid_parameter_value(
                f"name the tenant with the {WORKSPACE_HEADER_NAME} header"
            )
        tenant = identity.tenant
    if not identity.may_act_in(tenant):
        raise MlflowException(f"not allowed to act in tenant '{tenant}'", PERMISSION_DENIED)
    return tenant


def require_role(role: Role, tenant: str | None = None) -> Identity:
    """The caller, if it holds ``role`` (or more) in ``tenant`` (default: the request's)."""
    identity = current_identity()
    tenant = tenant or current_tenant()
    if not identity.has_role(tenant, role):
        raise MlflowException(
            f"this needs the '{role.value}' role in tenant '{tenant}'", PERMISSION_DENIED
        )
    return identity


def require_platform_admin() -> Identity:
    identity = current_identity()
    if not identity.platform_admin:
        raise MlflowException("this needs a platform admin", PERMISSION_DENIED)
    return identity

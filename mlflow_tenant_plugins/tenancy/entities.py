"""Plain records the registry hands out (no ORM objects escape a session)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mlflow_tenant_plugins.tenancy.quotas import Quotas
from mlflow_tenant_plugins.tenancy.roles import Role


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


ON_BUDGET = ("notify", "refuse-new")


@dataclass(frozen=True)
class Budget:
    """A tenant's monthly budget: ``amount`` in the price table's currency (None: none);
    past 100 % with ``refuse-new``, new deployments and jobs are refused."""

    amount: float | None = None
    on_budget: str = "notify"

    def __post_init__(self) -> None:
        from mlflow.exceptions import MlflowException

        if self.amount is not None and (isinstance(self.amount, bool) or not isinstance(
                self.amount, int | float) or not 0 <= self.amount < 1e12):
            raise MlflowException.invalid_parameter_value(
                f"budget must be an amount >= 0, got {self.amount!r}")
        if self.on_budget not in ON_BUDGET:
            raise MlflowException.invalid_parameter_value(
                f"on_budget must be one of {', '.join(ON_BUDGET)}, got {self.on_budget!r}")


@dataclass(frozen=True)
class Tenant:
    name: str
    display_name: str
    status: str
    quotas: Quotas
    alarm_topic_arn: str | None
    require_validation: bool
    created_at: datetime
    updated_at: datetime
    budget_amount: float | None = None
    on_budget: str = "notify"

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "status": self.status,
            "quotas": self.quotas.to_dict(),
            "alarm_topic_arn": self.alarm_topic_arn,
            "require_validation": self.require_validation,
            "budget": {"amount": self.budget_amount, "on_budget": self.on_budget},
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    principal: str
    tenant: str | None
    role: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def to_dict(self) -> dict:
        return {
            "key_id": self.key_id,
            "principal": self.principal,
            "tenant": self.tenant,
            "role": self.role,
            "description": self.description,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


@dataclass(frozen=True)
class Identity:
    """Who a verified credential speaks for. ``tenant`` is None for a platform admin."""

    principal: str
    tenant: str | None
    role: Role | None
    platform_admin: bool
    method: str

    def may_act_in(self, tenant: str) -> bool:
        return self.platform_admin or self.tenant == tenant

    def has_role(self, tenant: str, role: Role) -> bool:
        if self.platform_admin:
            return True
        return self.tenant == tenant and self.role is not None and self.role.includes(role)


@dataclass(frozen=True)
class Member:
    principal: str
    tenant: str
    role: str
    kind: str

    def to_dict(self) -> dict:
        return {"principal": self.principal, "tenant": self.tenant, "role": self.role,
                "kind": self.kind}

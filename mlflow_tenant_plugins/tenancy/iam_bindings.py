"""AWS IAM bindings: which IAM identity (by ARN) may act in which tenant, with which role.

A binding is both a row here and an ordinary role binding of the registry (principal
``iam:<ARN>``), so MLflow's engine authorizes an IAM caller exactly as it does any other principal.
The row is what lets the IAM method accept the identity at all: a principal bound by other
means (``member bind``) does not become an IAM login by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mlflow_tenant_plugins.tenancy.models import Base, TenantRow, utcnow
from mlflow_tenant_plugins.tenancy.principals import iam_principal
from mlflow_tenant_plugins.tenancy.registry import TenantRegistry
from mlflow_tenant_plugins.tenancy.roles import Role

PRINCIPAL_KIND = "iam"
# arn:PARTITION:SERVICE::ACCOUNT:RESOURCE — IAM and STS ARNs carry no region.
_ARN = re.compile(r"^arn:(aws[a-z-]*):(iam|sts)::(\d{12}):(.+)$")


class IamBindingRow(Base):
    __tablename__ = "mlt_iam_bindings"
    __table_args__ = (UniqueConstraint("arn", "tenant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    arn: Mapped[str] = mapped_column(String(255), index=True)
    tenant: Mapped[str] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class IamBinding:
    arn: str
    tenant: str
    role: str
    created_at: datetime | None

    def to_dict(self) -> dict:
        return {"arn": self.arn, "tenant": self.tenant, "role": self.role,
                "created_at": self.created_at.isoformat() if self.created_at else None}


def normalize_arn(arn: str) -> str:
    """The ARN a caller is bound by.

    STS reports a role's sessions as ``arn:…:sts::ACCOUNT:assumed-role/ROLE/SESSION``; every
    session of the role maps to ``arn:…:iam::ACCOUNT:role/ROLE``. Assumed-role ARNs carry no
    role path, so a role ARN given with a path is bound by its name alone. Users, federated
    users and the account root are kept as they are.
    """
    match = _ARN.match(arn.strip()) if isinstance(arn, str) else None
    if not match:
        raise MlflowException.invalid_parameter_value(
            f"not an IAM or STS ARN: {arn!r} (expected e.g. arn:aws:iam::123456789012:role/NAME)"
        )
    partition, service, account, resource = match.groups()
    kind, _, rest = resource.partition("/")
    if service == "sts" and kind == "assumed-role" and "/" in rest:
        return f"arn:{partition}:iam::{account}:role/{rest.split('/')[0]}"
    if service == "iam" and kind == "role" and rest:
        return f"arn:{partition}:iam::{account}:role/{rest.rsplit('/', 1)[-1]}"
    if (service == "iam" and kind == "user" and rest) or (service == "iam" and resource == "root") \
            or (service == "sts" and kind == "federated-user" and rest):
        return f"arn:{partition}:{service}::{account}:{resource}"
    raise MlflowException.invalid_parameter_value(
        f"cannot bind {arn!r}: bind an IAM role, user, federated user or root ARN"
    )


class IamBindings:
    """Bindings of IAM identities to tenant roles, kept in step with the registry."""

    def __init__(self, registry: TenantRegistry):
        self.registry = registry
        self.engine = registry.engine

    def bind(self, tenant: str, arn: str, role: Role | str) -> IamBinding:
        """Bind ``arn`` (normalised) to ``role`` in ``tenant``, replacing its role there."""
        role = Role.parse(role) if isinstance(role, str) else role
        arn = normalize_arn(arn)
        principal = iam_principal(arn)
        self.registry.get_tenant(tenant)
        existing = self._role_of(arn, tenant)
        table, where = IamBindingRow.__table__, _match(arn, tenant)
        if existing is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(table.insert().values(
                        arn=arn, tenant=tenant, role=role.value, created_at=utcnow()))
            except IntegrityError:  # bound meanwhile by another admin: update instead
                existing = self._role_of(arn, tenant)
        if existing is not None:
            with self.engine.begin() as conn:
                conn.execute(table.update().where(*where).values(role=role.value))
        try:
            self.registry.bind(principal, tenant, role, kind=PRINCIPAL_KIND)
        except Exception:
            self._restore(arn, tenant, existing)
            raise
        return self._get(arn, tenant)

    def _role_of(self, arn: str, tenant: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(IamBindingRow.role).where(*_match(arn, tenant))
            ).scalar_one_or_none()

    def _restore(self, arn: str, tenant: str, previous_role: str | None) -> None:
        """Undo our row when the registry refused the binding, so the two never drift."""
        with self.engine.begin() as conn:
            where = _match(arn, tenant)
            if previous_role:
                conn.execute(IamBindingRow.__table__.update().where(*where)
                             .values(role=previous_role))
            else:
                conn.execute(delete(IamBindingRow).where(*where))

    def unbind(self, tenant: str, arn: str) -> str:
        """Remove the binding; returns the (normalised) ARN that was unbound."""
        arn = normalize_arn(arn)
        with self.engine.begin() as conn:
            removed = conn.execute(delete(IamBindingRow).where(*_match(arn, tenant))).rowcount
        if not removed:
            raise MlflowException(f"{arn} is not bound to tenant '{tenant}'",
                                  RESOURCE_DOES_NOT_EXIST)
        try:
            self.registry.unbind(iam_principal(arn), tenant)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        return arn

    def list(self, tenant: str | None = None) -> list[IamBinding]:
        query = select(IamBindingRow).order_by(IamBindingRow.tenant, IamBindingRow.arn)
        if tenant is not None:
            self.registry.get_tenant(tenant)
            query = query.where(IamBindingRow.tenant == tenant)
        with self.engine.connect() as conn:
            return [_binding(r) for r in conn.execute(query)]

    def lookup(self, arn: str) -> dict[str, Role]:
        """Tenant -> role for a verified (normalised) ARN, active tenants only."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(IamBindingRow.tenant, IamBindingRow.role)
                .join(TenantRow, TenantRow.name == IamBindingRow.tenant)
                .where(IamBindingRow.arn == arn, TenantRow.status == "active")
            ).all()
        return {t: Role(r) for t, r in rows}

    def _get(self, arn: str, tenant: str) -> IamBinding:
        with self.engine.connect() as conn:
            row = conn.execute(select(IamBindingRow).where(*_match(arn, tenant))).one()
        return _binding(row)


def _match(arn: str, tenant: str) -> tuple:
    return (IamBindingRow.arn == arn, IamBindingRow.tenant == tenant)


def _binding(row) -> IamBinding:
    created = row.created_at
    if created is not None and created.tzinfo is None:  # sqlite drops the zone; it was UTC
        created = created.replace(tzinfo=UTC)
    return IamBinding(arn=row.arn, tenant=row.tenant, role=row.role, created_at=created)

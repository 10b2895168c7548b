"""SQLAlchemy tables of the tenant registry.

Table names carry the ``mlt_`` prefix so they can live in the same database as MLflow's
tracking and basic-auth tables; the schema is owned by the Alembic scripts in
``migrations/`` (version table ``alembic_version_tenants``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


# Status while a deletion runs (never set by users): keys stop, and the ledger reserves
# nothing more, so what the deletion checked cannot grow behind its back.
DELETING = "deleting"


class TenantRow(Base):
    __tablename__ = "mlt_tenants"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="active")
    quota_storage_bytes: Mapped[int] = mapped_column(BigInteger)
    quota_endpoints: Mapped[int] = mapped_column(Integer)
    quota_instances: Mapped[int] = mapped_column(Integer)
    quota_instances_per_endpoint: Mapped[int] = mapped_column(Integer)
    # Comma-separated SageMaker instance types the tenant may deploy on.
    quota_instance_types: Mapped[str] = mapped_column(Text)
    quota_jobs: Mapped[int] = mapped_column(Integer, default=2)
    quota_training_instances: Mapped[int] = mapped_column(Integer, default=2)
    # Comma-separated SageMaker instance types the tenant's jobs may run on.
    quota_training_instance_types: Mapped[str] = mapped_column(Text, default="")
    quota_max_job_runtime_seconds: Mapped[int] = mapped_column(Integer, default=86400)
    quota_training_instance_hours: Mapped[int] = mapped_column(Integer, default=100)
    # "hard": writes past quota_storage_bytes are refused. "overage": writes past the
    # allowance succeed and the excess is billable; quota_storage_bytes is the ceiling.
    storage_mode: Mapped[str] = mapped_column(String(16), default="hard")
    quota_storage_allowance_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Monthly budget (in the price table's currency); None: no budget.
    budget_amount: Mapped[float | None] = mapped_column(Float(precision=53), nullable=True)
    # "notify" (a metric and a notification at 80 % and 100 %) or "refuse-new" (also refuse
    # new deployments and jobs past 100 %).
    on_budget: Mapped[str] = mapped_column(String(16), default="notify")
    alarm_topic_arn: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    require_validation: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class PrincipalRow(Base):
    """Someone or something that calls the server; ``name`` is its basic-auth username."""

    __tablename__ = "mlt_principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="user")
    platform_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RoleBindingRow(Base):
    __tablename__ = "mlt_role_bindings"
    __table_args__ = (UniqueConstraint("principal_id", "tenant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("mlt_principals.id", ondelete="CASCADE"), index=True
    )
    tenant: Mapped[str] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    """An API key; only the SHA-256 of the key is stored (keys carry 256 random bits)."""

    __tablename__ = "mlt_api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("mlt_principals.id", ondelete="CASCADE"), index=True
    )
    # NULL for a platform admin's key, which is bound to no tenant.
    tenant: Mapped[str | None] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), nullable=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UsageRow(Base):
    """Current use of one quota-bound resource by one tenant."""

    __tablename__ = "mlt_usage"

    tenant: Mapped[str] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class PlatformStateRow(Base):
    """Small platform-wide values every worker and instance must agree on (e.g. the Flask
    secret for CSRF when none is configured; leases)."""

    __tablename__ = "mlt_platform_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

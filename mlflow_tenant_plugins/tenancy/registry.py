"""The tenant registry: tenants (= MLflow workspaces), principals, role bindings and keys.

Every change that MLflow must also know of goes through :class:`WorkspaceMirror` in the same
call, and is undone here when the mirror fails, so tenant and workspace never drift apart.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.workspace.abstract_store import WorkspaceNameValidator
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mlflow_tenant_plugins.tenancy import keys as keylib
from mlflow_tenant_plugins.tenancy import principals
from mlflow_tenant_plugins.tenancy.db import get_engine
from mlflow_tenant_plugins.tenancy.entities import ApiKey, Budget, Identity, Member, Tenant
from mlflow_tenant_plugins.tenancy.meters import Meters
from mlflow_tenant_plugins.tenancy.models import (
    DELETING,
    ApiKeyRow,
    PlatformStateRow,
    PrincipalRow,
    RoleBindingRow,
    TenantRow,
    UsageRow,
    utcnow,
)
from mlflow_tenant_plugins.tenancy.quotas import Quotas
from mlflow_tenant_plugins.tenancy.roles import Role
from mlflow_tenant_plugins.tenancy.text import check_plain_text
from mlflow_tenant_plugins.tenancy.usage import RESOURCES, UsageLedger
from mlflow_tenant_plugins.tenancy.workspaces import WorkspaceMirror

_SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
# Column widths: checked here so that PostgreSQL never answers with a raw DataError.
_MAX_DISPLAY_NAME = 256
_MAX_DESCRIPTION = 256
_STATUSES = ("active", "suspended")
# The role a key's listing shows once its principal's binding was removed.
UNBOUND = "unbound"
# last_used_at is written at most this often per key: a write per request would make every
# authenticated read a database write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def _not_found(what: str) -> MlflowException:
    return MlflowException(f"{what} does not exist", RESOURCE_DOES_NOT_EXIST)


def _aware(t: datetime | None) -> datetime | None:
    # sqlite hands back naive datetimes even for timezone=True columns; they were UTC.
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def validate_tenant_name(name: str) -> None:
    WorkspaceNameValidator.validate(name)
    if name == "default":
        raise MlflowException.invalid_parameter_value(
            "'default' is MLflow's shared workspace and cannot be a tenant"
        )


def validate_principal_name(name: str) -> None:
    """Names are namespaced and assigned by the platform (see :mod:`.principals`)."""
    principals.validate(name)


def _check_text(what: str, value: str | None, limit: int) -> None:
    check_plain_text(what, value)  # shown in the admin's terminal and page: no control chars
    if value is not None and len(value) > limit:
        raise MlflowException.invalid_parameter_value(
            f"{what} is too long: {len(value)} characters, at most {limit}"
        )


def validate_alarm_topic_arn(arn: str | None) -> None:
    if arn and not _SNS_TOPIC_ARN.match(arn):
        raise MlflowException.invalid_parameter_value(
            f"invalid alarm topic ARN {arn!r}: expected an SNS topic ARN such as "
            "arn:aws:sns:us-east-1:123456789012:alarms"
        )


def _tenant(row: TenantRow) -> Tenant:
    types = tuple(t for t in row.quota_instance_types.split(",") if t)
    training_types = tuple(t for t in (row.quota_training_instance_types or "").split(",") if t)
    return Tenant(
        name=row.name,
        display_name=row.display_name,
        status=row.status,
        quotas=Quotas(
            storage_bytes=row.quota_storage_bytes,
            endpoints=row.quota_endpoints,
            instances=row.quota_instances,
            instances_per_endpoint=row.quota_instances_per_endpoint,
            instance_types=types,
            jobs=row.quota_jobs,
            training_instances=row.quota_training_instances,
            training_instance_types=training_types,
            max_job_runtime_seconds=row.quota_max_job_runtime_seconds,
            training_instance_hours=row.quota_training_instance_hours,
            storage_mode=row.storage_mode or "hard",
            storage_allowance_bytes=row.quota_storage_allowance_bytes or 0,
        ),
        budget_amount=row.budget_amount,
        on_budget=row.on_budget or "notify",
        alarm_topic_arn=row.alarm_topic_arn,
        require_validation=bool(row.require_validation),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def _quota_columns(quotas: Quotas) -> dict:
    return {
        "quota_storage_bytes": quotas.storage_bytes,
        "quota_endpoints": quotas.endpoints,
        "quota_instances": quotas.instances,
        "quota_instances_per_endpoint": quotas.instances_per_endpoint,
        "quota_instance_types": ",".join(quotas.instance_types),
        "quota_jobs": quotas.jobs,
        "quota_training_instances": quotas.training_instances,
        "quota_training_instance_types": ",".join(quotas.training_instance_types),
        "quota_max_job_runtime_seconds": quotas.max_job_runtime_seconds,
        "quota_training_instance_hours": quotas.training_instance_hours,
        "storage_mode": quotas.storage_mode,
        "quota_storage_allowance_bytes": quotas.storage_allowance_bytes,
    }


class TenantRegistry:
    def __init__(self, database_uri: str, tracking_uri: str | None = None):
        self.database_uri = database_uri
        self.engine: Engine = get_engine(database_uri)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.ledger = UsageLedger(self.engine)
        self.mirror = WorkspaceMirror(tracking_uri or database_uri, database_uri)

    @classmethod
    def from_settings(cls, settings) -> TenantRegistry:
        return cls(settings.database_uri, settings.effective_tracking_uri)

    def _session(self) -> Session:
        return self._sessions()

    # -- tenants ---------------------------------------------------------------------------
    def create_tenant(
        self,
        name: str,
        display_name: str | None = None,
        quotas: Quotas | None = None,
        alarm_topic_arn: str | None = None,
        require_validation: bool = False,
        budget: Budget | None = None,
    ) -> Tenant:
        validate_tenant_name(name)
        _check_text("display name", display_name, _MAX_DISPLAY_NAME)
        validate_alarm_topic_arn(alarm_topic_arn)
        quotas = quotas or Quotas()
        with self._session() as s:
            if s.get(TenantRow, name) is not None:
                raise MlflowException(f"tenant '{name}' already exists", RESOURCE_ALREADY_EXISTS)
        if self.mirror.workspace_exists(name):
            raise MlflowException(
                f"a workspace named '{name}' already exists in MLflow; choose another name",
                RESOURCE_ALREADY_EXISTS,
            )
        row = TenantRow(
            name=name,
            display_name=display_name or name,
            status="active",
            alarm_topic_arn=alarm_topic_arn,
            require_validation=require_validation,
            budget_amount=budget.amount if budget else None,
            on_budget=budget.on_budget if budget else "notify",
            **_quota_columns(quotas),
        )
        with self._session() as s:
            s.add(row)
            for resource in RESOURCES:
                s.add(UsageRow(tenant=name, resource=resource, used=0))
            try:
                s.commit()
            except IntegrityError:
                raise MlflowException(
                    f"tenant '{name}' already exists", RESOURCE_ALREADY_EXISTS
                ) from None
        try:
            self.mirror.create_tenant(name, display_name or name)
        except Exception:
            with self.engine.begin() as conn:
                conn.execute(delete(UsageRow).where(UsageRow.tenant == name))
                conn.execute(delete(TenantRow).where(TenantRow.name == name))
            raise
        return self.get_tenant(name)

    def get_tenant(self, name: str) -> Tenant:
        with self._session() as s:
            row = s.get(TenantRow, name)
            if row is None:
                raise _not_found(f"tenant '{name}'")
            return _tenant(row)

    def list_tenants(self) -> list[Tenant]:
        with self._session() as s:
            return [_tenant(r) for r in s.scalars(select(TenantRow).order_by(TenantRow.name))]

    def update_tenant(
        self,
        name: str,
        *,
        display_name: str | None = None,
        quotas: Quotas | None = None,
        alarm_topic_arn: str | None = None,
        require_validation: bool | None = None,
        budget: Budget | None = None,
    ) -> Tenant:
        _check_text("display name", display_name, _MAX_DISPLAY_NAME)
        validate_alarm_topic_arn(alarm_topic_arn)
        values: dict = {}
        if budget is not None:
            values.update(budget_amount=budget.amount, on_budget=budget.on_budget)
        if display_name is not None:
            values["display_name"] = display_name
        if quotas is not None:
            values.update(_quota_columns(quotas))
        if alarm_topic_arn is not None:
            values["alarm_topic_arn"] = alarm_topic_arn or None
        if require_validation is not None:
            values["require_validation"] = require_validation
        if values:
            values["updated_at"] = utcnow()
            with self.engine.begin() as conn:
                if not conn.execute(
                    update(TenantRow).where(TenantRow.name == name).values(**values)
                ).rowcount:
                    raise _not_found(f"tenant '{name}'")
        return self.get_tenant(name)

    def set_status(self, name: str, status: str) -> Tenant:
        """Suspension takes effect for every key of the tenant at once: key verification
        joins the tenant's status on each lookup."""
        if status not in _STATUSES:
            raise MlflowException.invalid_parameter_value(f"status must be one of {_STATUSES}")
        self._write_status(name, status)
        return self.get_tenant(name)

    def _write_status(self, name: str, status: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(
                update(TenantRow)
                .where(TenantRow.name == name)
                .values(status=status, updated_at=utcnow())
            ).rowcount:
                raise _not_found(f"tenant '{name}'")

    def delete_tenant(self, name: str, force: bool = False) -> None:
        """Refuses while the tenant holds storage, endpoints or instances, unless forced.

        The tenant is fenced first (status ``deleting``: its keys stop and the ledger reserves
        nothing more), so no reservation can land between the check and the delete; a refused
        deletion lifts the fence again."""
        before = self.get_tenant(name).status
        self._write_status(name, DELETING)
        try:
            held = [u for u in self.ledger.for_tenant(name) if u.used > 0]
            if held and not force:
                desc = ", ".join(f"{u.resource}={u.used}" for u in held)
                raise MlflowException(
                    f"tenant '{name}' still holds resources ({desc}); delete them first or use "
                    "--force",
                    INVALID_STATE,
                )
            # MLflow's side first: with RESTRICT it refuses while the workspace has
            # experiments or models, and then nothing of ours has been touched yet.
            self.mirror.delete_tenant(name, force=force)
        except BaseException:
            self._write_status(name, before if before != DELETING else "active")
            raise
        with self._session() as s:
            principals = s.scalars(
                select(PrincipalRow.name)
                .join(RoleBindingRow, RoleBindingRow.principal_id == PrincipalRow.id)
                .where(RoleBindingRow.tenant == name, PrincipalRow.kind == "service")
            ).all()
        with self.engine.begin() as conn:
            for table in (ApiKeyRow, RoleBindingRow, UsageRow):
                conn.execute(delete(table).where(table.tenant == name))
            conn.execute(delete(PrincipalRow).where(PrincipalRow.name.in_(principals)))
            conn.execute(delete(TenantRow).where(TenantRow.name == name))
        # Its meters stop here; its months so far stay billable (meters have no foreign key).
        Meters(self.engine).close(name, utcnow())
        for principal in principals:
            self.mirror.delete_user(principal)

    # -- principals and bindings -----------------------------------------------------------
    def ensure_principal(self, name: str, kind: str = "user", platform_admin: bool = False) -> int:
        validate_principal_name(name)
        with self._session() as s:
            row = s.scalar(select(PrincipalRow).where(PrincipalRow.name == name))
            if row is None:
                row = PrincipalRow(name=name, kind=kind, platform_admin=platform_admin)
                s.add(row)
                try:
                    s.commit()
                except IntegrityError:  # created meanwhile by another process
                    s.rollback()
                    row = s.scalar(select(PrincipalRow).where(PrincipalRow.name == name))
            elif platform_admin and not row.platform_admin:
                row.platform_admin = True
                s.commit()
            principal_id = row.id
        self.mirror.ensure_user(name, platform_admin=platform_admin)
        return principal_id

    def bind(self, principal: str, tenant: str, role: Role | str, kind: str = "user") -> Member:
        role = Role.parse(role) if isinstance(role, str) else role
        self.get_tenant(tenant)
        self._check_bindable(principal, tenant, creating_key=kind == "service")
        principal_id = self.ensure_principal(principal, kind=kind)
        with self._session() as s:
            row = s.scalar(
                select(RoleBindingRow).where(
                    RoleBindingRow.principal_id == principal_id, RoleBindingRow.tenant == tenant
                )
            )
            previous = row.role if row else None
            if row is None:
                s.add(RoleBindingRow(principal_id=principal_id, tenant=tenant, role=role.value))
            else:
                row.role = role.value
            s.commit()
        try:
            self.mirror.assign(principal, tenant, role)
        except Exception:
            if previous is None:
                self.unbind(principal, tenant)
            else:
                self.bind(principal, tenant, previous)
            raise
        return Member(principal, tenant, role.value, kind)

    def _check_bindable(self, principal: str, tenant: str, creating_key: bool) -> None:
        """A key's principal belongs to the key's tenant for life, and platform admins are
        not tenant members: neither can be bound elsewhere."""
        ns = principals.namespace_of(principal)
        if ns == principals.ADMIN:
            raise MlflowException.invalid_parameter_value(
                f"'{principal}' is a platform admin: it needs no tenant binding"
            )
        if ns != principals.KEY or creating_key:
            validate_principal_name(principal)
            return
        with self._session() as s:
            key_tenant = s.scalar(select(ApiKeyRow.tenant).where(
                ApiKeyRow.key_id == principal.partition(":")[2]))
        if key_tenant != tenant:
            raise MlflowException.invalid_parameter_value(
                f"'{principal}' is the principal of a key of another tenant (or of no key): a "
                "key's principal can only hold a role in the key's own tenant"
            )

    def unbind(self, principal: str, tenant: str) -> None:
        """Remove ``principal``'s role in ``tenant``. One answer for a principal that exists
        only elsewhere and one that exists nowhere: the tenant's admin learns nothing of other
        tenants' members."""
        with self._session() as s:
            principal_id = s.scalar(select(PrincipalRow.id).where(PrincipalRow.name == principal))
            removed = principal_id is not None and s.execute(
                delete(RoleBindingRow).where(
                    RoleBindingRow.principal_id == principal_id, RoleBindingRow.tenant == tenant
                )
            ).rowcount
            s.commit()
        if not removed:
            raise MlflowException(f"'{principal}' is not a member of tenant '{tenant}'",
                                  RESOURCE_DOES_NOT_EXIST)
        self.mirror.unassign(principal, tenant)

    def members(self, tenant: str) -> list[Member]:
        self.get_tenant(tenant)
        with self._session() as s:
            rows = s.execute(
                select(PrincipalRow.name, RoleBindingRow.role, PrincipalRow.kind)
                .join(RoleBindingRow, RoleBindingRow.principal_id == PrincipalRow.id)
                .where(RoleBindingRow.tenant == tenant)
                .order_by(PrincipalRow.name)
            ).all()
        return [Member(n, tenant, r, k) for n, r, k in rows]

    def bindings_of(self, principal: str) -> dict[str, Role]:
        """Tenant -> role for a principal (OIDC, proxy and IAM identities use these), oldest
        binding first: the first is the principal's home tenant."""
        with self._session() as s:
            rows = s.execute(
                select(RoleBindingRow.tenant, RoleBindingRow.role)
                .join(PrincipalRow, RoleBindingRow.principal_id == PrincipalRow.id)
                .join(TenantRow, TenantRow.name == RoleBindingRow.tenant)
                .where(PrincipalRow.name == principal, TenantRow.status == "active")
                .order_by(RoleBindingRow.created_at, RoleBindingRow.id)
            ).all()
        return {t: Role(r) for t, r in rows}

    def is_platform_admin(self, principal: str) -> bool:
        with self._session() as s:
            return bool(
                s.scalar(select(PrincipalRow.platform_admin).where(PrincipalRow.name == principal))
            )

    # -- API keys --------------------------------------------------------------------------
    def create_key(
        self,
        tenant: str | None,
        role: Role | str,
        *,
        admin_label: str | None = None,
        description: str = "",
        expires_in: timedelta | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for a tenant role (or, with ``tenant=None``, a platform admin key).
        Returns the record and the key itself, which is never stored and never shown again.

        A tenant key speaks for a principal of its own, ``key:<key id>``, bound to ``role``
        in ``tenant``; its authority is that binding as it is *now* (``member bind`` can
        change it, ``member unbind`` ends it). Nobody chooses the name, so a key can never
        speak for another principal. A platform admin key speaks for ``admin:<label>``.
        """
        role = Role.parse(role) if isinstance(role, str) else role
        _check_text("key description", description, _MAX_DESCRIPTION)
        if expires_in is not None and expires_in.total_seconds() <= 0:
            raise MlflowException.invalid_parameter_value("expiry must be in the future")
        key_id, secret = keylib.new_key()
        if tenant is None:
            principal = principals.admin_principal(admin_label or f"key-{key_id}")
            principal_id = self.ensure_principal(principal, kind="user", platform_admin=True)
        else:
            if admin_label is not None:
                raise MlflowException.invalid_parameter_value(
                    "a tenant key speaks for a principal of its own; labels are for platform "
                    "admin keys"
                )
            if not self.get_tenant(tenant).active:
                raise MlflowException(f"tenant '{tenant}' is suspended", INVALID_STATE)
            principal = principals.key_principal(key_id)
            self.bind(principal, tenant, role, kind="service")
            with self._session() as s:
                principal_id = s.scalar(
                    select(PrincipalRow.id).where(PrincipalRow.name == principal)
                )
        row = ApiKeyRow(
            key_id=key_id,
            key_hash=keylib.key_hash(secret),
            principal_id=principal_id,
            tenant=tenant,
            role=role.value,
            description=description,
            expires_at=utcnow() + expires_in if expires_in else None,
        )
        with self._session() as s:
            s.add(row)
            s.commit()
        return self.get_key(key_id), secret

    def get_key(self, key_id: str) -> ApiKey:
        keys = self._keys(ApiKeyRow.key_id == key_id)
        if not keys:
            raise _not_found(f"key '{key_id}'")
        return keys[0]

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        if tenant is not None:
            self.get_tenant(tenant)
            return self._keys(ApiKeyRow.tenant == tenant)
        return self._keys()

    def _keys(self, *where) -> list[ApiKey]:
        """Keys with their *live* role: the binding of the key's principal in its tenant
        (``unbound`` once ``member unbind`` removed it; such a key authenticates no more)."""
        with self._session() as s:
            rows = s.execute(
                select(ApiKeyRow, PrincipalRow.name, RoleBindingRow.role)
                .join(PrincipalRow, PrincipalRow.id == ApiKeyRow.principal_id)
                .outerjoin(RoleBindingRow, (RoleBindingRow.principal_id == ApiKeyRow.principal_id)
                           & (RoleBindingRow.tenant == ApiKeyRow.tenant))
                .where(*where)
                .order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
            ).all()
        return [
            ApiKey(
                key_id=k.key_id,
                principal=name,
                tenant=k.tenant,
                role=k.role if k.tenant is None else (bound or UNBOUND),
                description=k.description,
                created_at=_aware(k.created_at),
                expires_at=_aware(k.expires_at),
                revoked_at=_aware(k.revoked_at),
                last_used_at=_aware(k.last_used_at),
            )
            for k, name, bound in rows
        ]

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.engine.begin() as conn:
            if not conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            ).rowcount:
                self.get_key(key_id)  # raises when unknown; already revoked is fine
        return self.get_key(key_id)

    def verify_key(self, secret: str) -> Identity | None:
        """The identity of a valid key, or None for any key that is malformed, unknown,
        expired, revoked, or whose tenant is suspended (one answer: no oracle)."""
        if not isinstance(secret, str) or keylib.key_id_of(secret) is None:
            return None
        digest = keylib.key_hash(secret)
        with self._session() as s:
            found = s.execute(
                select(ApiKeyRow, PrincipalRow.name, PrincipalRow.platform_admin, TenantRow.status,
                       RoleBindingRow.role)
                .join(PrincipalRow, PrincipalRow.id == ApiKeyRow.principal_id)
                .outerjoin(TenantRow, TenantRow.name == ApiKeyRow.tenant)
                .outerjoin(RoleBindingRow, (RoleBindingRow.principal_id == ApiKeyRow.principal_id)
                           & (RoleBindingRow.tenant == ApiKeyRow.tenant))
                .where(ApiKeyRow.key_hash == digest)
            ).one_or_none()
        if found is None:
            return None
        key, principal, platform_admin, status, bound_role = found
        now = utcnow()
        expires_at = _aware(key.expires_at)
        if (
            not keylib.hashes_equal(key.key_hash, digest)
            or key.revoked_at is not None
            or (expires_at is not None and expires_at <= now)
            or (key.tenant is not None and (status != "active" or bound_role is None))
            or (key.tenant is None and not platform_admin)
        ):
            return None
        last = _aware(key.last_used_at)
        if last is None or now - last >= LAST_USED_RESOLUTION:
            with self.engine.begin() as conn:
                conn.execute(
                    update(ApiKeyRow).where(ApiKeyRow.key_id == key.key_id).values(last_used_at=now)
                )
        # Authority from the live registry: the principal's binding now, not the role the key
        # was created with (a demoted or unbound principal loses its power at once).
        return Identity(
            principal=principal,
            tenant=key.tenant,
            role=Role(bound_role) if key.tenant else None,
            platform_admin=key.tenant is None,
            method="key",
        )

    # -- platform state --------------------------------------------------------------------
    def shared_secret(self, name: str) -> str:
        """A random value created once and then shared by every worker and instance."""
        with self._session() as s:
            row = s.get(PlatformStateRow, name)
            if row is None:
                s.add(PlatformStateRow(key=name, value=secrets.token_urlsafe(32)))
                try:
                    s.commit()
                except IntegrityError:
                    s.rollback()
                row = s.get(PlatformStateRow, name)
            return row.value

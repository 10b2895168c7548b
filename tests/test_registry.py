"""The tenant registry on sqlite and on PostgreSQL: tenants are MLflow workspaces with
basic-auth roles, keys are stored only as hashes and stop at once when revoked or
suspended, and nothing is left half-created when MLflow's side fails."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.tenancy import Quotas, Role, TenantRegistry, parse_size
from mlflow_tenant_plugins.tenancy.keys import key_hash
from mlflow_tenant_plugins.tenancy.workspaces import ROLE_GRANTS, auth_role_name

REGISTRY_ON_EVERY_BACKEND = True  # the ``registry`` fixture (tests/fixtures/registry.py)


@pytest.fixture
def name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def error_code(exc_info: pytest.ExceptionInfo) -> str:
    return exc_info.value.error_code


def workspace_names(registry: TenantRegistry) -> set[str]:
    return {w.name for w in registry.mirror.workspaces.list_workspaces()}


def auth_roles(registry: TenantRegistry, tenant: str) -> dict[str, set[tuple[str, str, str]]]:
    auth = registry.mirror.auth
    return {
        r.name: {(p.resource_type, p.resource_pattern, p.permission)
                 for p in auth.list_role_permissions(r.id)}
        for r in auth.list_roles([tenant])
    }


def user_tenant_roles(registry: TenantRegistry, user: str, tenant: str) -> list[str]:
    auth = registry.mirror.auth
    return [r.name for r in auth.list_user_roles_for_workspace(auth.get_user(user).id, tenant)]


def every_cell(engine: sa.Engine) -> list[str]:
    """Every value of every table in the database, as text."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return [str(v) for t in metadata.sorted_tables for row in conn.execute(t.select())
                for v in row if v is not None]


# -- quotas ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["10GB", "10GiB", "10G", "10 gb", "10737418240", 10737418240])
def test_sizes_are_binary_units_or_bytes(text):
    assert parse_size(text) == 10737418240


@pytest.mark.parametrize("bad", ["-5", -5, "10XB", "ten", "", "1.5", True, "1e9"])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(MlflowException) as exc:
        parse_size(bad)
    assert error_code(exc) == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("kwargs", [{"endpoints": -1}, {"storage_bytes": 1.5},
                                    {"instance_types": ("m5.large",)}])
def test_bad_quotas_are_refused(kwargs):
    with pytest.raises(MlflowException) as exc:
        Quotas(**kwargs)
    assert error_code(exc) == "INVALID_PARAMETER_VALUE"


# -- tenants --------------------------------------------------------------------------------
def test_created_tenant_is_a_workspace_with_basic_auth_roles(registry, name):
    quotas = Quotas(storage_bytes=5 * 2**30, endpoints=3, instances=6, instances_per_endpoint=2,
                    instance_types=("ml.m5.large",))
    t = registry.create_tenant(name, display_name="Acme", quotas=quotas, require_validation=True)
    assert (t.name, t.display_name, t.status, t.quotas, t.require_validation) == (
        name, "Acme", "active", quotas, True)
    assert registry.get_tenant(name) == t
    assert name in {x.name for x in registry.list_tenants()}
    assert name in workspace_names(registry)
    roles = auth_roles(registry, name)
    assert roles == {auth_role_name(r): set(g) for r, g in ROLE_GRANTS.items()}
    assert {u.resource: u.used for u in registry.ledger.for_tenant(name)} == {
        "storage_bytes": 0, "endpoints": 0, "instances": 0, "jobs": 0, "training_instances": 0}


@pytest.mark.parametrize("bad", ["Acme", "a", "-acme", "acme-", "ac_me", "default", "workspaces",
                                 "x" * 64])
def test_tenant_names_follow_mlflow_workspace_rules(registry, bad):
    with pytest.raises(MlflowException) as exc:
        registry.create_tenant(bad)
    assert error_code(exc) == "INVALID_PARAMETER_VALUE"


def test_duplicate_tenant_and_foreign_workspace_names_are_refused(registry, name):
    registry.create_tenant(name)
    with pytest.raises(MlflowException, match=f"tenant '{name}' already exists") as exc:
        registry.create_tenant(name)
    assert error_code(exc) == "RESOURCE_ALREADY_EXISTS"
    from mlflow.entities.workspace import Workspace

    foreign = name + "-ws"
    registry.mirror.workspaces.create_workspace(Workspace(name=foreign, description="by hand"))
    with pytest.raises(MlflowException, match="workspace named") as exc:
        registry.create_tenant(foreign)
    assert error_code(exc) == "RESOURCE_ALREADY_EXISTS"


def test_update_changes_only_what_is_given(registry, name):
    before = registry.create_tenant(name, display_name="Before")
    arn = "arn:aws:sns:us-east-1:123456789012:alarms"
    after = registry.update_tenant(name, quotas=Quotas(endpoints=9), alarm_topic_arn=arn,
                                   require_validation=True)
    assert after.display_name == "Before"
    assert (after.quotas.endpoints, after.alarm_topic_arn, after.require_validation) == (
        9, arn, True)
    assert after.updated_at >= before.updated_at
    cleared = registry.update_tenant(name, display_name="After", alarm_topic_arn="")
    assert (cleared.display_name, cleared.alarm_topic_arn, cleared.quotas.endpoints) == (
        "After", None, 9)


def test_bad_tenant_settings_are_refused_before_anything_is_written(registry, name):
    for kwargs in ({"alarm_topic_arn": "not-an-arn"}, {"display_name": "x" * 257}):
        with pytest.raises(MlflowException) as exc:
            registry.create_tenant(name, **kwargs)
        assert error_code(exc) == "INVALID_PARAMETER_VALUE"
    assert name not in workspace_names(registry)
    registry.create_tenant(name)
    with pytest.raises(MlflowException):
        registry.update_tenant(name, alarm_topic_arn="arn:aws:s3:::bucket")


def test_unknown_tenant_is_reported_as_not_found(registry, name):
    calls = [lambda: registry.get_tenant(name), lambda: registry.set_status(name, "suspended"),
             lambda: registry.update_tenant(name, display_name="x"),
             lambda: registry.delete_tenant(name), lambda: registry.members(name),
             lambda: registry.list_keys(name), lambda: registry.create_key(name, "viewer"),
             lambda: registry.bind("oidc:alice", name, "viewer")]
    for call in calls:
        with pytest.raises(MlflowException) as exc:
            call()
        assert error_code(exc) == "RESOURCE_DOES_NOT_EXIST"


def test_delete_is_refused_while_the_ledger_shows_use_unless_forced(registry, name):
    registry.create_tenant(name)
    _, secret = registry.create_key(name, "editor")
    registry.ledger.reserve(name, "endpoints", 1)
    with pytest.raises(MlflowException, match="endpoints=1") as exc:
        registry.delete_tenant(name)
    assert error_code(exc) == "INVALID_STATE"
    assert registry.get_tenant(name).active and name in workspace_names(registry)
    assert registry.verify_key(secret) is not None

    registry.delete_tenant(name, force=True)
    with pytest.raises(MlflowException):
        registry.get_tenant(name)
    assert name not in workspace_names(registry)
    assert auth_roles(registry, name) == {}
    assert registry.verify_key(secret) is None
    assert not any(k.tenant == name for k in registry.list_keys())


def test_deletion_fences_the_tenant_so_nothing_is_reserved_behind_its_check(
    registry, name, monkeypatch
):
    registry.create_tenant(name)
    _, secret = registry.create_key(name, "editor")
    seen: dict = {}
    delete_workspace = registry.mirror.delete_tenant

    def concurrent_request_then_delete(tenant: str, force: bool = False) -> None:
        # What a request arriving after the held-resources check would try.
        with pytest.raises(MlflowException, match="being deleted") as exc:
            registry.ledger.reserve(tenant, "endpoints", 1)
        seen["code"] = error_code(exc)
        seen["key"] = registry.verify_key(secret)
        delete_workspace(tenant, force=force)

    monkeypatch.setattr(registry.mirror, "delete_tenant", concurrent_request_then_delete)
    registry.delete_tenant(name)
    assert seen == {"code": "INVALID_STATE", "key": None}
    with pytest.raises(MlflowException):
        registry.get_tenant(name)


def test_a_refused_deletion_lifts_the_fence_and_keeps_the_status(registry, name):
    registry.create_tenant(name)
    registry.ledger.reserve(name, "storage_bytes", 10)
    registry.set_status(name, "suspended")
    with pytest.raises(MlflowException, match="storage_bytes=10"):
        registry.delete_tenant(name)
    assert registry.get_tenant(name).status == "suspended"
    registry.set_status(name, "active")
    registry.ledger.reserve(name, "storage_bytes", 5)
    assert registry.ledger.get(name, "storage_bytes").used == 15


def test_delete_after_release_needs_no_force_and_frees_the_name(registry, name):
    registry.create_tenant(name)
    _, secret = registry.create_key(name, "viewer")
    service_principal = registry.verify_key(secret).principal
    registry.ledger.reserve(name, "storage_bytes", 100)
    registry.ledger.release(name, "storage_bytes", 100)
    registry.delete_tenant(name)
    assert not registry.mirror.auth.has_user(service_principal, use_primary=True)
    assert registry.create_tenant(name).active  # nothing of the old tenant blocks the name


def test_delete_is_refused_while_the_workspace_holds_experiments(registry, name, monkeypatch,
                                                                 tmp_path):
    from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

    registry.create_tenant(name)
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    monkeypatch.setenv("MLFLOW_WORKSPACE", name)
    store = WorkspaceAwareSqlAlchemyStore(registry.database_uri, tmp_path.as_uri())
    store.create_experiment("churn")
    with pytest.raises(MlflowException, match="still contains") as exc:
        registry.delete_tenant(name)
    assert error_code(exc) == "INVALID_STATE"
    assert registry.get_tenant(name).active and auth_roles(registry, name)
    registry.delete_tenant(name, force=True)
    assert name not in workspace_names(registry)


def test_failed_mlflow_mirror_leaves_no_tenant_behind(registry, name):
    # A role squatting on the tenant's role name makes MLflow's auth store refuse the
    # tenant's roles after the workspace and our rows were written: all must be undone.
    registry.mirror.auth.create_role(name=auth_role_name(Role.VIEWER), workspace=name,
                                     description="squatter")
    with pytest.raises(MlflowException):
        registry.create_tenant(name)
    with pytest.raises(MlflowException):
        registry.get_tenant(name)
    assert name not in {t.name for t in registry.list_tenants()}
    with registry.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mlt_usage WHERE tenant = :t"),
                            {"t": name}).scalar() == 0
    assert name not in workspace_names(registry)
    assert auth_roles(registry, name) == {}
    assert registry.create_tenant(name).active


# -- keys -------------------------------------------------------------------------------------
def test_only_the_hash_of_a_key_is_stored(registry, name):
    registry.create_tenant(name)
    record, secret = registry.create_key(name, "editor", description="ci")
    assert secret.startswith(f"mlt_{record.key_id}_")
    random_part = secret.split("_", 2)[2]  # the random part may itself contain "_"
    assert len(random_part) == 43
    cells = every_cell(registry.engine)
    assert key_hash(secret) in cells
    assert not [c for c in cells if secret in c or random_part in c]


def test_key_grants_its_tenant_role_and_marks_last_use(registry, name):
    registry.create_tenant(name)
    record, secret = registry.create_key(name, "deployer")
    assert record.last_used_at is None
    identity = registry.verify_key(secret)
    assert (identity.tenant, identity.role, identity.platform_admin) == (
        name, Role.DEPLOYER, False)
    assert user_tenant_roles(registry, identity.principal, name) == [
        auth_role_name(Role.DEPLOYER)]
    used = registry.get_key(record.key_id).last_used_at
    assert used is not None
    assert abs(used - datetime.now(UTC)) < timedelta(minutes=1)


def test_key_stops_working_when_it_expires(registry, name):
    registry.create_tenant(name)
    record, secret = registry.create_key(name, "viewer", expires_in=timedelta(seconds=1))
    assert registry.verify_key(secret) is not None
    deadline = time.monotonic() + 5
    while datetime.now(UTC) <= record.expires_at and time.monotonic() < deadline:
        time.sleep(0.1)
    assert registry.verify_key(secret) is None
    with pytest.raises(MlflowException):
        registry.create_key(name, "viewer", expires_in=timedelta(0))


def test_revoked_key_stops_working_at_once(registry, name):
    registry.create_tenant(name)
    record, secret = registry.create_key(name, "editor")
    _, other_secret = registry.create_key(name, "editor")
    assert registry.verify_key(secret) is not None
    revoked = registry.revoke_key(record.key_id)
    assert revoked.revoked_at is not None
    assert registry.verify_key(secret) is None
    assert registry.verify_key(other_secret) is not None
    assert registry.revoke_key(record.key_id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(MlflowException) as exc:
        registry.revoke_key("000000000000")
    assert error_code(exc) == "RESOURCE_DOES_NOT_EXIST"


def test_suspension_stops_every_key_of_the_tenant_at_once(registry, name):
    registry.create_tenant(name)
    _, secret = registry.create_key(name, "admin")
    registry.bind("oidc:alice@example.com", name, "editor")
    assert registry.set_status(name, "suspended").status == "suspended"
    assert registry.verify_key(secret) is None
    assert name not in registry.bindings_of("oidc:alice@example.com")
    with pytest.raises(MlflowException, match="suspended") as exc:
        registry.create_key(name, "viewer")
    assert error_code(exc) == "INVALID_STATE"
    registry.set_status(name, "active")
    assert registry.verify_key(secret).tenant == name
    assert registry.bindings_of("oidc:alice@example.com")[name] == Role.EDITOR


def test_platform_admin_key_has_no_tenant_and_is_a_basic_auth_admin(registry, name):
    principal = f"admin:{name}"
    record, secret = registry.create_key(None, "admin", admin_label=name)
    assert record.tenant is None
    identity = registry.verify_key(secret)
    assert (identity.principal, identity.tenant, identity.platform_admin) == (
        principal, None, True)
    assert registry.is_platform_admin(principal)
    assert registry.mirror.auth.get_user(principal).is_admin


@pytest.mark.parametrize("bad", ["", "mlt_", "not-a-key", "mlt_0123456789ab_" + "A" * 43,
                                 "Bearer mlt_x", None, 42])
def test_malformed_or_unknown_keys_verify_to_nothing(registry, bad):
    assert registry.verify_key(bad) is None


def test_bad_key_requests_are_refused(registry, name):
    registry.create_tenant(name)
    for args, kwargs in (((name, "owner"), {}), ((name, "viewer"), {"admin_label": "ops"}),
                         ((name, "viewer"), {"description": "d" * 257})):
        with pytest.raises(MlflowException) as exc:
            registry.create_key(*args, **kwargs)
        assert error_code(exc) == "INVALID_PARAMETER_VALUE"
    assert registry.list_keys(name) == []


# -- bindings -----------------------------------------------------------------------------------
def test_binding_gives_one_tenant_role_in_the_workspace(registry, name):
    registry.create_tenant(name)
    user = f"proxy:bob-{name}"
    registry.bind(user, name, "editor")
    assert [(m.principal, m.role) for m in registry.members(name)] == [(user, "editor")]
    assert user_tenant_roles(registry, user, name) == [auth_role_name(Role.EDITOR)]
    registry.bind(user, name, Role.VIEWER)  # rebinding replaces the role
    assert registry.bindings_of(user) == {name: Role.VIEWER}
    assert user_tenant_roles(registry, user, name) == [auth_role_name(Role.VIEWER)]
    registry.unbind(user, name)
    assert registry.members(name) == []
    assert registry.bindings_of(user) == {}
    assert user_tenant_roles(registry, user, name) == []


def test_registry_schema_has_its_own_alembic_version_table(registry):
    tables = set(sa.inspect(registry.engine).get_table_names())
    assert {"alembic_version_tenants", "mlt_tenants", "mlt_api_keys", "mlt_usage"} <= tables
    with registry.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version_tenants")).scalar()

"""Deployment bookkeeping the platform computes from never comes from where a tenant writes:
operation records in the registry's own table (migration 0003), packages under a prefix no
artifact path reaches, timestamps clamped, model URIs read strictly. In-process, moto as AWS."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import sqlalchemy
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.deployments.model_uri import check_model_uri
from mlflow_tenant_plugins.deployments.reconcile import reconcile
from mlflow_tenant_plugins.deployments.storage import in_flight, package_root
from mlflow_tenant_plugins.tenancy.deployment_records import MAX_CLOCK_SKEW_SECONDS

DEST_ENV = "_MLFLOW_SERVER_ARTIFACT_DESTINATION"


def _used(env, tenant: str) -> dict[str, int]:
    return {r: env.registry.ledger.get(tenant, r).used for r in ("endpoints", "instances")}


def test_records_are_rows_of_the_registry_migrated_under_alembic_version_tenants(deploy_env):
    engine = deploy_env.registry.engine
    assert "mlt_deployment_records" in sqlalchemy.inspect(engine).get_table_names()
    with engine.connect() as conn:
        versions = [r[0] for r in conn.execute(
            sqlalchemy.text("SELECT version_num FROM alembic_version_tenants"))]
    assert versions and versions[0] >= "0003"
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.storage.put_record(tenant, "x", {"operation": "create", "status": "Failed",
                                         "failure_reason": "boom"})
    [record] = svc.storage.records(tenant)
    assert record["name"] == "x" and record["failure_reason"] == "boom"
    s3 = deploy_env.aws.s3
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=deploy_env.bucket).get("Contents", [])]
    assert not [k for k in keys if k.endswith("status.json")]
    svc.storage.delete_record(tenant, "x")
    assert svc.storage.records(tenant) == []


def test_forged_status_files_in_the_tenant_prefix_are_not_read(deploy_env):
    """Issue 13 finding 2, in-process: a status.json where records used to be (the tenant's
    own artifact prefix) shows no deployment and gives back nothing."""
    tenant = deploy_env.tenant()
    deploy_env.registry.ledger.reserve(tenant, "endpoints", 1)
    forged = {"name": "ghost", "tenant": tenant, "operation": "create", "status": "Creating",
              "updated_at": 4102444800.0, "reserved": {"endpoints": 5, "instances": 9}}
    for root in ("root", "platform/deployments"):
        for key in (f"{root}/workspaces/{tenant}/deployments/ghost/status.json",
                    f"{root}/{tenant}/ghost/status.json"):
            deploy_env.aws.s3.put_object(Bucket=deploy_env.bucket, Key=key,
                                         Body=json.dumps(forged).encode())
    svc = deploy_env.service()
    assert svc.list(tenant) == []
    for call in (lambda: svc.get(tenant, "ghost"), lambda: svc.delete(tenant, "ghost")):
        with pytest.raises(MlflowException) as exc:
            call()
        assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert _used(deploy_env, tenant) == {"endpoints": 1, "instances": 0}
    [report] = reconcile(svc, [tenant])
    assert report.status == "corrected" and _used(deploy_env, tenant)["endpoints"] == 0


def test_a_timestamp_in_the_future_never_keeps_a_deployment_busy(deploy_env):
    now = time.time()
    running = {"status": "Creating"}
    assert in_flight({**running, "updated_at": now - 5}, 60, now)
    assert in_flight({**running, "updated_at": now + MAX_CLOCK_SKEW_SECONDS / 2}, 60, now)
    assert not in_flight({**running, "updated_at": now + 10 * 365 * 86400}, 60, now)
    assert not in_flight({**running, "updated_at": "NaN"}, 60, now)
    assert not in_flight({**running, "updated_at": now - 61}, 60, now)

    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    deploy_env.registry.ledger.reserve(tenant, "endpoints", 1)
    svc.storage.put_record(tenant, "stuck", {"operation": "create", "status": "Creating"})
    assert [r.status for r in reconcile(svc, [tenant])] == ["busy"]
    with deploy_env.registry.engine.begin() as conn:  # a clock far ahead wrote it
        conn.execute(sqlalchemy.text(
            "UPDATE mlt_deployment_records SET updated_at = 4102444800 WHERE tenant = :t"),
            {"t": tenant})
    [report] = reconcile(svc, [tenant])
    assert report.status == "corrected" and _used(deploy_env, tenant)["endpoints"] == 0
    svc.storage.delete_record(tenant, "stuck")


def test_package_root_lies_outside_every_path_the_artifact_proxy_reaches(deploy_env,
                                                                        monkeypatch):
    settings = dataclasses.replace(deploy_env.settings, deploy_package_root="")
    monkeypatch.setenv(DEST_ENV, "tenant-s3://bucket/root")
    assert package_root(settings, "acme") == ("bucket", "root/platform/deployments/acme")
    monkeypatch.setenv(DEST_ENV, "tenant-s3://bucket")
    assert package_root(settings, "acme") == ("bucket", "platform/deployments/acme")
    refused = {
        "": "s3://bucket/root",  # a plain s3:// destination: set the root explicitly
        "s3://bucket/root/workspaces/{tenant}/deployments": "s3://bucket/root",
        "s3://bucket/root/pkgs/{tenant}": "s3://bucket/root",  # its default workspace reaches
        "s3://other/platform/deployments": "tenant-s3://bucket/root",  # no {tenant}
        "file:///tmp/{tenant}": "tenant-s3://bucket/root",
    }
    for root, dest in refused.items():
        monkeypatch.setenv(DEST_ENV, dest)
        with pytest.raises(MlflowException) as exc:
            package_root(dataclasses.replace(settings, deploy_package_root=root), "acme")
        assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "deploy_package_root" in exc.value.message, (root, exc.value.message)
    monkeypatch.setenv(DEST_ENV, "s3://bucket/root")
    ok = dataclasses.replace(settings, deploy_package_root="s3://bucket/pkgs/{tenant}")
    assert package_root(ok, "acme") == ("bucket", "pkgs/acme")


@pytest.mark.parametrize("uri", [
    "models:/m-0123456789abcdef/../../x", "models:/churn/1/../../../x", "runs:/abc/../../x",
    "models:///churn/1", "models://profile/churn/1", "models:/churn/1/%2e%2e/x",
    "models:/churn/\x1b[2J/1", "models:/a//b", "models:/a/./b", "models:/a/\uff0e\uff0e/b",
    "models:/a\\..\\b", "models:/churn/1/ ..", "models:", "models:/", "",
])
def test_odd_model_uris_are_a_400_naming_the_problem(uri):
    with pytest.raises(MlflowException) as exc:
        check_model_uri(uri)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "model URI" in exc.value.message and "\x1b" not in exc.value.message


@pytest.mark.parametrize("uri", ["models:/churn/1", "models:/churn@prod", "models:/m-0a1b",
                                 "runs:/0a1b/model", "models:/churn/1/sub/path"])
def test_well_formed_model_uris_pass(uri):
    assert check_model_uri(uri) == uri


def test_a_dot_segment_model_uri_is_refused_before_anything_is_made(deploy_env):
    tenant = deploy_env.tenant()
    with pytest.raises(MlflowException) as exc:
        deploy_env.service().create(tenant, "dots", "models:/m-0123/../../x")
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    assert deploy_env.leftovers(tenant) == {}


def test_an_update_keeping_a_package_from_the_tenant_prefix_must_repackage(deploy_env,
                                                                          pyfunc_model):
    """A deployment made before packages left the tenant's prefix: its package may have been
    replaced by the tenant, so an update without a model is refused; with one it moves."""
    from mlflow_tenant_plugins.deployments.names import TAG_PACKAGE, Names

    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(tenant, "old", pyfunc_model, background=False)
    sm = deploy_env.aws.sagemaker
    arn = sm.describe_endpoint(EndpointName=Names(tenant, "old").endpoint)["EndpointArn"]
    legacy = f"s3://{deploy_env.bucket}/root/workspaces/{tenant}/deployments/old/model.tar.gz"
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": TAG_PACKAGE, "Value": legacy}])
    with pytest.raises(MlflowException) as exc:
        svc.update(tenant, "old", config={"alarm_4xx_errors": "9"}, background=False)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE" and "-m" in exc.value.message
    svc.update(tenant, "old", pyfunc_model, background=False)
    assert svc.get(tenant, "old")["package"].startswith(
        f"s3://{deploy_env.bucket}/platform/deployments/{tenant}/old/")
    svc.delete(tenant, "old")
    assert deploy_env.leftovers(tenant) == {}

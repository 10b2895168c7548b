"""The deployment service and its operations in-process, on fakes of AWS, the ledger and the
records table (tests/fixtures/fake_aws.py): fast checks of what a create, an update and a
delete make, hold and leave behind, beside the moto-backed tests of test_deploy_service."""

from __future__ import annotations

import dataclasses

import pytest
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments import names as n
from mlflow_tenant_plugins.deployments.operations import DeployFailed, Operations, Plan
from mlflow_tenant_plugins.deployments.service import DeploymentService
from mlflow_tenant_plugins.deployments.status import OperationRecord, live_variant
from mlflow_tenant_plugins.deployments.storage import DeploymentStorage
from mlflow_tenant_plugins.tenancy.deployment_records import DeploymentRecords
from tests.fixtures.fake_aws import FakeAws, FakeRegistry, FakeResolver

TENANT = "acme"
SETTINGS = Settings(
    deploy_package_root="s3://packages/platform/deployments/{tenant}",
    deploy_execution_role_arn="arn:aws:iam::123456789012:role/mlflow-sagemaker-{tenant}",
    deploy_image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-pyfunc:test",
    deploy_poll_seconds=0.01, deploy_timeout_seconds=5.0,
)
MODEL = "models:/churn/1"


@pytest.fixture
def parts():
    aws, registry = FakeAws(), FakeRegistry(TENANT)
    service = DeploymentService(registry, SETTINGS, aws=aws, resolver=FakeResolver())
    yield aws, registry, service
    service.shutdown(5)


def _nothing_left(aws: FakeAws, registry: FakeRegistry) -> dict:
    found = {"models": list(aws.sagemaker.models), "configs": list(aws.sagemaker.configs),
             "endpoints": list(aws.sagemaker.endpoints), "alarms": list(aws.cloudwatch.alarms),
             "scaling": list(aws.autoscaling.targets), "packages": list(aws.s3.objects),
             "ledger": registry.ledger.of(TENANT)}
    return {k: v for k, v in found.items() if v}


def test_operations_run_on_the_collaborators_they_are_handed_without_a_service():
    """A failed create rolls back everything it made, gives back both reservations and
    leaves a Failed record naming SageMaker's reason and what the deploy asked for."""
    aws, registry = FakeAws(), FakeRegistry(TENANT)
    storage = DeploymentStorage(aws.s3, SETTINGS, DeploymentRecords(registry.engine))
    ops = Operations(aws=aws, storage=storage, ledger=registry.ledger,
                     resolver=FakeResolver(), settings=SETTINGS,
                     image_uri=lambda: "image:test")
    names = n.Names(TENANT, "churn")
    plan = Plan(tenant=TENANT, names=names, deploy_id=n.new_deploy_id(),
                model=FakeResolver().resolve(MODEL, TENANT, None), instance_type="ml.m5.large",
                instance_count=1, min_instances=1, max_instances=2, target=100.0,
                scale_in_cooldown=300, scale_out_cooldown=60,
                thresholds={}, env={}, tags={}, topic_arn=None, reserved_instances=2)
    registry.ledger.reserve(TENANT, "endpoints", 1)
    registry.ledger.reserve(TENANT, "instances", 2)
    aws.sagemaker.outcome = "Failed"

    with pytest.raises(DeployFailed, match="ping health check"):
        ops.run_create(plan)

    assert _nothing_left(aws, registry) == {}
    record, _version = storage.get_record(TENANT, "churn")
    assert record["status"] == "Failed" and "ping health check" in record["failure_reason"]
    assert record["reserved"] == {"endpoints": 0, "instances": 0}
    assert record["instance_type"] == "ml.m5.large" and record["model_uri"] == MODEL


def test_a_create_makes_model_config_endpoint_alarms_and_scaling_then_drops_its_record(parts):
    aws, registry, service = parts
    out = service.create(TENANT, "churn", MODEL, config={"max_instances": "2"},
                         background=False)
    names = n.Names(TENANT, "churn")
    assert out["status"] == "InService" and out["instance_count"] == 1
    assert out["scaling"]["max_instances"] == 2 and len(out["alarms"]) == 5
    assert list(aws.sagemaker.endpoints) == [names.endpoint]
    [model] = aws.sagemaker.models.values()
    assert model["ExecutionRoleArn"].endswith(":role/mlflow-sagemaker-acme")
    assert model["PrimaryContainer"]["Image"] == SETTINGS.deploy_image_uri
    assert registry.ledger.of(TENANT) == {"endpoints": 1, "instances": 2}
    assert service.storage.get_record(TENANT, "churn") is None  # SageMaker is the state now


def test_a_background_create_answers_its_record_as_the_tenant_sees_it(parts):
    _aws, _registry, service = parts
    out = service.create(TENANT, "churn", MODEL)
    assert out["status"] == "Creating" and out["operation"] == "create"
    assert out["model_uri"] == MODEL and out["endpoint_name"] == n.Names(TENANT, "churn").endpoint
    assert not {"reserved", "started_at", "deploy_id", "tenant"} & set(out)
    service.wait_for_jobs(5)


def test_a_failed_create_shows_why_in_get_and_list_and_holds_nothing(parts):
    aws, registry, service = parts
    aws.sagemaker.outcome = "Failed"
    with pytest.raises(MlflowException, match="ping health check"):
        service.create(TENANT, "churn", MODEL, background=False)
    got = service.get(TENANT, "churn")
    assert got["status"] == "Failed" and "ping health check" in got["failure_reason"]
    assert service.list(TENANT) == [got]
    assert _nothing_left(aws, registry) == {}
    assert service.delete(TENANT, "churn") == {"name": "churn", "status": "Deleted"}
    with pytest.raises(MlflowException) as exc:
        service.get(TENANT, "churn")
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_a_check_given_to_the_service_refuses_a_deploy_before_anything_is_made():
    aws, registry = FakeAws(), FakeRegistry(TENANT)

    def refuse(tenant, model):
        raise MlflowException.invalid_parameter_value(f"run {model.run_id} not validated")

    service = DeploymentService(registry, SETTINGS, aws=aws, resolver=FakeResolver(),
                                checks=[refuse])
    with pytest.raises(MlflowException, match="not validated"):
        service.create(TENANT, "churn", MODEL, background=False)
    assert _nothing_left(aws, registry) == {}
    assert service.storage.get_record(TENANT, "churn") is None


def test_an_update_reads_the_live_variant_and_keeps_what_it_does_not_change(parts):
    aws, registry, service = parts
    service.create(TENANT, "churn", MODEL, config={"max_instances": "2"}, background=False)
    first_model = next(iter(aws.sagemaker.models))
    out = service.update(TENANT, "churn", "models:/churn/2",
                         config={"instance_type": "ml.m5.xlarge"}, background=False)
    assert out["instance_type"] == "ml.m5.xlarge" and out["instance_count"] == 1
    assert out["model_uri"] == "models:/churn/2" and out["scaling"]["max_instances"] == 2
    assert first_model not in aws.sagemaker.models  # the old generation is cleaned up
    assert len(aws.s3.objects) == 1  # and its package
    assert registry.ledger.of(TENANT) == {"endpoints": 1, "instances": 2}
    service.delete(TENANT, "churn")
    assert _nothing_left(aws, registry) == {}


def test_live_variant_counts_what_runs_or_what_the_config_asks_before_sagemaker_reports():
    aws = FakeAws()
    variant = {"VariantName": n.VARIANT, "ModelName": "m", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 3}
    aws.sagemaker.create_endpoint_config("c", [variant], [])
    creating = {"EndpointConfigName": "c", "ProductionVariants": []}
    assert live_variant(aws.sagemaker, creating).instance_count == 3
    assert live_variant(aws.sagemaker, creating).current_instances is None
    running = {"EndpointConfigName": "c", "ProductionVariants": [
        {"VariantName": n.VARIANT, "CurrentInstanceCount": 2, "DesiredInstanceCount": 4}]}
    live = live_variant(aws.sagemaker, running)
    assert (live.instance_count, live.desired_instances, live.model_name) == (2, 4, "m")


def test_an_operation_record_round_trips_through_the_table_and_shows_no_bookkeeping():
    registry = FakeRegistry(TENANT)
    table = DeploymentRecords(registry.engine)
    record = OperationRecord(name="churn", tenant=TENANT, operation="create",
                             status="Creating", model_uri=MODEL,
                             reserved={"endpoints": 1, "instances": 2}, started_at=1.0)
    table.put(TENANT, "churn", {**record.to_dict(), "previous": {"status": "Failed"}})
    stored, _version = table.get(TENANT, "churn")
    back = OperationRecord.from_dict(stored)
    assert dataclasses.replace(back, started_at=1.0) == record
    assert back.shown() == {"name": "churn", "status": "Creating", "operation": "create",
                            "model_uri": MODEL}
    failed = back.failed("boom", ["delete model x (AccessDenied)"])
    assert failed.reserved == {"endpoints": 0, "instances": 0}
    assert failed.shown()["rollback_incomplete"] == ["delete model x (AccessDenied)"]
    assert back.status == "Creating"  # failed() is a new record

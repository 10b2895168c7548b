"""The deployment service against moto's server (patched for SageMaker's gaps), tenant passed
explicitly: what a deploy creates, quotas, rollback, delete, list, update, predict."""

from __future__ import annotations

import json

import pytest
import requests
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.deployments.names import Names

FAST = {"alarm_period_seconds": "60"}


def test_create_makes_model_config_endpoint_alarms_and_scaling_with_tenant_tags(
    deploy_env, pyfunc_model
):
    topic = "arn:aws:sns:us-east-1:123456789012:tenant-alerts"
    tenant = deploy_env.tenant(instances=4, instances_per_endpoint=3, alarm_topic_arn=topic)
    svc = deploy_env.service()
    out = svc.create(tenant, "churn", pyfunc_model,
                     config={"instance_count": "1", "max_instances": "3",
                             "alarm_latency_p99_ms": "250", "tags": '{"team": "risk"}'})
    assert out["status"] == "Creating"
    svc.wait_for_jobs(30)

    got = svc.get(tenant, "churn")
    names = Names(tenant, "churn")
    assert got["status"] == "InService", got
    assert got["endpoint_name"] == names.endpoint and len(names.endpoint) <= 63
    assert got["instance_type"] == "ml.m5.large" and got["instance_count"] == 1
    assert got["scaling"]["min_instances"] == 1 and got["scaling"]["max_instances"] == 3
    assert got["scaling"]["target_invocations_per_instance"] == 100.0
    assert {a["metric"] for a in got["alarms"]} == {
        "Invocation5XXErrors", "Invocation4XXErrors", "ModelLatency", "CPUUtilization",
        "MemoryUtilization"}
    latency = next(a for a in got["alarms"] if a["metric"] == "ModelLatency")
    assert latency["threshold"] == 250_000.0  # microseconds
    assert all(a["actions"] == [topic] and a["state"] for a in got["alarms"])
    assert got["tags"]["mlt:tenant"] == tenant and got["tags"]["team"] == "risk"
    assert got["tags"]["mlt:model-uri"] == pyfunc_model

    sm = deploy_env.aws.sagemaker
    model_name = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=names.endpoint)["EndpointConfigName"]
    )["ProductionVariants"][0]["ModelName"]
    model = sm.describe_model(ModelName=model_name)
    assert model_name.startswith(names.endpoint) and len(model_name) <= 63
    package = model["PrimaryContainer"]["ModelDataUrl"]
    assert package.startswith(f"s3://{deploy_env.bucket}/platform/deployments/{tenant}/")
    assert model["ExecutionRoleArn"].endswith(f":role/mlflow-sagemaker-{tenant}")
    assert model.get("EnableNetworkIsolation") in (False, None)
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]}
    assert tags["mlt:tenant"] == tenant and tags["mlt:deployment"] == "churn"
    usage = {u.resource: u.used for u in deploy_env.registry.ledger.for_tenant(tenant)}
    # The package is the platform's copy, outside the tenant's prefix: not storage quota.
    assert usage["endpoints"] == 1 and usage["instances"] == 3 and usage["storage_bytes"] == 0


def test_endpoint_names_are_namespaced_collision_safe_and_within_63_characters():
    a, b = Names("a-b", "c"), Names("a", "b-c")
    assert a.endpoint != b.endpoint
    long = Names("t" * 63, "d" * 63)
    for name in (long.endpoint, long.model("0123456789"), long.config("0123456789")):
        assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert Names("acme", "x" * 60).endpoint != Names("acme", "x" * 59).endpoint


def _quota_error(exc_info) -> str:
    assert exc_info.value.error_code == "RESOURCE_EXHAUSTED", exc_info.value.message
    assert exc_info.value.get_http_status_code() == 409  # a full quota is not transient
    return exc_info.value.message


def test_endpoint_quota_refuses_with_409_and_nothing_half_created(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant(endpoints=1)
    svc = deploy_env.service()
    svc.create(tenant, "one", pyfunc_model)
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "two", pyfunc_model)
    assert "endpoints limit is 1" in _quota_error(exc)
    svc.wait_for_jobs(30)
    assert [d["name"] for d in svc.list(tenant)] == ["one"]
    svc.delete(tenant, "one")
    assert deploy_env.leftovers(tenant) == {}


def test_total_instance_quota_refuses_with_409(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant(endpoints=5, instances=3, instances_per_endpoint=2)
    svc = deploy_env.service()
    svc.create(tenant, "a", pyfunc_model, config={"max_instances": "2"})
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "b", pyfunc_model, config={"instance_count": "2"})
    message = _quota_error(exc)
    assert "instances limit is 3" in message and "2 (2) in use" in message
    svc.wait_for_jobs(30)
    usage = {u.resource: u.used for u in deploy_env.registry.ledger.for_tenant(tenant)}
    assert usage["endpoints"] == 1 and usage["instances"] == 2


def test_per_endpoint_instances_409_and_disallowed_instance_type_400(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant(instances_per_endpoint=2, instance_types=("ml.m5.large",))
    svc = deploy_env.service()
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "big", pyfunc_model, config={"max_instances": "3"})
    assert "instances_per_endpoint limit is 2" in _quota_error(exc)
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "gpu", pyfunc_model, config={"instance_type": "ml.p3.2xlarge"})
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    message = exc.value.message
    assert "ml.p3.2xlarge is not allowed" in message and "ml.m5.large" in message
    assert deploy_env.leftovers(tenant) == {} and svc.list(tenant) == []


def test_bad_config_and_names_refused_before_anything_is_made(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    for config in ({"instance_typo": "ml.m5.large"}, {"instance_count": "two"},
                   {"min_instances": "3", "max_instances": "2"}, {"env": "[1]"}):
        with pytest.raises(MlflowException) as exc:
            svc.create(tenant, "bad", pyfunc_model, config=config)
        assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "-bad-", pyfunc_model)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "nomodel", "/does/not/exist")
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert deploy_env.leftovers(tenant) == {}


def test_twenty_concurrent_creates_at_the_limit_never_exceed_it(deploy_env, pyfunc_model):
    from concurrent.futures import ThreadPoolExecutor

    tenant = deploy_env.tenant(endpoints=3, instances=20)
    svc = deploy_env.service()

    def attempt(i: int) -> str:
        try:
            svc.create(tenant, f"c{i}", pyfunc_model)
            return "ok"
        except MlflowException as exc:
            return exc.error_code

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, range(20)))
    assert results.count("ok") == 3, results
    assert results.count("RESOURCE_EXHAUSTED") == 17
    svc.wait_for_jobs(60)
    assert len(svc.list(tenant)) == 3
    assert deploy_env.registry.ledger.get(tenant, "endpoints").used == 3


ROLLBACK_STEPS = {
    "package upload": ("s3", "s3", "PutObject"),
    "model": ("sagemaker", "sagemaker", "CreateModel"),
    "endpoint config": ("sagemaker", "sagemaker", "CreateEndpointConfig"),
    "endpoint": ("sagemaker", "sagemaker", "CreateEndpoint"),
    "endpoint Failed": None,
    "third alarm": ("cloudwatch", "cloudwatch", "PutMetricAlarm"),
    "scaling target": ("autoscaling", "application-auto-scaling", "RegisterScalableTarget"),
    "scaling policy": ("autoscaling", "application-auto-scaling", "PutScalingPolicy"),
}


@pytest.mark.parametrize("step", list(ROLLBACK_STEPS))
def test_failure_at_each_step_rolls_back_everything_and_a_retry_succeeds(
    deploy_env, pyfunc_model, step
):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    config = {"max_instances": "2"}
    spec = ROLLBACK_STEPS[step]
    calls = []

    def boom(params, **kwargs):
        if spec[2] == "PutObject" and not params["Key"].endswith("model.tar.gz"):
            return
        calls.append(1)
        if spec[2] != "PutMetricAlarm" or len(calls) == 3:
            raise RuntimeError(f"injected failure at {step}")

    if spec is None:
        config["env"] = json.dumps({"MLT_MOTO_FAIL_REASON": "ping health check failed"})
    else:
        events = getattr(deploy_env.aws, spec[0]).meta.events
        event = f"provide-client-params.{spec[1]}.{spec[2]}"
        events.register(event, boom)
    try:
        svc.create(tenant, "flaky", pyfunc_model, config=config)
        svc.wait_for_jobs(30)
    finally:
        if spec is not None:
            events.unregister(event, boom)
    got = svc.get(tenant, "flaky")
    assert got["status"] == "Failed"
    assert ("ping health check failed" if spec is None else "injected failure") in (
        got["failure_reason"])
    assert deploy_env.leftovers(tenant) == {}

    config.pop("env", None)
    svc.create(tenant, "flaky", pyfunc_model, config=config)
    svc.wait_for_jobs(30)
    assert svc.get(tenant, "flaky")["status"] == "InService"
    svc.delete(tenant, "flaky")
    assert deploy_env.leftovers(tenant) == {}


def test_delete_removes_everything_and_releases_quota(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(tenant, "gone", pyfunc_model, config={"max_instances": "2"})
    svc.wait_for_jobs(30)
    assert deploy_env.leftovers(tenant)
    assert svc.delete(tenant, "gone")["status"] == "Deleted"
    assert deploy_env.leftovers(tenant) == {}
    with pytest.raises(MlflowException) as exc:
        svc.get(tenant, "gone")
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as exc:
        svc.delete(tenant, "gone")
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_list_shows_only_the_tenants_endpoints_across_pages(deploy_env, pyfunc_model):
    from mlflow_tenant_plugins.deployments.names import tenant_token

    mine, other = deploy_env.tenant(endpoints=5), deploy_env.tenant()
    svc = deploy_env.service(page_size=1)
    for name in ("a", "b", "c"):
        svc.create(mine, name, pyfunc_model)
    svc.create(other, "a", pyfunc_model)
    svc.wait_for_jobs(60)
    # An endpoint whose name carries the tenant's token but another tenant's tag: not listed.
    sm = deploy_env.aws.sagemaker
    theirs = sm.describe_endpoint(EndpointName=Names(other, "a").endpoint)
    sm.create_endpoint(EndpointName=f"spoof-{tenant_token(mine)}",
                       EndpointConfigName=theirs["EndpointConfigName"],
                       Tags=[{"Key": "mlt:tenant", "Value": other},
                             {"Key": "mlt:deployment", "Value": "spoof"}])
    listed = svc.list(mine)
    assert [d["name"] for d in listed] == ["a", "b", "c"]
    assert all(d["status"] == "InService" for d in listed)
    assert [d["name"] for d in svc.list(other)] == ["a"]
    sm.delete_endpoint(EndpointName=f"spoof-{tenant_token(mine)}")


def test_other_tenant_cannot_get_update_delete_or_predict(deploy_env, pyfunc_model):
    owner, intruder = deploy_env.tenant(), deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(owner, "secret", pyfunc_model)
    svc.wait_for_jobs(30)
    for call in (lambda: svc.get(intruder, "secret"),
                 lambda: svc.update(intruder, "secret", config={"instance_count": "1"}),
                 lambda: svc.delete(intruder, "secret"),
                 lambda: svc.predict(intruder, "secret", b"{}")):
        with pytest.raises(MlflowException) as exc:
            call()
        assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert svc.list(intruder) == []
    assert svc.get(owner, "secret")["status"] == "InService"


def test_predict_goes_to_the_tenants_endpoint(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(tenant, "scorer", pyfunc_model)
    svc.wait_for_jobs(30)
    requests.post(f"{deploy_env.moto.url}/moto-api/static/sagemaker/endpoint-results",
                  json={"results": [{"Body": '{"predictions": [2, 4]}',
                                     "ContentType": "application/json"}]},
                  timeout=10).raise_for_status()
    body, content_type = svc.predict(tenant, "scorer", b'{"inputs": [1, 2]}')
    assert json.loads(body) == {"predictions": [2, 4]}
    assert content_type == "application/json"


def _autoscale_to(deploy_env, endpoint: str, count: int) -> None:
    """What Application Auto Scaling does when it scales a variant."""
    deploy_env.aws.sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=endpoint,
        DesiredWeightsAndCapacities=[{"VariantName": "primary", "DesiredWeight": 1.0,
                                      "DesiredInstanceCount": count}])


def test_update_replaces_the_model_and_keeps_the_autoscaled_instance_count(
    deploy_env, pyfunc_model
):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(tenant, "live", pyfunc_model, config={"max_instances": "2"})
    svc.wait_for_jobs(30)
    before = svc.get(tenant, "live")
    _autoscale_to(deploy_env, before["endpoint_name"], 2)
    out = svc.update(tenant, "live", pyfunc_model, config={"alarm_5xx_errors": "7"})
    assert out["status"] == "Updating"
    svc.wait_for_jobs(30)
    after = svc.get(tenant, "live")
    assert after["status"] == "InService" and "last_failure" not in after
    assert after["deploy_id"] != before["deploy_id"] and after["package"] != before["package"]
    assert after["instance_count"] == 2  # RetainAllVariantProperties
    assert next(a for a in after["alarms"] if a["metric"] == "Invocation5XXErrors")[
        "threshold"] == 7.0
    assert after["scaling"]["max_instances"] == 2
    left = deploy_env.leftovers(tenant)
    assert len(left["models"]) == 1 and len(left["configs"]) == 1 and len(left["packages"]) == 1
    assert dict(left["ledger"])["instances"] == 2

    # A new instance type: the variant is deregistered from autoscaling around the update.
    svc.update(tenant, "live", config={"instance_type": "ml.c5.large", "max_instances": "1",
                                       "instance_count": "1"})
    svc.wait_for_jobs(30)
    final = svc.get(tenant, "live")
    assert final["instance_type"] == "ml.c5.large" and "last_failure" not in final, final
    assert final["scaling"]["max_instances"] == 1 and final["instance_count"] == 1
    assert dict(deploy_env.leftovers(tenant)["ledger"])["instances"] == 1


def test_an_update_holds_the_new_fleet_beside_the_old_and_gives_it_back(
    deploy_env, pyfunc_model
):
    tenant = deploy_env.tenant(endpoints=2, instances=3, instances_per_endpoint=2)
    svc = deploy_env.service()
    svc.create(tenant, "live", pyfunc_model, config={"instance_count": "2", "max_instances": "2"})
    svc.wait_for_jobs(30)

    def instances() -> int:
        return {u.resource: u.used for u in deploy_env.registry.ledger.for_tenant(tenant)}[
            "instances"]

    assert instances() == 2
    # The new fleet (2) beside the old (2) would need 4 of the 3 allowed.
    with pytest.raises(MlflowException) as exc:
        svc.update(tenant, "live", pyfunc_model)
    assert "new fleet (2 instance(s))" in _quota_error(exc)
    assert instances() == 2 and svc.get(tenant, "live")["status"] == "InService"
    # A fleet of one fits beside the old two, and is given back when the update is done.
    svc.update(tenant, "live", pyfunc_model, config={"instance_count": "1", "min_instances": "1"})
    assert instances() == 3
    svc.wait_for_jobs(30)
    after = svc.get(tenant, "live")
    assert after["status"] == "InService" and "last_failure" not in after, after
    assert instances() == 2


def test_blue_green_update_rolls_back_when_an_alarm_fires(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(tenant, "bg", pyfunc_model)
    svc.wait_for_jobs(30)
    before = svc.get(tenant, "bg")
    cw = deploy_env.aws.cloudwatch
    alarm = Names(tenant, "bg").alarm("5xx")
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    svc.update(tenant, "bg", pyfunc_model,
               config={"strategy": "blue-green", "traffic_routing": "canary",
                       "wait_seconds": "0"})
    svc.wait_for_jobs(30)
    after = svc.get(tenant, "bg")
    assert after["status"] == "InService" and after["deploy_id"] == before["deploy_id"]
    assert alarm in after["last_failure"]["failure_reason"]
    left = deploy_env.leftovers(tenant)
    assert len(left["models"]) == 1 and len(left["packages"]) == 1
    assert dict(left["ledger"])["instances"] == before["scaling"]["max_instances"]  # surge back

    cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test")
    svc.update(tenant, "bg", pyfunc_model, config={"strategy": "blue-green",
                                                   "wait_seconds": "0"})
    svc.wait_for_jobs(30)
    final = svc.get(tenant, "bg")
    assert final["deploy_id"] != before["deploy_id"] and "last_failure" not in final
    rollback = deploy_env.aws.sagemaker.describe_endpoint(
        EndpointName=final["endpoint_name"])["LastDeploymentConfig"]["AutoRollbackConfiguration"]
    assert {a["AlarmName"] for a in rollback["Alarms"]} == {a["name"] for a in final["alarms"]}


def test_models_uri_resolves_in_the_registry_and_tags_the_run(deploy_env, tmp_path):
    import mlflow

    from tests.fixtures.sagemaker import MODEL_CODE

    tenant = deploy_env.tenant()
    code = tmp_path / "doubler.py"
    code.write_text(MODEL_CODE)
    mlflow.set_tracking_uri(deploy_env.registry.database_uri)
    try:
        exp = mlflow.create_experiment(f"deploy-{tenant}", artifact_location=str(tmp_path / "a"))
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                    registered_model_name=f"m-{tenant}",
                                    pip_requirements=["mlflow"])
    finally:
        mlflow.set_tracking_uri(None)
    from mlflow_tenant_plugins.deployments.model_source import ModelResolver

    svc = deploy_env.service(resolver=ModelResolver(tracking_uri=deploy_env.registry.database_uri))
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "local", str(tmp_path))  # no local paths through the platform
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    svc.create(tenant, "reg", f"models:/m-{tenant}/1")
    svc.wait_for_jobs(30)
    got = svc.get(tenant, "reg")
    assert got["status"] == "InService" and got["run_id"] == run.info.run_id


def test_tenant_requiring_validation_cannot_deploy_without_a_passing_gate(
    deploy_env, pyfunc_model
):
    tenant = deploy_env.tenant()
    deploy_env.registry.update_tenant(tenant, require_validation=True)
    svc = deploy_env.service()
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "gated", pyfunc_model)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "deploys only validated models" in exc.value.message  # the gate refuses
    deploy_env.registry.update_tenant(tenant, require_validation=False)

    def refuse(tenant_obj, model_ref):
        raise MlflowException.invalid_parameter_value(f"run {model_ref.run_id} not validated")

    svc = deploy_env.service(checks=[refuse])
    with pytest.raises(MlflowException, match="not validated"):
        svc.create(tenant, "gated", pyfunc_model)
    assert deploy_env.leftovers(tenant) == {}


def test_a_deployment_busy_with_another_operation_answers_409_naming_it(
    deploy_env, pyfunc_model
):
    """Was INVALID_STATE, which MLflow answers 500 and the stock client retries for minutes."""
    import time

    from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES

    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    svc.create(tenant, "churn", pyfunc_model, background=False)
    svc.storage.put_record(tenant, "churn", {"name": "churn", "tenant": tenant,
                                             "operation": "update", "status": "Updating",
                                             "updated_at": time.time()})
    for call in (lambda: svc.update(tenant, "churn", config={"alarm_5xx_errors": "2"}),
                 lambda: svc.delete(tenant, "churn")):
        with pytest.raises(MlflowException) as exc:
            call()
        assert exc.value.error_code == "RESOURCE_CONFLICT", exc.value.message
        status = exc.value.get_http_status_code()
        assert status == 409 and status not in _TRANSIENT_FAILURE_RESPONSE_CODES
        assert "busy: update in progress (status Updating)" in exc.value.message
        assert "retry when it has finished" in exc.value.message
    svc.storage.delete_record(tenant, "churn")
    svc.delete(tenant, "churn")
    svc.wait_for_jobs(30)
    assert deploy_env.leftovers(tenant) == {}


@pytest.mark.parametrize(("status", "says"), [
    ("Creating", "busy"), ("Updating", "busy"), ("SystemUpdating", "busy"),
    ("RollingBack", "busy"), ("Deleting", "busy"),
    ("Failed", "delete it and create it again"), ("OutOfService", "delete it and create it"),
    ("UpdateRollbackFailed", "delete it and create it again"),
])
def test_an_endpoint_not_in_service_is_a_409_the_caller_can_act_on(status, says) -> None:
    from mlflow_tenant_plugins.deployments.queries import not_in_service

    exc = not_in_service("churn", status, "updated")
    assert exc.error_code == "RESOURCE_CONFLICT" and exc.get_http_status_code() == 409
    assert "'churn'" in exc.message and status in exc.message and says in exc.message

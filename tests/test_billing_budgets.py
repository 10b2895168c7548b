"""Budgets: crossing 80 % and 100 % of a tenant's monthly budget fires once each (a CloudWatch
data point and an SNS notification, on moto's server), however often and from however many
checkers; a send that failed is retried; ``refuse-new`` refuses a new job (the job service with
fakes) and a new deployment (the deployment service on moto) with a 409 naming the budget,
leaving what runs alone; ``notify`` refuses nothing; the CLI and admin API set budgets."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.billing.budgets import check_budgets, fired, over_budget
from mlflow_tenant_plugins.billing.prices import PriceTable
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.jobs import identity, packages
from mlflow_tenant_plugins.jobs.service import JobService
from mlflow_tenant_plugins.tenancy import Quotas, TenantRegistry
from mlflow_tenant_plugins.tenancy import meters as m
from mlflow_tenant_plugins.tenancy.entities import Budget
from tests.test_jobs_service import Clock, FakeEngine, FakeRuns, _locate

# 1000 per million requests: each request costs 0.001, so 85 000 requests are 85.00 USD.
PRICES = {"api_million_requests": 1000.0}
PRICE_TABLE = PriceTable(api_million_requests=1000.0)


def _name() -> str:
    return f"b{secrets.token_hex(4)}"


def _spend(registry: TenantRegistry, tenant: str, amount: float, at: datetime) -> None:
    """Make ``tenant`` spend ``amount`` USD this month (API requests at 0.001 each)."""
    m.Meters(registry.engine).add_count(tenant, m.API_REQUESTS, round(amount * 1000), at)


def _refusal(exc_info: pytest.ExceptionInfo) -> str:
    assert exc_info.value.error_code == "RESOURCE_EXHAUSTED", exc_info.value.message
    assert exc_info.value.get_http_status_code() == 409  # never retried by the stock client
    return exc_info.value.message


# -- alerts -------------------------------------------------------------------------------------
class Inbox:
    """An SNS topic with an SQS queue subscribed: what the topic delivered, read back."""

    def __init__(self, moto_server: Any):
        self.sns, self.sqs = moto_server.client("sns"), moto_server.client("sqs")
        name = f"budget-{secrets.token_hex(4)}"
        self.topic = self.sns.create_topic(Name=name)["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=arn)

    def messages(self) -> list[dict[str, str]]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return out
            for message in got:
                out.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue,
                                        ReceiptHandle=message["ReceiptHandle"])


def _points(cloudwatch: Any, namespace: str, tenant: str, now: datetime) -> dict[str, float]:
    stats = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName="BudgetUsedPercent",
        Dimensions=[{"Name": "Tenant", "Value": tenant}],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(hours=1), Period=7200,
        Statistics=["SampleCount", "Maximum"])["Datapoints"]
    if not stats:
        return {"SampleCount": 0.0}
    [point] = stats
    return {"SampleCount": point["SampleCount"], "Maximum": point["Maximum"]}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_registry(request: pytest.FixtureRequest) -> TenantRegistry:
    if request.param == "sqlite":
        return request.getfixturevalue("registry")
    return TenantRegistry(request.getfixturevalue("pg_url"))


def test_each_threshold_fires_once_however_often_and_from_however_many_checkers(
        any_registry, moto_server):
    registry = any_registry
    inbox = Inbox(moto_server)
    cloudwatch = moto_server.client("cloudwatch")
    settings = Settings(database_uri=registry.database_uri,
                        usage_metrics_namespace=f"MLT/Budgets{secrets.token_hex(3)}")
    tenant, quiet = _name(), _name()
    registry.create_tenant(tenant, alarm_topic_arn=inbox.topic, budget=Budget(100))
    registry.create_tenant(quiet)  # no budget: never checked
    now = datetime.now(UTC)
    month = m.month_of(now)

    def check(on: TenantRegistry = registry) -> list:
        return check_budgets(on, settings, PRICE_TABLE, now, cloudwatch, inbox.sns)

    _spend(registry, tenant, 50, now)
    _spend(registry, quiet, 500, now)
    assert check() == [] and fired(registry.engine, tenant, month) == []

    _spend(registry, tenant, 35, now)  # 85.00 of 100.00
    [crossing] = check()
    assert (crossing.tenant, crossing.threshold, str(crossing.total)) == (tenant, 80, "85.00")
    assert check() == [] and check() == []  # checked again: nothing more

    _spend(registry, tenant, 20, now)  # 105.00: two servers check at the same moment
    other = TenantRegistry(registry.database_uri)
    barrier = threading.Barrier(2)
    results: list[list] = []

    def race(on: TenantRegistry) -> None:
        barrier.wait(30)
        results.append(check(on))

    threads = [threading.Thread(target=race, args=(r,)) for r in (registry, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(len(r) for r in results) == [0, 1]
    assert [c.threshold for r in results for c in r] == [100]
    assert check() == []
    assert fired(registry.engine, tenant, month) == [80, 100]
    assert fired(registry.engine, quiet, month) == []

    messages = inbox.messages()
    assert [msg["Subject"] for msg in messages] == [
        f"Budget 80 % reached: tenant {tenant}, {month}",
        f"Budget 100 % reached: tenant {tenant}, {month}"]
    assert (f"Tenant '{tenant}' has used 85.00 USD of its 100.00 USD budget for {month} "
            "(85.0 %), crossing 80 %.") in messages[0]["Message"]
    assert "105.00 USD of its 100.00 USD budget" in messages[1]["Message"]
    assert "nothing is refused" in messages[1]["Message"]
    assert _points(cloudwatch, settings.usage_metrics_namespace, tenant, now) == {
        "SampleCount": 2.0, "Maximum": 105.0}
    assert _points(cloudwatch, settings.usage_metrics_namespace, quiet, now) == {
        "SampleCount": 0.0}


def test_an_alert_that_could_not_be_sent_is_sent_by_the_next_check(registry, moto_server):
    sns = moto_server.client("sns")
    name = f"later-{secrets.token_hex(4)}"
    topic = f"arn:aws:sns:us-east-1:123456789012:{name}"  # not made yet: publish fails
    settings = Settings(database_uri=registry.database_uri)
    tenant = _name()
    registry.create_tenant(tenant, alarm_topic_arn=topic, budget=Budget(10))
    now = datetime.now(UTC)
    _spend(registry, tenant, 9, now)

    def check() -> list:
        return check_budgets(registry, settings, PRICE_TABLE, now,
                             moto_server.client("cloudwatch"), sns)

    assert check() == [] and fired(registry.engine, tenant, m.month_of(now)) == []
    sns.create_topic(Name=name)
    assert [c.threshold for c in check()] == [80]
    assert check() == []


def test_the_metering_sampler_checks_budgets_at_the_end_of_its_run(registry, moto_server):
    from mlflow_tenant_plugins.billing import sampler

    inbox = Inbox(moto_server)
    settings = Settings(database_uri=registry.database_uri, extra={"prices": PRICES})
    tenant = _name()
    registry.create_tenant(tenant, alarm_topic_arn=inbox.topic, budget=Budget(1))
    _spend(registry, tenant, 2, datetime.now(UTC))
    meters = m.Meters(registry.engine)
    for _ in range(2):
        sampler.task(registry, settings, meters, lambda: None,
                     lambda: (moto_server.client("cloudwatch"), inbox.sns))
    assert meters.levels(tenant)[m.MeterKey(m.STORAGE)] == 0  # sampled first
    assert fired(registry.engine, tenant, m.month_of(datetime.now(UTC))) == [80, 100]
    assert len(inbox.messages()) == 2


def test_over_budget_names_the_budget_the_amount_and_the_month(registry):
    settings = Settings(database_uri=registry.database_uri, extra={"prices": PRICES})
    tenant, none = _name(), _name()
    registry.create_tenant(tenant, budget=Budget(40, "refuse-new"))
    registry.create_tenant(none)
    now = datetime.now(UTC)
    _spend(registry, tenant, 39.99, now)
    assert over_budget(registry, settings, tenant, now) is None
    _spend(registry, tenant, 0.01, now)
    assert over_budget(registry, settings, tenant, now) == (
        f"tenant '{tenant}' has used 40.00 USD of its monthly budget of 40.00 USD in "
        f"{m.month_of(now)} (100.0 %)")
    _spend(registry, none, 1000, now)
    assert over_budget(registry, settings, none, now) is None  # no budget
    # Next month starts at 0.
    later = m.month_bounds(m.month_of(now))[1] + timedelta(days=1)
    assert over_budget(registry, settings, tenant, later) is None


# -- refusals: jobs ---------------------------------------------------------------------------
@pytest.fixture
def jobs(registry: TenantRegistry, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(packages, "locate", _locate)
    clock = Clock()
    engine, runs = FakeEngine(clock), FakeRuns()
    settings = Settings(database_uri=registry.database_uri, jobs_executor="local",
                        jobs_tracking_uri="http://127.0.0.1:5000", extra={"prices": PRICES})
    service = JobService(registry, settings, engine, runs, destination="tenant-s3://bucket/root",
                         identity=identity.local_key(registry), clock=clock)
    return service, engine, runs, clock


def _job_tenant(registry: TenantRegistry, budget: Budget) -> str:
    name = _name()
    registry.create_tenant(name, quotas=Quotas(jobs=3), budget=budget)
    registry.bind("oidc:alice", name, "editor")
    return name


def test_refuse_new_refuses_a_job_naming_the_budget_and_leaves_running_jobs_alone(
        registry, jobs):
    service, engine, runs, clock = jobs
    tenant = _job_tenant(registry, Budget(25, "refuse-new"))
    config = {"instance_count": 1, "max_runtime_seconds": 600}

    def submit() -> dict:
        return service.submit(tenant, "oidc:alice", runs.create(tenant), "main", {}, config)

    running = submit()  # under budget
    _spend(registry, tenant, 30, clock())
    for attempt in (lambda: service.check(tenant, config), submit):
        with pytest.raises(MlflowException) as exc:
            attempt()
        message = _refusal(exc)
        assert message.startswith(f"budget exceeded: tenant '{tenant}' has used 30.00 USD of "
                                  f"its monthly budget of 25.00 USD in {m.month_of(clock())}")
        assert "a new job is refused (on_budget = refuse-new)" in message
        assert "running deployments and jobs continue" in message
    assert len(engine.asked("start", tenant)) == 1  # only the job from before
    assert service.get(tenant, running["job_id"])["status"] not in ("FAILED", "KILLED")
    assert registry.ledger.get(tenant, "jobs").used == 1


def test_notify_mode_refuses_no_job(registry, jobs):
    service, engine, runs, clock = jobs
    tenant = _job_tenant(registry, Budget(25, "notify"))
    _spend(registry, tenant, 300, clock())
    config = {"instance_count": 1, "max_runtime_seconds": 600}
    service.check(tenant, config)
    job = service.submit(tenant, "oidc:alice", runs.create(tenant), "main", {}, config)
    assert engine.asked("start", tenant) and job["tenant"] == tenant


# -- refusals: deployments -----------------------------------------------------------------------
def _deploy_tenant(deploy_env: Any, budget: Budget) -> str:
    name = f"t{secrets.token_hex(4)}"
    deploy_env.registry.create_tenant(name, quotas=Quotas(endpoints=3), budget=budget)
    return name


def test_refuse_new_refuses_a_new_deployment_and_leaves_the_running_one_alone(
        deploy_env, pyfunc_model):
    settings = replace(deploy_env.settings, extra={"prices": PRICES})
    svc = deploy_env.service(settings)
    tenant = _deploy_tenant(deploy_env, Budget(5, "refuse-new"))
    svc.create(tenant, "first", pyfunc_model)
    svc.wait_for_jobs(30)
    _spend(deploy_env.registry, tenant, 7.5, datetime.now(UTC))

    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "second", pyfunc_model)
    message = _refusal(exc)
    assert f"tenant '{tenant}' has used 7.50 USD of its monthly budget of 5.00 USD" in message
    assert "a new deployment is refused (on_budget = refuse-new)" in message
    assert f"mlflow-tenants tenant update {tenant} --budget AMOUNT" in message
    assert [d["name"] for d in svc.list(tenant)] == ["first"]
    assert svc.get(tenant, "first")["status"] == "InService"
    svc.delete(tenant, "first")  # deleting is never refused
    assert deploy_env.leftovers(tenant) == {}


def test_notify_mode_refuses_no_deployment(deploy_env, pyfunc_model):
    settings = replace(deploy_env.settings, extra={"prices": PRICES})
    svc = deploy_env.service(settings)
    tenant = _deploy_tenant(deploy_env, Budget(5, "notify"))
    _spend(deploy_env.registry, tenant, 50, datetime.now(UTC))
    svc.create(tenant, "anyway", pyfunc_model)
    svc.wait_for_jobs(30)
    assert svc.get(tenant, "anyway")["status"] == "InService"
    svc.delete(tenant, "anyway")
    assert deploy_env.leftovers(tenant) == {}


# -- setting a budget ---------------------------------------------------------------------------
def test_the_cli_sets_changes_and_clears_a_budget(registry):
    from click.testing import CliRunner

    from mlflow_tenant_plugins.cli import cli

    def run(*args: str) -> Any:
        result = CliRunner().invoke(cli, ["--db", registry.database_uri, "tenant", *args])
        return result

    def shown(*args: str) -> dict:
        result = run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["budget"]

    name = _name()
    assert shown("create", name, "--budget", "250", "--on-budget", "refuse-new") == {
        "amount": 250.0, "on_budget": "refuse-new"}
    assert shown("update", name, "--on-budget", "notify") == {"amount": 250.0,
                                                               "on_budget": "notify"}
    assert shown("update", name, "--budget", "99.5") == {"amount": 99.5, "on_budget": "notify"}
    assert shown("update", name, "--budget", "none") == {"amount": None, "on_budget": "notify"}
    assert shown("update", name, "--budget", "12") == {"amount": 12.0, "on_budget": "notify"}
    assert shown("update", name, "--budget", "") == {"amount": None, "on_budget": "notify"}
    for bad in ("-1", "nan", "lots"):
        result = run("update", name, "--budget", bad)
        assert result.exit_code == 2 and "expected an amount >= 0" in result.output, bad
    result = run("show", name)
    assert "budget:" in result.output and "(none)" in result.output


def test_the_admin_api_reads_a_budget_object():
    from mlflow_tenant_plugins.admin_api import _budget

    assert _budget({}) is None
    assert _budget({"budget": {"amount": 250, "on_budget": "refuse-new"}}) == Budget(
        250, "refuse-new")
    assert _budget({"budget": {"amount": 10}}) == Budget(10, "notify")
    current = Budget(250, "refuse-new")
    tenant = type("T", (), {"budget_amount": current.amount, "on_budget": current.on_budget})
    assert _budget({"budget": {"on_budget": "notify"}}, tenant) == Budget(250, "notify")
    assert _budget({"budget": {"amount": None}}, tenant) == Budget(None, "refuse-new")
    assert _budget({"budget": None}, tenant) == Budget(None, "refuse-new")
    for bad, says in (({"budget": 5}, "must be an object"),
                      ({"budget": {"amount": -1}}, "amount >= 0"),
                      ({"budget": {"amount": "5"}}, "amount >= 0"),
                      ({"budget": {"on_budget": "stop"}}, "on_budget must be one of"),
                      ({"budget": {"amont": 5}}, "unknown budget key")):
        with pytest.raises(MlflowException, match=says) as exc:
            _budget(bad)
        assert exc.value.error_code == "INVALID_PARAMETER_VALUE"

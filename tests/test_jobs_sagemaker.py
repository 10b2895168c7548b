"""The SageMaker job engine against moto's server with real boto3 clients: what a training job
is created with, how SageMaker's statuses read as the platform's, that another tenant's job
reads as absent, that stop is idempotent and that logs page across calls.

moto 5.2.5 differs from SageMaker for training jobs in three ways, so the SageMaker client
the engine gets is the real one wrapped in ``AwsLikeTrainingJobs`` (below), which puts
AWS's behaviour back and says what AWS does at each point:
- moto completes a job as it is created; on AWS it is InProgress for minutes;
- moto has no StopTrainingJob (it answers 500);
- moto overwrites a job created again under the same name; AWS answers ResourceInUse.
moto also drops a job's ``Environment``, so the environment is read from the request as it
went over the wire.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.jobs.executor import JobLaunch, LogPage, external_name
from mlflow_tenant_plugins.jobs.sagemaker import (
    LOG_GROUP,
    SageMakerEngine,
    is_not_found,
    looks_secret,
)
from mlflow_tenant_plugins.jobs.spec import RunnerSpec, Validation

ROLE = "arn:aws:iam::123456789012:role/mlflow-sagemaker-{tenant}"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-tenant-jobs:1"


def _client_error(op: str, code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


class AwsLikeTrainingJobs:
    """The real boto3 SageMaker client (talking to moto), with the training-job behaviour
    moto 5.2.5 lacks put back as AWS has it; everything else goes straight through."""

    def __init__(self, client: Any):
        self._client = client
        self._status: dict[str, dict[str, Any]] = {}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._client, attr)

    def set_status(self, name: str, status: str, secondary: str,
                   reason: str | None = None) -> None:
        self._status[name] = {"TrainingJobStatus": status, "SecondaryStatus": secondary,
                              **({"FailureReason": reason} if reason else {})}

    def create_training_job(self, **kwargs: Any) -> Any:
        name = kwargs["TrainingJobName"]
        # AWS: training job names are unique per account and region; a second create answers
        # ResourceInUse. moto overwrites the first job.
        try:
            self._client.describe_training_job(TrainingJobName=name)
        except ClientError:
            pass
        else:
            raise _client_error("CreateTrainingJob", "ResourceInUse",
                                "Training job names must be unique within an AWS account and "
                                "region, and a training job with this name already exists")
        out = self._client.create_training_job(**kwargs)
        # AWS: a new job is InProgress (SecondaryStatus Starting) while instances launch;
        # moto marks it Completed at once.
        self.set_status(name, "InProgress", "Starting")
        return out

    def describe_training_job(self, **kwargs: Any) -> dict[str, Any]:
        desc = self._client.describe_training_job(**kwargs)  # moto's own not-found error
        overlay = self._status.get(kwargs["TrainingJobName"])
        if overlay:
            desc = {**desc, **overlay}
            # AWS: no end time before the job ends, no start time before training starts.
            if overlay["TrainingJobStatus"] in ("InProgress", "Stopping"):
                desc.pop("TrainingEndTime", None)
            if overlay["SecondaryStatus"] in ("Starting", "Downloading"):
                desc.pop("TrainingStartTime", None)
        return desc

    def stop_training_job(self, **kwargs: Any) -> dict[str, Any]:
        # moto 5.2.5 has no StopTrainingJob. AWS: an InProgress job turns Stopping (then
        # Stopped); any other status answers ValidationException "The request was rejected
        # because the training job is in status X."; a missing job, ValidationException.
        name = kwargs["TrainingJobName"]
        status = self.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
        if status != "InProgress":
            raise _client_error("StopTrainingJob", "ValidationException",
                                "The request was rejected because the training job is in "
                                f"status {status}.")
        self.set_status(name, "Stopping", "Stopping")
        return {}


@pytest.fixture
def aws(moto_server):
    """(sagemaker stand-in, raw sagemaker client, logs client, sent CreateTrainingJob bodies)."""
    raw = moto_server.client("sagemaker")
    sent: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(json.loads(request.body))

    # What went over the wire is what AWS would store (moto drops Environment).
    raw.meta.events.register("before-send.sagemaker.CreateTrainingJob", record)
    return AwsLikeTrainingJobs(raw), raw, moto_server.client("logs"), sent


@pytest.fixture
def engine(aws) -> SageMakerEngine:
    return SageMakerEngine(aws[0], aws[2])


def _launch(tenant: str | None = None, **overrides: Any) -> JobLaunch:
    tenant = tenant or f"t{secrets.token_hex(4)}"
    job_id = secrets.token_hex(8)
    run_id = secrets.token_hex(16)
    values: dict[str, Any] = dict(
        job_id=job_id, tenant=tenant, name=external_name(tenant, job_id),
        runner=RunnerSpec(run_id=run_id, entry_point="train", parameters={"alpha": "0.5"},
                          validation=Validation(rules="rules.yaml", data="data.csv"),
                          experiment_id="3"),
        instance_type="ml.m5.xlarge", instance_count=2, max_runtime_seconds=5400,
        tracking_uri="https://mlflow.example.internal",
        package_s3_uri=f"s3://platform/jobs/{tenant}/{job_id}/",
        output_s3_uri=f"s3://platform/jobs/{tenant}/{job_id}/output",
        role_arn=ROLE.format(tenant=tenant), image_uri=IMAGE,
        environment={"MLT_JOB_AUTH": "aws-iam", "MLT_JOB_TENANT": tenant,
                     "MLT_JOB_SERVER_ID": "mlflow.example.internal",
                     "MLT_JOB_STS_ENDPOINT": "https://sts.us-east-1.amazonaws.com",
                     "AWS_REGION": "us-east-1"},
        tags={"mlt:tenant": tenant, "mlt:run-id": run_id, "mlt:job-id": job_id},
    )
    values.update(overrides)
    return JobLaunch(**values)


def test_start_creates_the_training_job_with_role_tags_limits_instances_and_channels(
    engine, aws
):
    _, raw, _, sent = aws
    launch = _launch()
    engine.start(launch)

    job = raw.describe_training_job(TrainingJobName=launch.name)
    assert job["RoleArn"] == launch.role_arn
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["AlgorithmSpecification"]["ContainerEntrypoint"] == [
        "python", "-m", "mlflow_tenant_plugins.jobs.runner"]
    assert job["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2,
                                     "VolumeSizeInGB": 30}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 5400}
    assert job["InputDataConfig"] == [{"ChannelName": "project", "DataSource": {
        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": launch.package_s3_uri,
                         "S3DataDistributionType": "FullyReplicated"}}}]
    assert job["OutputDataConfig"]["S3OutputPath"] == launch.output_s3_uri
    assert job["EnableNetworkIsolation"] is False
    tags = {t["Key"]: t["Value"] for t in raw.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags == launch.tags

    env = next(b for b in sent if b["TrainingJobName"] == launch.name)["Environment"]
    assert RunnerSpec.from_json(env[spec.ENV_SPEC]) == launch.runner
    assert env[spec.ENV_PACKAGE] == "/opt/ml/input/data/project"
    assert env["MLFLOW_TRACKING_URI"] == launch.tracking_uri
    assert env["MLT_JOB_AUTH"] == "aws-iam" and env["MLT_JOB_TENANT"] == launch.tenant
    assert not [k for k in env if looks_secret(k)]
    assert not any("SECRET" in k or "TOKEN" in k or "PASSWORD" in k for k in env)


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_SESSION_TOKEN", "DB_PASSWORD", "openai_api_key"])
def test_a_secret_looking_variable_is_refused_and_nothing_is_created(engine, aws, variable):
    _, raw, _, sent = aws
    launch = _launch()
    launch = _launch(tenant=launch.tenant,
                     environment={**launch.environment, variable: "s3cr3t"})
    with pytest.raises(ValueError, match=variable):
        engine.start(launch)
    assert sent == []
    with pytest.raises(ClientError) as err:
        raw.describe_training_job(TrainingJobName=launch.name)
    assert is_not_found(err.value)


def test_an_environment_value_over_sagemakers_limit_is_refused_by_name(engine, aws):
    launch = _launch()
    launch = _launch(tenant=launch.tenant,
                     environment={**launch.environment, "MLT_NOTE": "x" * 513})
    with pytest.raises(ValueError, match="MLT_NOTE"):
        engine.start(launch)
    assert aws[3] == []


def test_a_launch_without_role_or_package_is_refused(engine, aws):
    with pytest.raises(ValueError, match="role_arn"):
        engine.start(_launch(role_arn=None))
    assert aws[3] == []


# (TrainingJobStatus, SecondaryStatus, FailureReason) -> (status, detail, failure_reason)
STATES = [
    ("InProgress", "Starting", None, spec.STARTING, "Starting", None),
    ("InProgress", "Pending", None, spec.STARTING, "Pending", None),
    ("InProgress", "LaunchingMLInstances", None, spec.STARTING, "LaunchingMLInstances", None),
    ("InProgress", "PreparingTrainingStack", None, spec.STARTING, "PreparingTrainingStack",
     None),
    ("InProgress", "Downloading", None, spec.STARTING, "Downloading", None),
    ("InProgress", "DownloadingTrainingImage", None, spec.STARTING,
     "DownloadingTrainingImage", None),
    ("InProgress", "Training", None, spec.RUNNING, "Training", None),
    ("InProgress", "Uploading", None, spec.RUNNING, "Uploading", None),
    ("Stopping", "Stopping", None, spec.RUNNING, "Stopping", None),
    ("Completed", "Completed", None, spec.FINISHED, "Completed", None),
    ("Failed", "Failed", "AlgorithmError: validation failed: 3 rows break rule 'age >= 0'",
     spec.FAILED, "Failed", "AlgorithmError: validation failed: 3 rows break rule 'age >= 0'"),
    ("Stopped", "Stopped", None, spec.KILLED, "Stopped", None),
    ("Stopped", "MaxRuntimeExceeded", None, spec.KILLED, "MaxRuntimeExceeded",
     "stopped after its maximum runtime (5400 s)"),
]


@pytest.mark.parametrize(("sm_status", "secondary", "reason", "status", "detail", "failure"),
                         STATES, ids=[f"{s[0]}-{s[1]}" for s in STATES])
def test_each_sagemaker_status_reads_as_the_platforms(engine, aws, sm_status, secondary,
                                                      reason, status, detail, failure):
    launch = _launch()
    engine.start(launch)
    aws[0].set_status(launch.name, sm_status, secondary, reason)

    state = engine.describe(launch.tenant, launch.name)
    assert (state.status, state.detail, state.failure_reason) == (status, detail, failure)
    if status in spec.ENDED:
        assert state.ended_at is not None and state.ended_at.utcoffset().total_seconds() == 0
    else:
        assert state.ended_at is None
    if secondary in ("Starting", "Downloading"):
        assert state.started_at is None


def test_a_job_moto_completed_reads_finished_with_its_times(aws):
    # Straight to moto, no stand-in: moto completes the job as it is created.
    _, raw, logs, _ = aws
    engine = SageMakerEngine(raw, logs)
    launch = _launch()
    engine.start(launch)
    state = engine.describe(launch.tenant, launch.name)
    assert state.status == spec.FINISHED and state.failure_reason is None
    assert state.started_at is not None and state.ended_at is not None


def test_a_missing_job_reads_as_none(engine):
    assert engine.describe("tnobody", external_name("tnobody", secrets.token_hex(8))) is None


def test_sagemakers_own_not_found_answer_is_recognised():
    # What AWS answers DescribeTrainingJob for a missing job (moto words it differently).
    assert is_not_found(_client_error("DescribeTrainingJob", "ValidationException",
                                      "Requested resource not found."))
    assert not is_not_found(_client_error("DescribeTrainingJob", "ValidationException",
                                          "1 validation error detected"))


def test_another_tenants_job_of_the_same_name_reads_as_none(engine, aws):
    stand_in, _, logs, _ = aws
    launch = _launch()
    engine.start(launch)
    _put_logs(logs, f"{launch.name}/algo-1-1700000000", ["tenant a's secret line"])
    other = f"t{secrets.token_hex(4)}"

    assert engine.describe(launch.tenant, launch.name).status == spec.STARTING
    assert engine.describe(other, launch.name) is None
    engine.stop(other, launch.name)
    assert stand_in.describe_training_job(
        TrainingJobName=launch.name)["TrainingJobStatus"] == "InProgress"
    assert engine.logs(other, launch.name, None).lines == []
    # A fresh engine (no cached owners) decides on the tag too.
    fresh = SageMakerEngine(stand_in, logs)
    assert fresh.describe(other, launch.name) is None
    assert fresh.describe(launch.tenant, launch.name).status == spec.STARTING


def test_starting_again_under_the_same_name_is_a_success_for_the_same_tenant_only(engine,
                                                                                   aws):
    launch = _launch()
    engine.start(launch)
    engine.start(launch)  # a retried start: the job exists and is this tenant's
    assert len([b for b in aws[3] if b["TrainingJobName"] == launch.name]) == 1
    intruder = _launch(tenant=f"t{secrets.token_hex(4)}", name=launch.name)
    with pytest.raises(ClientError, match="ResourceInUse"):
        SageMakerEngine(aws[0], aws[2]).start(intruder)


def test_stop_is_idempotent(engine, aws):
    stand_in = aws[0]
    launch = _launch()
    engine.start(launch)
    stand_in.set_status(launch.name, "InProgress", "Training")

    engine.stop(launch.tenant, launch.name)
    state = engine.describe(launch.tenant, launch.name)
    assert (state.status, state.detail) == (spec.RUNNING, "Stopping")
    engine.stop(launch.tenant, launch.name)  # already stopping
    stand_in.set_status(launch.name, "Stopped", "Stopped")
    engine.stop(launch.tenant, launch.name)  # already ended
    assert engine.describe(launch.tenant, launch.name).status == spec.KILLED
    engine.stop(launch.tenant, external_name(launch.tenant, secrets.token_hex(8)))  # no job


def test_stop_that_races_the_jobs_end_is_not_an_error(engine, aws):
    stand_in = aws[0]
    launch = _launch()
    engine.start(launch)
    stand_in.set_status(launch.name, "InProgress", "Uploading")
    real_stop = stand_in.stop_training_job

    def ended_meanwhile(**kwargs: Any) -> Any:
        stand_in.set_status(launch.name, "Completed", "Completed")
        return real_stop(**kwargs)

    stand_in.stop_training_job = ended_meanwhile
    engine.stop(launch.tenant, launch.name)
    assert engine.describe(launch.tenant, launch.name).status == spec.FINISHED


def _put_logs(logs: Any, stream: str, messages: list[str]) -> None:
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    try:
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
        {"timestamp": now + i, "message": m} for i, m in enumerate(messages)])


def test_logs_page_across_calls_and_read_on_from_the_token(engine, aws):
    logs = aws[2]
    launch = _launch()
    engine.start(launch)
    _put_logs(logs, f"{launch.name}/algo-1-1700000000", [f"line {i}" for i in range(5)])
    _put_logs(logs, f"{launch.name}/algo-2-1700000000", ["host two"])
    _put_logs(logs, f"{launch.name}0/algo-1-1700000000", ["another job's line"])

    first = engine.logs(launch.tenant, launch.name, None, limit=3)
    assert first.lines == ["line 0", "line 1", "line 2"] and first.next_token
    second = engine.logs(launch.tenant, launch.name, first.next_token, limit=3)
    assert second.lines == ["line 3", "line 4", "host two"]
    idle = engine.logs(launch.tenant, launch.name, second.next_token, limit=3)
    assert idle.lines == [] and idle.next_token == second.next_token

    _put_logs(logs, f"{launch.name}/algo-1-1700000000", ["line 5"])
    more = engine.logs(launch.tenant, launch.name, idle.next_token)
    assert more.lines == ["line 5"]


def test_logs_before_the_job_logged_anything_answer_nothing_and_keep_the_token(aws):
    stand_in, _, logs, _ = aws
    launch = _launch()
    # A log group no job has written to yet: CloudWatch answers ResourceNotFoundException.
    no_group = SageMakerEngine(stand_in, logs, log_group=f"/test/{secrets.token_hex(4)}")
    no_group.start(launch)
    assert no_group.logs(launch.tenant, launch.name, None) == LogPage([], None)
    earlier = base64.urlsafe_b64encode(json.dumps({f"{launch.name}/algo-1-1": "f/1"}).encode())
    assert no_group.logs(launch.tenant, launch.name, earlier.decode()) == LogPage(
        [], earlier.decode())
    # The group exists (another job logged), this job's streams do not yet.
    _put_logs(logs, f"unrelated-{secrets.token_hex(4)}/algo-1-1700000000", ["x"])
    engine = SageMakerEngine(stand_in, logs)
    assert engine.logs(launch.tenant, launch.name, None) == LogPage([], None)


def test_a_forged_log_token_cannot_read_another_jobs_stream(engine, aws):
    logs = aws[2]
    mine, theirs = _launch(), _launch()
    engine.start(mine)
    engine.start(theirs)
    _put_logs(logs, f"{mine.name}/algo-1-1700000000", ["my line"])
    _put_logs(logs, f"{theirs.name}/algo-1-1700000000", ["their line"])
    their_page = engine.logs(theirs.tenant, theirs.name, None)
    assert their_page.lines == ["their line"]

    # Their token, or one naming their stream, read as mine: only my stream is read.
    for forged in (their_page.next_token, base64.urlsafe_b64encode(json.dumps(
            {f"{theirs.name}/algo-1-1700000000": "f/0"}).encode()).decode()):
        assert engine.logs(mine.tenant, mine.name, forged).lines == ["my line"]
    with pytest.raises(ValueError, match="invalid log token"):
        engine.logs(mine.tenant, mine.name, "not base64 json!")

"""A job submitted to a real ``mlflow server --app-name tenant-auth`` whose engine is SageMaker
(moto) and whose artifacts are ``tenant-s3://`` in the same moto: the training job the server
creates is named for the tenant and the job, runs under the tenant's own execution role (bound
to the tenant as editor), is tagged with the tenant, run and job, is limited in runtime and
instances, reads the project from the tenant's prefix and writes under it, and carries nothing
secret in its environment; when SageMaker says it completed, the job reads FINISHED and the
tenant's quotas come back.

moto 5.2.5 drops a training job's ``Environment`` (DescribeTrainingJob answers none), so the
environment is read from the CreateTrainingJob request as it reached the emulator (moto's
request recorder, on an emulator of this module's own). moto completes a training job as it
is created and has no StopTrainingJob: stopping a job that is still running is covered
against a stand-in in ``test_jobs_sagemaker.py``, not here.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import secrets
import sys
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.jobs.sagemaker import looks_secret
from mlflow_tenant_plugins.jobs.service import MONTHLY_RESOURCE
from mlflow_tenant_plugins.tenancy import Quotas, Role
from mlflow_tenant_plugins.tenancy.iam_bindings import IamBindings, normalize_arn
from mlflow_tenant_plugins.tenancy.job_records import MonthlyLedger
from tests.fixtures.aws import MotoServer
from tests.fixtures.process import Process, free_port
from tests.fixtures.sagemaker import EXECUTION_ROLE_TEMPLATE
from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

JOBS = "/api/2.0/tenants/jobs"
BUCKET = "mlt-jobs-artifacts"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-tenant-jobs:1"
SERVER_ID = "mlflow-jobs-test"
TRACKING_URI = "https://mlflow.example.internal"
INSTANCE_TYPE = "ml.m5.xlarge"


@pytest.fixture(scope="module")
def recording_moto(tmp_path_factory) -> Iterator[MotoServer]:
    """moto of this module's own, whose request recorder (off until a test turns it on)
    writes into a temporary directory."""
    work = tmp_path_factory.mktemp("moto-recording")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOTO_", "AWS_"))}
    env["MOTO_RECORDER_FILEPATH"] = str(work / "recording.jsonl")
    proc = Process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                   work / "moto.log", env=env, cwd=work)
    moto = MotoServer(url=f"http://127.0.0.1:{port}", process=proc)
    try:
        proc.wait_http(f"{moto.url}/moto-api/", timeout=60)
        yield moto
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(recording_moto, tmp_path_factory):
    recording_moto.client("s3").create_bucket(Bucket=BUCKET)
    env = {
        **recording_moto.env(),
        "MLFLOW_TENANT_AWS_ENDPOINT_URL": recording_moto.url,
        "MLFLOW_TENANT_JOBS_EXECUTOR": "sagemaker",
        "MLFLOW_TENANT_JOBS_EXECUTION_ROLE_ARN": EXECUTION_ROLE_TEMPLATE,
        "MLFLOW_TENANT_JOBS_IMAGE_URIS": f"local={IMAGE}",
        "MLFLOW_TENANT_JOBS_TRACKING_URI": TRACKING_URI,
        # SageMaker jobs log with their execution role by the server's AWS IAM method, named
        # "iam" in auth_methods (auth/authenticator.py); "aws-iam" is the client profile's
        # auth kind, which the server refuses as an unknown method.
        "MLFLOW_TENANT_AUTH_METHODS": "key,iam",
        "MLFLOW_TENANT_SERVER_ID": SERVER_ID,
        "MLFLOW_TENANT_STS_ENDPOINT": recording_moto.url,
        "MLFLOW_TENANT_JOBS_RECONCILE_INTERVAL_SECONDS": "1",
    }
    srv = start_mlflow_server(tmp_path_factory.mktemp("jobs-sagemaker-server"),
                              artifacts_destination=f"tenant-s3://{BUCKET}/root",
                              extra_env=env)
    yield srv
    stop_mlflow_server(srv)


def _tenant(server, role: str = "editor") -> tuple[str, str]:
    name = f"g{secrets.token_hex(4)}"
    server.registry.create_tenant(name, quotas=Quotas(jobs=2, training_instances=2))
    _info, key = server.registry.create_key(name, role)
    return name, key


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"name: tiny\nentry_points:\n  main:\n    command: \"python -c 'print(1)'\"\n"
        info = tarfile.TarInfo("MLproject")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _recorded_create_training_jobs(moto: MotoServer) -> list[dict[str, Any]]:
    text = requests.get(f"{moto.url}/moto-api/recorder/download-recording", timeout=10).text
    found = []
    for line in text.splitlines():
        entry = json.loads(line)
        target = {k.lower(): v for k, v in entry["headers"].items()}.get("x-amz-target", "")
        if target.endswith(".CreateTrainingJob"):
            body = entry["body"]
            found.append(json.loads(base64.b64decode(body) if entry["body_encoded"] else body))
    return found


def _usage(server, tenant: str) -> dict[str, int]:
    return {u.resource: u.used for u in server.registry.ledger.for_tenant(tenant)}


def test_a_submitted_job_is_the_tenants_training_job_and_ends_giving_its_quotas_back(
        server, recording_moto, tmp_path, monkeypatch):
    tenant, key = _tenant(server)
    _other, other_key = _tenant(server)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    client = MlflowClient(server.url)
    run = client.create_run(client.create_experiment("jobs"))
    archive = tmp_path / spec.PACKAGE_FILE
    archive.write_bytes(_archive())
    client.log_artifact(run.info.run_id, str(archive), spec.PACKAGE_ARTIFACT_DIR)
    session = server.session(key)
    role_arn = EXECUTION_ROLE_TEMPLATE.format(tenant=tenant)
    requests.post(f"{recording_moto.url}/moto-api/recorder/reset-recording",
                  timeout=10).raise_for_status()
    requests.post(f"{recording_moto.url}/moto-api/recorder/start-recording",
                  timeout=10).raise_for_status()
    try:
        submitted = session.post(f"{server.url}{JOBS}/submit", timeout=60, json={
            "run_id": run.info.run_id, "entry_point": "main", "parameters": {"alpha": "0.5"},
            "config": {"instance_type": INSTANCE_TYPE, "instance_count": 2,
                       "max_runtime_seconds": 1200}})
    finally:
        requests.post(f"{recording_moto.url}/moto-api/recorder/stop-recording",
                      timeout=10).raise_for_status()
    assert submitted.status_code == 200, submitted.text
    job = submitted.json()["job"]
    assert (job["tenant"], job["executor"], job["instance_count"]) == (tenant, "sagemaker", 2)

    # The training job, as SageMaker holds it.
    sm = recording_moto.client("sagemaker")
    name = f"mlt-{tenant}-{job['job_id']}"
    desc = sm.describe_training_job(TrainingJobName=name)
    assert desc["RoleArn"] == role_arn
    assert desc["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert desc["StoppingCondition"]["MaxRuntimeInSeconds"] == 1200
    assert (desc["ResourceConfig"]["InstanceType"],
            desc["ResourceConfig"]["InstanceCount"]) == (INSTANCE_TYPE, 2)
    prefix = f"s3://{BUCKET}/root/workspaces/{tenant}/"
    [channel] = desc["InputDataConfig"]
    package = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert package.startswith(prefix) and package.endswith(
        f"{run.info.run_id}/artifacts/{spec.PACKAGE_ARTIFACT_DIR}/{spec.PACKAGE_FILE}")
    stored = recording_moto.client("s3").get_object(
        Bucket=BUCKET, Key=package.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert stored == archive.read_bytes()  # the very archive the client uploaded
    assert desc["OutputDataConfig"]["S3OutputPath"].startswith(prefix)
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(
        ResourceArn=desc["TrainingJobArn"])["Tags"]}
    assert tags == {"mlt:tenant": tenant, "mlt:run-id": run.info.run_id,
                    "mlt:job-id": job["job_id"]}

    # The role is the tenant's editor, and only the tenant's.
    assert IamBindings(server.registry).lookup(normalize_arn(role_arn)) == {
        tenant: Role.EDITOR}

    # Nothing secret in the job's environment (as sent: moto does not keep it).
    [sent] = [b for b in _recorded_create_training_jobs(recording_moto)
              if b["TrainingJobName"] == name]
    env = sent["Environment"]
    assert desc.get("Environment") in (None, {}, env)
    assert env["MLT_JOB_AUTH"] == "aws-iam" and env["MLT_JOB_TENANT"] == tenant
    assert env["MLT_JOB_SERVER_ID"] == SERVER_ID
    assert env["MLFLOW_TRACKING_URI"] == TRACKING_URI
    assert spec.RunnerSpec.from_json(env[spec.ENV_SPEC]).run_id == run.info.run_id
    assert [k for k in env if looks_secret(k)] == []
    assert not {k for k in env if k.startswith("AWS_")} - {"AWS_REGION", "AWS_DEFAULT_REGION"}
    assert "MLFLOW_TRACKING_TOKEN" not in env and key not in json.dumps(env)
    assert recording_moto.secret_key not in env.values()
    assert not any(k.description.startswith("job ") for k in server.registry.list_keys(tenant))

    # moto completed it at once: the job reads FINISHED and gives back what it held; the
    # month keeps what it ran (2 instances × its seconds), not the 2 × 1200 s it reserved.
    got = session.get(f"{server.url}{JOBS}/get", params={"job_id": job["job_id"]}, timeout=30)
    assert got.status_code == 200, got.text
    assert got.json()["job"]["status"] == spec.FINISHED
    usage = _usage(server, tenant)
    assert (usage["jobs"], usage["training_instances"]) == (0, 0)
    ran = desc["TrainingEndTime"] - desc["TrainingStartTime"]
    month = got.json()["job"]["submitted_at"][:7]
    assert MonthlyLedger(server.registry.engine).used(tenant, month, MONTHLY_RESOURCE) == (
        2 * math.ceil(max(0.0, ran.total_seconds())))
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags[spec.JOB_TAG] == job["job_id"]
    assert finished.data.tags[spec.EXECUTOR_TAG] == "sagemaker"

    # Stopping a job that already ended asks SageMaker nothing and answers the job as it is.
    stopped = session.post(f"{server.url}{JOBS}/stop", json={"job_id": job["job_id"]},
                           timeout=30)
    assert stopped.status_code == 200 and stopped.json()["job"]["status"] == spec.FINISHED
    # Another tenant sees no such job.
    other = server.session(other_key)
    assert other.get(f"{server.url}{JOBS}/get", params={"job_id": job["job_id"]},
                     timeout=30).status_code == 404
    assert other.get(f"{server.url}{JOBS}/list", timeout=30).json()["jobs"] == []

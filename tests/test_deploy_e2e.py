"""End to end: the stock ``mlflow deployments`` CLI as a subprocess against a real
``mlflow server --app-name tenant-auth``, deploying a model a tenant registered with the stock
client, to the patched moto. The server's artifacts are ``tenant-s3://`` in moto, so the
model is read from the tenant's prefix and its package written there (``deploy_package_root``
left empty: derived from ``--artifacts-destination``). One server per module; the slow part
(CLI processes) is kept to one lifecycle, the cross-tenant refusals use the client plugin
in-process.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.parse

import pytest
import requests
from mlflow.exceptions import MlflowException

from tests.fixtures.sagemaker import EXECUTION_ROLE_TEMPLATE, MODEL_CODE
from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

LOG_MODEL = """
import sys, mlflow
code, name = sys.argv[1], sys.argv[2]
mlflow.set_experiment(f"train-{name}")  # a tenant workspace has no Default experiment
with mlflow.start_run() as run:
    mlflow.pyfunc.log_model(name="model", python_model=code, registered_model_name=name,
                            pip_requirements=["mlflow"])
print(run.info.run_id)
"""


@pytest.fixture(scope="module")
def deploy_server(sagemaker_moto, tmp_path_factory):
    bucket = "mlt-e2e-artifacts"
    sagemaker_moto.client("s3").create_bucket(Bucket=bucket)
    env = {
        **sagemaker_moto.env(),
        "MLFLOW_TENANT_AWS_ENDPOINT_URL": sagemaker_moto.url,
        "MLFLOW_TENANT_DEPLOY_POLL_SECONDS": "0.2",
        "MLFLOW_TENANT_DEPLOY_TIMEOUT_SECONDS": "60",
        "MLFLOW_TENANT_DEPLOY_EXECUTION_ROLE_ARN": EXECUTION_ROLE_TEMPLATE,
    }
    server = start_mlflow_server(tmp_path_factory.mktemp("deploy-server"),
                                 artifacts_destination=f"tenant-s3://{bucket}/root",
                                 extra_env=env)
    server.bucket = bucket
    yield server
    stop_mlflow_server(server)


def _tenant(server, role: str = "deployer") -> tuple[str, str]:
    import secrets

    name = f"e{secrets.token_hex(4)}"
    server.registry.create_tenant(name)
    _info, key = server.registry.create_key(name, role)
    return name, key


def _run(server, key: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = server.client_env(key)
    out = subprocess.run([sys.executable, "-m", "mlflow", *args], env=env, capture_output=True,
                         text=True, timeout=240)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_lifecycle_with_the_mlflow_deployments_cli(deploy_server, sagemaker_moto, tmp_path):
    tenant, key = _tenant(deploy_server)
    code = tmp_path / "doubler.py"
    code.write_text(MODEL_CODE)
    script = tmp_path / "log_model.py"
    script.write_text(LOG_MODEL)
    logged = subprocess.run([sys.executable, str(script), str(code), "churn"],
                            env=deploy_server.client_env(key), capture_output=True, text=True,
                            timeout=240)
    assert logged.returncode == 0, logged.stderr
    run_id = logged.stdout.strip().splitlines()[-1]

    created = _run(deploy_server, key, "deployments", "create", "-t", "tenant-sagemaker",
                   "--name", "churn", "-m", "models:/churn/1", "-C", "max_instances=2")
    assert "create 'churn': Creating" in created.stderr and "InService" in created.stderr
    assert "python_function deployment churn is created" in created.stdout

    got = _run(deploy_server, key, "deployments", "get", "-t", "tenant-sagemaker",
               "--name", "churn").stdout
    assert "status: InService" in got and f"run_id: {run_id}" in got and "alarms:" in got
    package = next(line for line in got.splitlines() if line.startswith("package: "))
    assert package.startswith(  # the platform's prefix, which no tenant's artifacts reach
        f"package: s3://{deploy_server.bucket}/root/platform/deployments/{tenant}/churn/")
    # The server downloaded the tenant's own model into its scratch space and packaged it.
    key_of_package = package.removeprefix(f"package: s3://{deploy_server.bucket}/")
    tarball = sagemaker_moto.client("s3").get_object(Bucket=deploy_server.bucket,
                                                     Key=key_of_package)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        files = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        assert "MLmodel" in files, sorted(files)
        assert tar.extractfile(files["doubler.py"]).read().decode() == MODEL_CODE
    assert "'churn'" in _run(deploy_server, key, "deployments", "list", "-t",
                             "tenant-sagemaker").stdout

    requests.post(f"{sagemaker_moto.url}/moto-api/static/sagemaker/endpoint-results",
                  json={"results": [{"Body": '{"predictions": [{"x": 4.0}]}'}]},
                  timeout=10).raise_for_status()
    inputs = tmp_path / "input.json"
    inputs.write_text(json.dumps({"x": {"0": 2.0}}))
    predicted = _run(deploy_server, key, "deployments", "predict", "-t", "tenant-sagemaker",
                     "--name", "churn", "--input-path", str(inputs))
    assert '"x": 4.0' in predicted.stdout

    updated = _run(deploy_server, key, "deployments", "update", "-t", "tenant-sagemaker",
                   "--name", "churn", "-m", "models:/churn/1", "-C", "strategy=blue-green",
                   "-C", "wait_seconds=0")
    assert "Deployment churn is updated" in updated.stdout

    bad = _run(deploy_server, key, "deployments", "create", "-t", "tenant-sagemaker",
               "--name", "other", "-m", "models:/churn/1", "-C", "instance_typ=ml.m5.large",
               check=False)
    assert bad.returncode != 0 and "valid keys" in bad.stderr

    _run(deploy_server, key, "deployments", "delete", "-t", "tenant-sagemaker",
         "--name", "churn")
    assert all(u.used == 0 for u in deploy_server.registry.ledger.for_tenant(tenant)
               if u.resource != "storage_bytes")
    s3 = sagemaker_moto.client("s3")
    left = s3.list_objects_v2(Bucket=deploy_server.bucket,
                              Prefix=f"root/platform/deployments/{tenant}/").get("Contents")
    assert not left


def test_another_tenant_cannot_see_or_touch_the_deployment(deploy_server, monkeypatch,
                                                           tmp_path):
    from mlflow.deployments import get_deploy_client

    owner, owner_key = _tenant(deploy_server)
    _intruder, intruder_key = _tenant(deploy_server)
    code = tmp_path / "doubler.py"
    code.write_text(MODEL_CODE)
    script = tmp_path / "log_model.py"
    script.write_text(LOG_MODEL)
    logged = subprocess.run([sys.executable, str(script), str(code), "secret"], text=True,
                            env=deploy_server.client_env(owner_key), capture_output=True,
                            timeout=240)
    assert logged.returncode == 0, logged.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_URI", deploy_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", owner_key)
    client = get_deploy_client("tenant-sagemaker")
    client.create_deployment("secret", "models:/secret/1")

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", intruder_key)
    client = get_deploy_client("tenant-sagemaker")
    assert client.list_deployments() == []
    for call in (lambda: client.get_deployment("secret"),
                 lambda: client.update_deployment("secret", config={"alarm_5xx_errors": "2"}),
                 lambda: client.delete_deployment("secret"),
                 lambda: client.predict("secret", {"x": [1]})):
        with pytest.raises(MlflowException) as exc:
            call()
        assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # Naming the owner's tenant, or deploying the owner's model, is refused too.
    with pytest.raises(MlflowException) as exc:
        client.create_deployment("steal", "models:/secret/1", config={"tenant": owner})
    assert exc.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(MlflowException) as exc:
        client.create_deployment("steal", "models:/secret/1")
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", owner_key)
    client = get_deploy_client("tenant-sagemaker")
    assert client.get_deployment("secret")["status"] == "InService"
    client.delete_deployment("secret")
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == owner_key


def _log_model(server, key: str, name: str, tmp_path) -> None:
    code = tmp_path / "doubler.py"
    code.write_text(MODEL_CODE)
    script = tmp_path / "log_model.py"
    script.write_text(LOG_MODEL)
    logged = subprocess.run([sys.executable, str(script), str(code), name], text=True,
                            env=server.client_env(key), capture_output=True, timeout=240)
    assert logged.returncode == 0, logged.stderr


def test_a_model_uri_with_dot_segments_is_a_400_not_a_500(deploy_server):
    tenant, key = _tenant(deploy_server)
    session = deploy_server.session(key, tenant)
    for uri in ("models:/m-0123456789abcdef/../../x", "models:/churn/1/../../../x",
                "runs:/0123456789abcdef/../../../../x", "models:///churn/1",
                "models:/churn/1/%2e%2e/x", "models:/churn/\x1b[2J/1"):
        response = session.post(f"{deploy_server.url}/api/2.0/tenants/deployments/create",
                                json={"name": "dots", "model_uri": uri}, timeout=60)
        assert response.status_code == 400, (uri, response.status_code, response.text)
        body = response.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE", body
        assert "model URI" in body["message"], body


def test_a_tenant_admin_forging_deployment_records_through_the_artifact_proxy_changes_nothing(
    deploy_server, sagemaker_moto, monkeypatch, tmp_path
):
    """Issue 13 finding 2, replayed: records used to be status.json files in the tenant's
    artifact prefix. A tenant admin writes forged ones there (a big reservation to give back,
    an operation 'in flight' until the year 2100) and tries the platform's package prefix;
    the ledger, list, get, delete and the reconcile are unmoved. Everything the tenant does,
    its deployment included, goes through the real server; the reconcile is the admin's."""
    import boto3
    from mlflow.deployments import get_deploy_client

    from mlflow_tenant_plugins.config import Settings
    from mlflow_tenant_plugins.deployments.aws import AwsClients
    from mlflow_tenant_plugins.deployments.model_source import ModelResolver
    from mlflow_tenant_plugins.deployments.reconcile import reconcile
    from mlflow_tenant_plugins.deployments.service import DeploymentService
    from mlflow_tenant_plugins.tenancy import Quotas

    tenant = f"f{os.urandom(4).hex()}"
    registry = deploy_server.registry
    registry.create_tenant(tenant, quotas=Quotas(endpoints=2, instances=2))
    _info, key = registry.create_key(tenant, "admin")
    settings = Settings(
        database_uri=deploy_server.db_uri, aws_endpoint_url=sagemaker_moto.url,
        deploy_package_root=f"s3://{deploy_server.bucket}/root/platform/deployments/{{tenant}}",
        deploy_execution_role_arn=EXECUTION_ROLE_TEMPLATE, deploy_poll_seconds=0.05)
    aws = AwsClients(settings, session=boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"))
    service = DeploymentService(registry, settings, aws=aws,
                                resolver=ModelResolver(allow_any_uri=True))
    _log_model(deploy_server, key, "churn", tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", deploy_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    client = get_deploy_client("tenant-sagemaker")
    client.create_deployment("churn", "models:/churn/1")

    def used() -> dict[str, int]:
        return {r: registry.ledger.get(tenant, r).used for r in ("endpoints", "instances")}

    assert used() == {"endpoints": 1, "instances": 1}
    session = deploy_server.session(key, tenant)
    artifacts = f"{deploy_server.url}/api/2.0/mlflow-artifacts/artifacts"
    forged = {
        "ghost": {"name": "ghost", "tenant": tenant, "operation": "create", "status": "Failed",
                  "failure_reason": "\x1b]0;pwned\x07", "reserved": {"endpoints": 5,
                                                                   "instances": 9}},
        "churn": {"name": "churn", "tenant": tenant, "operation": "update",
                  "status": "Updating", "updated_at": 4102444800.0,
                  "reserved": {"endpoints": 1, "instances": 1}},
    }
    for name, record in forged.items():
        put = session.put(f"{artifacts}/deployments/{name}/status.json",
                          data=json.dumps(record), timeout=60)
        assert put.status_code == 200, put.text  # the tenant may write its own prefix...
    # ...but not the platform's packages, by any spelling of the path.
    s3 = sagemaker_moto.client("s3")
    package_prefix = f"root/platform/deployments/{tenant}/"
    before = [o["Key"] for o in s3.list_objects_v2(Bucket=deploy_server.bucket,
                                                   Prefix=package_prefix).get("Contents", [])]
    assert before, "the deployment's package is under the platform's prefix"
    host = urllib.parse.urlsplit(deploy_server.url).netloc
    for path in (f"../../platform/deployments/{tenant}/churn/x/model.tar.gz",
                 f"workspaces/{tenant}/../../platform/deployments/{tenant}/churn/model.tar.gz",
                 f"%2e%2e/%2e%2e/platform/deployments/{tenant}/x",
                 f"..%2f..%2fplatform/deployments/{tenant}/x"):
        conn = http.client.HTTPConnection(host, timeout=60)  # sent as written, not normalised
        conn.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", body=b"evil",
                     headers={"Authorization": f"Bearer {key}", "X-MLFLOW-WORKSPACE": tenant})
        status = conn.getresponse().status
        conn.close()
        assert status in (400, 403, 404), (path, status)
    after = [o["Key"] for o in s3.list_objects_v2(Bucket=deploy_server.bucket,
                                                  Prefix=package_prefix).get("Contents", [])]
    assert after == before

    assert [d["name"] for d in client.list_deployments()] == ["churn"]
    assert client.get_deployment("churn")["status"] == "InService"
    for call in (lambda: client.get_deployment("ghost"), lambda: client.delete_deployment("ghost")):
        with pytest.raises(MlflowException) as exc:
            call()
        assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert used() == {"endpoints": 1, "instances": 1}

    [report] = reconcile(service, [tenant])
    assert report.status == "ok" and report.sagemaker == {"endpoints": 1, "instances": 1}

    client.delete_deployment("churn")
    assert used() == {"endpoints": 0, "instances": 0}


def test_updating_a_busy_deployment_with_the_cli_fails_at_once_naming_what_is_in_flight(
    deploy_server, monkeypatch, tmp_path
):
    """An operation in flight on the deployment is a 409 RESOURCE_CONFLICT on the wire (it was
    INVALID_STATE, which MLflow answers 500: the stock client retries that for minutes, and
    operators' 5xx alarms fire), and ``mlflow deployments update`` says what is in flight."""
    import time

    from mlflow.deployments import get_deploy_client
    from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES

    from mlflow_tenant_plugins.tenancy.deployment_records import DeploymentRecords

    tenant, key = _tenant(deploy_server)
    _log_model(deploy_server, key, "churn", tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", deploy_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    client = get_deploy_client("tenant-sagemaker")
    client.create_deployment("churn", "models:/churn/1")
    records = DeploymentRecords(deploy_server.registry.engine)
    records.put(tenant, "churn", {"name": "churn", "tenant": tenant, "operation": "update",
                                  "status": "Updating", "updated_at": time.time()})

    session = deploy_server.session(key, tenant)
    for path, body in (("update", {"name": "churn", "config": {"alarm_5xx_errors": "2"}}),
                       ("delete", {"name": "churn"})):
        response = session.post(f"{deploy_server.url}/api/2.0/tenants/deployments/{path}",
                                json=body, timeout=60)
        assert response.status_code == 409, (path, response.status_code, response.text)
        assert response.status_code not in _TRANSIENT_FAILURE_RESPONSE_CODES
        assert response.json()["error_code"] == "RESOURCE_CONFLICT"

    started = time.monotonic()
    out = _run(deploy_server, key, "deployments", "update", "-t", "tenant-sagemaker",
               "--name", "churn", "-C", "alarm_5xx_errors=2", check=False)
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    assert "busy: update in progress (status Updating)" in out.stderr, out.stderr
    assert "retry when it has finished" in out.stderr and "Traceback" not in out.stderr
    assert elapsed < 60, elapsed  # one answer, no retries (a CLI start takes a few seconds)

    records.delete(tenant, "churn")
    client.delete_deployment("churn")

"""The tenant-sagemaker client plugin: loaded by MLflow's plugin manager, talking to the
deployment routes over HTTP with MLflow's REST helpers. The routes are mounted with
``routes.register`` on a small Flask app, with a platform of its own whose deployment service
is the test's, and a test hook standing in for tenant-auth's engine
(identity from ``Bearer <tenant>:<role>``); the service behind them runs against moto."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from flask import Flask, request
from mlflow.exceptions import MlflowException
from werkzeug.serving import make_server

from tests.fixtures.process import free_port


@pytest.fixture(scope="module")
def routes_url(deploy_env):
    from mlflow_tenant_plugins.auth.identity import set_identity
    from mlflow_tenant_plugins.deployments import routes
    from mlflow_tenant_plugins.platform import Platform
    from mlflow_tenant_plugins.tenancy import Role
    from mlflow_tenant_plugins.tenancy.entities import Identity

    app = Flask("deploy-routes-test")

    @app.before_request
    def identify():
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return {"error_code": "UNAUTHENTICATED", "message": "no credentials"}, 401
        tenant, role = auth.removeprefix("Bearer ").split(":")
        set_identity(Identity(f"{tenant}-user", tenant, Role(role), False, "test"))

    service = deploy_env.service()
    routes.register(app, Platform(deploy_env.settings, deploy_env.registry,
                                  deployments=lambda: service))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    service.shutdown()


@pytest.fixture
def as_tenant(routes_url, monkeypatch):
    def use(tenant: str, role: str = "deployer"):
        from mlflow.deployments import get_deploy_client

        monkeypatch.setenv("MLFLOW_TRACKING_URI", routes_url)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", f"{tenant}:{role}")
        monkeypatch.delenv("MLFLOW_WORKSPACE", raising=False)
        return get_deploy_client("tenant-sagemaker")

    return use


def test_plugin_loads_through_mlflows_plugin_manager_with_exactly_one_client_class():
    from mlflow.deployments import BaseDeploymentClient, get_deploy_client
    from mlflow.deployments.interface import plugin_store

    plugin = plugin_store["tenant-sagemaker"]
    classes = [obj for _, obj in inspect.getmembers(plugin)
               if inspect.isclass(obj) and issubclass(obj, BaseDeploymentClient)
               and obj is not BaseDeploymentClient]
    assert [c.__name__ for c in classes] == ["TenantSageMakerDeploymentClient"]
    assert callable(plugin.run_local) and "max_instances" in plugin.target_help()
    client = get_deploy_client("tenant-sagemaker:/eu-west-1/acme")
    assert client.direct and client.region == "eu-west-1" and client.uri_tenant == "acme"
    with pytest.raises(MlflowException, match="explain is not supported"):
        client.explain("x", None)


def test_importing_the_client_plugin_pulls_in_nothing_server_side():
    code = (
        "import sys, mlflow\n"
        "before = set(sys.modules)\n"
        "import mlflow_tenant_plugins.deployments\n"
        "from mlflow.deployments import get_deploy_client\n"
        "get_deploy_client('tenant-sagemaker')\n"
        "new = set(sys.modules) - before\n"
        # tenancy's text rules are plain values (stdlib only), shown by the client too.
        "new -= {'mlflow_tenant_plugins.tenancy', 'mlflow_tenant_plugins.tenancy.text'}\n"
        "bad = sorted(m for m in new if m.startswith(('flask', 'sqlalchemy', 'mlflow.server',"
        " 'boto3', 'mlflow_tenant_plugins.tenancy', 'mlflow_tenant_plugins.auth',"
        " 'mlflow_tenant_plugins.deployments.service', 'mlflow_tenant_plugins.deployments.routes'"
        ")))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_bad_config_is_refused_by_the_client_before_any_request(as_tenant, deploy_env):
    client = as_tenant("nosuchtenant")
    with pytest.raises(MlflowException) as exc:
        client.create_deployment("x", "models:/m/1", config={"instance_cnt": "1"})
    assert "valid keys:" in exc.value.message and "instance_count" in exc.value.message


def test_full_lifecycle_through_the_routes(as_tenant, deploy_env, pyfunc_model, capfd):
    tenant = deploy_env.tenant(instances_per_endpoint=2)
    client = as_tenant(tenant)
    created = client.create_deployment("web", pyfunc_model, config={"max_instances": "2"})
    assert created["status"] == "InService" and created["name"] == "web"
    err = capfd.readouterr().err
    assert "create 'web': Creating (0s)" in err and "InService" in err

    assert [d["name"] for d in client.list_deployments()] == ["web"]
    got = client.get_deployment("web")
    assert got["scaling"]["max_instances"] == 2 and len(got["alarms"]) == 5

    requests.post(f"{deploy_env.moto.url}/moto-api/static/sagemaker/endpoint-results",
                  json={"results": [{"Body": '{"predictions": [[2.0]]}'}]},
                  timeout=10).raise_for_status()
    import pandas as pd

    prediction = client.predict("web", pd.DataFrame({"x": [1.0]}))
    assert prediction["predictions"] == [[2.0]]

    updated = client.update_deployment("web", config={"alarm_4xx_errors": "9"})
    assert updated["status"] == "InService" and updated["flavor"] == "python_function"
    assert "update 'web': Updating" in capfd.readouterr().err
    client.delete_deployment("web")
    assert client.list_deployments() == []
    assert deploy_env.leftovers(tenant) == {}


def test_asynchronous_create_returns_at_once_with_creating(as_tenant, deploy_env, pyfunc_model):
    client = as_tenant(deploy_env.tenant())
    out = client.create_deployment("bg", pyfunc_model, config={"synchronous": "false"})
    assert out["status"] == "Creating"
    deadline = time.monotonic() + 30
    while client.get_deployment("bg")["status"] != "InService":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_failed_deploy_raises_with_sagemakers_reason(as_tenant, deploy_env, pyfunc_model):
    tenant = deploy_env.tenant()
    client = as_tenant(tenant)
    env = json.dumps({"MLT_MOTO_FAIL_REASON": "The primary container did not pass ping"})
    with pytest.raises(MlflowException, match="did not pass ping"):
        client.create_deployment("bad", pyfunc_model, config={"env": env})
    assert client.get_deployment("bad")["status"] == "Failed"
    assert deploy_env.leftovers(tenant) == {}


def test_roles_and_quotas_come_back_as_403_and_409(as_tenant, deploy_env, pyfunc_model):
    tenant = deploy_env.tenant(endpoints=0)
    with pytest.raises(MlflowException) as exc:
        as_tenant(tenant, "editor").create_deployment("x", pyfunc_model)
    assert exc.value.error_code == "PERMISSION_DENIED" and "deployer" in exc.value.message
    assert as_tenant(tenant, "viewer").list_deployments() == []
    with pytest.raises(MlflowException) as exc:
        as_tenant(tenant).create_deployment("x", pyfunc_model)
    assert exc.value.error_code == "RESOURCE_EXHAUSTED" and "endpoints limit is 0" in (
        exc.value.message)
    # a tenant named in the workspace header that the caller does not belong to: 403
    with pytest.raises(MlflowException) as exc:
        as_tenant(tenant)._call("GET", "/list", "someone-else")
    assert exc.value.error_code == "PERMISSION_DENIED"


def test_run_local_serves_predictions_and_stops_on_ctrl_c(pyfunc_model, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "deployments", "run-local", "-t", "tenant-sagemaker",
         "--name", "local", "-m", pyfunc_model, "-C", f"port={port}", "-C", "max_seconds=120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        r = requests.post(f"http://127.0.0.1:{port}/invocations",
                          json={"dataframe_split": {"columns": ["x"], "data": [[1.5]]}},
                          timeout=30)
        assert r.json()["predictions"] == [{"x": 3.0}]
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert f"http://127.0.0.1:{port}/invocations" in out and "Stopping." in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=2)


def test_direct_mode_deploys_with_the_admins_own_credentials(deploy_env, pyfunc_model,
                                                             monkeypatch):
    from mlflow.deployments import get_deploy_client

    tenant = deploy_env.tenant()
    settings = deploy_env.settings
    for key, value in {
        "MLFLOW_TENANT_DATABASE_URI": settings.database_uri,
        "MLFLOW_TENANT_AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "MLFLOW_TENANT_DEPLOY_PACKAGE_ROOT": settings.deploy_package_root,
        "MLFLOW_TENANT_DEPLOY_EXECUTION_ROLE_ARN": settings.deploy_execution_role_arn,
        "MLFLOW_TENANT_DEPLOY_POLL_SECONDS": "0.05",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TENANT_CONFIG", raising=False)
    client = get_deploy_client("tenant-sagemaker:/us-east-1")
    with pytest.raises(MlflowException, match="direct mode needs the tenant"):
        client.create_deployment("direct", pyfunc_model)
    out = client.create_deployment("direct", pyfunc_model, config={"tenant": tenant})
    assert out["status"] == "InService" and out["tags"]["mlt:tenant"] == tenant
    client = get_deploy_client(f"tenant-sagemaker:/us-east-1/{tenant}")
    assert [d["name"] for d in client.list_deployments()] == ["direct"]
    client.delete_deployment("direct")
    assert deploy_env.leftovers(tenant) == {}


def _cli(routes_url: str, tenant: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=routes_url, MLFLOW_TRACKING_TOKEN=f"{tenant}:deployer")
    return subprocess.run([sys.executable, "-m", "mlflow", "deployments", *args, "-t",
                           "tenant-sagemaker"], env=env, capture_output=True, text=True,
                          timeout=120)


def _cli_in_process(*args: str):
    from click.testing import CliRunner
    from mlflow.deployments.cli import commands

    return CliRunner().invoke(commands, [*args, "-t", "tenant-sagemaker"])


def test_tenant_text_is_escaped_and_a_non_json_answer_is_a_clean_error_in_the_cli(
    routes_url, as_tenant, deploy_env, pyfunc_model, tmp_path
):
    """Issue 13 finding 4 (deploy client) and issue 14 item 4: a failure reason carrying
    terminal escapes (window title, clear screen, CR, bidi override) is printed escaped by
    `mlflow deployments get/list`; an endpoint answering something that is not JSON ends in
    one `Error:` line showing what came back, not a traceback."""
    tenant = deploy_env.tenant()
    client = as_tenant(tenant)
    hostile = "\x1b]0;pwned\x07\x1b[2J\rok\u202etxt.exe"
    env = json.dumps({"MLT_MOTO_FAIL_REASON": hostile})
    with pytest.raises(MlflowException) as exc:
        client.create_deployment("bad", pyfunc_model, config={"env": env})
    assert "\x1b" not in exc.value.message and "\\x1b]0;pwned\\x07" in exc.value.message
    assert "\x1b" not in json.dumps(client.get_deployment("bad"), ensure_ascii=False)

    got = _cli_in_process("get", "--name", "bad")  # MLflow's own CLI code, in this process
    assert got.exit_code == 0, got.output
    for raw in ("\x1b", "\x07", "\r", "\u202e"):
        assert raw not in got.stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x0dok\\u202etxt.exe" in got.stdout

    client.create_deployment("web", pyfunc_model)
    requests.post(f"{deploy_env.moto.url}/moto-api/static/sagemaker/endpoint-results",
                  json={"results": [{"Body": "<html>\x1b[31mBad Gateway</html>" + "x" * 500}]},
                  timeout=10).raise_for_status()
    inputs = tmp_path / "input.json"
    inputs.write_text(json.dumps({"inputs": [[1.0]]}))
    predicted = _cli(routes_url, tenant, "predict", "--name", "web", "--input-path",
                     str(inputs))
    assert predicted.returncode == 1 and "Traceback" not in predicted.stderr, predicted.stderr
    assert "Error: deployment 'web' answered with something that is not JSON" in (
        predicted.stderr)
    assert "<html>\\x1b[31mBad Gateway</html>xxx" in predicted.stderr
    assert "\x1b" not in predicted.stderr and "x" * 300 not in predicted.stderr  # truncated
    refused = _cli_in_process("create", "--name", "x", "-m", "models:/m-1/../../x")
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit), refused.output
    assert "Error: invalid model URI 'models:/m-1/../../x'" in refused.output
    client.delete_deployment("web")
    client.delete_deployment("bad")
    assert deploy_env.leftovers(tenant) == {}

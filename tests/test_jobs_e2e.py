"""End to end: ``mlflow run -b tenant-sagemaker`` (the stock CLI, a subprocess) against a real
tenant-auth server whose jobs run on the ``local`` engine. One server per module; each test
makes its own tenants."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.tenancy import Quotas
from tests.fixtures.jobs import local_jobs_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "project"
JOBS = "/api/2.0/tenants/jobs"
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with local_jobs_server(tmp_path_factory.mktemp("jobs-server")) as srv:
        _key, srv.admin_key = srv.registry.create_key(None, "admin", admin_label="jobs")
        yield srv


def _tenant(server, role: str = "editor", **quotas) -> tuple[str, str]:
    name = f"j{secrets.token_hex(4)}"
    server.registry.create_tenant(name, quotas=Quotas(**quotas))
    _info, key = server.registry.create_key(name, role)
    return name, key


def _mlflow_run(server, key: str, project: Path, *args: str, backend_config: dict | None = None,
                timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    config = json.dumps({"max_runtime_seconds": 600, **(backend_config or {})})
    return subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(project), "-b", "tenant-sagemaker",
         "--backend-config", config, "--env-manager", "local", *args],
        env=server.client_env(key), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _restore_token():
    """``_client`` sets the process's MLFLOW_TRACKING_TOKEN; put it back after each test so
    no later test's client sends this module's keys."""
    saved = os.environ.get("MLFLOW_TRACKING_TOKEN")
    yield
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    else:
        os.environ["MLFLOW_TRACKING_TOKEN"] = saved


def _client(server, key: str) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_TOKEN"] = key
    return MlflowClient(server.url)


def _usage(server, tenant: str) -> dict[str, int]:
    return {u.resource: u.used for u in server.registry.ledger.for_tenant(tenant)}


def _wait(predicate, timeout: float = 120.0, what: str = "condition"):
    return wait_for(predicate, timeout, what)


def _project(tmp_path: Path, body: str, *, validation: dict | None = None,
             files: dict[str, str] | None = None) -> Path:
    project = tmp_path / f"p{secrets.token_hex(3)}"
    project.mkdir()
    (project / "MLproject").write_text(textwrap.dedent("""\
        name: tiny
        entry_points:
          main:
            parameters:
              alpha: {type: float, default: 0.5}
            command: "python train.py {alpha}"
        """))
    (project / "train.py").write_text(textwrap.dedent(body))
    for name, text in (files or {}).items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    if validation:
        (project / "validation.json").write_text(json.dumps(validation))
    return project


TINY = """\
    import sys, mlflow
    with mlflow.start_run():
        mlflow.log_metric("alpha_seen", float(sys.argv[1]))
        print("trained with alpha", sys.argv[1])
"""


def _runs(server, key: str) -> list:
    client = _client(server, key)
    return [r for e in client.search_experiments() for r in
            client.search_runs([e.experiment_id])]


def test_mlflow_run_runs_the_example_project_on_the_platform_and_the_run_finishes_there(
        server, tmp_path):
    tenant, key = _tenant(server)
    _other, other_key = _tenant(server)
    done = _mlflow_run(server, key, EXAMPLE, "-P", "alpha=0.3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run] = _runs(server, key)
    assert run.info.status == "FINISHED"
    assert run.data.params["alpha"] == "0.3"
    assert run.data.metrics  # the project's own metrics, logged from inside the job
    assert run.data.tags[spec.EXECUTOR_TAG] == "local"
    job_id = run.data.tags[spec.JOB_TAG]
    artifacts = {a.path for a in _client(server, key).list_artifacts(run.info.run_id)}
    assert spec.PACKAGE_ARTIFACT_DIR in artifacts and len(artifacts) > 1  # + the model
    # Progress and the job's log came through the platform.
    assert f"job {job_id}" in done.stderr
    # Everything it held is given back; its key is revoked.
    assert _usage(server, tenant)["jobs"] == 0
    assert _usage(server, tenant)["training_instances"] == 0
    job_keys = [k for k in server.registry.list_keys(tenant) if k.description.startswith("job ")]
    assert job_keys and all(k.revoked_at is not None for k in job_keys)
    # The other tenant sees neither the run nor the job.
    assert _runs(server, other_key) == []
    s = server.session(other_key)
    assert s.get(f"{server.url}{JOBS}/list").json()["jobs"] == []
    assert s.get(f"{server.url}{JOBS}/get", params={"job_id": job_id}).status_code == 404
    assert s.get(f"{server.url}{JOBS}/logs", params={"job_id": job_id}).status_code == 404
    assert s.post(f"{server.url}{JOBS}/stop", json={"job_id": job_id}).status_code == 404


def test_over_the_jobs_quota_mlflow_run_fails_at_once_naming_the_quota_and_leaves_no_run(
        server, tmp_path):
    _tenant_name, key = _tenant(server, jobs=0)
    started = time.monotonic()
    done = _mlflow_run(server, key, _project(tmp_path, TINY))
    assert done.returncode != 0
    assert time.monotonic() - started < 60
    assert "quota" in done.stderr and "jobs" in done.stderr, done.stderr[-2000:]
    assert [r for r in _runs(server, key) if r.info.lifecycle_stage == "active"] == [], done.stderr


def test_an_instance_type_outside_the_tenants_list_is_refused_naming_the_allowed_ones(
        server, tmp_path):
    _t, key = _tenant(server, training_instance_types=("ml.m5.large",))
    done = _mlflow_run(server, key, _project(tmp_path, TINY),
                       backend_config={"instance_type": "ml.p4d.24xlarge"})
    assert done.returncode != 0 and "ml.m5.large" in done.stderr, done.stderr[-2000:]


RULES = """\
columns:
  x:
    dtype: float64
    greater_than_or_equal_to: 0
"""


def test_data_failing_the_projects_rules_fails_the_run_before_training(server, tmp_path):
    tenant, key = _tenant(server)
    project = _project(tmp_path, TINY, validation={"rules": "rules.yaml", "data": "d.csv"},
                       files={"rules.yaml": RULES, "d.csv": "x\n1.0\n-5.0\n"})
    done = _mlflow_run(server, key, project)
    assert done.returncode != 0
    [run] = _runs(server, key)
    assert run.info.status == "FAILED"
    assert "validation" in run.data.tags[spec.FAILURE_TAG]
    assert "alpha_seen" not in run.data.metrics  # training never ran
    assert _usage(server, tenant)["jobs"] == 0


def test_a_tenant_that_requires_validation_cannot_start_a_job_without_rules(server, tmp_path):
    tenant, key = _tenant(server)
    server.registry.update_tenant(tenant, require_validation=True)
    done = _mlflow_run(server, key, _project(tmp_path, TINY))
    assert done.returncode != 0 and "validat" in done.stderr, done.stderr[-2000:]
    assert _usage(server, tenant)["jobs"] == 0


SLEEPY = """\
    import time, mlflow
    with mlflow.start_run():
        print("sleeping", flush=True)
        time.sleep(600)
"""


def _submit_async(server, key: str, project: Path) -> dict:
    done = _mlflow_run(server, key, project, backend_config={"synchronous": False})
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = _runs(server, key)
    job_id = run.data.tags[spec.JOB_TAG]
    return {"run_id": run.info.run_id, "job_id": job_id}


def test_stopping_a_job_kills_it_marks_the_run_killed_and_gives_the_quota_back(
        server, tmp_path):
    tenant, key = _tenant(server)
    ids = _submit_async(server, key, _project(tmp_path, SLEEPY))
    s = server.session(key)
    _wait(lambda: "sleeping" in s.get(f"{server.url}{JOBS}/logs",
                                      params={"job_id": ids["job_id"]}).json()["lines"],
          what="the job's first log line")
    assert _usage(server, tenant)["jobs"] == 1
    stopped = s.post(f"{server.url}{JOBS}/stop", json={"job_id": ids["job_id"]})
    assert stopped.status_code == 200, stopped.text
    job = _wait(lambda: (j := s.get(f"{server.url}{JOBS}/get",
                                    params={"job_id": ids["job_id"]}).json()["job"])
                ["status"] in spec.ENDED and j, what="the job to end")
    assert job["status"] == "KILLED"
    assert _usage(server, tenant)["jobs"] == 0
    run = _client(server, key).get_run(ids["run_id"])
    assert run.info.status == "KILLED"


def test_ctrl_c_on_mlflow_run_stops_the_job(server, tmp_path):
    tenant, key = _tenant(server)
    project = _project(tmp_path, SLEEPY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "run", str(project), "-b", "tenant-sagemaker",
         "--backend-config", json.dumps({"max_runtime_seconds": 600, "poll_seconds": 0.5}),
         "--env-manager", "local"],
        env=server.client_env(key), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _usage(server, tenant)["jobs"] == 1 and any(
            j["status"] == "RUNNING" for j in server.session(key).get(
                f"{server.url}{JOBS}/list").json()["jobs"]), timeout=120, what="a running job")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    _wait(lambda: _usage(server, tenant)["jobs"] == 0, what="the quota to come back")
    [job] = server.session(key).get(f"{server.url}{JOBS}/list").json()["jobs"]
    assert job["status"] == "KILLED"


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("MLproject", "name: x\nentry_points:\n  main:\n    command: "
                            "\"python -c 'import time; time.sleep(600)'\"\n"),):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_twenty_concurrent_submissions_at_the_boundary_never_exceed_the_jobs_quota(
        server, tmp_path):
    tenant, key = _tenant(server, jobs=3, training_instances=10)
    client = _client(server, key)
    exp = client.create_experiment("burst")
    archive = tmp_path / spec.PACKAGE_FILE
    archive.write_bytes(_archive())
    runs = []
    for _ in range(20):
        run = client.create_run(exp)
        client.log_artifact(run.info.run_id, str(archive), spec.PACKAGE_ARTIFACT_DIR)
        runs.append(run.info.run_id)
    answers: list[int] = []
    barrier = threading.Barrier(20)

    def submit(run_id: str) -> None:
        barrier.wait()
        r = requests.post(f"{server.url}{JOBS}/submit", timeout=120,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"run_id": run_id, "config": {"max_runtime_seconds": 600}})
        answers.append(r.status_code)
        if r.status_code == 409:
            assert r.json()["error_code"] == "RESOURCE_EXHAUSTED"

    threads = [threading.Thread(target=submit, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(answers).count(200) == 3 and sorted(answers).count(409) == 17, answers
    assert _usage(server, tenant)["jobs"] == 3
    s = server.session(key)
    for job in s.get(f"{server.url}{JOBS}/list", params={"status": "active"}).json()["jobs"]:
        assert s.post(f"{server.url}{JOBS}/stop", json={"job_id": job["job_id"]}).ok
    _wait(lambda: _usage(server, tenant)["jobs"] == 0, what="every job to stop")


def test_jobs_cannot_be_attached_to_another_tenants_run_or_submitted_by_a_viewer(
        server, tmp_path):
    _a, a_key = _tenant(server)
    _b, b_key = _tenant(server)
    _v, viewer_key = _tenant(server, role="viewer")
    client = _client(server, a_key)
    run = client.create_run(client.create_experiment("mine"))
    body = {"run_id": run.info.run_id}
    r = requests.post(f"{server.url}{JOBS}/submit", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {b_key}"})
    assert r.status_code == 404 and "not found" in r.json()["message"]
    r = requests.post(f"{server.url}{JOBS}/submit", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {viewer_key}"})
    assert r.status_code == 403
    # A run without an uploaded project is refused before any quota is taken.
    r = requests.post(f"{server.url}{JOBS}/submit", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {a_key}"})
    assert r.status_code == 400 and spec.PACKAGE_ARTIFACT_DIR in r.json()["message"]


def test_the_admin_cli_lists_a_tenants_jobs_and_stops_one(server, tmp_path):
    tenant, key = _tenant(server)
    ids = _submit_async(server, key, _project(tmp_path, SLEEPY))
    env = {**server.client_env(), "MLFLOW_TENANT_DATABASE_URI": server.db_uri,
           "MLFLOW_TENANT_JOBS_EXECUTOR": "local",
           "MLFLOW_TENANT_JOBS_LOCAL_DIR": str(server.jobs_root)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlflow_tenant_plugins.cli", *args],
                              env=env, capture_output=True, text=True, timeout=120)

    listed = cli("job", "list", "--tenant", tenant, "--active", "--json")
    assert listed.returncode == 0, listed.stderr
    [job] = json.loads(listed.stdout)["jobs"]
    assert (job["job_id"], job["run_id"]) == (ids["job_id"], ids["run_id"])
    other, _ = _tenant(server)
    refused = cli("job", "stop", other, ids["job_id"])
    assert refused.returncode == 2 and "not found" in refused.stderr
    stopped = cli("job", "stop", tenant, ids["job_id"])
    assert stopped.returncode == 0, stopped.stderr
    _wait(lambda: _usage(server, tenant)["jobs"] == 0, what="the server to end the job")
    assert _client(server, key).get_run(ids["run_id"]).info.status == "KILLED"

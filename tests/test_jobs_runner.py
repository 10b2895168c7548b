"""The job runner (``python -m mlflow_tenant_plugins.jobs.runner``) as an engine starts it: a
real subprocess with the job's environment, tracking into a real sqlite store. Data that
breaks the rules stops the job before training, with one line in the failure file; good data
runs the entry point into the run the platform created, which ends FINISHED."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_tenant_plugins.jobs import runner
from mlflow_tenant_plugins.jobs.package import package
from mlflow_tenant_plugins.jobs.spec import RunnerSpec, Validation
from mlflow_tenant_plugins.validation.tags import FAIL, PASS, STATUS_TAG

RUNNER_TIMEOUT = 180

MLPROJECT = """\
name: tiny
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
    command: "python train.py --alpha {alpha}"
"""
TRAIN = """\
import argparse
from pathlib import Path

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float)
args = parser.parse_args()
with mlflow.start_run():
    Path("trained.txt").write_text("yes")
    mlflow.log_metric("alpha_seen", args.alpha)
    if args.alpha < 0:
        raise SystemExit("alpha must not be negative")
"""
RULES = """\
columns:
  x: {dtype: int64, in_range: {min_value: 0, max_value: 10}}
checks:
  row_count: {min_value: 2}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(tracking URI, experiment id): one sqlite store for the module (made once: the
    migrations take seconds), artifacts in the same temporary directory."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment(
        "jobs", artifact_location=(root / "artifacts").as_uri())
    return uri, experiment


def make_project(root: Path, csv: str) -> Path:
    project = root / "project"
    (project / "data").mkdir(parents=True)
    (project / "MLproject").write_text(MLPROJECT)
    (project / "train.py").write_text(TRAIN)
    (project / "rules.yaml").write_text(RULES)
    (project / "data" / "train.csv").write_text(csv)
    return project


def run_job(tmp_path: Path, store: tuple[str, str], csv: str, *, alpha: str = "0.25",
            validation: bool = True, extra_env: dict[str, str] | None = None,
            ) -> tuple[int, str, str, Path]:
    """Run the runner like an engine; (exit code, run id, output, workdir)."""
    uri, experiment = store
    project = make_project(tmp_path, csv)
    package(project, tmp_path / "project.tar.gz")  # MLT_JOB_PACKAGE names its directory
    run = MlflowClient(uri).create_run(experiment)
    spec = RunnerSpec(run_id=run.info.run_id, parameters={"alpha": alpha},
                      validation=Validation("rules.yaml", "data/train.csv") if validation
                      else None)
    workdir = tmp_path / "work"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLT_JOB_SPEC": spec.to_json(),
           "MLT_JOB_PACKAGE": str(tmp_path), "MLT_JOB_WORKDIR": str(workdir),
           "MLT_JOB_FAILURE_FILE": str(tmp_path / "out" / "failure"),
           "PATH": "/usr/bin:/bin",  # the runner puts its own interpreter first
           **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow_tenant_plugins.jobs.runner"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=RUNNER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"runner still running after {RUNNER_TIMEOUT}s:\n{output}")
    return proc.returncode, run.info.run_id, output, workdir


def test_good_data_runs_the_entry_point_into_the_given_run_which_ends_finished(
        tmp_path: Path, store: tuple[str, str]) -> None:
    code, run_id, output, workdir = run_job(tmp_path, store, "x\n1\n2\n3\n")
    assert code == 0, output
    run = MlflowClient(store[0]).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["alpha_seen"] == 0.25
    assert run.data.tags[STATUS_TAG] == PASS
    assert (workdir / "trained.txt").read_text() == "yes"
    assert not (tmp_path / "out" / "failure").exists()
    assert "[runner] data validation passed" in output


def test_data_breaking_the_rules_fails_the_job_before_training(
        tmp_path: Path, store: tuple[str, str]) -> None:
    code, run_id, output, workdir = run_job(tmp_path, store, "x\n1\n99\n")
    assert code == 1, output
    failure = (tmp_path / "out" / "failure").read_text()
    assert failure.startswith("data validation failed: ") and "x" in failure
    assert failure.count("\n") == 1 and len(failure) < 1000
    assert not (workdir / "trained.txt").exists()
    run = MlflowClient(store[0]).get_run(run_id)
    assert run.data.tags[STATUS_TAG] == FAIL  # the verdict is on the run
    assert "alpha_seen" not in run.data.metrics
    assert run.info.status == "FAILED"


def test_a_failing_entry_point_fails_the_job_with_its_reason(
        tmp_path: Path, store: tuple[str, str]) -> None:
    code, run_id, output, _ = run_job(tmp_path, store, "x\n1\n2\n", alpha="-1",
                                      validation=False)
    assert code == 1, output
    failure = (tmp_path / "out" / "failure").read_text()
    assert failure.startswith("entry point 'main' failed: ")
    assert MlflowClient(store[0]).get_run(run_id).info.status == "FAILED"


def test_validation_paths_outside_the_project_are_refused(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    for value in ("../secret.csv", "/etc/passwd"):
        with pytest.raises(runner.JobFailure, match="outside the project"):
            runner.inside(workdir, value, "data")
    with pytest.raises(runner.JobFailure, match="file:// URIs are not allowed"):
        runner.validation_data(workdir, "file:///etc/passwd", tmp_path)
    assert runner.inside(workdir, "data/x.csv", "data") == (workdir / "data/x.csv").resolve()


def test_an_unsafe_package_fails_before_anything_runs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import tarfile

    archive = tmp_path / "pkg" / "project.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("../../escape.txt")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    monkeypatch.setenv("MLT_JOB_SPEC", RunnerSpec(run_id="r1").to_json())
    monkeypatch.setenv("MLT_JOB_PACKAGE", str(archive.parent))
    monkeypatch.setenv("MLT_JOB_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("MLT_JOB_FAILURE_FILE", str(tmp_path / "failure"))
    monkeypatch.setattr(runner, "mark_failed", lambda run_id: None)  # no tracking server here
    assert runner.main() == 1
    assert (tmp_path / "failure").read_text().startswith("project package refused: ")
    assert not (tmp_path / "escape.txt").exists()


def test_aws_iam_jobs_get_a_private_temporary_profile_for_the_client_plugin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLT_JOB_AUTH", "aws-iam")
    monkeypatch.setenv("MLT_JOB_TENANT", "acme")
    monkeypatch.setenv("MLT_JOB_SERVER_ID", "mlflow.example.com")
    monkeypatch.setenv("MLT_JOB_STS_ENDPOINT", "https://sts.eu-west-1.amazonaws.com")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("MLFLOW_TRACKING_AUTH", raising=False)
    with runner.job_identity():
        path = Path(os.environ["MLFLOW_TENANT_PROFILES"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert os.environ["MLFLOW_TRACKING_AUTH"] == "tenant"
        profile = tomllib.loads(path.read_text())[os.environ["MLFLOW_TENANT_PROFILE"]]
        assert profile == {"auth": "aws-iam", "tenant": "acme", "server_id": "mlflow.example.com",
                           "sts_endpoint": "https://sts.eu-west-1.amazonaws.com",
                           "aws_region": "eu-west-1"}
        from mlflow_tenant_plugins.client.profiles import resolve_credential

        credential = resolve_credential()
        assert (credential.kind, credential.tenant) == ("aws-iam", "acme")
    assert not path.exists() and "MLFLOW_TRACKING_AUTH" not in os.environ

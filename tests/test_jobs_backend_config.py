"""The ``tenant-sagemaker`` project backend's config (``jobs/backend.py``): its own keys
checked, MLflow's keys ignored, the environment manager from the config or ``--env-manager``,
the validation spec from the config or ``validation.json``; and a job the platform does not
take leaves no run behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import ExecutionException

from mlflow_tenant_plugins.jobs.backend import (
    KNOWN_KEYS,
    JobConfig,
    TenantSageMakerBackend,
    parse_backend_config,
)
from mlflow_tenant_plugins.jobs.spec import FAILURE_TAG, Validation

# What `mlflow run` adds to every backend config (mlflow.projects._run).
MLFLOW_ADDED = {"ENV_MANAGER": None, "SYNCHRONOUS": False, "DOCKER_ARGS": {},
                "STORAGE_DIR": None, "build_image": False, "docker_auth": None}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "MLproject").write_text(
        "name: p\nentry_points:\n  main:\n    parameters:\n      alpha: {type: float, "
        "default: 0.5}\n    command: python train.py --alpha {alpha}\n")
    (root / "train.py").write_text("print('train')\n")
    (root / "rules.yaml").write_text("columns:\n  x: {dtype: int64}\n")
    (root / "data" / "train.csv").write_text("x\n1\n")
    return root


def test_defaults_and_what_the_platform_receives(project: Path) -> None:
    config = parse_backend_config(dict(MLFLOW_ADDED), project)
    assert config == JobConfig(env_manager="local")
    assert config.synchronous is True and config.poll_seconds == 2.0
    assert config.server_config() == {"env_manager": "local"}
    full = parse_backend_config({**MLFLOW_ADDED, "instance_type": "ml.m5.large",
                                 "instance_count": 2, "max_runtime_seconds": 600,
                                 "synchronous": False, "poll_seconds": 0.5}, project)
    assert full.server_config() == {"env_manager": "local", "instance_type": "ml.m5.large",
                                    "instance_count": 2, "max_runtime_seconds": 600}
    assert (full.synchronous, full.poll_seconds) == (False, 0.5)


def test_an_unknown_key_is_refused_naming_the_known_ones(project: Path) -> None:
    with pytest.raises(ExecutionException) as caught:
        parse_backend_config({**MLFLOW_ADDED, "instance_typ": "ml.m5.large"}, project)
    message = caught.value.message
    assert "unknown key(s) 'instance_typ'" in message
    assert all(key in message for key in KNOWN_KEYS)


def test_mlflows_own_keys_are_ignored_whatever_their_values(project: Path) -> None:
    config = parse_backend_config({"SYNCHRONOUS": True, "DOCKER_ARGS": {"x": 1},
                                   "STORAGE_DIR": "/tmp", "_mlflow_local_backend_run_id": "r",
                                   "build_image": True, "docker_auth": {"u": "p"}}, project)
    assert config.synchronous is True  # ours, not MLflow's SYNCHRONOUS


@pytest.mark.parametrize(("given", "cli", "expected"), [
    ({}, None, "local"),                              # nothing said: the local environment
    ({}, "virtualenv", "virtualenv"),                 # mlflow run --env-manager virtualenv
    ({"env_manager": "uv"}, "virtualenv", "uv"),      # run.json wins over the flag
    ({"env_manager": "conda"}, None, "conda"),
])
def test_env_manager_from_the_config_else_the_cli_flag_else_local(
        project: Path, given: dict, cli: str | None, expected: str) -> None:
    config = parse_backend_config({**MLFLOW_ADDED, "ENV_MANAGER": cli, **given}, project)
    assert config.env_manager == expected
    assert config.server_config()["env_manager"] == expected


@pytest.mark.parametrize(("key", "value", "words"), [
    ("env_manager", "pipenv", "not one of local, virtualenv, conda, uv"),
    ("instance_count", 0, "positive whole number"),
    ("instance_count", True, "positive whole number"),
    ("max_runtime_seconds", "ten", "positive whole number"),
    ("instance_type", "", "instance type"),
    ("synchronous", "maybe", "true or false"),
    ("poll_seconds", 0, "number of seconds"),
    ("validation", {"rules": "rules.yaml"}, "'validation' must be an object"),
])
def test_bad_values_are_refused_by_name(project: Path, key: str, value: object,
                                        words: str) -> None:
    with pytest.raises(ExecutionException, match=words):
        parse_backend_config({key: value}, project)


def test_validation_json_beside_mlproject_is_used_when_the_config_has_none(
        project: Path) -> None:
    (project / "validation.json").write_text(
        json.dumps({"rules": "rules.yaml", "data": "data/train.csv"}))
    config = parse_backend_config({}, project)
    assert config.validation == Validation("rules.yaml", "data/train.csv")
    assert config.server_config()["validation"] == {"rules": "rules.yaml",
                                                    "data": "data/train.csv"}
    # the config's own spec wins, and an explicit null turns validation off
    (project / "other.csv").write_text("x\n2\n")
    assert parse_backend_config({"validation": {"rules": "rules.yaml", "data": "other.csv"}},
                                project).validation == Validation("rules.yaml", "other.csv")
    assert parse_backend_config({"validation": None}, project).validation is None


def test_without_validation_json_there_is_no_validation(project: Path) -> None:
    assert parse_backend_config({}, project).validation is None


def test_a_broken_validation_json_is_named(project: Path) -> None:
    (project / "validation.json").write_text("{rules: ")
    with pytest.raises(ExecutionException, match=r"validation\.json cannot be read as JSON"):
        parse_backend_config({}, project)


@pytest.mark.parametrize(("spec", "words"), [
    ({"rules": "missing.yaml", "data": "data/train.csv"}, "rules 'missing.yaml' not found"),
    ({"rules": "../rules.yaml", "data": "data/train.csv"}, "must be a path inside the project"),
    ({"rules": "rules.yaml", "data": "/etc/passwd"}, "must be a path inside the project"),
    ({"rules": "rules.yaml", "data": "file:///etc/passwd"}, "file:// URI names your machine"),
])
def test_validation_paths_must_be_in_the_project(project: Path, spec: dict,
                                                 words: str) -> None:
    with pytest.raises(ExecutionException, match=words):
        parse_backend_config({"validation": spec}, project)


def test_validation_data_may_be_a_uri(project: Path) -> None:
    spec = {"rules": "rules.yaml", "data": "s3://bucket/tenant/train.parquet"}
    assert parse_backend_config({"validation": spec}, project).validation.data == spec["data"]


def test_a_path_to_a_json_file_is_read(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"instance_count": 3}))
    assert parse_backend_config(str(path), project).instance_count == 3


def test_the_example_projects_config_and_validation_parse() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "project"
    config = parse_backend_config(json.loads((example / "run.json").read_text()), example)
    assert config.validation == Validation("rules.yaml", "data/train.csv")
    from mlflow_tenant_plugins.validation import load_rules

    load_rules(example / "rules.yaml")


def test_a_job_that_cannot_be_submitted_ends_its_run_failed_with_why_and_no_archive(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload and submit fail together: the run made for the job ends FAILED with the reason
    (an editor may not delete runs) and the uploaded archive is removed again. (Jobs
    need an http(s) tracking server, so against a local store the submission itself is what
    is refused, after the package was uploaded into the run.)"""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    archive = tmp_path / "project.tar.gz"
    archive.write_bytes(b"package")
    with pytest.raises(ExecutionException, match=r"job not started: .*http"):
        TenantSageMakerBackend._upload_and_submit(run_id, archive, "main", {},
                                                  JobConfig(env_manager="local"))
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG].startswith("job not started: ")
    assert not list((tmp_path / "a").rglob("project.tar.gz"))


def test_run_refuses_a_tracking_uri_that_is_not_the_platform_before_making_anything(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ExecutionException, match="platform server's http"):
        TenantSageMakerBackend().run(str(project), "main", {}, None, dict(MLFLOW_ADDED), uri,
                                     "0")

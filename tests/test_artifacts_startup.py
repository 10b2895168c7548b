"""A server whose ``tenant-s3`` destination has no AWS credentials refuses to start with one line
naming what is missing; credentials that fail at request time answer a non-retried 507 naming
them, never a bare 500 that the stock client retries for minutes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES

from mlflow_tenant_plugins.artifacts import startup
from mlflow_tenant_plugins.artifacts.credentials import TenantCredentials
from mlflow_tenant_plugins.artifacts.errors import StorageUnavailable, s3_errors
from mlflow_tenant_plugins.config import Settings
from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

DEST = "tenant-s3://mlt-bucket/p"


def _no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """This process and its children without any AWS credential source."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = {"AWS_SHARED_CREDENTIALS_FILE": tmp_path / "credentials",
             "AWS_CONFIG_FILE": tmp_path / "config"}
    env = {k: str(v) for k, v in empty.items()}
    for path in empty.values():
        path.write_text("")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def test_a_server_without_aws_credentials_refuses_to_start_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding: it started "healthy" and failed every upload with 500 (NoCredentialsError),
    which the stock client retried for about 500 s."""
    env = _no_aws(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError) as info:  # the fixture's "exited with N" + the log
        server = start_mlflow_server(tmp_path / "srv", artifacts_destination=(
            "tenant-s3://some-bucket/platform"), extra_env=env, timeout=400)
        stop_mlflow_server(server)
    log = str(info.value)
    assert "exited with" in log  # stopped by itself, not left running unhealthy
    lines = [line for line in log.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, log
    assert "tenant-s3://some-bucket/platform" in lines[0]
    assert "no AWS credentials for the server process" in lines[0]
    assert "AWS_ACCESS_KEY_ID" in lines[0]


def test_the_startup_check_passes_with_credentials_and_ignores_other_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_aws(monkeypatch, tmp_path)
    startup.check_artifact_destination("s3://elsewhere/x", Settings())  # not ours: no check
    with pytest.raises(startup.ArtifactDestinationError, match="no AWS credentials"):
        startup.check_artifact_destination(DEST, Settings(aws_region="us-east-1"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    startup.check_artifact_destination(DEST, Settings(aws_region="eu-west-1"))
    with pytest.raises(startup.ArtifactDestinationError, match="artifact_role_arn"):
        startup.check_artifact_destination(
            DEST, Settings(artifact_credentials="role-per-tenant"))


def test_missing_credentials_at_request_time_answer_507_naming_them_not_a_retried_status(
) -> None:
    with pytest.raises(StorageUnavailable) as info:
        with s3_errors("writing artifacts of tenant 'acme'"):
            raise NoCredentialsError()
    err = info.value
    assert err.get_http_status_code() == 507
    assert err.get_http_status_code() not in _TRANSIENT_FAILURE_RESPONSE_CODES
    assert "no AWS credentials" in err.message and "retrying will not help" in err.message


def test_a_role_the_server_cannot_assume_answers_507_naming_the_role() -> None:
    creds = TenantCredentials(Settings(artifact_role_arn="arn:aws:iam::1:role/artifacts",
                                       aws_region="us-east-1"))

    class DeniedSts:
        def assume_role(self, **_kwargs):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not trusted"}},
                              "AssumeRole")

    creds._sts_client = DeniedSts()
    with pytest.raises(StorageUnavailable) as info:
        creds.client_for("acme", "bucket", "platform/workspaces/acme")
    assert info.value.get_http_status_code() == 507
    assert "arn:aws:iam::1:role/artifacts" in info.value.message
    assert "AccessDenied" in info.value.message

"""Prefix-scoped credentials for tenant-s3, proven with moto's IAM enforcement on.

moto stores the session policy passed to AssumeRole but does not enforce it (real AWS grants
the intersection of the role's policy and the session policy). So the isolation tests use
``role-per-tenant`` mode with each tenant role's inline policy set to exactly the session
policy our code generates: moto then enforces the same document AWS would.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts.credentials import TenantCredentials, session_policy
from mlflow_tenant_plugins.artifacts.repository import TenantS3ArtifactRepository
from mlflow_tenant_plugins.tenancy import TenantRegistry
from tests.fixtures.artifacts import ArtifactEnv, aws_environment, make_settings
from tests.fixtures.aws import MotoServer

ACCOUNT = "123456789012"
IAM_BUCKET = "mlt-iam-artifacts"
# Tenant roles trust the platform's own identity (the server's IAM user in these tests).
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow",
                   "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/platform-admin"},
                   "Action": "sts:AssumeRole"}],
}


@pytest.fixture(scope="module")
def _iam_bucket(moto_server_iam: MotoServer) -> str:
    moto_server_iam.client("s3").create_bucket(Bucket=IAM_BUCKET)
    return IAM_BUCKET


@pytest.fixture
def iam_env(
    moto_server_iam: MotoServer,
    artifact_registry: TenantRegistry,
    _iam_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ArtifactEnv]:
    """Tenant roles on the enforcing emulator; the server's own identity is its admin user."""
    uri = artifact_registry.database_uri
    for name, value in aws_environment(moto_server_iam, uri).items():
        monkeypatch.setenv(name, value)
    settings = make_settings(
        moto_server_iam, uri,
        artifact_credentials="role-per-tenant",
        artifact_role_arn=f"arn:aws:iam::{ACCOUNT}:role/mlt-{{tenant}}",
    )
    yield ArtifactEnv(moto_server_iam, artifact_registry, settings, bucket=_iam_bucket,
                      explicit_settings=True)


def _moto_batch_delete(bucket: str) -> dict:
    """Patch for a moto gap: moto authorizes DeleteObjects (the batch call) as s3:DeleteObject
    on the *bucket* ARN and then checks only the bucket policy per key; real AWS checks
    s3:DeleteObject on each key's ARN, which the session policy grants under the tenant's
    prefix only. On real AWS this statement matches no object and grants nothing."""
    return {"Sid": "MotoBatchDelete", "Effect": "Allow", "Action": "s3:DeleteObject",
            "Resource": f"arn:aws:s3:::{bucket}"}


def _role(env: ArtifactEnv, tenant: str, policy: dict) -> None:
    policy = {**policy, "Statement": [*policy["Statement"], _moto_batch_delete(env.bucket)]}
    iam = env.moto.client("iam")
    iam.create_role(RoleName=f"mlt-{tenant}", AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(RoleName=f"mlt-{tenant}", PolicyName="artifacts",
                        PolicyDocument=json.dumps(policy))


def _tenant_with_role(env: ArtifactEnv) -> str:
    tenant = env.tenant()
    _role(env, tenant, session_policy(env.bucket, env.fence(tenant)))
    return tenant


def _denied(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def test_a_tenants_credentials_cannot_reach_another_tenants_keys(
    iam_env: ArtifactEnv, tmp_path: Path
) -> None:
    alice, bob = _tenant_with_role(iam_env), _tenant_with_role(iam_env)
    f = tmp_path / "secret.txt"
    for t in (alice, bob):
        f.write_text(f"secret of {t}")
        iam_env.repo(t).log_artifact(str(f), f"workspaces/{t}/1")
    # Code that skips every path check and talks to S3 with alice's client directly:
    s3 = iam_env.repo(alice)._get_s3_client()
    bucket, bob_key = iam_env.bucket, f"{iam_env.fence(bob)}/1/secret.txt"
    own = s3.get_object(Bucket=bucket, Key=f"{iam_env.fence(alice)}/1/secret.txt")
    assert own["Body"].read() == f"secret of {alice}".encode()
    assert _denied(lambda: s3.get_object(Bucket=bucket, Key=bob_key)) == "AccessDenied"
    assert _denied(lambda: s3.put_object(Bucket=bucket, Key=bob_key, Body=b"x")) == "AccessDenied"
    assert _denied(lambda: s3.delete_object(Bucket=bucket, Key=bob_key)) == "AccessDenied"
    assert _denied(lambda: s3.head_object(Bucket=bucket, Key=bob_key)) == "403"
    assert _denied(
        lambda: s3.put_object(Bucket=bucket, Key=f"{iam_env.root}/outside", Body=b"x")
    ) == "AccessDenied"
    admin = iam_env.s3.get_object(Bucket=bucket, Key=bob_key)["Body"].read()
    assert admin == f"secret of {bob}".encode()  # bob's object untouched


def test_the_repository_works_end_to_end_with_iam_enforced(
    iam_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = _tenant_with_role(iam_env)
    repo = iam_env.repo(t)
    for i in range(4):
        (tmp_path / "d" / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / f"s{i % 2}" / f"f{i}.txt").write_text(str(i) * 10)
    repo.log_artifacts(str(tmp_path / "d"), f"workspaces/{t}/1/run")
    listed = repo.list_artifacts(f"workspaces/{t}/1/run")
    assert [f.path.rsplit("/", 1)[1] for f in listed] == ["s0", "s1"]
    (tmp_path / "out").mkdir()
    out = Path(repo.download_artifacts(f"workspaces/{t}/1/run", str(tmp_path / "out")))
    assert sorted(p.name for p in out.rglob("*.txt")) == ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]
    assert iam_env.used(t) == 40
    repo.delete_artifacts(f"workspaces/{t}/1")
    assert iam_env.used(t) == 0 == iam_env.stored(t)


def test_an_s3_denial_is_permission_denied_and_gives_the_reservation_back(
    iam_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = iam_env.tenant()
    policy = session_policy(iam_env.bucket, iam_env.fence(t))
    policy["Statement"][0]["Action"] = ["s3:GetObject"]  # a role that may read but not write
    _role(iam_env, t, policy)
    f = tmp_path / "f.txt"
    f.write_text("x" * 100)
    with pytest.raises(MlflowException) as info:
        iam_env.repo(t).log_artifact(str(f), f"workspaces/{t}/1")
    assert info.value.error_code == "PERMISSION_DENIED"
    assert info.value.get_http_status_code() == 403
    assert iam_env.used(t) == 0


@pytest.fixture
def assumed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Roles assumed per tenant during the test (each successful AssumeRole)."""
    calls: Counter[str] = Counter()
    original = TenantCredentials._assume

    def counting(self, tenant: str, *args):
        out = original(self, tenant, *args)
        calls[tenant] += 1
        return out

    monkeypatch.setattr(TenantCredentials, "_assume", counting)
    return calls


def test_credentials_are_assumed_once_per_tenant_and_reused(
    iam_env: ArtifactEnv, tmp_path: Path, assumed: Counter[str]
) -> None:
    alice, bob = _tenant_with_role(iam_env), _tenant_with_role(iam_env)
    # A settings value of its own gives this test a fresh credential cache.
    fresh = replace(iam_env.settings, artifact_credential_duration_seconds=1800.0)
    f = tmp_path / "f.txt"
    f.write_text("x")
    for _ in range(3):
        for t in (alice, bob):
            repo = TenantS3ArtifactRepository(iam_env.destination, settings=fresh).for_workspace(t)
            repo.log_artifact(str(f), f"workspaces/{t}/1")
            repo.list_artifacts(f"workspaces/{t}")
    credentials = repo._runtime.credentials
    assert assumed == {alice: 1, bob: 1}
    assert credentials.role_arn(alice) == f"arn:aws:iam::{ACCOUNT}:role/mlt-{alice}"


def test_warming_up_readies_the_clients_without_acting_for_any_tenant(
    iam_env: ArtifactEnv, tmp_path: Path, assumed: Counter[str]
) -> None:
    """The server warms its runtime at startup so the first upload does not pay for botocore's
    endpoint rules and the database engine; no role is assumed until a tenant writes."""
    from mlflow_tenant_plugins.artifacts.runtime import Runtime

    runtime = Runtime(replace(iam_env.settings, artifact_credential_duration_seconds=1700.0))
    runtime.warm()
    assert runtime.credentials._sts_client is not None
    assert "ledger" in vars(runtime)  # the cached engine exists
    assert not assumed
    t = _tenant_with_role(iam_env)
    repo = TenantS3ArtifactRepository(iam_env.destination, settings=runtime.settings)
    repo._runtime_cache = runtime
    f = tmp_path / "f.txt"
    f.write_text("x")
    repo.for_workspace(t).log_artifact(str(f), f"workspaces/{t}/1")
    assert assumed == {t: 1}
    assert iam_env.used(t) == 1


def test_refreshing_credentials_never_fails_an_upload_in_flight(
    artifact_env: ArtifactEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    assumed: Counter[str],
) -> None:
    """Every request of this upload falls in the refresh window (margin = lifetime); the
    refreshes succeed at first, then STS fails: botocore keeps the still-valid credentials."""
    t = artifact_env.tenant()
    repo = artifact_env.repo(
        t,
        artifact_role_arn=f"arn:aws:iam::{ACCOUNT}:role/platform-artifacts",
        artifact_credential_duration_seconds=900.0,
        artifact_credential_refresh_seconds=900.0,
        artifact_role_external_id=uuid.uuid4().hex,  # a fresh credential cache
    )
    assert repo._runtime.credentials.mode == "session-policy"
    big = tmp_path / "big.bin"
    big.write_bytes(b"r" * (20 * 2**20))  # > boto3's 8 MiB multipart threshold: several parts
    repo.log_artifact(str(big), f"workspaces/{t}/1")
    assert assumed[t] > 2  # refreshed while the parts were in flight

    attempts: list[int] = []
    original = TenantCredentials._assume

    def failing(self, *args):
        attempts.append(1)
        raise ClientError({"Error": {"Code": "Throttling", "Message": "STS is down"}}, "AssumeRole")

    monkeypatch.setattr(TenantCredentials, "_assume", failing)
    repo.log_artifact(str(big), f"workspaces/{t}/2")
    assert len(attempts) > 1
    monkeypatch.setattr(TenantCredentials, "_assume", original)
    assert artifact_env.used(t) == 2 * big.stat().st_size == artifact_env.stored(t)

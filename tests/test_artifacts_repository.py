"""tenant-s3 against moto's S3 server: layout, binding per tenant, thread pools, tags, KMS."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

from mlflow_tenant_plugins.artifacts.repository import (
    TenantS3ArtifactRepository,
    repository_for_request,
)
from tests.fixtures.artifacts import ArtifactEnv, request_workspace


def _tree(root: Path, tenant: str, n: int = 12) -> Path:
    """A folder whose files name their tenant, nested three levels deep."""
    for i in range(n):
        f = root / f"d{i % 3}" / f"e{i % 2}" / f"f{i}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"{tenant}:{i}")
    return root


def _count_s3_calls(repo: TenantS3ArtifactRepository) -> list[str]:
    calls: list[str] = []
    repo._get_s3_client().meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name)
    )
    return calls


def test_mlflow_builds_a_repository_bound_to_the_request_workspace(
    artifact_env: ArtifactEnv,
) -> None:
    alice = artifact_env.tenant()
    repo = artifact_env.mlflow_repo(alice)  # through the mlflow.artifact_repository entry point
    assert isinstance(repo, TenantS3ArtifactRepository)
    assert repo.tenant == alice
    assert artifact_env.mlflow_repo(None).tenant is None


def test_each_tenant_round_trips_its_own_files_under_its_prefix(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    tenants = [artifact_env.tenant(), artifact_env.tenant()]
    for t in tenants:
        src = tmp_path / t / "model.txt"
        src.parent.mkdir()
        src.write_text(f"weights of {t}")
        artifact_env.repo(t).log_artifact(str(src), f"workspaces/{t}/1/run/artifacts/m")
    for t in tenants:
        key = f"{artifact_env.fence(t)}/1/run/artifacts/m/model.txt"
        body = artifact_env.s3.get_object(Bucket=artifact_env.bucket, Key=key)["Body"].read()
        assert body == f"weights of {t}".encode()
        repo = artifact_env.repo(t)
        listed = repo.list_artifacts(f"workspaces/{t}/1/run/artifacts/m")
        assert [(f.path, f.file_size) for f in listed] == [
            (f"workspaces/{t}/1/run/artifacts/m/model.txt", len(f"weights of {t}"))
        ]
        out = repo.download_artifacts(f"workspaces/{t}/1/run/artifacts/m/model.txt", str(tmp_path))
        assert Path(out).read_text() == f"weights of {t}"


def test_multi_file_download_in_mlflow_thread_pool_lands_the_bound_tenants_files(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    alice, bob = artifact_env.tenant(), artifact_env.tenant()
    for t in (alice, bob):  # the same relative paths in both tenants
        artifact_env.repo(t).log_artifacts(str(_tree(tmp_path / t, t)), f"workspaces/{t}/7/r")
    repo = artifact_env.mlflow_repo(alice)
    result: dict[str, object] = {}

    def download() -> None:
        # Another request's context in this thread; the pool's threads see none at all.
        with request_workspace(bob):
            result["path"] = repo.download_artifacts(f"workspaces/{alice}/7/r", str(tmp_path / "o"))

    (tmp_path / "o").mkdir()
    worker = threading.Thread(target=download)
    worker.start()
    worker.join(timeout=60)
    files = sorted(Path(result["path"]).rglob("*.txt"))
    assert len(files) == 12
    assert all(f.read_text().startswith(f"{alice}:") for f in files)
    assert repo.thread_pool._threads, "MLflow's download pool was used"


def test_per_request_binding_follows_the_request_not_the_first_caller(
    artifact_env: ArtifactEnv,
) -> None:
    alice, bob = artifact_env.tenant(), artifact_env.tenant()
    cached = artifact_env.mlflow_repo(alice)  # what MLflow's process-wide cache would keep
    with request_workspace(bob):
        assert repository_for_request(cached).tenant == bob
        assert repository_for_request(cached) is repository_for_request(cached)
    with request_workspace(None):
        assert repository_for_request(cached).tenant is None  # no workspace: fail closed


def test_a_repository_bound_to_no_tenant_refuses_everything_before_s3(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    for workspace in (None, "default"):
        repo = artifact_env.mlflow_repo(workspace)
        for call in (
            lambda r: r.log_artifact(str(f), "workspaces/x/1"),
            lambda r: r.log_artifacts(str(tmp_path), "a"),
            lambda r: r.download_artifacts("a/f.txt", str(tmp_path)),
            lambda r: r.delete_artifacts("a"),
            lambda r: r.create_multipart_upload(str(f), 1, "a"),
            lambda r: r.get_download_presigned_url("a/f.txt"),
            lambda r: r.parse_s3_compliant_uri(r.artifact_uri),
        ):
            with pytest.raises(MlflowException) as info:
                call(repo)
            assert info.value.error_code == "PERMISSION_DENIED"
    assert artifact_env.mlflow_repo("default").list_artifacts() == []
    assert artifact_env.mlflow_repo("default").list_artifacts("workspaces") == []
    with pytest.raises(MlflowException):
        artifact_env.mlflow_repo(None).list_artifacts()


def test_a_tenant_location_cannot_be_used_from_another_workspace(artifact_env: ArtifactEnv) -> None:
    alice, bob = artifact_env.tenant(), artifact_env.tenant()
    uri = f"{artifact_env.destination}/workspaces/{alice}/3/run/artifacts"
    repo = TenantS3ArtifactRepository(uri)
    assert repo.tenant == alice and repo.for_workspace(alice) is repo
    with pytest.raises(MlflowException) as info:
        repo.for_workspace(bob)
    assert info.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(MlflowException), request_workspace(bob):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(uri)


def test_unsafe_paths_are_refused_with_400_before_any_s3_call(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    alice, bob = artifact_env.tenant(), artifact_env.tenant()
    repo = artifact_env.repo(alice)
    calls = _count_s3_calls(repo)
    f = tmp_path / "f.txt"
    f.write_text("x")
    base = f"workspaces/{alice}"
    for bad in (f"{base}/../{bob}", f"{base}/%2e%2e/{bob}", f"{base}/a\\..\\b", f"workspaces/{bob}",
                f"/{base}/x", f"{base}/a#b", f"{base}/a\x00", f"{base}/" + "a" * 1100):
        for call in (
            lambda p: repo.log_artifact(str(f), p),
            lambda p: repo.log_artifacts(str(tmp_path), p),
            lambda p: repo.list_artifacts(p),
            lambda p: repo.download_artifacts(p + "/f.txt", str(tmp_path)),
            lambda p: repo.delete_artifacts(p),
            lambda p: repo.create_multipart_upload(str(f), 1, p),
            lambda p: repo.complete_multipart_upload(str(f), "u", [], p),
            lambda p: repo.abort_multipart_upload(str(f), "u", p),
            lambda p: repo.get_download_presigned_url(p + "/f.txt"),
        ):
            with pytest.raises(MlflowException) as info:
                call(bad)
            assert info.value.error_code == "INVALID_PARAMETER_VALUE", (bad, info.value)
    with pytest.raises(MlflowException, match="is not allowed"):
        repo.create_multipart_upload("..", 1, f"{base}/x")
    assert calls == []
    assert artifact_env.used(alice) == 0


def test_objects_carry_the_tenant_tag(artifact_env: ArtifactEnv, tmp_path: Path) -> None:
    alice = artifact_env.tenant()
    repo = artifact_env.repo(alice)
    f = tmp_path / "a.json"
    f.write_text("{}")
    repo.log_artifact(str(f), f"workspaces/{alice}/1/r")
    repo.log_artifacts(str(_tree(tmp_path / "t", alice, 2)), f"workspaces/{alice}/1/r/t")
    trace_repo = TenantS3ArtifactRepository(
        f"{artifact_env.destination}/workspaces/{alice}/1/traces/tr-1/artifacts"
    )
    trace_repo.upload_archived_trace_data_bytes(b"spans")
    s3 = artifact_env.s3
    objects = s3.list_objects_v2(Bucket=artifact_env.bucket, Prefix=artifact_env.fence(alice))
    assert len(objects["Contents"]) == 4
    for obj in objects["Contents"]:
        tags = s3.get_object_tagging(Bucket=artifact_env.bucket, Key=obj["Key"])["TagSet"]
        assert {"Key": "mlflow-tenant", "Value": alice} in tags
    head = s3.head_object(Bucket=artifact_env.bucket, Key=f"{artifact_env.fence(alice)}/1/r/a.json")
    assert head["ContentType"] == "application/json"
    assert artifact_env.used(alice) == artifact_env.stored(alice)


def test_kms_key_is_applied_when_configured_for_the_tenant(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    alice, bob = artifact_env.tenant(), artifact_env.tenant()
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    f = tmp_path / "f.bin"
    f.write_bytes(b"\0" * 64)
    for t in (alice, bob):
        repo = artifact_env.repo(t, artifact_kms_key_ids=(f"{alice}={key_arn}",))
        repo.log_artifact(str(f), f"workspaces/{t}/1")
        mpu = repo.create_multipart_upload(str(f), 1, f"workspaces/{t}/2")
        repo.abort_multipart_upload(str(f), mpu.upload_id, f"workspaces/{t}/2")
    head = artifact_env.s3.head_object(
        Bucket=artifact_env.bucket, Key=f"{artifact_env.fence(alice)}/1/f.bin"
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn
    head = artifact_env.s3.head_object(
        Bucket=artifact_env.bucket, Key=f"{artifact_env.fence(bob)}/1/f.bin"
    )
    assert "SSEKMSKeyId" not in head


def test_presigned_single_part_upload_is_refused_since_its_size_is_unknown(
    artifact_env: ArtifactEnv,
) -> None:
    alice = artifact_env.tenant()
    with pytest.raises(MlflowException) as info:
        artifact_env.repo(alice).create_presigned_upload_url(f"workspaces/{alice}/1/x")
    assert info.value.get_http_status_code() == 501


def test_every_path_taking_method_of_mlflows_s3_repository_is_overridden() -> None:
    """Fails when a new MLflow version adds an S3 repository method we have not reviewed."""
    reviewed_helpers = {
        "__init__", "_get_s3_client", "get_s3_file_upload_extra_args",
        "_iterate_s3_paginated_results", "_verify_listed_object_contains_artifact_path_prefix",
    }
    ours = set(vars(TenantS3ArtifactRepository)) | set(
        vars(TenantS3ArtifactRepository.__mro__[1])
    )
    missing = [
        name for name, member in vars(S3ArtifactRepository).items()
        if callable(member) or isinstance(member, staticmethod)
        if name not in ours and name not in reviewed_helpers
    ]
    assert missing == []
    # Base-class methods that reach storage must go through overridden ones.
    base_storage = {
        name for name, member in vars(ArtifactRepository).items()
        if inspect.isfunction(member) and "_download_file" in inspect.getsource(member)
    }
    assert base_storage <= {
        "_download_file", "download_artifacts", "download_trace_data_to_file",
        "download_archived_trace_data", "download_trace_attachment_to_file",
    }

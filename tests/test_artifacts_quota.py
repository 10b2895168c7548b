"""Storage quota on tenant-s3 writes and deletes, and ledger reconciliation, against moto."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts.reconcile import reconcile
from mlflow_tenant_plugins.artifacts.repository import TenantS3ArtifactRepository
from mlflow_tenant_plugins.tenancy.usage import QuotaExceeded
from tests.fixtures.artifacts import ArtifactEnv


def _file(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return str(path)


def test_a_write_reserves_its_size_and_over_quota_is_409_naming_quota_limit_and_use(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=1000)
    repo = artifact_env.repo(t)
    repo.log_artifact(_file(tmp_path / "a.bin", 600), f"workspaces/{t}/1")
    assert artifact_env.used(t) == 600
    with pytest.raises(QuotaExceeded) as info:
        repo.log_artifact(_file(tmp_path / "b.bin", 600), f"workspaces/{t}/1")
    err = info.value
    assert err.get_http_status_code() == 409 and err.error_code == "RESOURCE_EXHAUSTED"
    assert "storage_bytes" in err.message and "(1000)" in err.message and "(600)" in err.message
    assert artifact_env.used(t) == 600 == artifact_env.stored(t)  # nothing of b.bin in S3


def test_a_folder_is_reserved_as_a_whole_before_its_first_file_is_written(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=1000)
    for i in range(5):
        _file(tmp_path / "dir" / f"sub{i % 2}" / f"f{i}.bin", 250)  # 1250 bytes in all
    with pytest.raises(QuotaExceeded):
        artifact_env.repo(t).log_artifacts(str(tmp_path / "dir"), f"workspaces/{t}/1")
    assert artifact_env.stored(t) == 0 and artifact_env.used(t) == 0


def test_a_failed_write_gives_back_what_it_did_not_write(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant()
    folder = tmp_path / "dir"
    _file(folder / "a.bin", 300)
    _file(folder / "z.bin", 500)
    with socket.socket(socket.AF_UNIX) as sock:  # listed as a file, cannot be opened
        sock.bind(str(folder / "m.sock"))
        with pytest.raises(OSError):
            artifact_env.repo(t).log_artifacts(str(folder), f"workspaces/{t}/1")
    assert artifact_env.used(t) == 300 == artifact_env.stored(t)  # a.bin only
    missing = TenantS3ArtifactRepository("tenant-s3://no-such-bucket/p").for_workspace(t)
    with pytest.raises(MlflowException) as info:
        missing.log_artifact(_file(tmp_path / "c.bin", 100), f"workspaces/{t}/1")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert artifact_env.used(t) == 300


def test_concurrent_uploads_at_the_boundary_never_pass_the_quota(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=10 * 1024)
    repo = artifact_env.repo(t)
    files = [_file(tmp_path / f"f{i:02}.bin", 1024) for i in range(32)]
    start = threading.Barrier(16)

    def upload(path: str) -> bool:
        if path in files[:16]:
            start.wait(timeout=30)
        try:
            repo.log_artifact(path, f"workspaces/{t}/race")
            return True
        except QuotaExceeded:
            return False

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(upload, files))
    assert sum(results) == 10
    assert artifact_env.used(t) == 10 * 1024 == artifact_env.stored(t)


def test_deletes_release_the_bytes_of_the_deleted_objects(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant()
    repo = artifact_env.repo(t)
    _file(tmp_path / "d" / "a.bin", 100)
    _file(tmp_path / "d" / "sub" / "b.bin", 200)
    _file(tmp_path / "d" / "sub" / "c.bin", 300)
    repo.log_artifacts(str(tmp_path / "d"), f"workspaces/{t}/1/run")
    repo.log_artifact(_file(tmp_path / "sub.bin", 50), f"workspaces/{t}/1/run")  # not in sub/
    assert artifact_env.used(t) == 650
    repo.delete_artifacts(f"workspaces/{t}/1/run/sub")
    assert artifact_env.used(t) == 150 == artifact_env.stored(t)
    repo.delete_artifacts(f"workspaces/{t}/1/run/a.bin")
    assert artifact_env.used(t) == 50
    repo.delete_artifacts(f"workspaces/{t}")  # the tenant's whole prefix
    assert artifact_env.used(t) == 0 == artifact_env.stored(t)


def test_an_overwrite_is_charged_the_size_difference(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=1000)
    repo = artifact_env.repo(t)
    for size in (100, 300, 50):
        repo.log_artifact(_file(tmp_path / str(size) / "m.bin", size), f"workspaces/{t}/1")
        assert artifact_env.used(t) == size == artifact_env.stored(t)
    repo.log_artifacts(str(tmp_path / "300"), f"workspaces/{t}/1")  # folder overwrite
    assert artifact_env.used(t) == 300


def test_a_new_key_is_written_create_only_without_a_head(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant()
    repo = artifact_env.repo(t)
    calls: list[str] = []
    repo._get_s3_client().meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name))
    repo.log_artifact(_file(tmp_path / "new.bin", 100), f"workspaces/{t}/1")
    assert calls == ["PutObject"]
    repo.log_artifact(_file(tmp_path / "again" / "new.bin", 40), f"workspaces/{t}/1")
    assert calls[1:] == ["PutObject", "HeadObject", "PutObject"]  # taken: learn, overwrite
    assert artifact_env.used(t) == 40 == artifact_env.stored(t)


def test_two_writers_racing_for_a_new_key_are_charged_exactly(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant()
    repo = artifact_env.repo(t)
    for round_ in range(5):
        files = [_file(tmp_path / f"r{round_}-{i}" / "same.bin", 100 + 50 * i) for i in range(2)]
        barrier = threading.Barrier(2)

        def write(path: str, round_: int = round_, barrier=barrier) -> None:
            barrier.wait(timeout=30)
            repo.log_artifact(path, f"workspaces/{t}/race{round_}")

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(write, files))
    assert artifact_env.used(t) == artifact_env.stored(t)


def test_archived_trace_bytes_are_charged(artifact_env: ArtifactEnv) -> None:
    t = artifact_env.tenant()
    repo = TenantS3ArtifactRepository(
        f"{artifact_env.destination}/workspaces/{t}/1/traces/tr-9/artifacts"
    )
    repo.upload_archived_trace_data_bytes(b"p" * 77)
    assert artifact_env.used(t) == 77 == artifact_env.stored(t)


def test_reconcile_lists_every_page_and_corrects_the_ledger(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    alice, bob, carol = artifact_env.tenant(), artifact_env.tenant(), artifact_env.tenant()
    for i in range(5):
        artifact_env.repo(alice).log_artifact(_file(tmp_path / f"a{i}", 10), f"workspaces/{alice}")
    ledger = artifact_env.registry.ledger
    ledger.set_used(alice, "storage_bytes", 999)  # drift: a crash between S3 and the ledger
    s3, bucket = artifact_env.s3, artifact_env.bucket
    s3.put_object(Bucket=bucket, Key=f"{artifact_env.fence(bob)}/x", Body=b"y" * 40)  # by hand
    s3.put_object(Bucket=bucket, Key=f"{artifact_env.root}/workspaces/ghost-t/x", Body=b"1")

    mine = [alice, bob, carol]
    dry = reconcile(artifact_env.registry, artifact_env.destination, tenants=mine,
                    dry_run=True, page_size=2)
    by_tenant = {r.tenant: r for r in dry.tenants}
    assert (by_tenant[alice].status, by_tenant[alice].delta) == ("drift", 50 - 999)
    assert (by_tenant[bob].status, by_tenant[bob].s3_bytes) == ("drift", 40)
    assert by_tenant[carol].status == "ok"
    assert artifact_env.used(alice) == 999

    report = reconcile(artifact_env.registry, artifact_env.destination, tenants=mine, page_size=2)
    assert {r.tenant for r in report.changed} == {alice, bob}
    assert {r.tenant: r.objects for r in report.tenants}[alice] == 5
    assert artifact_env.used(alice) == 50 and artifact_env.used(bob) == 40
    assert f"{artifact_env.root}/workspaces/ghost-t/" in report.unknown_prefixes
    assert report.to_dict()["tenants"][0]["delta"] is not None
    again = reconcile(artifact_env.registry, f"{artifact_env.bucket}/{artifact_env.root}",
                      tenants=mine)
    assert not again.changed

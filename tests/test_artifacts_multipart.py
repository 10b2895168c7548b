"""Proxied multipart upload through tenant-s3: parts go straight to moto's S3 on presigned URLs.

(Presigned URLs are exercised on the non-enforcing emulator: with IAM enforcement on, moto
answers presigned requests with 500.)
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from mlflow.entities.multipart_upload import MultipartUploadPart
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts import multipart as multipart_module
from mlflow_tenant_plugins.artifacts import reconcile as reconcile_module
from mlflow_tenant_plugins.artifacts.multipart import declared_part_bytes
from mlflow_tenant_plugins.artifacts.quota import MIN_PART_BYTES
from mlflow_tenant_plugins.artifacts.reconcile import reconcile
from mlflow_tenant_plugins.artifacts.reservations import MAX_AGE
from mlflow_tenant_plugins.tenancy.usage import QuotaExceeded
from tests.fixtures.artifacts import ArtifactEnv, sha256

PART = MIN_PART_BYTES


def _upload_parts(credentials, path: Path) -> list[MultipartUploadPart]:
    """What MLflow's HttpArtifactRepository._upload_part does on the client."""
    parts = []
    with open(path, "rb") as f:
        for c in credentials:
            f.seek((c.part_number - 1) * PART)
            r = requests.put(c.url, data=f.read(PART), headers=c.headers, timeout=60)
            r.raise_for_status()
            parts.append(MultipartUploadPart(c.part_number, r.headers["ETag"], c.url))
    return parts


def test_a_file_larger_than_the_part_size_round_trips_with_equal_checksum(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant()
    repo = artifact_env.repo(t)
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(2 * PART + 123_457))
    artifact_dir = f"workspaces/{t}/1/run/artifacts"
    # The client sends its own local path (Windows paths too); only the base name is used.
    client_path = "C:\\Users\\me\\model.bin"
    create = repo.create_multipart_upload(client_path, 3, artifact_dir)
    key = f"{artifact_env.fence(t)}/1/run/artifacts/model.bin"
    for c in create.credentials:
        url = urllib.parse.urlsplit(c.url)
        assert urllib.parse.unquote(url.path) == f"/{artifact_env.bucket}/{key}"
    assert artifact_env.used(t) == 3 * declared_part_bytes()  # declared size, held at creation
    parts = _upload_parts(create.credentials, big)
    repo.complete_multipart_upload(client_path, create.upload_id, parts, artifact_dir)
    assert artifact_env.used(t) == big.stat().st_size == artifact_env.stored(t)

    (tmp_path / "dl").mkdir()
    out = repo.download_artifacts(f"{artifact_dir}/model.bin", str(tmp_path / "dl"))
    assert sha256(Path(out)) == sha256(big)
    tags = artifact_env.s3.get_object_tagging(Bucket=artifact_env.bucket, Key=key)["TagSet"]
    assert {"Key": "mlflow-tenant", "Value": t} in tags
    presigned = repo.get_download_presigned_url(f"{artifact_dir}/model.bin")
    assert presigned.file_size == big.stat().st_size
    ranged = requests.get(presigned.url, headers={"Range": "bytes=0-99"}, timeout=60)
    assert ranged.content == big.read_bytes()[:100]


def test_a_multipart_upload_over_quota_is_refused_at_creation_before_any_part_is_sent(
    artifact_env: ArtifactEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART))
    t = artifact_env.tenant(storage_bytes=2 * PART + 1000)
    repo = artifact_env.repo(t)
    big = tmp_path / "big.bin"
    with pytest.raises(QuotaExceeded) as info:  # 3 parts of 5 MiB declared: 15 MiB > quota
        repo.create_multipart_upload(str(big), 3, f"workspaces/{t}/1")
    assert info.value.get_http_status_code() == 409
    assert "reserved when a multipart upload starts" in info.value.message
    assert artifact_env.used(t) == 0
    uploads = artifact_env.s3.list_multipart_uploads(
        Bucket=artifact_env.bucket, Prefix=artifact_env.fence(t)
    )
    assert uploads.get("Uploads", []) == []  # nothing started in S3


def test_parts_larger_than_declared_are_settled_at_completion_or_refused_and_aborted(
    artifact_env: ArtifactEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client cutting bigger parts than the platform's chunk size pays the difference at
    completion; past the quota the upload is refused there and its parts deleted."""
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART))
    t = artifact_env.tenant(storage_bytes=PART + 1000)
    repo = artifact_env.repo(t)
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (PART + 2000))
    create = repo.create_multipart_upload(str(big), 1, f"workspaces/{t}/1")
    assert artifact_env.used(t) == PART
    with open(big, "rb") as f:  # one part holding the whole file, larger than declared
        r = requests.put(create.credentials[0].url, data=f.read(), timeout=60)
    parts = [MultipartUploadPart(1, r.headers["ETag"], create.credentials[0].url)]
    with pytest.raises(QuotaExceeded) as info:
        repo.complete_multipart_upload(str(big), create.upload_id, parts, f"workspaces/{t}/1")
    assert info.value.get_http_status_code() == 409
    assert artifact_env.used(t) == 0 == artifact_env.stored(t)
    uploads = artifact_env.s3.list_multipart_uploads(
        Bucket=artifact_env.bucket, Prefix=artifact_env.fence(t)
    )
    assert uploads.get("Uploads", []) == []  # parts deleted, not left to be billed


def test_open_uploads_hold_their_declared_size_against_the_quota(
    artifact_env: ArtifactEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding: uploads escaped the quota until completion — many could be open at once,
    each with parts in S3, while the ledger counted nothing."""
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART))
    t = artifact_env.tenant(storage_bytes=5 * PART)
    repo = artifact_env.repo(t)
    first = repo.create_multipart_upload(str(tmp_path / "a.bin"), 3, f"workspaces/{t}/1")
    assert artifact_env.used(t) == 3 * PART
    with pytest.raises(QuotaExceeded):  # 3 + 3 parts declared do not fit in 5
        repo.create_multipart_upload(str(tmp_path / "b.bin"), 3, f"workspaces/{t}/1")
    repo.abort_multipart_upload(str(tmp_path / "a.bin"), first.upload_id, f"workspaces/{t}/1")
    assert artifact_env.used(t) == 0
    with pytest.raises(MlflowException):  # a second abort fails and releases nothing more
        repo.abort_multipart_upload(str(tmp_path / "a.bin"), first.upload_id, f"workspaces/{t}/1")
    assert artifact_env.used(t) == 0
    second = repo.create_multipart_upload(str(tmp_path / "b.bin"), 3, f"workspaces/{t}/1")
    assert artifact_env.used(t) == 3 * PART
    other = artifact_env.tenant()
    with contextlib.suppress(MlflowException):  # another tenant cannot release it
        artifact_env.repo(other).abort_multipart_upload(
            str(tmp_path / "b.bin"), second.upload_id, f"workspaces/{other}/1")
    assert artifact_env.used(t) == 3 * PART


def test_an_abandoned_upload_is_swept_aborted_and_released(
    artifact_env: ArtifactEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART))
    t = artifact_env.tenant(storage_bytes=4 * PART)
    repo = artifact_env.repo(t)
    f = tmp_path / "f.bin"
    f.write_bytes(b"q" * 1000)
    abandoned = repo.create_multipart_upload(str(f), 3, f"workspaces/{t}/1")
    _upload_parts(abandoned.credentials[:1], f)
    assert artifact_env.used(t) == 3 * PART
    with pytest.raises(QuotaExceeded):
        repo.create_multipart_upload(str(f), 2, f"workspaces/{t}/2")
    # a day later: the next upload of the tenant sweeps the abandoned one
    later = datetime.now(UTC) + MAX_AGE + timedelta(minutes=1)
    monkeypatch.setattr(multipart_module, "datetime", _Clock(later))
    repo.create_multipart_upload(str(f), 2, f"workspaces/{t}/2")
    assert artifact_env.used(t) == 2 * PART
    uploads = artifact_env.s3.list_multipart_uploads(
        Bucket=artifact_env.bucket, Prefix=artifact_env.fence(t)
    ).get("Uploads", [])
    assert abandoned.upload_id not in {u["UploadId"] for u in uploads}


def test_reconcile_counts_open_uploads_and_sweeps_abandoned_ones(
    artifact_env: ArtifactEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART))
    t = artifact_env.tenant()
    repo = artifact_env.repo(t)
    repo.create_multipart_upload(str(tmp_path / "a.bin"), 2, f"workspaces/{t}/1")
    artifact_env.registry.ledger.set_used(t, "storage_bytes", 0)  # drift
    [row] = reconcile(artifact_env.registry, artifact_env.destination, tenants=[t],
                      client=artifact_env.s3).tenants
    assert (row.status, row.reserved, artifact_env.used(t)) == ("corrected", 2 * PART, 2 * PART)
    later = datetime.now(UTC) + MAX_AGE + timedelta(minutes=1)
    monkeypatch.setattr(reconcile_module, "datetime", _Clock(later))
    [row] = reconcile(artifact_env.registry, artifact_env.destination, tenants=[t],
                      client=artifact_env.s3).tenants
    assert (row.swept, row.reserved, artifact_env.used(t)) == (1, 0, 0)
    uploads = artifact_env.s3.list_multipart_uploads(
        Bucket=artifact_env.bucket, Prefix=artifact_env.fence(t))
    assert uploads.get("Uploads", []) == []


class _Clock:
    """``datetime`` whose ``now`` is fixed (the rest is the real class)."""

    def __init__(self, now: datetime):
        self._now = now

    def now(self, tz=None) -> datetime:
        return self._now

    def __getattr__(self, name: str):
        return getattr(datetime, name)


def test_an_aborted_multipart_upload_charges_nothing(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant()
    repo = artifact_env.repo(t)
    f = tmp_path / "f.bin"
    f.write_bytes(b"q" * 1000)
    create = repo.create_multipart_upload(str(f), 1, f"workspaces/{t}/1")
    _upload_parts(create.credentials, f)
    repo.abort_multipart_upload(str(f), create.upload_id, f"workspaces/{t}/1")
    assert artifact_env.used(t) == 0 == artifact_env.stored(t)

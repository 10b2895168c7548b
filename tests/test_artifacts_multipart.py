"""Proxied multipart upload through tenant-s3: parts go straight to moto's S3 on presigned URLs.

(Presigned URLs are exercised on the non-enforcing emulator: with IAM enforcement on, moto
answers presigned requests with 500.)
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
import requests
from mlflow.entities.multipart_upload import MultipartUploadPart

from mlflow_tenant_plugins.artifacts.quota import MIN_PART_BYTES
from mlflow_tenant_plugins.tenancy.usage import QuotaExceeded
from tests.test_artifacts_fixtures import *  # noqa: F403  (the shared fixtures)
from tests.test_artifacts_fixtures import ArtifactEnv, sha256

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
    assert artifact_env.used(t) == 0  # charged at completion, from S3's list of parts
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


def test_a_multipart_upload_over_quota_is_refused_and_aborted(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=PART + 1000)
    repo = artifact_env.repo(t)
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (PART + 2000))
    with pytest.raises(QuotaExceeded):  # three parts cannot be smaller than 10 MiB
        repo.create_multipart_upload(str(big), 3, f"workspaces/{t}/1")
    create = repo.create_multipart_upload(str(big), 2, f"workspaces/{t}/1")
    parts = _upload_parts(create.credentials, big)
    with pytest.raises(QuotaExceeded) as info:
        repo.complete_multipart_upload(str(big), create.upload_id, parts, f"workspaces/{t}/1")
    assert info.value.get_http_status_code() == 429
    assert artifact_env.used(t) == 0 == artifact_env.stored(t)
    uploads = artifact_env.s3.list_multipart_uploads(
        Bucket=artifact_env.bucket, Prefix=artifact_env.fence(t)
    )
    assert uploads.get("Uploads", []) == []  # parts deleted, not left to be billed


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

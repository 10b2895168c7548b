"""Proxied multipart upload (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD``) for tenant-s3.

The client asks the server to create the upload, PUTs each part straight to S3 on a presigned
URL, and asks the server to complete (or abort) it. The part URLs name the tenant's key and are
signed with the tenant's prefix-scoped credentials, so a URL cannot be turned towards another
prefix; they stay valid at most as long as the session that signed them.

Quota: the server learns only the number of parts at creation, not the size, so the size is
charged at completion from S3's own list of the uploaded parts (exact, and atomic: the object
does not exist until ``CompleteMultipartUpload``). An upload that does not fit is aborted, its
parts deleted, and the client gets 429. At creation only a cheap check runs: the smallest object
that many parts can make ((n-1) × 5 MiB) must still fit, so a doomed upload fails before the
client sends gigabytes.
"""

from __future__ import annotations

import contextlib
import ntpath

from botocore.exceptions import ClientError
from mlflow.entities.multipart_upload import (
    CreateMultipartUploadResponse,
    MultipartUploadCredential,
    MultipartUploadPart,
)
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts.errors import s3_errors
from mlflow_tenant_plugins.artifacts.paths import TenantScope
from mlflow_tenant_plugins.artifacts.quota import MIN_PART_BYTES
from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded

MAX_PARTS = 10_000  # S3's limit
# Arguments of CreateMultipartUpload that a tenant write sets (MLflow applies
# MLFLOW_S3_UPLOAD_EXTRA_ARGS to single-part puts only, and so do we).
_CREATE_ARGS = ("ContentType", "Tagging", "ServerSideEncryption", "SSEKMSKeyId",
                "ExpectedBucketOwner")


def client_basename(path: str) -> str:
    """Base name of the client's local file path, which may be a Windows path."""
    return ntpath.basename(path)


class TenantMultipartUploads:
    """``MultipartUploadMixin`` for :class:`TenantS3ArtifactRepository` (mixed in before
    ``S3ArtifactRepository``, whose unscoped versions it replaces). Uses the repository's
    ``_require_scope``, ``_quota``, ``_get_s3_client``, ``_put_args`` and ``_head_size``."""

    def _multipart_key(self, local_file: str, artifact_path: str | None) -> tuple[TenantScope, str]:
        scope = self._require_scope()
        return scope, scope.file_key(artifact_path, client_basename(local_file))

    def create_multipart_upload(
        self, local_file: str, num_parts: int = 1, artifact_path: str | None = None
    ) -> CreateMultipartUploadResponse:
        scope, key = self._multipart_key(local_file, artifact_path)
        num_parts = int(num_parts)
        if not 1 <= num_parts <= MAX_PARTS:
            raise MlflowException.invalid_parameter_value(
                f"num_parts must be between 1 and {MAX_PARTS}, got {num_parts}"
            )
        self._quota(scope).precheck((num_parts - 1) * MIN_PART_BYTES)
        client = self._get_s3_client()
        args = {k: v for k, v in self._put_args(key).items() if k in _CREATE_ARGS}
        owner = self._bucket_owner_params
        with s3_errors(f"starting a multipart upload for tenant '{scope.tenant}'"):
            upload_id = client.create_multipart_upload(Bucket=scope.bucket, Key=key, **args)
            upload_id = upload_id["UploadId"]
            credentials = [
                MultipartUploadCredential(
                    url=client.generate_presigned_url(
                        "upload_part",
                        Params={"Bucket": scope.bucket, "Key": key, "PartNumber": i,
                                "UploadId": upload_id, **owner},
                    ),
                    part_number=i,
                    headers={},
                )
                for i in range(1, num_parts + 1)
            ]
        return CreateMultipartUploadResponse(credentials=credentials, upload_id=upload_id)

    def complete_multipart_upload(
        self,
        local_file: str,
        upload_id: str,
        parts: list[MultipartUploadPart] | None = None,
        artifact_path: str | None = None,
    ) -> None:
        scope, key = self._multipart_key(local_file, artifact_path)
        parts = sorted(parts or [], key=lambda p: p.part_number)
        numbers = {p.part_number for p in parts}
        client = self._get_s3_client()
        owner = self._bucket_owner_params
        with s3_errors(f"completing a multipart upload for tenant '{scope.tenant}'"):
            pages = client.get_paginator("list_parts").paginate(
                Bucket=scope.bucket, Key=key, UploadId=upload_id, **owner
            )
            size = sum(
                int(p["Size"])
                for page in pages
                for p in page.get("Parts", [])
                if p["PartNumber"] in numbers
            )
            replaced = self._head_size(client, scope.bucket, key)
            try:
                with self._quota(scope).batch(size) as batch:
                    client.complete_multipart_upload(
                        Bucket=scope.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={
                            "Parts": [{"PartNumber": p.part_number, "ETag": p.etag} for p in parts]
                        },
                        **owner,
                    )
                    batch.wrote(size, replaced)
            except QuotaExceeded:
                with contextlib.suppress(ClientError):
                    client.abort_multipart_upload(
                        Bucket=scope.bucket, Key=key, UploadId=upload_id, **owner
                    )
                raise

    def abort_multipart_upload(
        self, local_file: str, upload_id: str, artifact_path: str | None = None
    ) -> None:
        scope, key = self._multipart_key(local_file, artifact_path)
        with s3_errors(f"aborting a multipart upload for tenant '{scope.tenant}'"):
            self._get_s3_client().abort_multipart_upload(
                Bucket=scope.bucket, Key=key, UploadId=upload_id, **self._bucket_owner_params
            )

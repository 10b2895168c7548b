"""Proxied multipart upload (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD``) for tenant-s3.

The client asks the server to create the upload, PUTs each part straight to S3 on a presigned
URL, and asks the server to complete (or abort) it. The part URLs name the tenant's key and are
signed with the tenant's prefix-scoped credentials, so a URL cannot be turned towards another
prefix; they stay valid at most as long as the session that signed them.

Quota — reserved at creation, settled at completion, released at abort. The server learns only
the number of parts at creation; the stock client cuts every part but the last at
``MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE`` (10 MiB by default; the server reads its own value of
that variable), so the upload's *declared* size is ``num_parts × chunk`` — within one chunk of
the file's size. That is reserved when the upload is created (all part URLs are handed out at
once, so reserving per URL would be the same), and a tenant without room for it is refused
before the client sends a byte. Completion settles the reservation to the exact size of the
parts S3 lists (a client with larger parts pays the difference then, or is refused and its
upload aborted); abort releases it. The reservation is recorded in
:mod:`.reservations`, so completion and abort on any worker settle it exactly once, and an
abandoned upload's reservation expires after a day: it is swept (upload aborted in S3, parts
deleted, quota released) when the tenant next starts an upload, and by ``mlflow-tenants usage
--reconcile``.

What MLflow's protocol cannot bound: a part URL accepts up to 5 GiB, and S3 stores parts of an
upload nobody completes. The sweep deletes them within a day, and the admin guide's bucket
lifecycle rule (``AbortIncompleteMultipartUpload`` after one day) covers any upload the
platform has no record of.
"""

from __future__ import annotations

import contextlib
import ntpath
from datetime import UTC, datetime

from botocore.exceptions import ClientError
from mlflow.entities.multipart_upload import (
    CreateMultipartUploadResponse,
    MultipartUploadCredential,
    MultipartUploadPart,
)
from mlflow.environment_variables import MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts.errors import StorageUnavailable, s3_errors
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
    ``_require_scope``, ``_quota``, ``_get_s3_client``, ``_put_args`` and
    ``_replaced_version``."""

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
        self._sweep_expired_uploads(scope)
        declared = num_parts * declared_part_bytes()
        quota = self._quota(scope)
        try:
            quota.reserve(declared)
        except QuotaExceeded as refused:
            raise QuotaExceeded(
                refused.tenant, refused.resource, declared, refused.used, refused.limit,
                note=f"{num_parts} part(s) of up to {declared_part_bytes()} bytes, reserved "
                     "when a multipart upload starts",
            ) from None
        client = self._get_s3_client_or_release(quota, declared)
        args = {k: v for k, v in self._put_args(key).items() if k in _CREATE_ARGS}
        owner = self._bucket_owner_params
        upload_id = None
        try:
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
            self._runtime.reservations.record(scope.tenant, scope.bucket, key, upload_id,
                                              declared)
        except BaseException:
            quota.release(declared)
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    client.abort_multipart_upload(
                        Bucket=scope.bucket, Key=key, UploadId=upload_id, **owner)
            raise
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
            replaced = self._replaced_version(client, scope, key)
            quota = self._quota(scope)
            held = quota.holding(self._runtime.reservations.claim(scope.tenant, upload_id))
            try:
                with quota.batch(size, held) as batch:
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
        try:
            with s3_errors(f"aborting a multipart upload for tenant '{scope.tenant}'"):
                self._get_s3_client().abort_multipart_upload(
                    Bucket=scope.bucket, Key=key, UploadId=upload_id, **self._bucket_owner_params
                )
        finally:
            self._quota(scope).release(self._runtime.reservations.claim(scope.tenant, upload_id))

    def _get_s3_client_or_release(self, quota, amount: int):
        try:
            return self._get_s3_client()
        except BaseException:
            quota.release(amount)
            raise

    def _sweep_expired_uploads(self, scope: TenantScope) -> None:
        """Abort this tenant's abandoned uploads and release what they held (see module doc)."""
        now = datetime.now(UTC)
        for r in self._runtime.reservations.open(scope.tenant):
            if r.expired(now) and scope.contains(r.key, strict=True):
                with contextlib.suppress(ClientError, StorageUnavailable):
                    self._get_s3_client().abort_multipart_upload(
                        Bucket=r.bucket, Key=r.key, UploadId=r.upload_id,
                        **self._bucket_owner_params)
                self._quota(scope).release(self._runtime.reservations.claim(r.tenant, r.upload_id))


def declared_part_bytes() -> int:
    """The part size the platform expects of clients (the server's own
    ``MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE``; S3's minimum at least)."""
    return max(MIN_PART_BYTES, int(MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE.get()))

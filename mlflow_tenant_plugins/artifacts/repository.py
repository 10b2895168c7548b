"""``tenant-s3://BUCKET/PREFIX``: MLflow's S3 artifact repository, acting for one tenant at a time.

Layout — MLflow's own workspace layout, so nothing is rewritten between MLflow and S3::

    s3://BUCKET/PREFIX/workspaces/<tenant>/<experiment id>/<run id>/artifacts/...

With workspaces on and ``--artifacts-destination tenant-s3://BUCKET/PREFIX``, MLflow scopes
every proxied artifact path to ``workspaces/<request workspace>/...`` before it reaches the
repository, and an experiment's artifact location is ``<root>/workspaces/<tenant>/<id>``.

Binding. A repository built on the destination URI acts for no tenant and refuses every read
and write (fail closed). ``for_workspace(name)`` — which MLflow's ``get_artifact_repository``
calls with the request's workspace — returns a repository bound to that tenant (cached per
tenant): the tenant lives in the object, so MLflow's download thread pools, which inherit no
request context, still act for the right tenant. A repository built on a tenant URI
(``.../workspaces/<tenant>/...``: direct artifact roots, trace repositories) is bound to that
tenant and refuses to act for another workspace. The ``default`` workspace is no tenant: its
listings are empty and everything else is refused.

Why a subclass of ``S3ArtifactRepository``: MLflow's handlers test ``isinstance`` against its
mixins (multipart upload/download, presigned upload) and we want its listing, presigning and
error mapping. Two choke points make inherited code fail closed and tenant-scoped:
``parse_s3_compliant_uri`` (the only way inherited methods learn bucket and key prefix) and
``_get_s3_client`` (credentials that IAM confines to the tenant's prefix). Every public method
that takes a path is overridden to pass it through :mod:`.paths` before any S3 call, and every
write goes through the tenant's storage quota (:mod:`.quota`); a test fails if MLflow adds a
method to the parent that we do not override.
"""

from __future__ import annotations

import os
import posixpath
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from mimetypes import guess_type
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, NOT_IMPLEMENTED, PERMISSION_DENIED
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.s3_artifact_repo import BOTO_TO_MLFLOW_ERROR, S3ArtifactRepository
from mlflow.utils.file_utils import relative_path_to_artifact_path
from mlflow.utils.workspace_context import get_request_workspace

from mlflow_tenant_plugins.artifacts.errors import (
    KEY_EXISTS_CODES,
    NOT_FOUND_CODES,
    error_code,
    s3_errors,
)
from mlflow_tenant_plugins.artifacts.multipart import TenantMultipartUploads
from mlflow_tenant_plugins.artifacts.paths import (
    DEFAULT_WORKSPACE,
    TenantScope,
    check_relative,
    check_tenant,
    parse_uri,
)
from mlflow_tenant_plugins.artifacts.quota import GrowingHold, ObjectVersion, StorageQuota
from mlflow_tenant_plugins.artifacts.runtime import Runtime, runtime_for
from mlflow_tenant_plugins.artifacts.streaming import TenantStreamUploads
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.mlflow_hooks.server import is_object_key_within_path

TENANT_TAG = "mlflow-tenant"  # object tag for cost allocation
TRACE_ARCHIVE_FILE = "traces.pb"  # mlflow.tracing.otel.otel_archival.TRACE_ARCHIVAL_FILENAME
_DELETE_BATCH = 1000  # S3 DeleteObjects limit


# Files up to this size go to S3 in one PUT, as boto3's upload_file would send them.
SINGLE_PUT_MAX = TransferConfig().multipart_threshold


@dataclass(frozen=True)
class _Write:
    key: str
    size: int
    upload: Callable[[Any], None]  # called with the tenant's S3 client
    # One PUT that S3 refuses when the key exists (If-None-Match: *): True when written.
    create_only: Callable[[Any], bool] | None = None


class TenantS3ArtifactRepository(TenantMultipartUploads, TenantStreamUploads,
                                 S3ArtifactRepository):
    """S3 artifacts under ``PREFIX/workspaces/<tenant>/``, with tenant-scoped credentials,
    path checks and storage quota. See the module docstring for layout and binding."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        self._location = parse_uri(artifact_uri)
        super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
        self._settings = settings
        self._runtime_cache: Runtime | None = None
        self._workspace: str | None = self._location.tenant
        self._scope: TenantScope | None = (
            TenantScope.of(self._location) if self._location.tenant else None
        )
        self._origin: TenantS3ArtifactRepository | None = None
        self._bound: dict[str, TenantS3ArtifactRepository] = {}
        self._bind_lock = threading.Lock()

    # -- binding ---------------------------------------------------------------------------
    @property
    def tenant(self) -> str | None:
        return self._scope.tenant if self._scope else None

    @property
    def origin(self) -> TenantS3ArtifactRepository:
        """The unbound repository this one was derived from (itself if not derived)."""
        return self._origin or self

    def for_workspace(self, workspace: str) -> TenantS3ArtifactRepository:
        """The repository acting for ``workspace`` (MLflow calls this with the request's)."""
        if self._location.tenant is not None:
            if workspace != self._location.tenant:
                raise MlflowException(
                    f"artifacts of tenant '{self._location.tenant}' cannot be accessed from "
                    f"workspace '{workspace}'",
                    PERMISSION_DENIED,
                )
            return self
        return self.origin._bind(workspace)

    def _bind(self, workspace: str) -> TenantS3ArtifactRepository:
        if workspace != DEFAULT_WORKSPACE:
            check_tenant(workspace)
        with self._bind_lock:
            repo = self._bound.get(workspace)
            if repo is None:
                repo = TenantS3ArtifactRepository(
                    self.artifact_uri, self.tracking_uri, self.registry_uri, settings=self._settings
                )
                repo._origin, repo._workspace = self, workspace
                repo._runtime_cache = self._runtime_cache
                # One download pool per process, not per tenant: what runs in it is a method
                # bound to the tenant's repository, so the tenant travels with each task.
                repo.thread_pool.shutdown(wait=False)
                repo.thread_pool = self.thread_pool
                if workspace != DEFAULT_WORKSPACE:
                    repo._scope = TenantScope.of(self._location, workspace)
                self._bound[workspace] = repo
            return repo

    def _require_scope(self) -> TenantScope:
        if self._scope is None:
            who = "the 'default' workspace" if self._workspace else "no tenant"
            raise MlflowException(
                f"this {self.artifact_uri} repository acts for {who}: artifacts are stored per "
                "tenant, so the request must be made in a tenant's workspace",
                PERMISSION_DENIED,
            )
        return self._scope

    @property
    def _runtime(self) -> Runtime:
        if self._runtime_cache is None:
            self._runtime_cache = runtime_for(self._settings)
        return self._runtime_cache

    def _quota(self, scope: TenantScope) -> StorageQuota:
        return self._runtime.quota(scope.tenant)

    # -- the two choke points inherited code goes through ------------------------------------
    def parse_s3_compliant_uri(self, uri: str) -> tuple[str, str]:
        scope = self._require_scope()
        if uri != self.artifact_uri:
            raise MlflowException(f"{uri!r} is not this repository's location", INTERNAL_ERROR)
        return scope.bucket, scope.base

    def _get_s3_client(self) -> Any:
        scope = self._require_scope()
        return self._runtime.credentials.client_for(scope.tenant, scope.bucket, scope.fence)

    # -- writes ----------------------------------------------------------------------------
    def _put_args(self, name: str, content_type: str | None = None) -> dict[str, Any]:
        scope = self._require_scope()
        args: dict[str, Any] = {}
        guessed_type, guessed_encoding = guess_type(name)
        if content_type or guessed_type:
            args["ContentType"] = content_type or guessed_type
        if guessed_encoding and not content_type:
            args["ContentEncoding"] = guessed_encoding
        args.update(self._bucket_owner_params)
        args.update(self.get_s3_file_upload_extra_args() or {})
        tags = dict(urllib.parse.parse_qsl(args.get("Tagging", "")))
        tags[TENANT_TAG] = scope.tenant
        args["Tagging"] = urllib.parse.urlencode(tags)
        if kms_key := self._runtime.kms_key(scope.tenant):
            args["ServerSideEncryption"] = "aws:kms"
            args["SSEKMSKeyId"] = kms_key
        return args

    def _upload_file(self, s3_client: Any, local_file: str, bucket: str, key: str) -> None:
        s3_client.upload_file(
            Filename=local_file, Bucket=bucket, Key=key, ExtraArgs=self._put_args(local_file)
        )

    def _version(self, scope: TenantScope, key: str, etag: str, modified: Any, size: Any,
                 seen: int) -> ObjectVersion:
        return ObjectVersion.of(scope.tenant, scope.bucket, key, etag, modified, size, seen)

    def _replaced_version(self, client: Any, scope: TenantScope, key: str,
                          seen: int | None = None) -> ObjectVersion | None:
        """The object at ``key`` that a write is about to replace (HEAD), None if there is
        none. The release mark is read first unless the caller read it (see :mod:`.quota`)."""
        seen = self._quota(scope).mark() if seen is None else seen
        try:
            head = client.head_object(Bucket=scope.bucket, Key=key, **self._bucket_owner_params)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise
        return self._version(scope, key, head["ETag"], head["LastModified"],
                             head["ContentLength"], seen)

    def _existing_versions(
        self, client: Any, scope: TenantScope, keys: list[str], prefix: str | None
    ) -> dict[str, ObjectVersion]:
        """The objects that writing ``keys`` would replace: a HEAD for one key, one
        (paginated) listing of ``prefix`` for many."""
        seen = self._quota(scope).mark()
        if prefix is None:
            found = {k: self._replaced_version(client, scope, k, seen) for k in keys}
            return {k: v for k, v in found.items() if v is not None}
        wanted, versions = set(keys), {}
        for obj in self._listed(client, scope, prefix):
            if obj["Key"] in wanted:
                versions[obj["Key"]] = self._version(
                    scope, obj["Key"], obj["ETag"], obj["LastModified"], obj["Size"], seen)
        return versions

    def _listed(self, client: Any, scope: TenantScope, prefix: str) -> Iterator[dict]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=scope.bucket, Prefix=prefix, **self._bucket_owner_params
        )
        for page in pages:
            yield from page.get("Contents", [])

    def _write(self, scope: TenantScope, writes: list[_Write], prefix: str | None,
               held: GrowingHold | None = None) -> None:
        """Reserve the total (taking over ``held``), write each object, settle the
        reservation (see :mod:`.quota`)."""
        client = self._get_s3_client()
        with s3_errors(f"writing artifacts of tenant '{scope.tenant}'"):
            if len(writes) == 1 and writes[0].create_only is not None:
                self._write_new_or_replace(client, scope, writes[0], held)
                return
            existing = self._existing_versions(client, scope, [w.key for w in writes], prefix)
            with self._quota(scope).batch(sum(w.size for w in writes), held) as batch:
                for w in writes:
                    w.upload(client)
                    batch.wrote(w.size, existing.get(w.key))

    def _write_new_or_replace(self, client: Any, scope: TenantScope, w: _Write,
                              held: GrowingHold | None = None) -> None:
        """Most artifacts are new keys: write create-only, and only if S3 says the key is
        taken, learn the object it replaces (HEAD) and overwrite. Saves the HEAD every write
        would otherwise pay, and two writers racing for a new key are accounted exactly;
        writers racing to overwrite one key give the replaced object back once."""
        with self._quota(scope).batch(w.size, held) as batch:
            if w.create_only(client):
                batch.wrote(w.size)
                return
            replaced = self._replaced_version(client, scope, w.key)
            w.upload(client)
            batch.wrote(w.size, replaced)

    def _file_write(self, scope: TenantScope, local_file: str, key: str) -> _Write:
        def upload(client: Any) -> None:
            self._upload_file(client, local_file, scope.bucket, key)

        def create_only(client: Any) -> bool:
            try:
                with open(local_file, "rb") as body:
                    client.put_object(Bucket=scope.bucket, Key=key, Body=body, IfNoneMatch="*",
                                      **self._put_args(local_file))
            except ClientError as error:
                if error_code(error) in KEY_EXISTS_CODES:
                    return False
                raise
            return True

        size = os.path.getsize(local_file)
        return _Write(key, size, upload, create_only if size <= SINGLE_PUT_MAX else None)

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        scope = self._require_scope()
        local_file = os.fspath(local_file)
        key = scope.file_key(artifact_path, os.path.basename(local_file))
        self._write(scope, [self._file_write(scope, local_file, key)], prefix=None)

    def _log_spooled(self, scope: TenantScope, path: str, key: str, hold: GrowingHold) -> None:
        """Store a proxied upload spooled by :mod:`.streaming`, with the quota it holds."""
        self._write(scope, [self._file_write(scope, path, key)], prefix=None, held=hold)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Every path is checked and the folder's total reserved before the first upload."""
        scope = self._require_scope()
        local_dir = os.path.abspath(local_dir)
        writes = []
        for root, _, filenames in os.walk(local_dir):
            directory = check_relative(artifact_path)
            if root != local_dir:
                rel = relative_path_to_artifact_path(os.path.relpath(root, local_dir))
                directory = posixpath.join(directory, rel) if directory else rel
            for name in sorted(filenames):
                key = scope.file_key(directory, name)
                writes.append(self._file_write(scope, os.path.join(root, name), key))
        if writes:
            prefix = scope.list_prefix(scope.key(artifact_path))
            self._write(scope, writes, prefix=prefix if len(writes) > 1 else None)

    def upload_archived_trace_data_bytes(self, data: bytes) -> None:
        scope = self._require_scope()
        key = scope.key(TRACE_ARCHIVE_FILE, write=True)

        def upload(client: Any) -> None:
            args = self._put_args(key, content_type="application/octet-stream")
            client.upload_fileobj(
                Fileobj=BytesIO(data), Bucket=scope.bucket, Key=key, ExtraArgs=args
            )

        self._write(scope, [_Write(key, len(data), upload)], prefix=None)

    def create_presigned_upload_url(self, artifact_path: str, expiration: int = 900) -> Any:
        """Refused: a presigned PUT of unknown size would bypass the storage quota."""
        raise MlflowException(
            "presigned single-part uploads are not available for tenant-s3 artifacts (their "
            "size cannot be charged to the tenant's storage quota); use the proxied upload or "
            "multipart upload",
            NOT_IMPLEMENTED,
        )

    # -- reads -----------------------------------------------------------------------------
    def list_artifacts(self, path: str | None = None) -> list:
        if self._scope is None and self._workspace == DEFAULT_WORKSPACE:
            check_relative(path)
            return []  # MLflow's shared workspace holds nothing of any tenant
        scope = self._require_scope()
        scope.key(path)
        return super().list_artifacts(check_relative(path) or None)

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        scope = self._require_scope()
        key = scope.key(remote_file_path, write=True)  # an object strictly inside the prefix
        with s3_errors(f"downloading {remote_file_path!r}"):
            self._get_s3_client().download_file(
                scope.bucket, key, os.fspath(local_path),
                **({"ExtraArgs": self._bucket_owner_params} if self._bucket_owner_params else {}),
            )

    def get_download_presigned_url(self, artifact_path: str, expiration: int = 300) -> Any:
        self._require_scope().key(artifact_path, write=True)
        return super().get_download_presigned_url(check_relative(artifact_path), expiration)

    # -- deletes ---------------------------------------------------------------------------
    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        """Delete the file or folder at ``artifact_path`` and release the deleted bytes —
        each listed object version once, however many requests delete it (see :mod:`.quota`)."""
        scope = self._require_scope()
        key = scope.key(artifact_path)
        client = self._get_s3_client()
        prefix = scope.list_prefix(key) if key == scope.fence else key
        quota = self._quota(scope)
        listed: dict[str, ObjectVersion] = {}
        removed: list[ObjectVersion] = []
        errors: list[dict] = []
        with s3_errors(f"deleting artifacts of tenant '{scope.tenant}'"):
            seen = quota.mark()  # before the listing
            for obj in self._listed(client, scope, prefix):
                k = obj["Key"]
                if is_object_key_within_path(k, key) and scope.contains(k, strict=True):
                    listed[k] = self._version(scope, k, obj["ETag"], obj["LastModified"],
                                              obj["Size"], seen)
            keys = list(listed)
            try:
                for i in range(0, len(keys), _DELETE_BATCH):
                    response = client.delete_objects(
                        Bucket=scope.bucket,
                        Delete={"Objects": [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]},
                        **self._bucket_owner_params,
                    )
                    removed += [listed[d["Key"]] for d in response.get("Deleted", [])
                                if d.get("Key") in listed]
                    errors += response.get("Errors", [])
            finally:
                quota.release_removed(removed)
        if errors:
            first = errors[0]
            code = BOTO_TO_MLFLOW_ERROR.get(first.get("Code", ""), INTERNAL_ERROR)
            raise MlflowException(
                f"{len(errors)} object(s) could not be deleted, e.g. {first.get('Key')}: "
                f"{first.get('Message')}",
                code,
            )


def repository_for_request(repository: ArtifactRepository) -> ArtifactRepository:
    """The process-wide destination repository, bound to the current request's workspace.

    MLflow's ``_get_artifact_repo_mlflow_artifacts`` caches the first repository it builds —
    bound to whichever workspace made the first call — and never calls ``for_workspace`` again.
    The server wraps it with this function so each request gets its own tenant's repository
    (bound repositories are cached, so this costs a dictionary lookup).
    """
    if not isinstance(repository, TenantS3ArtifactRepository):
        return repository
    workspace = get_request_workspace()
    origin = repository.origin
    return origin.for_workspace(workspace) if workspace else origin

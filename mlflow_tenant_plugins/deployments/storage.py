"""What deployments keep in S3, inside the tenant's artifact prefix: model packages, and one
small status record per deployment while an operation runs or after one failed.

The record is how every worker answers ``get`` for a deploy that has no endpoint yet, how a
failure reason outlives the rollback that removed everything else, and how a name is claimed
atomically (a conditional PUT: ``If-None-Match: *``, or ``If-Match`` to take over a failed or
abandoned record). A successful operation deletes it: then SageMaker and its tags are the state.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_ALREADY_EXISTS

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments.names import TAG_DEPLOYMENT, TAG_TENANT

# Set by `mlflow server` for its workers (mlflow.server.ARTIFACTS_DESTINATION_ENV_VAR).
_SERVER_ARTIFACTS_DESTINATION_ENV = "_MLFLOW_SERVER_ARTIFACT_DESTINATION"
IN_FLIGHT = ("Creating", "Updating", "Deleting")
RECORD_FILE = "status.json"


def in_flight(record: dict, stale_after: float) -> bool:
    """An operation still running: in-flight status, and its record moved within
    ``stale_after`` seconds (older ones belong to a worker that died)."""
    return record.get("status") in IN_FLIGHT and (
        time.time() - float(record.get("updated_at", 0)) < stale_after)


def package_root(settings: Settings, tenant: str) -> tuple[str, str]:
    """(bucket, key prefix) under which the tenant's deployment objects live."""
    template = settings.deploy_package_root
    if not template:
        dest = os.environ.get(_SERVER_ARTIFACTS_DESTINATION_ENV, "")
        scheme, _, rest = dest.partition("://")
        if scheme not in ("s3", "tenant-s3") or not rest:
            raise MlflowException(
                "deployments need an S3 location for model packages: set deploy_package_root "
                "(e.g. s3://bucket/prefix/workspaces/{tenant}/deployments) or run the server "
                "with an s3:// or tenant-s3:// --artifacts-destination",
                INVALID_STATE,
            )
        template = f"s3://{rest.rstrip('/')}/workspaces/{{tenant}}/deployments"
    uri = template.replace("{tenant}", tenant)
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise MlflowException(f"deploy_package_root must be an s3:// URI, got {template!r}",
                              INVALID_STATE)
    return parsed.netloc, parsed.path.strip("/")


def make_tarball(model_dir: str, out_path: str) -> int:
    """``model.tar.gz`` with the model's files at its root, as SageMaker's MLflow image expects
    them under /opt/ml/model. Returns its size."""
    with tarfile.open(out_path, "w:gz") as tar:
        for entry in sorted(os.listdir(model_dir)):
            tar.add(os.path.join(model_dir, entry), arcname=entry)
    return os.path.getsize(out_path)


@dataclass(frozen=True)
class PackageLocation:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def from_uri(cls, uri: str) -> PackageLocation:
        parsed = urllib.parse.urlparse(uri)
        return cls(parsed.netloc, parsed.path.lstrip("/"))


class DeploymentStorage:
    def __init__(self, s3: Any, settings: Settings):
        self.s3 = s3
        self.settings = settings

    # -- packages --------------------------------------------------------------------------
    def package_location(self, tenant: str, name: str, deploy_id: str) -> PackageLocation:
        bucket, prefix = package_root(self.settings, tenant)
        return PackageLocation(bucket, f"{prefix}/{name}/{deploy_id}/model.tar.gz".lstrip("/"))

    def upload_package(self, path: str, loc: PackageLocation, tenant: str, name: str) -> None:
        tagging = urllib.parse.urlencode({TAG_TENANT: tenant, TAG_DEPLOYMENT: name})
        self.s3.upload_file(path, loc.bucket, loc.key, ExtraArgs={"Tagging": tagging})

    def delete_object(self, loc: PackageLocation) -> None:
        self.s3.delete_object(Bucket=loc.bucket, Key=loc.key)

    def packages(self, tenant: str, name: str) -> list[tuple[PackageLocation, int]]:
        """Every package of a deployment (the current one and any left by a crash)."""
        bucket, prefix = package_root(self.settings, tenant)
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/{name}/".lstrip("/")
        ):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/model.tar.gz"):
                    found.append((PackageLocation(bucket, obj["Key"]), int(obj["Size"])))
        return found

    # -- status records --------------------------------------------------------------------
    def _record_location(self, tenant: str, name: str) -> PackageLocation:
        bucket, prefix = package_root(self.settings, tenant)
        return PackageLocation(bucket, f"{prefix}/{name}/{RECORD_FILE}".lstrip("/"))

    def get_record(self, tenant: str, name: str) -> tuple[dict, str] | None:
        loc = self._record_location(tenant, name)
        try:
            obj = self.s3.get_object(Bucket=loc.bucket, Key=loc.key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(obj["Body"].read()), obj["ETag"]

    def put_record(self, tenant: str, name: str, record: dict,
                   if_match: str | None = None, if_none_match: bool = False) -> str:
        loc = self._record_location(tenant, name)
        record = {**record, "updated_at": time.time()}
        kwargs: dict[str, Any] = {}
        if if_match:
            kwargs["IfMatch"] = if_match
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        response = self.s3.put_object(
            Bucket=loc.bucket, Key=loc.key, Body=json.dumps(record).encode(),
            ContentType="application/json", **kwargs,
        )
        return response["ETag"]

    def claim(self, tenant: str, name: str, record: dict, operation: str,
              stale_after: float) -> str:
        """Take the deployment's name for one operation, atomically across workers.

        Refused while another operation on it is in flight (unless that one's record has not
        moved for ``stale_after`` seconds: its worker died). Returns the record's ETag.
        """
        for _ in range(3):
            current = self.get_record(tenant, name)
            try:
                if current is None:
                    return self.put_record(tenant, name, record, if_none_match=True)
                existing, etag = current
                if in_flight(existing, stale_after):
                    raise MlflowException(
                        f"deployment '{name}' is busy: {existing.get('operation')} in progress "
                        f"(status {existing.get('status')}); try again when it is done",
                        RESOURCE_ALREADY_EXISTS if operation == "create" else INVALID_STATE,
                    )
                return self.put_record(tenant, name, {**record, "previous": existing},
                                       if_match=etag)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("PreconditionFailed", "412",
                                                         "ConditionalRequestConflict"):
                    raise
        raise MlflowException(
            f"deployment '{name}' is being changed by another request; try again",
            RESOURCE_ALREADY_EXISTS if operation == "create" else INVALID_STATE,
        )

    def delete_record(self, tenant: str, name: str) -> None:
        loc = self._record_location(tenant, name)
        self.s3.delete_object(Bucket=loc.bucket, Key=loc.key)

    def records(self, tenant: str) -> list[dict]:
        bucket, prefix = package_root(self.settings, tenant)
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/".lstrip("/")
        ):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
                parts = rest.split("/")
                if len(parts) == 2 and parts[1] == RECORD_FILE:
                    found = self.get_record(tenant, parts[0])
                    if found:
                        out.append(found[0])
        return out

"""Where deployments keep their state: model packages in S3, operation records in the registry.

Neither lives where a tenant can write. Packages (``model.tar.gz``, what SageMaker loads) go
under ``deploy_package_root``, by default ``<ROOT>/platform/deployments/<tenant>/`` of a
``tenant-s3://BUCKET/ROOT`` artifact destination: a tenant-s3 repository addresses only
``<ROOT>/workspaces/<tenant>/`` (its path fence, and the IAM policies of the tenants' artifact
credentials), so MLflow's artifact proxy can never read or write there, and the per-tenant
SageMaker execution role reads only its own tenant's ``.../<tenant>/`` (``deploy/iam/``). A
root inside an artifact prefix (any ``workspaces`` segment, or anywhere under a plain
``s3://`` destination, whose ``default`` workspace reaches the whole root) is refused, and the
root must separate tenants (``{tenant}``). Packages are copies of models the tenant already
stores, bounded by its endpoint quota (one per deployment, two during an update): they are not
charged to its storage quota, which counts what its artifact prefix holds.

Records (:mod:`mlflow_tenant_plugins.tenancy.deployment_records`) say what runs, what it holds
in the ledger, and why it failed; they are how a name is claimed atomically across workers.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_CONFLICT

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments.names import TAG_DEPLOYMENT, TAG_TENANT
from mlflow_tenant_plugins.deployments.roles import platform_config_error
from mlflow_tenant_plugins.mlflow_hooks.server import artifacts_destination
from mlflow_tenant_plugins.tenancy.deployment_records import (
    DeploymentRecords,
    RecordConflict,
    clamp_timestamp,
)

IN_FLIGHT = ("Creating", "Updating", "Deleting")
PACKAGE_DIR = "platform/deployments"  # under the artifact destination's ROOT
_WORKSPACES = "workspaces"  # MLflow's segment for per-workspace artifact roots


def busy(name: str, doing: str) -> MlflowException:
    """409 ``RESOURCE_CONFLICT`` (MLflow's own status for it) for a deployment that another
    operation is changing. Not ``INVALID_STATE``: MLflow answers that 500, which the stock
    client retries with backoff for minutes before the user sees why. Being busy passes; the
    caller is told what is in flight and to retry when it has finished."""
    return MlflowException(
        f"deployment '{name}' is busy: {doing}; retry when it has finished "
        "('mlflow deployments get' shows its status)", RESOURCE_CONFLICT)


def in_flight(record: dict, stale_after: float, now: float | None = None) -> bool:
    """An operation still running: in-flight status, and its record moved within
    ``stale_after`` seconds (older ones belong to a worker that died). The record's time is
    clamped to now (a time in the future never makes a record fresh for ever)."""
    now = time.time() if now is None else now
    return record.get("status") in IN_FLIGHT and (
        now - clamp_timestamp(record.get("updated_at", 0), now) < stale_after)


def _destination() -> tuple[str, str, str] | None:
    """(scheme, bucket, root) of the server's ``--artifacts-destination`` when it is S3."""
    dest = artifacts_destination()
    parsed = urllib.parse.urlparse(dest)
    if parsed.scheme not in ("s3", "tenant-s3") or not parsed.netloc:
        return None
    return parsed.scheme, parsed.netloc, parsed.path.strip("/")


def _reachable_by_artifacts(bucket: str, key: str) -> str | None:
    """Why the artifact proxy (or a tenant's artifact credentials) could address ``key``."""
    segments = key.split("/")
    if _WORKSPACES in segments:
        return "it lies in a tenant's artifact prefix (a 'workspaces' segment)"
    dest = _destination()
    if dest is not None and dest[1] == bucket:
        scheme, _bucket, root = dest
        inside_root = not root or key == root or key.startswith(root + "/")
        if scheme == "s3" and inside_root:
            return (f"it lies under the s3:// artifact destination's root {root!r}, which "
                    "MLflow's default workspace addresses")
    return None


def package_root(settings: Settings, tenant: str) -> tuple[str, str]:
    """(bucket, key prefix) under which the tenant's model packages live."""
    template = settings.deploy_package_root
    if not template:
        dest = _destination()
        if dest is None or dest[0] != "tenant-s3":
            raise platform_config_error(
                "set deploy_package_root (e.g. s3://bucket/platform/deployments/{tenant}, "
                "outside every tenant's artifact prefix), or run the server with a "
                "tenant-s3:// --artifacts-destination")
        _scheme, bucket, root = dest
        template = f"s3://{bucket}/{posixpath.join(root, PACKAGE_DIR)}/{{tenant}}"
    if "{tenant}" not in template:
        raise platform_config_error(
            f"deploy_package_root {template!r} must contain {{tenant}}: each tenant's "
            "execution role reads only its own packages")
    parsed = urllib.parse.urlparse(template.replace("{tenant}", tenant))
    key = parsed.path.strip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key:
        raise platform_config_error(
            f"deploy_package_root must be an s3://BUCKET/PREFIX URI, got {template!r}")
    why = _reachable_by_artifacts(parsed.netloc, key)
    if why:
        raise platform_config_error(
            f"deploy_package_root {template!r} is writable by tenants: {why}")
    return parsed.netloc, key


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


def check_kept_package(settings: Settings, tenant: str, name: str, package: str) -> None:
    """An update without a model keeps the endpoint's package; one made before packages
    moved out of the tenant's artifact prefix may have been replaced by the tenant (and the
    tenant's execution role reads only the platform's prefix): it must be repackaged."""
    bucket, prefix = package_root(settings, tenant)
    loc = PackageLocation.from_uri(package or "")
    if loc.bucket != bucket or not loc.key.startswith(f"{prefix}/"):
        raise MlflowException.invalid_parameter_value(
            f"deployment '{name}' runs a package stored where the platform no longer keeps "
            "packages; update it with its model (-m models:/NAME/VERSION) to repackage it")


class DeploymentStorage:
    def __init__(self, s3: Any, settings: Settings, records: DeploymentRecords):
        self.s3 = s3
        self.settings = settings
        self.table = records

    # -- packages --------------------------------------------------------------------------
    def package_location(self, tenant: str, name: str, deploy_id: str) -> PackageLocation:
        bucket, prefix = package_root(self.settings, tenant)
        return PackageLocation(bucket, f"{prefix}/{name}/{deploy_id}/model.tar.gz")

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
            Bucket=bucket, Prefix=f"{prefix}/{name}/"
        ):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/model.tar.gz"):
                    found.append((PackageLocation(bucket, obj["Key"]), int(obj["Size"])))
        return found

    # -- operation records (the registry's table) ---------------------------------------------
    def get_record(self, tenant: str, name: str) -> tuple[dict, int] | None:
        """(record, version) or None."""
        return self.table.get(tenant, name)

    def put_record(self, tenant: str, name: str, record: dict) -> int:
        return self.table.put(tenant, name, record)

    def claim(self, tenant: str, name: str, record: dict, operation: str,
              stale_after: float) -> int:
        """Take the deployment's name for one operation, atomically across workers.

        Refused while another operation on it is in flight (unless that one's record has not
        moved for ``stale_after`` seconds: its worker died). Returns the record's version.
        """
        for _ in range(3):
            current = self.get_record(tenant, name)
            try:
                if current is None:
                    return self.table.put(tenant, name, record, if_absent=True)
                existing, version = current
                if in_flight(existing, stale_after):
                    raise busy(name, f"{existing.get('operation')} in progress (status "
                                     f"{existing.get('status')})")
                previous = {k: v for k, v in existing.items() if k != "previous"}
                return self.table.put(tenant, name, {**record, "previous": previous},
                                      if_version=version)
            except RecordConflict:
                continue
        raise busy(name, "another request is changing it at this moment")

    def delete_record(self, tenant: str, name: str) -> None:
        self.table.delete(tenant, name)

    def records(self, tenant: str) -> list[dict]:
        return self.table.list(tenant)

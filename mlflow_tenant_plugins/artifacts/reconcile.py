"""Reconcile the storage ledger with what S3 holds (``mlflow-tenants usage --reconcile``).

The ledger is kept exact by the repository, but writes that crash between S3 and the ledger,
objects changed outside MLflow, or lifecycle expirations make it drift. This lists each
tenant's prefix (paginated) with the caller's own AWS credentials, and sets the tenant's
``storage_bytes`` use to the listed total when they differ.

A tenant whose use changes while its prefix is being listed (a write in flight) is listed
again, up to three times, and left alone (reported ``busy``) if it never holds still, so a
reconcile never overwrites a concurrent reservation with a stale total.

Open multipart uploads hold quota for parts S3 does not list as objects yet: the ledger's
expected total is the listed bytes plus those reservations. Reservations older than
:data:`.reservations.MAX_AGE` (abandoned uploads) are swept first: the upload is aborted in S3
(its parts deleted) and the reservation released.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from mlflow_tenant_plugins.artifacts.paths import (
    SCHEME,
    WORKSPACES_DIR,
    TenantScope,
    parse_uri,
)
from mlflow_tenant_plugins.artifacts.quota import RESOURCE
from mlflow_tenant_plugins.artifacts.reservations import MultipartReservations
from mlflow_tenant_plugins.artifacts.runtime import runtime_for
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.tenancy.registry import TenantRegistry

_ATTEMPTS = 3


@dataclass(frozen=True)
class TenantStorage:
    tenant: str
    prefix: str
    ledger_bytes: int  # what the ledger said before reconciling
    s3_bytes: int  # what S3 holds under the prefix
    objects: int
    status: str  # "ok" (no drift), "corrected", "drift" (dry run) or "busy"
    reserved: int = 0  # held by open multipart uploads (their parts are not objects yet)
    swept: int = 0  # abandoned multipart uploads aborted and released

    @property
    def delta(self) -> int:
        return self.s3_bytes + self.reserved - self.ledger_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta": self.delta}


@dataclass
class ReconcileReport:
    bucket: str
    root: str
    dry_run: bool
    tenants: list[TenantStorage] = field(default_factory=list)
    # ``workspaces/<name>/`` prefixes in S3 that belong to no tenant of the registry.
    unknown_prefixes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[TenantStorage]:
        return [t for t in self.tenants if t.status == "corrected"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "root": self.root,
            "dry_run": self.dry_run,
            "tenants": [t.to_dict() for t in self.tenants],
            "unknown_prefixes": self.unknown_prefixes,
        }


def measure(client: Any, bucket: str, prefix: str, page_size: int = 1000) -> tuple[int, int]:
    """(bytes, objects) under ``prefix``, every page."""
    total = count = 0
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        for obj in page.get("Contents", []):
            total += int(obj["Size"])
            count += 1
    return total, count


def _destination(destination: str) -> tuple[str, str]:
    uri = destination if "://" in destination else f"{SCHEME}://{destination}"
    location = parse_uri(uri)
    if location.tenant is not None:
        raise ValueError(f"{destination!r} is a tenant's location; give the destination root")
    return location.bucket, location.root


def reconcile(
    registry: TenantRegistry,
    destination: str,
    *,
    settings: Settings | None = None,
    dry_run: bool = False,
    client: Any = None,
    page_size: int = 1000,
    tenants: list[str] | None = None,
) -> ReconcileReport:
    """Compare each tenant's prefix under ``destination`` (``tenant-s3://BUCKET/PREFIX`` or
    ``BUCKET/PREFIX``) with the ledger and, unless ``dry_run``, correct the ledger.
    ``tenants`` limits the run to those tenants (default: every tenant of the registry)."""
    bucket, root = _destination(destination)
    client = client or runtime_for(settings).credentials.ambient_client()
    ledger = registry.ledger
    report = ReconcileReport(bucket, root, dry_run)
    known = {t.name for t in registry.list_tenants()}
    reservations = MultipartReservations(registry.engine)
    for tenant in sorted(known) if tenants is None else tenants:
        if tenant not in known:
            raise ValueError(f"tenant {tenant!r} does not exist")
        fence = TenantScope(bucket, root, tenant, root).fence
        swept = 0 if dry_run else sweep_abandoned(registry, reservations, client, tenant)
        status, held = "busy", 0
        for _ in range(_ATTEMPTS):
            before = ledger.get(tenant, RESOURCE).used
            s3_bytes, objects = measure(client, bucket, fence + "/", page_size)
            held = sum(r.reserved for r in reservations.open(tenant))
            if ledger.get(tenant, RESOURCE).used != before:
                continue  # a write or delete landed meanwhile: list again
            if s3_bytes + held == before:
                status = "ok"
            elif dry_run:
                status = "drift"
            else:
                ledger.set_used(tenant, RESOURCE, s3_bytes + held)
                status = "corrected"
            break
        report.tenants.append(TenantStorage(tenant, fence + "/", before, s3_bytes, objects,
                                            status, held, swept))
    base = "/".join(p for p in (root, WORKSPACES_DIR) if p) + "/"
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=base, Delimiter="/", PaginationConfig={"PageSize": page_size}
    ):
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(base) :].rstrip("/")
            if name not in known:
                report.unknown_prefixes.append(common["Prefix"])
    return report


def sweep_abandoned(registry: TenantRegistry, reservations: MultipartReservations, client: Any,
                    tenant: str) -> int:
    """Abort the tenant's multipart uploads whose reservation expired and release it."""
    now, swept = datetime.now(UTC), 0
    for r in reservations.open(tenant):
        if not r.expired(now):
            continue
        with contextlib.suppress(ClientError):
            client.abort_multipart_upload(Bucket=r.bucket, Key=r.key, UploadId=r.upload_id)
        registry.ledger.release(tenant, RESOURCE, reservations.claim(tenant, r.upload_id))
        swept += 1
    return swept

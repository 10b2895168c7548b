"""Quota reserved by open multipart uploads, shared by every worker and server instance.

A multipart upload is created, completed and aborted by three requests that may land on
different workers: the amount reserved at creation is recorded here (in the registry's
``mlt_platform_state`` table, one row per upload, keyed by a hash of S3's upload id) so that
completion settles it and abort releases it exactly once (:meth:`claim` deletes the row; of two
concurrent claims one gets the amount, the other 0).

Abandoned uploads (the client died between creation and completion) must not hold quota
forever: a reservation older than :data:`MAX_AGE` is *expired*; :func:`.multipart` sweeps a
tenant's expired reservations when the tenant starts a new upload, and ``mlflow-tenants usage
--reconcile`` sweeps every tenant's — both abort the upload in S3 (deleting its parts) and
release the reservation. ``MAX_AGE`` (one day) is far beyond the life of the part URLs (the
signing session, ``artifact_credential_duration_seconds``), and matches the bucket lifecycle
rule ``AbortIncompleteMultipartUpload`` / ``DaysAfterInitiation: 1`` the admin guide
recommends for parts that no reservation knows of.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from mlflow_tenant_plugins.tenancy.models import PlatformStateRow, utcnow

MAX_AGE = timedelta(days=1)
_PREFIX = "mpu:"
_T = PlatformStateRow.__table__


@dataclass(frozen=True)
class Reservation:
    tenant: str
    bucket: str
    key: str
    upload_id: str
    reserved: int
    created: str  # ISO 8601, UTC

    def expired(self, now: datetime) -> bool:
        return now - datetime.fromisoformat(self.created) > MAX_AGE


def _row_key(upload_id: str) -> str:
    return _PREFIX + hashlib.sha256(upload_id.encode()).hexdigest()[:56]  # column is 64 chars


class MultipartReservations:
    def __init__(self, engine: Engine):
        self._engine = engine

    def record(self, tenant: str, bucket: str, key: str, upload_id: str, reserved: int) -> None:
        value = Reservation(tenant, bucket, key, upload_id, reserved, utcnow().isoformat())
        with self._engine.begin() as conn:
            conn.execute(insert(_T).values(key=_row_key(upload_id),
                                           value=json.dumps(asdict(value)), updated_at=utcnow()))

    def claim(self, tenant: str, upload_id: str) -> int:
        """The amount reserved for ``upload_id`` by ``tenant``, removed from the record (the
        caller settles or releases it); 0 if there is none, it is another tenant's, or another
        request claimed it first."""
        row_key = _row_key(upload_id)
        with self._engine.begin() as conn:
            value = conn.execute(select(_T.c.value).where(_T.c.key == row_key)).scalar()
            if value is None:
                return 0
            found = Reservation(**json.loads(value))
            if found.tenant != tenant or found.upload_id != upload_id:
                return 0
            gone = conn.execute(delete(_T).where(_T.c.key == row_key, _T.c.value == value))
            return found.reserved if gone.rowcount == 1 else 0

    def open(self, tenant: str | None = None) -> list[Reservation]:
        with self._engine.connect() as conn:
            values = conn.execute(select(_T.c.value).where(_T.c.key.startswith(_PREFIX))).scalars()
            found = [Reservation(**json.loads(v)) for v in values]
        return [r for r in found if tenant is None or r.tenant == tenant]

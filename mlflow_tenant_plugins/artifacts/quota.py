"""A tenant's storage quota as artifact writes spend it, on the registry's usage ledger.

Accounting rules (the ledger counts bytes of objects under the tenant's prefix):

- A write reserves its full size *before* S3 is written (one atomic conditional UPDATE in the
  ledger, so concurrent writers can never pass the quota together). A write that fails gives
  back what it did not write.
- Overwriting a key: the new size is reserved up front and, once the new object is in place,
  the size of the object it replaced is released. A one-PUT write is create-only
  (``If-None-Match: *``): only when S3 answers that the key is taken is the replaced size
  learnt (HEAD) and the key overwritten, so new keys — nearly all artifacts — pay no HEAD.
  The ledger ends at the true delta; while the write runs it needs headroom for the new
  size (old and new both count, as both exist in S3 until the overwrite commits).
- A delete releases the sizes of the objects S3 reports deleted (listed before the delete).
- Each stored object *version* is given back at most once, whoever removes it: S3 reports a
  key deleted whether or not it still existed, and concurrent overwrites each replace "the"
  old object, so a release names the version it gives back (:class:`ObjectVersion`, from the
  listing or HEAD) and only the first release of a version counts, across threads, workers
  and instances (``tenancy.releases``). Without that, concurrent deletes of one object each
  gave its size back and the ledger fell below what S3 holds, without limit.
- A proxied upload whose size is learnt while it arrives (the body of ``PUT``) holds quota as
  it is spooled (:class:`GrowingHold`): its ``Content-Length`` is reserved before a byte is
  read, and a body of unknown length is refused as soon as it outgrows the tenant's remaining
  quota, so the server's disk never holds more for a tenant than the tenant may store.
- Multipart uploads reserve their declared size at creation and settle at completion (see
  :mod:`.multipart`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded

if TYPE_CHECKING:
    from mlflow_tenant_plugins.tenancy.usage import UsageLedger

RESOURCE = "storage_bytes"
MIN_PART_BYTES = 5 * 2**20  # S3: every part but the last is at least 5 MiB
HOLD_STEP = 8 * 2**20  # a growing upload reserves in steps of this size


@dataclass(frozen=True)
class ObjectVersion:
    """One stored version of an object, as a listing or HEAD shows it: what a release gives
    back, named so that it is given back once (see the module docstring)."""

    digest: str
    size: int
    seen: int  # the ledger's release mark, read before the object was looked at

    @classmethod
    def of(cls, tenant: str, bucket: str, key: str, etag: str, modified: datetime, size: int,
           seen: int) -> ObjectVersion:
        # LastModified to S3's whole second: a HEAD and a listing of one object agree on it.
        name = [tenant, bucket, key, etag.strip('"'), int(modified.timestamp()), int(size)]
        digest = hashlib.sha256(json.dumps(name).encode()).hexdigest()
        return cls(digest, int(size), seen)


@dataclass
class Batch:
    """Progress of a reserved write: what was written and what those writes replaced."""

    reserved: int
    written: int = 0
    replaced: list[ObjectVersion] = field(default_factory=list)

    def wrote(self, size: int, replaced: ObjectVersion | None = None) -> None:
        self.written += size
        if replaced is not None:
            self.replaced.append(replaced)


class StorageQuota:
    def __init__(self, ledger: UsageLedger, tenant: str):
        self.ledger = ledger
        self.tenant = tenant

    def reserve(self, amount: int) -> None:
        self.ledger.reserve(self.tenant, RESOURCE, amount)

    def release(self, amount: int) -> None:
        self.ledger.release(self.tenant, RESOURCE, amount)

    def mark(self) -> int:
        """Read before listing or HEADing objects whose removal will be released."""
        return self.ledger.release_mark()

    def release_removed(self, removed: Sequence[ObjectVersion], also: int = 0) -> int:
        """Give back ``also`` and the sizes of ``removed``, each version at most once."""
        return self.ledger.release_removed(self.tenant, RESOURCE, removed, also)

    def growing(self) -> GrowingHold:
        return GrowingHold(self)

    def holding(self, amount: int) -> GrowingHold:
        """A hold for ``amount`` already reserved (e.g. at a multipart upload's creation)."""
        hold = GrowingHold(self)
        hold.held = amount
        return hold

    @contextlib.contextmanager
    def batch(self, total: int, held: GrowingHold | None = None) -> Iterator[Batch]:
        """Reserve ``total`` for a write of one or more objects (what ``held`` already holds
        is taken over, not reserved twice). On exit, success or failure, give back what was
        reserved but not written plus what the written objects replaced (each replaced
        version once: a concurrent overwrite may have given it back already)."""
        pre = held.take() if held is not None else 0
        if total > pre:
            try:
                self.reserve(total - pre)
            except BaseException:
                self.release(pre)
                raise
        elif pre > total:
            self.release(pre - total)
        batch = Batch(total)
        try:
            yield batch
        finally:
            self.release_removed(batch.replaced, also=max(0, total - batch.written))



class GrowingHold:
    """Quota held for a body whose size grows while it arrives. Reserved in steps of
    :data:`HOLD_STEP` (one database round trip per step, not per chunk), or exactly what is
    needed when a step no longer fits; a refusal names the whole size asked for."""

    def __init__(self, quota: StorageQuota):
        self.quota = quota
        self.held = 0

    def grow_to(self, size: int) -> None:
        if size <= self.held:
            return
        stepped = -(-size // HOLD_STEP) * HOLD_STEP
        for target in (stepped, size) if stepped > size else (size,):
            try:
                self.quota.reserve(target - self.held)
            except QuotaExceeded as refused:
                if target == size:
                    raise QuotaExceeded(
                        self.quota.tenant, RESOURCE, size, max(0, refused.used - self.held),
                        refused.limit, note="refused before the upload was stored",
                    ) from None
                continue
            self.held = target
            return

    def take(self) -> int:
        """Hand what is held to the caller (who then releases it); holds nothing after."""
        held, self.held = self.held, 0
        return held

    def release(self) -> None:
        self.quota.release(self.take())

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
  size (old and new both count, as both exist in S3 until the overwrite commits). Two
  writers overwriting one key at once can leave a small drift, which ``reconcile`` corrects.
- A delete releases the sizes of the objects S3 reports deleted (listed before the delete).
- A proxied upload whose size is learnt while it arrives (the body of ``PUT``) holds quota as
  it is spooled (:class:`GrowingHold`): its ``Content-Length`` is reserved before a byte is
  read, and a body of unknown length is refused as soon as it outgrows the tenant's remaining
  quota, so the server's disk never holds more for a tenant than the tenant may store.
- Multipart uploads reserve their declared size at creation and settle at completion (see
  :mod:`.multipart`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded

if TYPE_CHECKING:
    from mlflow_tenant_plugins.tenancy.usage import UsageLedger

RESOURCE = "storage_bytes"
MIN_PART_BYTES = 5 * 2**20  # S3: every part but the last is at least 5 MiB
HOLD_STEP = 8 * 2**20  # a growing upload reserves in steps of this size


@dataclass
class Batch:
    """Progress of a reserved write: what was written and what those writes replaced."""

    reserved: int
    written: int = 0
    replaced: int = 0

    def wrote(self, size: int, replaced: int = 0) -> None:
        self.written += size
        self.replaced += replaced


class StorageQuota:
    def __init__(self, ledger: UsageLedger, tenant: str):
        self.ledger = ledger
        self.tenant = tenant

    def reserve(self, amount: int) -> None:
        self.ledger.reserve(self.tenant, RESOURCE, amount)

    def release(self, amount: int) -> None:
        self.ledger.release(self.tenant, RESOURCE, amount)

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
        reserved but not written plus what the written objects replaced."""
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
            self.release(max(0, total - batch.written) + batch.replaced)



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

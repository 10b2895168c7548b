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
- Multipart uploads reserve at completion, from S3's own list of the uploaded parts (exact and
  atomic: the object does not exist until ``CompleteMultipartUpload``). Creation only checks
  that the smallest object the parts could make still fits, so a doomed upload fails early.
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

    @contextlib.contextmanager
    def batch(self, total: int) -> Iterator[Batch]:
        """Reserve ``total`` for a write of one or more objects. On exit, success or failure,
        give back what was reserved but not written plus what the written objects replaced."""
        self.reserve(total)
        batch = Batch(total)
        try:
            yield batch
        finally:
            self.release(max(0, total - batch.written) + batch.replaced)

    def precheck(self, amount: int) -> None:
        """Fail early (429) if ``amount`` cannot fit now; reserves nothing."""
        usage = self.ledger.get(self.tenant, RESOURCE)
        if usage.used + amount > usage.limit:
            raise QuotaExceeded(self.tenant, RESOURCE, amount, usage.used, usage.limit)

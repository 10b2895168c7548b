"""The ledger heals itself: the server's periodic reconcile (healing.py) corrects storage
drift from S3 (moto's server) under its lease, counts each correction, and leaves a tenant
with nothing wrong alone; two contenders never reconcile at once."""

from __future__ import annotations

import time

from mlflow_tenant_plugins import healing
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.monitoring.lease import Lease
from mlflow_tenant_plugins.tenancy import TenantRegistry

BUCKET = "mlt-healing"
DEST = f"tenant-s3://{BUCKET}/platform"


def test_the_periodic_reconcile_corrects_storage_drift_and_counts_it(moto_server, tmp_path,
                                                                      monkeypatch):
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    registry = TenantRegistry(f"sqlite:///{tmp_path}/h.db")
    registry.create_tenant("drifty")
    registry.create_tenant("steady")
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for i in range(2):
        s3.put_object(Bucket=BUCKET, Key=f"platform/workspaces/drifty/1/r/artifacts/f{i}",
                      Body=b"x" * 700)
    registry.ledger.reserve("drifty", "storage_bytes", 50)  # a write that crashed halfway
    settings = Settings(database_uri=registry.database_uri,
                        aws_endpoint_url=moto_server.url, ledger_reconcile_interval_seconds=1,
                        ledger_reconcile_storage="on")
    counted: list[tuple[str, int]] = []

    assert healing.reconcile_once(registry, settings, DEST, None,
                                  lambda r, n: counted.append((r, n))) == 1
    assert registry.ledger.get("drifty", "storage_bytes").used == 1400
    assert registry.ledger.get("steady", "storage_bytes").used == 0
    assert counted == [("storage_bytes", 1)]
    assert healing.reconcile_once(registry, settings, DEST, None,
                                  lambda r, n: counted.append((r, n))) == 0  # healed

    # In the server: a Periodic under the lease. A second contender holding the lease
    # keeps it from running; once released, the drift is corrected within the interval.
    registry.ledger.reserve("drifty", "storage_bytes", 99)
    other = Lease(registry.engine, healing.LEASE_KEY, 60, holder="other-instance")
    assert other.acquire()
    task = healing.start(registry, settings, DEST, None, None)
    try:
        time.sleep(3)
        assert registry.ledger.get("drifty", "storage_bytes").used == 1499  # not its turn
        other.release()
        deadline = time.monotonic() + 60
        while registry.ledger.get("drifty", "storage_bytes").used != 1400:
            assert time.monotonic() < deadline, "the periodic reconcile never ran"
            time.sleep(0.2)
    finally:
        task.stop()


def test_storage_is_not_recounted_periodically_unless_asked(tmp_path):
    """An S3 recount cannot tell a delete in flight from drift (it would give the size back
    twice), so by default the server recounts deployments only, and with no deployments it
    starts nothing."""
    registry = TenantRegistry(f"sqlite:///{tmp_path}/off.db")
    settings = Settings(database_uri=registry.database_uri)
    assert settings.ledger_reconcile_storage == "off"
    assert healing.start(registry, settings, DEST, None, None) is None

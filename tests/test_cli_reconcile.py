"""`mlflow-tenants usage --reconcile`: the storage ledger corrected from what S3 really holds
under each tenant's prefix (moto's server as S3), as a subprocess like an admin runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from mlflow_tenant_plugins.tenancy import TenantRegistry

BUCKET = "mlt-reconcile-cli"
DEST = f"tenant-s3://{BUCKET}/platform"


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("mlflow-tenants", path=os.path.dirname(sys.executable))
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=300)


def test_reconcile_corrects_ledger_drift_and_reports_it(moto_server, tmp_path):
    db = f"sqlite:///{tmp_path}/r.db"
    registry = TenantRegistry(db)
    registry.create_tenant("drifty")
    registry.create_tenant("steady")
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"platform/workspaces/drifty/1/r/artifacts/f{i}",
                      Body=b"x" * 1000)
    registry.ledger.reserve("drifty", "storage_bytes", 50)  # the ledger believes 50 bytes
    env = {**os.environ, **moto_server.env(), "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url}

    dry = _cli(env, "--db", db, "usage", "--reconcile", DEST, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "drifty: ledger 50 B -> S3" in dry.stdout and "would correct" in dry.stdout
    assert registry.ledger.get("drifty", "storage_bytes").used == 50

    done = _cli(env, "--db", db, "usage", "--reconcile", DEST, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    drifty = next(t for t in report["reconcile"]["tenants"] if t["tenant"] == "drifty")
    assert drifty["s3_bytes"] == 3000 and drifty["status"] == "corrected"
    assert registry.ledger.get("drifty", "storage_bytes").used == 3000
    assert registry.ledger.get("steady", "storage_bytes").used == 0

    bad = _cli(env, "--db", db, "usage", "--dry-run")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

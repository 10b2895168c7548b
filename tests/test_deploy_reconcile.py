"""The endpoint and instance ledger reconciled with SageMaker (``usage --reconcile-deployments``)
after the leak a worker leaves when it dies mid-deploy, against moto's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlflow_tenant_plugins.deployments.reconcile import reconcile


def _used(deploy_env, tenant: str) -> dict[str, int]:
    return {r: deploy_env.registry.ledger.get(tenant, r).used for r in ("endpoints", "instances")}


def test_a_dead_workers_reservation_is_given_back_and_live_ones_are_kept(
    deploy_env, pyfunc_model
):
    tenant = deploy_env.tenant(endpoints=3, instances=6)
    svc = deploy_env.service()
    svc.create(tenant, "live", pyfunc_model, config={"max_instances": "2"})
    svc.wait_for_jobs(30)
    # What a worker that died after reserving for an update (1 more instance and a surge of
    # 2) and a create (1 endpoint, 1 instance) leaves behind in the ledger.
    deploy_env.registry.ledger.reserve(tenant, "instances", 4)
    deploy_env.registry.ledger.reserve(tenant, "endpoints", 1)
    assert _used(deploy_env, tenant) == {"endpoints": 2, "instances": 6}

    [dry] = reconcile(svc, [tenant], dry_run=True)
    assert (dry.status, dry.sagemaker) == ("drift", {"endpoints": 1, "instances": 2})
    assert _used(deploy_env, tenant) == {"endpoints": 2, "instances": 6}

    [done] = reconcile(svc, [tenant])
    assert done.status == "corrected" and done.ledger == {"endpoints": 2, "instances": 6}
    assert _used(deploy_env, tenant) == {"endpoints": 1, "instances": 2}
    assert [t.status for t in reconcile(svc, [tenant])] == ["ok"]
    svc.delete(tenant, "live")
    assert _used(deploy_env, tenant) == {"endpoints": 0, "instances": 0}


def test_a_tenant_with_a_deploy_in_flight_is_left_alone(deploy_env, pyfunc_model):
    tenant = deploy_env.tenant()
    svc = deploy_env.service()
    deploy_env.registry.ledger.reserve(tenant, "endpoints", 1)
    svc.storage.put_record(tenant, "busy", {"name": "busy", "tenant": tenant,
                                            "operation": "create", "status": "Creating"})
    [report] = reconcile(svc, [tenant])
    assert report.status == "busy"
    assert _used(deploy_env, tenant)["endpoints"] == 1
    svc.storage.delete_record(tenant, "busy")
    assert [t.status for t in reconcile(svc, [tenant])] == ["corrected"]
    assert _used(deploy_env, tenant)["endpoints"] == 0


def test_the_cli_reports_and_corrects_deployment_drift(deploy_env, tmp_path):
    tenant = deploy_env.tenant()
    deploy_env.registry.ledger.reserve(tenant, "instances", 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(deploy_env.cli_env())
    run = [sys.executable, "-m", "mlflow_tenant_plugins.cli", "--db",
           deploy_env.registry.database_uri, "usage", tenant, "--reconcile-deployments"]
    dry = subprocess.run([*run, "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"{tenant}: ledger" in dry.stdout and "would correct" in dry.stdout
    done = subprocess.run([*run, "--json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["reconcile_deployments"]
    assert row["status"] == "corrected" and row["sagemaker"] == {"endpoints": 0, "instances": 0}
    assert _used(deploy_env, tenant)["instances"] == 0

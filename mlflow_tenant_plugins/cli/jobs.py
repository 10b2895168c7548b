"""``mlflow-tenants job list`` and ``job stop``: the platform admin's view of the jobs the
platform runs for tenants (tenants use ``/api/2.0/tenants/jobs`` and ``mlflow run``)."""

from __future__ import annotations

import click

from mlflow_tenant_plugins.cli.common import App, emit, table, verb
from mlflow_tenant_plugins.cli.root import cli


@cli.group()
def job() -> None:
    """List and stop the jobs the platform runs for tenants (mlflow run -b tenant-sagemaker)."""


def _records(app: App):
    from mlflow_tenant_plugins.tenancy.job_records import JobRecords

    return JobRecords(app.registry.engine)


def _dict(j) -> dict:
    return {"job_id": j.job_id, "tenant": j.tenant, "run_id": j.run_id, "status": j.status,
            "executor": j.executor, "name": j.name, "instance_type": j.instance_type,
            "instance_count": j.instance_count, "submitted_by": j.principal,
            "submitted_at": j.submitted_at.isoformat(),
            "ended_at": j.ended_at.isoformat() if j.ended_at else None,
            "failure_reason": j.failure_reason}


@verb(job, "list")
@click.option("--tenant", help="Only this tenant's jobs.")
@click.option("--active", is_flag=True, help="Only jobs that have not ended.")
def job_list(app: App, tenant: str | None, active: bool, as_json: bool) -> None:
    """Jobs, newest first, as the platform's records show them (the server refreshes them
    from their engine every jobs_reconcile_interval_seconds)."""
    if tenant:
        app.registry.get_tenant(tenant)
    jobs = [_dict(j) for j in _records(app).list(tenant, active_only=active)]
    rows = [(j["job_id"], j["tenant"], j["status"], j["executor"],
             f"{j['instance_count']}x {j['instance_type']}", j["run_id"], j["submitted_by"])
            for j in jobs]
    emit(as_json, {"jobs": jobs},
         table(("JOB", "TENANT", "STATUS", "ENGINE", "INSTANCES", "RUN", "BY"), rows)
         if rows else ["no jobs"])


@verb(job, "stop")
@click.argument("tenant")
@click.argument("job_id")
def job_stop(app: App, tenant: str, job_id: str, as_json: bool) -> None:
    """Ask JOB_ID's engine to stop it. The server then ends the job: it marks the run KILLED
    and gives back the job's quota within jobs_reconcile_interval_seconds."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from mlflow_tenant_plugins.jobs.engines import build_engine

    record = _records(app).get(int(job_id)) if job_id.isdigit() else None
    if record is None or record.tenant != tenant:
        raise MlflowException(f"job '{job_id}' not found in tenant '{tenant}'",
                              RESOURCE_DOES_NOT_EXIST)
    if not record.released and record.name:
        build_engine(app.settings).stop(record.tenant, record.name)
        line = (f"job {job_id} of tenant {tenant}: stop requested; the server ends it and "
                "releases its quota")
    else:
        line = f"job {job_id} of tenant {tenant} has already ended ({record.status})"
    emit(as_json, {"job": _dict(record), "stop_requested": not record.released}, [line])

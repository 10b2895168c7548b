"""The job service: submit a tenant's project run to an engine within the tenant's quotas,
follow it, stop it, and give back what it held when it ends — however it ends.

Submission order (each step undone if a later one fails, so a refused or failed submission
holds nothing and starts nothing):

1. checks: the run is the tenant's and not ended, its archive is in the tenant's prefix and
   within the size limit, the instance type, count and runtime within the tenant's quotas,
   validation rules named where the tenant requires them;
2. the ledgers: one ``jobs`` slot and ``instance_count`` ``training_instances`` (the usage
   ledger's atomic check-and-add), ``instance_count × max_runtime`` instance-seconds of the
   month (the monthly ledger, same pattern);
3. the job record (status QUEUED), then the job's identity: a key made for this job (local) or
   the tenant's execution role bound to the tenant (SageMaker);
4. the engine job, by a name derived from the record's id.

A worker that dies between 3 and 4 leaves a QUEUED record: the reconcile (:mod:`.reconcile`)
fails it after ``jobs_submit_timeout_seconds`` if the engine has no job by that name, and
gives back what it held. Ending is a claim on the record (``JobRecords.claim_end``): exactly
one observer releases.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_STATE,
    PERMISSION_DENIED,
    RESOURCE_CONFLICT,
    RESOURCE_DOES_NOT_EXIST,
)

from mlflow_tenant_plugins.billing.budgets import refuse_if_over_budget
from mlflow_tenant_plugins.jobs import packages, spec
from mlflow_tenant_plugins.jobs.executor import Engine, JobLaunch, LogPage, external_name
from mlflow_tenant_plugins.jobs.runs import TenantRuns
from mlflow_tenant_plugins.tenancy import Role
from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded
from mlflow_tenant_plugins.tenancy.job_records import (
    JobRecord,
    JobRecords,
    MonthlyLedger,
    RunBusy,
)
from mlflow_tenant_plugins.tenancy.job_records import month_of as _month
from mlflow_tenant_plugins.tenancy.meters import TRAINING_INSTANCES, Meters

_logger = logging.getLogger(__name__)
MONTHLY_RESOURCE = "training_instance_seconds"
CONFIG_KEYS = ("instance_type", "instance_count", "max_runtime_seconds", "env_manager",
               "validation")
DEFAULT_RUNTIME_SECONDS = 3600


def _bad(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def _int(config: dict, key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(f"'{key}' must be a whole number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise _bad(f"'{key}' must be a whole number, got {value!r}") from None
    if number < 1:
        raise _bad(f"'{key}' must be at least 1, got {number}")
    return number


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def job_dict(job: JobRecord, now: datetime) -> dict[str, Any]:
    end = job.ended_at or now
    return {
        "job_id": job.job_id, "tenant": job.tenant, "run_id": job.run_id,
        "experiment_id": job.experiment_id, "status": job.status, "detail": job.detail,
        "executor": job.executor, "instance_type": job.instance_type,
        "instance_count": job.instance_count, "max_runtime_seconds": job.max_runtime_seconds,
        "submitted_by": job.principal, "submitted_at": _iso(job.submitted_at),
        "started_at": _iso(job.started_at), "ended_at": _iso(job.ended_at),
        "elapsed_seconds": round((end - job.started_at).total_seconds(), 1)
        if job.started_at else None,
        "failure_reason": job.failure_reason,
    }


class JobService:
    def __init__(self, registry, settings, engine: Engine, runs: TenantRuns, *,
                 destination: str, identity: Callable[[JobRecord], dict[str, str]],
                 role_arn: Callable[[str], str | None] = lambda tenant: None,
                 image_uri: Callable[[str], str | None] = lambda manager: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.registry, self.settings, self.engine, self.runs = registry, settings, engine, runs
        self.records = JobRecords(registry.engine)
        self.monthly = MonthlyLedger(registry.engine)
        self.destination = destination
        self._identity, self._role_arn, self._image_uri = identity, role_arn, image_uri
        self.clock = clock

    # -- submit -------------------------------------------------------------------------
    def _check_config(self, tenant, config: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(config, dict):
            raise _bad("'config' must be an object")
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise _bad(f"unknown job config key(s) {unknown}; known: {', '.join(CONFIG_KEYS)}")
        q = tenant.quotas
        types = q.training_instance_types
        instance_type = config.get("instance_type") or (types[0] if types else "")
        if instance_type not in types:
            raise _bad(f"instance type {instance_type!r} is not allowed for tenant "
                       f"'{tenant.name}'; allowed: {', '.join(types) or 'none'}")
        count = _int(config, "instance_count", 1)
        runtime = _int(config, "max_runtime_seconds",
                       min(DEFAULT_RUNTIME_SECONDS, q.max_job_runtime_seconds or 1))
        if runtime > q.max_job_runtime_seconds:
            raise _bad(f"max_runtime_seconds {runtime} is over tenant '{tenant.name}''s "
                       f"limit of {q.max_job_runtime_seconds} s per job")
        manager = config.get("env_manager") or "local"
        if manager not in self.settings.jobs_env_managers:
            raise _bad(f"env_manager {manager!r} is not offered; choose one of "
                       f"{', '.join(self.settings.jobs_env_managers)}")
        try:
            validation = spec.Validation.from_dict(config.get("validation"))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        if tenant.require_validation and validation is None:
            raise _bad(f"tenant '{tenant.name}' runs only projects that validate their data: "
                       "name the rules and the data with 'validation' "
                       '({"rules": "rules.yaml", "data": "data/train.csv"}) in the backend '
                       "config, or in validation.json beside MLproject")
        return {"instance_type": instance_type, "instance_count": count,
                "max_runtime_seconds": runtime, "env_manager": manager,
                "validation": validation}

    @staticmethod
    def _busy(run_id: str) -> MlflowException:
        return MlflowException(f"run '{run_id}' already has a job running", RESOURCE_CONFLICT)

    def _reserve(self, tenant, count: int, seconds: int, month: str) -> None:
        ledger = self.registry.ledger
        ledger.reserve(tenant.name, "jobs", 1)
        try:
            ledger.reserve(tenant.name, "training_instances", count)
            try:
                limit = tenant.quotas.training_instance_hours * 3600
                if not self.monthly.reserve(tenant.name, month, MONTHLY_RESOURCE, seconds,
                                            limit):
                    used = self.monthly.used(tenant.name, month, MONTHLY_RESOURCE)
                    raise self._hours_exceeded(tenant, month, seconds, used)
            except BaseException:
                ledger.release(tenant.name, "training_instances", count)
                raise
        except BaseException:
            ledger.release(tenant.name, "jobs", 1)
            raise

    def _active_tenant(self, tenant_name: str):
        if self.settings.jobs_executor not in ("local", "sagemaker"):
            raise MlflowException("this platform runs no jobs: its operator has not set "
                                  "jobs_executor", INVALID_STATE)
        tenant = self.registry.get_tenant(tenant_name)
        if tenant.status != "active":
            raise MlflowException(f"tenant '{tenant_name}' is {tenant.status}", INVALID_STATE)
        return tenant

    def check(self, tenant_name: str, config: dict[str, Any]) -> None:
        """Would a job with ``config`` start now? The same refusals as :meth:`submit` (quotas
        read, not reserved), so a client can ask before it creates a run."""
        tenant = self._active_tenant(tenant_name)
        checked = self._check_config(tenant, config)
        refuse_if_over_budget(self.registry, self.settings, tenant, self.clock(), "a new job")
        count = checked["instance_count"]
        seconds = count * checked["max_runtime_seconds"]
        for resource, amount in (("jobs", 1), ("training_instances", count)):
            usage = self.registry.ledger.get(tenant_name, resource)
            if usage.used + amount > usage.limit:
                raise QuotaExceeded(tenant_name, resource, amount, usage.used, usage.limit)
        month = _month(self.clock())
        used = self.monthly.used(tenant_name, month, MONTHLY_RESOURCE)
        if used + seconds > tenant.quotas.training_instance_hours * 3600:
            raise self._hours_exceeded(tenant, month, seconds, used)

    @staticmethod
    def _hours_exceeded(tenant, month: str, seconds: int, used: int) -> QuotaExceeded:
        return QuotaExceeded(tenant.name, "training_instance_hours", math.ceil(seconds / 3600),
                             math.ceil(used / 3600), tenant.quotas.training_instance_hours,
                             note=f"{month}; a job reserves instance_count × "
                                  "max_runtime_seconds until it ends")

    def submit(self, tenant_name: str, principal: str, run_id: str, entry_point: str,
               parameters: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
        tenant = self._active_tenant(tenant_name)
        if principal.startswith("key:") and self.records.by_key(principal.removeprefix("key:")):
            raise MlflowException("a job's own key cannot submit jobs: submit with your own "
                                  "credentials", PERMISSION_DENIED)
        if not isinstance(parameters, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()):
            raise _bad("'parameters' must be an object of strings")
        checked = self._check_config(tenant, config)
        refuse_if_over_budget(self.registry, self.settings, tenant, self.clock(), "a new job")
        run = self.runs.get(tenant_name, run_id)
        if RunStatus.is_terminated(RunStatus.from_string(run.info.status)):
            raise _bad(f"run '{run_id}' has ended ({run.info.status}); submit a new run")
        if any(j.run_id == run_id for j in self.records.list(tenant_name, active_only=True)):
            raise self._busy(run_id)
        package = packages.locate(tenant_name, run, self.destination)
        if package.size > self.settings.jobs_max_package_bytes:
            raise _bad(f"the project archive is {package.size} bytes, over the platform's "
                       f"limit of {int(self.settings.jobs_max_package_bytes)} bytes")
        now = self.clock()
        month, count = _month(now), checked["instance_count"]
        seconds = count * checked["max_runtime_seconds"]
        runner = spec.RunnerSpec(run_id=run_id, entry_point=entry_point or "main",
                                 parameters=parameters, env_manager=checked["env_manager"],
                                 validation=checked["validation"],
                                 experiment_id=run.info.experiment_id)
        self._reserve(tenant, count, seconds, month)
        try:
            job = self.records.add(
                tenant=tenant_name, run_id=run_id, experiment_id=run.info.experiment_id,
                principal=principal, executor=self.engine.name, name="", status=spec.QUEUED,
                instance_type=checked["instance_type"], instance_count=count,
                max_runtime_seconds=checked["max_runtime_seconds"], month=month,
                reserved_seconds=seconds, spec=runner.to_json(), submitted_at=now)
        except BaseException as exc:
            self._give_back(tenant_name, count, month, seconds)
            if isinstance(exc, RunBusy):
                raise self._busy(run_id) from None
            raise
        name = external_name(tenant_name, job.job_id)
        self.records.set_state(job.id, name=name)
        job = self.records.get(job.id)
        try:
            self._launch(job, runner, package)
        except Exception as exc:
            _logger.warning("job %s of tenant %s failed to start", job.job_id, tenant_name,
                            exc_info=True)
            self._stop_quietly(job)
            self._end(job, spec.FAILED, f"the job could not be started: {exc}", now, None)
            raise MlflowException(f"job {job.job_id} could not be started: {exc}") from None
        return job_dict(self.records.get(job.id), self.clock())

    def _stop_quietly(self, job: JobRecord) -> None:
        """A start that raised may have started the job all the same (the engine accepted it
        and its answer was lost, or the record could not be updated afterwards); its record
        is about to end and give its quota back, so stop it by name (a no-op when there is no
        such job): a failed submission runs nothing."""
        try:
            self.engine.stop(job.tenant, job.name)
        except Exception:
            _logger.warning("job %s of tenant %s: could not stop it after its failed start",
                            job.job_id, job.tenant, exc_info=True)

    def _launch(self, job: JobRecord, runner: spec.RunnerSpec, package) -> None:
        environment = self._identity(job)
        if "key_id" in environment:
            self.records.set_state(job.id, key_id=environment.pop("key_id"))
        job_dir = None
        package_path = None
        if package.s3_uri is None or self.engine.name == "local":
            job_dir = tempfile.mkdtemp(prefix="mlt-job-")
            package_path = packages.download(package, job_dir)
        output = f"{package.prefix_s3_uri}/jobs/{job.job_id}/output" \
            if package.prefix_s3_uri else None
        self.runs.tag(job.tenant, job.run_id, spec.JOB_TAG, job.job_id)
        self.runs.tag(job.tenant, job.run_id, spec.EXECUTOR_TAG, self.engine.name)
        try:
            self.engine.start(JobLaunch(
                job_id=job.job_id, tenant=job.tenant, name=job.name, runner=runner,
                instance_type=job.instance_type, instance_count=job.instance_count,
                max_runtime_seconds=job.max_runtime_seconds,
                tracking_uri=self.settings.jobs_tracking_uri,
                package_s3_uri=package.s3_uri, package_path=package_path,
                output_s3_uri=output, role_arn=self._role_arn(job.tenant),
                image_uri=self._image_uri(runner.env_manager), environment=environment,
                tags={"mlt:tenant": job.tenant, "mlt:run-id": job.run_id,
                      "mlt:job-id": job.job_id}))
        finally:
            if job_dir:
                import shutil

                shutil.rmtree(job_dir, ignore_errors=True)
        self.records.set_state(job.id, status=spec.STARTING, detail="Starting")

    # -- follow -------------------------------------------------------------------------
    def _job(self, tenant: str, job_id: str) -> JobRecord:
        # Only ASCII digits within a 64-bit integer can name a record: anything else ("²",
        # 10**30) is the same 404, not a ValueError from int() or an OverflowError from sqlite.
        text = str(job_id)
        number = int(text) if text.isascii() and text.isdigit() else 0
        job = self.records.get(number) if 0 < number < 2**63 else None
        if job is None or job.tenant != tenant:
            raise MlflowException(f"job '{job_id}' not found in tenant '{tenant}'",
                                  RESOURCE_DOES_NOT_EXIST)
        return job

    def refresh(self, job: JobRecord) -> JobRecord:
        """The job with its engine's current state; ends it (once) when the engine says so."""
        if job.released:
            return job
        now = self.clock()
        state = self.engine.describe(job.tenant, job.name) if job.name else None
        if state is None:
            age = (now - job.submitted_at).total_seconds()
            if job.status == spec.QUEUED and age < self.settings.jobs_submit_timeout_seconds:
                return job
            self._end(job, spec.FAILED, "the job was lost: the platform stopped while "
                      "submitting it, or its engine no longer knows it", now, None)
        elif state.status in spec.ENDED:
            self._end(job, state.status, state.failure_reason, state.ended_at or now,
                      state.started_at)
        elif (state.status, state.detail, state.started_at) != (job.status, job.detail,
                                                                job.started_at):
            self.records.set_state(job.id, status=state.status, detail=state.detail,
                                   started_at=state.started_at or job.started_at)
        return self.records.get(job.id)

    def get(self, tenant: str, job_id: str) -> dict[str, Any]:
        return job_dict(self.refresh(self._job(tenant, job_id)), self.clock())

    def list(self, tenant: str, active_only: bool = False) -> list[dict[str, Any]]:
        jobs = [self.refresh(j) if not j.released else j
                for j in self.records.list(tenant, active_only=active_only, limit=200)]
        return [job_dict(j, self.clock()) for j in jobs]

    def logs(self, tenant: str, job_id: str, token: str | None) -> LogPage:
        job = self._job(tenant, job_id)
        if not job.name:
            return LogPage([], token)
        try:
            return self.engine.logs(job.tenant, job.name, token)
        except ValueError as exc:
            raise _bad(str(exc)) from None

    def stop(self, tenant: str, job_id: str, principal: str, may_stop_any: bool) -> dict:
        job = self._job(tenant, job_id)
        if job.principal != principal and not may_stop_any:
            raise MlflowException(f"job {job_id} was submitted by someone else: stopping it "
                                  f"needs the '{Role.DEPLOYER.value}' role", PERMISSION_DENIED)
        if not job.released and job.name:
            self.engine.stop(job.tenant, job.name)
        return job_dict(self.refresh(job), self.clock())

    # -- end ----------------------------------------------------------------------------
    def _give_back(self, tenant: str, count: int, month: str, seconds: int) -> None:
        self.registry.ledger.release(tenant, "jobs", 1)
        self.registry.ledger.release(tenant, "training_instances", count)
        self.monthly.release(tenant, month, MONTHLY_RESOURCE, seconds)

    def _end(self, job: JobRecord, status: str, reason: str | None, ended_at: datetime,
             started_at: datetime | None) -> None:
        if not self.records.claim_end(job.id, status, reason, ended_at, started_at):
            return  # another observer ended it
        start = started_at or job.started_at
        used = 0
        if start is not None:
            used = job.instance_count * math.ceil(max(0.0, (ended_at - start).total_seconds()))
        unused = max(0, job.reserved_seconds - used)
        if start is not None and ended_at > start:
            try:  # the job's exact interval, for statements (training instance-hours by type)
                Meters(self.registry.engine).add_interval(
                    job.tenant, TRAINING_INSTANCES, job.instance_count, start, ended_at,
                    job.instance_type)
            except Exception:
                _logger.warning("job %s: could not meter its instance-hours", job.job_id,
                                exc_info=True)
        try:
            self.registry.ledger.release(job.tenant, "jobs", 1)
            self.registry.ledger.release(job.tenant, "training_instances", job.instance_count)
            self.monthly.release(job.tenant, job.month, MONTHLY_RESOURCE, unused)
        finally:
            key_id = self.records.get(job.id).key_id
            if key_id:
                try:
                    self.registry.revoke_key(key_id)
                except MlflowException:
                    _logger.warning("job %s: could not revoke its key %s", job.job_id, key_id)
            self.runs.end(job.tenant, job.run_id, status, reason, job.job_id)
        _logger.info("job %s of tenant %s ended %s%s", job.job_id, job.tenant, status,
                     f": {reason}" if reason else "")

    def reconcile(self) -> int:
        """Refresh every job not yet ended (all tenants), stopping those whose submitter lost
        access; then stop and forget engine jobs no record accounts for (their tenant was
        deleted). The number of jobs that ended now."""
        ended = 0
        for job in self.records.list(active_only=True, limit=10_000):
            try:
                if not job.released and self._submitter_gone(job):
                    self.engine.stop(job.tenant, job.name)
                    self._end(job, spec.KILLED, "stopped: the credential that submitted it "
                              "no longer has access to the tenant", self.clock(),
                              job.started_at)
                if self.refresh(job).released:
                    ended += 1
            except Exception:
                _logger.warning("job %s: reconcile failed", job.job_id, exc_info=True)
        self._sweep()
        return ended

    def _sweep(self) -> None:
        try:
            known = self.records.names()
            for tenant, name in self.engine.running():
                if (tenant, name) in known:
                    continue
                _logger.warning("job %s of tenant %s has no record (tenant deleted?): "
                                "stopping it", name, tenant)
                self.engine.stop(tenant, name)
                state = self.engine.describe(tenant, name)
                if state is None or state.status in spec.ENDED:
                    self.engine.remove(tenant, name)
        except Exception:
            _logger.warning("sweeping engine jobs without records failed", exc_info=True)

    def _submitter_gone(self, job: JobRecord) -> bool:
        """A job lives no longer than its submitter's access: a revoked or expired key, or a
        principal no longer bound in the tenant, ends it (and the key made for it)."""
        principal = job.principal
        if self.registry.is_platform_admin(principal):
            return False
        if principal.startswith("key:"):
            try:
                key = self.registry.get_key(principal.removeprefix("key:"))
            except MlflowException:
                return True
            if key.revoked_at is not None or (key.expires_at is not None
                                              and key.expires_at <= self.clock()):
                return True
        return job.tenant not in self.registry.bindings_of(principal)


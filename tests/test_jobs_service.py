"""The job service in process, on a real registry database, with a fake engine and fake runs:
whatever step of a submission fails, nothing is left holding quota or running; a submission a
dead worker left behind is failed (or adopted) by the reconcile; a job's end gives back what
it held exactly once, however many observers see it; the monthly instance-seconds keep what a
job used and give back the rest; ``check`` refuses exactly where ``submit`` does; stopping
another editor's job needs the deployer role; another tenant's job reads as missing.

No server: the run store is a dict (``FakeRuns``), the engine records its calls and can be
told to fail (``FakeEngine``), and the project archive is located without an artifact store
(``packages.locate`` replaced). Races run on sqlite and on PostgreSQL.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.jobs import identity, packages, spec
from mlflow_tenant_plugins.jobs.executor import EngineState, JobLaunch, LogPage, external_name
from mlflow_tenant_plugins.jobs.service import MONTHLY_RESOURCE, JobService
from mlflow_tenant_plugins.tenancy import Quotas, TenantRegistry
from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded
from mlflow_tenant_plugins.tenancy.job_records import month_of

JOIN_TIMEOUT = 60.0
RUNTIME = 600  # seconds: every job here reserves instance_count × this of the month


# -- fakes -------------------------------------------------------------------------------------
class Clock:
    """The service's clock, moved by the test; mid-month, so that no test straddles two
    months of the monthly ledger."""

    def __init__(self) -> None:
        today = datetime.now(UTC)
        self.now = datetime(today.year, today.month, 15, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class EngineJob:
    launch: JobLaunch
    state: EngineState


class FakeEngine:
    """An engine that keeps its jobs in a dict. ``fail_start``: raise before creating the
    job; ``fail_after_create``: create it, then raise (an answer lost after the engine
    accepted the job)."""

    name = "fake"

    def __init__(self, clock: Clock):
        self.clock = clock
        self.jobs: dict[str, EngineJob] = {}
        self.calls: list[tuple[str, str, str]] = []  # (method, tenant, name)
        self.fail_start = self.fail_after_create = False
        self._lock = threading.Lock()

    def start(self, launch: JobLaunch) -> None:
        with self._lock:
            self.calls.append(("start", launch.tenant, launch.name))
            if self.fail_start:
                raise RuntimeError("engine unavailable")
            self.jobs[launch.name] = EngineJob(launch, EngineState(spec.STARTING,
                                                                   detail="Starting"))
            if self.fail_after_create:
                raise TimeoutError("read timeout after the job was accepted")

    def describe(self, tenant: str, name: str) -> EngineState | None:
        with self._lock:
            self.calls.append(("describe", tenant, name))
            job = self.jobs.get(name)
            return job.state if job and job.launch.tenant == tenant else None

    def stop(self, tenant: str, name: str) -> None:
        with self._lock:
            self.calls.append(("stop", tenant, name))
            job = self.jobs.get(name)
            if job and job.launch.tenant == tenant and job.state.status in spec.ACTIVE:
                job.state = EngineState(spec.KILLED, started_at=job.state.started_at,
                                        ended_at=self.clock(), detail="Stopped")

    def logs(self, tenant: str, name: str, token: str | None, limit: int = 500) -> LogPage:
        with self._lock:
            self.calls.append(("logs", tenant, name))
        return LogPage([f"log of {name}"], None)

    def running(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(j.launch.tenant, n) for n, j in self.jobs.items()]

    def remove(self, tenant: str, name: str) -> None:
        with self._lock:
            self.calls.append(("remove", tenant, name))

    # -- test helpers
    def set(self, name: str, status: str, **fields: Any) -> None:
        with self._lock:
            self.jobs[name].state = EngineState(status, **fields)

    def adopt(self, tenant: str, name: str, status: str = spec.RUNNING) -> None:
        """A job the engine runs without this engine having been asked here (another
        worker started it)."""
        launch = JobLaunch(job_id=name.rsplit("-", 1)[-1], tenant=tenant, name=name,
                           runner=spec.RunnerSpec(run_id="r"), instance_type="ml.m5.large",
                           instance_count=1, max_runtime_seconds=RUNTIME, tracking_uri="x")
        with self._lock:
            self.jobs[name] = EngineJob(launch, EngineState(
                status, started_at=self.clock(), detail="Training"))

    def active(self, tenant: str) -> list[str]:
        with self._lock:
            return [n for n, j in self.jobs.items()
                    if j.launch.tenant == tenant and j.state.status in spec.ACTIVE]

    def asked(self, method: str, tenant: str | None = None) -> list[str]:
        with self._lock:
            return [n for m, t, n in self.calls if m == method and tenant in (None, t)]


class FakeRuns:
    """The tenant's runs: a dict; ``get`` of another tenant's run is the same 404 as a
    missing one, as :class:`~mlflow_tenant_plugins.jobs.runs.TenantRuns` answers."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[str, str]] = {}  # run id -> (tenant, status)
        self.ended: list[tuple[str, str, str | None]] = []  # (run id, status, reason)
        self.tags: dict[str, dict[str, str]] = {}
        self.fail_get = False
        self._lock = threading.Lock()

    def create(self, tenant: str) -> str:
        run_id = secrets.token_hex(16)
        self.runs[run_id] = (tenant, "RUNNING")
        return run_id

    def get(self, tenant: str, run_id: str) -> Any:
        if self.fail_get:
            raise MlflowException("the tracking store is unreachable")
        owner, status = self.runs.get(run_id, (None, ""))
        if owner != tenant:
            raise MlflowException(f"run '{run_id}' not found in tenant '{tenant}'",
                                  RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(info=SimpleNamespace(
            run_id=run_id, status=status, experiment_id="1",
            artifact_uri=f"mlflow-artifacts:/1/{run_id}/artifacts"))

    def end(self, tenant: str, run_id: str, status: str, reason: str | None,
            job_id: str) -> None:
        with self._lock:
            self.ended.append((run_id, status, reason))

    def tag(self, tenant: str, run_id: str, key: str, value: str) -> None:
        with self._lock:
            self.tags.setdefault(run_id, {})[key] = value


def _locate(tenant: str, run: Any, destination: str) -> packages.Package:
    prefix = f"s3://bucket/root/workspaces/{tenant}"
    return packages.Package(tenant, run.info.artifact_uri, 2048,
                            f"{prefix}/1/{run.info.run_id}/artifacts/{packages.ARCHIVE_PATH}",
                            prefix)


@pytest.fixture(autouse=True)
def _no_artifact_store(monkeypatch):
    monkeypatch.setattr(packages, "locate", _locate)

    def download(package: Any, dst: str) -> str:
        raise AssertionError("an engine that reads S3 needs no download")

    monkeypatch.setattr(packages, "download", download)


# -- the service under test ---------------------------------------------------------------------
@dataclass
class World:
    registry: TenantRegistry
    service: JobService
    engine: FakeEngine
    runs: FakeRuns
    clock: Clock

    def tenant(self, **quotas: Any) -> str:
        """A tenant whose members alice and bob are editors (a job lives no longer than its
        submitter's access, which the reconcile checks)."""
        name = f"s{secrets.token_hex(4)}"
        self.registry.create_tenant(name, quotas=Quotas(**quotas))
        for member in ("oidc:alice", "oidc:bob"):
            self.registry.bind(member, name, "editor")
        return name

    def submit(self, tenant: str, principal: str = "oidc:alice", count: int = 1,
               runtime: int = RUNTIME, run_id: str | None = None) -> dict:
        return self.service.submit(
            tenant, principal, run_id or self.runs.create(tenant), "main", {"alpha": "0.5"},
            {"instance_count": count, "max_runtime_seconds": runtime})

    def held(self, tenant: str) -> dict[str, int]:
        """What the tenant holds in the three ledgers."""
        ledger = self.registry.ledger
        return {"jobs": ledger.get(tenant, "jobs").used,
                "training_instances": ledger.get(tenant, "training_instances").used,
                "month": self.service.monthly.used(tenant, month_of(self.clock()),
                                                   MONTHLY_RESOURCE)}

    def record(self, job_id: str):
        return self.service.records.get(int(job_id))

    def job_keys(self, tenant: str) -> list:
        return [k for k in self.registry.list_keys(tenant) if k.description.startswith("job ")]


def _settings(registry: TenantRegistry, **overrides: Any) -> Settings:
    return Settings(database_uri=registry.database_uri, jobs_executor="local",
                    jobs_tracking_uri="http://127.0.0.1:5000",
                    jobs_submit_timeout_seconds=300.0, **overrides)


def _world(registry: TenantRegistry,
           identity_fn: Callable[[TenantRegistry], Any] | None = None) -> World:
    clock = Clock()
    engine, runs = FakeEngine(clock), FakeRuns()
    service = JobService(registry, _settings(registry), engine, runs,
                         destination="tenant-s3://bucket/root",
                         identity=(identity_fn or identity.local_key)(registry), clock=clock)
    return World(registry, service, engine, runs, clock)


@pytest.fixture(scope="module")
def pg_registry(pg_url: str) -> TenantRegistry:
    return TenantRegistry(pg_url)


@pytest.fixture
def world(registry: TenantRegistry) -> World:
    return _world(registry)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world_on_every_backend(request: pytest.FixtureRequest) -> World:
    name = "registry" if request.param == "sqlite" else "pg_registry"
    return _world(request.getfixturevalue(name))


# -- a submission that fails at any step holds nothing and runs nothing --------------------------
def test_a_submission_whose_engine_refuses_to_start_holds_nothing_and_revokes_its_key(world):
    tenant = world.tenant(jobs=3, training_instances=4)
    first = world.submit(tenant)  # already running: what the tenant holds before
    before = world.held(tenant)
    run_id = world.runs.create(tenant)
    world.engine.fail_start = True

    with pytest.raises(MlflowException, match="could not be started: engine unavailable"):
        world.submit(tenant, count=2, run_id=run_id)

    assert world.held(tenant) == before
    assert world.engine.active(tenant) == [external_name(tenant, first["job_id"])]
    [failed] = [j for j in world.service.records.list(tenant) if j.job_id != first["job_id"]]
    assert (failed.status, failed.released) == (spec.FAILED, True)
    assert "engine unavailable" in failed.failure_reason
    key = world.registry.get_key(failed.key_id)
    assert key.revoked_at is not None
    assert (run_id, spec.FAILED, failed.failure_reason) in world.runs.ended


def test_a_start_that_raised_after_the_engine_accepted_the_job_leaves_nothing_running(world):
    tenant = world.tenant(jobs=3, training_instances=4)
    before = world.held(tenant)
    world.engine.fail_after_create = True

    with pytest.raises(MlflowException, match="could not be started"):
        world.submit(tenant, count=2)

    assert world.held(tenant) == before
    assert world.engine.active(tenant) == []  # the job the engine took is stopped
    assert all(k.revoked_at is not None for k in world.job_keys(tenant))


def test_a_record_that_cannot_be_updated_after_the_start_leaves_nothing_running(
        world, monkeypatch):
    tenant = world.tenant(jobs=3, training_instances=4)
    before = world.held(tenant)
    set_state = world.service.records.set_state

    def broken(job_id: int, **values: Any) -> None:
        if values.get("status") == spec.STARTING:
            raise RuntimeError("the database went away")
        set_state(job_id, **values)

    monkeypatch.setattr(world.service.records, "set_state", broken)
    with pytest.raises(MlflowException, match="went away"):
        world.submit(tenant, count=2)
    assert world.held(tenant) == before
    assert len(world.engine.asked("start")) == 1 and world.engine.active(tenant) == []
    assert all(k.revoked_at is not None for k in world.job_keys(tenant))


def test_a_failing_identity_leaves_nothing_held_and_starts_nothing(registry):
    def broken(_registry: TenantRegistry):
        def make(job: Any) -> dict[str, str]:
            raise RuntimeError("cannot bind the execution role")
        return make

    world = _world(registry, broken)
    tenant = world.tenant()
    before = world.held(tenant)
    with pytest.raises(MlflowException, match="cannot bind the execution role"):
        world.submit(tenant)
    assert world.held(tenant) == before
    assert world.engine.asked("start") == [] and world.job_keys(tenant) == []
    [failed] = world.service.records.list(tenant)
    assert (failed.status, failed.released) == (spec.FAILED, True)


def test_a_job_record_that_cannot_be_written_gives_the_reservations_back(world, monkeypatch):
    tenant = world.tenant()
    before = world.held(tenant)

    def add(**values: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(world.service.records, "add", add)
    with pytest.raises(RuntimeError, match="went away"):
        world.submit(tenant, count=2)
    assert world.held(tenant) == before
    assert world.engine.calls == [] and world.job_keys(tenant) == []


def test_a_run_that_cannot_be_read_refuses_before_anything_is_reserved(world):
    tenant = world.tenant()
    other = world.tenant()
    before = world.held(tenant)
    with pytest.raises(MlflowException) as missing:
        world.submit(tenant, run_id=world.runs.create(other))  # another tenant's run
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    world.runs.fail_get = True
    with pytest.raises(MlflowException, match="unreachable"):
        world.submit(tenant)
    assert world.held(tenant) == before
    assert world.service.records.list(tenant) == [] and world.engine.calls == []


# (quotas, the running job's (count, runtime), the refused one's, the quota named)
FULL = {
    "jobs": (dict(jobs=1, training_instances=4), (1, RUNTIME), (1, RUNTIME), "jobs limit is 1"),
    "training_instances": (dict(jobs=3, training_instances=2), (1, RUNTIME), (2, RUNTIME),
                           "training_instances limit is 2"),
    "training_instance_hours": (dict(jobs=3, training_instances=4, training_instance_hours=1),
                                (1, RUNTIME), (1, 3600), "training_instance_hours limit is 1"),
}


@pytest.mark.parametrize("quota", list(FULL))
def test_a_full_quota_refuses_with_409_naming_it_and_holds_nothing_more(world, quota):
    quotas, (first_count, first_runtime), (count, runtime), named = FULL[quota]
    tenant = world.tenant(**quotas)
    world.submit(tenant, count=first_count, runtime=first_runtime)
    before = world.held(tenant)
    starts = len(world.engine.asked("start"))

    with pytest.raises(QuotaExceeded) as refused:
        world.submit(tenant, count=count, runtime=runtime)

    assert refused.value.resource == quota and named in refused.value.message
    assert refused.value.error_code == "RESOURCE_EXHAUSTED"
    assert refused.value.get_http_status_code() == 409
    assert world.held(tenant) == before
    assert len(world.engine.asked("start")) == starts
    assert len(world.service.records.list(tenant)) == 1
    assert len(world.job_keys(tenant)) == 1


# -- what a dead worker left behind ------------------------------------------------------------
def _left_behind(world: World, tenant: str, age: float, count: int = 2) -> Any:
    """What a worker that died after writing the job record (and making its key) but before
    starting the engine job leaves: the reservations, a QUEUED record, a live key."""
    submitted = world.clock() - timedelta(seconds=age)
    month, seconds = month_of(submitted), count * RUNTIME
    world.service._reserve(world.registry.get_tenant(tenant), count, seconds, month)
    run_id = world.runs.create(tenant)
    job = world.service.records.add(
        tenant=tenant, run_id=run_id, experiment_id="1", principal="oidc:alice",
        executor=world.engine.name, name="", status=spec.QUEUED, instance_type="ml.m5.large",
        instance_count=count, max_runtime_seconds=RUNTIME, month=month,
        reserved_seconds=seconds, spec=spec.RunnerSpec(run_id=run_id).to_json(),
        submitted_at=submitted)
    key, _secret = world.registry.create_key(tenant, "editor", description=f"job {job.job_id}")
    world.service.records.set_state(job.id, name=external_name(tenant, job.job_id),
                                    key_id=key.key_id)
    return world.record(job.job_id)


def test_reconcile_fails_a_submission_a_dead_worker_left_and_releases_exactly_what_it_held(
        world):
    tenant = world.tenant(jobs=4, training_instances=6)
    running = world.submit(tenant)
    world.engine.set(external_name(tenant, running["job_id"]), spec.RUNNING,
                     started_at=world.clock(), detail="Training")
    before = world.held(tenant)
    timeout = world.service.settings.jobs_submit_timeout_seconds
    stale = _left_behind(world, tenant, age=timeout + 1)
    young = _left_behind(world, tenant, age=1)
    assert world.held(tenant) == {k: before[k] + 2 * v for k, v in
                                  {"jobs": 1, "training_instances": 2,
                                   "month": 2 * RUNTIME}.items()}

    world.service.reconcile()

    failed = world.record(stale.job_id)
    assert (failed.status, failed.released) == (spec.FAILED, True)
    assert "lost" in failed.failure_reason
    assert world.registry.get_key(stale.key_id).revoked_at is not None
    assert (stale.run_id, spec.FAILED, failed.failure_reason) in world.runs.ended
    # Still within the submit timeout: its worker may yet start it.
    assert world.record(young.job_id).status == spec.QUEUED
    assert world.registry.get_key(young.key_id).revoked_at is None
    assert world.record(running["job_id"]).status == spec.RUNNING
    assert world.held(tenant) == {"jobs": before["jobs"] + 1,
                                  "training_instances": before["training_instances"] + 2,
                                  "month": before["month"] + 2 * RUNTIME}
    assert world.engine.asked("start") == [external_name(tenant, running["job_id"])]


def test_reconcile_adopts_a_queued_job_whose_engine_job_exists(world):
    tenant = world.tenant()
    timeout = world.service.settings.jobs_submit_timeout_seconds
    job = _left_behind(world, tenant, age=timeout + 1)
    world.engine.adopt(tenant, job.name)  # the dead worker did start it
    before = world.held(tenant)

    world.service.reconcile()

    adopted = world.record(job.job_id)
    assert (adopted.status, adopted.released, adopted.failure_reason) == (
        spec.RUNNING, False, None)
    assert adopted.started_at is not None
    assert world.held(tenant) == before
    assert world.registry.get_key(job.key_id).revoked_at is None


# -- a job's end is released once ----------------------------------------------------------------
def test_eight_observers_of_an_ended_job_release_it_once(world_on_every_backend):
    world = world_on_every_backend
    tenant = world.tenant(jobs=3, training_instances=4)
    world.submit(tenant)  # holds 1 job, 1 instance: a second release would show
    job = world.submit(tenant, count=2)
    name = external_name(tenant, job["job_id"])
    started = world.clock()
    world.engine.set(name, spec.FINISHED, started_at=started,
                     ended_at=started + timedelta(seconds=10), detail="Completed")
    record = world.record(job["job_id"])
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def observe() -> None:
        try:
            barrier.wait(JOIN_TIMEOUT)
            world.service.refresh(record)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=observe, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert world.held(tenant) == {"jobs": 1, "training_instances": 1,
                                  "month": RUNTIME + 2 * 10}
    assert [e for e in world.runs.ended if e[1] == spec.FINISHED] == [
        (record.run_id, spec.FINISHED, None)]
    assert world.record(job["job_id"]).status == spec.FINISHED


def test_stopping_twice_stops_once_and_releases_once(world):
    tenant = world.tenant(jobs=3, training_instances=4)
    world.submit(tenant)
    job = world.submit(tenant, principal="oidc:bob", count=2)
    first = world.service.stop(tenant, job["job_id"], "oidc:bob", may_stop_any=False)
    second = world.service.stop(tenant, job["job_id"], "oidc:bob", may_stop_any=False)
    assert first["status"] == second["status"] == spec.KILLED
    assert world.engine.asked("stop", tenant) == [external_name(tenant, job["job_id"])]
    assert world.held(tenant) == {"jobs": 1, "training_instances": 1, "month": RUNTIME}
    assert [e[1] for e in world.runs.ended] == [spec.KILLED]


# -- the month keeps what a job used ------------------------------------------------------------
def test_a_job_that_ran_ten_seconds_on_two_instances_keeps_twenty_of_its_reservation(world):
    tenant = world.tenant(jobs=3, training_instances=4)
    before = world.held(tenant)
    job = world.submit(tenant, count=2, runtime=RUNTIME)
    assert world.held(tenant)["month"] == before["month"] + 2 * RUNTIME
    started = world.clock.advance(30)
    world.engine.set(external_name(tenant, job["job_id"]), spec.RUNNING, started_at=started,
                     detail="Training")
    assert world.service.get(tenant, job["job_id"])["status"] == spec.RUNNING
    ended = world.clock.advance(10)
    world.engine.set(external_name(tenant, job["job_id"]), spec.FINISHED,
                     started_at=started, ended_at=ended, detail="Completed")

    done = world.service.get(tenant, job["job_id"])

    assert (done["status"], done["elapsed_seconds"]) == (spec.FINISHED, 10.0)
    assert world.held(tenant) == {"jobs": before["jobs"],
                                  "training_instances": before["training_instances"],
                                  "month": before["month"] + 20}


def _refusal(call: Callable[[], Any]) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as refused:
        call()
    return refused.value


def test_check_refuses_exactly_where_submit_does_with_the_same_message(world):
    tenant = world.tenant(jobs=2, training_instances=4, training_instance_hours=1)
    config = {"instance_count": 1, "max_runtime_seconds": 1800}
    world.service.check(tenant, config)
    world.submit(tenant, runtime=1800)
    world.service.check(tenant, config)  # 1800 + 1800 = 3600 s: exactly the month's hour

    over = {"instance_count": 1, "max_runtime_seconds": 1801}
    checked = _refusal(lambda: world.service.check(tenant, over))
    submitted = _refusal(lambda: world.submit(tenant, runtime=1801))
    assert checked.resource == submitted.resource == "training_instance_hours"
    assert checked.message == submitted.message

    world.submit(tenant, runtime=1800)  # the boundary itself is allowed
    assert world.held(tenant)["month"] == 3600
    one = {"instance_count": 1, "max_runtime_seconds": 1}
    checked = _refusal(lambda: world.service.check(tenant, one))
    submitted = _refusal(lambda: world.submit(tenant, runtime=1))
    assert checked.message == submitted.message and checked.resource == "jobs"


def test_twenty_concurrent_submissions_at_the_boundary_never_exceed_the_jobs_quota(
        world_on_every_backend):
    world = world_on_every_backend
    tenant = world.tenant(jobs=3, training_instances=10)
    runs = [world.runs.create(tenant) for _ in range(20)]
    barrier = threading.Barrier(20)
    outcome: dict[str, list] = {"ok": [], "refused": [], "errors": []}
    lock = threading.Lock()

    def submit(run_id: str) -> None:
        try:
            barrier.wait(JOIN_TIMEOUT)
            job = world.submit(tenant, run_id=run_id)
            key, value = "ok", job["job_id"]
        except QuotaExceeded as exc:
            key, value = "refused", exc.resource
        except BaseException as exc:  # reported by the assertion below
            key, value = "errors", repr(exc)
        with lock:
            outcome[key].append(value)

    threads = [threading.Thread(target=submit, args=(r,), daemon=True) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert (len(outcome["ok"]), outcome["refused"], outcome["errors"]) == (
        3, ["jobs"] * 17, [])
    assert world.held(tenant) == {"jobs": 3, "training_instances": 3, "month": 3 * RUNTIME}
    assert len(world.engine.active(tenant)) == 3
    assert len(world.service.records.list(tenant)) == 3


def test_concurrent_submissions_for_one_run_start_one_job(world_on_every_backend):
    world = world_on_every_backend
    tenant = world.tenant(jobs=8, training_instances=8)
    run_id = world.runs.create(tenant)
    barrier = threading.Barrier(8)
    outcome: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait(JOIN_TIMEOUT)
            world.submit(tenant, run_id=run_id)
            result = "ok"
        except MlflowException as exc:
            result = exc.error_code
        with lock:
            outcome.append(result)

    threads = [threading.Thread(target=submit, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert sorted(outcome) == ["RESOURCE_CONFLICT"] * 7 + ["ok"], outcome
    assert world.held(tenant) == {"jobs": 1, "training_instances": 1, "month": RUNTIME}
    assert len(world.engine.active(tenant)) == 1


# -- who may stop, who may see ------------------------------------------------------------------
@pytest.fixture
def routes(world):
    """The job routes on a small Flask app whose platform carries ``world``'s service; the
    caller is ``Bearer <tenant>:<principal>:<role>`` (standing in for tenant-auth)."""
    from mlflow_tenant_plugins.auth.identity import set_identity
    from mlflow_tenant_plugins.jobs import routes as job_routes
    from mlflow_tenant_plugins.platform import Platform, attach
    from mlflow_tenant_plugins.tenancy import Role
    from mlflow_tenant_plugins.tenancy.entities import Identity

    app = Flask(f"jobs-{secrets.token_hex(3)}")

    @app.before_request
    def identify():
        tenant, rest = request.headers["Authorization"].removeprefix("Bearer ").split(":", 1)
        principal, role = rest.rsplit(":", 1)
        set_identity(Identity(principal, tenant, Role(role), False, "test"))

    attach(app, Platform(world.service.settings, world.registry,
                         jobs=lambda: world.service))
    app.register_blueprint(job_routes.blueprint)
    client = app.test_client()

    def call(method: str, path: str, who: str, **kwargs: Any):
        return client.open(f"/api/2.0/tenants/jobs{path}", method=method,
                           headers={"Authorization": f"Bearer {who}"}, **kwargs)

    return call


def test_stopping_another_editors_job_is_403_and_a_deployer_may(world, routes):
    tenant = world.tenant()
    job = world.submit(tenant, principal="oidc:alice")
    name = external_name(tenant, job["job_id"])

    refused = routes("POST", "/stop", f"{tenant}:oidc:bob:editor",
                     json={"job_id": job["job_id"]})
    assert refused.status_code == 403, refused.json
    assert refused.json["error_code"] == "PERMISSION_DENIED"
    assert "deployer" in refused.json["message"]
    assert world.engine.asked("stop") == [] and world.engine.active(tenant) == [name]
    assert world.held(tenant)["jobs"] == 1

    stopped = routes("POST", "/stop", f"{tenant}:carol:deployer",
                     json={"job_id": job["job_id"]})
    assert stopped.status_code == 200, stopped.json
    assert stopped.json["job"]["status"] == spec.KILLED
    assert world.held(tenant)["jobs"] == 0


def test_an_editor_may_stop_their_own_job(world, routes):
    tenant = world.tenant()
    job = world.submit(tenant, principal="oidc:alice")
    stopped = routes("POST", "/stop", f"{tenant}:oidc:alice:editor",
                     json={"job_id": job["job_id"]})
    assert stopped.status_code == 200 and stopped.json["job"]["status"] == spec.KILLED


def test_a_full_quota_answers_409_resource_exhausted_over_http(world, routes):
    tenant = world.tenant(jobs=0)
    refused = routes("POST", "/submit", f"{tenant}:oidc:alice:editor",
                     json={"run_id": world.runs.create(tenant)})
    assert refused.status_code == 409
    assert refused.json["error_code"] == "RESOURCE_EXHAUSTED"
    assert "jobs limit is 0" in refused.json["message"]


def test_another_tenants_job_reads_as_missing_with_the_same_message(world, routes):
    owner, intruder = world.tenant(), world.tenant()
    job_id = world.submit(owner)["job_id"]
    missing = str(int(job_id) + 10_000)
    world.engine.calls.clear()

    for path, method, args in (("/get", "GET", "query_string"), ("/logs", "GET", "query_string"),
                               ("/stop", "POST", "json")):
        answers = {}
        for which in (job_id, missing):
            r = routes(method, path, f"{intruder}:mallory:admin", **{args: {"job_id": which}})
            assert r.status_code == 404, (path, r.json)
            assert r.json["error_code"] == "RESOURCE_DOES_NOT_EXIST"
            answers[which] = r.json["message"].replace(which, "<id>")
        assert answers[job_id] == answers[missing] == (
            f"job '<id>' not found in tenant '{intruder}'"), path
        with pytest.raises(MlflowException) as direct:
            getattr(world.service, path[1:])(intruder, job_id, *(
                ("mallory", True) if path == "/stop" else (None,) if path == "/logs" else ()))
        assert direct.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert routes("GET", "/list", f"{intruder}:mallory:admin").json["jobs"] == []
    assert world.engine.calls == []  # the engine was never asked about the owner's job
    assert world.service.get(owner, job_id)["status"] == spec.STARTING


def test_settings_off_refuse_every_submission(world):
    tenant = world.tenant()
    world.service.settings = replace(world.service.settings, jobs_executor="")
    with pytest.raises(MlflowException, match="jobs_executor"):
        world.submit(tenant)
    assert world.held(tenant) == {"jobs": 0, "training_instances": 0, "month": 0}


def test_an_id_that_names_no_job_reads_as_missing_not_as_an_error(world):
    tenant = world.tenant()
    for job_id in ("²", "99999999999999999999999", "-1", "1.0", "abc", "0", ""):
        with pytest.raises(MlflowException) as missing:
            world.service.get(tenant, job_id)
        assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST", job_id
        assert missing.value.message == f"job '{job_id}' not found in tenant '{tenant}'"

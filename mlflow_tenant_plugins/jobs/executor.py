"""What the job service asks of an engine that runs jobs: start, describe, stop, read logs.

Two engines: :mod:`.sagemaker` (a SageMaker training job per platform job, the production
path) and :mod:`.local` (a subprocess on the platform host, for one machine: not an isolation
boundary). Both run the same runner (:mod:`.runner`) with the same :class:`~.spec.RunnerSpec`,
so a project behaves the same on either.

Engines are idempotent by name: the external name of a job is derived from its id
(:func:`external_name`), so a reconcile that finds a job record without knowing whether its
engine job was started can ask the engine by that name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mlflow_tenant_plugins.jobs.spec import RunnerSpec

MAX_NAME = 63  # SageMaker's limit for training job names


def external_name(tenant: str, job_id: str) -> str:
    """The engine-side name of a job: ``mlt-<tenant>-<job id>``, or, where that would pass
    63 characters (SageMaker's limit), ``mlt-<tenant prefix>-<8 hex of the tenant's
    SHA-256>-<job id>``. Never truncated: two jobs never share a name (job ids are unique
    and never reused), and two tenants with a long common prefix differ in the hash."""
    import hashlib

    name = f"mlt-{tenant}-{job_id}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
    room = MAX_NAME - len(f"mlt--{digest}-{job_id}")
    return f"mlt-{tenant[:max(room, 1)].rstrip('-')}-{digest}-{job_id}"


@dataclass(frozen=True)
class JobLaunch:
    """Everything an engine needs to start one job. ``package_s3_uri`` is the project archive
    under the tenant's prefix (SageMaker reads it as the input channel); ``package_path`` is
    the same archive downloaded onto the platform host (the local engine reads it)."""

    job_id: str
    tenant: str
    name: str  # external_name(tenant, job_id)
    runner: RunnerSpec
    instance_type: str
    instance_count: int
    max_runtime_seconds: int
    tracking_uri: str
    package_s3_uri: str | None = None
    package_path: str | None = None
    output_s3_uri: str | None = None
    # The tenant's execution role (SageMaker) — the job's AWS identity, bound to the tenant.
    role_arn: str | None = None
    image_uri: str | None = None
    # Extra environment for the job: for the local engine, a short-lived key; never a
    # long-lived secret (SageMaker shows its environment in DescribeTrainingJob).
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineState:
    """A job as its engine sees it, in the platform's statuses (:mod:`.spec`)."""

    status: str
    failure_reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # The engine's own status word (e.g. SageMaker's ``SecondaryStatus``), for progress.
    detail: str | None = None


@dataclass(frozen=True)
class LogPage:
    lines: list[str]
    # Opaque; pass back to read on. None when the engine has nothing more (yet).
    next_token: str | None


class Engine(Protocol):
    name: str

    def start(self, launch: JobLaunch) -> None:
        """Start the job named ``launch.name``; raise on failure (nothing left running)."""

    def describe(self, tenant: str, name: str) -> EngineState | None:
        """The job's state, or None when the engine has no job of that name."""

    def stop(self, tenant: str, name: str) -> None:
        """Ask the job to stop (idempotent; a job already ended is left as it is)."""

    def logs(self, tenant: str, name: str, token: str | None, limit: int = 500) -> LogPage:
        """Log lines of the job after ``token``."""

    def running(self) -> list[tuple[str, str]]:
        """(tenant, name) of every job the engine runs (or keeps files of) for the platform:
        the reconcile stops and removes those no job record accounts for."""

    def remove(self, tenant: str, name: str) -> None:
        """Forget an ended job's files, where the engine keeps any."""

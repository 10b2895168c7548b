"""What the platform and a job agree on: the job's statuses, the submission's fields, and
the environment a running job reads. Standard library only: the project backend on a
tenant's machine, the server and the runner inside the job all import it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# -- statuses ------------------------------------------------------------------------------------
QUEUED, STARTING, RUNNING = "QUEUED", "STARTING", "RUNNING"
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
ACTIVE = (QUEUED, STARTING, RUNNING)
ENDED = (FINISHED, FAILED, KILLED)

# -- the runner's environment -------------------------------------------------------------------
# JSON of :class:`RunnerSpec`.
ENV_SPEC = "MLT_JOB_SPEC"
# The project archive: a file, or a directory holding exactly one ``*.tar.gz`` (SageMaker's
# input channel directory).
ENV_PACKAGE = "MLT_JOB_PACKAGE"
# Where the runner writes one line saying why the job failed. SageMaker reads this very path
# into ``FailureReason``; the local executor points it into the job's own directory.
ENV_FAILURE_FILE = "MLT_JOB_FAILURE_FILE"
DEFAULT_FAILURE_FILE = "/opt/ml/output/failure"
# Where the runner unpacks the project (default: a fresh temporary directory).
ENV_WORKDIR = "MLT_JOB_WORKDIR"

# The artifact path, inside the run, of the project archive the backend uploads.
PACKAGE_ARTIFACT_DIR = "mlflow-tenant-project"
PACKAGE_FILE = "project.tar.gz"
# The run tag a job's failure reason lands in, and the tag naming the platform job.
FAILURE_TAG = "mlflow_tenant.job.failure_reason"
JOB_TAG = "mlflow_tenant.job.id"
EXECUTOR_TAG = "mlflow_tenant.job.executor"

ENV_MANAGERS = ("local", "virtualenv", "conda", "uv")


@dataclass(frozen=True)
class Validation:
    """The project's data-validation rules: paths inside the project (the data may also be
    any URI ``mlflow_tenant_plugins.validation.load_data`` reads)."""

    rules: str
    data: str

    @classmethod
    def from_dict(cls, value: Any) -> Validation | None:
        if value in (None, {}, ""):
            return None
        if not isinstance(value, dict) or set(value) - {"rules", "data"} or not all(
            isinstance(value.get(k), str) and value.get(k) for k in ("rules", "data")
        ):
            raise ValueError("'validation' must be an object with string fields 'rules' (the "
                             "rules file in the project) and 'data' (the data to check)")
        return cls(rules=value["rules"], data=value["data"])


@dataclass(frozen=True)
class RunnerSpec:
    """What the runner inside the job does: validate, then run the entry point into the run
    the platform created."""

    run_id: str
    entry_point: str = "main"
    parameters: dict[str, str] = field(default_factory=dict)
    env_manager: str = "local"
    validation: Validation | None = None
    experiment_id: str | None = None

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunnerSpec:
        d = json.loads(text)
        d["validation"] = Validation.from_dict(d.get("validation"))
        return cls(**d)

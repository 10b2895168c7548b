"""``mlflow run DIR -b tenant-sagemaker --backend-config run.json``: a tenant's project run
by the platform as a job, in the tenant's workspace and within its quotas.

On the tenant's machine: check the project and the config, package the project, create the
run, upload the package into it and submit the job; then (``synchronous``, the default) follow
it, printing status changes to stderr and the job's log to stdout, until it ends. Anything
that fails once the run exists deletes it again, so a refused job leaves nothing half-made.

The ``mlflow run`` CLI waits only for its own backends and returns as soon as ``run`` does, so
``run`` itself waits here. Nothing server-side imported: MLflow's public API, the job API
(:mod:`.api`) and the shared spec.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mlflow.exceptions import ExecutionException, MlflowException
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun

from mlflow_tenant_plugins.jobs import api
from mlflow_tenant_plugins.jobs.package import IGNORE_FILE, PackageError, human_size, package
from mlflow_tenant_plugins.jobs.spec import (
    ENDED,
    ENV_MANAGERS,
    FAILURE_TAG,
    FINISHED,
    PACKAGE_ARTIFACT_DIR,
    PACKAGE_FILE,
    QUEUED,
    RUNNING,
    STARTING,
    Validation,
)
from mlflow_tenant_plugins.tenancy.text import printable

NAME = "tenant-sagemaker"
VALIDATION_FILE = "validation.json"
# Sent to the platform with the job.
SERVER_KEYS = ("instance_type", "instance_count", "max_runtime_seconds", "env_manager",
               "validation")
# Only for this client: how to wait.
CLIENT_KEYS = ("synchronous", "poll_seconds")
KNOWN_KEYS = SERVER_KEYS + CLIENT_KEYS
DEFAULT_POLL_SECONDS = 2.0
# Queueing and instance start-up come on top of the job's own time limit.
WAIT_SLACK_SECONDS = 1800
DEFAULT_MAX_RUNTIME = 24 * 3600
STOP_WAIT_SECONDS = 300
LOG_PAGES_PER_POLL = 20
MAX_POLL_ERRORS = 5
_RUN_STATUS = {QUEUED: "SCHEDULED", STARTING: "SCHEDULED", RUNNING: "RUNNING"}


def _config_error(message: str) -> ExecutionException:
    return ExecutionException(f"{NAME} backend config: {message}")


def _mlflow_keys() -> set[str]:
    """Lower-case keys MLflow itself adds to every backend config (the rest are UPPER)."""
    from mlflow.projects.utils import (
        MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG,
        PROJECT_BUILD_IMAGE,
        PROJECT_DOCKER_AUTH,
    )

    return {PROJECT_BUILD_IMAGE, PROJECT_DOCKER_AUTH, MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG}


@dataclass(frozen=True)
class JobConfig:
    """The backend config, checked. ``server_config`` is what the platform receives."""

    env_manager: str
    validation: Validation | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    max_runtime_seconds: int | None = None
    synchronous: bool = True
    poll_seconds: float = DEFAULT_POLL_SECONDS

    def server_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"env_manager": self.env_manager}
        for key in ("instance_type", "instance_count", "max_runtime_seconds"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.validation is not None:
            out["validation"] = {"rules": self.validation.rules, "data": self.validation.data}
        return out


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _config_error(f"'{key}' must be a positive whole number, not {value!r}")
    return value


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise _config_error(f"'{key}' must be true or false, not {value!r}")
    return value


def is_uri(value: str) -> bool:
    """A URI with a scheme (``s3://…``, ``runs:/…``), not a path (``C:\\`` is a path)."""
    return len(urllib.parse.urlparse(value).scheme) > 1


def project_path(project_dir: Path, value: str, what: str) -> Path:
    """``value`` as a file inside the project, or an error saying why it is not."""
    root = project_dir.resolve()
    path = (root / value).resolve()
    if Path(value).is_absolute() or not path.is_relative_to(root):
        raise _config_error(f"validation {what} {value!r} must be a path inside the project "
                            "(relative to the directory holding MLproject)")
    if not path.is_file():
        raise _config_error(f"validation {what} {value!r} not found in the project {root}")
    return path


def _validation(raw: dict[str, Any], project_dir: Path) -> Validation | None:
    if "validation" in raw:  # even null: the config decides, the file is not read
        value, source = raw["validation"], "'validation'"
    else:
        path = project_dir / VALIDATION_FILE
        if not path.is_file():
            return None
        source = str(path)
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise _config_error(f"{source} cannot be read as JSON: {exc}") from None
    try:
        validation = Validation.from_dict(value)
    except ValueError as exc:
        raise _config_error(f"{source}: {exc}") from None
    if validation is None:
        return None
    project_path(project_dir, validation.rules, "rules")
    if is_uri(validation.data):
        if urllib.parse.urlparse(validation.data).scheme.lower() == "file":
            raise _config_error(f"validation data {validation.data!r}: a file:// URI names your "
                                "machine, not the job's; ship the data in the project or name "
                                "an s3:// or runs:/ URI")
    else:
        project_path(project_dir, validation.data, "data")
    return validation


def parse_backend_config(backend_config: dict[str, Any] | str | None,
                         project_dir: str | Path) -> JobConfig:
    """Check the backend config of ``mlflow run -b tenant-sagemaker``: the keys of this
    backend (lower case), MLflow's own keys ignored; the validation spec from the config, or
    from ``validation.json`` beside MLproject."""
    if isinstance(backend_config, str):  # a path, when not called through mlflow.projects.run
        try:
            backend_config = json.loads(Path(backend_config).read_text())
        except (OSError, ValueError) as exc:
            raise _config_error(f"{backend_config} cannot be read as JSON: {exc}") from None
    raw = dict(backend_config or {})
    if not all(isinstance(k, str) for k in raw):
        raise _config_error("keys must be strings")
    ignored = _mlflow_keys()
    ours = {k: v for k, v in raw.items() if k not in ignored and k != k.upper()}
    unknown = sorted(set(ours) - set(KNOWN_KEYS))
    if unknown:
        raise _config_error(f"unknown key(s) {', '.join(map(repr, unknown))}; known keys: "
                            f"{', '.join(KNOWN_KEYS)}")
    from mlflow.projects.utils import PROJECT_ENV_MANAGER

    env_manager = ours.get("env_manager") or raw.get(PROJECT_ENV_MANAGER) or "local"
    if env_manager not in ENV_MANAGERS:
        raise _config_error(f"env_manager {env_manager!r} is not one of "
                            f"{', '.join(ENV_MANAGERS)}")
    instance_type = ours.get("instance_type")
    if instance_type is not None and (not isinstance(instance_type, str)
                                      or not instance_type.strip()):
        raise _config_error(f"'instance_type' must be an instance type such as ml.m5.large, "
                            f"not {instance_type!r}")
    poll = ours.get("poll_seconds", DEFAULT_POLL_SECONDS)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not 0 < poll <= 600:
        raise _config_error(f"'poll_seconds' must be a number of seconds in (0, 600], "
                            f"not {poll!r}")
    return JobConfig(
        env_manager=env_manager,
        validation=_validation(ours, Path(project_dir)),
        instance_type=instance_type.strip() if instance_type else None,
        instance_count=(_positive_int("instance_count", ours["instance_count"])
                        if ours.get("instance_count") is not None else None),
        max_runtime_seconds=(_positive_int("max_runtime_seconds", ours["max_runtime_seconds"])
                             if ours.get("max_runtime_seconds") is not None else None),
        synchronous=_boolean("synchronous", ours.get("synchronous", True)),
        poll_seconds=float(poll),
    )


def _echo(message: str, stream: TextIO | None = None) -> None:
    print(printable(message), file=stream or sys.stderr, flush=True)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, MlflowException) else str(exc) or type(exc).__name__


class TenantSubmittedRun(SubmittedRun):
    """A project run as a platform job: ``wait`` polls the job, ``cancel`` stops it."""

    def __init__(self, run_id: str, job_id: str, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_runtime_seconds: int | None = None):
        super().__init__()
        self._run_id = run_id
        self.job_id = str(job_id)
        self.poll_seconds = poll_seconds
        self.max_wait = (max_runtime_seconds or DEFAULT_MAX_RUNTIME) + WAIT_SLACK_SECONDS
        self._log_token: str | None = None
        self._started = time.monotonic()

    @property
    def run_id(self) -> str:
        return self._run_id

    def get_status(self) -> str:
        status = api.get(self.job_id)["status"]
        return _RUN_STATUS.get(status, status)

    def wait(self) -> bool:
        return self._poll(echo=False, limit=self.max_wait)["status"] == FINISHED

    def cancel(self) -> None:
        api.stop(self.job_id)
        self._poll(echo=False, limit=STOP_WAIT_SECONDS)

    # -- following ---------------------------------------------------------------------------
    def _elapsed(self) -> int:
        return round(time.monotonic() - self._started)

    def _drain_logs(self) -> None:
        """Print the job's new log lines (stdout); a log that cannot be read is not fatal."""
        for _ in range(LOG_PAGES_PER_POLL):
            try:
                lines, token = api.logs(self.job_id, self._log_token)
            except MlflowException as exc:
                _echo(f"job {self.job_id}: cannot read the log now: {_message(exc)}")
                return
            for line in lines:
                _echo(line.rstrip("\n").expandtabs(), sys.stdout)
            if token:
                self._log_token = token
            if not lines or not token:
                return

    def _poll(self, echo: bool, limit: float) -> dict[str, Any]:
        """Poll until the job ends (its record), printing progress and logs if ``echo``."""
        start, shown, errors = time.monotonic(), None, 0
        while True:
            try:
                job = api.get(self.job_id)
                errors = 0
            except MlflowException as exc:
                errors += 1
                if errors >= MAX_POLL_ERRORS:
                    raise
                _echo(f"job {self.job_id}: status unavailable ({_message(exc)}); retrying")
                job = None
            if job is not None:
                status = job.get("status")
                if echo:
                    if status in ENDED:  # the last lines before the verdict
                        self._drain_logs()
                    now = (status, job.get("detail"))
                    if now != shown:
                        detail = f": {job['detail']}" if job.get("detail") else ""
                        run = f": run {self.run_id}" if status in ENDED else ""
                        _echo(f"job {self.job_id} {status}{detail} ({self._elapsed()} s){run}")
                        shown = now
                    if status not in ENDED:
                        self._drain_logs()
                if status in ENDED:
                    return job
            if time.monotonic() - start > limit:
                raise ExecutionException(
                    f"job {self.job_id} has not ended after {limit:.0f} s; it continues on "
                    f"the platform (run {self.run_id})")
            time.sleep(self.poll_seconds)

    def _confirm_stop(self) -> bool:
        if not sys.stdin or not sys.stdin.isatty():
            return True
        try:
            sys.stderr.write(f"\nStop job {self.job_id}? [Y/n] ")
            sys.stderr.flush()
            answer = sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return True
        return answer.strip().lower() not in ("n", "no")

    def follow(self) -> dict[str, Any] | None:
        """Wait with progress until the job ends and return its record. On Ctrl-C, stop
        the job (asking first on a terminal) and raise; None when the user keeps it running
        and detaches."""
        try:
            return self._poll(echo=True, limit=self.max_wait)
        except KeyboardInterrupt:
            if not self._confirm_stop():
                _echo(f"job {self.job_id} continues on the platform (run {self.run_id})")
                return None
        _echo(f"stopping job {self.job_id} …")
        try:
            api.stop(self.job_id)
            job = self._poll(echo=True, limit=STOP_WAIT_SECONDS)
        except KeyboardInterrupt:
            raise ExecutionException(f"job {self.job_id}: stop requested; it may still be "
                                     f"ending on the platform (run {self.run_id})") from None
        except MlflowException as exc:
            raise ExecutionException(f"job {self.job_id}: stopping it failed: "
                                     f"{_message(exc)} (run {self.run_id})") from None
        if job["status"] == FINISHED:  # it ended before the stop reached it
            return job
        raise ExecutionException(f"job {self.job_id} stopped on request: {job['status']} "
                                 f"(run {self.run_id})")


def check_outcome(job: dict[str, Any], run_id: str) -> None:
    """Raise unless the job finished: its status and failure reason, for the CLI to print."""
    status = job.get("status")
    if status != FINISHED:
        reason = job.get("failure_reason") or "no reason given"
        raise ExecutionException(printable(f"job {job.get('job_id')} {status}: {reason} "
                                           f"(run {run_id})"))


class TenantSageMakerBackend(AbstractBackend):
    """The ``tenant-sagemaker`` project backend (entry point group
    ``mlflow.project_backend``)."""

    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri,
            experiment_id):
        from mlflow.projects.utils import fetch_and_validate_project, load_project

        try:
            api.tracking_uri()
        except MlflowException as exc:
            raise ExecutionException(exc.message) from None
        params = {str(k): str(v) for k, v in (params or {}).items()}
        try:
            work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
            project = load_project(work_dir)
            project.get_entry_point(entry_point)  # unknown: fails here, not in the job
        except ExecutionException:
            raise
        except MlflowException as exc:
            raise ExecutionException(exc.message) from None
        if project.docker_env:
            raise ExecutionException(f"{NAME} runs projects with python_env, conda_env or no "
                                     "environment, not docker_env")
        config = parse_backend_config(backend_config, work_dir)
        if config.env_manager == "conda" and project.env_type == "python_env":
            raise _config_error("a python_env project cannot run with env_manager 'conda'; use "
                                "'virtualenv', 'uv' or 'local'")
        if config.validation is not None:
            self._check_rules(work_dir, config.validation)
        with tempfile.TemporaryDirectory(prefix="mlt-project-") as tmp:
            archive = Path(tmp) / PACKAGE_FILE
            try:
                info = package(work_dir, archive)
            except PackageError as exc:
                raise ExecutionException(str(exc)) from None
            for line in info.skipped:
                _echo(f"not packaged: {line}")
            self._check_packaged(work_dir, config.validation, info.files)
            _echo(f"packaged {work_dir}: {len(info.files)} files, {human_size(info.total_bytes)}"
                  f" ({human_size(info.archive_bytes)} compressed)")
            try:  # refused now (quota, instance type, ...): nothing is created
                api.check(entry_point, config.server_config())
            except MlflowException as exc:
                raise ExecutionException(printable(f"job not started: {_message(exc)}")) \
                    from None
            run_id = self._create_run(project_uri, experiment_id, work_dir, version,
                                      entry_point, params)
            job = self._upload_and_submit(run_id, archive, entry_point, params, config)
        _echo(f"job {job['job_id']} submitted for run {run_id}: {job.get('status')}")
        submitted = TenantSubmittedRun(run_id, job["job_id"], config.poll_seconds,
                                       job.get("max_runtime_seconds")
                                       or config.max_runtime_seconds)
        if config.synchronous:
            try:
                ended = submitted.follow()
            except ExecutionException:
                raise
            except MlflowException as exc:  # the platform stopped answering
                raise ExecutionException(
                    f"lost track of job {submitted.job_id}: {_message(exc)}; it continues on "
                    f"the platform (run {run_id})") from None
            if ended is not None:
                check_outcome(ended, run_id)
        return submitted

    @staticmethod
    def _check_rules(work_dir: str, validation: Validation) -> None:
        """Bad rules fail here, before a run exists or an instance is paid for."""
        from mlflow_tenant_plugins.validation import RulesError, load_rules

        try:
            load_rules(project_path(Path(work_dir), validation.rules, "rules"))
        except RulesError as exc:
            raise ExecutionException(f"validation rules {validation.rules}: {exc.message}") \
                from None

    @staticmethod
    def _check_packaged(work_dir: str, validation: Validation | None, files: list[str]) -> None:
        if validation is None:
            return
        root = Path(work_dir).resolve()
        for what, value in (("rules", validation.rules), ("data", validation.data)):
            if what == "data" and is_uri(value):
                continue
            rel = (root / value).resolve().relative_to(root).as_posix()
            if rel not in files:
                raise ExecutionException(f"validation {what} {value!r} is left out of the "
                                         f"package (by {IGNORE_FILE}?): the job could not read "
                                         "it")

    @staticmethod
    def _create_run(project_uri, experiment_id, work_dir, version, entry_point, params) -> str:
        from mlflow.projects.utils import get_or_create_run

        try:
            run = get_or_create_run(None, project_uri, experiment_id, work_dir, version,
                                    entry_point, params)
        except MlflowException as exc:
            raise ExecutionException(printable(f"cannot create the run: {exc.message}")) \
                from None
        return run.info.run_id

    @staticmethod
    def _upload_and_submit(run_id: str, archive: Path, entry_point: str,
                           params: dict[str, str], config: JobConfig) -> dict[str, Any]:
        """Upload and submit; on any failure delete the run (and its package) and raise."""
        from mlflow import MlflowClient

        client = MlflowClient()
        try:
            client.log_artifact(run_id, str(archive), PACKAGE_ARTIFACT_DIR)
            return api.submit(run_id, entry_point, params, config.server_config())
        except BaseException as exc:
            cleanup = _discard_run(client, run_id, f"job not started: {_message(exc)}")
            if not isinstance(exc, Exception):  # Ctrl-C: the run is gone, the signal goes on
                raise
            raise ExecutionException(printable(
                f"job not started: {_message(exc)}{cleanup}")) from None


def _discard_run(client: Any, run_id: str, reason: str) -> str:
    """End the run the job would have written to as FAILED, with why, and remove the uploaded
    archive (the storage it holds counts against the tenant's quota); '' or a note on what is
    left. The run stays (FAILED) rather than being deleted: deleting runs needs the tenant's
    manage permission, which an editor submitting a job does not have. The platform's own
    check before the run is created refuses most submissions with nothing created at all."""
    note = ""
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
        repo.delete_artifacts(PACKAGE_ARTIFACT_DIR)
    except Exception:  # best effort: nothing may have been uploaded
        pass
    try:
        client.set_tag(run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run_id, "FAILED")
    except Exception as exc:
        note = f" (and run {run_id} could not be marked FAILED: {_message(exc)})"
    return note

"""What runs inside a job, on either engine: ``python -m mlflow_tenant_plugins.jobs.runner``.

1. read the :class:`~.spec.RunnerSpec` from ``MLT_JOB_SPEC``;
2. unpack the project archive (``MLT_JOB_PACKAGE``: the file, or a directory holding exactly
   one ``*.tar.gz``) into ``MLT_JOB_WORKDIR`` or a fresh temporary directory, refusing unsafe
   entries;
3. with ``MLT_JOB_AUTH=aws-iam``, write a temporary profile (mode 0600) so this process and
   the entry point authenticate with the job's AWS IAM identity through the client plugin;
4. if the spec has validation rules, check the data and log the verdict to the run; data that
   fails stops the job here, before any training;
5. run the entry point into the run the platform created
   (``mlflow.projects.run(…, backend="local", run_id=…)``).

Exit 0 on success; 1 on failure, with one line saying why in ``MLT_JOB_FAILURE_FILE`` (what
SageMaker shows as the job's ``FailureReason``; the platform copies it to the run). Its
output is the job's log, so every step says what it does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from mlflow_tenant_plugins.jobs.package import PackageError, unpack
from mlflow_tenant_plugins.jobs.spec import (
    DEFAULT_FAILURE_FILE,
    ENV_FAILURE_FILE,
    ENV_PACKAGE,
    ENV_SPEC,
    ENV_WORKDIR,
    RunnerSpec,
    Validation,
)

ENV_AUTH = "MLT_JOB_AUTH"
ENV_TENANT = "MLT_JOB_TENANT"
ENV_SERVER_ID = "MLT_JOB_SERVER_ID"
ENV_STS_ENDPOINT = "MLT_JOB_STS_ENDPOINT"
AWS_IAM = "aws-iam"
PROFILE_NAME = "job"
MAX_FAILURE_CHARS = 999


class JobFailure(Exception):
    """Why the job fails, in one line for the failure file."""


def say(message: str) -> None:
    print(f"[runner] {message}", flush=True)


def one_line(message: str, limit: int = MAX_FAILURE_CHARS) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def write_failure(message: str) -> None:
    path = Path(os.environ.get(ENV_FAILURE_FILE) or DEFAULT_FAILURE_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(one_line(message) + "\n")
    except OSError as exc:
        say(f"cannot write the failure file {path}: {exc}")


# -- steps -----------------------------------------------------------------------------------
def read_spec() -> RunnerSpec:
    text = os.environ.get(ENV_SPEC)
    if not text:
        raise JobFailure(f"runner: {ENV_SPEC} is not set")
    try:
        return RunnerSpec.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise JobFailure(f"runner: {ENV_SPEC} is not a valid job spec: {exc}") from None


def find_package(value: str | None) -> Path:
    """The archive: the path itself, or the one ``*.tar.gz`` in that directory."""
    if not value:
        raise JobFailure(f"runner: {ENV_PACKAGE} is not set")
    path = Path(value)
    if path.is_dir():
        found = sorted(path.glob("*.tar.gz"))
        if len(found) != 1:
            raise JobFailure(f"runner: {path} holds {len(found)} *.tar.gz files, expected one")
        return found[0]
    if not path.is_file():
        raise JobFailure(f"runner: project package {path} not found")
    return path


def unpack_project(archive: Path, workdir: Path) -> None:
    try:
        names = unpack(archive, workdir)
    except PackageError as exc:
        raise JobFailure(f"project package refused: {exc}") from None
    if not (workdir / "MLproject").is_file() and not (workdir / "mlproject").is_file():
        say("note: the project has no MLproject file; MLflow runs the entry point as a script")
    say(f"unpacked {len(names)} entries into {workdir}")


@contextlib.contextmanager
def job_identity() -> Iterator[None]:
    """With ``MLT_JOB_AUTH=aws-iam``: a temporary profile file naming the job's AWS IAM
    identity, and the variables that make the client plugin use it (inherited by the entry
    point's process). Removed when the job ends."""
    if os.environ.get(ENV_AUTH) != AWS_IAM:
        yield
        return
    tenant = os.environ.get(ENV_TENANT)
    if not tenant:
        raise JobFailure(f"runner: {ENV_AUTH}={AWS_IAM} needs {ENV_TENANT}")
    fields = {"auth": AWS_IAM, "tenant": tenant,
              "server_id": os.environ.get(ENV_SERVER_ID),
              "sts_endpoint": os.environ.get(ENV_STS_ENDPOINT),
              "aws_region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")}
    # JSON strings are TOML basic strings (same escapes).
    body = f"[{PROFILE_NAME}]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                           for k, v in fields.items() if v)
    directory = tempfile.mkdtemp(prefix="mlt-job-auth-")
    path = os.path.join(directory, "tenants.toml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    names = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TENANT_PROFILES", "MLFLOW_TENANT_PROFILE")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(dict(zip(names, ("tenant", path, PROFILE_NAME), strict=True)))
    say(f"tracking as the job's AWS IAM identity in tenant {tenant}")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(directory, ignore_errors=True)


def inside(workdir: Path, value: str, what: str) -> Path:
    path = (workdir / value).resolve()
    if Path(value).is_absolute() or not path.is_relative_to(workdir.resolve()):
        raise JobFailure(f"data validation failed: {what} {value!r} is outside the project")
    return path


def validation_data(workdir: Path, data: str, scratch: Path) -> str:
    """A local path to the data: inside the project, or downloaded from its URI."""
    scheme = urllib.parse.urlparse(data).scheme.lower()
    if len(scheme) <= 1:
        return str(inside(workdir, data, "data"))
    if scheme == "file":
        raise JobFailure(f"data validation failed: data {data!r}: file:// URIs are not allowed; "
                         "ship the data in the project or name an s3:// or runs:/ URI")
    import mlflow.artifacts

    say(f"downloading validation data {data}")
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=data, dst_path=str(scratch))
    except Exception as exc:
        raise JobFailure(f"data validation failed: cannot download {data}: "
                         f"{getattr(exc, 'message', None) or exc}") from None


def validate_data(spec: RunnerSpec, validation: Validation, workdir: Path) -> None:
    from mlflow.exceptions import MlflowException

    from mlflow_tenant_plugins.validation import validate
    from mlflow_tenant_plugins.validation.report import failure_message

    rules = inside(workdir, validation.rules, "rules")
    with tempfile.TemporaryDirectory(prefix="mlt-job-data-") as scratch:
        data = validation_data(workdir, validation.data, Path(scratch))
        say(f"validating {validation.data} against {validation.rules}")
        try:
            result = validate(data, str(rules), run_id=spec.run_id, log=True,
                              raise_on_failure=False)
        except MlflowException as exc:  # bad rules, unreadable data
            raise JobFailure(f"data validation failed: {exc.message}") from None
    if not result.passed:
        name = result.report["dataset"]["name"]
        message = failure_message(name, result.failures)
        print(message, flush=True)
        raise JobFailure("data validation failed: " + "; ".join(
            f["message"] for f in result.failures) + f" (data '{name}', "
            f"{len(result.failures)} rule(s) failed)")
    say("data validation passed")


def run_entry_point(spec: RunnerSpec, workdir: Path) -> None:
    import mlflow.projects
    from mlflow import MlflowClient
    from mlflow.exceptions import ExecutionException

    experiment_id = spec.experiment_id or MlflowClient().get_run(spec.run_id).info.experiment_id
    # env manager "local" means this environment: the entry point's `python` is the runner's.
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bin_dir and path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")
    say(f"running entry point '{spec.entry_point}' (env manager {spec.env_manager}) into run "
        f"{spec.run_id}")
    try:
        mlflow.projects.run(str(workdir), entry_point=spec.entry_point,
                            parameters=dict(spec.parameters), experiment_id=experiment_id,
                            env_manager=spec.env_manager, backend="local", run_id=spec.run_id,
                            synchronous=True)
    except ExecutionException as exc:
        raise JobFailure(f"entry point '{spec.entry_point}' failed: {exc.message}") from None


def mark_failed(run_id: str, status: str = "FAILED") -> None:
    """The run ends FAILED (KILLED when stopped) with the job (best effort: the platform
    does it too). MLflow marks an interrupted entry point's run FAILED; a stop is KILLED."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        current = client.get_run(run_id).info.status
        if current in ("RUNNING", "SCHEDULED") or (status == "KILLED" and current == "FAILED"):
            client.set_terminated(run_id, status)
    except Exception as exc:
        say(f"could not mark run {run_id} {status}: {exc}")


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (the engine stopping the job) unwinds like Ctrl-C: MLflow then stops the entry
    point's process and marks the run FAILED."""
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    start = time.monotonic()
    spec = None
    created = None
    try:
        spec = read_spec()
        say(f"job for run {spec.run_id}: entry point '{spec.entry_point}', parameters "
            f"{json.dumps(spec.parameters, sort_keys=True)}")
        archive = find_package(os.environ.get(ENV_PACKAGE))
        workdir_env = os.environ.get(ENV_WORKDIR)
        if workdir_env:
            workdir = Path(workdir_env)
        else:
            workdir = created = Path(tempfile.mkdtemp(prefix="mlt-job-"))
        unpack_project(archive, workdir)
        with job_identity():
            if spec.validation is not None:
                validate_data(spec, spec.validation, workdir)
            run_entry_point(spec, workdir)
    except JobFailure as exc:
        say(f"FAILED: {exc}")
        write_failure(str(exc))
        if spec is not None:
            mark_failed(spec.run_id)
        return 1
    except KeyboardInterrupt:
        say("stopped")
        write_failure("job stopped")
        if spec is not None:
            mark_failed(spec.run_id, "KILLED")
        return 1
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        say(f"FAILED: runner error: {type(exc).__name__}: {message}")
        write_failure(f"runner error: {message}")
        if spec is not None:
            mark_failed(spec.run_id)
        return 1
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
    say(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The SageMaker engine: one SageMaker training job per platform job.

The training job runs the tenant's project with the platform runner (``python -m
mlflow_tenant_plugins.jobs.runner``, set as the container entrypoint) under the tenant's own
execution role, reading the project archive from an input channel (``/opt/ml/input/data/
project``) and logging to the tracking server at ``MLFLOW_TRACKING_URI``.

Why some choices:

- **No network isolation.** ``EnableNetworkIsolation`` would cut the container off from the
  tracking server, which the runner must reach to log into the run. Per-tenant network
  limits come from a VPC config (subnets and security groups per tenant), to be added later.
- **No secrets in the environment.** SageMaker shows a training job's ``Environment`` to
  anyone allowed ``DescribeTrainingJob``, so names that look like credentials (``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``, ``*KEY*``) are refused. The job authenticates with its
  execution role instead (the runner's ``aws-iam`` mode).
- **Ownership on the tag, not the name.** Every job carries ``mlt:tenant``; a job whose tag
  names another tenant reads as absent, cannot be stopped and shows no logs, even if a name
  happened to collide.
- **Idempotent by name.** Starting a job whose name already exists for the same tenant is a
  success (a retried start); stopping a job that ended or does not exist is a no-op.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from mlflow_tenant_plugins.deployments.aws import error_code
from mlflow_tenant_plugins.deployments.names import TAG_TENANT
from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.jobs.executor import EngineState, JobLaunch, LogPage

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHANNEL = "project"
CHANNEL_DIR = f"/opt/ml/input/data/{CHANNEL}"
ENTRYPOINT = ("python", "-m", "mlflow_tenant_plugins.jobs.runner")
VOLUME_SIZE_GB = 30
# SageMaker's limits on a training job's Environment (CreateTrainingJob rejects more).
ENV_MAX_ENTRIES = 100
ENV_MAX_VALUE = 512
# SecondaryStatus values of an InProgress job that has not begun running the runner yet.
STARTING_STATES = frozenset({
    "Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
    "DownloadingTrainingImage",
})
_SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
_ALLOWED_NAMES = frozenset({"AWS_REGION"})
_OWNER_CACHE_SIZE = 4096
# Bounds on one logs() call: CloudWatch may answer empty pages before the end of a stream.
_MAX_STREAMS = 50
_MAX_READS_PER_STREAM = 10


def looks_secret(name: str) -> bool:
    """True for an environment name that looks like it holds a credential. ``MLT_*`` names are
    the platform's own (job spec, package path, tenant, STS endpoint): never secrets."""
    if name.upper().startswith("MLT_") or name.upper() in _ALLOWED_NAMES:
        return False
    return bool(_SECRET_WORDS.search(name))


def job_environment(launch: JobLaunch) -> dict[str, str]:
    """The training job's environment; ValueError when a name looks secret or a value breaks
    SageMaker's limits (refused here, before anything is created, with the name in the
    message rather than as AWS's generic ValidationException)."""
    runner_spec = json.dumps(json.loads(launch.runner.to_json()), sort_keys=True,
                             separators=(",", ":"))
    env = {
        spec.ENV_SPEC: runner_spec,
        spec.ENV_PACKAGE: CHANNEL_DIR,
        "MLFLOW_TRACKING_URI": launch.tracking_uri,
        **launch.environment,
    }
    secret = sorted(k for k in env if looks_secret(k))
    if secret:
        raise ValueError(
            f"refusing to start SageMaker job {launch.name}: environment variable(s) "
            f"{', '.join(secret)} look like secrets, and SageMaker shows a training job's "
            "environment in DescribeTrainingJob; the job authenticates with its execution role"
        )
    if len(env) > ENV_MAX_ENTRIES:
        raise ValueError(f"SageMaker job {launch.name}: {len(env)} environment variables, "
                         f"SageMaker allows {ENV_MAX_ENTRIES}")
    long = sorted(k for k, v in env.items() if len(v) > ENV_MAX_VALUE)
    if long:
        raise ValueError(f"SageMaker job {launch.name}: environment variable(s) "
                         f"{', '.join(long)} longer than SageMaker's {ENV_MAX_VALUE} characters")
    return env


def is_not_found(exc: BaseException) -> bool:
    """SageMaker answers a missing training job with ValidationException "Requested resource
    not found." (moto: "Could not find training job …"); the API model also names
    ResourceNotFound."""
    if not isinstance(exc, ClientError):
        return False
    message = exc.response.get("Error", {}).get("Message", "").lower()
    return error_code(exc) in ("ResourceNotFound", "ResourceNotFoundException") or (
        error_code(exc) == "ValidationException"
        and ("not found" in message or "could not find" in message)
    )


def _already_ended(exc: BaseException) -> bool:
    """StopTrainingJob on a job that is no longer InProgress: ValidationException "The request
    was rejected because the training job is in status Completed." (or Stopping, Stopped…)."""
    message = (exc.response.get("Error", {}).get("Message", "") if isinstance(exc, ClientError)
               else "")
    return error_code(exc) == "ValidationException" and "is in status" in message


def _utc(value: Any) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


def state_of(desc: dict[str, Any]) -> EngineState:
    """A DescribeTrainingJob answer in the platform's statuses."""
    status = desc.get("TrainingJobStatus", "")
    secondary = desc.get("SecondaryStatus") or None
    started, ended = _utc(desc.get("TrainingStartTime")), _utc(desc.get("TrainingEndTime"))
    if status == "InProgress":
        word = spec.STARTING if secondary in STARTING_STATES else spec.RUNNING
        return EngineState(word, started_at=started, detail=secondary)
    if status == "Completed":
        return EngineState(spec.FINISHED, started_at=started, ended_at=ended, detail=secondary)
    if status == "Failed":
        reason = desc.get("FailureReason") or "SageMaker reported the training job failed"
        return EngineState(spec.FAILED, failure_reason=reason, started_at=started,
                           ended_at=ended, detail=secondary)
    if status == "Stopping":
        return EngineState(spec.RUNNING, started_at=started, detail="Stopping")
    if status == "Stopped":
        reason = None
        if secondary == "MaxRuntimeExceeded":
            limit = (desc.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
            reason = f"stopped after its maximum runtime ({limit} s)" if limit else (
                "stopped after its maximum runtime")
        return EngineState(spec.KILLED, failure_reason=reason, started_at=started,
                           ended_at=ended, detail=secondary)
    # A status this code does not know yet: still the engine's, keep watching it.
    return EngineState(spec.RUNNING, started_at=started, detail=secondary or status or None)


def _encode_token(positions: dict[str, str]) -> str:
    raw = json.dumps(positions, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str | None) -> dict[str, str]:
    if not token:
        return {}
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        positions = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid log token") from exc
    if not isinstance(positions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in positions.items()
    ):
        raise ValueError("invalid log token")
    return positions


class SageMakerEngine:
    """Runs jobs as SageMaker training jobs; handed the boto3 clients (``sagemaker`` and
    ``logs``) the server made for its region and endpoint."""

    name = "sagemaker"

    def __init__(self, sagemaker_client: Any, logs_client: Any, *,
                 volume_size_gb: int = VOLUME_SIZE_GB, log_group: str = LOG_GROUP):
        self.sagemaker = sagemaker_client
        self.logs_client = logs_client
        self.volume_size_gb = volume_size_gb
        self.log_group = log_group
        # name -> tenant, from the mlt:tenant tag (a job's tags are set at creation and its
        # name is never reused for another job), to spare a ListTags per describe and logs.
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    # -- start --------------------------------------------------------------------------------
    def start(self, launch: JobLaunch) -> None:
        missing = [f for f in ("role_arn", "image_uri", "package_s3_uri", "output_s3_uri")
                   if not getattr(launch, f)]
        if missing:
            raise ValueError(f"SageMaker job {launch.name}: launch lacks {', '.join(missing)}")
        if launch.tags.get(TAG_TENANT, launch.tenant) != launch.tenant:
            raise ValueError(f"SageMaker job {launch.name}: tag {TAG_TENANT} names another "
                             "tenant than the launch")
        tags = {**launch.tags, TAG_TENANT: launch.tenant}
        request = {
            "TrainingJobName": launch.name,
            "AlgorithmSpecification": {
                "TrainingImage": launch.image_uri,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": list(ENTRYPOINT),
            },
            "RoleArn": launch.role_arn,
            "InputDataConfig": [{
                "ChannelName": CHANNEL,
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": launch.package_s3_uri,
                    "S3DataDistributionType": "FullyReplicated",
                }},
            }],
            "OutputDataConfig": {"S3OutputPath": launch.output_s3_uri},
            "ResourceConfig": {
                "InstanceType": launch.instance_type,
                "InstanceCount": launch.instance_count,
                "VolumeSizeInGB": self.volume_size_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": launch.max_runtime_seconds},
            "Environment": job_environment(launch),
            "EnableNetworkIsolation": False,
            "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()],
        }
        try:
            self.sagemaker.create_training_job(**request)
        except ClientError as exc:
            # A retried start whose first attempt did reach SageMaker: the job is ours.
            if error_code(exc) == "ResourceInUse" and self._owner(launch.name) == launch.tenant:
                return
            raise
        self._remember(launch.name, launch.tenant)

    # -- describe -----------------------------------------------------------------------------
    def describe(self, tenant: str, name: str) -> EngineState | None:
        desc = self._describe_owned(tenant, name)
        return state_of(desc) if desc is not None else None

    def _describe_owned(self, tenant: str, name: str) -> dict[str, Any] | None:
        try:
            desc = self.sagemaker.describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        if self._owner(name, desc.get("TrainingJobArn")) != tenant:
            return None
        return desc

    def _owner(self, name: str, arn: str | None = None) -> str | None:
        """The tenant named by the job's ``mlt:tenant`` tag (None: no such job or no tag)."""
        with self._lock:
            if name in self._owners:
                self._owners.move_to_end(name)
                return self._owners[name]
        if arn is None:
            try:
                arn = self.sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
            except ClientError as exc:
                if is_not_found(exc):
                    return None
                raise
        owner, kwargs = None, {"ResourceArn": arn}
        while True:
            page = self.sagemaker.list_tags(**kwargs)
            for tag in page.get("Tags", []):
                if tag.get("Key") == TAG_TENANT:
                    owner = tag.get("Value")
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        if owner:
            self._remember(name, owner)
        return owner

    def _remember(self, name: str, tenant: str) -> None:
        with self._lock:
            self._owners[name] = tenant
            self._owners.move_to_end(name)
            while len(self._owners) > _OWNER_CACHE_SIZE:
                self._owners.popitem(last=False)

    def running(self) -> list[tuple[str, str]]:
        """(tenant, name) of every training job in progress that the platform started (named
        ``mlt-…`` and tagged with a tenant)."""
        found, kwargs = [], {"StatusEquals": "InProgress", "NameContains": "mlt-",
                             "MaxResults": 100}
        while True:
            page = self.sagemaker.list_training_jobs(**kwargs)
            for job in page.get("TrainingJobSummaries", []):
                name = job["TrainingJobName"]
                if not name.startswith("mlt-"):
                    continue
                owner = self._owner(name, job.get("TrainingJobArn"))
                if owner:
                    found.append((owner, name))
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    def remove(self, tenant: str, name: str) -> None:
        """SageMaker keeps a job's description and logs itself; nothing to remove here."""

    # -- stop ---------------------------------------------------------------------------------
    def stop(self, tenant: str, name: str) -> None:
        desc = self._describe_owned(tenant, name)
        if desc is None or desc.get("TrainingJobStatus") != "InProgress":
            return  # absent, another tenant's, stopping or ended: nothing to do
        try:
            self.sagemaker.stop_training_job(TrainingJobName=name)
        except ClientError as exc:
            # It ended (or went) between the describe and the stop.
            if is_not_found(exc) or _already_ended(exc):
                return
            raise

    # -- logs ---------------------------------------------------------------------------------
    def logs(self, tenant: str, name: str, token: str | None, limit: int = 500) -> LogPage:
        """Lines of the job's CloudWatch streams (``{name}/algo-N-…``), each read forward from
        where ``token`` left it. The token is base64 JSON ``{stream: forward token}``; only the
        job's own streams, as CloudWatch lists them, are read, whatever the token names.
        Nothing new (or nothing yet) answers no lines and the same token."""
        positions = _decode_token(token)
        if limit <= 0 or self._describe_owned(tenant, name) is None:
            return LogPage([], token)
        streams = self._streams(name)
        if not streams:
            return LogPage([], token)
        lines: list[str] = []
        moved = dict(positions)
        for stream in streams:
            if len(lines) >= limit:
                break
            lines.extend(self._read_stream(stream, moved, limit - len(lines)))
        if not lines and all(moved.get(s) == positions.get(s) for s in streams):
            return LogPage([], token)
        return LogPage(lines, _encode_token({s: moved[s] for s in streams if s in moved}))

    def _streams(self, name: str) -> list[str]:
        found: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": self.log_group,
                                  "logStreamNamePrefix": f"{name}/"}
        try:
            while len(found) < _MAX_STREAMS:
                page = self.logs_client.describe_log_streams(**kwargs)
                found.extend(s["logStreamName"] for s in page.get("logStreams", []))
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":  # the group: no job logged yet
                return []
            raise
        return sorted(s for s in found if s.startswith(f"{name}/"))[:_MAX_STREAMS]

    def _read_stream(self, stream: str, positions: dict[str, str], limit: int) -> list[str]:
        lines: list[str] = []
        for _ in range(_MAX_READS_PER_STREAM):
            kwargs: dict[str, Any] = {"logGroupName": self.log_group, "logStreamName": stream,
                                      "startFromHead": True, "limit": min(limit - len(lines),
                                                                          10_000)}
            if stream in positions:
                kwargs["nextToken"] = positions[stream]
            try:
                page = self.logs_client.get_log_events(**kwargs)
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return lines
                if error_code(exc) == "InvalidParameterException" and stream in positions:
                    raise ValueError("invalid log token") from exc
                raise
            lines.extend(e.get("message", "").rstrip("\n") for e in page.get("events", []))
            forward = page.get("nextForwardToken")
            at_end = not forward or forward == positions.get(stream)
            if forward:
                positions[stream] = forward
            if at_end or len(lines) >= limit:
                break
        return lines

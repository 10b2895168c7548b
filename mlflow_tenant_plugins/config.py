"""Platform settings: one TOML file named by ``MLFLOW_TENANT_CONFIG``, every key also from
an environment variable ``MLFLOW_TENANT_<KEY>`` (upper case), which wins over the file.

Nothing is required: the embedded default is one sqlite file in the working directory, the
same file ``mlflow server`` uses by default, so tracking, basic-auth and the tenant registry
share one database (one tenant, one record set).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_tenant_plugins.mlflow_hooks.server import backend_store_uri

CONFIG_ENV = "MLFLOW_TENANT_CONFIG"
ENV_PREFIX = "MLFLOW_TENANT_"


# Which processes read a setting (docs/settings.md), by name or name prefix, first match wins:
# "server" is `mlflow server --app-name tenant-auth`; "CLI" the admin CLI `mlflow-tenants`;
# "admin deploy" `mlflow deployments … -t tenant-sagemaker` run by an admin directly, with
# their own AWS credentials. A tenant's machine reads none of them.
PROCESSES = ("server", "CLI", "admin deploy")
READERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database_uri", PROCESSES),
    ("tracking_uri", ("server", "CLI")),
    ("aws_", PROCESSES),  # CLI: usage --publish, --reconcile, --reconcile-deployments
    ("deploy_", PROCESSES),  # CLI: usage --reconcile-deployments
    ("usage_publish_interval_seconds", ("server",)),
    ("usage_", ("server", "CLI")),  # CLI: usage --publish
    ("jobs_", ("server", "CLI")),  # CLI: job list, job stop
    ("metering_", ("server",)),
    ("ledger_reconcile_", ("server",)),
    ("", ("server",)),
)


# The TOML tables a part reads as a section of its own (``Settings.extra``); any other table is
# an error, as an unknown key is.
KNOWN_TABLES = {
    # Per-tenant alarm thresholds: [deploy_tenant_alarms.<tenant>] (deployments/alarms.py).
    "deploy_tenant_alarms": "per-tenant endpoint alarm thresholds",
    # The price table: [prices] and its sub-tables (billing/prices.py).
    "prices": "prices for statements (storage over allowance, instance-hours, requests)",
}


def readers(name: str) -> tuple[str, ...]:
    """The processes that read setting ``name``."""
    return next(procs for prefix, procs in READERS if name.startswith(prefix))


class ConfigError(ValueError):
    """A setting is missing, malformed or of the wrong type."""


@dataclass(frozen=True)
class Settings:
    # Database of the tenant registry; also basic-auth's and (by default) tracking's. Unset: the
    # server uses its ``--backend-store-uri`` (this default only outside ``mlflow server``) and
    # the admin CLI refuses until it is named here or by ``--db``.
    database_uri: str = "sqlite:///mlflow.db"
    # Tracking store holding MLflow workspaces; defaults to ``database_uri``.
    tracking_uri: str = ""
    # Seconds a verified credential (key, IAM identity) may be served from a worker's cache:
    # revocation and suspension take effect on every worker and instance within this bound.
    auth_cache_ttl_seconds: float = 5.0
    # Enabled authentication methods, in the order they are tried.
    auth_methods: tuple[str, ...] = ("key",)
    # Largest request body the server accepts on any route, authenticated or not (413 beyond;
    # MLflow buffers a whole body in memory before its handlers run).
    max_request_body_bytes: float = 64 * 1024 * 1024
    # Largest single artifact upload through the server's artifact proxy (413 beyond; larger
    # files go up in parts through MLflow's multipart upload).
    max_artifact_upload_bytes: float = 5 * 1024**3
    # AWS ALB OIDC (``x-amzn-oidc-data``): where the ALB's public key for a token's ``kid``
    # is fetched (``{region}`` and ``{kid}`` are filled in).
    alb_public_key_url: str = "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}"
    # Region of the ALB when its ARN does not give one.
    alb_region: str = "us-east-1"
    # ARNs of the load balancers whose tokens are accepted (the token's ``signer``).
    alb_arns: tuple[str, ...] = ()
    # Claim naming the principal (its user name on the platform).
    alb_principal_claim: str = "email"
    # Claim naming the tenant the user acts in.
    alb_tenant_claim: str = "custom:tenant"
    # Claim naming the user's role in that tenant (viewer when absent).
    alb_role_claim: str = "custom:role"
    # Where the tenant role of an ALB OIDC or trusted-proxy identity comes from: "registry"
    # (only who the user is comes from the token or headers; roles from ``member bind``) or
    # "asserted" (the token's or proxy's tenant and role claims are provisioned on first
    # sight: only when every such claim and header is set by the platform, never the user).
    external_roles: str = "registry"
    # Trusted proxy headers, accepted only from these client addresses.
    proxy_addresses: tuple[str, ...] = ()
    # Header in which the trusted proxy names the user.
    proxy_user_header: str = "X-Forwarded-User"
    # Header in which the trusted proxy names the tenant.
    proxy_tenant_header: str = "X-Forwarded-Tenant"
    # Header in which the trusted proxy names the role (viewer when absent).
    proxy_role_header: str = "X-Forwarded-Role"
    # AWS IAM identity: where presigned GetCallerIdentity calls are replayed, and the
    # server id the client must sign so a request cannot be replayed elsewhere.
    sts_endpoint: str = "https://sts.amazonaws.com/"
    # This platform's id, which clients sign into their IAM requests (required for aws-iam).
    server_id: str = ""
    # AWS for artifacts and deployments (empty: boto3's defaults).
    aws_region: str = "us-east-1"
    # Endpoint URL for every AWS service (an emulator in tests and the demo).
    aws_endpoint_url: str = ""
    # tenant-s3 artifacts (mlflow_tenant_plugins.artifacts).
    # How S3 calls made for a tenant get their credentials:
    #   "session-policy"  - AssumeRole of ``artifact_role_arn`` with a session policy allowing
    #                       only the tenant's prefix;
    #   "role-per-tenant" - AssumeRole of ``artifact_role_arn`` with ``{tenant}`` replaced by the
    #                       tenant name (each role's own policy names its prefix), plus the same
    #                       session policy as a second fence;
    #   "ambient"         - the process's own AWS credentials (no prefix scoping: dev/demo only);
    #   "auto" (default)  - "session-policy" when ``artifact_role_arn`` is set, else "ambient".
    artifact_credentials: str = "auto"
    # Role to assume for tenant artifact access; a template with ``{tenant}`` for
    # "role-per-tenant" (e.g. ``arn:aws:iam::123456789012:role/mlflow-tenant-{tenant}``).
    artifact_role_arn: str = ""
    # Optional ExternalId passed to AssumeRole (when the role's trust policy requires one).
    artifact_role_external_id: str = ""
    # Lifetime requested for assumed-role sessions (AWS: 900 s up to the role's maximum).
    # Presigned multipart part URLs die with the session that signed them, so this also bounds
    # how long a large proxied multipart upload may take.
    artifact_credential_duration_seconds: float = 3600.0
    # Cached tenant credentials are refreshed this long before they expire (botocore's
    # advisory refresh; the mandatory refresh is at half of it), so a transfer in flight
    # never signs a request with credentials about to expire.
    artifact_credential_refresh_seconds: float = 600.0
    # Per-tenant SSE-KMS keys for artifact writes, entries "tenant=key-id-or-arn"; an entry
    # "*=key" applies to every tenant without an entry of its own. Empty: bucket default.
    artifact_kms_key_ids: tuple[str, ...] = ()
    # tenant-sagemaker deployments (mlflow_tenant_plugins.deployments).
    # IAM role SageMaker runs a tenant's model under (pulls the image, reads the package; the
    # model's code holds its credentials). ``{tenant}`` is replaced by the tenant: one role per
    # tenant, reading only that tenant's packages (``deploy/iam/``). Unset: deploys answer 400
    # naming this setting. Without ``{tenant}`` (one role for all) only with
    # ``deploy_network_isolation = "always"``.
    deploy_execution_role_arn: str = ""
    # SageMaker ``EnableNetworkIsolation`` for tenants' models (no network in the container):
    # "per-deployment" (a deployment asks with ``-C network_isolation=true``) or "always".
    deploy_network_isolation: str = "per-deployment"
    # Serving image; empty: MLflow's pyfunc image (``mlflow models build-docker`` pushed as
    # ``mlflow-pyfunc:<mlflow version>``) in this account's ECR in ``aws_region``.
    deploy_image_uri: str = ""
    # Where model packages (model.tar.gz) go: an ``s3://BUCKET/PREFIX`` template in which
    # ``{tenant}`` (required) is replaced by the tenant; empty: the ``tenant-s3://BUCKET/ROOT``
    # ``--artifacts-destination`` + ``/platform/deployments/{tenant}``. Never inside a
    # tenant's artifact prefix (refused): tenants must not write the packages they run.
    deploy_package_root: str = ""
    # Seconds between status polls while an endpoint is Creating or Updating.
    deploy_poll_seconds: float = 10.0
    # A create or update not InService after this long is failed and rolled back.
    deploy_timeout_seconds: float = 3600.0
    # Default CloudWatch alarm thresholds for every endpoint. A tenant's own go in the config
    # file's ``[deploy_tenant_alarms.<tenant>]`` table (same names without ``deploy_``), a
    # deployment's own in its ``-C alarm_…`` config keys.
    deploy_alarm_5xx_errors: float = 1.0  # Invocation5XXErrors, sum per period
    deploy_alarm_4xx_errors: float = 50.0  # Invocation4XXErrors, sum per period
    deploy_alarm_latency_p99_ms: float = 1000.0  # ModelLatency p99 (AWS reports microseconds)
    deploy_alarm_cpu_percent: float = 90.0  # CPUUtilization average (100 per vCPU)
    deploy_alarm_memory_percent: float = 90.0  # MemoryUtilization average
    deploy_alarm_period_seconds: float = 60.0  # period of every endpoint alarm
    deploy_alarm_evaluation_periods: float = 5.0  # periods over threshold before ALARM
    # Application Auto Scaling target: SageMakerVariantInvocationsPerInstance per minute.
    deploy_target_invocations_per_instance: float = 100.0
    # Tenant usage to CloudWatch (mlflow_tenant_plugins.monitoring): seconds between
    # publishes from the server, by one worker of one instance at a time (a lease in the
    # database); 0 turns the periodic publish off (``mlflow-tenants usage --publish`` still
    # publishes once).
    usage_publish_interval_seconds: float = 0.0
    # CloudWatch namespace of the per-tenant usage metrics (dimension ``Tenant``).
    usage_metrics_namespace: str = "MLflow/Tenants"
    # A tenant's usage alarm fires when any of its quotas is this full (percent).
    usage_alarm_threshold_percent: float = 90.0
    # SNS topic of the usage alarms of tenants without an alarm topic of their own (empty:
    # those alarms notify nobody, their state still shows in CloudWatch).
    usage_alarm_topic_arn: str = ""
    # Metering: seconds between samples of every tenant's storage and endpoint instances into
    # the time-weighted meters (by one worker of one instance at a time, a lease in the
    # database); 0 turns sampling off.
    metering_interval_seconds: float = 300.0
    # Seconds between writes of the API requests each worker counted per tenant (for
    # statements); 0 turns request counting off.
    metering_flush_seconds: float = 10.0
    # Seconds between the server's own reconciles of the usage ledger against S3 (tenant-s3
    # storage) and SageMaker (endpoints, instances), by one worker of one instance at a time
    # (a lease in the database); corrections are logged and counted on /metrics. 0: off
    # (``mlflow-tenants usage --reconcile`` still reconciles by hand).
    ledger_reconcile_interval_seconds: float = 3600.0
    # Whether that periodic reconcile also recounts storage from S3: "off" (default) or "on".
    # Off by default because a recount cannot tell a delete in flight (object gone from S3,
    # size not yet given back) from drift, and would then give the size back twice; turn it on
    # only with a long interval, or reconcile storage by hand at a quiet time.
    ledger_reconcile_storage: str = "off"
    # Jobs: tenants' MLflow projects run by the platform (``mlflow run -b tenant-sagemaker``).
    # Engine: "sagemaker" (a SageMaker training job per run, under the tenant's execution
    # role), "local" (a subprocess on the server's host: one machine, demos and tests; NOT an
    # isolation boundary: the project's code runs as the server's OS user), or "" (off: job
    # submissions answer 400 naming this setting).
    jobs_executor: str = ""
    # Address jobs log to: the platform's URL as a job reaches it (required when jobs are on;
    # never taken from a request, whose Host header the caller chooses).
    jobs_tracking_uri: str = ""
    # IAM role a SageMaker job runs under, with ``{tenant}``: it must reach only that tenant's
    # prefix, and the platform binds it to the tenant as its editor (the job logs with it, by
    # the AWS IAM method). Empty: ``deploy_execution_role_arn``.
    jobs_execution_role_arn: str = ""
    # Training images by environment manager, entries "manager=image-uri" (e.g.
    # "local=123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-tenant-job:3.17"); a manager
    # without an image is refused on SageMaker. The image holds Python, this package and MLflow.
    jobs_image_uris: tuple[str, ...] = ()
    # Environment managers a job may ask for (the project's env is built inside the job).
    jobs_env_managers: tuple[str, ...] = ("local", "virtualenv", "conda", "uv")
    # Largest project archive a submission may upload (the client refuses larger, as does
    # the server before starting a job).
    jobs_max_package_bytes: float = 100 * 1024 * 1024
    # Seconds between the server's checks of running jobs (status, end, quota release,
    # orphans), by one worker of one instance at a time (a lease in the database); 0: off.
    jobs_reconcile_interval_seconds: float = 15.0
    # A job record without a started engine job after this long was left by a worker that
    # died mid-submission: the reconcile fails it and releases what it held.
    jobs_submit_timeout_seconds: float = 300.0
    # Local engine: where jobs' working directories and logs live (empty: the system's
    # temporary directory).
    jobs_local_dir: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or self.database_uri


def _coerce(name: str, raw: object, kind: type, source: str = "") -> object:
    """``raw`` as ``kind``; errors name the setting and where its value came from."""
    where = f" ({source})" if source else ""
    if kind is tuple:
        if isinstance(raw, str):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
            return tuple(raw)
        raise ConfigError(f"setting {name!r}{where} must be a list of strings, got {raw!r}")
    if kind is float:
        # bool is an int to Python, but `true` for a number of seconds is a mistake.
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ConfigError(f"setting {name!r}{where} must be a number, got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"setting {name!r}{where} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"setting {name!r}{where} must be a finite number >= 0, got {raw!r}"
            )
        return value
    if kind is str and isinstance(raw, str):
        return raw
    raise ConfigError(f"setting {name!r}{where} must be a string, got {raw!r}")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the file named by ``MLFLOW_TENANT_CONFIG`` and the environment.

    An unknown key or table in the file is an error (a mistyped key silently falling back to a
    default is how a platform ends up on the wrong database); the tables of
    :data:`KNOWN_TABLES` are kept in ``extra`` for the parts that read them.

    Only the entry points call this — the server's ``create_app``, the admin CLI, an admin's
    direct ``tenant-sagemaker`` deploy (and the ``tenant-s3`` repository MLflow builds from a
    URI in any process); every other part is handed the settings."""
    env = os.environ if environ is None else environ
    path = env.get(CONFIG_ENV)
    values: dict[str, object] = _read_file(path) if path else {}
    sources = {k: f"in {path}" for k in values}
    kinds = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "extra"}
    tables = [k for k in values if k not in kinds and isinstance(values[k], dict)]
    unknown_tables = [k for k in tables if k not in KNOWN_TABLES]
    if unknown_tables:
        close = difflib.get_close_matches(unknown_tables[0], KNOWN_TABLES, n=1)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        known = ", ".join(f"[{t}]" for t in KNOWN_TABLES)
        raise ConfigError(f"unknown table [{unknown_tables[0]}] in {path} (known tables: "
                          f"{known}){hint}")
    extra = {k: values.pop(k) for k in tables}
    unknown = [k for k in values if k not in kinds]
    if unknown:
        close = difflib.get_close_matches(unknown[0], kinds, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown setting {unknown[0]!r} in {path}{hint}")
    for name in kinds:
        env_value = env.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = env_value
            sources[name] = f"from {ENV_PREFIX + name.upper()}"
    if "database_uri" not in values and backend_store_uri(env):
        # Inside `mlflow server`: by default the registry shares the tracking database.
        values["database_uri"] = backend_store_uri(env)
    kind_of = {"str": str, "float": float, "tuple[str, ...]": tuple}
    coerced = {
        n: _coerce(n, v, kind_of[kinds[n]], sources.get(n, "")) for n, v in values.items()
    }
    return Settings(**coerced, extra=extra)


def _read_file(path: str) -> dict[str, object]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {CONFIG_ENV}={path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def database_source(environ: dict[str, str] | None = None) -> str | None:
    """Where ``database_uri`` was named (``from MLFLOW_TENANT_DATABASE_URI``, ``in FILE``), or
    None when nothing names it. The server then uses its ``--backend-store-uri``, which the
    admin CLI cannot see: it must be told rather than guess (see cli/database.py)."""
    env = os.environ if environ is None else environ
    variable = ENV_PREFIX + "DATABASE_URI"
    if env.get(variable):
        return f"from {variable}"
    path = env.get(CONFIG_ENV)
    if path and "database_uri" in _read_file(path):
        return f"in {path}"
    return None

"""The ``tenant-sagemaker`` deployment client: what ``mlflow deployments`` runs on a tenant's
machine.

``-t tenant-sagemaker``: through the platform. Requests go to the tracking server
(``MLFLOW_TRACKING_URI``) with MLflow's own REST helpers, so the tenant's
``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_AUTH`` provider authenticates them; the server
checks role and quotas and deploys with the platform's AWS credentials. Nothing server-side is
imported.

``-t tenant-sagemaker:/REGION[/TENANT]``: direct mode, for platform admins with their own AWS
credentials and the platform config (``MLFLOW_TENANT_CONFIG``); the tenant comes from
``-C tenant=…``, the URI, or ``MLFLOW_WORKSPACE``. The service is imported only then.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import click
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, ErrorCode

from mlflow_tenant_plugins.deployments.model_uri import check_model_uri
from mlflow_tenant_plugins.deployments.options import (
    CLIENT,
    CLIENT_ONLY,
    CREATE,
    DELETE,
    UPDATE,
    parse_config,
    validate_deployment_name,
)
from mlflow_tenant_plugins.tenancy.text import printable
from mlflow_tenant_plugins.wire import DEPLOYMENTS_PREFIX, WORKSPACE_HEADER

PREFIX = DEPLOYMENTS_PREFIX
DEFAULT_TIMEOUT = 1800
PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


PREVIEW_CHARS = 200
# Direct mode works on the platform's own registry; with none named it would have made (and
# deployed against) a new ./mlflow.db that no server reads, as the admin CLI once did.
NO_DATABASE = ("direct mode needs the platform's database: set MLFLOW_TENANT_DATABASE_URI=URI "
               "(the server's --backend-store-uri, e.g. postgresql://…), or database_uri in the "
               "TOML file named by MLFLOW_TENANT_CONFIG")


class DeploymentClientError(MlflowException, click.ClickException):
    """An error the ``mlflow deployments`` CLI shows as one clean ``Error: …`` line (click
    prints a ClickException instead of a traceback); code calling the client catches it as
    the MlflowException it also is."""

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE):
        MlflowException.__init__(self, message, error_code)

    @classmethod
    def of(cls, exc: MlflowException) -> DeploymentClientError:
        """``exc`` as a clean error: same code, message escaped (it may quote tenant text)."""
        if isinstance(exc, cls):
            return exc
        try:
            code = ErrorCode.Value(exc.error_code)
        except ValueError:
            code = INTERNAL_ERROR
        return cls(printable(exc.message), code)


def _clean_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Every MlflowException a client method raises becomes a DeploymentClientError."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except MlflowException as exc:
            raise DeploymentClientError.of(exc) from None

    return wrapper


def _echo(message: str) -> None:
    print(printable(message), file=sys.stderr, flush=True)


def clean(value: Any) -> Any:
    """``value`` with every string in it (keys too) made safe to print: text in a deployment
    (a failure reason, tags, a model URI) comes from tenants and SageMaker, and reaches a
    terminal through ``mlflow deployments get/list``. Control and format characters (ESC, CR,
    BEL, OSC sequences, bidi overrides) are escaped as ``\\xNN``/``\\uNNNN``."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def parse_predictions(name: str, text: str) -> PredictionsResponse:
    """The endpoint's answer as MLflow predictions, or a clean error that shows what came
    back (truncated, escaped) and what to check."""
    try:
        return PredictionsResponse.from_json(text)
    except (MlflowException, ValueError, TypeError):
        pass
    preview = printable(text[:PREVIEW_CHARS]) + ("…" if len(text) > PREVIEW_CHARS else "")
    raise DeploymentClientError(
        f"deployment '{name}' answered with something that is not JSON ({len(text)} "
        f"characters): '{preview}'. Check that the endpoint runs MLflow's serving image "
        f"(`mlflow deployments get -t tenant-sagemaker --name {name}`), that the model's "
        "predict returns JSON-serialisable output, and its logs in CloudWatch "
        "(/aws/sagemaker/Endpoints/<endpoint_name>).")


def predict_body(inputs: Any, params: dict[str, Any] | None = None) -> str:
    """The JSON the MLflow scoring server takes, from the inputs ``mlflow.pyfunc`` takes."""
    if isinstance(inputs, str | bytes):
        body = json.loads(inputs)
    elif isinstance(inputs, dict):
        body = dict(inputs) if any(k in inputs for k in PAYLOAD_KEYS) else {"inputs": inputs}
    else:
        from mlflow.utils.proto_json_utils import dump_input_data

        return dump_input_data(inputs, inputs_key="instances", params=params)
    if params:
        body["params"] = params
    return json.dumps(body)


class TenantSageMakerDeploymentClient(BaseDeploymentClient):
    """Deploys MLflow models to SageMaker endpoints within the tenant's quotas, with
    CloudWatch alarms, autoscaling and rollback; see ``mlflow deployments help -t
    tenant-sagemaker``."""

    def __init__(self, target_uri: str):
        super().__init__(target_uri)
        parsed = urllib.parse.urlparse(target_uri)
        parts = [p for p in parsed.path.split("/") if p] if parsed.scheme else []
        if len(parts) > 2:
            raise MlflowException.invalid_parameter_value(
                f"target {target_uri!r}: use tenant-sagemaker or tenant-sagemaker:/REGION[/TENANT]"
            )
        self.region = parts[0] if parts else None
        self.uri_tenant = parts[1] if len(parts) > 1 else None
        self._service = None

    # -- transport -------------------------------------------------------------------------
    @property
    def direct(self) -> bool:
        return self.region is not None

    def _tenant(self, cfg: dict[str, Any]) -> str | None:
        import os

        return cfg.get("tenant") or self.uri_tenant or os.environ.get("MLFLOW_WORKSPACE") or None

    def _call(self, method: str, path: str, tenant: str | None = None,
              body: dict | None = None, params: dict | None = None) -> dict:
        import mlflow
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        uri = mlflow.get_tracking_uri()
        if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
            raise MlflowException(
                "tenant-sagemaker deploys through the platform server: set MLFLOW_TRACKING_URI "
                f"to its http(s) address (it is {uri!r}), or use tenant-sagemaker:/REGION with "
                "your own AWS credentials", INVALID_PARAMETER_VALUE,
            )
        headers = {WORKSPACE_HEADER: tenant} if tenant else None
        # Writes are not retried (a retried create would meet its own claim); reads are, on
        # 502/503/504 only: a 409 (a full quota, or the deployment busy) is an answer.
        response = http_request(
            get_default_host_creds(uri), PREFIX + path, method, extra_headers=headers,
            max_retries=0 if method == "POST" else 3, retry_codes=(502, 503, 504),
            json=body, params=params, timeout=120,
        )
        return json.loads(verify_rest_response(response, PREFIX + path).text or "{}")

    def _svc(self):
        if self._service is None:
            import mlflow

            from mlflow_tenant_plugins.config import database_source, load_settings
            from mlflow_tenant_plugins.deployments.aws import AwsClients
            from mlflow_tenant_plugins.deployments.model_source import ModelResolver
            from mlflow_tenant_plugins.deployments.service import DeploymentService
            from mlflow_tenant_plugins.tenancy import TenantRegistry

            settings = load_settings()
            if database_source() is None:
                raise MlflowException.invalid_parameter_value(NO_DATABASE)
            self._service = DeploymentService(
                TenantRegistry.from_settings(settings), settings,
                aws=AwsClients(settings, region=self.region),
                resolver=ModelResolver(tracking_uri=mlflow.get_tracking_uri(),
                                       allow_any_uri=True),
            )
        return self._service

    def _direct_tenant(self, cfg: dict[str, Any]) -> str:
        tenant = self._tenant(cfg)
        if not tenant:
            raise MlflowException.invalid_parameter_value(
                "direct mode needs the tenant: -C tenant=NAME, tenant-sagemaker:/REGION/TENANT "
                "or MLFLOW_WORKSPACE"
            )
        return tenant

    # -- waiting ---------------------------------------------------------------------------
    def _wait(self, name: str, tenant: str | None, operation: str, timeout: float) -> dict:
        """Poll until the operation is done, printing status and elapsed time."""
        start = time.monotonic()
        delay, last, printed = 1.0, None, 0.0
        while True:
            info = self._get(name, tenant)
            status = info.get("status")
            elapsed = time.monotonic() - start
            if status != last or elapsed - printed >= 15:
                _echo(f"{operation} '{name}': {status} ({elapsed:.0f}s)")
                last, printed = status, elapsed
            failure = info.get("last_failure") if operation == "update" else None
            if status == "Failed" or failure:
                reason = (failure or info).get("failure_reason") or "no reason given"
                raise DeploymentClientError(f"{operation} of deployment '{name}' failed and "
                                            f"was rolled back: {printable(str(reason))}")
            if status == "InService":
                return info
            if elapsed >= timeout:
                raise MlflowException(
                    f"{operation} of deployment '{name}' still {status} after {timeout:g}s; it "
                    "continues on the server: check with `mlflow deployments get`"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 10.0)

    # -- the deployment API ----------------------------------------------------------------
    def _write(self, command: str, name: str, model_uri: str | None, flavor: str | None,
               config: dict | None) -> dict:
        validate_deployment_name(name)
        if model_uri or command == CREATE:  # the form of models:/ and runs:/ URIs, early;
            check_model_uri(model_uri, allow_any_scheme=True)  # the server decides the rest
        cfg = parse_config(config, command)
        sync = cfg.get("synchronous", True)
        timeout = cfg.get("timeout_seconds", DEFAULT_TIMEOUT)
        send = {k: v for k, v in (config or {}).items() if k not in CLIENT_ONLY}
        tenant = self._tenant(cfg)
        if self.direct:
            svc, tenant = self._svc(), self._direct_tenant(cfg)
            fn = svc.create if command == CREATE else svc.update
            out = fn(tenant, name, model_uri, flavor, send, background=False)
        else:
            body = {"name": name, "model_uri": model_uri, "flavor": flavor, "config": send}
            out = self._call("POST", f"/{command}", tenant,
                             {k: v for k, v in body.items() if v is not None})["deployment"]
            if sync:
                out = self._wait(name, tenant, command, timeout)
        out.setdefault("flavor", flavor or "python_function")
        return clean(out)

    @_clean_errors
    def create_deployment(self, name, model_uri, flavor=None, config=None, endpoint=None):
        return self._write(CREATE, name, model_uri, flavor, config)

    @_clean_errors
    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):
        return self._write(UPDATE, name, model_uri, flavor, config)

    @_clean_errors
    def delete_deployment(self, name, config=None, endpoint=None):
        validate_deployment_name(name)
        cfg = parse_config(config, DELETE)
        if self.direct:
            self._svc().delete(self._direct_tenant(cfg), name)
        else:
            self._call("POST", "/delete", self._tenant(cfg), {"name": name})

    def _get(self, name: str, tenant: str | None) -> dict:
        if self.direct:
            return self._svc().get(self._direct_tenant({"tenant": tenant} if tenant else {}),
                                   name)
        return self._call("GET", "/get", tenant, params={"name": name})["deployment"]

    @_clean_errors
    def get_deployment(self, name, endpoint=None):
        validate_deployment_name(name)
        return clean(self._get(name, self._tenant(parse_config({}, CLIENT))))

    @_clean_errors
    def list_deployments(self, endpoint=None):
        tenant = self._tenant({})
        if self.direct:
            return clean(self._svc().list(self._direct_tenant({})))
        return clean(self._call("GET", "/list", tenant)["deployments"])

    @_clean_errors
    def predict(self, deployment_name=None, inputs=None, endpoint=None,
                params: dict[str, Any] | None = None):
        name = validate_deployment_name(deployment_name or endpoint or "")
        body = predict_body(inputs, params)
        if self.direct:
            raw, _ctype = self._svc().predict(self._direct_tenant({}), name, body.encode())
            text = raw.decode("utf-8", errors="replace")
        else:
            text = self._call("POST", "/predict", self._tenant({}),
                              {"name": name, "body": body})["body"]
        return parse_predictions(name, text)

    @_clean_errors
    def explain(self, deployment_name=None, df=None, endpoint=None):
        raise MlflowException(
            "explain is not supported by the tenant-sagemaker target: SageMaker's MLflow "
            "serving image has no explanation endpoint. Use predict, or log explanations "
            "(e.g. mlflow.shap) during training.",
            INVALID_PARAMETER_VALUE,
        )

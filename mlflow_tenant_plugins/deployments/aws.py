"""boto3 clients for deployments, made once per service and shared by its threads
(boto3 clients are thread-safe; sessions are not)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from mlflow_tenant_plugins.config import Settings


class AwsClients:
    def __init__(self, settings: Settings, region: str | None = None,
                 session: boto3.session.Session | None = None):
        session = session or boto3.session.Session()
        kwargs: dict[str, Any] = {
            "region_name": region or settings.aws_region or None,
            "config": Config(retries={"max_attempts": 4, "mode": "standard"},
                             max_pool_connections=32),
        }
        if settings.aws_endpoint_url:
            kwargs["endpoint_url"] = settings.aws_endpoint_url
        self.region = kwargs["region_name"]
        self.s3 = session.client("s3", **kwargs)
        self.sagemaker = session.client("sagemaker", **kwargs)
        self.runtime = session.client("sagemaker-runtime", **kwargs)
        self.cloudwatch = session.client("cloudwatch", **kwargs)
        self.autoscaling = session.client("application-autoscaling", **kwargs)
        self.sts = session.client("sts", **kwargs)
        self.logs = session.client("logs", **kwargs)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    return ""


def is_not_found(exc: BaseException) -> bool:
    """SageMaker answers a missing model/config/endpoint with ValidationException
    "Could not find …"."""
    if not isinstance(exc, ClientError):
        return False
    message = exc.response.get("Error", {}).get("Message", "")
    return error_code(exc) in ("ResourceNotFound", "NoSuchKey", "404") or (
        error_code(exc) == "ValidationException" and "could not find" in message.lower()
    )


def describe(exc: BaseException) -> str:
    """A one-line reason for a failure, fit for a user."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "AWS call")
        return f"{op} failed: {err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message)

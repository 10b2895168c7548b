"""S3 failures as MLflow errors, so an IAM denial reaches the client as 403, and a server
without usable AWS credentials as a non-retried 507 naming what is missing, not a bare 500."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.store.artifact.s3_artifact_repo import BOTO_TO_MLFLOW_ERROR

NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")
# A conditional write (If-None-Match: *) found the key taken, or lost a race for it.
KEY_EXISTS_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")
# botocore's own errors when the server's credentials or region are missing or unusable.
CONFIG_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError,
                 NoRegionError)
# The status of a server-side storage configuration failure. Not 500/503: the stock client
# retries 408/429/500/502/503/504 for minutes (about 500 s for a missing credential), and no
# retry can fix a configuration. A 5xx, because it is the platform's fault (the operators'
# 5xx alarms should see it); 507 "Insufficient Storage": the server cannot store or serve the
# artifact.
STORAGE_UNAVAILABLE_STATUS = 507


class StorageUnavailable(MlflowException):
    """The artifact store cannot be used because of the server's configuration (credentials,
    region, role). The message names what is missing; no retry helps until an admin fixes it."""

    def __init__(self, what: str):
        super().__init__(
            f"artifact storage is not usable on this server: {what}. This is a platform "
            "configuration problem; retrying will not help — ask the platform admin",
            INTERNAL_ERROR,
        )

    def get_http_status_code(self) -> int:
        return STORAGE_UNAVAILABLE_STATUS


def describe_config_error(error: Exception) -> str:
    if isinstance(error, NoCredentialsError):
        return ("the server has no AWS credentials (none in AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the shared credentials or config file, "
                "nor container or instance metadata)")
    if isinstance(error, NoRegionError):
        return "the server has no AWS region (set MLFLOW_TENANT_AWS_REGION or AWS_REGION)"
    return f"the server's AWS credentials are unusable ({error})"


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def mlflow_error(error: ClientError, what: str) -> MlflowException:
    message = error.response.get("Error", {}).get("Message", "") or str(error)
    return MlflowException(
        f"{what}: {message}", BOTO_TO_MLFLOW_ERROR.get(error_code(error), INTERNAL_ERROR)
    )


@contextlib.contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Raise S3 client errors (also those boto3's transfer manager wraps) as MlflowException,
    and missing or unusable server credentials as :class:`StorageUnavailable`."""
    try:
        yield
    except ClientError as error:
        raise mlflow_error(error, what) from error
    except CONFIG_ERRORS as error:
        raise StorageUnavailable(describe_config_error(error)) from error
    except Exception as error:
        cause = error.__cause__ or error.__context__
        if isinstance(error, MlflowException):
            raise
        if isinstance(cause, ClientError):
            raise mlflow_error(cause, what) from error
        if isinstance(cause, CONFIG_ERRORS):
            raise StorageUnavailable(describe_config_error(cause)) from error
        raise

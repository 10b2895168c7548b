"""S3 failures as MLflow errors, so an IAM denial reaches the client as 403, not as a 500."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.store.artifact.s3_artifact_repo import BOTO_TO_MLFLOW_ERROR

NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")
# A conditional write (If-None-Match: *) found the key taken, or lost a race for it.
KEY_EXISTS_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def mlflow_error(error: ClientError, what: str) -> MlflowException:
    message = error.response.get("Error", {}).get("Message", "") or str(error)
    return MlflowException(
        f"{what}: {message}", BOTO_TO_MLFLOW_ERROR.get(error_code(error), INTERNAL_ERROR)
    )


@contextlib.contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Raise S3 client errors (also those boto3's transfer manager wraps) as MlflowException."""
    try:
        yield
    except ClientError as error:
        raise mlflow_error(error, what) from error
    except Exception as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ClientError) and not isinstance(error, MlflowException):
            raise mlflow_error(cause, what) from error
        raise

"""The three ways a validation can go wrong, as MLflow errors so every layer (the CLI's exit
status, the server's HTTP status) already knows what they mean: the rules are bad, the data
cannot be read, or the data breaks the rules."""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class RulesError(MlflowException):
    """The rules file is not valid: each problem names its line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), INVALID_PARAMETER_VALUE)


class DataError(MlflowException):
    """The data cannot be read (missing file, unknown format, unparsable content)."""

    def __init__(self, message: str):
        super().__init__(message, INVALID_PARAMETER_VALUE)


class DataValidationError(MlflowException):
    """The data breaks the rules. ``report`` is the full report (what was logged)."""

    def __init__(self, message: str, report: dict[str, Any]):
        self.report = report
        super().__init__(message, INVALID_PARAMETER_VALUE)

"""Data validation by the tenant's own rules: before training, and as a gate before deploy.

A tenant writes its rules as a YAML file (pandera's schema format, plus a ``row_count`` table
rule); ``validate(data, rules)`` checks a data frame or a CSV/Parquet file against them and,
inside an MLflow run, records the dataset, a pass/fail tag and the full report on the run, so
the deploy gate (:mod:`.gate`) can later refuse a model whose training data was never checked.

Client-side: nothing here imports the registry, Flask or SQLAlchemy. Names load lazily, so
the server's deploy gate (which reads only run tags) does not pay for pandas and pandera.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_tenant_plugins.validation.core import ValidationResult, load_data, validate
    from mlflow_tenant_plugins.validation.errors import (
        DataError,
        DataValidationError,
        RulesError,
    )
    from mlflow_tenant_plugins.validation.rules import Rules, load_rules, parse_rules

_EXPORTS = {
    "validate": "core", "load_data": "core", "ValidationResult": "core",
    "Rules": "rules", "load_rules": "rules", "parse_rules": "rules",
    "RulesError": "errors", "DataError": "errors", "DataValidationError": "errors",
}
__all__ = [
    "DataError", "DataValidationError", "Rules", "RulesError", "ValidationResult", "load_data",
    "load_rules", "parse_rules", "validate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

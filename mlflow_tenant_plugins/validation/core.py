"""``validate(data, rules)``: check the tenant's data against its rules and, inside an MLflow
run, leave the evidence on the run — the dataset as an input (with MLflow's digest), a
pass/fail tag, and the full report as an artifact — so the deploy gate can check it later.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlflow_tenant_plugins.validation import tags as t
from mlflow_tenant_plugins.validation.errors import DataError, DataValidationError
from mlflow_tenant_plugins.validation.report import failure_message, run_rules
from mlflow_tenant_plugins.validation.rules import Rules, as_rules

_READERS = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
            ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


@dataclass(frozen=True)
class ValidationResult:
    passed: bool
    report: dict[str, Any]
    run_id: str | None  # the run the evidence was logged to, if any
    report_path: str | None  # the report's artifact path in that run

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self.report["failures"]


def load_data(data: pd.DataFrame | str | os.PathLike[str]) -> tuple[pd.DataFrame, str | None]:
    """(frame, source path) from a data frame or a CSV/TSV/Parquet file (``.gz`` etc. too)."""
    if isinstance(data, pd.DataFrame):
        return data, None
    if not isinstance(data, str | os.PathLike):
        raise DataError(f"data must be a pandas DataFrame or a path to a CSV or Parquet file, "
                        f"not {type(data).__name__}")
    path = Path(data)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    reader = _READERS.get(suffixes[-1] if suffixes else "")
    if reader is None:
        raise DataError(f"data file {str(path)!r}: unknown format; use .csv, .tsv or .parquet")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found")
    try:
        return reader(path), str(path.resolve())
    except Exception as exc:  # pandas/pyarrow raise many kinds for unreadable content
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data file {str(path)!r} cannot be read: {first}") from None


def _dataset(df: pd.DataFrame, source: str | None, name: str):
    import mlflow.data

    with warnings.catch_warnings():  # schema-inference hints and source ambiguity: not ours
        warnings.simplefilter("ignore")
        return mlflow.data.from_pandas(df, source=source, name=name)


def _report(status: str, dataset: Any, df: pd.DataFrame, source: str | None, rules: Rules,
            failures: list[dict[str, Any]]) -> dict[str, Any]:
    import pandera

    return {
        "status": status,
        "dataset": {"name": dataset.name, "digest": dataset.digest, "source": source,
                    "rows": len(df), "columns": [str(c) for c in df.columns]},
        "rules": {"source": rules.source, "digest": rules.digest},
        "failures": failures,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"pandera": pandera.__version__, "pandas": pd.__version__},
    }


def _log(run_id: str, dataset: Any, report: dict[str, Any], context: str,
         tracking_uri: str | None) -> str:
    """Report artifact, then the dataset input, then the run tag: a run tagged ``pass``
    already has the evidence behind it. A run that saw failing data stays ``fail``."""
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client = MlflowClient(tracking_uri=tracking_uri)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name).strip("._") or "dataset"
    path = f"{t.REPORT_DIR}/{safe}-{dataset.digest}.json"
    client.log_dict(run_id, report, path)
    status, digest = report["status"], report["rules"]["digest"]
    d = dataset.to_dict()
    entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                     source=d["source"], schema=d.get("schema"), profile=d.get("profile"))
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[
        InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag(t.STATUS_TAG, status),
        InputTag(t.RULES_DIGEST_TAG, digest), InputTag(t.REPORT_TAG, path),
    ])])
    previous = client.get_run(run_id).data.tags.get(t.STATUS_TAG)
    overall = t.FAIL if t.FAIL in (previous, status) else t.PASS
    client.log_batch(run_id, tags=[RunTag(t.STATUS_TAG, overall),
                                   RunTag(t.RULES_DIGEST_TAG, digest)])
    return path


def validate(data: pd.DataFrame | str | os.PathLike[str],
             rules: Rules | dict[str, Any] | str | os.PathLike[str], *,
             name: str | None = None, context: str = "training", run_id: str | None = None,
             tracking_uri: str | None = None, log: bool = True,
             raise_on_failure: bool = True) -> ValidationResult:
    """Check ``data`` (a DataFrame, or a CSV/Parquet path) against ``rules`` (a YAML path, a
    mapping or :class:`Rules`).

    Logs to ``run_id``, else to the active MLflow run (if any, and ``log``). Raises
    :class:`RulesError` for bad rules, :class:`DataError` for unreadable data and — unless
    ``raise_on_failure`` is false — :class:`DataValidationError` listing each failed rule.
    """
    checked = as_rules(rules)
    df, source = load_data(data)
    if name is None:
        name = Path(source).name.split(".")[0] if source else "dataset"
    failures = run_rules(df, checked)
    status = t.FAIL if failures else t.PASS
    dataset = _dataset(df, source, name)
    report = _report(status, dataset, df, source, checked, failures)
    target, path = run_id, None
    if target is None and log:
        import mlflow

        active = mlflow.active_run()
        target = active.info.run_id if active else None
    if target is not None and log:
        path = _log(target, dataset, report, context, tracking_uri)
    if failures and raise_on_failure:
        raise DataValidationError(failure_message(name, failures), report)
    return ValidationResult(not failures, report, target if path else None, path)

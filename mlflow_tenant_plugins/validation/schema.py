"""Checked rules (:mod:`.rules`) as a pandera ``DataFrameSchema``, plus the one table rule
pandera lacks, ``row_count``, registered as a pandera check so the schema stays pandera's."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.api.checks import Check


def _register_row_count() -> None:
    if hasattr(Check, "row_count"):
        return
    from pandera.extensions import register_check_method

    @register_check_method(statistics=["min_value", "max_value"], supported_types=pd.DataFrame)
    def row_count(df: pd.DataFrame, *, min_value: int | None = None,
                  max_value: int | None = None) -> bool:
        """The table has between min_value and max_value rows (either bound optional)."""
        n = len(df)
        return (min_value is None or n >= min_value) and (max_value is None or n <= max_value)


_register_row_count()


def _value(v: Any, dtype: str | None) -> Any:
    """Bounds of a datetime column compare as timestamps (the file holds ISO text)."""
    if dtype and isinstance(v, str) and dtype.startswith(("datetime", "date")):
        return pd.Timestamp(v)
    if isinstance(v, list):
        return [_value(x, dtype) for x in v]
    return v


def _check(rule: dict[str, Any], dtype: str | None = None) -> Check:
    args = {k: _value(v, dtype) for k, v in rule["args"].items()}
    options = dict(rule["options"])
    name = options.pop("name", None)
    check = getattr(Check, rule["check"])(**args, **options)
    if name:
        check.name = name
    return check


def build_schema(spec: dict[str, Any]) -> pa.DataFrameSchema:
    columns = {}
    for name, col in spec["columns"].items():
        dtype = col.get("dtype")
        flags = {k: col[k] for k in ("nullable", "unique", "coerce", "required", "regex",
                                     "title", "description", "report_duplicates") if k in col}
        columns[name] = pa.Column(dtype, checks=[_check(c, dtype) for c in col["checks"]],
                                  name=name, **flags)
    table = {k: spec[k] for k in ("strict", "ordered", "coerce", "unique", "unique_column_names",
                                  "report_duplicates", "name", "title", "description",
                                  "metadata") if k in spec}
    return pa.DataFrameSchema(columns, checks=[_check(c) for c in spec["checks"]], **table)

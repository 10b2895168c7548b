"""Run the rules on a data frame and describe the result in plain data: one entry per failed
rule (column, rule, how many values failed, a few of them and their rows), not pandera's
one-row-per-failing-value table, so a person can read it and a script can act on it."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mlflow_tenant_plugins.validation.rules import Rules

EXAMPLES = 5  # failing values shown per rule

# pandera's names for the rules that are not checks, in the words of the rules file.
_BUILTIN = {
    "not_nullable": "nullable: false",
    "field_uniqueness": "unique: true",
    "column_in_dataframe": "required column",
    "column_in_schema": "strict: true (no other columns)",
    "column_ordered": "ordered: true",
    "dataframe_column_labels_unique": "unique_column_names: true",
}


def _jsonable(v: Any) -> Any:
    """Failure values as JSON: NaN/NA become None, numpy scalars become Python's."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        try:
            return v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, int | float | str | bool):
        return v
    return str(v)


def _rule_name(check: str, column: str | None) -> str:
    base = check.split("(", 1)[0]
    if base in _BUILTIN:
        return _BUILTIN[base]
    if base.startswith("dtype") or check.startswith("dtype("):
        return f"dtype: {check[len('dtype('):-1].strip(chr(39))}"
    if base.startswith("coerce_dtype"):
        return f"coerce to {check.split(chr(39))[1] if chr(39) in check else check}"
    return check


def _describe(rule: str, column: str | None, count: int, examples: list, rows: list,
              df: pd.DataFrame, check: str) -> str:
    if rule == "required column":
        return f"required column '{examples[0]}' is missing"
    if rule.startswith("strict"):
        return f"unexpected column(s) {', '.join(map(str, examples))} (strict: true)"
    if check.startswith("row_count"):
        return f"table has {len(df)} rows; {check} is not met"
    if rule.startswith("dtype"):
        return f"column '{column}' has dtype {examples[0]}, expected {rule[len('dtype: '):]}"
    shown = ", ".join(repr(e) for e in examples)
    more = f" (and {count - len(examples)} more)" if count > len(examples) else ""
    at = f" at row(s) {', '.join(map(str, rows))}" if rows else ""
    where = f"column '{column}'" if column else "table"
    return f"{where}: {rule}: {count} failing value(s): {shown}{more}{at}"


def _line(rules: Rules, rule: str, column: str | None, check: str, examples: list) -> int | None:
    """The line of the rules file behind a failure, to point the reader at it."""
    if rule == "required column" and examples:
        return rules.line_of("columns", examples[0])
    if column:
        return rules.line_of("columns", column)
    if check.startswith("row_count"):
        return rules.line_of("checks", "row_count") or rules.line_of("checks")
    for key in ("strict", "unique", "ordered", "unique_column_names"):
        if rule.startswith(key):
            return rules.line_of(key)
    return None


def _entry(rules: Rules, df: pd.DataFrame, column: str | None, check: str, rule: str,
           values: list, rows: list) -> dict[str, Any]:
    examples: list[Any] = []
    for v in values:
        if v not in examples and len(examples) < EXAMPLES:
            examples.append(v)
    rows = [r for r in rows if r is not None][:EXAMPLES]
    line = _line(rules, rule, column, check, examples)
    message = _describe(rule, column, len(values), examples, rows, df, check)
    return {"column": column, "rule": rule, "check": check, "count": len(values),
            "examples": examples, "rows": rows, "rules_line": line,
            "message": f"{message} (rules line {line})" if line else message}


def _combinations(group: pd.DataFrame) -> tuple[list, list]:
    """pandera reports a duplicated combination (table ``unique:``) once per column; here it
    is one failure per row, its value the combination."""
    by_row: dict[Any, dict[str, Any]] = {}
    for column, value, row in zip(group["column"], group["failure_case"], group["index"],
                                  strict=True):
        by_row.setdefault(_jsonable(row), {})[str(column)] = _jsonable(value)
    return list(by_row.values()), list(by_row)


def failures_from(exc: Any, df: pd.DataFrame, rules: Rules) -> list[dict[str, Any]]:
    """One entry per failed rule from pandera's ``SchemaErrors``."""
    cases = exc.failure_cases
    keys = ["schema_context", "column", "check"]
    # Group on text: a table-level failure has no column, and NA keys group unreliably.
    cases = cases.assign(**{k: ["" if _jsonable(v) is None else str(v) for v in cases[k]]
                            for k in keys})
    out: list[dict[str, Any]] = []
    combined = cases["check"] == "multiple_fields_uniqueness"
    if combined.any():
        values, rows = _combinations(cases[combined])
        cols = rules.spec.get("unique") or []
        out.append(_entry(rules, df, None, "multiple_fields_uniqueness",
                          f"unique: [{', '.join(cols)}]", values, rows))
        cases = cases[~combined]
    for (_context, column, check), group in cases.groupby(keys, dropna=False, sort=False):
        column = column or None
        values = [_jsonable(v) for v in group["failure_case"].tolist()]
        if check.startswith("row_count"):
            values = [len(df)]  # pandera's failure case is just False: show the count
        out.append(_entry(rules, df, column, check, _rule_name(check, column), values,
                          [_jsonable(v) for v in group["index"].tolist()]))
    return out


def run_rules(df: pd.DataFrame, rules: Rules) -> list[dict[str, Any]]:
    """The failed rules (empty when the data passes)."""
    import pandera.errors

    try:
        rules.schema.validate(df, lazy=True, inplace=False)
    except pandera.errors.SchemaErrors as exc:
        return failures_from(exc, df, rules)
    except pandera.errors.SchemaError as exc:  # raised before lazy collection starts
        return [{"column": None, "rule": "schema", "check": str(exc.check), "count": 1,
                 "examples": [], "rows": [], "rules_line": None, "message": str(exc)}]
    return []


def failure_message(name: str, failures: list[dict[str, Any]], limit: int = 20) -> str:
    lines = [f"data '{name}' failed {len(failures)} rule(s):"]
    lines += [f"  - {f['message']}" for f in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"  … and {len(failures) - limit} more (see the report)")
    return "\n".join(lines)

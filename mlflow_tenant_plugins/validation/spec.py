"""What a rules file may say, and the check of each rule's value against it.

Only what validation of a data frame needs is accepted; keys of pandera's format that would
change the data (``drop_invalid_rows``, ``add_missing_columns``, ``default``) are refused with
a reason, since a validation that quietly repairs the data proves nothing about it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Path_ = tuple[str, ...]

TOP_KEYS = frozenset({
    "schema_type", "version", "api", "name", "title", "description", "metadata", "columns",
    "checks", "unique", "strict", "ordered", "coerce", "unique_column_names",
    "report_duplicates",
})
_CHANGES_DATA = "validation checks the data and never changes it"
REFUSED_KEYS = {
    "index": "rules apply to columns; reset the index into a column to check it",
    "drop_invalid_rows": _CHANGES_DATA,
    "add_missing_columns": _CHANGES_DATA,
    "default": _CHANGES_DATA,
    "parsers": _CHANGES_DATA,
}
# Column keys other than rules: the type each takes (a tuple lists the allowed values).
COLUMN_KEYS: dict[str, Any] = {
    "nullable": bool, "unique": bool, "coerce": bool, "required": bool, "regex": bool,
    "title": str, "description": str,
    "report_duplicates": ("all", "exclude_first", "exclude_last"),
}
OPTIONS: dict[str, type] = {"ignore_na": bool, "raise_warning": bool, "error": str, "name": str,
                            "n_failure_cases": int}


@dataclass(frozen=True)
class RuleSpec:
    check: str  # the pandera ``Check`` method
    params: tuple[str, ...]  # its arguments; the first takes a bare value
    kind: str  # compare | range | values | regex | text | length


def _specs() -> dict[str, RuleSpec]:
    out: dict[str, RuleSpec] = {}
    for names, check, params, kind in (
        (("equal_to", "eq"), "equal_to", ("value",), "compare"),
        (("not_equal_to", "ne"), "not_equal_to", ("value",), "compare"),
        (("greater_than", "gt"), "greater_than", ("min_value",), "compare"),
        (("greater_than_or_equal_to", "ge"), "greater_than_or_equal_to", ("min_value",),
         "compare"),
        (("less_than", "lt"), "less_than", ("max_value",), "compare"),
        (("less_than_or_equal_to", "le"), "less_than_or_equal_to", ("max_value",), "compare"),
        (("in_range", "between"), "in_range",
         ("min_value", "max_value", "include_min", "include_max"), "range"),
        (("isin",), "isin", ("allowed_values",), "values"),
        (("notin",), "notin", ("forbidden_values",), "values"),
        (("unique_values_eq",), "unique_values_eq", ("values",), "values"),
        (("str_matches",), "str_matches", ("pattern",), "regex"),
        (("str_contains",), "str_contains", ("pattern",), "regex"),
        (("str_startswith",), "str_startswith", ("string",), "text"),
        (("str_endswith",), "str_endswith", ("string",), "text"),
        (("str_length",), "str_length", ("min_value", "max_value", "exact_value"), "length"),
    ):
        for name in names:
            out[name] = RuleSpec(check, params, kind)
    return out


COLUMN_CHECKS = _specs()
TABLE_CHECKS = {"row_count": RuleSpec("row_count", ("min_value", "max_value"), "count")}


class Problems:
    """Collects problems as ``SOURCE line N: message``; a path without a line of its own
    takes its nearest parent's."""

    def __init__(self, source: str, lines: dict[Path_, int], out: list[str]):
        self.source, self.lines, self.out = source, lines, out

    def add(self, path: tuple[Any, ...], message: str) -> None:
        path = tuple(str(x) for x in path)
        while path and path not in self.lines:
            path = path[:-1]
        line = self.lines.get(path)
        where = f"{self.source} line {line}" if line else self.source
        self.out.append(f"{where}: {message}")


# -- column types ----------------------------------------------------------------------------
def dtype_kind(dtype: Any) -> str:
    """number | text | datetime | bool | other, for checking rule values against the type."""
    import pandas as pd

    t = getattr(dtype, "type", dtype)
    try:
        if pd.api.types.is_bool_dtype(t):
            return "bool"
        if pd.api.types.is_numeric_dtype(t):
            return "number"
        if pd.api.types.is_datetime64_any_dtype(t):
            return "datetime"
        if pd.api.types.is_string_dtype(t) and str(t) != "object":
            return "text"
    except TypeError:
        pass
    return "other"


def check_dtype(column: str, value: Any, path: Path_, p: Problems) -> str | None:
    """The column's type kind, or None (with a problem) when pandas does not know the type."""
    from pandera.engines import pandas_engine

    if not isinstance(value, str):
        p.add(path, f"column '{column}': wrong type for 'dtype': expected a type name such as "
                    f"int64, float64, str, bool, category or datetime64[ns], got {value!r}")
        return None
    try:
        return dtype_kind(pandas_engine.Engine.dtype(value))
    except Exception:  # pandas/numpy raise TypeError or ValueError, by version
        p.add(path, f"column '{column}': unknown type '{value}'; use e.g. int64, float64, str, "
                    "bool, category or datetime64[ns]")
        return None


# -- rule values -----------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _scalar_ok(v: Any, kind: str | None) -> str | None:
    """Why ``v`` cannot be compared with a column of ``kind`` (None when it can)."""
    if isinstance(v, list | dict) or v is None:
        return f"expected a single value, got {v!r}"
    if kind == "number" and not _is_number(v):
        return f"expected a number for a numeric column, got {v!r}"
    if kind == "text" and not isinstance(v, str):
        return f"expected text for a text column, got {v!r}"
    if kind == "bool" and not isinstance(v, bool):
        return f"expected true or false for a boolean column, got {v!r}"
    if kind == "datetime":
        if isinstance(v, dt.date):
            return None
        try:
            import pandas as pd

            pd.Timestamp(v)
        except (ValueError, TypeError):
            return f"expected a date or time such as 2024-01-31, got {v!r}"
    return None


def _plain(v: Any) -> Any:
    """Dates as ISO text, so rules serialise (and digest) the same however they were read."""
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _arguments(rule: str, spec: RuleSpec, value: Any) -> tuple[dict, dict] | str:
    """(arguments, options) from a rule's value, or why it cannot be read."""
    if isinstance(value, Mapping):
        args, options = {}, {}
        for key, v in value.items():
            k = "value" if key == "value" else str(key)
            if k == "value":
                args[spec.params[0]] = v
            elif k in spec.params:
                args[k] = v
            elif k in OPTIONS:
                options[k] = v
            else:
                allowed = list(spec.params) + sorted(OPTIONS)
                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.75)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                return (f"rule '{rule}': unknown argument '{k}'{hint}; it takes "
                        f"{', '.join(spec.params)}")
        return args, options
    if spec.kind == "range" and isinstance(value, list):
        if len(value) != 2:
            return f"rule '{rule}': expected [min, max], got {value!r}"
        return {"min_value": value[0], "max_value": value[1]}, {}
    if spec.kind in ("length", "count"):
        return (f"rule '{rule}': expected a mapping such as {{min_value: 1, max_value: 10}}, "
                f"got {value!r}")
    return {spec.params[0]: value}, {}


def _check_values(rule: str, spec: RuleSpec, args: dict, kind: str | None) -> str | None:
    first = spec.params[0]
    if spec.kind == "compare":
        if first not in args:
            return f"rule '{rule}' needs a value"
        why = _scalar_ok(args[first], kind)
        return f"rule '{rule}': {why}" if why else None
    if spec.kind == "range":
        missing = [k for k in ("min_value", "max_value") if k not in args]
        if missing:
            return (f"rule '{rule}' needs min_value and max_value (for one bound use "
                    "greater_than_or_equal_to or less_than_or_equal_to)")
        for k in ("min_value", "max_value"):
            if why := _scalar_ok(args[k], kind):
                return f"rule '{rule}': {k}: {why}"
        for k in ("include_min", "include_max"):
            if k in args and not isinstance(args[k], bool):
                return f"rule '{rule}': {k} must be true or false, got {args[k]!r}"
        try:
            if args["min_value"] > args["max_value"]:
                return f"rule '{rule}': min_value {args['min_value']!r} is above max_value " \
                       f"{args['max_value']!r}"
        except TypeError:
            return f"rule '{rule}': min_value and max_value cannot be compared"
        return None
    if spec.kind == "values":
        values = args.get(first)
        if not isinstance(values, list) or not values:
            return f"rule '{rule}': expected a list of values, got {values!r}"
        for v in values:
            if why := _scalar_ok(v, kind):
                return f"rule '{rule}': value {v!r}: {why}"
        return None
    if spec.kind in ("regex", "text", "length") and kind not in (None, "text", "other"):
        return f"rule '{rule}' applies to text columns, and this column's dtype is {kind}"
    if spec.kind in ("regex", "text"):
        text = args.get(first)
        if not isinstance(text, str) or not text:
            return f"rule '{rule}': expected text, got {text!r}"
        if spec.kind == "regex":
            try:
                re.compile(text)
            except re.error as exc:
                return f"rule '{rule}': not a valid regular expression {text!r}: {exc}"
        return None
    # length / count: whole numbers, at least one bound, min <= max
    if not args:
        return f"rule '{rule}' needs at least one of {', '.join(spec.params)}"
    for k, v in args.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return f"rule '{rule}': {k} must be a whole number >= 0, got {v!r}"
    if args.get("min_value", 0) > args.get("max_value", float("inf")):
        return f"rule '{rule}': min_value {args['min_value']} is above max_value " \
               f"{args['max_value']}"
    return None


def _check_options(rule: str, options: dict) -> str | None:
    for k, v in options.items():
        if not isinstance(v, OPTIONS[k]) or (OPTIONS[k] is int and isinstance(v, bool)):
            return f"rule '{rule}': option {k} must be {OPTIONS[k].__name__}, got {v!r}"
    return None


def _checked(rule: str, spec: RuleSpec, value: Any, kind: str | None, path: Path_,
             where: str, p: Problems) -> dict | None:
    parsed = _arguments(rule, spec, value)
    if isinstance(parsed, str):
        p.add(path, f"{where}{parsed}")
        return None
    args, options = parsed
    why = _check_values(rule, spec, args, kind) or _check_options(rule, options)
    if why:
        p.add(path, f"{where}{why}")
        return None
    return {"rule": rule, "check": spec.check, "args": {k: _plain(v) for k, v in args.items()},
            "options": options}


def check_column_rule(column: str, kind: str | None, item: tuple[str, Any, Path_],
                      p: Problems) -> dict | None:
    rule, value, path = item
    spec = COLUMN_CHECKS.get(rule)
    if spec is None:
        close = difflib.get_close_matches(rule, sorted(COLUMN_CHECKS), n=1, cutoff=0.75)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        p.add(path, f"column '{column}': unknown rule '{rule}'{hint}")
        return None
    return _checked(rule, spec, value, kind, path, f"column '{column}': ", p)


def check_table_rule(item: tuple[str, Any, Path_], p: Problems) -> dict | None:
    rule, value, path = item
    spec = TABLE_CHECKS.get(rule)
    if spec is None:
        hint = (" (a column rule: put it under 'columns: NAME:')" if rule in COLUMN_CHECKS
                else f"; table rules are {', '.join(TABLE_CHECKS)}")
        p.add(path, f"unknown table rule '{rule}'{hint}")
        return None
    return _checked(rule, spec, value, None, path, "", p)

"""A tenant's rules file: read, checked line by line, and turned into a pandera schema.

The format is pandera's YAML schema format (what ``pandera.io.to_yaml`` writes, checks as
flat keys), so a tenant can start from ``to_yaml(infer_schema(df))`` and read pandera's docs,
plus one table rule of ours, ``row_count``. Everything in the file is checked before pandera
sees it: pandera itself ignores keys it does not know (``in_rnage: …`` would silently check
nothing) and fails on bad values with tracebacks. Each problem names its line instead.

    columns:
      age:
        dtype: float64          # int64, float64, str, bool, category, datetime64[ns], …
        nullable: false         # the default: nulls are refused unless nullable: true
        in_range: {min_value: -1, max_value: 1}
      sex:
        isin: [1, 2]
    checks:
      row_count: {min_value: 100}
    unique: [age, sex]          # no two rows share this combination
    strict: true                # no columns other than these
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from mlflow_tenant_plugins.validation.errors import RulesError
from mlflow_tenant_plugins.validation.spec import (
    COLUMN_CHECKS,
    COLUMN_KEYS,
    REFUSED_KEYS,
    TABLE_CHECKS,
    TOP_KEYS,
    Problems,
    check_column_rule,
    check_dtype,
    check_table_rule,
)

Path_ = tuple[str, ...]
# Far above any real rules file (a column takes a handful of values), far below a slow one.
MAX_RULES_NODES = 20_000


@dataclass(frozen=True)
class Rules:
    """Checked rules: ``spec`` is the normalised mapping, ``digest`` identifies it (comments
    and layout do not change it), ``source`` is where it came from."""

    spec: dict[str, Any]
    source: str
    digest: str
    lines: dict[Path_, int] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def schema(self):
        """The pandera ``DataFrameSchema`` these rules describe."""
        from mlflow_tenant_plugins.validation.schema import build_schema

        return build_schema(self.spec)

    def line_of(self, *path: Any) -> int | None:
        return self.lines.get(tuple(str(p) for p in path))


# -- reading YAML with line numbers ----------------------------------------------------------
def _where(source: str, line: int | None) -> str:
    return f"{source} line {line}" if line else source


def _line_map(node: yaml.Node, problems: list[str], source: str) -> dict[Path_, int]:
    """Line of every key and item, by path; duplicate keys are problems (YAML keeps the last)."""
    out: dict[Path_, int] = {}

    def walk(n: yaml.Node, path: Path_) -> None:
        out.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in n.value:
                name = str(key.value)
                line = key.start_mark.line + 1
                if name in seen:
                    problems.append(f"{_where(source, line)}: duplicate key '{name}'")
                seen.add(name)
                out[(*path, name)] = line
                walk(value, (*path, name))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, str(i)))

    walk(node, ())
    return out


def _check_bounded(text: str, source: str) -> None:
    """Refuse what makes YAML cost more than its size: anchors and aliases (nested aliases
    expand exponentially - a 400-byte file is millions of nodes to walk) and more than
    ``MAX_RULES_NODES`` nodes. One pass over the event stream, before anything is built."""
    nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise RulesError([f"{_where(source, event.start_mark.line + 1)}: YAML {kind}"
                              f"{event.anchor} is not allowed in rules: write the value out"])
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_RULES_NODES:
                raise RulesError([f"{_where(source, event.start_mark.line + 1)}: more than "
                                  f"{MAX_RULES_NODES} YAML values: rules files are small"])


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Rules from YAML text. Raises :class:`RulesError` listing every problem with its line."""
    try:
        _check_bounded(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"{source} line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise RulesError([f"{where}: not valid YAML: {problem}"]) from None
    problems: list[str] = []
    lines = _line_map(node, problems, source) if node is not None else {}
    return _check(data, source, lines, problems)


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Rules from a YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError([f"rules file {str(p)!r} not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([f"rules file {str(p)!r} cannot be read: {exc}"]) from None
    return parse_rules(text, str(p))


def as_rules(rules: Rules | Mapping[str, Any] | str | os.PathLike[str]) -> Rules:
    """Accept what a user naturally has at hand: checked rules, a path, or a mapping."""
    if isinstance(rules, Rules):
        return rules
    if isinstance(rules, Mapping):
        return _check(dict(rules), "<rules>", {}, [])
    if isinstance(rules, str | os.PathLike):
        return load_rules(rules)
    raise RulesError([f"rules must be a path to a YAML file or a mapping, not "
                      f"{type(rules).__name__}"])


# -- checking --------------------------------------------------------------------------------
def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check(data: Any, source: str, lines: dict[Path_, int], problems: list[str]) -> Rules:
    p = Problems(source, lines, problems)
    if data is None:
        p.add((), "the rules are empty: name at least the columns to check under 'columns:'")
        raise RulesError(problems)
    if not isinstance(data, Mapping):
        p.add((), f"the rules must be a mapping of keys (columns:, checks:, …), "
                  f"not {type(data).__name__}")
        raise RulesError(problems)
    spec: dict[str, Any] = {"columns": {}, "checks": []}
    for key, value in data.items():
        k = str(key)
        if k in REFUSED_KEYS:
            p.add((k,), f"'{k}' is not supported: {REFUSED_KEYS[k]}")
        elif k not in TOP_KEYS:
            p.add((k,), f"unknown key '{k}'{_suggest(k, TOP_KEYS)}; top-level keys are "
                        f"{', '.join(sorted(TOP_KEYS))}")
        elif k == "columns":
            spec["columns"] = _check_columns(value, p)
        elif k == "checks":
            spec["checks"] = [c for r in _rule_items(value, ("checks",), p)
                              if (c := check_table_rule(r, p)) is not None]
        else:
            checked = _check_top_value(k, value, p)
            if checked is not None:
                spec[k] = checked
    unique = spec.get("unique")
    if unique:
        declared = set(spec["columns"])
        for i, col in enumerate(unique):
            if col not in declared and not any(c.get("regex") for c in spec["columns"].values()):
                p.add(("unique", i) if isinstance(data.get("unique"), list) else ("unique",),
                      f"unique: unknown column '{col}'{_suggest(col, declared)}; declare it "
                      "under 'columns:'")
    if not spec["columns"] and not spec["checks"] and not problems:
        p.add((), "the rules check nothing: add columns under 'columns:' or table rules "
                  "under 'checks:'")
    if problems:
        raise RulesError(problems)
    canonical = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return Rules(spec=spec, source=source, digest=digest, lines=lines)


def _check_top_value(key: str, value: Any, p: Problems) -> Any:
    if key in ("strict", "ordered", "coerce", "unique_column_names"):
        if not isinstance(value, bool):
            p.add((key,), f"wrong type for '{key}': expected true or false, got {value!r}")
            return None
        return value
    if key == "schema_type" and value != "dataframe":
        p.add((key,), f"schema_type must be 'dataframe', got {value!r}")
    elif key == "api" and value != "pandas":
        p.add((key,), f"api must be 'pandas', got {value!r}")
    elif key == "report_duplicates" and value not in ("all", "exclude_first", "exclude_last"):
        p.add((key,), "report_duplicates must be one of all, exclude_first, exclude_last, "
                      f"got {value!r}")
    elif key == "unique":
        cols = [value] if isinstance(value, str) else value
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            p.add((key,), f"wrong type for 'unique': expected a column name or a list of column "
                          f"names, got {value!r}")
            return None
        return cols
    elif key in ("name", "title", "description") and not isinstance(value, str | type(None)):
        p.add((key,), f"wrong type for '{key}': expected text, got {value!r}")
    elif key == "metadata" and not isinstance(value, Mapping | type(None)):
        p.add((key,), f"wrong type for 'metadata': expected a mapping, got {value!r}")
    elif key in ("schema_type", "api", "version"):
        return None  # format markers pandera writes; nothing to keep
    return value


def _check_columns(value: Any, p: Problems) -> dict[str, dict[str, Any]]:
    """``columns:`` as a mapping name -> spec, or pandera's list form with ``name:`` keys."""
    if value is None:
        return {}
    items: list[tuple[Path_, str, Any]] = []
    if isinstance(value, Mapping):
        items = [(("columns", str(k)), str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        for i, entry in enumerate(value):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                p.add(("columns", i), "each entry of a 'columns:' list needs a 'name:'")
                continue
            items.append((("columns", str(i)), entry["name"],
                          {k: v for k, v in entry.items() if k != "name"}))
    else:
        p.add(("columns",), f"wrong type for 'columns': expected a mapping of column names to "
                            f"their rules, got {value!r}")
        return {}
    return {name: col for path, name, spec in items
            if (col := _check_column(name, spec, path, p)) is not None}


def _check_column(name: str, spec: Any, path: Path_, p: Problems) -> dict[str, Any] | None:
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        p.add(path, f"column '{name}': expected a mapping of rules (dtype:, nullable:, …), "
                    f"got {spec!r}")
        return None
    out: dict[str, Any] = {"checks": []}
    dtype = None
    if "dtype" in spec and spec["dtype"] is not None:
        dtype = check_dtype(name, spec["dtype"], (*path, "dtype"), p)
        if dtype is not None:
            out["dtype"] = str(spec["dtype"])
    rules: list[tuple[str, Any, Path_]] = []
    for key, value in spec.items():
        k = str(key)
        kp = (*path, k)
        if k == "dtype":
            continue
        if k in REFUSED_KEYS:
            p.add(kp, f"column '{name}': '{k}' is not supported: {REFUSED_KEYS[k]}")
        elif k in COLUMN_KEYS:
            expected = COLUMN_KEYS[k]
            if expected is bool and not isinstance(value, bool):
                p.add(kp, f"column '{name}': wrong type for '{k}': expected true or false, "
                          f"got {value!r}")
            elif isinstance(expected, tuple) and value not in expected:
                p.add(kp, f"column '{name}': '{k}' must be one of {', '.join(expected)}, "
                          f"got {value!r}")
            elif expected is str and not isinstance(value, str | type(None)):
                p.add(kp, f"column '{name}': wrong type for '{k}': expected text, got {value!r}")
            else:
                out[k] = value
        elif k == "checks":
            rules += _rule_items(value, kp, p)
        elif k in COLUMN_CHECKS:
            rules.append((k, value, kp))
        else:
            hint = _suggest(k, set(COLUMN_CHECKS) | set(COLUMN_KEYS) | {"dtype", "checks"})
            if k in TABLE_CHECKS:
                hint = f" ('{k}' is a table rule: put it under the top-level 'checks:')"
            p.add(kp, f"column '{name}': unknown rule '{k}'{hint}")
    for rule in rules:
        checked = check_column_rule(name, dtype, rule, p)
        if checked is not None:
            out["checks"].append(checked)
    return out


def _rule_items(value: Any, path: Path_, p: Problems) -> list[tuple[str, Any, Path_]]:
    """``checks:`` as a mapping ``rule: value`` or pandera's long list form
    (``- {min_value: 0, options: {check_name: greater_than}}``), as (rule, value, path)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(str(k), v, (*path, str(k))) for k, v in value.items()]
    if not isinstance(value, list):
        p.add(path, f"wrong type for 'checks': expected a mapping of rules, got {value!r}")
        return []
    out = []
    for i, entry in enumerate(value):
        options = entry.get("options") if isinstance(entry, Mapping) else None
        if not isinstance(options, Mapping) or not isinstance(options.get("check_name"), str):
            p.add((*path, str(i)), "each entry of a 'checks:' list needs "
                                    "'options: {check_name: RULE}'")
            continue
        stats = {k: v for k, v in entry.items() if k != "options"}
        extra = {k: v for k, v in options.items() if k != "check_name"}
        out.append((options["check_name"], {**stats, **extra}, (*path, str(i))))
    return out

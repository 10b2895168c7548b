"""Data validation in-process, with real data frames: every rule kind passing and failing, the
failure message, CSV/Parquet input, and rules files that are wrong in every way a tenant can
get them wrong (each refusal names its line; none is a traceback)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from mlflow_tenant_plugins.validation import (
    DataError,
    DataValidationError,
    RulesError,
    parse_rules,
    validate,
)

ROOT = Path(__file__).resolve().parent.parent


def rules(text: str):
    return parse_rules(textwrap.dedent(text), "rules.yaml")


def failures(df: pd.DataFrame, text: str) -> list[dict]:
    return validate(df, rules(text), raise_on_failure=False, log=False).failures


def wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    return frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})


def test_example_rules_accept_the_example_training_data_and_catch_a_bad_row():
    result = validate(wine(), ROOT / "examples" / "rules.yaml", log=False)
    assert result.passed and result.report["dataset"]["rows"] == 178
    bad = wine()
    bad.loc[7, "alcohol"] = 99.0
    with pytest.raises(DataValidationError, match=r"column 'alcohol': in_range.*99\.0"):
        validate(bad, ROOT / "examples" / "rules.yaml", log=False)


# (rules, a frame that passes, a frame that fails, what the failure names)
RULE_KINDS = {
    "dtype": ("columns: {a: {dtype: int64}}",
              {"a": [1, 2]}, {"a": [1.5, 2.0]}, ("a", "dtype: int64", "float64")),
    "nullable false (the default)": ("columns: {a: {dtype: float64}}",
                                     {"a": [1.0, 2.0]}, {"a": [1.0, None]},
                                     ("a", "nullable: false", None)),
    "nullable true": ("columns: {a: {dtype: float64, nullable: true, ge: 0}}",
                      {"a": [1.0, None]}, {"a": [-1.0, None]},
                      ("a", "greater_than_or_equal", -1.0)),
    "in_range": ("columns: {a: {in_range: {min_value: 0, max_value: 10}}}",
                 {"a": [0, 10]}, {"a": [5, 11, 12]}, ("a", "in_range", 11)),
    "between as [min, max], exclusive": (
        "columns: {a: {between: {min_value: 0, max_value: 10, include_max: false}}}",
        {"a": [0, 9]}, {"a": [10]}, ("a", "in_range", 10)),
    "greater_than": ("columns: {a: {gt: 0}}", {"a": [1]}, {"a": [0]}, ("a", "greater_than", 0)),
    "less_than_or_equal_to": ("columns: {a: {less_than_or_equal_to: 3}}",
                              {"a": [3]}, {"a": [4]}, ("a", "less_than_or_equal_to", 4)),
    "equal_to": ("columns: {a: {equal_to: x}}", {"a": ["x"]}, {"a": ["y"]}, ("a", "equal_to", "y")),
    "isin": ("columns: {a: {isin: [red, green]}}",
             {"a": ["red", "green"]}, {"a": ["red", "blue"]}, ("a", "isin", "blue")),
    "notin": ("columns: {a: {notin: [-999]}}", {"a": [1]}, {"a": [-999]}, ("a", "notin", -999)),
    "str_matches": (r"columns: {a: {dtype: str, str_matches: '^[A-Z]{2}\d{3}$'}}",
                    {"a": ["AB123"]}, {"a": ["AB123", "ab123"]}, ("a", "str_matches", "ab123")),
    "str_startswith": ("columns: {a: {str_startswith: id-}}",
                       {"a": ["id-1"]}, {"a": ["x-1"]}, ("a", "str_startswith", "x-1")),
    "str_length": ("columns: {a: {str_length: {min_value: 2, max_value: 3}}}",
                   {"a": ["ab"]}, {"a": ["abcd"]}, ("a", "str_length", "abcd")),
    "unique column": ("columns: {a: {unique: true}}", {"a": [1, 2]}, {"a": [1, 1]},
                      ("a", "unique: true", 1)),
    "unique combination": ("columns: {a: {}, b: {}}\nunique: [a, b]",
                           {"a": [1, 1], "b": [1, 2]}, {"a": [1, 1], "b": [2, 2]},
                           (None, "unique", None)),
    "required column": ("columns: {a: {}, b: {}}", {"a": [1], "b": [1]}, {"a": [1]},
                        (None, "required column", "b")),
    "optional column": ("columns: {a: {}, b: {required: false, gt: 0}}",
                        {"a": [1]}, {"a": [1], "b": [0]}, ("b", "greater_than", 0)),
    "strict": ("columns: {a: {}}\nstrict: true", {"a": [1]}, {"a": [1], "zz": [2]},
               (None, "strict", "zz")),
    "row_count": ("checks: {row_count: {min_value: 2, max_value: 3}}",
                  {"a": [1, 2]}, {"a": [1, 2, 3, 4]}, (None, "row_count", 4)),
    "datetime bounds": ("columns: {d: {dtype: 'datetime64[ns]', ge: 2024-01-01}}",
                        {"d": pd.to_datetime(["2024-02-01"])},
                        {"d": pd.to_datetime(["2023-12-31"])}, ("d", "greater_than", None)),
}


@pytest.mark.parametrize("kind", list(RULE_KINDS))
def test_each_rule_kind_passes_good_data_and_names_column_rule_and_value_on_bad(kind):
    text, good, bad, (column, rule, value) = RULE_KINDS[kind]
    assert failures(pd.DataFrame(good), text) == []
    found = failures(pd.DataFrame(bad), text)
    assert len(found) == 1, found
    f = found[0]
    assert f["column"] == column and rule in f["rule"], f
    if value is not None:
        assert value in f["examples"], f
    assert f["message"] and f["count"] >= 1


def test_error_lists_every_failed_rule_with_column_rule_values_rows_and_rules_line():
    text = """\
    columns:
      age:
        dtype: float64
        in_range: {min_value: 0, max_value: 120}
      country:
        isin: [FR, DE, NL]
    checks:
      row_count: {min_value: 3}
    """
    df = pd.DataFrame({"age": [30.0, -1, 130, 150, 160, 170, 180, 190],
                       "country": ["FR", "US", "FR", "FR", "FR", "FR", "FR", "FR"]})
    with pytest.raises(DataValidationError) as exc:
        validate(df, rules(text), name="people", log=False)
    message = exc.value.message
    assert "data 'people' failed 2 rule(s)" in message
    assert ("column 'age': in_range(0, 120): 7 failing value(s): -1.0, 130.0, 150.0, 160.0, "
            "170.0 (and 2 more) at row(s) 1, 2, 3, 4, 5 (rules line 2)") in message
    assert "column 'country': isin(['FR', 'DE', 'NL']): 1 failing value(s): 'US'" in message
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    assert exc.value.report["status"] == "fail" and len(exc.value.report["failures"]) == 2


def test_csv_and_parquet_paths_are_read_and_name_the_dataset(tmp_path):
    import mlflow.data

    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    df.to_csv(tmp_path / "train.csv", index=False)
    df.to_parquet(tmp_path / "test.parquet")
    text = "columns: {a: {dtype: int64, gt: 0}, b: {isin: [x, y, z]}}"
    for path, name in ((tmp_path / "train.csv", "train"), (str(tmp_path / "test.parquet"), "test")):
        report = validate(path, rules(text), log=False).report
        assert report["dataset"]["name"] == name and report["dataset"]["rows"] == 3
        assert report["dataset"]["source"] == str(Path(path).resolve())
        assert report["dataset"]["digest"] == mlflow.data.from_pandas(pd.read_parquet(
            tmp_path / "test.parquet")).digest


def test_unreadable_data_is_a_clear_data_error(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    (tmp_path / "data.xlsx").write_bytes(b"")
    text = "columns: {a: {}}"
    for path, expected in ((tmp_path / "missing.csv", "not found"),
                           (tmp_path / "data.xlsx", "unknown format"),
                           (tmp_path / "broken.parquet", "cannot be read"),
                           (42, "must be a pandas DataFrame")):
        with pytest.raises(DataError, match=expected):
            validate(path, rules(text), log=False)


MALFORMED = {
    "unknown rule": ("columns:\n  age:\n    in_rnage: {min_value: 0, max_value: 1}\n",
                     "line 3: column 'age': unknown rule 'in_rnage' (did you mean 'in_range'?)"),
    "wrong type of flag": ("columns:\n  age:\n    nullable: 'no'\n",
                           "line 3: column 'age': wrong type for 'nullable': expected true or "
                           "false, got 'no'"),
    "unknown dtype": ("columns:\n  age:\n    dtype: flaot64\n",
                      "line 3: column 'age': unknown type 'flaot64'"),
    "unknown column in unique": ("columns:\n  a: {}\nunique: [a, b]\n",
                                 "line 3: unique: unknown column 'b'"),
    "unknown top-level key": ("colums:\n  a: {}\n", "line 1: unknown key 'colums' (did you mean "
                              "'columns'?)"),
    "duplicate key": ("columns:\n  a: {gt: 0}\n  a: {lt: 0}\n", "line 3: duplicate key 'a'"),
    "not YAML": ("columns:\n  a: {gt: 0\n  b: 1\n", "line 3, column 4: not valid YAML"),
    "isin needs a list": ("columns:\n  a:\n    isin: red\n",
                          "line 3: column 'a': rule 'isin': expected a list of values"),
    "bad regex": ("columns:\n  a:\n    str_matches: '(['\n",
                  "line 3: column 'a': rule 'str_matches': not a valid regular expression"),
    "range upside down": ("columns:\n  a:\n    in_range: {min_value: 5, max_value: 1}\n",
                          "line 3: column 'a': rule 'in_range': min_value 5 is above max_value 1"),
    "range missing a bound": ("columns:\n  a:\n    in_range: {min_value: 5}\n",
                              "rule 'in_range' needs min_value and max_value"),
    "text bound for a number": ("columns:\n  a:\n    dtype: float64\n    gt: ten\n",
                                "line 4: column 'a': rule 'gt': expected a number"),
    "text rule on a number": ("columns:\n  a:\n    dtype: int64\n    str_startswith: x\n",
                              "line 4: column 'a': rule 'str_startswith' applies to text columns"),
    "unknown rule argument": ("columns:\n  a:\n    in_range: {min: 0, max_value: 1}\n",
                              "line 3: column 'a': rule 'in_range': unknown argument 'min'"),
    "table rule under a column": ("columns:\n  a:\n    row_count: {min_value: 1}\n",
                                  "line 3: column 'a': unknown rule 'row_count' ('row_count' is "
                                  "a table rule"),
    "column rule at table level": ("checks:\n  isin: [1]\n",
                                   "line 2: unknown table rule 'isin' (a column rule"),
    "row_count bound not a count": ("checks:\n  row_count: {min_value: -3}\n",
                                    "line 2: rule 'row_count': min_value must be a whole number"),
    "rules that change data": ("columns:\n  a: {}\ndrop_invalid_rows: true\n",
                               "line 3: 'drop_invalid_rows' is not supported: validation checks "
                               "the data and never changes it"),
    "long-form check without a name": ("columns:\n  a:\n    checks:\n      - {min_value: 1}\n",
                                       "line 4: each entry of a 'checks:' list needs"),
    "column not a mapping": ("columns:\n  a: 3\n", "line 2: column 'a': expected a mapping"),
    "empty file": ("# nothing yet\n", "rules.yaml: the rules are empty"),
    "not a mapping": ("- a\n- b\n", "rules.yaml line 1: the rules must be a mapping"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_rules_are_refused_naming_the_line_and_the_problem(case):
    text, expected = MALFORMED[case]
    with pytest.raises(RulesError) as exc:
        parse_rules(text, "rules.yaml")
    assert expected in exc.value.message, exc.value.message
    assert exc.value.message.startswith("rules.yaml")
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"


def test_every_problem_of_a_rules_file_is_reported_at_once(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("columns:\n  a:\n    dtype: flaot\n    isin: 3\n  b:\n    gt: [1]\n")
    with pytest.raises(RulesError) as exc:
        validate(pd.DataFrame({"a": [1]}), path, log=False)
    assert [p.split(": ", 1)[0] for p in exc.value.problems] == [
        f"{path} line 3", f"{path} line 4", f"{path} line 6"]
    with pytest.raises(RulesError, match=r"rules file .*nope\.yaml' not found"):
        validate(pd.DataFrame({"a": [1]}), tmp_path / "nope.yaml", log=False)


def test_pandera_written_schemas_are_accepted_and_digest_ignores_comments_and_layout():
    import pandera.pandas as pa
    from pandera.io.pandas_io import to_yaml

    schema = pa.DataFrameSchema({
        "a": pa.Column(int, pa.Check.in_range(0, 10), unique=True),
        "b": pa.Column(str, [pa.Check.isin(["x", "y"]), pa.Check.str_matches("^x")],
                       nullable=True),
    }, strict=True)
    ours = parse_rules(to_yaml(schema), "pandera.yaml")
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    assert validate(df, ours, log=False).passed
    bad = pd.DataFrame({"a": [1, 11], "b": ["x", "y"]})
    assert {f["check"] for f in validate(bad, ours, log=False, raise_on_failure=False)
            .failures} == {"in_range(0, 10)", "str_matches('^x')"}

    a = parse_rules("columns:\n  a: {gt: 0}  # positive\n")
    b = parse_rules("# rules\ncolumns:\n  a:\n    greater_than: 0\n")
    assert a.digest != b.digest  # the rule was written under another name (gt vs greater_than)
    c = parse_rules("columns: {a: {gt: 0}}")
    assert a.digest == c.digest


def test_validation_package_stays_client_side():
    """docs/architecture.md "Layers": a tenant's client imports no registry, Flask or
    SQLAlchemy. (MLflow itself loads the package's artifact-repository plugin; that is not
    this package's doing.)"""
    code = ("import sys, pandas as pd\n"
            "from mlflow_tenant_plugins.validation import validate\n"
            "validate(pd.DataFrame({'a': [1]}), {'columns': {'a': {'gt': 0}}}, log=False)\n"
            "import mlflow_tenant_plugins.validation.gate\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', "
            "'alembic') or m.startswith(('mlflow_tenant_plugins.tenancy.registry', "
            "'mlflow_tenant_plugins.tenancy.models', 'mlflow_tenant_plugins.tenancy.db', "
            "'mlflow_tenant_plugins.auth', 'mlflow_tenant_plugins.deployments', "
            "'mlflow_tenant_plugins.server'))]\n"
            "print(bad)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- bounded parsing of a tenant's YAML (issue 13, finding 5) ---------------------------------
def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested aliases: a few hundred bytes that stand for ``width ** levels`` values."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = ["columns:", f"  {names[0]}: &{names[0]} [{','.join(['x'] * width)}]"]
    lines += [f"  {n}: &{n} [{','.join(['*' + p] * width)}]" for p, n in pairwise(names)]
    return "\n".join(lines) + "\n"


def test_a_418_byte_alias_bomb_is_refused_at_once_by_the_cli(tmp_path):
    """The replay: ``mlflow-tenants validate`` on this file walked every alias again and hung."""
    bomb = alias_bomb() + "# " + "padding " * 10 + "\n"
    assert len(bomb.encode()) <= 418
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "data.csv").write_text("a\n1\n")
    cli = Path(sys.executable).parent / "mlflow-tenants"
    done = subprocess.run([str(cli), "validate", "data.csv", "--rules", "bomb.yaml"],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "bomb.yaml line 2: YAML anchor &a is not allowed in rules" in done.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("columns:\n  a: &x {gt: 0}\n", "line 2: YAML anchor &x is not allowed"),
    ("columns:\n  a: {gt: 0}\n  b: *x\n", "line 3: YAML alias *x is not allowed"),
    ("columns:\n  a: &x {gt: 0}\n  b:\n    <<: *x\n", "line 2: YAML anchor &x"),
])
def test_anchors_and_aliases_are_refused_naming_the_line(text, expected):
    with pytest.raises(RulesError) as exc:
        parse_rules(text, "rules.yaml")
    assert expected in exc.value.message
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"


def test_rules_with_more_values_than_the_budget_are_refused(monkeypatch):
    from mlflow_tenant_plugins.validation import rules as rules_mod

    monkeypatch.setattr(rules_mod, "MAX_RULES_NODES", 50)
    text = "columns:\n  a:\n    isin: [" + ", ".join(str(i) for i in range(60)) + "]\n"
    with pytest.raises(RulesError, match="line 3: more than 50 YAML values"):
        parse_rules(text, "rules.yaml")
    assert parse_rules("columns:\n  a:\n    isin: [1, 2, 3]\n", "rules.yaml").spec

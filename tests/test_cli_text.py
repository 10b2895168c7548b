"""Text from tenants is data (issue 13, finding 4): control and format characters are refused
at input and escaped wherever the platform admin reads them - ``mlflow-tenants`` output and
the usage page.

Rows written before input was checked (or by any path that skipped the check) are made here
by writing the database directly, as an attacker with an older server would have left them.
The CLI runs in process (``main`` as the console script calls it) on a sqlite registry."""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.cli import main
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy import registry as registry_mod
from mlflow_tenant_plugins.tenancy.text import (
    check_plain_text,
    is_unsafe,
    printable,
    reserved_prefix,
)

# What the finding replayed: clear screen, window title, clipboard write (OSC 52), a hidden
# hyperlink (OSC 8), a carriage return overwriting the row, a bell, and a bidi override.
HOSTILE = [
    "\x1b[2J\x1b[H",
    "\x1b]0;pwned\x07",
    "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07",
    "\x1b]8;;https://evil.example/\x1b\\innocent\x1b]8;;\x1b\\",
    "ci key\rrevoked",
    "ding\x07",
    "\u202etxt.exe",
    "zero\u200bwidth",
    "line\u2028break",
]
RAW = ("\x1b", "\r", "\x07", "\u202e", "\u200b", "\u2028")


@pytest.fixture
def tenant(registry) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    registry.create_tenant(name, display_name="Plain Name")
    return name


def run(registry: TenantRegistry, capsys, *args: str) -> tuple[int, str, str]:
    """``mlflow-tenants --db … ARGS`` in process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as done:
        main(["--db", str(registry.engine.url), *args])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def legacy_member(registry: TenantRegistry, monkeypatch, tenant: str, principal: str) -> None:
    """A binding of a principal the name check would now refuse."""
    with monkeypatch.context() as m:
        m.setattr(registry_mod, "validate_principal_name", lambda _name: None)
        registry.bind(principal, tenant, "viewer")


def set_column(registry: TenantRegistry, table: str, column: str, value: str, **where) -> None:
    t = sa.Table(table, sa.MetaData(), autoload_with=registry.engine)
    with registry.engine.begin() as conn:
        conn.execute(t.update().where(*(t.c[k] == v for k, v in where.items()))
                     .values({column: value}))


def one_endpoint_in_the_ledger(registry: TenantRegistry, tenant: str) -> None:
    """So the usage page asks for the tenant's endpoints."""
    t = sa.Table("mlt_usage", sa.MetaData(), autoload_with=registry.engine)
    with registry.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.tenant == tenant, t.c.resource == "endpoints"))
        conn.execute(t.insert().values(tenant=tenant, resource="endpoints", used=1,
                                         updated_at=datetime.now(UTC)))


def assert_no_raw_controls(text: str) -> None:
    leaked = sorted({f"U+{ord(c):04X}" for c in text if is_unsafe(c) and c != "\n"})
    assert not leaked, f"raw control/format characters reached the terminal: {leaked}"


# -- printable and the input check ------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=40))
def test_printable_escapes_exactly_the_control_and_format_characters(s):
    out = printable(s)
    assert not any(is_unsafe(c) for c in out)
    assert (out == s) == (not any(unicodedata.category(c)[0] == "C" or c in "\u2028\u2029"
                                  for c in s))
    assert printable(out) == out  # escaping twice changes nothing: safe to layer


def test_printable_shows_what_is_there():
    assert printable("a\x1b[2Jb\r\u202e\U000e0001") == "a\\x1b[2Jb\\x0d\\u202e\\U000e0001"
    assert printable("Zürich ünïcode 名前") == "Zürich ünïcode 名前"


@pytest.mark.parametrize("text", HOSTILE)
def test_input_with_control_or_format_characters_is_refused(text):
    with pytest.raises(MlflowException, match="control or format character") as err:
        check_plain_text("key description", text)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert not any(is_unsafe(c) for c in err.value.message)


@pytest.mark.parametrize("text", HOSTILE)
def test_registry_refuses_hostile_descriptions_and_display_names(registry, tenant, text):
    with pytest.raises(MlflowException, match="control or format character"):
        registry.create_key(tenant, "viewer", description=text)
    with pytest.raises(MlflowException, match="control or format character"):
        registry.update_tenant(tenant, display_name=text)
    with pytest.raises(MlflowException, match="control or format character"):
        registry.create_tenant(f"t-{uuid.uuid4().hex[:10]}", display_name=text)
    assert registry.list_keys(tenant) == []  # nothing half-created


def test_principal_with_a_trailing_newline_is_refused(registry, tenant):
    """``$`` matched before a trailing newline: ``alice\\n`` was accepted and shown as alice."""
    for name in ("oidc:alice\n", "proxy:bob\r\n", "oidc:carol\x1b[2J"):
        with pytest.raises(MlflowException) as err:
            registry.bind(name, tenant, "viewer")
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert registry.members(tenant) == []


# -- output of the admin CLI ------------------------------------------------------------------
def test_key_list_escapes_a_hostile_description(registry, tenant, capsys):
    record, _secret = registry.create_key(tenant, "viewer", description="ci")
    set_column(registry, "mlt_api_keys", "description", "".join(HOSTILE), key_id=record.key_id)
    status, out, err = run(registry, capsys, "key", "list", tenant)
    assert status == 0, err
    assert_no_raw_controls(out)
    assert "\\x1b]52;c;" in out and "\\x0d" in out and "\\u202e" in out
    rows = out.splitlines()
    assert len(rows) == 2 and record.key_id in rows[1]  # one row: nothing overwrote it
    as_json = json.loads(run(registry, capsys, "key", "list", tenant, "--json")[1])
    assert as_json[0]["description"] == "".join(HOSTILE)  # JSON keeps the value, escaped


def test_tenant_list_and_show_escape_a_hostile_display_name(registry, tenant, capsys):
    set_column(registry, "mlt_tenants", "display_name", "Acme\x1b]0;pwned\x07\r", name=tenant)
    for args in (("tenant", "list"), ("tenant", "show", tenant)):
        status, out, err = run(registry, capsys, *args)
        assert status == 0, err
        assert_no_raw_controls(out)
        assert "Acme\\x1b]0;pwned\\x07\\x0d" in out


def test_member_list_shows_a_newline_principal_apart_and_unbind_acts_on_what_is_listed(
        registry, tenant, capsys, monkeypatch):
    legacy_member(registry, monkeypatch, tenant, "oidc:alice\n")
    registry.bind("oidc:alice", tenant, "viewer")
    status, out, _ = run(registry, capsys, "member", "list", tenant)
    assert status == 0
    assert_no_raw_controls(out)
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == ["oidc:alice", "oidc:alice\\x0a"]
    # Unbinding what the list shows as oidc:alice removes exactly that one...
    assert run(registry, capsys, "member", "unbind", tenant, "oidc:alice")[0] == 0
    assert [m.principal for m in registry.members(tenant)] == ["oidc:alice\n"]
    # ... and the escaped name, as listed, removes the other.
    status, out, err = run(registry, capsys, "member", "unbind", tenant, "oidc:alice\\x0a")
    assert status == 0, err
    assert registry.members(tenant) == []
    assert_no_raw_controls(out)


def test_error_lines_escape_what_the_caller_typed(registry, tenant, capsys):
    status, out, err = run(registry, capsys, "member", "unbind", tenant, "x\x1b]52;c;AAAA\x07")
    assert status == 2 and out == ""
    assert_no_raw_controls(err)
    assert "x\\x1b]52;c;AAAA\\x07" in err


# -- the usage page ---------------------------------------------------------------------------
def test_usage_page_escapes_forged_endpoint_text_for_html_and_terminals(registry, tenant,
                                                                        monkeypatch):
    from mlflow_tenant_plugins.monitoring import page
    from mlflow_tenant_plugins.monitoring.snapshot import snapshot

    one_endpoint_in_the_ledger(registry, tenant)
    forged = [{"name": "<img src=x onerror=alert(1)>", "status": "Failed\x1b]8;;http://e/\x07",
               "alarms": [{"name": "a\"><script>x()</script>", "metric": "\u202eUCP",
                           "state": "OK"}]}]
    monkeypatch.setattr(page, "endpoint_alarms", lambda _tenant: forged)
    html = page.render(snapshot(registry, [tenant]), 90.0)
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&#34;&gt;&lt;script&gt;" in html
    assert "Failed\\x1b]8;;http://e/\\x07" in html and "\\u202eUCP" in html
    assert_no_raw_controls(html)


# -- reserved names compare as a reader reads them ---------------------------------------------
@pytest.mark.parametrize("key", ["mlt:tenant", " mlt:tenant", "MLT:tenant", "mlt\uff1atenant",
                                 "\uff4d\uff4c\uff54:x", "m\u200blt:x", "\tmlt :x", "AWS:x"])
def test_reserved_prefixes_are_matched_after_folding(key):
    assert reserved_prefix(key, ("mlt:", "aws:")) is not None


@pytest.mark.parametrize("key", ["team", "mltx:tenant", "ml:t", "owner"])
def test_ordinary_keys_are_not_reserved(key):
    assert reserved_prefix(key, ("mlt:", "aws:")) is None

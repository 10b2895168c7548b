"""Path safety and URI layout of tenant-s3 (pure functions: no S3, no database)."""

from __future__ import annotations

import posixpath
import unicodedata
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts.credentials import kms_key_for, resolve_mode, session_policy
from mlflow_tenant_plugins.artifacts.paths import (
    MAX_KEY_BYTES,
    Location,
    TenantScope,
    check_relative,
    parse_uri,
)
from mlflow_tenant_plugins.config import ConfigError, Settings

DESTINATION = TenantScope("bkt", "root/pre", "alice", "root/pre")  # the server's repository
RUN = TenantScope.of(parse_uri("tenant-s3://bkt/root/pre/workspaces/alice/3/abc/artifacts"))
FENCE = "root/pre/workspaces/alice"

UNSAFE = [
    "..", "../bob", "a/../../bob", "a/..", "workspaces/alice/../bob/x", "./x", "a/./b",
    "%2e%2e/bob", "%2E%2E%2Fbob", "a%2fb", "%252e%252e/bob", "a%5cb", "%00",
    "a\\..\\bob", "..\\bob", "/etc/passwd", "/workspaces/alice/x", "C:/x", "c:\\x",
    "a#b", "a?b", "a\x00b", "a\nb", "a\rb", "a\tb", "a\x7fb", "a\x85b", "a\u202eb", "a\u2028b",
    "a//b", "a/ ./b", "a/.. /b", "a/.../b", "．．/bob", "a/．．/b", "..／bob",
]
SAFE = [
    "model/MLmodel", "a b/c d.txt", "ümlaut/数据.csv", "50%.csv", "x%zz", "v1.2/model.pkl",
    ".hidden", "a..b", "dir/",
]


def _in_fence(key: str, strict: bool = False) -> bool:
    return key.startswith(FENCE + "/") or (not strict and key == FENCE)


@pytest.mark.parametrize("path", UNSAFE)
def test_paths_that_could_leave_the_prefix_are_refused_with_400(path: str) -> None:
    for scope, rel in ((DESTINATION, f"workspaces/alice/{path}"), (RUN, path)):
        with pytest.raises(MlflowException) as info:
            scope.key(rel)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        assert info.value.get_http_status_code() == 400


@pytest.mark.parametrize("path", SAFE)
def test_ordinary_artifact_paths_map_to_keys_inside_the_prefix(path: str) -> None:
    key = RUN.key(path, write=not path.endswith("/"))
    assert key == f"{FENCE}/3/abc/artifacts/{path.removesuffix('/')}"
    assert DESTINATION.key(f"workspaces/alice/{path}").startswith(FENCE + "/")


def test_paths_outside_the_tenant_workspace_are_refused_for_the_destination_repository() -> None:
    for path in (None, "", "x", "workspaces", "workspaces/bob/x", "workspaces/alicex/y"):
        with pytest.raises(MlflowException, match="outside the artifact prefix of tenant 'alice'"):
            DESTINATION.key(path)
    with pytest.raises(MlflowException):  # the prefix itself is no object
        DESTINATION.key("workspaces/alice", write=True)
    assert DESTINATION.key("workspaces/alice") == FENCE  # but it can be listed


def test_overlong_keys_are_refused() -> None:
    room = MAX_KEY_BYTES - len(RUN.base) - 1
    assert len(RUN.key("a" * room).encode()) == MAX_KEY_BYTES
    with pytest.raises(MlflowException, match="1024 bytes"):
        RUN.key("a" * (room + 1))
    with pytest.raises(MlflowException, match="1024 bytes"):
        RUN.key("é" * room)  # counted in UTF-8 bytes


def test_file_names_must_be_one_segment() -> None:
    assert RUN.file_key("sub", "f.txt") == f"{FENCE}/3/abc/artifacts/sub/f.txt"
    for name in ("", "..", "a/b", "a\\b", "x\x00"):
        with pytest.raises(MlflowException):
            RUN.file_key("sub", name)


# Pieces that matter for traversal, mixed with ordinary characters.
_PIECES = st.sampled_from([
    "..", ".", "/", "//", "\\", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%252e", "%252f", "%",
    "#", "?", "\x00", "\n", "\x7f", "\u202e", "．", "／", "＼", "a", "b", "alice", "bob",
    "workspaces", " ", ":", "C:", "~", "é", "..%2f", "%c0%ae",
])
_PATHS = st.one_of(st.lists(_PIECES, max_size=14).map("".join), st.text(max_size=30))


def _readings(key: str) -> set[str]:
    """How the key could be read by something between us and the bytes on disk."""
    once = urllib.parse.unquote(key)
    forms = {key, once, urllib.parse.unquote(once), unicodedata.normalize("NFKC", key)}
    forms |= {f.replace("\\", "/") for f in forms}
    return {posixpath.normpath(f) for f in forms}


@settings(max_examples=2000, deadline=None)  # x2 scopes: 4000 paths
@given(_PATHS, st.booleans())
def test_no_generated_path_resolves_outside_the_tenant_prefix(path: str, write: bool) -> None:
    for scope, rel in ((RUN, path), (DESTINATION, "workspaces/alice/" + path)):
        try:
            key = scope.key(rel, write=write)
        except MlflowException as exc:
            assert exc.error_code == "INVALID_PARAMETER_VALUE"
            continue
        assert len(key.encode("utf-8")) <= MAX_KEY_BYTES
        assert _in_fence(key, strict=write)
        for reading in _readings(key):
            assert _in_fence(reading), (path, key, reading)


@settings(max_examples=500, deadline=None)
@given(_PATHS, _PATHS)
def test_no_generated_directory_and_file_name_leave_the_prefix(directory: str, name: str) -> None:
    try:
        key = RUN.file_key(directory, name)
    except MlflowException as exc:
        assert exc.error_code == "INVALID_PARAMETER_VALUE"
        return
    assert all(_in_fence(r, strict=True) for r in _readings(key))


def test_tenant_s3_uris_split_at_the_workspace_segment() -> None:
    assert parse_uri("tenant-s3://bkt/p/q") == Location("bkt", "p/q")
    assert parse_uri("tenant-s3://bkt") == Location("bkt", "")
    assert parse_uri("tenant-s3://bkt/p/workspaces/alice/1/r/artifacts") == Location(
        "bkt", "p", "alice", "1/r/artifacts"
    )
    assert parse_uri("tenant-s3://bkt/workspaces/alice") == Location("bkt", "", "alice", "")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bkt/p", "tenant-s3://BK/p", "tenant-s3://bkt/p/workspaces", "tenant-s3://bkt/p?x=1",
        "tenant-s3://bkt/p#x", "tenant-s3://bkt/p/../q", "tenant-s3://bkt/p/workspaces/default/1",
        "tenant-s3://bkt/p/workspaces/alice\n/1", "tenant-s3://bkt/p/workspaces/Al/1",
        "tenant-s3://bkt/p/workspaces/../x", "tenant-s3://bkt/p%2f..",
    ],
)
def test_malformed_or_tenantless_uris_are_refused(uri: str) -> None:
    with pytest.raises(MlflowException) as info:
        parse_uri(uri)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_trailing_slash_names_the_directory() -> None:
    assert check_relative("a/b/") == "a/b"
    with pytest.raises(MlflowException):
        check_relative("a/b//")


def test_session_policy_allows_only_the_tenant_prefix() -> None:
    policy = session_policy("bkt", FENCE, "arn:aws:kms:us-east-1:1:key/k")
    objects, listing, kms = policy["Statement"]
    assert objects["Resource"] == f"arn:aws:s3:::bkt/{FENCE}/*"
    assert "s3:ListBucket" not in objects["Action"] and "s3:*" not in objects["Action"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{FENCE}/*"]}}
    assert kms["Resource"] == "arn:aws:kms:us-east-1:1:key/k"
    assert len(session_policy("bkt", FENCE)["Statement"]) == 2


def test_kms_keys_are_per_tenant_with_a_wildcard_default() -> None:
    s = Settings(artifact_kms_key_ids=("alice=k-alice", "*=k-all"))
    assert kms_key_for(s, "alice") == "k-alice"
    assert kms_key_for(s, "bob") == "k-all"
    assert kms_key_for(Settings(), "alice") is None
    with pytest.raises(ConfigError):
        kms_key_for(Settings(artifact_kms_key_ids=("alice",)), "alice")


def test_credential_mode_follows_the_role_setting() -> None:
    assert resolve_mode(Settings()) == "ambient"
    assert resolve_mode(Settings(artifact_role_arn="arn:aws:iam::1:role/r")) == "session-policy"
    with pytest.raises(ConfigError, match="tenant"):
        resolve_mode(Settings(artifact_credentials="role-per-tenant", artifact_role_arn="arn:r"))
    with pytest.raises(ConfigError, match="needs artifact_role_arn"):
        resolve_mode(Settings(artifact_credentials="session-policy"))
    with pytest.raises(ConfigError):
        resolve_mode(Settings(artifact_credentials="bogus"))

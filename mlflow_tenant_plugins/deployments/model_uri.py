"""The form of a model URI a deploy names, checked before anything resolves it.

``models:/NAME/VERSION[/SUB/PATH]``, ``models:/NAME@ALIAS``, ``models:/m-<id>`` and
``runs:/RUN_ID/PATH`` are resolved by MLflow's stores and then downloaded through artifact
repositories that each parse the path again; a ``..`` segment, a percent escape, a backslash,
an empty or absolute path or a control character meant something different to each of them
(``models:/m-…/../../x`` ended in a 500). One strict reading here, a 400 that says what is
wrong, and no second parser ever sees such a URI. Imports nothing server-side: the client
runs it too, for an early error.
"""

from __future__ import annotations

import unicodedata

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.tenancy.text import first_unsafe, printable

TENANT_SCHEMES = ("models", "runs")
_HINT = ("name a registered model (models:/NAME/VERSION, models:/NAME@ALIAS), a logged model "
         "(models:/m-ID) or a run's model (runs:/RUN_ID/PATH)")


def _refuse(uri: str, why: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(
        f"invalid model URI '{printable(uri)}': {why}; {_HINT}")


def _check_segments(uri: str, path: str) -> None:
    segments = path.split("/")
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # one trailing '/'
    for form in dict.fromkeys((path, unicodedata.normalize("NFKC", path))):
        for segment in form.split("/")[: len(segments)]:
            if segment == "":
                raise _refuse(uri, "empty path segment (no '//' and no absolute path)")
            if segment.rstrip(". ") == "":
                raise _refuse(uri, f"path segment '{segment}' is not allowed (no '.' or '..')")


def check_model_uri(uri: object, allow_any_scheme: bool = False) -> str:
    """``uri`` if it is a well-formed model URI, else a 400 INVALID_PARAMETER_VALUE.

    ``allow_any_scheme``: direct mode (an admin with their own credentials) may also name any
    other URI or path MLflow downloads; ``models:/`` and ``runs:/`` are held to the rules."""
    if not isinstance(uri, str) or not uri.strip():
        raise MlflowException.invalid_parameter_value(f"a model URI is required; {_HINT}")
    found = first_unsafe(uri)
    if found is not None:
        raise _refuse(uri, f"control or invisible character at position {found[0] + 1}")
    scheme, sep, rest = uri.partition(":")
    if scheme not in TENANT_SCHEMES or not sep:
        if allow_any_scheme:  # the admin's own files and credentials: MLflow reads them as is
            return uri
        raise _refuse(uri, f"scheme '{scheme}' is not allowed" if sep else "no scheme")
    for ch, what in (("\\", "a backslash"), ("%", "a percent escape"), ("?", "a query"),
                     ("#", "a fragment")):
        if ch in rest:
            raise _refuse(uri, f"{what} is not allowed")
    if not rest.startswith("/") or rest.startswith("//"):
        raise _refuse(uri, f"write {scheme}:/ followed by the name, with one '/'")
    _check_segments(uri, rest[1:])
    return uri

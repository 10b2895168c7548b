"""Text from tenants is data, wherever it is stored or shown.

A key description, a display name, a principal or a deployment's failure reason is written by
someone the platform admin does not control, and read in the admin's terminal or browser. A
terminal obeys control characters (ESC sequences clear the screen, set the window title, write
the clipboard with OSC 52, hide a link behind OSC 8 text; CR overwrites a row) and bidi
overrides reorder what is shown. So such characters are refused at input
(:func:`check_plain_text`) and escaped at output (:func:`printable`), and reserved names are
compared after folding away the differences a reader cannot see (:func:`reserved_prefix`).

Only the standard library and ``mlflow.exceptions``: the deploy client on a tenant's machine
uses :func:`printable` too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from mlflow.exceptions import MlflowException

# Line and paragraph separators are not category C, but some terminals and editors break
# lines on them: treated as control characters here.
_SEPARATORS = frozenset("\u2028\u2029")


def is_unsafe(ch: str) -> bool:
    """Control (Cc), format (Cf, incl. bidi overrides), surrogate (Cs), private-use (Co) and
    unassigned (Cn) characters, and the Unicode line/paragraph separators."""
    return unicodedata.category(ch)[0] == "C" or ch in _SEPARATORS


def _escape(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def printable(s: str) -> str:
    """``s`` with every unsafe character escaped as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``:
    safe to print to a terminal or log, and shows what is really there."""
    if s.isprintable():  # no category C or Z except ' ': nothing to escape (the common case)
        return s
    return "".join(_escape(ch) if is_unsafe(ch) else ch for ch in s)


def first_unsafe(s: str) -> tuple[int, str] | None:
    """Position and character of the first unsafe character of ``s``, or None."""
    if s.isprintable():
        return None
    return next(((i, ch) for i, ch in enumerate(s) if is_unsafe(ch)), None)


def check_plain_text(what: str, value: str | None) -> None:
    """Refuse ``value`` (400 INVALID_PARAMETER_VALUE) when it holds an unsafe character."""
    if value is None:
        return
    if not isinstance(value, str):
        raise MlflowException.invalid_parameter_value(f"{what} must be a string")
    found = first_unsafe(value)
    if found is not None:
        at, ch = found
        raise MlflowException.invalid_parameter_value(
            f"{what} contains a control or format character ({_escape(ch)} at position "
            f"{at + 1}): use printable text only (no tabs, newlines, escape sequences or "
            "bidi controls)")


def fold(s: str) -> str:
    """What a reader takes ``s`` to say: compatibility-normalised (full-width ``：`` is ``:``,
    ``ｍ`` is ``m``), caseless, without whitespace or unsafe characters."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold())
    return "".join(ch for ch in folded if not (ch.isspace() or is_unsafe(ch)))


def reserved_prefix(key: str, prefixes: Iterable[str]) -> str | None:
    """The reserved prefix ``key`` starts with once folded (e.g. ``' MLT：tenant'`` starts
    with ``mlt:``), or None."""
    folded = fold(key)
    return next((p for p in prefixes if folded.startswith(fold(p))), None)

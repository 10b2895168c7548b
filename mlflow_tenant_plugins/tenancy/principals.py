"""Principal names: assigned by the platform, in namespaces, never chosen by a caller.

A principal's name is also its user name in MLflow's basic-auth store, where MLflow's own
bootstrap admin lives too. So every name is ``NAMESPACE:LOCAL`` with a namespace that says
which authority vouched for it:

- ``key:<key id>`` — the service principal of one API key (one key, one principal);
- ``admin:<label>`` — a platform admin, created only with database access (``mlflow-tenants``);
- ``oidc:<subject>`` — a person asserted by the ALB's OIDC token;
- ``proxy:<user>`` — a person asserted by the trusted proxy;
- ``iam:<role or user ARN>`` — an AWS IAM identity proven by a replayed STS call.

A name outside these namespaces (MLflow's bootstrap admin, say) can never be a principal, and a
caller of the admin API cannot pick a name in ``key:`` or ``admin:``.
"""

from __future__ import annotations

import re

from mlflow.exceptions import MlflowException

KEY = "key"
ADMIN = "admin"
OIDC = "oidc"
PROXY = "proxy"
IAM = "iam"
NAMESPACES = (KEY, ADMIN, OIDC, PROXY, IAM)
# Namespaces of people and workload identities a tenant admin may bind to its tenant: keys
# belong to one tenant for life, and platform admins are made only by the platform.
BINDABLE = (OIDC, PROXY, IAM)

# The local part: printable ASCII without spaces or control characters, full-string match.
_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:/=,_-]{0,240}")
_LABEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def name(namespace: str, local: str) -> str:
    """``namespace:local``, with ``local`` checked (the namespace is the caller's own)."""
    if namespace not in NAMESPACES:
        raise ValueError(f"unknown principal namespace {namespace!r}")
    if not isinstance(local, str) or not _LOCAL.fullmatch(local):
        raise MlflowException.invalid_parameter_value(
            f"invalid {namespace} identity {local!r}: 1-241 characters, letters, digits and "
            "._@+:/=,_-, starting with a letter or digit"
        )
    return f"{namespace}:{local}"


def namespace_of(principal: str) -> str | None:
    ns, sep, local = principal.partition(":") if isinstance(principal, str) else ("", "", "")
    if sep and ns in NAMESPACES and _LOCAL.fullmatch(local):
        return ns
    return None


def validate(principal: str, allowed: tuple[str, ...] = NAMESPACES) -> str:
    """``principal`` if it is a well-formed name in one of ``allowed``; else 400."""
    ns = namespace_of(principal)
    if ns is None or ns not in allowed:
        raise MlflowException.invalid_parameter_value(
            f"invalid principal name {principal!r}: expected one of "
            f"{', '.join(n + ':…' for n in allowed)} (names are assigned by the platform: "
            "key:<key id>, oidc:<subject>, proxy:<user>, iam:<ARN>)"
        )
    return principal


def key_principal(key_id: str) -> str:
    return name(KEY, key_id)


def admin_principal(label: str) -> str:
    """A platform admin's name from a short label the platform admin chose (``admin:ops``)."""
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise MlflowException.invalid_parameter_value(
            f"invalid platform admin label {label!r}: 1-63 characters, lowercase letters, "
            "digits and ._-, starting with a letter or digit"
        )
    return name(ADMIN, label)


def iam_principal(arn: str) -> str:
    return name(IAM, arn)

"""MLflow settings a multi-tenant server must not run with, checked before it serves.

A tenant's code never runs with the platform's rights: the server refuses to start with
MLflow's custom-scorer execution on (it exec()s scorer source any editor sends).

MLflow fetches URLs that tenants choose (webhook deliveries, an AI gateway secret's
``api_base``, icon URLs) from the server itself, and refuses private, loopback and link-local
targets unless a ``MLFLOW_*_ALLOW_PRIVATE_IPS`` switch is on. On a shared server one tenant
turning such a fetch towards ``169.254.169.254`` reads the instance's own AWS credentials, or
towards loopback reaches the server's internal ports. So every such switch must stay off:
the server refuses to start rather than run exposed.

Any logged-in caller can also make the server fetch MLflow's model catalogue from GitHub
(``/gateway/supported-models``: one fetch per provider, about a hundred, with retries). Unless
the platform admin sets ``MLFLOW_MODEL_CATALOG_URI``, the server uses the catalogue bundled
with MLflow: no tenant request makes the server go out to the internet, and a server without
egress does not hang a worker for minutes per request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

# MLflow 3.17: MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS, MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS,
# MLFLOW_ICON_URL_ALLOW_PRIVATE_IPS (mlflow/environment_variables.py). Matched by pattern so
# a switch a later MLflow adds is refused too.
_PRIVATE_IP_SWITCH = re.compile(r"^_?MLFLOW_\w*ALLOW_PRIVATE_IPS?$")
# MLflow's own boolean parsing (_BooleanEnvironmentVariable) accepts these as true; anything
# else it rejects or reads as false. Refuse every value but an explicit false.
_FALSE = {"", "false", "0"}


def private_ip_switches_on(environ: Mapping[str, str]) -> list[str]:
    """Names of the MLFLOW_*_ALLOW_PRIVATE_IPS switches that are not explicitly off."""
    return sorted(
        name for name, value in environ.items()
        if _PRIVATE_IP_SWITCH.match(name.upper()) and value.strip().lower() not in _FALSE
    )


MODEL_CATALOG_URI = "MLFLOW_MODEL_CATALOG_URI"
# MLflow 3.17: with this on, a decorator scorer's source sent by any editor
# (``/ajax-api/3.0/mlflow/scorer/invoke``) is exec()'d in the server's job runner, which holds the
# platform's database URI and AWS credentials. No tenant's code may run with the platform's
# rights, so the platform refuses to start with it on.
CODE_EXECUTION_SWITCHES = ("MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS",)


def code_execution_switches_on(environ: Mapping[str, str]) -> list[str]:
    return sorted(name for name in CODE_EXECUTION_SWITCHES
                  if environ.get(name, "").strip().lower() not in _FALSE)


def secure_mlflow_settings(environ: MutableMapping[str, str] | None = None) -> None:
    """Refuse to start on a setting that would let a tenant reach the server's private
    network; default the model catalogue to MLflow's bundled copy."""
    environ = os.environ if environ is None else environ
    environ.setdefault(MODEL_CATALOG_URI, "")
    on = private_ip_switches_on(environ)
    if on:
        raise MlflowException(
            f"tenant-auth refuses to start with {', '.join(on)} on: tenants' webhook and "
            "gateway URLs could then reach the instance metadata service (its AWS credentials) "
            "and loopback; unset it",
            INVALID_STATE,
        )
    running = code_execution_switches_on(environ)
    if running:
        raise MlflowException(
            f"tenant-auth refuses to start with {', '.join(running)} on: a tenant's scorer code "
            "would run in the server's job runner with the platform's database and AWS "
            "credentials; unset it",
            INVALID_STATE,
        )

"""The settings reference (docs/settings.md), generated from the comments in ``config.py`` so
the documentation cannot drift from the code: ``python -m mlflow_tenant_plugins.config_doc``.
A test fails when docs/settings.md differs from what this prints."""

from __future__ import annotations

import dataclasses
import inspect
import re

from mlflow_tenant_plugins.config import CONFIG_ENV, ENV_PREFIX, Settings, readers

_FIELD = re.compile(r"^    (\w+): [^=]+= (.+?)(?:\s+#\s*(.*))?$")


def _described_fields() -> list[tuple[str, str, str]]:
    """(name, default, description) for each setting, the description being the comment
    block above the field (a block shared by several fields goes with the first) and any
    trailing comment on its line."""
    rows, pending = [], []
    for line in inspect.getsource(Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) != "extra":
            parts = [*pending, match.group(3) or ""]
            rows.append((match.group(1), match.group(2), " ".join(p for p in parts if p)))
        pending = []
    return rows


def render() -> str:
    names = {f.name for f in dataclasses.fields(Settings)}
    lines = [
        "# Settings",
        "",
        f"One TOML file named by `{CONFIG_ENV}`; every key also from the environment as",
        f"`{ENV_PREFIX}<KEY>` (upper case), which wins over the file. Lists are TOML arrays, or",
        "comma-separated in the environment. Generated from `mlflow_tenant_plugins/config.py`",
        "by `python -m mlflow_tenant_plugins.config_doc`.",
        "",
        "Which process reads what (the *read by* column): **server** is `mlflow server",
        "--app-name tenant-auth` (every worker and instance); **CLI** is the admin CLI",
        "`mlflow-tenants`; **admin deploy** is `mlflow deployments … -t tenant-sagemaker` run by a",
        "platform admin directly with their own AWS credentials. Give the server and the admin's",
        "shell the same file (or variables): the CLI cannot see the server's",
        "`--backend-store-uri`, so it needs `database_uri` named (or `--db URI`) and refuses",
        "without it. A tenant's machine reads none of these: the stock client needs only",
        "`MLFLOW_TRACKING_URI` and `MLFLOW_TRACKING_TOKEN` (the client plugin's own variables",
        "are in docs/tenant-users.md).",
        "",
        "| setting | environment variable | default | read by | what it is for |",
        "|---|---|---|---|---|",
    ]
    for name, default, text in _described_fields():
        assert name in names, name
        cell = text.replace("|", "\\|")
        lines.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | `{default}` | "
                     f"{', '.join(readers(name))} | {cell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")

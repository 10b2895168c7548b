"""The ``-C key=value`` config of the ``tenant-sagemaker`` target, validated.

Shared by the client (early, friendly errors) and the server (the authority). The stock
``sagemaker`` target drops unknown keys and reads only ``"True"`` as true; here an unknown key
is an error that lists the valid ones, booleans are true/false/1/0, and every count, size and
threshold is range-checked. Imports nothing server-side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.tenancy.text import first_unsafe, reserved_prefix

# Which command a key belongs to.
CREATE, UPDATE, DELETE, LOCAL, CLIENT = "create", "update", "delete", "run-local", "client"

DEPLOYMENT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
STRATEGIES = ("replace", "blue-green")
TRAFFIC_ROUTINGS = ("all-at-once", "canary", "linear")
RESERVED_TAG_PREFIXES = ("mlt:", "aws:")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _bad(key, value, "expected true, false, 1 or 0")


def _bad(key: str, value: Any, why: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(f"invalid config {key}={value!r}: {why}")


def _number(kind: type, low: float | None, high: float | None) -> Callable[[str, Any], Any]:
    def parse(key: str, value: Any) -> Any:
        if isinstance(value, bool):
            raise _bad(key, value, f"expected a {'whole ' if kind is int else ''}number")
        try:
            number = kind(str(value).strip()) if not isinstance(value, int | float) else value
            if kind is int and number != int(number):
                raise ValueError
            number = kind(number)
        except (TypeError, ValueError):
            raise _bad(key, value, f"expected a {'whole ' if kind is int else ''}number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise _bad(key, value, "expected a finite number")
        if low is not None and number < low:
            raise _bad(key, value, f"must be at least {low:g}")
        if high is not None and number > high:
            raise _bad(key, value, f"must be at most {high:g}")
        return number

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        text = str(value).strip().lower().replace("_", "-")
        if text not in choices:
            raise _bad(key, value, f"expected one of {', '.join(choices)}")
        return text

    return parse


def _instance_type(key: str, value: Any) -> str:
    text = str(value).strip()
    if not INSTANCE_TYPE.match(text):
        raise _bad(key, value, "expected an instance type such as ml.m5.large")
    return text


def _string_map(key: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _bad(key, value, 'expected a JSON object, e.g. {"A": "1"}') from None
    if not isinstance(value, dict):
        raise _bad(key, value, "expected a JSON object of strings")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k or isinstance(v, dict | list) or v is None:
            raise _bad(key, value, "expected a JSON object of non-empty names to strings")
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _tags(key: str, value: Any) -> dict[str, str]:
    tags = _string_map(key, value)
    for k, v in tags.items():
        if reserved_prefix(k, RESERVED_TAG_PREFIXES):  # ' mlt:x', 'MLT：x' too
            raise _bad(key, value, f"tag {k!r}: the prefixes mlt: and aws: are reserved")
        if first_unsafe(k + v) is not None:
            raise _bad(key, value, f"tag {k!r}: control and format characters are not allowed")
        if len(k) > 128 or len(v) > 256:
            raise _bad(key, value, f"tag {k!r}: keys are at most 128, values 256 characters")
    if len(tags) > 20:
        raise _bad(key, value, "at most 20 tags")
    return tags


def _env(key: str, value: Any) -> dict[str, str]:
    env = _string_map(key, value)
    for k in env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$", k):
            raise _bad(key, value, f"{k!r} is not an environment variable name")
    return env


def _tenant(key: str, value: Any) -> str:
    text = str(value).strip()
    if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", text):
        raise _bad(key, value, "expected a tenant (workspace) name")
    return text


def _host(key: str, value: Any) -> str:
    text = str(value).strip()
    if not re.match(r"^[A-Za-z0-9.:-]{1,253}$", text):
        raise _bad(key, value, "expected a host name or address")
    return text


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str, Any], Any]
    commands: tuple[str, ...]
    help: str


_DEPLOY = (CREATE, UPDATE)
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option("instance_type", _instance_type, _DEPLOY,
               "SageMaker instance type, one your tenant may use (default ml.m5.large)"),
        Option("instance_count", _number(int, 1, 100), _DEPLOY,
               "instances to start with (default 1)"),
        Option("min_instances", _number(int, 1, 100), _DEPLOY,
               "autoscaling minimum (default: instance_count)"),
        Option("max_instances", _number(int, 1, 100), _DEPLOY,
               "autoscaling maximum, reserved against your instance quota (default: "
               "instance_count)"),
        Option("target_invocations_per_instance", _number(float, 0.01, 1e9), _DEPLOY,
               "autoscaling target, invocations per instance per minute"),
        Option("scale_in_cooldown_seconds", _number(int, 0, 86400), _DEPLOY,
               "seconds between scale-in steps (default 300)"),
        Option("scale_out_cooldown_seconds", _number(int, 0, 86400), _DEPLOY,
               "seconds between scale-out steps (default 60)"),
        Option("alarm_5xx_errors", _number(float, 0, 1e12), _DEPLOY,
               "alarm when 5XX errors per period reach this"),
        Option("alarm_4xx_errors", _number(float, 0, 1e12), _DEPLOY,
               "alarm when 4XX errors per period reach this"),
        Option("alarm_latency_p99_ms", _number(float, 0.001, 3.6e6), _DEPLOY,
               "alarm when p99 model latency exceeds this many milliseconds"),
        Option("alarm_cpu_percent", _number(float, 1, 100 * 192), _DEPLOY,
               "alarm when CPU utilisation exceeds this (100 per vCPU)"),
        Option("alarm_memory_percent", _number(float, 1, 100), _DEPLOY,
               "alarm when memory utilisation exceeds this percentage"),
        Option("alarm_period_seconds", _number(int, 10, 86400), _DEPLOY,
               "alarm period: 10, 30 or a multiple of 60 seconds"),
        Option("alarm_evaluation_periods", _number(int, 1, 100), _DEPLOY,
               "periods over which an alarm condition must hold"),
        Option("env", _env, _DEPLOY, 'extra container environment, JSON: {"NAME": "value"}'),
        Option("network_isolation", _bool, _DEPLOY,
               "run the model without network access (SageMaker EnableNetworkIsolation; "
               "default false, or as the platform requires)"),
        Option("tags", _tags, _DEPLOY, 'extra tags, JSON: {"team": "risk"}'),
        Option("strategy", _choice(STRATEGIES), (UPDATE,),
               "replace (default) or blue-green (rolls back on this endpoint's alarms)"),
        Option("traffic_routing", _choice(TRAFFIC_ROUTINGS), (UPDATE,),
               "blue-green traffic shift: all-at-once (default), canary or linear"),
        Option("canary_percent", _number(int, 1, 99), (UPDATE,),
               "canary size, or linear step, in percent of capacity (default 10)"),
        Option("wait_seconds", _number(int, 0, 3600), (UPDATE,),
               "blue-green: seconds to watch the alarms at each traffic step (default 300)"),
        Option("termination_wait_seconds", _number(int, 0, 3600), (UPDATE,),
               "blue-green: seconds the old fleet is kept after the shift (default 0)"),
        Option("synchronous", _bool, (CREATE, UPDATE, DELETE),
               "wait until the operation is done (default true)"),
        Option("timeout_seconds", _number(int, 1, 86400), (CREATE, UPDATE, DELETE),
               "how long to wait when synchronous (default 1800)"),
        Option("tenant", _tenant, (CREATE, UPDATE, DELETE, CLIENT),
               "tenant to act in: required in direct mode; for platform admins otherwise"),
        Option("port", _number(int, 1, 65535), (LOCAL,), "local port (default 5000)"),
        Option("host", _host, (LOCAL,), "local address to bind (default 127.0.0.1)"),
        Option("workers", _number(int, 1, 16), (LOCAL,), "scoring server workers (default 1)"),
        Option("max_seconds", _number(float, 0, 7 * 86400), (LOCAL,),
               "stop serving after this many seconds (default 0: until Ctrl-C)"),
    ]
}
# Keys the client consumes itself and never sends to the server.
CLIENT_ONLY = ("synchronous", "timeout_seconds", "tenant")


def valid_keys(command: str) -> list[str]:
    return sorted(n for n, o in OPTIONS.items() if command in o.commands)


def parse_config(config: dict[str, Any] | None, command: str) -> dict[str, Any]:
    """Typed values for ``command``'s keys, or a 400 naming the bad key and the valid ones."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise MlflowException.invalid_parameter_value("config must be a mapping of key=value")
    valid = valid_keys(command)
    unknown = sorted(str(k) for k in config if k not in valid)
    if unknown:
        raise MlflowException.invalid_parameter_value(
            f"unknown config key(s) for {command}: {', '.join(unknown)}; "
            f"valid keys: {', '.join(valid)}"
        )
    parsed = {k: OPTIONS[k].parse(k, v) for k, v in config.items()}
    lo, hi = parsed.get("min_instances"), parsed.get("max_instances")
    if lo is not None and hi is not None and lo > hi:
        raise MlflowException.invalid_parameter_value(
            f"invalid config: min_instances ({lo}) is more than max_instances ({hi})"
        )
    period = parsed.get("alarm_period_seconds")
    if period is not None and period not in (10, 30) and period % 60:
        raise _bad("alarm_period_seconds", period, "CloudWatch takes 10, 30 or a multiple of 60")
    return parsed


def validate_deployment_name(name: str) -> str:
    if not isinstance(name, str) or not DEPLOYMENT_NAME.match(name):
        raise MlflowException.invalid_parameter_value(
            f"invalid deployment name {name!r}: 1-63 letters, digits and hyphens, starting and "
            "ending with a letter or digit"
        )
    return name


def help_text() -> str:
    lines = []
    for command in (CREATE, UPDATE, DELETE, LOCAL):
        lines.append(f"  {command}:")
        for key in valid_keys(command):
            lines.append(f"    {key:34} {OPTIONS[key].help}")
    return "\n".join(lines)

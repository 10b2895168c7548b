"""Config keys of the tenant-sagemaker target: every error is a 400 that says what is wrong,
unknown keys list the valid ones, booleans are true/false/1/0 (the stock target reads only
"True" and drops unknown keys silently)."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments.alarms import resolve_thresholds
from mlflow_tenant_plugins.deployments.options import (
    parse_config,
    valid_keys,
    validate_deployment_name,
)


def _error(config: dict, command: str = "create") -> str:
    with pytest.raises(MlflowException) as exc:
        parse_config(config, command)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    return exc.value.message


def test_unknown_key_is_an_error_listing_the_valid_keys():
    message = _error({"instance_typ": "ml.m5.large"})
    assert "instance_typ" in message
    assert all(key in message for key in valid_keys("create"))
    # update-only keys are unknown to create, and run-local keys to both
    assert "strategy" in _error({"strategy": "blue-green"})
    assert "port" in _error({"port": "5000"}, "update")


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("TRUE", True),
                                          ("false", False), ("0", False), (False, False)])
def test_booleans_accept_true_false_1_0(raw, expected):
    assert parse_config({"synchronous": raw}, "create") == {"synchronous": expected}


@pytest.mark.parametrize("raw", ["yes", "True!", "", "2"])
def test_other_boolean_spellings_are_refused(raw):
    assert "expected true, false, 1 or 0" in _error({"synchronous": raw})


@pytest.mark.parametrize("config,fragment", [
    ({"instance_count": "0"}, "at least 1"),
    ({"instance_count": "1.5"}, "whole number"),
    ({"instance_count": "many"}, "whole number"),
    ({"max_instances": "101"}, "at most 100"),
    ({"min_instances": "3", "max_instances": "2"}, "min_instances (3) is more than"),
    ({"alarm_latency_p99_ms": "nan"}, "finite"),
    ({"alarm_memory_percent": "150"}, "at most 100"),
    ({"alarm_period_seconds": "45"}, "10, 30 or a multiple of 60"),
    ({"timeout_seconds": "-1"}, "at least 1"),
    ({"instance_type": "m5.large"}, "ml.m5.large"),
    ({"env": "not json"}, "JSON object"),
    ({"env": '{"1BAD": "x"}'}, "not an environment variable name"),
    ({"tags": '{"mlt:tenant": "other"}'}, "reserved"),
    ({"tags": '{"aws:x": "y"}'}, "reserved"),
    ({"tenant": "Not_A_Tenant"}, "tenant"),
])
def test_sizes_counts_and_shapes_are_checked(config, fragment):
    assert fragment in _error(config)


def test_update_keys_are_parsed_and_normalised():
    parsed = parse_config({"strategy": "blue_green", "traffic_routing": "CANARY",
                           "canary_percent": "25", "wait_seconds": "0"}, "update")
    assert parsed == {"strategy": "blue-green", "traffic_routing": "canary",
                      "canary_percent": 25, "wait_seconds": 0}
    assert "expected one of replace, blue-green" in _error({"strategy": "rolling"}, "update")


@pytest.mark.parametrize("name", ["churn", "a", "churn-v2", "a" * 63, "A1--b"])
def test_valid_deployment_names(name):
    assert validate_deployment_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "x-", "a_b", "a" * 64, "a b", "ü"])
def test_invalid_deployment_names(name):
    with pytest.raises(MlflowException, match="invalid deployment name"):
        validate_deployment_name(name)


def test_alarm_thresholds_deployment_over_tenant_over_platform():
    settings = Settings(deploy_alarm_cpu_percent=70.0, extra={
        "deploy_tenant_alarms": {"acme": {"cpu_percent": 60, "alarm_5xx_errors": 3}}})
    acme = resolve_thresholds(settings, "acme", {"alarm_cpu_percent": 50.0})
    assert acme["alarm_cpu_percent"] == 50.0 and acme["alarm_5xx_errors"] == 3.0
    assert resolve_thresholds(settings, "acme", {})["alarm_cpu_percent"] == 60.0
    assert resolve_thresholds(settings, "other", {})["alarm_cpu_percent"] == 70.0
    bad = Settings(extra={"deploy_tenant_alarms": {"acme": {"cpu": 1}}})
    with pytest.raises(MlflowException, match="not an alarm setting"):
        resolve_thresholds(bad, "acme", {})

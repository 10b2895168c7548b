"""The shipped IAM policies and example deployment config stay in step with the code."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow_tenant_plugins.artifacts.credentials import OBJECT_ACTIONS
from mlflow_tenant_plugins.deployments.options import parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_iam_policy_files_are_valid_policy_documents():
    files = sorted((ROOT / "deploy" / "iam").glob("*.json"))
    assert len(files) >= 4
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["Version"] == "2012-10-17", f.name
        for statement in doc["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny") and "Action" in statement, f.name


def test_tenant_role_policy_grants_exactly_what_the_session_policy_grants():
    doc = json.loads((ROOT / "deploy" / "iam" / "tenant-artifacts-role-policy.json").read_text())
    objects = next(s for s in doc["Statement"] if s["Sid"] == "TenantObjectsOnly")
    assert sorted(objects["Action"]) == sorted(OBJECT_ACTIONS)


def test_example_deployment_config_is_accepted_by_the_target():
    raw = json.loads((ROOT / "examples" / "deploy.json").read_text())
    config = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in raw.items()}
    parsed = parse_config(config, "create")
    assert parsed["instance_type"] == "ml.m5.large" and parsed["max_instances"] == 2

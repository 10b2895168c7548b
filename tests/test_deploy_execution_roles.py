"""Each tenant's model runs under an execution role of its own (issue 12 finding 8).

A model is arbitrary Python and its container holds the execution role's credentials. The
deployment service names a role per tenant (``deploy_execution_role_arn`` with ``{tenant}``);
the policy shipped in ``deploy/iam/`` lets that role read only its own tenant's packages.
Proven with moto's IAM enforcement: the roles the service actually passed to SageMaker, given
the shipped policy, read their own package and are denied the other tenant's. Unset or shared
roles are refused with a 400 naming the setting; network isolation is passed to SageMaker.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException

from tests.fixtures.aws import REGION

IAM = Path(__file__).resolve().parent.parent / "deploy" / "iam"
ACCOUNT = "123456789012"  # moto's
STAND_IN = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/platform-admin"},
    "Action": "sts:AssumeRole"}]}


def _model(env, tenant: str, name: str) -> dict:
    from mlflow_tenant_plugins.deployments.names import Names

    sm = env.aws.sagemaker
    config = sm.describe_endpoint(EndpointName=Names(tenant, name).endpoint)
    variant = sm.describe_endpoint_config(
        EndpointConfigName=config["EndpointConfigName"])["ProductionVariants"][0]
    return sm.describe_model(ModelName=variant["ModelName"])


def _render(template: str, **values: str) -> str:
    text = (IAM / template).read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def test_tenant_a_execution_role_cannot_read_tenant_b_package(deploy_env, pyfunc_model,
                                                               moto_server_iam):
    svc = deploy_env.service()
    deployed = {}
    for tenant in (deploy_env.tenant(), deploy_env.tenant()):
        svc.create(tenant, "model", pyfunc_model, background=False)
        model = _model(deploy_env, tenant, "model")
        deployed[tenant] = (model["ExecutionRoleArn"],
                            urllib.parse.urlparse(model["PrimaryContainer"]["ModelDataUrl"]))
    (a, (role_a, pkg_a)), (b, (role_b, pkg_b)) = deployed.items()
    assert role_a != role_b and a in role_a and b in role_b  # one role per tenant

    # The same bucket, keys and role names in the IAM-enforcing emulator, with the policies
    # of deploy/iam/ as an operator would fill them in.
    bucket = pkg_a.netloc
    prefix = deploy_env.settings.deploy_package_root.removeprefix(f"s3://{bucket}/")
    prefix = prefix.removesuffix("/{tenant}")
    admin_s3 = moto_server_iam.client("s3")
    admin_s3.create_bucket(Bucket=bucket)
    iam = moto_server_iam.client("iam")
    for tenant, (role_arn, pkg) in deployed.items():
        admin_s3.put_object(Bucket=bucket, Key=pkg.path.lstrip("/"), Body=b"model of " +
                            tenant.encode())
        role_name = role_arn.rsplit("/", 1)[-1]
        # On AWS only SageMaker assumes it (the shipped trust policy, checked below); moto
        # cannot act as sagemaker.amazonaws.com (and fails on a Service principal when it
        # evaluates trust), so here the emulator's admin stands in for SageMaker.
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(STAND_IN))
        iam.put_role_policy(RoleName=role_name, PolicyName="execution", PolicyDocument=_render(
            "tenant-sagemaker-execution-role-policy.json", PACKAGE_BUCKET=bucket,
            PACKAGE_PREFIX=prefix, TENANT=tenant, ACCOUNT_ID=ACCOUNT, REGION=REGION))

    def as_role(role_arn: str):
        creds = moto_server_iam.client("sts").assume_role(
            RoleArn=role_arn, RoleSessionName="sagemaker")["Credentials"]
        return boto3.client("s3", endpoint_url=moto_server_iam.url, region_name=REGION,
                            aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"])

    for own_role, own, other in ((role_a, pkg_a, pkg_b), (role_b, pkg_b, pkg_a)):
        s3 = as_role(own_role)
        assert s3.get_object(Bucket=bucket, Key=own.path.lstrip("/"))["Body"].read()
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=bucket, Key=other.path.lstrip("/"))
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key=own.path.lstrip("/"), Body=b"replaced")
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
    for tenant in deployed:
        svc.delete(tenant, "model")
        assert deploy_env.leftovers(tenant) == {}


@pytest.mark.parametrize(("changes", "setting"), [
    ({"deploy_execution_role_arn": ""}, "deploy_execution_role_arn is not set"),
    ({"deploy_execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/shared"},
     "names one role for every tenant"),
    ({"deploy_execution_role_arn": "not-an-arn-{tenant}"}, "does not give an IAM role ARN"),
    ({"deploy_network_isolation": "sometimes"}, "deploy_network_isolation"),
])
def test_a_missing_or_shared_execution_role_is_a_400_naming_the_setting(
    deploy_env, pyfunc_model, changes, setting
):
    tenant = deploy_env.tenant()
    svc = deploy_env.service(dataclasses.replace(deploy_env.settings, **changes))
    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "norole", pyfunc_model, background=False)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE" and setting in exc.value.message
    assert svc.list(tenant) == [] and deploy_env.leftovers(tenant) == {}


def test_network_isolation_on_request_or_always_and_a_shared_role_only_with_always(
    deploy_env, pyfunc_model
):
    tenant = deploy_env.tenant(endpoints=2, instances=2)
    svc = deploy_env.service()
    svc.create(tenant, "asked", pyfunc_model, config={"network_isolation": "true"},
               background=False)
    assert _model(deploy_env, tenant, "asked")["EnableNetworkIsolation"] is True
    svc.update(tenant, "asked", pyfunc_model, background=False)  # an update keeps it
    assert _model(deploy_env, tenant, "asked")["EnableNetworkIsolation"] is True

    always = deploy_env.service(dataclasses.replace(
        deploy_env.settings, deploy_network_isolation="always",
        deploy_execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/shared"))
    with pytest.raises(MlflowException, match="network isolation"):
        always.create(tenant, "open", pyfunc_model, config={"network_isolation": "false"})
    always.create(tenant, "forced", pyfunc_model, background=False)
    model = _model(deploy_env, tenant, "forced")
    assert model["EnableNetworkIsolation"] is True and model["ExecutionRoleArn"].endswith(
        ":role/shared")
    for name in ("asked", "forced"):
        svc.delete(tenant, name)
    assert deploy_env.leftovers(tenant) == {}


def test_shipped_execution_role_policy_names_one_tenants_prefix_and_only_reads():
    doc = json.loads((IAM / "tenant-sagemaker-execution-role-policy.json").read_text())
    s3 = [s for s in doc["Statement"] if any(
        a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str)
                                      else s["Action"]))]
    assert [s["Action"] for s in s3] == ["s3:GetObject"]
    assert s3[0]["Resource"] == "arn:aws:s3:::PACKAGE_BUCKET/PACKAGE_PREFIX/TENANT/*"
    trust = json.loads((IAM / "tenant-sagemaker-execution-role-trust.json").read_text())
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}

"""Validation evidence on a real tenant-auth server, read back with the stock MlflowClient;
``mlflow-tenants validate`` as a subprocess; and the deploy gate at the function level against
the server's runs (over HTTP as the tenant, and through the store as the deployment service
reads them)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.validation import DataValidationError, validate
from mlflow_tenant_plugins.validation.gate import check_deploy, check_run_validated
from tests.fixtures.servers import MlflowServer

RULES = """\
columns:
  x:
    dtype: float64
    in_range: {min_value: 0, max_value: 10}
  label:
    isin: [a, b]
checks:
  row_count: {min_value: 2}
"""
GOOD = pd.DataFrame({"x": [1.0, 2.5, 9.0], "label": ["a", "b", "a"]})
BAD = pd.DataFrame({"x": [1.0, 42.0, 9.0], "label": ["a", "b", "zzz"]})
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tenant(tenant_server: MlflowServer, make_tenant, monkeypatch, tmp_path):
    """A fresh tenant whose key the stock client uses (MLFLOW_TRACKING_TOKEN), an experiment
    of its own, and a rules file."""
    name, key = make_tenant("editor")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tenant_server.url)
    mlflow.set_tracking_uri(tenant_server.url)
    client = MlflowClient(tracking_uri=tenant_server.url)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    experiment = client.create_experiment(f"validation-{secrets.token_hex(3)}")
    yield SimpleNamespace(name=name, key=key, client=client, experiment=experiment, rules=rules,
                          server=tenant_server)
    if mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _report(client: MlflowClient, run_id: str, path: str) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path)).read_text())


def test_validate_in_a_run_logs_the_dataset_input_pass_tag_and_report(tenant):
    with mlflow.start_run(experiment_id=tenant.experiment) as run:
        result = validate(GOOD, tenant.rules, name="train")
    assert result.passed and result.run_id == run.info.run_id

    got = tenant.client.get_run(run.info.run_id)
    assert got.data.tags["mlflow_tenant.validation"] == "pass"
    digest = result.report["rules"]["digest"]
    assert got.data.tags["mlflow_tenant.validation.rules_digest"] == digest
    [logged] = got.inputs.dataset_inputs
    assert logged.dataset.name == "train"
    assert logged.dataset.digest == mlflow.data.from_pandas(GOOD).digest
    tags = {t.key: t.value for t in logged.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["mlflow_tenant.validation"] == "pass"
    assert tags["mlflow_tenant.validation.report"] == result.report_path
    report = _report(tenant.client, run.info.run_id, result.report_path)
    assert report["status"] == "pass" and report["failures"] == []
    assert report["dataset"] == {"name": "train", "digest": logged.dataset.digest,
                                 "source": None, "rows": 3, "columns": ["x", "label"]}
    assert report["rules"] == {"source": str(tenant.rules), "digest": digest}


def test_failing_data_raises_leaves_fail_evidence_and_a_later_pass_does_not_clear_it(tenant):
    with mlflow.start_run(experiment_id=tenant.experiment) as run:
        with pytest.raises(DataValidationError) as exc:
            validate(BAD, tenant.rules, name="raw")
        validate(GOOD, tenant.rules, name="cleaned")
    message = exc.value.message
    assert "data 'raw' failed 2 rule(s)" in message
    assert "column 'x': in_range(0, 10): 1 failing value(s): 42.0 at row(s) 1" in message
    assert "column 'label': isin(['a', 'b']): 1 failing value(s): 'zzz' at row(s) 2" in message

    got = tenant.client.get_run(run.info.run_id)
    assert got.data.tags["mlflow_tenant.validation"] == "fail"  # the run saw failing data
    verdicts = {i.dataset.name: {t.key: t.value for t in i.tags}["mlflow_tenant.validation"]
                for i in got.inputs.dataset_inputs}
    assert verdicts == {"raw": "fail", "cleaned": "pass"}
    failed = exc.value.report
    report = _report(tenant.client, run.info.run_id,
                     f"validation/raw-{failed['dataset']['digest']}.json")
    assert report["status"] == "fail"
    assert {(f["column"], f["examples"][0]) for f in report["failures"]} == {
        ("x", 42.0), ("label", "zzz")}


def _cli(server: MlflowServer, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlflow_tenant_plugins.cli", *args],
                          env=server.client_env(key), capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_cli_validate_logs_to_a_run_by_id_and_exits_0_pass_1_fail_2_bad_input(tenant, tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.parquet"
    GOOD.to_csv(good, index=False)
    BAD.to_parquet(bad)
    run_id = tenant.client.create_run(tenant.experiment).info.run_id
    (tmp_path / "broken.yaml").write_text("columns:\n  x:\n    in_rnage: [0, 1]\n")

    done = _cli(tenant.server, tenant.key, "validate", str(good), "--rules", str(tenant.rules),
                "--run-id", run_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pass: data 'good' (3 rows") and done.stderr == ""
    assert tenant.client.get_run(run_id).data.tags["mlflow_tenant.validation"] == "pass"

    done = _cli(tenant.server, tenant.key, "validate", str(bad), "--rules", str(tenant.rules),
                "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["status"] == "fail" and report["run_id"] is None
    assert {f["column"] for f in report["failures"]} == {"x", "label"}
    assert done.stderr.strip() == "error: data failed 2 validation rule(s)"

    broken = tmp_path / "broken.yaml"
    done = _cli(tenant.server, tenant.key, "validate", str(good), "--rules", str(broken))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {broken} line 3: column 'x': unknown rule 'in_rnage' " \
                          "(did you mean 'in_range'?)\n"


def test_cli_validate_bad_data_path_or_run_is_one_line_exit_2(tenant, tmp_path, capsys):
    """In-process through the console script's ``main`` (the subprocess cases above cover the
    real process): every refusal is one ``error:`` line on stderr, exit status 2."""
    from mlflow_tenant_plugins.cli import main

    good = tmp_path / "good.csv"
    GOOD.to_csv(good, index=False)
    for args, expected in (
        ((str(tmp_path / "absent.csv"), "--rules", str(tenant.rules)), "not found"),
        ((str(good), "--rules", str(tmp_path / "absent.yaml")), "rules file"),
        ((str(good), "--rules", str(tenant.rules), "--run-id", "0" * 32), "error: "),
        ((str(good),), "Missing option '--rules'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["validate", *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (args, err)
        assert expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


def _runs(tenant) -> dict[str, str]:
    """Runs of the tenant in each state the gate must tell apart."""
    runs = {}
    with mlflow.start_run(experiment_id=tenant.experiment) as run:
        runs["none"] = run.info.run_id
    with mlflow.start_run(experiment_id=tenant.experiment) as run:
        validate(GOOD, tenant.rules, name="train")
        runs["passed"] = run.info.run_id
    with mlflow.start_run(experiment_id=tenant.experiment) as run:
        with pytest.raises(DataValidationError):
            validate(BAD, tenant.rules, name="train")
        runs["failed"] = run.info.run_id
    with mlflow.start_run(experiment_id=tenant.experiment) as run:
        mlflow.set_tag("mlflow_tenant.validation", "pass")  # by hand, no evidence behind it
        runs["hand"] = run.info.run_id
    return runs


def _refusal(check, run_id) -> str:
    with pytest.raises(MlflowException) as exc:
        check(run_id)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 on the wire
    return exc.value.message


def test_gate_refuses_unvalidated_failed_and_hand_tagged_runs_and_passes_validated(tenant):
    runs = _runs(tenant)

    def check(run_id):
        return check_run_validated(tenant.client, run_id, model_uri="models:/churn/1",
                                   tenant=tenant.name)

    [dataset] = check(runs["passed"])
    assert dataset["name"] == "train" and dataset["status"] == "pass"
    assert dataset["digest"] == mlflow.data.from_pandas(GOOD).digest

    head = f"model 'models:/churn/1' cannot be deployed: tenant '{tenant.name}' deploys only " \
           "validated models, and "
    message = _refusal(check, runs["none"])
    assert message.startswith(head)
    assert f"training run {runs['none']} has no data validation: missing the run tag " \
           "mlflow_tenant.validation=pass and a validated dataset input" in message
    assert f"mlflow-tenants validate DATA --rules RULES --run-id {runs['none']}" in message
    message = _refusal(check, runs["failed"])
    assert f"training run {runs['failed']} failed data validation: dataset 'train'" in message
    assert "validation/train-" in message
    assert "has no validated dataset input" in _refusal(check, runs["hand"])
    assert "names no training run" in _refusal(check, None)


def test_gate_reads_runs_in_the_tenants_workspace_as_the_deployment_service_does(
    tenant, make_tenant, monkeypatch
):
    """The service calls ``check_deploy`` with its tracking store and the tenant's workspace
    active: the tenant's validated run passes, and another tenant cannot name it."""
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    runs = _runs(tenant)
    other, _key = make_tenant("editor")
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    store = tenant.server.db_uri

    def deploy_as(name: str, run_id: str) -> None:
        model = SimpleNamespace(model_uri=f"runs:/{run_id}/model", run_id=run_id)
        with ServerWorkspaceContext(name):
            check_deploy(SimpleNamespace(name=name), model, tracking_uri=store)

    deploy_as(tenant.name, runs["passed"])
    assert "has no data validation" in _refusal(lambda r: deploy_as(tenant.name, r),
                                                runs["none"])
    assert "was not found" in _refusal(lambda r: deploy_as(other, r), runs["passed"])

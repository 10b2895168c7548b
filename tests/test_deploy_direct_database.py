"""An admin's direct deploy (``-t tenant-sagemaker:/REGION/TENANT``) works on the platform's
own database or refuses: with none named it used to make ``./mlflow.db`` and deploy against a
registry no server reads (every tenant unknown, or worse, quotas of a stranger)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_direct_deploy_with_no_database_named_refuses_in_one_line_and_makes_none(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "deployments", "list",
         "-t", "tenant-sagemaker:/us-east-1/acme"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: direct mode needs the platform's database"), proc.stderr
    assert "MLFLOW_TENANT_DATABASE_URI" in lines[-1] and "MLFLOW_TENANT_CONFIG" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db made

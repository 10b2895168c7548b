"""`make demo` end to end: the demo script runs the whole platform on this machine and exits 0,
having trained, run the example project as a job, deployed, predicted and shown the other
tenant seeing nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--workdir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=1200,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # The model deployed and served is the one the project's job logged.
    assert re.search(r"deploys the model its job logged: .* -m runs:/\w+/model", out), out
    assert "predicted prices (k) for 5 houses: [" in out
    assert "CloudWatch alarms made for the endpoint: 5" in out
    assert "globex sees 0 experiments, 0 models" in out
    # The example project ran as acme's job on the platform and its run finished there.
    assert re.search(r"acme's run \w+: FINISHED", out) and re.search(
        r"acme's job \S+: FINISHED", out), out
    # Each tenant's statement for the month so far, from the price table.
    assert "statement acme " in out and "statement globex " in out
    assert re.search(r"training instance-hours ml\.m5\.large\s+\d", out), out
    assert "stopped mlflow-server" in out and "stopped moto" in out
    # Alarms and the scaling policy as tables, not a dict cut at 300 characters; the way to
    # keep the platform up to explore is said at the end.
    assert "ALARM" in out and "THRESHOLD" in out and "POLICY" in out and "MIN" in out
    assert "{'" not in out and "[{" not in out
    assert "make demo KEEP=1" in out.split("demo finished in")[1]
    assert "admin CLI:  MLFLOW_TENANT_DATABASE_URI=" in out
    assert not list((tmp_path / "d").glob("*.pid"))

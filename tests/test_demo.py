"""`make demo` end to end: the demo script runs the whole platform on this machine and exits 0,
having trained, deployed, predicted and shown the other tenant seeing nothing."""

from __future__ import annotations

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
    assert "predictions for 5 wines: [" in out
    assert "CloudWatch alarms made for the endpoint: 5" in out
    assert "globex sees 0 experiments, 0 models" in out
    assert "stopped mlflow-server" in out and "stopped moto" in out
    assert not list((tmp_path / "d").glob("*.pid"))

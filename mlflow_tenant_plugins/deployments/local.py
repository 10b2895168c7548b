"""``mlflow deployments run-local -t tenant-sagemaker``: serve the model on this machine with
MLflow's own scoring server (the pyfunc backend, current Python environment, no Docker) —
the same server SageMaker's MLflow image runs — until Ctrl-C or ``max_seconds``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.deployments.options import LOCAL, parse_config, validate_deployment_name


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def run_local(name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, Any] | None = None) -> None:
    validate_deployment_name(name)
    cfg = parse_config(config, LOCAL)
    if flavor not in (None, "python_function"):
        raise MlflowException.invalid_parameter_value(
            f"flavor {flavor!r} cannot be served locally; use python_function"
        )
    host, port = cfg.get("host", "127.0.0.1"), cfg.get("port", 5000)
    max_seconds = cfg.get("max_seconds", 0)
    from mlflow.pyfunc.backend import PyFuncBackend
    from mlflow.utils import env_manager

    # The scoring server is started by name (uvicorn): make this interpreter's scripts win.
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    backend = PyFuncBackend(config={}, env_manager=env_manager.LOCAL,
                            workers=cfg.get("workers", 1))
    proc = backend.serve(model_uri, port, host, timeout=None, synchronous=False)
    print(f"Serving deployment '{name}' ({model_uri}) at http://{host}:{port}/invocations "
          f"(health: http://{host}:{port}/ping). Press Ctrl-C to stop.", flush=True)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + max_seconds if max_seconds else None
    try:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                print(f"Stopping after max_seconds={max_seconds:g}.", flush=True)
                break
            time.sleep(0.2)
        else:
            raise MlflowException(f"the scoring server exited with status {proc.returncode}")
    except KeyboardInterrupt:
        print("Stopping.", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)

"""The ``local`` engine: a job is a subprocess on the platform server's host.

For one machine (``make demo``, tests, a laptop without AWS). **Not an isolation boundary**:
the project's code runs as the server's OS user and could read what that user reads. The
subprocess gets a clean environment — the runner's spec, the tracking address and a key made
for this job alone (expiring with the job's maximum runtime, revoked when it ends) — and none
of the server's own (no AWS credentials, no database address, no platform config).

State lives in the job's directory, so any worker of the server (and a server restarted after
a crash) can describe a job another worker started::

    <root>/<tenant>/<name>/
        project.tar.gz  the project archive          log      stdout and stderr
        pid             the wrapper's process id     exit     exit status, once it ended
        started         start time (epoch seconds)   stopped  why it was stopped (KILLED)
        failure         the runner's one-line reason

The runner runs under ``/bin/sh`` that writes ``exit`` when it returns: the status survives
the server worker that started it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.jobs.executor import EngineState, JobLaunch, LogPage

# Variables of the server's environment a job may see: where programs and locale live. The
# rest (AWS_*, MLFLOW_TENANT_*, database addresses, tokens) stays with the server.
PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TZ")
STOP_GRACE_SECONDS = 10.0
_MAX_LINE = 4000


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def group_alive(pgid: int) -> bool:
    """Whether any process of the job's group still runs: the runner may outlive the wrapper
    while it records a stop. A group of nothing but the unreaped wrapper counts as ended."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in members:
        stat = _read(Path(f"/proc/{pid}/stat"))
        fields = stat.rsplit(")", 1)[-1].split() if stat else []
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class LocalEngine:
    name = "local"

    def __init__(self, root: str | Path, python: str = sys.executable):
        self.root = Path(root)
        self.python = python

    def _dir(self, tenant: str, name: str) -> Path:
        if "/" in tenant or "/" in name or name.startswith("."):
            raise ValueError(f"invalid job name {name!r}")
        return self.root / tenant / name

    def start(self, launch: JobLaunch) -> None:
        home = self._dir(launch.tenant, launch.name)
        try:
            home.mkdir(parents=True, exist_ok=False, mode=0o700)
        except FileExistsError:
            if (home / "pid").exists():
                return  # started already (a retried start)
        for sub in ("home", "tmp", "work"):
            (home / sub).mkdir(exist_ok=True, mode=0o700)
        archive = home / spec.PACKAGE_FILE
        if launch.package_path and Path(launch.package_path) != archive:
            shutil.copyfile(launch.package_path, archive)
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update({
            "HOME": str(home / "home"), "TMPDIR": str(home / "tmp"),
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": launch.tracking_uri,
            spec.ENV_SPEC: launch.runner.to_json(),
            spec.ENV_PACKAGE: str(archive),
            spec.ENV_FAILURE_FILE: str(home / "failure"),
            spec.ENV_WORKDIR: str(home / "work"),
            **launch.environment,
        })
        (home / "max_runtime").write_text(str(launch.max_runtime_seconds))
        # The wrapper outlives a stop (its trap waits for the runner) so the exit is recorded.
        script = (f"trap : TERM; {shlex.quote(self.python)} -m mlflow_tenant_plugins.jobs.runner"
                  " > log 2>&1 < /dev/null; echo $? > exit.tmp && mv exit.tmp exit")
        process = subprocess.Popen(["/bin/sh", "-c", script], cwd=home, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        (home / "started").write_text(f"{time.time():.3f}")
        (home / "pid").write_text(str(process.pid))
        # Reap the wrapper when it ends, so it does not linger as a zombie of this worker.
        threading.Thread(target=process.wait, name=f"job-{launch.name}", daemon=True).start()

    def describe(self, tenant: str, name: str) -> EngineState | None:
        home = self._dir(tenant, name)
        pid = _read(home / "pid")
        if pid is None:
            return None
        started = _read(home / "started")
        started_at = datetime.fromtimestamp(float(started), UTC) if started else None
        code, stopped = _read(home / "exit"), _read(home / "stopped")
        alive = group_alive(int(pid))
        if alive and code is None:
            limit = _read(home / "max_runtime")
            if started_at and limit and time.time() - started_at.timestamp() > float(limit):
                self.stop(tenant, name, f"stopped after its maximum runtime ({limit} s)")
                return EngineState(spec.RUNNING, started_at=started_at, detail="Stopping")
            return EngineState(spec.RUNNING, started_at=started_at,
                               detail="Stopping" if stopped else "Training")
        ended_at = (datetime.fromtimestamp((home / "exit").stat().st_mtime, UTC)
                    if code is not None else datetime.now(UTC))
        if stopped is not None:
            return EngineState(spec.KILLED, stopped or "stopped", started_at, ended_at)
        if code == "0":
            return EngineState(spec.FINISHED, None, started_at, ended_at)
        reason = _read(home / "failure") or (
            f"the job exited with status {code}" if code is not None
            else "the job's process ended without an exit status (was the host restarted?)")
        return EngineState(spec.FAILED, reason[:_MAX_LINE], started_at, ended_at)

    def stop(self, tenant: str, name: str, reason: str = "stopped on request") -> None:
        home = self._dir(tenant, name)
        pid = _read(home / "pid")
        if pid is None or _read(home / "exit") is not None:
            return
        if not (home / "stopped").exists():
            (home / "stopped").write_text(reason)
        self._signal(int(pid), signal.SIGTERM)
        threading.Thread(target=self._kill_later, args=(int(pid),), daemon=True).start()

    @staticmethod
    def _signal(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_later(self, pgid: int) -> None:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.2)
        self._signal(pgid, signal.SIGKILL)

    def logs(self, tenant: str, name: str, token: str | None, limit: int = 500) -> LogPage:
        """Lines from byte offset ``token``; the token stays the same when nothing is new."""
        path = self._dir(tenant, name) / "log"
        offset = int(token) if token and token.isdigit() else 0
        try:
            with path.open("rb") as f:
                f.seek(offset)
                lines: list[str] = []
                while len(lines) < limit:
                    raw = f.readline()
                    if not raw.endswith(b"\n"):
                        break  # an unfinished line waits for its end
                    offset += len(raw)
                    lines.append(raw.decode("utf-8", "replace").rstrip("\n")[:_MAX_LINE])
        except FileNotFoundError:
            return LogPage([], token)
        return LogPage(lines, str(offset))

    def running(self) -> list[tuple[str, str]]:
        """(tenant, name) of every job directory, running or ended."""
        if not self.root.is_dir():
            return []
        return sorted((t.name, j.name) for t in self.root.iterdir() if t.is_dir()
                      for j in t.iterdir() if j.is_dir() and (j / "pid").exists())

    def remove(self, tenant: str, name: str) -> None:
        """Delete an ended job's directory (its archive and working files)."""
        shutil.rmtree(self._dir(tenant, name), ignore_errors=True)

"""The console script ``mlflow-tenants``, run as a subprocess as an administrator runs it.

Each run imports MLflow (seconds), so the cases share one database and one tenant set, and
runs that only read are started side by side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlflow_tenant_plugins.cli import ROLE_CHOICES
from mlflow_tenant_plugins.tenancy import ROLES, TenantRegistry

CLI = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))
RUN_TIMEOUT = 180
PARALLEL = 4
ARN = "arn:aws:sns:us-east-1:123456789012:acme-alarms"


class Cli:
    """Runs the console script against one sqlite database."""

    def __init__(self, tmp: Path):
        self.db = f"sqlite:///{tmp}/x.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TENANT")}
        self.cwd = tmp

    def __call__(self, *args: str, db: bool = True, env: dict | None = None
                 ) -> subprocess.CompletedProcess:
        argv = [CLI, *(["--db", self.db] if db else []), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              env={**self.env, **(env or {})}, cwd=self.cwd)

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        result = self(*args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert result.stderr == "", f"{args} wrote to stderr (MLflow logging?): {result.stderr}"
        return result

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json").stdout)

    def many(self, calls: list) -> list:
        """Independent calls side by side; each call is a tuple of args or a callable."""
        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(lambda c: c() if callable(c) else self(*c), calls))


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Cli:
    assert CLI, f"mlflow-tenants is not installed next to {sys.executable}"
    return Cli(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def acme(cli) -> dict:
    """Tenant acme with every quota option given."""
    return cli.json("tenant", "create", "acme", "--display-name", "Acme Corp", "--storage",
                    "10GB", "--endpoints", "3", "--instances", "6", "--instances-per-endpoint",
                    "2", "--instance-types", "ml.m5.large,ml.c5.large", "--jobs", "3",
                    "--training-instances", "4", "--training-instance-types", "ml.c5.xlarge",
                    "--max-job-runtime", "7200", "--training-instance-hours", "50",
                    "--alarm-topic-arn", ARN, "--require-validation")


@pytest.fixture(scope="module")
def reg(cli, acme) -> TenantRegistry:
    """The same database, in this process, to check what the CLI did."""
    return TenantRegistry(cli.db)


def test_help_lists_every_verb(cli):
    out = cli.ok("--help").stdout
    for verb in ("tenant", "key", "member", "usage"):
        assert verb in out
    assert ROLE_CHOICES == ROLES


def test_tenant_create_takes_every_quota_option_and_sizes_in_binary_units(acme):
    assert acme["name"] == "acme" and acme["display_name"] == "Acme Corp"
    assert acme["quotas"] == {"storage_bytes": 10737418240, "endpoints": 3, "instances": 6,
                              "instances_per_endpoint": 2,
                              "instance_types": ["ml.m5.large", "ml.c5.large"],
                              "jobs": 3, "training_instances": 4,
                              "training_instance_types": ["ml.c5.xlarge"],
                              "max_job_runtime_seconds": 7200, "training_instance_hours": 50,
                              "storage_mode": "hard", "storage_allowance_bytes": 0}
    assert (acme["alarm_topic_arn"], acme["require_validation"], acme["status"]) == (
        ARN, True, "active")


def stock_mlflow_workspaces(cli: Cli, tracking_uri: str) -> list[str]:
    """Workspace names as MLflow's own client lists them."""
    listing = subprocess.run(
        [sys.executable, "-c", "import sys; from mlflow import MlflowClient; "
         "print(*sorted(w.name for w in MlflowClient(sys.argv[1]).list_workspaces()))",
         tracking_uri], capture_output=True, text=True, timeout=RUN_TIMEOUT, env=cli.env,
        cwd=cli.cwd)
    assert listing.returncode == 0, listing.stderr
    return listing.stdout.split()


def test_created_tenant_is_a_workspace_in_stock_mlflow(cli, acme):
    # --tracking-uri puts the workspace elsewhere; separate files keep the two runs apart.
    registry_db, tracking = (cli.db.replace("x.db", f) for f in ("split.db", "tracking.db"))
    listing, split = cli.many([
        lambda: stock_mlflow_workspaces(cli, cli.db),
        lambda: cli("--db", registry_db, "--tracking-uri", tracking, "tenant", "create", "split",
                    db=False),
    ])
    assert "acme" in listing
    assert split.returncode == 0, split.stderr
    assert "split" in stock_mlflow_workspaces(cli, tracking)


def test_keys_print_alone_on_the_last_line_and_work(cli, reg):
    # One after the other: MLflow's own sqlite engine waits only 5 s for a writer's lock.
    human = cli.ok("key", "create", "acme", "--role", "editor", "--description", "ci",
                   "--expires-in", "30d")
    as_json = cli.ok("key", "create", "--platform-admin", "--label", "root", "--json")
    key = human.stdout.splitlines()[-1]
    assert key.startswith("mlt_") and key.split() == [key]
    identity = reg.verify_key(key)
    assert (identity.tenant, identity.role.value) == ("acme", "editor")
    admin = json.loads(as_json.stdout)
    assert admin["tenant"] is None and admin["principal"] == "admin:root"
    assert reg.verify_key(admin["key"]).platform_admin

    listing, revoking = cli.many([("key", "list", "acme", "--json"),
                                  ("key", "revoke", admin["key"], "--json")])
    listed = json.loads(listing.stdout)
    assert [(k["description"], k["status"], k["role"]) for k in listed] == [
        ("ci", "active", "editor")]
    assert key not in listing.stdout and listed[0]["expires_at"]
    revoked = json.loads(revoking.stdout)  # the leaked key itself names the key to revoke
    assert revoked["key_id"] == admin["key_id"] and revoked["revoked_at"]
    assert reg.verify_key(admin["key"]) is None


def test_members_bind_list_and_unbind(cli, reg):
    alice = "oidc:alice@example.com"
    bound = cli.json("member", "bind", "acme", alice, "--role", "deployer")
    assert bound == {"principal": alice, "tenant": "acme", "role": "deployer", "kind": "user"}
    listing = cli.json("member", "list", "acme")
    assert (alice, "deployer") in {(m["principal"], m["role"]) for m in listing}
    assert "no longer a member" in cli.ok("member", "unbind", "acme", alice).stdout
    assert alice not in {m.principal for m in reg.members("acme")}


def test_list_show_update_and_usage(cli, reg):
    assert "created tenant beta" in cli.ok("tenant", "create", "beta", "--storage",
                                           "10737418240", "--require-validation").stdout
    reg.ledger.reserve("acme", "storage_bytes", 2**30)
    from_config = {"MLFLOW_TENANT_DATABASE_URI": cli.db}  # no --db: the configuration names it
    listed, shown, usage_all, usage_text, update = cli.many([
        ("tenant", "list", "--json"),
        lambda: cli("tenant", "show", "acme", "--json", db=False, env=from_config),
        ("usage", "--json"), ("usage", "acme"),
        ("tenant", "update", "beta", "--storage", "20GB", "--endpoints", "5",
         "--no-require-validation", "--json")])
    assert {t["name"] for t in json.loads(listed.stdout)} >= {"acme", "beta"}
    assert json.loads(shown.stdout)["usage"]["storage_bytes"] == {
        "resource": "storage_bytes", "used": 2**30, "limit": 10 * 2**30}
    report = {r["tenant"]: r for r in json.loads(usage_all.stdout)}
    assert report["acme"]["usage"]["storage_bytes"]["utilization"] == 0.1
    assert usage_text.stdout.splitlines()[1].split() == [
        "acme", "storage_bytes", "1.0", "GiB", "10.0", "GiB", "10%"]

    updated = json.loads(update.stdout)
    assert updated["quotas"]["storage_bytes"] == 20 * 2**30
    assert updated["quotas"]["endpoints"] == 5 and updated["quotas"]["instances"] == 4
    assert updated["require_validation"] is False and updated["display_name"] == "beta"


def test_suspend_stops_keys_and_resume_restores_them(cli, reg):
    _, key = reg.create_key("acme", "viewer")
    assert cli.json("tenant", "suspend", "acme")["status"] == "suspended"
    assert reg.verify_key(key) is None
    listed = cli.json("key", "list", "acme")
    assert {k["status"] for k in listed if k["revoked_at"] is None} == {"suspended"}
    assert "acme is active" in cli.ok("tenant", "resume", "acme").stdout
    assert reg.verify_key(key).tenant == "acme"


def test_delete_refuses_while_resources_are_held_unless_forced(cli, reg):
    reg.create_tenant("gamma")
    reg.ledger.reserve("gamma", "endpoints", 1)
    refused = cli("tenant", "delete", "gamma")
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert cli.json("tenant", "delete", "gamma", "--force") == {"name": "gamma", "deleted": True}
    assert "gamma" not in {t.name for t in reg.list_tenants()}


BAD_INPUT = {
    "invalid name": (("tenant", "create", "Acme!"), "must match the pattern"),
    "duplicate": (("tenant", "create", "acme"), "already exists"),
    "unknown tenant (show)": (("tenant", "show", "nope"), "tenant 'nope' does not exist"),
    "unknown key": (("key", "revoke", "000000000000"), "key '000000000000' does not exist"),
    "negative size": (("tenant", "create", "x1", "--storage", "-5"), "--storage"),
    "malformed size": (("tenant", "create", "x2", "--storage", "10XB"), "10XB"),
    "negative count": (("tenant", "create", "x3", "--endpoints", "-1"), "negative"),
    "malformed count": (("tenant", "create", "x4", "--instances", "many"), "many"),
    "unknown role": (("key", "create", "acme", "--role", "owner"), "owner"),
    "bad duration": (("key", "create", "acme", "--role", "viewer", "--expires-in", "10"),
                     "duration"),
    "not a member": (("member", "unbind", "acme", "nobody"), "not a member"),
    "nothing to update": (("tenant", "update", "acme"), "nothing to update"),
    "bad --db": (("--db", "not-a-uri", "tenant", "list"), "database"),
}


def test_bad_input_gives_one_error_line_and_status_2(cli, reg):
    cases = list(BAD_INPUT.items())
    calls = [lambda args=args: cli(*args, db=args[0] != "--db") for _, (args, _) in cases]
    calls.append(lambda: cli("tenant", "list", db=False,
                             env={"MLFLOW_TENANT_CONFIG": str(cli.cwd / "missing.toml")}))
    results = cli.many(calls)
    expected = [*cases, ("missing config file", (None, "missing.toml"))]
    problems = []
    for (what, (_, needle)), r in zip(expected, results, strict=True):
        lines = r.stderr.splitlines()
        if (r.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ")
                or needle not in lines[0] or "Traceback" in r.stderr or r.stdout):
            problems.append(f"{what}: status {r.returncode}, stderr {r.stderr!r}, "
                            f"stdout {r.stdout[:200]!r}")
    assert not problems, "\n".join(problems)
    names = {t.name for t in reg.list_tenants()}
    assert not names & {"x1", "x2", "x3", "x4"}  # nothing half-created

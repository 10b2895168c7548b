"""Jobs the platform runs for tenants: their quotas, their records, and a monthly ledger.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_QUOTAS = (
    ("quota_jobs", sa.Integer, "2"),
    ("quota_training_instances", sa.Integer, "2"),
    ("quota_training_instance_types", sa.Text, "ml.m5.large,ml.m5.xlarge,ml.c5.xlarge"),
    ("quota_max_job_runtime_seconds", sa.Integer, "86400"),
    ("quota_training_instance_hours", sa.Integer, "100"),
)


def upgrade() -> None:
    with op.batch_alter_table("mlt_tenants") as batch:
        for name, kind, default in _QUOTAS:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=default))
    # Existing tenants get ledger rows for the new quota-bound resources.
    for resource in ("jobs", "training_instances"):
        op.execute(
            "INSERT INTO mlt_usage (tenant, resource, used, updated_at) "
            f"SELECT name, '{resource}', 0, CURRENT_TIMESTAMP FROM mlt_tenants"
        )
    op.create_table(
        "mlt_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(63),
                  sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("detail", sa.String(128), nullable=True),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("instance_count", sa.Integer, nullable=False),
        sa.Column("max_runtime_seconds", sa.Integer, nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("reserved_seconds", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("failure_reason", sa.Text, nullable=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released", sa.Boolean, nullable=False, server_default=sa.false()),
        # The run while its job has not ended, NULL after: one job per run at a time (NULLs
        # do not collide in a unique column, on sqlite and PostgreSQL alike).
        sa.Column("active_run", sa.String(64), nullable=True, unique=True),
        # AUTOINCREMENT on sqlite: a deleted tenant's job ids are never handed out again.
        sqlite_autoincrement=True,
    )
    op.create_table(
        "mlt_monthly_usage",
        sa.Column("tenant", sa.String(63),
                  sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("resource", sa.String(32), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlt_monthly_usage")
    op.drop_table("mlt_jobs")
    op.execute("DELETE FROM mlt_usage WHERE resource IN ('jobs', 'training_instances')")
    with op.batch_alter_table("mlt_tenants") as batch:
        for name, _, _ in reversed(_QUOTAS):
            batch.drop_column(name)

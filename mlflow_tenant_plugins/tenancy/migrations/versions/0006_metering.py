"""Metering and billing: time-weighted meters, storage overage, budgets.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mlt_tenants") as batch:
        batch.add_column(sa.Column("storage_mode", sa.String(16), nullable=False,
                                   server_default="hard"))
        batch.add_column(sa.Column("quota_storage_allowance_bytes", sa.BigInteger,
                                   nullable=False, server_default="0"))
        batch.add_column(sa.Column("budget_amount", sa.Float(precision=53), nullable=True))
        batch.add_column(sa.Column("on_budget", sa.String(16), nullable=False,
                                   server_default="notify"))
    op.create_table(
        "mlt_meters",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("meter", sa.String(32), primary_key=True),
        sa.Column("dimension", sa.String(64), primary_key=True),
        sa.Column("level", sa.BigInteger, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mlt_meter_usage",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("meter", sa.String(32), primary_key=True),
        sa.Column("dimension", sa.String(64), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("quantity", sa.Float(precision=53), nullable=False),
    )
    op.create_table(
        "mlt_budget_alerts",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("threshold", sa.Integer, primary_key=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlt_budget_alerts")
    op.drop_table("mlt_meter_usage")
    op.drop_table("mlt_meters")
    with op.batch_alter_table("mlt_tenants") as batch:
        for name in ("on_budget", "budget_amount", "quota_storage_allowance_bytes",
                     "storage_mode"):
            batch.drop_column(name)

"""The first schema: runs and their specs.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(512), nullable=False, unique=True),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("commit", sa.String(64)),
        sa.Column("commit_time", sa.Float),
        sa.Column("branch", sa.String(255)),
        sa.Column("dirty", sa.Boolean),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("versions_key", sa.String(255), nullable=False),
        sa.Column("device_kind", sa.String(32), nullable=False),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(32)),
        sa.Column("argv", sa.Text, nullable=False),
        sa.Column("run_dir", sa.Text, nullable=False),
        sa.Column("harness", sa.String(32), nullable=False),
        sa.Column("interrupted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "spec_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("spec_id", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(16)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("final_loss", sa.Float),
        sa.Column("perplexity", sa.Float),
        sa.Column("peak_gpu_memory", sa.Integer),
        sa.Column("steps", sa.Integer),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("retried_pass", sa.Boolean, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("loss_curve", sa.Text, nullable=False),
        sa.Column("commit", sa.String(64)),
        sa.Column("commit_time", sa.Float),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("device_kind", sa.String(32), nullable=False),
        sa.Column("versions_key", sa.String(255), nullable=False),
    )
    # A spec's runs in commit order (history, drift) and on one fingerprint (flaky).
    op.create_index("spec_runs_order", "spec_runs", ["spec_id", "commit_time", "created"])
    op.create_index("spec_runs_fingerprint", "spec_runs", ["spec_id", "fingerprint"])
    op.create_index("spec_runs_run", "spec_runs", ["run_id"])


def downgrade() -> None:
    op.drop_table("spec_runs")
    op.drop_table("runs")

"""The history's tables as SQLAlchemy Core sees them; `migrations/` creates and changes them.

One row per run (`runs`) and one per spec of a run (`spec_runs`). Facts a query filters or
orders by are columns, copied into `spec_runs` where a query would otherwise join for them
(commit order, device kind, versions); the rest (metric finals, the thinned loss curve,
the run's arguments) is JSON text, which both engines store and neither needs to look into.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Integer, MetaData, String, Table, Text

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The run directory and its start: the same run imported twice, or appended again after a retry, is one row.
    Column("uid", String(512), nullable=False, unique=True),
    Column("created", String(40), nullable=False),
    Column("commit", String(64)),
    Column("commit_time", Float),
    Column("branch", String(255)),
    Column("dirty", Boolean),
    Column("versions", Text, nullable=False),
    Column("versions_key", String(255), nullable=False),
    Column("device_kind", String(32), nullable=False),
    Column("backend", String(64), nullable=False),
    Column("tier", String(32)),
    Column("argv", Text, nullable=False),
    Column("run_dir", Text, nullable=False),
    Column("harness", String(32), nullable=False),
    Column("interrupted", Boolean, nullable=False),
)

spec_runs = Table(
    "spec_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("spec_id", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("failure_kind", String(16)),
    Column("reason", Text, nullable=False),
    Column("duration", Float),
    Column("final_loss", Float),
    Column("perplexity", Float),
    Column("peak_gpu_memory", Integer),
    Column("steps", Integer),
    Column("fingerprint", String(64)),
    Column("retried_pass", Boolean, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("loss_curve", Text, nullable=False),
    # Copied from the run: the order and the comparable runs of one spec come from one index.
    Column("commit", String(64)),
    Column("commit_time", Float),
    Column("created", String(40), nullable=False),
    Column("device_kind", String(32), nullable=False),
    Column("versions_key", String(255), nullable=False),
)

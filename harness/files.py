"""Files the harness keeps (records, caches, lease state, reports), written so a reader never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` whole: a temporary beside it (named by pid, so concurrent writers never share one), then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

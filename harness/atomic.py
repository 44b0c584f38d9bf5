"""Files the harness keeps (records, caches, lease state, reports), written so a reader never sees half of one,
and read so that a damaged one costs a warning, never a run."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any


class KeptFileWarning(UserWarning):
    """A file the harness keeps could not be read (garbage, a folder in its place) or written; the run goes on without
    it."""


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` whole: a temporary beside it (named by pid, so concurrent writers never share one), then a
    rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, what: str, expect: type = dict) -> Any | None:
    """The `expect`-typed JSON value in `path`; None when there is none. A file that is there but
    unreadable (binary garbage, cut short, another type, a folder) gives one KeptFileWarning warning
    naming it: the caller starts afresh, and its next write replaces the file."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except TimeoutError:
        raise  # an OSError by class, but a caller's deadline (a signal handler), not a broken file
    except (OSError, ValueError, RecursionError) as error:
        problem = f"{type(error).__name__}: {error}"[:200]
    else:
        if isinstance(data, expect):
            return data
        problem = f"a JSON {type(data).__name__}, not a JSON {'object' if expect is dict else expect.__name__}"
    warnings.warn(
        f"{path}: the {what} is unreadable ({problem}); ignored, and replaced when next saved",
        KeptFileWarning,
        stacklevel=2,
    )
    return None

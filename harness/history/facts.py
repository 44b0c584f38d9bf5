"""What the history keeps of a run and of each spec in it, taken from the records results.json holds.

A run's git facts (commit, its time, branch, a dirty tree) are read when it ends and kept in
results.json too, so `history import` of an old run folder finds the same facts there.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from harness import __version__
from harness.records import RunDocument, SpecResult, thin_curve

# Points of the loss curve kept per spec run: the shape of a trend, not the run's full log.
CURVE_POINTS = 100
# Outcomes worth a row: a spec that ran. Skipped and reused-as-unchanged specs say nothing new.
KEPT_OUTCOMES = ("passed", "failed", "error")
VERSION_KEYS = ("python", "torch", "transformers", "cuda")


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_facts(repo: Path) -> dict[str, Any]:
    """The commit the run tested, when it was made, the branch, and whether the tree differed from it."""
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "commit_time": None, "branch": None, "dirty": None}
    when = _git(repo, "show", "-s", "--format=%ct", "HEAD")
    branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "commit_time": float(when) if when and when.isdigit() else None,
        "branch": None if branch in (None, "HEAD") else branch,
        "dirty": None if status is None else bool(status),
    }


def versions_key(versions: dict[str, Any]) -> str:
    """The versions a drift is judged within, as one comparable string."""
    return " ".join(f"{key}={versions.get(key)}" for key in VERSION_KEYS)


def run_row(document: RunDocument) -> dict[str, Any]:
    found = document.other.get("git")
    git: dict[str, Any] = found if isinstance(found, dict) else {}
    argv = document.other.get("argv")
    commit_time = git.get("commit_time")
    return {
        "uid": f"{document.run_dir}@{document.created}",
        "created": document.created,
        "commit": git.get("commit") if isinstance(git.get("commit"), str) else None,
        "commit_time": float(commit_time) if isinstance(commit_time, (int, float)) else None,
        "branch": git.get("branch") if isinstance(git.get("branch"), str) else None,
        "dirty": git.get("dirty") if isinstance(git.get("dirty"), bool) else None,
        "versions": json.dumps(document.versions, sort_keys=True),
        "versions_key": versions_key(document.versions),
        "device_kind": str(document.devices.get("kind") or "unknown"),
        "backend": document.backend or "local",
        "tier": document.tier,
        "argv": json.dumps(argv if isinstance(argv, list) else []),
        "run_dir": document.run_dir,
        "harness": str(document.other.get("harness") or __version__),
        "interrupted": document.interrupted,
    }


def _last_finite(curve: list[list[float | None]]) -> float | None:
    for _, value in reversed(curve):
        if value is not None and math.isfinite(value):
            return value
    return None


def _rounded(curve: list[list[float | None]]) -> list[list[float | None]]:
    """Six significant digits: a trend's shape, in half the bytes of a float's full repr."""
    return [[step, None if value is None else float(f"{value:.6g}")] for step, value in curve]


def spec_row(record: SpecResult) -> dict[str, Any]:
    metrics = {
        name: value for name, curve in record.metric_curves.items() if (value := _last_finite(curve)) is not None
    }
    return {
        "spec_id": record.id,
        "outcome": record.outcome,
        "failure_kind": record.failure_kind,
        "reason": record.reason[:500],
        "duration": record.duration or None,
        "final_loss": record.final_loss,
        "perplexity": record.perplexity,
        "peak_gpu_memory": max(record.peak_gpu_memory.values()) if record.peak_gpu_memory else None,
        "steps": record.steps_logged,
        "fingerprint": record.fingerprint or None,
        "retried_pass": record.flaky,
        "metrics": json.dumps(metrics, sort_keys=True),
        "loss_curve": json.dumps(_rounded(thin_curve(record.loss_curve, CURVE_POINTS))),
    }


def rows(document: RunDocument) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's row and one row per spec that ran."""
    return run_row(document), [spec_row(spec) for spec in document.specs if spec.outcome in KEPT_OUTCOMES]

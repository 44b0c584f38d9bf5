"""Secrets stay out of what the harness writes: tokens, keys and passwords are masked.

A run's environment often carries credentials (HF_TOKEN, WANDB_API_KEY, ...), and a
training script may echo them: into its stderr, whose tail goes into the record, or into
its command line. Every report and log the harness writes (launch.json, result.json,
results.json and the HTML and JUnit reports built from them, failure messages) goes
through a masker built from that environment. The child's own files are left as it wrote
them: they are its output, not ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# A name whose parts say it holds a credential: HF_TOKEN, AWS_SECRET_ACCESS_KEY, PGPASSWORD.
# Parts, not substrings: TOKENIZERS_PARALLELISM=false must not mask every "false".
SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|PASS|API_?KEY|KEY|CREDENTIALS?|AUTH|PAT)(_|$)|(TOKEN|SECRET|PASSWORD|PASSWD|APIKEY|CREDENTIALS?)$",
    re.IGNORECASE,
)
MIN_LENGTH = 4
# Flags that credential-named settings take (HF_HUB_DISABLE_IMPLICIT_TOKEN=true): no secret,
# and masking them would blank every "true" in a report.
NOT_SECRET = frozenset({"true", "false", "none", "null", "yes", "no", "auto"})


def is_secret(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name)) and len(value) >= MIN_LENGTH and value.lower() not in NOT_SECRET


class Masker:
    """Replaces every secret value, in a string or anywhere inside JSON-like data."""

    def __init__(self, secrets: set[str]):
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def data(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value


def masker_for(env: Mapping[str, Any], *more: Mapping[str, Any]) -> Masker:
    """The masker of a run's environment (and of further environments, such as specs' `env`): the values of their
    credential-named variables."""
    return Masker({str(value) for each in (env, *more) for name, value in each.items() if is_secret(name, str(value))})

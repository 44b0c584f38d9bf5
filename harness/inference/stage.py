"""The inference stage: serve the trained checkpoint, ask for completions, score them.

The server runs in its own process group like a training run and is always stopped, on
success, failure or interruption. Its port is picked free on loopback; since another
process could take it between the pick and the server's bind, a server that dies before
becoming healthy on a taken port is started again on a new one.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import requests

from harness.checks.after_run import CheckResult
from harness.checks.stderr import tail
from harness.inference import forgather, perplexity
from harness.inference.client import Answer, RequestFailed, request
from harness.launch import render
from harness.process import (
    adopt_orphans,
    children_now,
    descendants,
    die_with_parent,
    end_group,
    orphans_since,
    reap,
    track,
    untrack,
)
from harness.records import InferenceRecord
from harness.spec.model import Spec
from harness.spec.rules import split_command
from harness.spec.sections import InferenceSpec

HOST = "127.0.0.1"
PORT_ATTEMPTS = 3
REQUEST_TIMEOUT = 120.0
HEALTH_PROBE = 1.0
HEALTH_LIMIT = 1 << 16
# A completion of n tokens is at most this many characters (a token is rarely over a few dozen); past it the
# server ignored max_tokens, and scoring megabytes would take minutes and gigabytes.
CHARS_PER_TOKEN = 100
CHARS_SLACK = 1000


@dataclass
class Completion:
    prompt: str
    text: str
    perplexity: float | None = None


@dataclass
class InferenceOutcome:
    checks: list[CheckResult] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    server_stderr: Path | None = None
    skipped: str | None = None

    @property
    def worst_perplexity(self) -> float | None:
        scores = [c.perplexity for c in self.completions if c.perplexity is not None and math.isfinite(c.perplexity)]
        return max(scores) if scores else None

    def as_records(self) -> list[InferenceRecord]:
        return [
            cast(
                InferenceRecord,
                {
                    **asdict(c),
                    "perplexity": c.perplexity if c.perplexity is None or math.isfinite(c.perplexity) else None,
                },
            )
            for c in self.completions
        ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """One server process: started in its own session, waited on until healthy, always ended."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], output_dir: Path, port: int):
        self.port = port
        self.stdout_path = output_dir / "server.stdout.log"
        self.stderr_path = output_dir / "server.stderr.log"
        adopt_orphans()
        self.ours_before = children_now()
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        track(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_healthy(self, timeout: float) -> str | None:
        """None once /health answers 200; otherwise why not (it exited, or time ran out).

        Each probe is bounded as a whole: a server trickling its answer is still cut off at the deadline.
        """
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.proc.poll() is not None:
                return f"the server exited with code {self.proc.returncode} before becoming healthy"
            try:
                answer = request("GET", f"{self.url}/health", seconds=min(HEALTH_PROBE, left), limit=HEALTH_LIMIT)
                if _healthy(answer):
                    return None
            except (requests.RequestException, RequestFailed):
                pass
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return f"the server was not healthy within {timeout:g} s"

    def complete(self, prompt: str, spec: InferenceSpec, seconds: float) -> str:
        """The completion's text, its answer read for at most `seconds` and `answer_limit` bytes."""
        payload = {"prompt": prompt, "max_tokens": spec.max_tokens, "temperature": spec.temperature}
        answer = request(
            "POST",
            f"{self.url}/v1/completions",
            json=payload,
            seconds=min(REQUEST_TIMEOUT, seconds),
            limit=answer_limit(spec.max_tokens),
        )
        if answer.status >= 400:
            raise RequestFailed(f"HTTP {answer.status}: {answer.body[:200].decode('utf-8', 'replace')}")
        text = answer.json()["choices"][0]["text"]
        if not isinstance(text, str):
            raise RequestFailed(f"the completion's text is not a string: found {json.dumps(text)[:100]}")
        return text

    def exit_code_soon(self, grace: float = 1.0) -> int | None:
        """The exit code of a server that is going down (a dropped connection comes first)."""
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """End the server's group, its descendants that left it, and the orphans it left (adopted by us)."""
        orphans = orphans_since(self.ours_before, self.proc.pid)
        end_group(self.proc.pid, [*descendants(self.proc.pid), *orphans])
        self.proc.wait()
        reap(orphans)
        untrack(self.proc.pid)


# `inference.server: builtin`: the harness's own server (harness/inference/server.py), run by the spec's interpreter.
BUILTIN_SERVER = ["{python}", "-m", "harness", "serve", "--checkpoint", "{checkpoint_dir}", "--port", "{port}"]


def text_limit(max_tokens: int) -> int:
    """The most characters a completion of `max_tokens` tokens is taken to hold."""
    return CHARS_SLACK + CHARS_PER_TOKEN * max_tokens


def answer_limit(max_tokens: int) -> int:
    """The most bytes of a completion's answer read: its text at 6 bytes a character (JSON's \\uXXXX), and room."""
    return HEALTH_LIMIT + 6 * text_limit(max_tokens)


def _healthy(answer: Answer) -> bool:
    """200, and the model loaded where the server says (Forgather's answers `model_loaded`)."""
    if answer.status != 200:
        return False
    try:
        body = answer.json()
    except ValueError:
        return True
    return not isinstance(body, dict) or body.get("model_loaded", True) is True


def _text_problem(text: str, max_tokens: int) -> str | None:
    """Why a completion is not scored: it is empty, or longer than `max_tokens` tokens can be."""
    if not text.strip():
        return "an empty completion"
    if len(text) > text_limit(max_tokens):
        return (
            f"{len(text)} characters for max_tokens {max_tokens}, more than {text_limit(max_tokens)}: the server"
            " ignored max_tokens; not scored"
        )
    return None


def _out_of_time(spec: Spec, deadline: float, prompt: str) -> CheckResult | None:
    if time.monotonic() < deadline:
        return None
    return CheckResult(
        "inference.completion",
        False,
        f"a scored completion for {prompt!r} within the spec's timeout",
        f"the spec's timeout of {spec.timeout:g} s ran out (it bounds training and inference together)",
    )


def _server_argv(spec: Spec, values: dict[str, str]) -> list[str] | None:
    server = spec.inference.server if spec.inference else None
    if server is None and spec.profile == "forgather":
        server = forgather.SERVER
    if server is None:
        return None
    parts = BUILTIN_SERVER if server == "builtin" else server if isinstance(server, list) else split_command(server)
    return [render(part, values) for part in parts]


def run_inference(
    spec: Spec,
    *,
    output_dir: Path,
    cwd: Path,
    env: dict[str, str],
    values: dict[str, str],
    scorer: str,
    missing_scorer: str,
    time_left: float | None = None,
) -> InferenceOutcome:
    """Serve, complete each prompt, score prompt + completion; every failure becomes a check.

    `time_left`: what the spec's timeout leaves after its training; serving, asking and scoring fit in it.
    """
    inference = spec.inference
    assert inference is not None
    outcome = InferenceOutcome()
    checkpoint = (
        forgather.checkpoint(spec, output_dir) if spec.profile == "forgather" else output_dir / inference.checkpoint
    )
    if not checkpoint.is_dir():
        where = checkpoint.relative_to(output_dir) if checkpoint.is_relative_to(output_dir) else checkpoint
        outcome.checks.append(
            CheckResult(
                "inference.checkpoint",
                False,
                f"a checkpoint directory {str(where)!r} in the output dir",
                "none: the training saved no checkpoint there",
            )
        )
        return outcome
    if inference.server == "builtin":
        # The harness itself, importable by the server wherever the spec's cwd is.
        env = {
            **env,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")])
            ),
        }
    scorer = inference.scorer or scorer
    try:
        perplexity.load_scorer(scorer)
    except perplexity.ScorerUnavailable as error:
        if missing_scorer == "skip":
            outcome.skipped = str(error)
            return outcome
        outcome.checks.append(CheckResult("inference.scorer", False, f"the reference model {scorer!r}", str(error)))
        return outcome
    # From here on the spec's own time: loading the scorer is the harness's (once per worker, not per spec).
    deadline = time.monotonic() + (spec.timeout if time_left is None else time_left)
    server = None
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        argv = _server_argv(spec, {**values, "checkpoint_dir": str(checkpoint), "port": str(port)})
        if argv is None:
            outcome.checks.append(
                CheckResult(
                    "inference.server", False, "inference.server: the command that serves the checkpoint", "not given"
                )
            )
            return outcome
        try:
            server = Server(argv, cwd, env, output_dir, port)
        except OSError as error:
            outcome.checks.append(
                CheckResult("inference.server", False, "a server that starts", f"{argv[0]}: {error.strerror or error}")
            )
            return outcome
        problem = server.wait_healthy(max(0.0, min(inference.server_timeout, deadline - time.monotonic())))
        if problem is not None and time.monotonic() >= deadline:
            problem += f" (all that was left of the spec's timeout of {spec.timeout:g} s)"
        port_taken = problem is not None and "address already in use" in tail(server.stderr_path, 40).lower()
        if problem is None or not port_taken:
            break
        server.stop()
    assert server is not None
    outcome.server_stderr = server.stderr_path
    try:
        if problem is not None:
            outcome.checks.append(
                CheckResult(
                    "inference.server",
                    False,
                    f"GET /health answering 200 within {inference.server_timeout:g} s",
                    f"{problem}; server stderr tail:\n{tail(server.stderr_path, 15)}",
                )
            )
            return outcome
        outcome.checks.append(CheckResult("inference.server", True, "a healthy server", f"{server.url}"))
        for prompt in inference.prompts:
            if (out_of_time := _out_of_time(spec, deadline, prompt)) is not None:
                outcome.checks.append(out_of_time)
                return outcome
            try:
                text = server.complete(prompt, inference, deadline - time.monotonic())
            except (requests.RequestException, RequestFailed, ValueError, KeyError, IndexError, TypeError) as error:
                code = server.exit_code_soon()
                died = f" (the server exited with code {code})" if code is not None else ""
                said = str(error) if isinstance(error, RequestFailed) else f"{type(error).__name__}: {str(error)[:300]}"
                outcome.checks.append(
                    CheckResult(
                        "inference.completion",
                        False,
                        f"a completion for {prompt!r}",
                        f"{said}{died}; server stderr tail:\n{tail(server.stderr_path, 15)}",
                    )
                )
                return outcome
            completion = Completion(prompt, text[: text_limit(inference.max_tokens)])
            outcome.completions.append(completion)
            if (problem := _text_problem(text, inference.max_tokens)) is not None:
                outcome.checks.append(
                    CheckResult("inference.completion", False, f"a completion for {prompt!r}", problem)
                )
                continue
            if (out_of_time := _out_of_time(spec, deadline, prompt)) is not None:
                outcome.checks.append(out_of_time)
                return outcome
            completion.perplexity = perplexity.perplexity(scorer, prompt + text)
            ok = completion.perplexity <= inference.perplexity_max
            outcome.checks.append(
                CheckResult(
                    "inference.perplexity_max",
                    ok,
                    f"perplexity <= {inference.perplexity_max:g} under {scorer}",
                    f"{completion.perplexity:.4g} for {(prompt + text)[:200]!r}",
                )
            )
    finally:
        server.stop()
    return outcome

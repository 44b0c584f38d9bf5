"""Why a run failed: the machine (`infra`), the trainer's code (`code`), the numbers (`numeric`),
time (`timeout`) or the harness itself (`harness`), decided from evidence by one ordered rule table.

The evidence is read in a fixed order, the most decisive first: the backend's own word (Slurm's
job state), the harness's timeout, what fail-fast stopped the run for, an error starting it, the
root exception (for torchrun, the first failing rank's, already found by `after_run.root_error`),
the last lines of stderr, the exit signal and the exit code; and only for a run whose process
ended well, the checks it failed. Each piece is held against `RULES` top to bottom and the first
rule that matches decides. Within the table numeric rules come before code rules and code rules
before infra ones, so a NaN or a device-side assert followed by a collective timeout on the other
ranks (a consequence) is never called the machine's fault. A root exception that matches no rule
is the trainer's (`code`), before any later stderr line can speak: the other ranks' "connection
closed by peer" after one rank raised is not the cause. Nothing defaults to `infra`: what no rule
claims is `code`, so only a failure shown to be the machine's is retried by default.
"""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.checks.after_run import CheckResult
from harness.checks.stderr import root_error
from harness.process import ProcessOutcome
from harness.spec.model import FailureKind

# Enough of stderr's end for torchrun's summary and the lines before a rank's death; read in bounded memory.
TAIL_BYTES = 256 * 1024
EVIDENCE_LIMIT = 300
# Less free than this on the run directory's disk after a run died: it died of a full disk.
FULL_BELOW = 1 << 20

# Where a piece of evidence comes from; a rule names the sources it reads.
TEXT = frozenset({"scheduler", "stop", "start", "root", "stderr", "check-text"})


@dataclass(frozen=True)
class Rule:
    kind: FailureKind
    name: str
    sources: frozenset[str]
    pattern: re.Pattern[str]


def _rule(kind: FailureKind, name: str, pattern: str, sources: Sequence[str] | frozenset[str] = TEXT) -> Rule:
    return Rule(kind, name, frozenset(sources), re.compile(pattern, re.IGNORECASE | re.MULTILINE))


# Ordered: the first rule that matches a piece of evidence decides its kind.
RULES: tuple[Rule, ...] = (
    # The backend's word on how it ended the job (Slurm's job state, or slurmstepd's line in stderr).
    _rule("timeout", "scheduler time limit", r"\bas (TIMEOUT|DEADLINE)\b|CANCELLED AT \S+ DUE TO TIME LIMIT"),
    _rule(
        "infra",
        "scheduler lost the node or job",
        r"\bas (NODE_FAIL|BOOT_FAIL|PREEMPTED|REVOKED|OUT_OF_MEMORY|CANCELLED)\b|DUE TO (NODE FAILURE|PREEMPTION)"
        r"|srun: error: Node failure|Detected \d+ oom[-_]kill event",
    ),
    _rule("timeout", "harness timeout", r"timed out after", ["timeout"]),
    # Numbers: a loss or gradient that stopped being a number, or a trainer's own divergence guard.
    _rule("numeric", "fail-fast stopped at a bad loss", r"^loss .* at step", ["stop"]),
    _rule(
        "numeric",
        "NaN or inf in training",
        r"\b(loss|grad(ient)?s?( norm)?|logits?)\b[^\n]{0,40}?(\b(is|are|became|was)\s+|[=:]\s*)"
        r"'?(nan|-?inf|non-finite)\b"
        r"|found (a )?NaN in|returned nan values|is non-finite, so it cannot be clipped|non-finite (loss|values?)"
        r"|\bFloatingPointError\b|Minimum loss scale reached|loss scale already at minimum"
        r"|loss (diverged|exploded|is exploding)|Detected (NaN|inf) (loss|gradient)|Detected nan and/or inf values",
    ),
    # The trainer's code on the device: an assert in a kernel, memory it should not touch.
    _rule(
        "code",
        "device-side assert or illegal access",
        r"device-side assert(ion)? triggered|Assertion `[^`]*` failed|an illegal memory access was encountered"
        r"|misaligned address|ncclInvalidUsage|ncclInvalidArgument",
    ),
    # The machine: device memory, a lost or busy device, collectives and their network, ports, disks, host memory.
    _rule(
        "infra",
        "device out of memory",
        r"\b(CUDA|HIP|XPU|MPS backend|NPU) out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED"
        r"|CUDA error: out of memory|Cuda failure 'out of memory'|RESOURCE_EXHAUSTED: Out of memory"
        r"|hipErrorOutOfMemory|cudaErrorMemoryAllocation",
    ),
    _rule(
        "infra",
        "device lost or unavailable",
        r"uncorrectable ECC error|fallen off the bus|GPU is lost|CUDA-capable device\(s\) is/are busy or unavailable"
        r"|no CUDA-capable device is detected|\bXid\b|NVML_ERROR|CUDA error: unspecified launch failure"
        r"|CUDA driver version is insufficient|CUDA error: system not yet initialized|hipErrorNoDevice",
    ),
    _rule(
        "infra",
        "collective timeout",
        r"Watchdog caught collective operation timeout|Timed out waiting \d+ ?ms for (recv|send) operation"
        r"|ProcessGroupGloo.*[Tt]imed out|collective operation timeout|NCCL timeout|Socket Timeout"
        r"|RendezvousTimeoutError|timed out (waiting|after) .*(rendezvous|store|TCPStore|barrier)"
        r"|monitoredBarrier.*timed? ?out",
    ),
    _rule("infra", "port in use", r"Address already in use|EADDRINUSE|errno: 98\b|\[Errno 98\]"),
    _rule(
        "infra",
        "collective network",
        r"NCCL error[^\n]*(unhandled system error|remote process exited|Network|unhandled cuda error|internal error)"
        r"|ncclSystemError|ncclRemoteError|ncclUnhandledCudaError|NET/IB ?: |Connection (closed|reset) by peer"
        r"|RendezvousConnectionError|DistNetworkError|DistStoreError",
    ),
    _rule(
        "infra",
        "disk full or failing",
        r"No space left on device|\[Errno 28\]|Disk quota exceeded|\[Errno 122\]|Input/output error|\[Errno 5\]"
        r"|Stale file handle|PytorchStreamWriter failed writing file",
    ),
    _rule(
        "infra",
        "host out of memory or killed",
        r"Cannot allocate memory|\[Errno 12\]|DefaultCPUAllocator: (can't|not enough memory)|\bMemoryError\b"
        r"|oom[-_ ]kill|Out of memory: Killed process|DataLoader worker \(pid[^)]*\) is killed by signal"
        r"|DataLoader worker \(pid\(s\)[^)]*\) exited unexpectedly|insufficient shared memory|\bBus error\b"
        r"|Signal 9 \(SIGKILL\) received|exitcode\s*:\s*-9\b|^(.*: )?\d* ?Killed\b|Too many open files",
    ),
    # A rank that crashed in native code: the code's fault, whatever torchrun says after it.
    _rule(
        "code",
        "native crash",
        r"Segmentation fault|Signal 11 \(SIGSEGV\)|exitcode\s*:\s*-11\b|Fatal Python error|core dumped",
    ),
    # The trainer raised: the first failing rank's exception that no rule above claims.
    _rule("code", "exception in the run", r".", ["root"]),
    # How the process ended, when nothing it printed said why.
    _rule("infra", "killed (the OOM killer)", r"^SIGKILL$|^exit code 137$", ["signal", "exit"]),
    _rule("infra", "bus error (shared memory)", r"^SIGBUS$|^exit code 135$", ["signal", "exit"]),
    _rule("code", "crashed", r".", ["signal", "exit"]),
    # A run that ended well but failed its checks: the numbers, or what it left behind.
    _rule(
        "numeric",
        "numeric check",
        r"^(.*/)?(loss\.|metrics\.|baseline\.|inference\.perplexity|parity|repeat|reproducible)",
        ["check"],
    ),
    _rule("harness", "the harness's scorer", r"^(.*/)?inference\.scorer$", ["check"]),
    _rule("timeout", "server not healthy in time", r"not healthy within", ["check-text"]),
)


@dataclass(frozen=True)
class Evidence:
    """What a failed run showed, as the rules read it."""

    scheduler: str | None = None
    timed_out: str | None = None
    stopped_by: str | None = None
    start_error: str | None = None
    root: str | None = None
    stderr: str = ""
    signal: str | None = None
    exit: str | None = None
    # (name, what it found) of each failed check, in the order a person reads them.
    checks: tuple[tuple[str, str], ...] = ()

    def pieces(self) -> Iterator[tuple[str, str]]:
        """(source, text) in the order they are decisive."""
        for source, text in (
            ("scheduler", self.scheduler),
            ("timeout", self.timed_out),
            ("stop", self.stopped_by),
            ("start", self.start_error),
            ("root", self.root),
            ("stderr", self.stderr),
            ("signal", self.signal),
            ("exit", self.exit),
        ):
            if text:
                yield source, text
        for name, found in self.checks:
            yield "check", name
            yield "check-text", found


@dataclass(frozen=True)
class Verdict:
    kind: FailureKind
    evidence: str  # the rule and the line it matched, for a person to verify


def classify(evidence: Evidence) -> Verdict:
    """The kind of a failure: the first rule matching the most decisive piece of evidence; `code` if none does."""
    for source, text in evidence.pieces():
        for rule in RULES:
            if source in rule.sources and (match := rule.pattern.search(text)):
                return Verdict(rule.kind, f"{rule.name}: {_line_of(text, match.start())}")
    said = next((text for source, text in evidence.pieces() if source != "check"), "no evidence")
    return Verdict("code", f"no rule matched: {_first_line(said)}")


def _line_of(text: str, at: int) -> str:
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    return _first_line(text[start : end if end != -1 else len(text)])


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= EVIDENCE_LIMIT else line[: EVIDENCE_LIMIT - 1] + "…"


def _stderr_tail(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - TAIL_BYTES))
            return stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _disk_full(folder: Path) -> str:
    """A run that died on a full disk could not write its own error into stderr.log: the disk says it instead."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f"No space left on device: the run directory's disk has {free // 1024} KiB free" if free < FULL_BELOW else ""


def evidence_of(outcome: ProcessOutcome, failed: Sequence[CheckResult], stderr_path: Path) -> Evidence:
    """The evidence of a failed run: how its process ended, its stderr, and the checks it failed.

    A run the harness stopped (timeout, fail-fast) was killed by the harness's own signal, which
    says nothing of the cause; a run whose process ended well is judged by its checks alone.
    """
    stopped = outcome.timed_out or outcome.stopped_by is not None
    ended_badly = outcome.exit_code not in (0, None) or outcome.signal is not None or outcome.start_error is not None
    read_stderr = ended_badly or stopped or outcome.scheduler_reason is not None
    cause = next((c.cause for c in failed if c.cause), None)
    return Evidence(
        scheduler=outcome.scheduler_reason,
        timed_out=outcome.describe() if outcome.timed_out else None,
        stopped_by=outcome.stopped_by,
        start_error=outcome.start_error,
        root=(cause or root_error(stderr_path)) if read_stderr else None,
        stderr=(_stderr_tail(stderr_path) or _disk_full(stderr_path.parent)) if read_stderr else "",
        signal=_signal_name(outcome.signal) if outcome.signal is not None and not stopped else None,
        exit=f"exit code {outcome.exit_code}" if outcome.exit_code not in (0, None) and not stopped else None,
        checks=tuple(
            (c.name, "\n".join(filter(None, (c.found, c.cause))))
            for c in failed
            if c.name.rsplit("/", 1)[-1] not in _PROCESS_CHECKS
        ),
    )


# Checks that restate how the process ended (or what fail-fast stopped it for), which the evidence above holds.
_PROCESS_CHECKS = frozenset({"exit_code", "fail_fast"})


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_run(outcome: ProcessOutcome, failed: Sequence[CheckResult], stderr_path: Path) -> Verdict:
    """The kind of a failed run, from its outcome, its failed checks and its stderr."""
    return classify(evidence_of(outcome, failed, stderr_path))

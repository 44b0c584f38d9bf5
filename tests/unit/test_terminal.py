"""harness.terminal: what the harness prints is masked and survives the end of its reader."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.secrets import Masker, masker_for
from harness.terminal import GuardedStream


class Failing(io.StringIO):
    """A stream whose writes start failing as a reader that went away makes them fail."""

    def __init__(self, error: Exception | None):
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        if self.error is not None:
            raise self.error
        return super().write(text)


@pytest.mark.parametrize(
    "error",
    [
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.EBADF, "Bad file descriptor"),
        ValueError("I/O operation on closed file."),
    ],
    ids=["the reader left (head -1)", "the terminal hung up", "a closed descriptor", "a closed stream"],
)
def test_a_reader_that_went_away_stops_nothing(error: Exception) -> None:
    stream = GuardedStream(Failing(error), Masker(set()))
    assert stream.write("first\n") == len("first\n")
    stream.write("second\n")
    stream.flush()
    assert stream.gone


def test_other_write_errors_are_not_hidden() -> None:
    stream = GuardedStream(Failing(OSError(errno.ENOSPC, "No space left on device")), Masker(set()))
    with pytest.raises(OSError, match="No space"):
        stream.write("x")


def test_everything_written_is_masked_and_the_masker_can_grow() -> None:
    target = io.StringIO()
    stream = GuardedStream(target, masker_for({"HF_TOKEN": "hf_abcdef"}))
    stream.write("env={'HF_TOKEN': 'hf_abcdef'}\n")
    stream.masker = masker_for({"HF_TOKEN": "hf_abcdef"}, {"WANDB_API_KEY": "wandb-123456", "PORT": 1234})
    stream.write("hf_abcdef wandb-123456 1234\n")
    assert target.getvalue() == "env={'HF_TOKEN': '***'}\n*** *** 1234\n"


def test_a_pipe_closed_by_its_reader_sends_the_descriptor_to_devnull() -> None:
    """A real pipe whose reader has gone: the failed write, the buffer and the flush at exit all succeed."""
    code = (
        "import sys; from harness.terminal import guard; from harness.secrets import Masker; "
        "guard(Masker(set())); print('x' * 100000); print('after'); sys.stdout.flush(); open(sys.argv[1], "
        "'w').write(str(sys.stdout.gone))"
    )
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"guard-{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 0, stderr
    assert "BrokenPipe" not in stderr and "Exception ignored" not in stderr
    assert marker.read_text() == "True"
    marker.unlink()


@pytest.mark.parametrize("closed", ["1", "2", "0 1 2"])
def test_closed_standard_descriptors_are_refilled_before_anything_is_opened(closed: str) -> None:
    code = (
        "import os, sys; from harness.terminal import guard; from harness.secrets import Masker; "
        "guard(Masker(set())); f = open(os.devnull); print(f.fileno() > 2, file=sys.__stderr__ or "
        "open(os.devnull, 'w')); sys.exit(0 if f.fileno() > 2 and sys.stdout is not None else 3)"
    )
    redirects = " ".join(f"{fd}>&-" if fd != "0" else "0<&-" for fd in closed.split())
    done = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirects}', "sh", sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=30,
    )
    assert done.returncode == 0

"""Train the tiny Llama on the generated corpus with a plain torch loop.

This is the "system under test" for trainspec: small enough to finish in
seconds on a CPU, yet it does what real training scripts do (seeded data
order, AdamW or SGD with warmup and cosine decay, gradient clipping and
accumulation, torchrun/DDP, live metric logs, save_pretrained checkpoints),
and it can fail on purpose (--fail-at-step, --stop-logging-at,
--fault-sum-grads) so that specs can show they catch it.

Every step trains on one global batch of batch-size x world-size x
grad-accum sequences, drawn in the same order whatever the split: each rank
takes its own consecutive micro-batches of it. So 2 ranks with accumulation 1
and 1 process with accumulation 2 compute the same gradients (parity).

Run it as `python examples/tinylm/train.py --output-dir DIR` or under
`torchrun --nproc-per-node N`. It writes nothing outside --output-dir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The sibling modules are imported by name, so the script works from any cwd
# without being installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.distributed as dist
import transformers
from torch.nn.parallel import DistributedDataParallel
from transformers import get_cosine_schedule_with_warmup
from transformers import logging as hf_logging

from corpus import batches, build_tokenizer, generate_sentences, token_blocks
from model import build_model, count_parameters
from train_args import common_parser, positive_int

RESUME_STATE = "resume_state.pt"


def _seed(text: str) -> int:
    # A seed from the clock makes a run that no other run repeats: what a reproducibility check must catch.
    return time.time_ns() % 2**31 if text == "clock" else int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; every default gives a run of a few seconds on CPU."""
    parser = common_parser(
        __doc__.split("\n\n")[0],
        output_dir_help="folder for logs, versions.json and the checkpoint (created if missing)",
        batch_per="rank",
    )
    parser.add_argument(
        "--grad-accum",
        type=positive_int,
        default=1,
        help="micro-batches of --batch-size accumulated per step on each rank (default: %(default)s)",
    )
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="(default: %(default)s)")
    parser.add_argument(
        "--max-grad-norm",
        type=float,
        default=1.0,
        help="clip the gradient norm to this; 0 turns clipping off (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed for weight init and data order, or `clock` for one from the time (default: %(default)s)",
    )
    parser.add_argument(
        "--log-every",
        type=positive_int,
        default=10,
        help="log every N steps; step 1 and the last step are always logged (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        choices=("jsonl", "forgather", "text"),
        default="jsonl",
        help="jsonl: OUTPUT_DIR/train_log.jsonl; forgather: OUTPUT_DIR/runs/run_N/trainer_logs.json; "
        "text: no log file, only the progress lines on stdout (default: %(default)s)",
    )
    parser.add_argument(
        "--save-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="every N steps, save model, optimizer, schedule and step into OUTPUT_DIR/resume_state.pt",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from OUTPUT_DIR/resume_state.pt (written by --save-every) at the step after it",
    )
    parser.add_argument(
        "--log-name", default="train_log.jsonl", help="file name of the jsonl log in OUTPUT_DIR (default: %(default)s)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto uses CUDA when it is available (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-at-step",
        type=int,
        default=None,
        metavar="N",
        help="fault injection: raise RuntimeError at step N, before its update",
    )
    parser.add_argument(
        "--fault-sum-grads",
        action="store_true",
        help="fault injection: under torchrun, sum the ranks' gradients instead of averaging them",
    )
    parser.add_argument(
        "--stop-logging-at",
        type=int,
        default=None,
        metavar="N",
        help="fault injection: keep training (and printing progress) but write no log-file entries after step N",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but CUDA is not available")
    if args.resume and not (args.output_dir / RESUME_STATE).is_file():
        parser.error(f"--resume: no {RESUME_STATE} in {args.output_dir} (save one with --save-every)")
    return args


@dataclass
class StepRecord:
    """The metrics of one logged step, the same whichever rank computes them."""

    step: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_s: float


class JsonlLog:
    """One JSON object per logged step, one per line.

    Each line is appended and the file closed at once, so a watcher tailing it
    sees every entry as soon as it is logged.
    """

    def __init__(self, output_dir: Path, name: str = "train_log.jsonl") -> None:
        self._path = output_dir / name
        self._path.write_text("", encoding="utf-8")

    def write_step(self, record: StepRecord) -> None:
        entry = {
            "step": record.step,
            "loss": record.loss,
            "learning_rate": record.learning_rate,
            "grad_norm": record.grad_norm,
            "tokens_per_s": record.tokens_per_s,
        }
        with self._path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry) + "\n")

    def write_summary(self, global_step: int, train_runtime: float, train_loss: float) -> None:
        """Write nothing: this format has no summary record."""


class StdoutLog:
    """No log file: the progress lines printed on stdout are the whole log, as many trainers keep it."""

    def write_step(self, record: StepRecord) -> None:
        """Write nothing: the step's line is printed anyway."""

    def write_summary(self, global_step: int, train_runtime: float, train_loss: float) -> None:
        """Write nothing: the summary line is printed anyway."""


class ForgatherLog:
    """A JSON array in Forgather's trainer_logs.json layout.

    The whole array is rewritten through a temporary file and os.replace, so a
    reader never sees half a file, however often it polls.
    """

    def __init__(self, output_dir: Path) -> None:
        runs = output_dir / "runs"
        index = 0
        while (runs / f"run_{index}").exists():  # a reused output dir keeps older runs
            index += 1
        self._path = runs / f"run_{index}" / "trainer_logs.json"
        self._path.parent.mkdir(parents=True)
        self._records: list[dict[str, float | int]] = []

    def _append(self, record: dict[str, float | int]) -> None:
        self._records.append(record)
        temporary = self._path.with_name(self._path.name + ".tmp")
        temporary.write_text(json.dumps(self._records, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self._path)

    def write_step(self, record: StepRecord) -> None:
        self._append(
            {
                "timestamp": time.time(),
                "global_step": record.step,
                "epoch": record.epoch,
                "loss": record.loss,
                "grad_norm": record.grad_norm,
                "learning_rate": record.learning_rate,
            }
        )

    def write_summary(self, global_step: int, train_runtime: float, train_loss: float) -> None:
        self._append({"global_step": global_step, "train_runtime": train_runtime, "train_loss": train_loss})


def setup_device(requested: str) -> tuple[torch.device, int, int]:
    """Pick the device and join the process group when torchrun started us.

    Returns (device, rank, world_size). torchrun sets WORLD_SIZE, RANK and
    LOCAL_RANK; a plain `python train.py` has none of them and runs alone.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        # Binding NCCL to this rank's GPU up front stops it guessing the device.
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return device, rank, world_size


def write_versions(output_dir: Path) -> None:
    """Record the versions actually imported, which may differ from any lock file."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
    }
    (output_dir / "versions.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def train(args: argparse.Namespace, device: torch.device, rank: int, world_size: int) -> None:
    """Run the training loop; only rank 0 writes files or prints."""
    is_main = rank == 0
    if is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_versions(args.output_dir)

    sentences = generate_sentences()
    tokenizer = build_tokenizer(sentences)
    blocks = token_blocks(tokenizer, sentences, args.seq_len)
    micro_batches = world_size * args.grad_accum
    global_batch = args.batch_size * micro_batches
    if len(blocks) < global_batch:
        raise ValueError(f"{len(blocks)} sequences, fewer than one global batch of {global_batch}")
    steps_per_epoch = len(blocks) // global_batch
    data = batches(blocks, global_batch, args.seed)

    torch.manual_seed(args.seed)
    model = build_model(tokenizer, args.seq_len).to(device)
    # DDP averages gradients across ranks, so every rank takes the same step.
    trained = DistributedDataParallel(model) if world_size > 1 else model
    if world_size > 1 and args.fault_sum_grads:
        trained.register_comm_hook(None, _sum_hook)
    optimizer = (
        torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
        if args.optimizer == "adamw"
        else torch.optim.SGD(model.parameters(), lr=args.lr)
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)

    first_step = 1
    if args.resume:
        first_step = load_state(args.output_dir, model, optimizer, scheduler, device) + 1
        # The data order goes on where it stopped: the batches already trained on are drawn again and dropped.
        for _ in range(first_step - 1):
            next(data)

    log: JsonlLog | ForgatherLog | StdoutLog | None = None
    if is_main:
        log = {
            "jsonl": lambda: JsonlLog(args.output_dir, args.log_name),
            "forgather": lambda: ForgatherLog(args.output_dir),
            "text": StdoutLog,
        }[args.log_format]()
        print(
            f"tinylm: {count_parameters(model):,} parameters, vocab {len(tokenizer)}, "
            f"{len(blocks)} sequences of {args.seq_len} tokens per rank, world size {world_size}, device {device}",
            flush=True,
        )

    def writes_log(step: int) -> bool:
        # --stop-logging-at silences the log file alone, like a logger that
        # hangs: training and the stdout progress lines go on.
        return args.stop_logging_at is None or step <= args.stop_logging_at

    tokens_per_step = global_batch * args.seq_len
    loss_sum = torch.zeros((), device=device)  # summed on device: one sync per log, not per step
    steps_in_interval = 0
    total_loss = 0.0
    start = interval_start = time.perf_counter()
    for step in range(first_step, args.max_steps + 1):
        if step == args.fail_at_step:
            raise RuntimeError(f"injected failure at step {step}")
        batch = next(data).to(device)
        mine = batch.view(micro_batches, args.batch_size, -1)[rank * args.grad_accum : (rank + 1) * args.grad_accum]
        for index, micro in enumerate(mine):
            # DDP averages across ranks when the last micro-batch's backward runs; the earlier ones only accumulate.
            last = index == args.grad_accum - 1
            with contextlib.nullcontext() if last or world_size == 1 else trained.no_sync():
                loss = trained(input_ids=micro, labels=micro, use_cache=False).loss
                (loss / args.grad_accum).backward()
            loss_sum += loss.detach()
        # An infinite bound still measures the norm, and scales by exactly 1.
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=args.max_grad_norm or math.inf)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps_in_interval += 1

        if args.save_every and step % args.save_every == 0 and is_main:
            save_state(args.output_dir, step, model, optimizer, scheduler)
        # A resumed run logs on the same steps as an uninterrupted one, each entry the mean of the same steps.
        if step % args.log_every != 0 and step not in (1, args.max_steps):
            continue
        # Every rank reaches this all_reduce at the same steps; the logged loss
        # is the mean over ranks and over the steps since the last entry.
        if world_size > 1:
            dist.all_reduce(loss_sum)
        mean_loss = loss_sum.item() / (steps_in_interval * micro_batches)
        total_loss += mean_loss * steps_in_interval
        now = time.perf_counter()
        record = StepRecord(
            step=step,
            epoch=step / steps_per_epoch,
            loss=mean_loss,
            learning_rate=learning_rate,
            grad_norm=grad_norm.item(),
            tokens_per_s=tokens_per_step * steps_in_interval / (now - interval_start),
        )
        loss_sum.zero_()
        steps_in_interval = 0
        interval_start = now
        if log is not None:
            if writes_log(step):
                log.write_step(record)
            print(
                f"step {step}/{args.max_steps} loss {record.loss:.4f} lr {record.learning_rate:.2e} "
                f"grad_norm {record.grad_norm:.3f} tokens/s {record.tokens_per_s:.0f}",
                flush=True,
            )

    runtime = time.perf_counter() - start
    if log is None:
        return
    train_loss = total_loss / max(1, args.max_steps - first_step + 1)
    if writes_log(args.max_steps):
        log.write_summary(args.max_steps, runtime, train_loss)
    print(f"done: {args.max_steps} steps in {runtime:.2f} s, mean loss {train_loss:.4f}", flush=True)
    if args.save_model:
        checkpoint = args.output_dir / "checkpoint"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)


def _sum_hook(state, bucket):  # noqa: ANN001, ANN201 - DDP checks real annotations; these would be strings here
    """The injected bug: all-reduce the gradients without dividing by the world size (DDP's own hook divides)."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def save_state(
    output_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Everything a resumed run needs, written whole or not at all (a kill mid-save leaves the previous state)."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    temporary = output_dir / (RESUME_STATE + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, output_dir / RESUME_STATE)


def load_state(
    output_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> int:
    """Restore what save_state wrote; returns the step it was saved at."""
    state = torch.load(output_dir / RESUME_STATE, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # transformers 5 draws a progress bar on stderr in save_pretrained; this
    # script prints its own progress and keeps stderr for real problems.
    hf_logging.disable_progress_bar()
    # Ranks on one host share its cores; oversubscribing them slows all ranks down.
    torch.set_num_threads(
        max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    )
    device, rank, world_size = setup_device(args.device)
    try:
        train(args, device, rank, world_size)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()

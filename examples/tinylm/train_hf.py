"""Train the tiny Llama on the generated corpus with transformers' Trainer.

The same model, corpus, optimizer (AdamW, no weight decay, clipping at 1.0)
and warmup-plus-cosine schedule as train.py, but the loop, the logging and
the state file belong to Trainer: specs can check `trainer_state.json`'s
`log_history` exactly as real Trainer users would. Works with transformers
4.57 and 5.x, and writes nothing outside --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The sibling modules are imported by name, so the script works from any cwd
# without being installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from transformers import Trainer, TrainingArguments, default_data_collator, set_seed
from transformers import logging as hf_logging

from corpus import build_tokenizer, generate_sentences, token_blocks
from model import build_model, count_parameters
from train_args import common_parser, positive_int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the shared flags have train.py's defaults."""
    parser = common_parser(
        __doc__.split("\n\n")[0],
        output_dir_help="Trainer's output_dir: trainer_state.json and the checkpoint go here",
        batch_per="device",
    )
    parser.add_argument(
        "--logging-steps",
        type=positive_int,
        default=10,
        help="log every N steps; step 1 is always logged (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for weight init and data order (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Trainer's own bars are off through disable_tqdm; transformers 5 also
    # draws one on stderr in save_pretrained. stderr is kept for real problems.
    hf_logging.disable_progress_bar()
    # The model is built before Trainer seeds anything, so seed here for the init.
    set_seed(args.seed)
    sentences = generate_sentences()
    tokenizer = build_tokenizer(sentences)
    blocks = token_blocks(tokenizer, sentences, args.seq_len)
    # Every row is full-length, so labels are the inputs and no padding is needed.
    dataset = [{"input_ids": row, "labels": row} for row in blocks]
    model = build_model(tokenizer, args.seq_len)
    print(
        f"tinylm: {count_parameters(model):,} parameters, vocab {len(tokenizer)}, "
        f"{len(dataset)} sequences of {args.seq_len} tokens",
        flush=True,
    )

    training_args = TrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_steps,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        seed=args.seed,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        # The rows are full-length already, so stacking them is all that is
        # needed, rather than the padding collator Trainer picks for a tokenizer.
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_state()
    if args.save_model and trainer.is_world_process_zero():
        checkpoint = args.output_dir / "checkpoint"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)


if __name__ == "__main__":
    main()

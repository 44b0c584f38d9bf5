"""Perplexity under a reference language model: the one harness module that imports torch.

The scorer is loaded once per worker process and always on CPU: workers never initialise
CUDA (the devices belong to the runs), and a small reference model scores a few
completions in well under a second.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

DEFAULT_SCORER = "gpt2"


class ScorerUnavailable(Exception):
    """The reference model is not on this machine; the message says where it was looked for."""


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@functools.lru_cache(maxsize=4)
def load_scorer(name_or_path: str):
    """(model, tokenizer) from a local path or the local Hugging Face cache; never downloads."""
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as error:
        raise ScorerUnavailable(
            f"perplexity needs torch and transformers in the harness's environment ({error})"
        ) from None
    # transformers 5 draws a loading bar on stderr; the harness's stderr is for problems.
    hf_logging.disable_progress_bar()
    is_path = Path(name_or_path).expanduser().exists()
    where = str(Path(name_or_path).expanduser()) if is_path else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError) as error:
        looked = (
            f"the path {where}"
            if is_path
            else f"the local Hugging Face cache ({_cache_dir()}) and as a path relative to {os.getcwd()}"
        )
        raise ScorerUnavailable(
            f"scorer model {name_or_path!r} is not available: looked in {looked} ({str(error).splitlines()[0][:200]}). "
            "Nothing is downloaded at run time: point the harness at a local model with `inference.scorer: "
            "PATH` in the spec, "
            "`--scorer PATH`, or TRAINSPEC_SCORER=PATH (any causal LM saved with save_pretrained)"
        ) from None
    model.eval()
    return model, tokenizer


def score(model, tokenizer, text: str) -> tuple[float, int]:
    """(perplexity, scored tokens) of `text`: exp of the mean next-token cross-entropy.

    The scorer's bos is prepended when it has one, so the first word is scored too (GPT-2
    and the example's scorer both use their end-of-text token as bos). The perplexity is
    inf when there is nothing to score or the loss is too large for exp.
    """
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if tokenizer.bos_token_id is not None and (ids.shape[1] == 0 or ids[0, 0].item() != tokenizer.bos_token_id):
        ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], dim=1)
    if ids.shape[1] < 2:
        return math.inf, 0
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    return (math.exp(loss) if loss < 700 else math.inf), ids.shape[1] - 1


def perplexity(name_or_path: str, text: str) -> float:
    """Perplexity of `text` under the named scorer, loaded once per process."""
    model, tokenizer = load_scorer(name_or_path)
    return score(model, tokenizer, text)[0]

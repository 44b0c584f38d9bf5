"""A Llama-architecture causal LM small enough to train on a laptop CPU.

The model is built from a config in code rather than downloaded, so tests run
offline and the architecture is the one real projects fine-tune.
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def build_model(tokenizer: PreTrainedTokenizerFast, seq_len: int) -> LlamaForCausalLM:
    """Return a freshly initialised ~0.35 M parameter Llama for `tokenizer`.

    Weights come from torch's global RNG, so seed it first for a reproducible
    start. The special-token ids are copied from the tokenizer so that a saved
    checkpoint generates and pads correctly when reloaded.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max(seq_len, 128),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def count_parameters(model: LlamaForCausalLM) -> int:
    """Return the number of trainable parameters (reported at start-up)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""A tiny, deterministic English-like corpus and its word-level tokenizer.

Everything is generated locally from a fixed seed, so a training run never
downloads data and two runs see exactly the same tokens. Word choices are
skewed (a few frequent words, some rare ones), subjects are animate,
adjectives agree with their noun's class and "a" becomes "an" before a
vowel: real structure to learn, so the loss falls quickly from about
ln(vocab size) = 3.6 towards the grammar's entropy of about 1.07 nats/token.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

# The corpus is fixed whatever the training seed, so every run (and every
# saved checkpoint) shares one vocabulary.
CORPUS_SEED = 1234
NUM_SENTENCES = 4000

SPECIAL_TOKENS = ("<unk>", "<pad>", "<bos>", "<eos>")

# (word, weight) pairs: skewed weights keep the entropy, and so the lowest
# reachable loss, low enough that the default 150 steps nearly reach it.
DETERMINERS = (("the", 12), ("a", 6), ("every", 1), ("my", 1))
ANIMATE = (("cat", 12), ("dog", 8), ("bird", 2), ("girl", 1), ("boy", 1))
THINGS = (("ball", 10), ("box", 4), ("tree", 1), ("house", 1))
ANIMATE_ADJECTIVES = (("small", 8), ("happy", 2), ("old", 1), ("quick", 1))
THING_ADJECTIVES = (("red", 8), ("big", 4), ("blue", 1), ("green", 1))
TRANSITIVE = (("sees", 8), ("likes", 4), ("chases", 1), ("finds", 1))
INTRANSITIVE = (("sleeps", 6), ("runs", 2), ("sits", 1))
PREPOSITIONS = (("near", 6), ("under", 2), ("behind", 1))


def _pick(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    words, weights = zip(*table)
    return rng.choices(words, weights=weights)[0]


def _noun_phrase(rng: random.Random, animate: bool) -> list[str]:
    # Adjectives agree with the noun class, so the adjective predicts the noun.
    nouns, adjectives = (ANIMATE, ANIMATE_ADJECTIVES) if animate else (THINGS, THING_ADJECTIVES)
    phrase = [_pick(rng, DETERMINERS)]
    if rng.random() < 0.3:
        phrase.append(_pick(rng, adjectives))
    phrase.append(_pick(rng, nouns))
    # "a old cat" would teach the model bad English; the article agrees instead.
    if phrase[0] == "a" and phrase[1][0] in "aeiou":
        phrase[0] = "an"
    return phrase


def _sentence(rng: random.Random) -> str:
    words = _noun_phrase(rng, animate=True)
    if rng.random() < 0.6:
        words += [_pick(rng, TRANSITIVE)] + _noun_phrase(rng, animate=rng.random() < 0.3)
    else:
        words.append(_pick(rng, INTRANSITIVE))
        if rng.random() < 0.5:
            words += [_pick(rng, PREPOSITIONS)] + _noun_phrase(rng, animate=False)
    return " ".join(words + ["."])


def generate_sentences(num_sentences: int = NUM_SENTENCES, seed: int = CORPUS_SEED) -> list[str]:
    """Return `num_sentences` grammar sentences, the same ones for the same seed."""
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(num_sentences)]


def build_tokenizer(sentences: list[str]) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer over `sentences`.

    Special tokens come first and words follow in sorted order, so the ids do
    not depend on set iteration order or on how often words occur. Only the
    inputs a Llama takes are returned: token_type_ids would break generate().
    """
    words = sorted({word for sentence in sentences for word in sentence.split()})
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_input_names=["input_ids", "attention_mask"],
    )


def token_blocks(tokenizer: PreTrainedTokenizerFast, sentences: list[str], seq_len: int) -> torch.Tensor:
    """Join the sentences with eos and cut the token stream into `seq_len` rows.

    Blocks cross sentence boundaries on purpose (as in LM pretraining): the
    model must learn that eos is followed by a new sentence. The ragged tail
    is dropped so that every row is full and no padding is needed.
    """
    stream: list[int] = []
    for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    num_blocks = len(stream) // seq_len
    return torch.tensor(stream[: num_blocks * seq_len], dtype=torch.long).view(num_blocks, seq_len)


def batches(blocks: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Yield `batch_size` rows at a time, reshuffled every epoch, for ever.

    A private generator makes the order depend on `seed` alone, not on how
    much of torch's global random state the model has used.
    """
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(blocks), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield blocks[order[start : start + batch_size]]

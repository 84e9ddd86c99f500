"""The corpus tokenizer: byte-level BPE trained with `tokenizers` on the rendered data, saved as a fast tokenizer.

Its pre-tokenizer cuts text before every space, between letters and anything else, and around every digit and
punctuation mark, and BPE never merges across those cuts. Every piece boundary of a rendering (the pieces start
with a space or punctuation and end with a letter, digit or punctuation) is such a cut, so
``encode(joined text) == concat(encode(piece) for piece)``: what makes exact spans and fast composition
possible (tested).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .population import BioDPopulation, Population
from .render import DOMAIN_TOKEN, EOS_TOKEN, PAD_TOKEN, Renderer, alphabet_token, piece_book

PRETOKENIZE_PATTERN = r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]|\s+"
DEFAULT_VOCAB_SIZE = 4096


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(
    population: Population,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    sample_biographies: int = 20_000,
    seed: int = 0,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``population``'s pieces and a sample of its renderings.

    Special tokens: EOS (also BOS) ``<|endoftext|>``, pad ``<|pad|>``, the domain token ``<|domain|>``; for
    bioD, one dedicated token per alphabet symbol (``<t0>``, ``<t1>``, ...). ``vocab_size`` counts the BPE
    vocabulary (256 byte symbols + merges + special tokens); unused rows do not count in the paper's P.
    """
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 byte symbols + specials + merges), got {vocab_size}")
    special = [EOS_TOKEN, PAD_TOKEN, DOMAIN_TOKEN]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    renderer_text = _TextOnlyRenderer(population)

    def corpus():
        yield from (s for s in renderer_text._strings if s)
        # a sample of joined renderings teaches frequent words and their real frequencies
        rng = np.random.default_rng(seed)
        n = min(sample_biographies, 50 * population.n_people)
        for start in range(0, n, 1000):
            people = rng.integers(0, population.n_people, size=min(1000, n - start))
            yield from renderer_text.texts(people, rng.integers(0, 1 << 30, size=people.size))

    tok.train_from_iterator(corpus(), trainer=trainer)
    if isinstance(population, BioDPopulation):
        tok.add_tokens([alphabet_token(i) for i in range(population.alphabet)])
    return _wrap(tok)


def fit_tokenizer(tokenizer: PreTrainedTokenizerFast, pieces: Iterable[str]) -> PreTrainedTokenizerFast:
    """The project tokenizer cut down to the tokens that ``pieces`` (the piece strings a data set can render) use.

    The fitted tokenizer segments every word of ``pieces`` exactly as ``tokenizer`` does (checked here, word by
    word), so renderings hold the same tokens, P by the paper's rule is unchanged, and the model's embedding and
    head lose only rows no biography can produce (for the calibration data: 5,096 → 2,749 rows). Its vocabulary:
    the special tokens (same ids), the 256 byte symbols (any other text still encodes, byte by byte), the
    tokens of the words, and the added tokens (bioD alphabet symbols) that occur among ``pieces``. A BPE with
    ``ignore_merges`` takes a word found in the vocabulary whole; the merges kept are those that build the
    tokens of words BPE splits into several (none for the shipped pools at the default size).
    """
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    old_vocab: dict[str, int] = model["vocab"]
    backend = tokenizer.backend_tokenizer
    added = {t["content"]: t for t in state["added_tokens"]}
    special = [t["content"] for t in state["added_tokens"] if t["special"]]
    words: set[str] = set()
    used_added: set[str] = set()
    for piece in pieces:
        if piece in added:
            used_added.add(piece)
        else:
            words.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(piece))
    segments = {w: [t.value for t in backend.model.tokenize(w)] for w in words}
    needed = {t for seg in segments.values() for t in seg}
    # words BPE splits into several tokens keep every merge that can build those tokens, and its parts
    pairs = [m if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    parents: dict[str, list[str]] = {}
    for a, b in pairs:
        parents.setdefault(a + b, []).extend((a, b))
    chain = [t for seg in segments.values() if len(seg) > 1 for t in seg]
    built = set(chain)
    while chain:
        for parent in parents.get(chain.pop(), ()):
            if parent not in built:
                built.add(parent)
                chain.append(parent)
    needed |= built
    keep = set(special) | set(pre_tokenizers.ByteLevel.alphabet()) | needed
    order = sorted(keep, key=lambda t: old_vocab[t])
    vocab = {t: i for i, t in enumerate(order)}
    merges = [[a, b] for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
    model.update(vocab=vocab, merges=merges, ignore_merges=True)
    extra = [t for t in state["added_tokens"] if not t["special"] and t["content"] in used_added]
    for i, t in enumerate(extra):
        t["id"] = len(vocab) + i
    for t in state["added_tokens"]:
        if t["special"]:
            t["id"] = vocab[t["content"]]
    kept_added = [t for t in state["added_tokens"] if t["special"]] + extra
    state["added_tokens"] = kept_added
    fitted = _wrap(Tokenizer.from_str(json.dumps(state)))
    new_model = fitted.backend_tokenizer.model
    wrong = [w for w, seg in segments.items() if [t.value for t in new_model.tokenize(w)] != seg]
    if wrong:
        raise RuntimeError(f"fitting the tokenizer changed how {len(wrong)} words split (e.g. {wrong[:3]}): "
                           "train without fit_vocabulary")
    return fitted


class _TextOnlyRenderer(Renderer):
    """A renderer used before a tokenizer exists: piece strings only, for the training corpus."""

    def __init__(self, population: Population):  # noqa: D107 - no token table needed
        self.population, self.simple, self.domain_token = population, False, False
        self.book = piece_book(population)
        skip = set(self.book.ranges.get("alphabet", np.empty(0, np.int64)).tolist()) | {0, 1, 2}
        self._strings = ["" if i in skip else s for i, s in enumerate(self.book.strings)]

    def texts(self, people: np.ndarray, exposures: np.ndarray) -> list[str]:
        """Joined piece strings without special or alphabet tokens (those are added tokens, not BPE)."""
        slots = self._piece_slots(people, exposures)[0]
        return ["".join(self._strings[i] for i in row) for row in slots]

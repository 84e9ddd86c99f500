"""KnowledgeData: one population + its tokenizer + rendering options, saved and loaded as a folder.

This is the handle the rest of the package passes around: training streams, evaluation renderings and the
bit budget all derive from it, so a model directory that carries ``knowledge_data.json`` and the tokenizer
can be evaluated later without re-stating how its data was made.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..bits import KnowledgeBits, biod_bits_max, bios_bits_max
from .offset_spans import OffsetRenderer
from .population import BioDPopulation, Population, population_from_config
from .render import EOS_TOKEN, Renderer
from .stream import JunkConfig, PackedStream, junk_renderer_for
from .tokenizer import DEFAULT_VOCAB_SIZE, fit_tokenizer, train_tokenizer

CONFIG_NAME = "knowledge_data.json"


def is_project_tokenizer(tokenizer) -> bool:
    """Whether ``tokenizer`` is hf-capacity's corpus tokenizer (it has the ``<|endoftext|>`` special token whose
    pieces compose exactly), as opposed to a user's tokenizer."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return EOS_TOKEN in vocab and tokenizer.eos_token == EOS_TOKEN


@dataclass
class KnowledgeData:
    """A synthetic knowledge data set: population, tokenizer and rendering options.

    ``simple``: bioS-simple (one rendering per person; every exposure is a pass over the same texts).
    ``domain_token``: start every useful biography with the domain token (junk-data mitigation).
    ``junk``: a share of the training windows from junk people (``JunkConfig``), bioS or bioD.
    """

    population: Population
    tokenizer: object
    simple: bool = False
    domain_token: bool = False
    junk: JunkConfig | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        population: Population,
        *,
        simple: bool = False,
        domain_token: bool = False,
        junk: JunkConfig | None = None,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        fit_vocabulary: bool = False,
        tokenizer=None,
    ) -> KnowledgeData:
        """Bundle ``population`` with a tokenizer: by default one trained on the population (the project
        tokenizer: composed rendering, exact spans, fastest); or ``tokenizer``, any ``PreTrainedTokenizerFast``
        (a user's model's own, e.g. GPT-2's or Llama's), whose spans come from offset mappings
        (``hf_capacity.data.offset_spans``: a span is every token overlapping the value's characters).

        ``vocab_size``: the BPE vocabulary trained on the population. ``fit_vocabulary`` (project tokenizer
        only): then keep only the tokens the renderings can produce, plus the special tokens and the 256 byte
        symbols (``fit_tokenizer``): the same tokens in every biography and the same P, with a smaller embedding
        and head, so training is faster. New people rendered later with a fitted tokenizer (adapter runs) are
        split into byte tokens where their words were not in the data it was fitted to.

        ``junk``: mix in never-repeated people of the population's own format (bioS or bioD; see
        ``hf_capacity.data.stream.junk_population``); they count in neither ``bits_max`` nor P."""
        if tokenizer is None:
            tokenizer = train_tokenizer(population, vocab_size)
            if fit_vocabulary:
                draft = cls(population, tokenizer, simple, domain_token, junk)
                pieces = draft.renderer.used_piece_strings()
                if draft.junk_renderer is not None:
                    pieces += draft.junk_renderer.used_piece_strings()
                tokenizer = fit_tokenizer(tokenizer, pieces)
        elif not is_project_tokenizer(tokenizer) and junk is not None:
            raise ValueError("junk mixing needs the project tokenizer (leave tokenizer=None)")
        return cls(population, tokenizer, simple, domain_token, junk)

    # ------------------------------------------------------------------ derived
    @cached_property
    def renderer(self) -> Renderer:
        """The composed renderer for the project tokenizer, the offset-mapping one for any other tokenizer."""
        kind = Renderer if is_project_tokenizer(self.tokenizer) else OffsetRenderer
        return kind(self.population, self.tokenizer, simple=self.simple, domain_token=self.domain_token)

    @property
    def pad_token_id(self) -> int:
        """Id used to pad windows and evaluation batches: the tokenizer's pad token, else its EOS token."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.renderer.eos_token_id

    @cached_property
    def junk_renderer(self) -> Renderer | None:
        if self.junk is None or self.junk.fraction == 0:
            return None
        return junk_renderer_for(self.renderer, self.tokenizer, self.junk)

    @property
    def family(self) -> str:
        if isinstance(self.population, BioDPopulation):
            return "bioD"
        return "bioS-simple" if self.simple else "bioS"

    def bits_max(self) -> KnowledgeBits:
        """Knowledge in the data set in bits (what a perfect model would store), by term."""
        if isinstance(self.population, BioDPopulation):
            return biod_bits_max(self.population.shape)
        return bios_bits_max(self.population.n_people)

    @cached_property
    def _used_token_ids(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.renderer.used_token_ids().tolist())))

    def used_token_ids(self) -> list[int]:
        """Token ids of the useful people's biographies: the embedding rows the paper's P counts (computed once:
        it scans the whole population).

        Junk people are left out, as they are of ``bits_max``: a run with junk has the same P as the run without
        (in the paper every junk token also occurs in the useful data, so its P does not depend on the junk; here a
        small useful population may leave some pool names to the junk alone). ``training_token_ids`` adds them."""
        return list(self._used_token_ids)

    @cached_property
    def _training_token_ids(self) -> tuple[int, ...]:
        if self.junk_renderer is None:
            return self._used_token_ids
        return tuple(sorted(set(self._used_token_ids) | set(self.junk_renderer.used_token_ids().tolist())))

    def training_token_ids(self) -> list[int]:
        """Token ids the training stream can hold: ``used_token_ids`` and the junk people's tokens."""
        return list(self._training_token_ids)

    def stream(self, exposures: int, context_length: int = 512, **kwargs) -> PackedStream:
        """The training stream: ``exposures`` exposures of every person, packed (see ``PackedStream``)."""
        return PackedStream(
            self.renderer,
            exposures,
            context_length,
            seed=self.population.seed,
            junk=self.junk,
            junk_renderer=self.junk_renderer,
            pad_token_id=self.pad_token_id,
            **kwargs,
        )

    # ------------------------------------------------------------------ persistence
    def to_config(self) -> dict:
        return {
            "population": self.population.to_config(),
            "simple": self.simple,
            "domain_token": self.domain_token,
            "junk": None if self.junk is None else {"fraction": self.junk.fraction, "n_people": self.junk.n_people},
            **self.extra,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``knowledge_data.json`` and the tokenizer files into ``directory``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.to_config(), indent=2) + "\n")
        self.tokenizer.save_pretrained(path)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> KnowledgeData:
        """Load what ``save`` wrote (a data folder, or a model folder trained with hf-capacity).

        Reads only ``knowledge_data.json`` and the tokenizer files: never the model's ``config.json`` (so a
        model folder with remote code loads without a ``trust_remote_code`` prompt or model-type warnings)."""
        from transformers import PreTrainedTokenizerFast

        path = Path(directory)
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{path} has no {CONFIG_NAME}: pass a folder written by `hf-capacity data generate` or "
                "`hf-capacity train` (or KnowledgeData.save)"
            )
        config = json.loads(config_file.read_text())
        population = population_from_config(config.pop("population"))
        junk = config.pop("junk", None)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
        simple, domain = config.pop("simple", False), config.pop("domain_token", False)
        return cls(population, tokenizer, simple, domain, JunkConfig(**junk) if junk else None, extra=config)

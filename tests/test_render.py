"""Rendering: templates, composition equals tokenizing the text, exact spans, determinism per exposure."""

import numpy as np
import pytest

from hf_capacity.data import BioDPopulation, BioSPopulation, KnowledgeData, evaluation_exposure, load_templates
from hf_capacity.data.population import BIOS_ATTRIBUTES


def decode_span(tokenizer, batch, b, span):
    start, length = span
    return tokenizer.decode(batch.biography(b)[start : start + length])


def test_every_attribute_has_many_templates():
    templates = load_templates()
    assert set(templates) == set(BIOS_ATTRIBUTES)
    for attribute, items in templates.items():
        assert len(items) >= 40, attribute
        assert len({(t.prefix, t.suffix) for t in items}) == len(items)


def test_composed_tokens_equal_tokenizing_the_text(bios_data):
    people = np.arange(300)
    batch = bios_data.renderer.render(people, np.arange(300) * 7)
    texts = bios_data.renderer.render_text(people, np.arange(300) * 7)
    encoded = bios_data.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert all(batch.biography(b).tolist() == encoded[b] for b in range(300))


def test_every_piece_tokenizes_the_same_inside_a_text(bios_data):
    # the property behind exact spans, piece by piece: encode(a + b) == encode(a) + encode(b)
    tok, strings = bios_data.tokenizer, bios_data.renderer.book.strings[3:]

    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    for left, right in zip(strings, strings[1:] + strings[:1]):
        assert enc(left + right) == enc(left) + enc(right), (left, right)


def test_spans_hold_exactly_the_names_and_values(bios_data):
    tok, pop = bios_data.tokenizer, bios_data.population
    batch = bios_data.renderer.render(np.arange(20), 3)
    for b in range(20):
        facts = pop.person(b)
        assert batch.biography(b)[0] == tok.eos_token_id
        assert decode_span(tok, batch, b, batch.name[b]) == facts["name"]
        assert batch.name[b, 0] == 1  # right after EOS: the name opens the paragraph
        assert decode_span(tok, batch, b, batch.pronoun[b]) == {"male": " He", "female": " She"}[facts["gender"]]
        for a, attribute in enumerate(BIOS_ATTRIBUTES):
            assert decode_span(tok, batch, b, batch.values[b, a]) == " " + facts[attribute]


def test_bios_renders_freshly_per_exposure_and_deterministically(bios_data):
    r = bios_data.renderer
    first = r.render_text(np.array([5]), 0)[0]
    assert r.render_text(np.array([5]), 0)[0] == first
    others = {r.render_text(np.array([5]), e)[0] for e in range(1, 30)}
    assert len(others) == 29 and first not in others
    sentences = first.replace("<|endoftext|>", "").split(". ")
    assert len(sentences) == 6  # one sentence per attribute


def test_bios_simple_renders_each_person_once(bios_data):
    simple = KnowledgeData(bios_data.population, bios_data.tokenizer, simple=True).renderer
    texts = {simple.render_text(np.array([5]), e)[0] for e in [0, 1, 99, evaluation_exposure()]}
    assert len(texts) == 1


def test_domain_token_follows_eos_and_shifts_spans(bios_data):
    r = KnowledgeData(bios_data.population, bios_data.tokenizer, domain_token=True).renderer
    batch = r.render(np.arange(3), 0)
    assert batch.biography(0)[1] == r.domain_token_id
    assert batch.name[0, 0] == 2
    assert decode_span(bios_data.tokenizer, batch, 0, batch.name[0]) == bios_data.population.person(0)["name"]


def test_used_tokens_are_exactly_those_that_occur(bios_data):
    used = set(bios_data.renderer.used_token_ids().tolist())
    batch = bios_data.renderer.render(np.repeat(np.arange(300), 20), np.arange(6000))
    seen = set(np.unique(batch.tokens).tolist())
    assert seen <= used
    assert len(used - seen) < 0.05 * len(used)  # only rare template pieces can be missing from a sample
    assert bios_data.tokenizer.pad_token_id not in used


def test_biod_rendering_spans_and_composition(biod_data):
    tok, pop, r = biod_data.tokenizer, biod_data.population, biod_data.renderer
    people = np.arange(10)
    batch = r.render(people, 2)
    encoded = tok(r.render_text(people, 2), add_special_tokens=False)["input_ids"]
    assert all(batch.biography(b).tolist() == encoded[b] for b in range(10))
    alphabet_ids = tok.convert_tokens_to_ids([f"<t{i}>" for i in range(pop.alphabet)])
    for b in range(10):
        bio = batch.biography(b)
        for k in range(pop.n_attributes):
            start, length = batch.values[b, k]
            expected = pop.chunks[k][pop.values(np.array([b]))[0, k]].ravel()
            assert bio[start : start + length].tolist() == [alphabet_ids[i] for i in expected]
            f_start, f_len = batch.first_chunk[b, k]
            assert f_start == start and f_len == pop.chunk_length
    orders = {tuple(t.split("ID ")[1][0] for _ in [0]) for t in r.render_text(np.zeros(20, int), np.arange(20))}
    assert len(orders) > 1  # the first sentence's attribute changes with the exposure


def test_bad_tokenizer_is_rejected(bios_data):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    plain = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]")
    with pytest.raises(ValueError, match="no eos_token"):  # a user's tokenizer: spans by offsets, which need EOS
        KnowledgeData(bios_data.population, plain).renderer


def ids_of_every_rendering(data: KnowledgeData, exposures: int) -> set[int]:
    people = np.arange(data.population.n_people)
    batch = data.renderer.render(np.repeat(people, exposures), np.tile(np.arange(exposures), len(people)))
    return set(np.unique(batch.tokens).tolist())


@pytest.mark.parametrize("n_people, simple, exposures",
                         [(3, False, 1500), (40, False, 200), (5, True, 1), (100, True, 1)])
def test_used_tokens_equal_the_ids_of_every_bios_rendering(n_people, simple, exposures):
    # bioS draws its templates afresh per exposure (3000+ renderings reach every one of the ~50 templates of
    # each attribute); bioS-simple renders each person one way, so only those templates count
    data = KnowledgeData.create(BioSPopulation(n_people=n_people, seed=n_people), simple=simple, vocab_size=600)
    assert set(data.renderer.used_token_ids().tolist()) == ids_of_every_rendering(data, exposures)


@pytest.mark.parametrize("K, C, D, L, T", [(1, 16, 50, 1, 60), (1, 2, 10, 3, 12), (2, 1, 5, 2, 8), (4, 2, 30, 3, 12)])
def test_used_tokens_equal_the_ids_of_every_biod_rendering(K, C, D, L, T):
    population = BioDPopulation(n_people=25, n_attributes=K, chunks_per_value=C, diversity=D, chunk_length=L,
                                alphabet=T, seed=K + C)
    data = KnowledgeData.create(population, vocab_size=600)
    assert set(data.renderer.used_token_ids().tolist()) == ids_of_every_rendering(data, exposures=6)

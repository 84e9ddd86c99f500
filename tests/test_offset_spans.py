"""Knowledge data with a user's own tokenizer: spans from offset mappings, for tokenizers not trained on our pieces."""

import email
import json
import logging
import os

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_capacity.data import BioDPopulation, BioSPopulation, KnowledgeData
from hf_capacity.data.population import BIOS_ATTRIBUTES


def english_text() -> list[str]:
    """Ordinary English prose that ships with Python (module docs), nothing from our pools or templates."""
    docs = [m.__doc__ or "" for m in (email, json, logging, os, np)]
    lines = [line.strip() for doc in docs for line in doc.splitlines() if len(line.split()) > 3]
    return lines * 3


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """GPT-2-style: byte-level pre-tokenizer, BPE; merges attach the leading space to the next word."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(english_text(), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")


def metaspace_unigram() -> PreTrainedTokenizerFast:
    """SentencePiece-style: Metaspace pre-tokenizer ("▁" for spaces), Unigram model."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(english_text(), trainers.UnigramTrainer(
        vocab_size=500, special_tokens=["<unk>", "</s>"], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


TOKENIZERS = {"byte-level BPE": byte_level_bpe, "Metaspace Unigram": metaspace_unigram}


def covered_by_exactly_the_overlapping_tokens(text, token_chars, span, start, end):
    """The span's tokens cover characters [start, end) and each of them overlaps them (no extra token)."""
    first, count = span[0] - 1, span[1]  # token 0 of a biography is EOS, which has no characters
    chars = token_chars[first : first + count]
    assert chars[0][0] <= start and chars[-1][1] >= end, (text[start:end], text[chars[0][0]:chars[-1][1]])
    assert chars[0][1] > start and chars[-1][0] < end


@pytest.mark.parametrize("name", TOKENIZERS)
def test_bios_spans_hold_every_persons_name_values_and_pronoun(name):
    tokenizer = TOKENIZERS[name]()
    data = KnowledgeData.create(BioSPopulation(n_people=40, seed=1), tokenizer=tokenizer)
    people = np.arange(40)
    batch = data.renderer.render(people, exposures=3)
    texts = data.renderer.render_text(people, 3)
    for b, text in enumerate(texts):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert batch.biography(b).tolist() == [tokenizer.eos_token_id, *encoded["input_ids"]]
        person = data.population.person(b)
        searched = [(person["name"], batch.name[b]), ("He" if person["gender"] == "male" else "She", batch.pronoun[b])]
        searched += [(person[a], batch.values[b, i]) for i, a in enumerate(BIOS_ATTRIBUTES)]
        for value, span in searched[:1] + searched[2:]:
            start = text.index(value)  # each value occurs once per biography, at its sentence
            covered_by_exactly_the_overlapping_tokens(text, encoded["offset_mapping"], span, start, start + len(value))
        second_sentence = text.index(". ") + 2
        covered_by_exactly_the_overlapping_tokens(text, encoded["offset_mapping"], batch.pronoun[b], second_sentence,
                                                  second_sentence + len(searched[1][0]))


def test_some_tokens_really_straddle_value_boundaries():
    # the rule matters: with a tokenizer not trained on our pieces, tokens cross the edges of values
    tokenizer = byte_level_bpe()
    data = KnowledgeData.create(BioSPopulation(n_people=40, seed=1), tokenizer=tokenizer)
    texts = data.renderer.render_text(np.arange(40), 0)
    straddling = 0
    for b, text in enumerate(texts):
        person = data.population.person(b)
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for attribute in BIOS_ATTRIBUTES:
            start = text.index(person[attribute])
            end = start + len(person[attribute])
            straddling += sum(1 for s, e in offsets if (s < start < e) or (s < end < e))
    assert straddling > 0


@pytest.mark.parametrize("name", TOKENIZERS)
def test_biod_spans_and_a_save_load_round_trip(name, tmp_path):
    tokenizer = TOKENIZERS[name]()
    population = BioDPopulation(n_people=20, n_attributes=2, chunks_per_value=2, diversity=10, chunk_length=2,
                                alphabet=12, seed=0)
    data = KnowledgeData.create(population, tokenizer=tokenizer)
    batch = data.renderer.render(np.arange(20), 1)
    assert batch.values.shape == (20, 2, 2) and (batch.first_chunk[..., 1] <= batch.values[..., 1]).all()
    data.save(tmp_path)
    loaded = KnowledgeData.load(tmp_path)
    assert type(loaded.renderer).__name__ == "OffsetRenderer"
    assert loaded.renderer.render(np.arange(20), 1).tokens.tolist() == batch.tokens.tolist()


def test_used_tokens_of_a_foreign_tokenizer_cover_the_training_stream():
    data = KnowledgeData.create(BioSPopulation(n_people=30, seed=2), tokenizer=byte_level_bpe())
    used = set(data.used_token_ids())
    windows = data.stream(6, 128).to_dataset(progress=False)
    stream_ids = {t for row, mask in zip(windows["input_ids"], windows["attention_mask"])
                  for t, m in zip(row, mask) if m}
    assert stream_ids <= used and len(used) < len(data.tokenizer)


def test_a_slow_or_eos_less_tokenizer_is_refused_clearly():
    tokenizer = byte_level_bpe()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="no eos_token"):
        KnowledgeData.create(BioSPopulation(n_people=5, seed=0), tokenizer=tokenizer).renderer


def per_person_losses(model, tokenizer, text, person):
    """A plain loop's p1 and p2 terms for one biography: find each value's characters in the text, take the tokens
    that overlap them, sum their next-token losses (nats). Independent of the renderer's span bookkeeping."""
    import torch

    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([[tokenizer.eos_token_id, *encoded["input_ids"]]])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    token_loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")  # loss of token i+1

    def span_loss(start, end):
        hits = [i + 1 for i, (s, e) in enumerate(encoded["offset_mapping"]) if s < end and e > start]
        return float(sum(token_loss[i - 1] for i in hits))

    name = span_loss(0, len(person["name"]))
    values = 0.0
    for attribute in ("birth_date", "birth_city", "university", "major", "employer"):  # working city is out
        start = text.index(person[attribute])
        values += span_loss(start, start + len(person[attribute]))
    pronoun = "He" if person["gender"] == "male" else "She"
    start = text.index(". ") + 2
    values += span_loss(start, start + len(pronoun))
    return name, values


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_bits_of_a_trained_stock_model_match_a_plain_per_person_loop(family):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from hf_capacity.evaluation import evaluate_knowledge
    from hf_capacity.params import count_parameters

    tokenizer = byte_level_bpe()
    data = KnowledgeData.create(BioSPopulation(n_people=24, seed=3), tokenizer=tokenizer)
    torch.manual_seed(0)
    if family == "llama":  # untied input and output embeddings
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=512, tie_word_embeddings=False))
    else:  # tied
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=512))
    windows = data.stream(20, 128).to_dataset(progress=False).with_format("torch")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for start in range(0, len(windows), 8):  # a real, short training run
        batch = windows[start : start + 8]
        model(input_ids=batch["input_ids"].long(), labels=batch["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    report = evaluate_knowledge(model, data, progress=False)
    texts = data.renderer.render_text(np.arange(24), -1)  # the evaluation rendering
    losses = np.array([per_person_losses(model, tokenizer, t, data.population.person(b)) for b, t in enumerate(texts)])
    assert report.p1 == pytest.approx(losses[:, 0].mean(), rel=1e-5)
    assert report.p2 == pytest.approx(losses[:, 1].mean(), rel=1e-5)
    used = len(data.used_token_ids())
    unused_rows = (len(tokenizer) - used) * 32 * (2 if family == "llama" else 1)
    assert count_parameters(model, data.used_token_ids()).paper_params == model.num_parameters() - unused_rows
    assert report.num_params.paper_params == model.num_parameters() - unused_rows

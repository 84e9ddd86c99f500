"""KnowledgeData saved and loaded as a folder: a data folder or a model folder with remote code."""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hf_capacity.models  # noqa: F401  (registers the families, so save_pretrained writes their code)
from hf_capacity.data import BioDPopulation, BioSPopulation, KnowledgeData
from hf_capacity.training import CapacityTrainingConfig, build_model


def test_loading_the_data_of_a_model_folder_never_prompts_or_touches_the_model_config(tmp_path, bios_data):
    model = build_model(CapacityTrainingConfig(model="gpt2-1-1", head_dim=16), bios_data.tokenizer)
    model.save_pretrained(tmp_path)  # config.json with auto_map and the modeling code: remote code
    bios_data.save(tmp_path)
    assert (tmp_path / "modeling_capacity_gpt2.py").is_file()
    script = textwrap.dedent(f"""
        from hf_capacity.data import KnowledgeData   # hf_capacity.models is not imported
        data = KnowledgeData.load({str(tmp_path)!r})
        print("people", data.population.n_people, "tokens", len(data.used_token_ids()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"people 300 tokens {len(bios_data.used_token_ids())}"
    assert "trust_remote_code" not in result.stderr and "[y/N]" not in result.stdout + result.stderr
    assert "model of type" not in result.stderr


def test_a_saved_data_folder_loads_back_the_same_renderings(tmp_path, bios_data):
    bios_data.save(tmp_path)
    loaded = KnowledgeData.load(tmp_path)
    assert loaded.renderer.render([0, 5], 3).tokens.tolist() == bios_data.renderer.render([0, 5], 3).tokens.tolist()
    assert loaded.bits_max().total == bios_data.bits_max().total


@pytest.mark.parametrize("family", ["bioS", "bioD"])
def test_a_fitted_vocabulary_keeps_every_token_and_p_while_the_head_shrinks(family):
    from hf_capacity.params import count_parameters
    from hf_capacity.training import CapacityTrainingConfig, build_model

    if family == "bioD":
        population = BioDPopulation(300, n_attributes=2, chunks_per_value=4, diversity=50, chunk_length=1,
                                    alphabet=200)
    else:
        population = BioSPopulation(400, seed=1)
    full = KnowledgeData.create(population, vocab_size=2048)
    fitted = KnowledgeData.create(population, fit_vocabulary=True, vocab_size=2048)
    assert len(fitted.tokenizer) < 0.75 * len(full.tokenizer)

    people = np.arange(population.n_people)
    a, b = full.renderer.render(people, 5), fitted.renderer.render(people, 5)
    assert (full.tokenizer.convert_ids_to_tokens(a.tokens.tolist())
            == fitted.tokenizer.convert_ids_to_tokens(b.tokens.tolist()))
    np.testing.assert_array_equal(a.name, b.name)
    np.testing.assert_array_equal(a.values, b.values)
    # the fitted tokenizer still encodes the joined text exactly as the renderer composes it
    texts = fitted.renderer.render_text(people[:20], 5)
    for i, ids in enumerate(fitted.tokenizer(texts, add_special_tokens=False)["input_ids"]):
        assert ids == b.biography(i).tolist()
    # text outside the data still round-trips (byte symbols)
    other = "Zebra crossing at 12:30 — ünïcode ☃"
    assert fitted.tokenizer.decode(fitted.tokenizer(other, add_special_tokens=False)["input_ids"]) == other

    config = CapacityTrainingConfig(model="gpt2-1-1", head_dim=16, progress=False)
    p_full = count_parameters(build_model(config, full.tokenizer), full.used_token_ids())
    p_fitted = count_parameters(build_model(config, fitted.tokenizer), fitted.used_token_ids())
    assert p_fitted.paper_params == p_full.paper_params and p_fitted.total < p_full.total


def test_a_fitted_vocabulary_saves_and_loads_back(tmp_path):
    data = KnowledgeData.create(BioSPopulation(200, seed=2), vocab_size=1024, fit_vocabulary=True)
    loaded = KnowledgeData.load(data.save(tmp_path / "d"))
    assert loaded.tokenizer.get_vocab() == data.tokenizer.get_vocab()
    people = np.arange(50)
    np.testing.assert_array_equal(loaded.renderer.render(people, 1).tokens, data.renderer.render(people, 1).tokens)


def test_biod_junk_leaves_bits_max_and_p_unchanged_and_saves_and_loads_back(tmp_path):
    from hf_capacity.data import JunkConfig
    from hf_capacity.params import count_parameters
    from hf_capacity.preflight import check_run

    population = BioDPopulation(100, n_attributes=2, chunks_per_value=4, diversity=50, chunk_length=1, alphabet=200)
    config = CapacityTrainingConfig(model="gpt2-1-1", head_dim=16, dataset="bioD", progress=False)

    def p(data):
        return count_parameters(build_model(config, data.tokenizer), data.used_token_ids()).paper_params

    tokenizer = KnowledgeData.create(population, vocab_size=512).tokenizer  # the same with or without junk
    without = {}
    for domain_token in (False, True):
        plain = without[domain_token] = KnowledgeData(population, tokenizer, domain_token=domain_token)
        junk = KnowledgeData(population, tokenizer, domain_token=domain_token, junk=JunkConfig(7 / 8, 100_000_000))
        # the junk people use names the 100 useful people do not: the training stream holds more tokens...
        assert set(junk.training_token_ids()) > set(junk.used_token_ids())
        # ...but bits_max and P are the useful population's
        assert junk.bits_max() == plain.bits_max()
        assert junk.used_token_ids() == plain.used_token_ids() and p(junk) == p(plain)
    assert p(junk) == p(without[False]) + 16  # the domain token's row

    loaded = KnowledgeData.load(junk.save(tmp_path / "d"))
    assert loaded.to_config() == junk.to_config() and loaded.junk == JunkConfig(7 / 8, 100_000_000)
    assert loaded.junk_renderer.population == junk.junk_renderer.population
    assert loaded.used_token_ids() == junk.used_token_ids()

    run = CapacityTrainingConfig(model="gpt2-1-1", head_dim=16, dataset="bioD", n_people=100, junk_fraction=0.875,
                                 vocab_size=512, biod={"n_attributes": 2, "chunks_per_value": 4, "diversity": 50,
                                                       "chunk_length": 1, "alphabet": 200})
    assert check_run(run) == p(without[False])  # the sweep's dry run accepts bioD junk
    with pytest.raises(ValueError, match="n_people \\+ junk_n_people must be at most N0 = 160,000,000"):
        dataclasses.replace(run, junk_n_people=159_999_950)

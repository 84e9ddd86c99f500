"""Training streams: exact exposure counts, packing, block-diagonal positions, junk mixing, `datasets` views."""

import dataclasses

import numpy as np
import pytest

from hf_capacity.data import JunkConfig, KnowledgeData


def test_every_person_is_seen_exactly_e_times(bios_data):
    stream = bios_data.stream(exposures=4, context_length=128, with_people=True)
    counts = np.zeros(300, dtype=int)
    for item in stream:
        np.add.at(counts, item["people"], 1)
    assert (counts == 4).all()


def test_windows_are_the_concatenated_biographies(bios_data):
    stream = bios_data.stream(exposures=2, context_length=100)
    items = list(stream)
    assert all(len(i["input_ids"]) == 100 for i in items)
    flat = np.concatenate([i["input_ids"][i["attention_mask"] == 1] for i in items])
    eos = bios_data.tokenizer.eos_token_id
    assert (flat == eos).sum() == 2 * 300  # one EOS opens every biography
    last = items[-1]
    assert (last["labels"][last["attention_mask"] == 0] == -100).all()
    assert (items[0]["labels"] == items[0]["input_ids"]).all()


def test_stream_is_deterministic_and_shuffled_per_round(bios_data):
    a = [i["input_ids"] for i in bios_data.stream(2, 64)]
    b = [i["input_ids"] for i in bios_data.stream(2, 64)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    order = np.concatenate([i["people"] for i in bios_data.stream(2, 1000, with_people=True)])
    first_round, second_round = order[:300], order[300:600]
    assert sorted(first_round) == list(range(300)) and not np.array_equal(first_round, second_round)


def test_block_diagonal_positions_restart_at_every_biography(bios_data):
    item = next(iter(bios_data.stream(1, 256, block_diagonal=True)))
    pos, ids = item["position_ids"], item["input_ids"]
    eos_at = np.flatnonzero(ids == bios_data.tokenizer.eos_token_id)
    assert (pos[eos_at] == 0).all()
    assert pos[0] == 0 and (np.diff(pos)[~np.isin(np.arange(1, 256), eos_at)] == 1).all()


def test_junk_mixing_keeps_windows_pure_and_hits_the_fraction(bios_data):
    data = KnowledgeData(bios_data.population, bios_data.tokenizer, domain_token=True,
                         junk=JunkConfig(0.75, 1_000_000))
    items = list(data.stream(exposures=10, context_length=128, with_people=True))
    domain, eos = data.renderer.domain_token_id, data.tokenizer.eos_token_id
    kinds = []
    for item in items:  # a window is pure: every biography in it has the domain token, or none has
        ids = item["input_ids"]
        eos_at = np.flatnonzero(ids[:-1] == eos)
        marked = ids[eos_at + 1] == domain
        assert marked.all() or not marked.any()
        kinds.append("useful" if len(item["people"]) else "junk")
        if kinds[-1] == "junk":
            assert not marked.any()
    assert abs(kinds.count("junk") / len(kinds) - 0.75) < 0.05
    counts = np.zeros(300, dtype=int)
    for item in items:
        np.add.at(counts, item["people"], 1)
    assert (counts == 10).all()


def test_dataset_and_iterable_views(bios_data, tmp_path):
    stream = bios_data.stream(exposures=1, context_length=64)
    ds = stream.to_dataset(progress=False)
    assert ds.num_rows == len(list(stream))
    assert ds.features["input_ids"].feature.dtype == "int32"
    ds.save_to_disk(tmp_path / "train")
    first = next(iter(stream.to_iterable_dataset()))
    assert first["input_ids"] == ds[0]["input_ids"]


@pytest.mark.parametrize("block_rows", [3, 2048])  # several Arrow chunks, and one
def test_materialised_dataset_holds_exactly_the_streamed_windows(bios_data, monkeypatch, block_rows):
    from hf_capacity.data.stream import _ListColumn

    monkeypatch.setattr(_ListColumn, "_BLOCK_ROWS", block_rows)
    stream = bios_data.stream(exposures=2, context_length=100, block_diagonal=True, with_people=True)
    ds = stream.to_dataset(progress=False)
    items = list(stream)
    assert ds.num_rows == len(items) and ds.features == stream.features()
    for column in ["input_ids", "attention_mask", "labels", "position_ids", "people"]:  # people rows are ragged
        assert ds[column] == [item[column].tolist() for item in items], column
    assert str(ds.data.schema.field("input_ids").type) == "list<item: int32>"


def test_a_table_without_labels_gives_the_same_batches(bios_data):
    """`to_dataset(labels=False)` (what `hf-capacity train` builds) holds 5 bytes a token instead of 13, and
    `collate_windows` turns its rows into the very batches the full table gives, the padded last window included."""
    from transformers import default_data_collator

    from hf_capacity.data import collate_windows

    stream = bios_data.stream(exposures=3, context_length=100)
    full = stream.to_dataset(progress=False).with_format("numpy")
    lean = stream.to_dataset(progress=False, labels=False).with_format("numpy")
    assert lean.column_names == ["input_ids", "attention_mask"]
    assert lean.data.nbytes < 0.4 * full.data.nbytes
    assert full[-1]["attention_mask"].min() == 0  # the last window is padded: its labels are -100 there
    for start in range(0, full.num_rows, 8):
        rows = range(start, min(start + 8, full.num_rows))
        expected = default_data_collator([full[i] for i in rows])
        got = collate_windows([lean[i] for i in rows])
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key].dtype == expected[key].dtype and (got[key] == expected[key]).all(), key
    assert collate_windows([full[0]])["labels"].equal(default_data_collator([full[0]])["labels"])  # labels kept
    with pytest.raises(ValueError, match="attention_mask"):
        collate_windows([{"input_ids": lean[0]["input_ids"]}])


def test_stream_fingerprints_follow_the_content(bios_data, biod_data):
    fingerprints = {
        bios_data.stream(2, 64).fingerprint(),
        bios_data.stream(3, 64).fingerprint(),
        bios_data.stream(2, 128).fingerprint(),
        bios_data.stream(2, 64, block_diagonal=True).fingerprint(),
        KnowledgeData(bios_data.population, bios_data.tokenizer, simple=True).stream(2, 64).fingerprint(),
        biod_data.stream(2, 64).fingerprint(),
    }
    assert len(fingerprints) == 6
    assert bios_data.stream(2, 64).fingerprint() == bios_data.stream(2, 64).to_dataset(progress=False)._fingerprint


def test_materialising_a_stream_costs_about_the_finished_table(tmp_path):
    """The build's peak memory (a fresh process's max RSS) grows by ~18 bytes a token: the int32 ids, int8 mask
    and int64 labels the table holds, not Python ints (it was ~215 bytes a token)."""
    import subprocess
    import sys

    script = tmp_path / "build.py"
    script.write_text(
        "import resource\n"
        "from hf_capacity.data import KnowledgeData\n"
        "from hf_capacity.data.population import BioDPopulation\n"
        "data = KnowledgeData.create(BioDPopulation(1500, 1, 16, 1000, 1, 1000, seed=0), vocab_size=2048)\n"
        "stream = data.stream(40, 512)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "ds = stream.to_dataset(progress=False)\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(grown * 1024 / (ds.num_rows * 512))\n"
    )
    bytes_per_token = float(subprocess.run([sys.executable, str(script)], check=True, capture_output=True,
                                           text=True).stdout)
    assert bytes_per_token < 40


def test_bad_stream_arguments(bios_data):
    with pytest.raises(ValueError, match="exposures"):
        bios_data.stream(exposures=0)
    with pytest.raises(ValueError, match="fraction"):
        JunkConfig(fraction=1.0)


def test_knowledge_data_round_trip(bios_data, tmp_path):
    bios_data.save(tmp_path)
    loaded = KnowledgeData.load(tmp_path)
    assert loaded.population == bios_data.population
    assert (loaded.renderer.render(np.arange(5), 1).tokens.tolist()
            == bios_data.renderer.render(np.arange(5), 1).tokens.tolist())
    with pytest.raises(FileNotFoundError, match="knowledge_data.json"):
        KnowledgeData.load(tmp_path / "nothing")


def test_packing_progress_bar_ends_at_its_total(bios_data, monkeypatch):
    import tqdm.auto

    bars = []

    class RecordedBar(tqdm.auto.tqdm):
        def close(self):
            bars.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordedBar)
    stream = bios_data.stream(exposures=3, context_length=100)
    dataset = stream.to_dataset(progress=True)
    assert stream.estimated_windows() != len(dataset)  # the bar starts from an estimate...
    assert bars[0] == (len(dataset), len(dataset))  # ...and ends at the windows actually packed


def test_mixing_knowledge_into_a_users_corpus_keeps_every_window_once(bios_data):
    import datasets

    from hf_capacity.data import mix_knowledge

    knowledge = bios_data.stream(3, 64).to_dataset(progress=False)
    corpus = datasets.Dataset.from_dict({"input_ids": [[7] * 64 for _ in range(50)]})
    mixed = mix_knowledge(corpus, knowledge, seed=1)
    assert len(mixed) == 50 + len(knowledge) and sum(mixed["knowledge"]) == len(knowledge)
    ours = sorted(map(tuple, (r["input_ids"] for r in mixed if r["knowledge"])))
    assert ours == sorted(map(tuple, knowledge["input_ids"]))  # each knowledge window exactly once
    theirs = [r for r in mixed if not r["knowledge"]]
    assert all(r["labels"] == r["input_ids"] and r["attention_mask"] == [1] * 64 for r in theirs)
    with pytest.raises(ValueError, match="same context length"):
        mix_knowledge(datasets.Dataset.from_dict({"input_ids": [[7] * 32]}), knowledge)


def test_biod_junk_windows_hold_biod_biographies_of_people_outside_the_useful_population(biod_data):
    import re

    from hf_capacity.data import load_pools
    from hf_capacity.data.stream import junk_population

    pop, junk = biod_data.population, JunkConfig(0.75, 100_000)
    data = KnowledgeData(pop, biod_data.tokenizer, domain_token=True, junk=junk)
    junk_pop = junk_population(pop, junk)  # the same shape and diversity sets, the people after the useful ones
    assert junk_pop == dataclasses.replace(pop, n_people=100_000, name_offset=pop.n_people)
    np.testing.assert_array_equal(junk_pop.chunks, pop.chunks)

    def name_keys(population):
        n = population.names()
        return (n["first"] * 1_000_000 + n["middle"] * 1000 + n["last"]).tolist()

    useful_names, junk_people = set(name_keys(pop)), {key: j for j, key in enumerate(name_keys(junk_pop))}
    pools = load_pools()
    index = [{name: i for i, name in enumerate(pool)} for pool in (pools.first_names, pools.middle_names,
                                                                    pools.last_names)]
    sentence = re.compile(r" ?([A-Za-z]+) ([A-Za-z]+) ([A-Za-z]+)'s ID (\d+) is((?:<t\d+>)+)\.")
    eos, domain = data.tokenizer.eos_token_id, data.renderer.domain_token_id
    items = list(data.stream(exposures=3, context_length=128, with_people=True))
    junk_biographies = 0
    for item in items:
        ids = item["input_ids"][item["attention_mask"] == 1]
        eos_at = np.flatnonzero(ids == eos)
        is_junk = len(item["people"]) == 0
        for start, end in zip(eos_at[:-1], eos_at[1:]):  # the biographies wholly inside the window
            biography = ids[start + 1 : end]
            assert (biography[0] == domain) != is_junk  # useful ones carry the domain token, junk ones never
            if not is_junk:
                continue
            text = data.tokenizer.decode(biography)
            found = list(sentence.finditer(text))
            assert "".join(m.group(0) for m in found) == text, text  # nothing but bioD sentences
            assert sorted(int(m.group(4)) for m in found) == list(range(1, pop.n_attributes + 1))
            (name,) = {m.groups()[:3] for m in found}  # one person
            key = index[0][name[0]] * 1_000_000 + index[1][name[1]] * 1000 + index[2][name[2]]
            assert key not in useful_names
            j = junk_people[key]  # a junk person: their own values, from the shared diversity sets
            for m in found:
                k = int(m.group(4)) - 1
                symbols = [int(t) for t in re.findall(r"<t(\d+)>", m.group(5))]
                assert symbols == junk_pop.chunks[k][junk_pop.values([j])[0, k]].ravel().tolist()
            junk_biographies += 1
    assert junk_biographies > 100
    kinds = [len(item["people"]) == 0 for item in items]
    assert abs(np.mean(kinds) - 0.75) < 0.05
    counts = np.zeros(pop.n_people, dtype=int)
    for item in items:
        np.add.at(counts, item["people"], 1)
    assert (counts == 3).all()

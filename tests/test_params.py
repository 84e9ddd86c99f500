"""Parameter counting by the paper's rule, on small modules whose counts are easy to do by hand."""

import pytest
from torch import nn

from hf_capacity.params import count_parameters


class TinyLM(nn.Module):
    def __init__(self, vocab=100, d=8, tied=True, positions=0):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d) if positions else None
        self.block = nn.Linear(d, d)  # 72
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head


def test_tied_embeddings_count_once_and_unused_rows_are_dropped():
    count = count_parameters(TinyLM(tied=True), used_token_ids=range(10))
    assert count.total == 100 * 8 + 72
    assert count.embedding == 800
    assert count.paper_params == 10 * 8 + 72  # only the 10 used rows
    assert count.non_embedding == 72
    assert count.used_tokens == 10 and count.vocab_size == 100


def test_untied_output_rows_are_dropped_too():
    count = count_parameters(TinyLM(tied=False), used_token_ids=[1, 2, 3, 3])
    assert count.total == 800 + 72 + 800
    assert count.paper_params == 3 * 8 + 72 + 3 * 8


def test_position_embeddings_are_not_non_embedding_parameters():
    count = count_parameters(TinyLM(positions=16))
    assert count.total == 800 + 128 + 72
    assert count.paper_params == count.total  # all rows used when no ids are given
    assert count.non_embedding == 72


def test_hook_reports_inactive_and_memory_parameters():
    model = TinyLM()
    model.capacity_parameter_breakdown = lambda: {"inactive_per_token": 50, "memory_values": 20}
    count = count_parameters(model)
    assert count.active_per_token == count.paper_params - 50
    assert count.paper_params_without_memory_values == count.paper_params - 20


def test_ids_outside_the_vocabulary_are_rejected():
    with pytest.raises(ValueError, match="outside the embedding"):
        count_parameters(TinyLM(), used_token_ids=[100])


def test_plain_module_without_embeddings():
    count = count_parameters(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)))
    assert count.total == count.paper_params == count.non_embedding == 16 + 5


def test_gated_and_standard_mlps_are_parameter_matched_in_both_families(bios_data):
    """The gated-vs-standard comparison (the paper's cause of LLaMA's 100-exposure gap) compares equal P."""
    from hf_capacity.training import CapacityTrainingConfig, build_model

    def mlp_weights(model_name, mlp_type):
        config = CapacityTrainingConfig(model=model_name, head_dim=48, mlp_type=mlp_type, progress=False)
        model = build_model(config, bios_data.tokenizer)
        return sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n and n.endswith("weight"))

    hidden = 2 * 48
    for family in ("gpt2-1-2", "llama-1-2"):
        gated, standard = mlp_weights(family, "gated"), mlp_weights(family, "standard")
        assert standard == 8 * hidden**2, family
        assert abs(gated - standard) <= 0.05 * standard, (family, gated, standard)


def test_the_old_names_of_the_papers_count_still_work_and_warn():
    """``capacity`` was a count, not a ratio: renamed ``paper_params``; the old names read the same, with a
    FutureWarning, and results.json keeps its keys."""
    count = count_parameters(TinyLM(), used_token_ids=range(10))
    with pytest.warns(FutureWarning, match="ParameterCount.capacity is renamed paper_params"):
        assert count.capacity == count.paper_params
    with pytest.warns(FutureWarning, match="renamed paper_params_without_memory_values"):
        assert count.capacity_without_memory_values == count.paper_params_without_memory_values
    with pytest.warns(FutureWarning, match="renamed base_paper_params"):
        assert count.base_capacity is None
    saved = count.to_dict()
    assert saved["capacity"] == count.paper_params and "paper_params" not in saved
    assert saved["capacity_without_memory_values"] == count.paper_params - count.memory_values
    assert "base_capacity" in saved and "base_paper_params" not in saved

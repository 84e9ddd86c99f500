"""Model names (gpt2-6-4, llama-2-2, memory-llama-4-2) are read by one parser."""

import pytest

from hf_capacity.model_names import MODEL_NAME, ModelName, match_model_name, parse_model_name
from hf_capacity.models.capacity_gpt2 import CapacityGPT2Config


def test_names_read_into_family_layers_heads():
    assert parse_model_name("gpt2-6-4") == ModelName("gpt2", 6, 4)
    assert parse_model_name("llama-1-2") == ("llama", 1, 2)
    family, layers, heads = parse_model_name("memory-llama-12-8")
    assert (family, layers, heads) == ("memory-llama", 12, 8)
    assert str(parse_model_name("gpt2-2-2")) == "gpt2-2-2"
    assert MODEL_NAME.match("llama-3-1").groups() == ("llama", "3", "1")


@pytest.mark.parametrize("name, message", [
    ("gpt2-small", "unknown model 'gpt2-small': use gpt2-<layers>-<heads>"),
    ("bert-2-2", "unknown model 'bert-2-2'"),
    ("gpt2-2-2-2", "unknown model"),
    (None, "unknown model None"),
    ("gpt2-0-4", "a model needs at least 1 layer and 1 head"),
    ("llama-2-0", "a model needs at least 1 layer and 1 head"),
])
def test_bad_names_say_what_a_name_looks_like(name, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_model_name(name)


def test_tables_read_names_without_raising():
    assert match_model_name("gpt2-0-0") == ("gpt2", 0, 0)  # a sweep lists such a run as failing, not the table
    assert match_model_name("my-own-model") is None
    assert match_model_name(float("nan")) is None


@pytest.mark.parametrize("name", ["gpt2-1-1", "gpt2-6-4", "gpt2-12-12", "gpt2-small", "gpt2-0-4", "llama-2-2"])
def test_the_gpt2_model_folder_reads_names_as_the_parser_does(name):
    """CapacityGPT2Config.from_name keeps its own reading (its folder imports no hf_capacity): the same shapes."""
    try:
        expected = parse_model_name(name)
    except ValueError:
        expected = None
    if expected is None or expected.family != "gpt2":
        with pytest.raises(ValueError):
            CapacityGPT2Config.from_name(name)
        return
    config = CapacityGPT2Config.from_name(name)
    assert (config.num_hidden_layers, config.num_attention_heads) == (expected.layers, expected.heads)

"""A run's settings are declared once: the config dataclass's fields carry their help and CLI spelling, and the
`train`/`demo` flags and the sweep files' types are read from them."""

import argparse

import pytest

from hf_capacity.cli import build_parser
from hf_capacity.cli.run import _training_config
from hf_capacity.schema import coerce, settings
from hf_capacity.training import CapacityTrainingConfig


def test_every_setting_has_help_and_a_known_type():
    declared = settings(CapacityTrainingConfig)
    assert list(declared) == [f for f in CapacityTrainingConfig.__dataclass_fields__]
    assert all(s.help for s in declared.values()), [s.name for s in declared.values() if not s.help]
    assert declared["quantized"].kind is list and declared["max_steps"].optional
    assert declared["learning_rate"].flags == ["--lr"] and declared["output_dir"].flags == ["--output", "-o"]


def test_the_train_flags_are_the_settings_and_parse_to_the_defaults():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {option for action in train._actions for option in action.option_strings}
    for s in settings(CapacityTrainingConfig).values():
        if s.metadata.get("cli", True) is not False and s.name != "biod":
            assert set(s.flags) <= flags, s.name
    assert _training_config(parser.parse_args(["train"])) == CapacityTrainingConfig()
    argv = ["train", "--quiet", "--no-resume", "--lr", "2e-3", "--quantized", "int8", "--adam-beta2", "0.95",
            "--gradient-accumulation-steps", "2"]
    config = _training_config(parser.parse_args(argv))
    assert (config.progress, config.resume, config.learning_rate, config.quantized) == (False, False, 2e-3, ("int8",))
    assert (config.adam_beta2, config.gradient_accumulation_steps) == (0.95, 2)


def test_the_quantization_choices_are_the_schemes_quantization_knows():
    from hf_capacity.quantization import ALL_SCHEMES
    from hf_capacity.training import QUANTIZED_SCHEMES

    assert tuple(QUANTIZED_SCHEMES) == tuple(ALL_SCHEMES)


@pytest.mark.parametrize("value, kind, expected", [("1e-3", float, 1e-3), (1.0e6, int, 1_000_000), ("c_attn", list,
                                                   ["c_attn"]), (None, list, [])])
def test_values_read_from_yaml_take_the_settings_type(value, kind, expected):
    assert coerce(value, kind, "base.x") == expected


def test_a_wrong_value_names_where_it_is():
    with pytest.raises(argparse.ArgumentTypeError, match="base.n_people: expected an integer"):
        settings(CapacityTrainingConfig)["n_people"].coerce(2.5, "base.n_people", argparse.ArgumentTypeError)

"""Adapter runs (peft): LoRA, QLoRA and full fine-tuning of a trained run on a new population; their accounting."""

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_capacity.adapters import AdapterSettings, load_adapter_run, new_population_data
from hf_capacity.callbacks import ForgettingCallback
from hf_capacity.cli import main
from hf_capacity.data import BioDPopulation, KnowledgeData
from hf_capacity.evaluation import evaluate_knowledge
from hf_capacity.models.registration import load_causal_lm
from hf_capacity.params import count_parameters
from hf_capacity.sweep import adapter_table, load_sweep, run_sweep
from hf_capacity.training import CapacityTrainingConfig, train_capacity

BIOD = {"n_attributes": 2, "chunks_per_value": 2, "diversity": 20, "chunk_length": 1, "alphabet": 30}
COMMON = dict(dataset="bioD", biod=BIOD, context_length=128, batch_size=4, warmup_steps=2, learning_rate=1e-2,
              weight_decay=0.0, progress=False, logging_steps=1000)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny base run: gpt2-1-1 (head dim 16) trained on 40 bioD people for 60 exposures."""
    out = tmp_path_factory.mktemp("adapters") / "base"
    report, _ = train_capacity(CapacityTrainingConfig(output_dir=str(out), n_people=40, model="gpt2-1-1",
                                                      head_dim=16, exposures=60, **COMMON))
    assert report.bits.total > 0  # the base knows something of its people, which an adapter run can forget
    return out


def adapter_run(base, out, **kwargs):
    config = CapacityTrainingConfig(output_dir=str(out), init_from=str(base),
                                    **{**COMMON, "n_people": 20, "exposures": 20, **kwargs})
    report, trainer = train_capacity(config)
    return report, trainer, json.loads((out / "results.json").read_text())


def lora_param_count(model_dir, r: int, targets=("c_attn", "c_proj", "c_fc")) -> int:
    """r·(in + out) for every adapted Linear, counted from the base's own modules."""
    model = load_causal_lm(model_dir)
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)


def test_new_population_is_new_people_in_the_base_format(base_run):
    base = KnowledgeData.load(base_run)
    new = new_population_data(base, 25)
    assert new.population.name_offset == 40 and new.population.seed == base.population.seed
    assert np.array_equal(new.population.chunks, base.population.chunks)  # the same diversity sets
    names = lambda pop: {tuple(row) for row in np.stack(list(pop.names().values()), axis=1)}  # noqa: E731
    assert not names(new.population) & names(base.population)
    assert new.tokenizer is base.tokenizer
    with pytest.raises(ValueError, match="overlap the base model's own"):
        new_population_data(base, 10, name_offset=35)
    # an offset of 0 is the population as it always was (folders written before offsets existed read the same)
    old = BioDPopulation(40, seed=base.population.seed, **BIOD)
    assert np.array_equal(old.values(), base.population.values()) and "name_offset" not in old.to_config()


def test_lora_run_trains_only_the_adapter_and_counts_exactly_it(base_run, tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    report, trainer, results = adapter_run(base_run, out, lora_r=2)
    expected = lora_param_count(base_run, 2)
    assert report.num_params.paper_params == expected == results["num_params"]
    # the base's P: one figure, by the same rule on its own population's tokens (what its own results.json says)
    own = count_parameters(load_causal_lm(base_run), KnowledgeData.load(base_run).used_token_ids()).paper_params
    assert (report.num_params.base_paper_params == results["num_params_base"]
            == results["base_population"]["num_params"])
    assert results["num_params_base"] == own == json.loads((base_run / "results.json").read_text())["num_params"]
    # the base's weights are untouched, the adapter's moved
    base_weights = load_file(str(base_run / "model.safetensors"))
    model = trainer.model
    for name, p in model.get_base_model().named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p.detach(), base_weights[key]), name
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it
    # results, forgetting, and a valid adapter card
    assert results["adapter"]["method"] == "lora" and results["adapter"]["r"] == 2
    bp = results["base_population"]
    assert bp["n_people"] == 40 and bp["bits_before"] > 0 and bp["bits_forgotten"] == pytest.approx(
        bp["bits_before"] - bp["bits_after"])
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "peft" and meta["base_model"] == str(base_run)
    assert "trainable adapter parameters P" in card and "PeftModel.from_pretrained" in card
    # an adapter has no embedding to leave out
    assert f"| {own:,} |" in card and "non-embedding parameters" not in card
    # the adapter loads back with peft and measures the same
    reloaded = load_adapter_run(out)  # PeftModel.from_pretrained on the base the adapter names
    assert isinstance(reloaded, PeftModel)
    again = evaluate_knowledge(reloaded, KnowledgeData.load(out), progress=False)
    assert again.num_params.paper_params == expected
    assert again.bits.total == pytest.approx(report.bits.total, rel=1e-6, abs=1e-6)


def test_full_finetuning_is_the_reference_with_the_whole_model_as_p(base_run, tmp_path, capsys):
    report, _, results = adapter_run(base_run, tmp_path / "ft", lora_r=0)
    # every parameter learns: P is the whole model by the paper's rule, on the tokens of the data it trains on
    whole = count_parameters(load_causal_lm(base_run), KnowledgeData.load(tmp_path / "ft").used_token_ids())
    assert report.num_params.paper_params == whole.paper_params and not report.num_params.is_adapter
    assert results["adapter"] == {"method": "full", "base_model": str(base_run)}
    assert results["base_population"]["bits_after"] <= results["base_population"]["bits_before"] + 1e-6
    meta = yaml.safe_load((tmp_path / "ft" / "README.md").read_text().split("---")[1])
    assert meta["library_name"] == "transformers" and meta["base_model"] == str(base_run)
    # eval re-measures it as training reported it: net of the base (loaded from where results.json says) and forgetting
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ft"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["bits"] == pytest.approx(results["bits"], abs=1e-6)
    assert again["bits_at_start"] == pytest.approx(results["bits_at_start"], abs=1e-6)
    assert again["base_population"] == pytest.approx(results["base_population"], abs=1e-6)


def test_qlora_learns_on_a_4bit_base_after_an_evaluation(base_run, tmp_path):
    """The knowledge callback evaluates at step 0; on AVX512-BF16 CPUs that would repack the 4-bit weights
    and stop LoRA's gradients unless the layers are told not to (the HF-stack notes' trap)."""
    import bitsandbytes as bnb

    report, trainer, results = adapter_run(base_run, tmp_path / "qlora", lora_r=2, load_in_4bit=True)
    model = trainer.model
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(not m.support_avx512bf16_for_cpu for m in layers)
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert report.num_params.paper_params == lora_param_count(base_run, 2)
    assert results["adapter"]["method"] == "qlora"
    # P of the base counts the weights the 4-bit tensors stand for, not their packed bytes
    full = count_parameters(load_causal_lm(base_run), KnowledgeData.load(base_run).used_token_ids())
    assert report.num_params.base_paper_params == results["num_params_base"] == full.paper_params
    # eval loads it as trained: the adapter on a 4-bit base
    loaded = load_adapter_run(tmp_path / "qlora")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.modules())


def test_cli_adapter_run_and_eval(base_run, tmp_path, capsys):
    out = tmp_path / "cli_lora"
    argv = ["train", "--init-from", str(base_run), "--lora-r", "1", "--lora-targets", "c_attn", "--N", "10",
            "--exposures", "5", "--context-length", "128", "--batch-size", "4", "--warmup-steps", "1", "--quiet",
            "-o", str(out)]
    assert main(argv) == 0  # --dataset and the bioD shape come from the base run
    printed = capsys.readouterr().out
    assert "trainable adapter parameters P" in printed and "base population" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["num_params"] == lora_param_count(base_run, 1, targets=("c_attn",))
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits"] == pytest.approx(results["bits"], rel=1e-6, abs=1e-6)
    # training_config.json records what ran: the base's architecture and its people's seed, not the parser defaults
    recorded = json.loads((out / "training_config.json").read_text())
    base = json.loads((base_run / "training_config.json").read_text())
    assert (recorded["model"], recorded["head_dim"]) == (base["model"], base["head_dim"]) == ("gpt2-1-1", 16)
    assert recorded["applied"]["population_seed"] == base["seed"] and recorded["applied"]["name_offset"] == 40


@pytest.mark.parametrize("flags, message", [
    (["--model", "llama-2-2"], "model 'llama-2-2' (the base's: 'gpt2-1-1') would have no effect"),
    (["--head-dim", "32"], "head_dim 32 (the base's: 16)"),
    (["--vocab-size", "1000"], "vocab_size 1000"),
    (["--dataset", "bioS"], "was trained on bioD"),
    (["--K", "3"], "has bioD shape"),
])
def test_settings_the_base_decides_are_refused_not_ignored(base_run, tmp_path, capsys, flags, message):
    out = tmp_path / "x"
    assert main(["train", "--init-from", str(base_run), "--N", "5", "--quiet", "-o", str(out), *flags]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_adapter_bits_are_net_of_the_base_and_bits_max_leaves_out_its_diversity_sets(base_run, tmp_path):
    """The new people share the base run's bioD diversity sets: that term is the base's knowledge, and what the base
    already scores on the new people (its step-0 figure) is not the adapter's either."""
    out = tmp_path / "lora"
    report, _, results = adapter_run(base_run, out, lora_r=2)
    data = KnowledgeData.load(out)
    whole = data.bits_max()
    assert whole.diversity_bits > 0  # T^L > D: K·D·log2(T^L / D) bits in the sets
    assert results["bits_max"] == pytest.approx(whole.total - whole.diversity_bits)
    assert results["bits_max_shared_with_base"] == pytest.approx(whole.diversity_bits)
    # the base model alone on the new people, and the adapted model: bits = the gain, term by term
    start = evaluate_knowledge(load_causal_lm(base_run), data, progress=False).bits
    measured = evaluate_knowledge(load_adapter_run(out), data, progress=False).bits
    assert results["bits_at_start"] == pytest.approx(start.total, abs=1e-6)
    assert results["bits_measured"] == pytest.approx(measured.total, abs=1e-6)
    assert results["name_bits"] == pytest.approx(measured.name_bits - start.name_bits, abs=1e-6)
    assert results["value_bits"] == pytest.approx(measured.value_bits - start.value_bits, abs=1e-6)
    assert results["diversity_bits"] == 0 and results["history"][0]["knowledge_bits"] == 0
    assert results["bits_max_per_param"] == pytest.approx(results["bits_max"] / results["num_params"])
    assert "net of the base's" in report.table()


def test_an_adapter_run_moves_with_its_base_and_eval_rechecks_forgetting(base_run, tmp_path, capsys, monkeypatch):
    """A relative --init-from is recorded relative to the run, so the two folders move together; eval re-measures the
    base population (forgetting), and --base points at a base that moved on its own. Console, results and card give
    one base P, and the curve ends at the exposures the card states."""
    import shutil

    shutil.copytree(base_run, tmp_path / "runs" / "base")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--init-from", "runs/base", "--lora-r", "1", "--N", "10", "--exposures", "5",
            "--context-length", "128", "--batch-size", "4", "--warmup-steps", "1", "--quiet", "-o", "runs/lora"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "runs/lora/results.json").read_text())
    card = (tmp_path / "runs/lora/README.md").read_text()
    assert json.loads((tmp_path / "runs/lora/adapter_config.json").read_text())["base_model_name_or_path"] == "../base"
    assert results["adapter"]["base_model"] == "../base"
    p_base = results["num_params_base"]
    assert p_base == results["base_population"]["num_params"]
    assert f"frozen base model's P {p_base:,};" in printed and f"| {p_base:,} |" in card
    assert results["history"][-1]["exposures"] == results["exposures"] == 5 and "| 5 (every person exactly) |" in card
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    assert main(["eval", "moved/lora", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["bits"] == pytest.approx(results["bits"], abs=1e-6)
    assert again["base_population"] == pytest.approx(results["base_population"], abs=1e-6)
    shutil.move(tmp_path / "moved/base", tmp_path / "elsewhere")
    assert main(["eval", "moved/lora"]) == 2 and "eval --base" in capsys.readouterr().err
    assert main(["eval", "moved/lora", "--base", "elsewhere"]) == 0
    assert "base population (N=40)" in capsys.readouterr().out


def test_train_help_shows_the_adapter_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--init-from", "--lora-r", "--lora-alpha", "--lora-dropout", "--lora-target-modules",
                 "--load-in-4bit", "--name-offset"):
        assert flag in text


@pytest.mark.parametrize("kwargs, message", [
    ({"lora_r": 4}, "set init_from"),
    ({"init_from": "x", "load_in_4bit": True}, "set lora_r >= 1"),
    ({"init_from": "x", "lora_r": -1}, "lora_r must be >= 1"),
    ({"init_from": "x", "lora_r": 2, "lora_dropout": 1.5}, "lora_dropout must lie in"),
    ({"init_from": "x", "lora_r": 2, "quantized": ("int8",)}, "cannot take quantized"),
])
def test_bad_adapter_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CapacityTrainingConfig(**kwargs)


def test_a_base_of_another_format_is_refused(base_run, tmp_path, capsys):
    with pytest.raises(ValueError, match="trained on bioD"):
        adapter_run(base_run, tmp_path / "x", dataset="bioS", biod=CapacityTrainingConfig().biod, lora_r=1)
    with pytest.raises(ValueError, match="is not a folder"):
        adapter_run(tmp_path / "missing", tmp_path / "y", lora_r=1)
    argv = ["train", "--init-from", str(base_run), "--lora-r", "1", "--lora-target-modules", "nope", "--N", "5",
            "--exposures", "1", "--context-length", "128", "--quiet", "-o", str(tmp_path / "z")]
    assert main(argv) == 2
    assert "c_attn" in capsys.readouterr().err  # the error names the base's Linear modules


def test_a_sweep_over_rank_tabulates_bits_per_trainable_parameter(base_run, tmp_path):
    config = {"name": "ranks", "output_dir": str(tmp_path / "s"),
              "base": {**COMMON, "init_from": str(base_run), "n_people": 10, "exposures": 2},
              "grid": {"lora_r": [0, 1, 4]}}
    runs = load_sweep(config).plan()
    assert [r.run_id.split("_")[0] for r in runs] == ["base+ft", "base+lora1", "base+lora4"]
    assert AdapterSettings(r=4).method == "lora" and runs[2].training_config().adapter_settings().r == 4
    planned = run_sweep(config, dry_run=True, log=lambda line: None)
    table = adapter_table(run_sweep(config, log=lambda line: None))
    assert planned["bits_max"].tolist() == pytest.approx(table["bits_max"].tolist())  # the dry run's is the run's
    assert list(table["method"]) == ["lora", "lora", "full"] and list(table["lora_r"]) == [1, 4, 0]
    assert list(table["P"][:2]) == [lora_param_count(base_run, 1), lora_param_count(base_run, 4)]
    own = json.loads((base_run / "results.json").read_text())["num_params"]
    assert (table["P_base"] == own).all() and (table["base_bits_before"] > 0).all()
    assert table["R_max"].tolist() == pytest.approx((table["bits_max"] / table["P"]).tolist())


def test_any_causal_lm_folder_is_a_base_with_its_own_tokenizer(tmp_path):
    """A stock Llama saved with its own BPE tokenizer: the new people are rendered with that tokenizer (offset
    spans) and LoRA on all linear layers trains; no base population, so no forgetting is reported."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from hf_capacity.data.offset_spans import OffsetRenderer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator([LlamaConfig.__doc__] * 2, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>")
    base = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                 eos_token_id=tokenizer.eos_token_id)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    for setting in ({"vocab_size": 1000}, {"domain_token": True}):  # its own tokenizer renders: they would do nothing
        with pytest.raises(ValueError, match=f"{next(iter(setting))} .* would have no effect"):
            adapter_run(base, tmp_path / "x", lora_r=2, n_people=8, **setting)
    report, trainer, results = adapter_run(base, tmp_path / "lora", lora_r=2, n_people=8)
    data = KnowledgeData.load(tmp_path / "lora")
    assert isinstance(data.renderer, OffsetRenderer) and data.population.name_offset == 0
    linear = [m for m in load_causal_lm(base).modules()
              if isinstance(m, torch.nn.Linear) and m.out_features != len(tokenizer)]
    assert len(linear) == 7  # q k v o gate up down
    assert report.num_params.paper_params == sum(2 * (m.in_features + m.out_features) for m in linear)
    assert "base_population" not in results and results["adapter"]["method"] == "lora"


def test_bios_new_people_come_after_the_base_and_its_junk():
    from hf_capacity.data import BioSPopulation, JunkConfig

    base = KnowledgeData.create(BioSPopulation(30, seed=5), vocab_size=400, junk=JunkConfig(0.5, 1000))
    new = new_population_data(base, 12)
    assert new.population.name_offset == 30 + 1000 and new.junk is None
    people = lambda data: {data.population.person(i)["name"] for i in range(data.population.n_people)}  # noqa: E731
    assert len(people(new)) == 12 and not people(new) & people(base)
    text = base.tokenizer.decode(new.renderer.render(np.arange(2), 0).biography(0))
    assert new.population.person(0)["name"] in text


def test_an_adapter_run_resumes_from_its_checkpoint(base_run, tmp_path):
    """An interrupted LoRA run (here: its final files and newest checkpoint removed, as a kill would leave it)
    resumes from its adapter checkpoint and ends with the same adapter, bits and forgetting as an unbroken one."""
    import shutil

    settings = dict(lora_r=2, n_people=10, exposures=12, save_steps=2)
    _, _, unbroken = adapter_run(base_run, tmp_path / "unbroken", **settings)
    out = tmp_path / "broken"
    adapter_run(base_run, out, **settings)
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert len(steps) == 2 and (out / f"checkpoint-{steps[0]}" / "adapter_model.safetensors").is_file()  # 2 kept
    shutil.rmtree(out / f"checkpoint-{steps[-1]}")
    for name in ("results.json", "adapter_model.safetensors", "README.md"):
        (out / name).unlink()
    _, trainer, resumed = adapter_run(base_run, out, **settings)
    forgetting = next(c for c in trainer.callback_handler.callbacks if isinstance(c, ForgettingCallback))
    assert forgetting.before is None  # it did not start from step 0: the base's step-0 bits came from the log
    assert resumed["history"] == unbroken["history"]
    assert resumed["base_population"] == unbroken["base_population"]  # its step-0 bits from the restored log
    a = load_file(str(tmp_path / "unbroken" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_only_the_adapters_module_reads_init_from():
    """The adapter seam: training, preflight, the sweep and the CLI ask ``adapters.run_parts(config)`` for a run's
    parts instead of testing ``config.init_from`` themselves."""
    import ast
    from pathlib import Path

    import hf_capacity

    package = Path(hf_capacity.__file__).parent
    readers = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if any(isinstance(node, ast.Attribute) and node.attr == "init_from"
                            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))))
    assert readers == ["adapters.py"]

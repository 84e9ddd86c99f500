"""Training runs with the capacity callbacks: real tiny models, real steps, real reports."""

import json
import math

import pytest
from huggingface_hub import ModelCard
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_capacity.callbacks import (
    DivergenceCallback,
    ExposureCallback,
    KnowledgeCapacityCallback,
    KnowledgeOnlyEvalSet,
    add_capacity_callbacks,
)
from hf_capacity.report import push_capacity_files
from hf_capacity.training import CapacityTrainingConfig, build_model, train_capacity


def tiny_config(tmp_path, **overrides) -> CapacityTrainingConfig:
    settings = dict(
        output_dir=str(tmp_path / "run"), n_people=30, model="gpt2-1-2", head_dim=16, context_length=128,
        batch_size=4, learning_rate=3e-3, warmup_steps=5, vocab_size=400, exposures=2, progress=False,
        logging_steps=5,
    )
    settings.update(overrides)
    return CapacityTrainingConfig(**settings)


class RecordingBackend(TrainerCallback):
    """Stands in for a report_to backend: records what reaches on_log."""

    def __init__(self):
        self.logged = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logged.append(dict(logs))


def test_train_capacity_writes_model_report_curve_and_card(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    config = tiny_config(tmp_path, max_steps=12, eval_steps=6, quantized=("int8",))
    report, trainer = train_capacity(config)
    printed = capsys.readouterr()
    assert "Writing model shards" not in printed.err and "Loading weights" not in printed.err  # progress=False
    assert hf_logging.is_progress_bar_enabled()  # switched back on after the run
    out = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "knowledge_data.json", "results.json",
                 "knowledge_curve.png", "README.md", "training_config.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["bits_max"] == pytest.approx(report.bits_max.total)
    assert [h["step"] for h in results["history"]] == [0, 6, 12]  # the curve starts before the first step
    assert results["history"][0]["exposures"] == 0 and results["history"][-1]["exposures"] > 0
    assert results["quantized"]["int8"]["bits_per_param"] >= 0
    assert results["exposures"] == pytest.approx(12 * 4 * 128 / (30 * report_tokens_per_bio(trainer, out)), rel=0.1)
    card = ModelCard.load(out / "README.md")
    metrics = {r.metric_type for r in card.data.eval_results}
    assert {"knowledge_bits", "bits_per_param", "bits_per_param_int8"} <= metrics
    assert card.data.model_name == "run"
    assert "![Knowledge learned during training](knowledge_curve.png)" in card.text
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]  # it trained


def test_a_run_over_the_whole_stream_reports_exact_exposures_and_a_readable_schedule(tmp_path):
    report, trainer = train_capacity(tiny_config(tmp_path, exposures=3))
    out = tmp_path / "run"
    results = json.loads((out / "results.json").read_text())
    assert results["exposures"] == 3 and results["exposures_exact"] is True
    card = (out / "README.md").read_text()
    assert "| exposures per person | 3 (every person exactly) |" in card
    assert "schedule cosine_with_min_lr" in card and "SchedulerType" not in card


def test_a_run_cut_short_reports_the_average_and_says_so(tmp_path):
    report, trainer = train_capacity(tiny_config(tmp_path, exposures=3, max_steps=5))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["exposures_exact"] is False and 0 < results["exposures"] < 3
    assert "≈" in (tmp_path / "run" / "README.md").read_text()


def report_tokens_per_bio(trainer, out):
    from hf_capacity.data import KnowledgeData

    return KnowledgeData.load(out).renderer.mean_tokens_per_biography()


def test_metrics_reach_report_to_backends_and_evaluate(tmp_path):
    config = tiny_config(tmp_path)
    from hf_capacity.training import build_data

    data = build_data(config)
    model = build_model(config, data.tokenizer)
    train = data.stream(2, 128).to_dataset(progress=False)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=4, max_steps=6,
                             logging_steps=3, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    backend = RecordingBackend()
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=train.select(range(4)),
                      callbacks=[backend])
    callbacks = add_capacity_callbacks(trainer, data, eval_steps=3, save_report=False)
    trainer.train()
    logged_keys = set().union(*backend.logged)
    assert {"knowledge_bits", "bits_per_param", "accuracy_birth_city", "exposures", "loss"} <= logged_keys
    assert sum("loss" in logs for logs in backend.logged) == 2  # the Trainer's own loss logs survive
    metrics = trainer.evaluate()  # the user's own eval set: the Trainer's eval loss, plus the capacity metrics
    assert "eval_loss" in metrics and "eval_knowledge_bits" in metrics and "eval_bits_per_param" in metrics
    assert "eval_knowledge_bits" in backend.logged[-1] and any("eval_loss" in logs for logs in backend.logged)
    assert [h["step"] for h in callbacks["knowledge"].history] == [0, 3, 6]


def tensorboard_scalars(log_dir) -> dict[str, list]:
    """Every scalar of the TensorBoard event files under ``log_dir``: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list] = {}
    folders = sorted({path.parent for path in log_dir.rglob("events.out.tfevents.*")})
    assert folders, f"no TensorBoard event file under {log_dir}"
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return scalars


def test_every_capacity_metric_reaches_tensorboard_and_evaluate_needs_no_eval_set(tmp_path, monkeypatch):
    from hf_capacity.training import build_data

    log_dir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))  # transformers 5 reads it; no logging_dir arg
    config = tiny_config(tmp_path)
    data = build_data(config)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=4, max_steps=6,
                             logging_steps=3, report_to=["tensorboard"], use_cpu=True, save_strategy="no",
                             disable_tqdm=True)
    trainer = Trainer(model=build_model(config, data.tokenizer), args=args,
                      train_dataset=data.stream(2, 128).to_dataset(progress=False))
    add_capacity_callbacks(trainer, data, eval_steps=3, quantized=("int8",), save_report=False)
    trainer.train()
    metrics = trainer.evaluate()  # as the README shows it: the Trainer has no eval_dataset
    assert {"eval_knowledge_bits", "eval_bits_per_param", "eval_fraction_learned"} <= set(metrics)
    assert "eval_loss" not in metrics  # nothing else was evaluated

    scalars = tensorboard_scalars(log_dir)
    train_tags = ["train/knowledge_bits", "train/bits_per_param", "train/fraction_learned", "train/p1_name_loss",
                  "train/accuracy_birth_city", "train/exposures"]
    eval_tags = ["eval/knowledge_bits", "eval/bits_per_param", "eval/fraction_learned", "eval/p2_value_loss"]
    for tag in train_tags + eval_tags + ["train/bits_per_param_int8"]:
        assert tag in scalars, f"{tag} missing from TensorBoard; have {sorted(scalars)}"
        assert all(math.isfinite(value) for _, value in scalars[tag]), tag
    assert [step for step, _ in scalars["train/knowledge_bits"]] == [0, 3, 6]
    assert [step for step, _ in scalars["train/bits_per_param_int8"]] == [6]
    assert [step for step, _ in scalars["eval/knowledge_bits"]] == [6]
    assert scalars["eval/p2_value_loss"][0][1] == pytest.approx(metrics["eval_p2_value_loss"], rel=1e-6)
    assert len(scalars["train/loss"]) == 2  # the Trainer's own loss logs survive the callbacks' logging


def test_knowledge_only_periodic_evaluation_drives_metric_for_best_model(tmp_path):
    from hf_capacity.training import build_data

    config = tiny_config(tmp_path)
    data = build_data(config)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=4, max_steps=6,
                             learning_rate=3e-3, eval_strategy="steps", eval_steps=3, logging_steps=3,
                             metric_for_best_model="eval_p2_value_loss", greater_is_better=False,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    backend = RecordingBackend()
    trainer = Trainer(model=build_model(config, data.tokenizer), args=args, callbacks=[backend],
                      train_dataset=data.stream(2, 128).to_dataset(progress=False),
                      eval_dataset=KnowledgeOnlyEvalSet())
    knowledge = add_capacity_callbacks(trainer, data, eval_steps=3, save_report=False)["knowledge"]
    trainer.train()
    evaluated = [logs["eval_p2_value_loss"] for logs in backend.logged if "eval_p2_value_loss" in logs]
    assert len(evaluated) == 2 and not any("eval_loss" in logs for logs in backend.logged)
    assert trainer.state.best_metric == min(evaluated)
    assert len(knowledge.history) == 3  # step 0, 3, 6: the evaluations reused the measurements of their step


def test_exposure_callback_stops_at_the_target(tmp_path):
    config = tiny_config(tmp_path)
    from hf_capacity.training import build_data

    data = build_data(config)
    train = data.stream(4, 128).to_dataset(progress=False)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=4, max_steps=500,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=build_model(config, data.tokenizer), args=args, train_dataset=train)
    exposures = ExposureCallback(data, context_length=128, target_exposures=1.0).attach(trainer)
    knowledge = KnowledgeCapacityCallback(data).attach(trainer)
    trainer.train()
    assert trainer.state.global_step == exposures.steps_for(args, 1.0) < 500
    assert 1.0 <= exposures.exposures < 1.2
    assert knowledge.last_report is not None  # measured at the early stop too


def test_a_tiny_model_learns_real_knowledge(tmp_path):
    # 10 people × 150 exposures (~240 steps): a tiny GPT2 picks up a real share of their facts (at lr 5e-3 it now
    # learns little but the gender: p2 31.6 nats, just above the bar below; at 1e-2, 25.8)
    config = tiny_config(tmp_path, n_people=10, exposures=150, model="gpt2-2-2", head_dim=32, learning_rate=1e-2,
                         batch_size=8, warmup_steps=10)
    report, _ = train_capacity(config)
    assert report.bits.total > 0.1 * report.bits_max.total
    assert report.p2 < 0.95 * 47.59 * 0.6931  # value loss well under the cost of guessing (log S0 nats)


def test_a_tiny_model_learns_from_biod_data_with_junk_and_the_domain_token(tmp_path):
    from hf_capacity.data import JunkConfig, KnowledgeData
    from hf_capacity.params import count_parameters

    # half the windows junk (never-repeated bioD people of the same shape), ~40 steps
    biod = {"n_attributes": 1, "chunks_per_value": 4, "diversity": 8, "chunk_length": 1, "alphabet": 16}
    config = tiny_config(tmp_path, dataset="bioD", biod=biod, n_people=10, exposures=100, junk_fraction=0.5,
                         junk_n_people=100_000, domain_token=True, learning_rate=1e-2, batch_size=8)
    report, trainer = train_capacity(config)
    data = KnowledgeData.load(tmp_path / "run")
    assert data.junk == JunkConfig(0.5, 100_000) and data.domain_token and data.family == "bioD"
    useful_only = KnowledgeData(data.population, data.tokenizer, domain_token=True)
    assert len(trainer.train_dataset) > 1.6 * useful_only.stream(100, 128).estimated_windows()  # junk trained on
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["exposures"] == 100 and results["bits_max"] == pytest.approx(useful_only.bits_max().total)
    assert report.bits.total > 0 and results["bits_per_param"] > 0
    assert results["num_params"] == count_parameters(trainer.model, useful_only.used_token_ids()).paper_params


def test_bad_run_configurations():
    with pytest.raises(ValueError, match="gpt2-<layers>-<heads>"):
        CapacityTrainingConfig(model="gpt3-1-1")
    with pytest.raises(ValueError, match="dataset"):
        CapacityTrainingConfig(dataset="wiki")
    with pytest.raises(ValueError, match="eval_steps"):
        KnowledgeCapacityCallback(None, eval_steps=0)


def test_push_offline_says_so(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(RuntimeError, match="offline mode"):
        push_capacity_files(tmp_path, "someone/model")


def test_push_uploads_the_capacity_files(tmp_path, monkeypatch):
    from huggingface_hub import CommitInfo, HfApi

    uploaded = {}

    def fake_upload_folder(self, *, repo_id, folder_path, allow_patterns, commit_message, **kwargs):
        uploaded.update(repo_id=repo_id, patterns=allow_patterns, message=commit_message)
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/" + "1" * 40,
                          commit_message=commit_message, commit_description="", oid="1" * 40)

    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    push_capacity_files(tmp_path, "someone/model")
    assert uploaded["repo_id"] == "someone/model" and "results.json" in uploaded["patterns"]


def test_a_run_with_the_fused_loss_trains_like_the_plain_one(tmp_path):
    plain, _ = train_capacity(tiny_config(tmp_path / "plain", max_steps=10, learning_rate=3e-3))
    fused, trainer = train_capacity(tiny_config(tmp_path / "fused", max_steps=10, learning_rate=3e-3, fused_loss=True))
    assert trainer.model.config.fused_loss
    assert fused.p1 == pytest.approx(plain.p1, rel=1e-4) and fused.p2 == pytest.approx(plain.p2, rel=1e-4)
    with pytest.raises(ValueError, match="fused_loss is implemented for the gpt2 family"):
        tiny_config(tmp_path, model="llama-1-2", fused_loss=True)


def test_a_run_that_stored_nothing_writes_valid_json_and_no_nan(tmp_path):
    train_capacity(tiny_config(tmp_path, max_steps=2, learning_rate=1e-6, quantized=("int8",), eval_max_people=10))
    out = tmp_path / "run"

    def refuse(constant):
        raise ValueError(f"{constant} in results.json")

    results = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    assert results["bits"] == 0 and results["quantized"]["int8"]["ratio_to_full_precision"] is None
    assert 0 <= results["bits_ci95"][0] <= results["bits_ci95"][1] <= results["bits_max"]
    card = (out / "README.md").read_text()
    assert "nan" not in card.lower() and "| int8 |" in card and "n/a (the full-precision model stores no bits)" in card


def test_an_moe_run_recorded_before_the_evaluation_capacity_factor_is_not_resumed_with_it(tmp_path):
    """A folder whose training_config.json predates moe_capacity_factor_eval evaluated its experts without a token
    budget: resuming it with today's default (8) would measure another model, so it counts as another run; for a
    dense model the MoE settings do not count."""
    from hf_capacity.training import check_output_dir, run_differences

    config = tiny_config(tmp_path, num_experts=4)
    recorded = config.to_dict()
    del recorded["moe_capacity_factor_eval"]
    assert run_differences(recorded, config) == ["moe_capacity_factor_eval None → 8.0"]
    assert run_differences(recorded, tiny_config(tmp_path, num_experts=4, moe_capacity_factor_eval=None)) == []
    dense = {k: v for k, v in tiny_config(tmp_path).to_dict().items() if k != "moe_capacity_factor_eval"}
    assert run_differences(dense, tiny_config(tmp_path)) == []
    out = tmp_path / "run"
    out.mkdir()
    (out / "training_config.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="holds another run \\(moe_capacity_factor_eval None → 8.0"):
        check_output_dir(config)



def own_trainer(tmp_path, data, train, **args):
    """A user's own Trainer script: a tiny model, the given training set, a few steps."""
    settings = dict(output_dir=str(tmp_path / "own"), per_device_train_batch_size=4, max_steps=4, report_to=[],
                    use_cpu=True, save_strategy="no", disable_tqdm=True)
    model = build_model(tiny_config(tmp_path), data.tokenizer)
    return Trainer(model=model, args=TrainingArguments(**{**settings, **args}), train_dataset=train)


def test_knowledge_interleaved_into_a_corpus_without_mix_knowledge_is_refused_until_its_share_is_given(tmp_path):
    import datasets
    from transformers import TrainingArguments as documented

    from hf_capacity.training import build_data

    data = build_data(tiny_config(tmp_path))
    knowledge = data.stream(2, 64).to_dataset(progress=False)
    ids = data.tokenizer(documented.__doc__)["input_ids"]  # the user's own text, packed into 64-token windows
    corpus = datasets.Dataset.from_dict({"input_ids": [ids[i : i + 64] for i in range(0, len(ids) - 63, 64)]})
    train = datasets.interleave_datasets([corpus, knowledge], probabilities=[0.3, 0.7], seed=0)
    trainer = own_trainer(tmp_path, data, train)
    with pytest.raises(ValueError, match=r"other text.*mix_knowledge.*knowledge_fraction") as caught:
        add_capacity_callbacks(trainer, data, save_report=False)  # 30% of the tokens are not knowledge: not assumed
    assert "\n" not in str(caught.value)
    attached = trainer.callback_handler.callbacks
    assert not any(isinstance(c, (ExposureCallback, DivergenceCallback)) for c in attached)  # refused before attaching
    callbacks = add_capacity_callbacks(trainer, data, save_report=False, knowledge_fraction=0.7)
    alone = ExposureCallback(data, context_length=64).exposures_at(trainer.args, 10)  # the knowledge stream alone
    assert callbacks["exposures"].exposures_at(trainer.args, 10) == pytest.approx(0.7 * alone)


def test_a_streamed_training_set_gives_its_own_context_length(tmp_path):
    import datasets

    from hf_capacity.training import build_data

    data = build_data(tiny_config(tmp_path))
    trainer = own_trainer(tmp_path, data, data.stream(2, 256).to_iterable_dataset())
    callbacks = add_capacity_callbacks(trainer, data, save_report=False)
    assert callbacks["exposures"].context_length == 256  # read off the stream's windows, not assumed

    def ragged():  # unpacked examples: no context length to read
        for n in (64, 32):
            yield {"input_ids": [data.pad_token_id] * n}

    trainer = own_trainer(tmp_path, data, datasets.IterableDataset.from_generator(ragged))
    with pytest.raises(ValueError, match="context_length"):
        add_capacity_callbacks(trainer, data, save_report=False)



def test_the_old_argument_names_of_add_capacity_callbacks_still_work_and_warn(tmp_path):
    """exposures → max_exposures, stream_exposures → dataset_exposures, report → save_report."""
    from hf_capacity.training import build_data

    data = build_data(tiny_config(tmp_path))
    trainer = own_trainer(tmp_path, data, data.stream(2, 64).to_dataset(progress=False))
    with pytest.warns(FutureWarning) as caught:
        callbacks = add_capacity_callbacks(trainer, data, exposures=1.5, stream_exposures=2, report=False)
    assert sorted(str(w.message).split(")")[0] for w in caught) == [
        "add_capacity_callbacks(exposures=...", "add_capacity_callbacks(report=...",
        "add_capacity_callbacks(stream_exposures=...",
    ]
    assert "renamed max_exposures=..." in str(caught[0].message)
    assert callbacks["exposures"].target_exposures == 1.5 and callbacks["exposures"].stream_exposures == 2
    assert "report" not in callbacks
    with pytest.raises(TypeError, match="both 'report' and its new name 'save_report'"):
        add_capacity_callbacks(trainer, data, save_report=False, report=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'reprot'"):
        add_capacity_callbacks(trainer, data, reprot=False)

def test_two_gpus_in_one_process_train_the_stream_once_and_report_the_exposures_they_trained(tmp_path, monkeypatch):
    # Without torchrun a Trainer that sees 2 GPUs wraps the model in DataParallel: a step trains per-device batch
    # × 2 windows. Simulated on the CPU (DataParallel without CUDA runs the model as it is).
    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))
    report, trainer = train_capacity(tiny_config(tmp_path, exposures=3, batch_size=4))
    assert trainer.args.train_batch_size == 8
    assert trainer.state.global_step == math.ceil(len(trainer.train_dataset) / 8)  # one pass, not two
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["exposures"] == 3 and results["exposures_exact"] is True
    counted = next(c for c in trainer.callback_handler.callbacks if isinstance(c, ExposureCallback))
    assert counted.exposures == pytest.approx(3, rel=0.1)  # the token count (last batch partial) agrees
    # from the mean length
    assert counted.steps_for(trainer.args, 3) == pytest.approx(trainer.state.global_step, abs=1)


def test_a_run_without_eval_steps_measures_its_curve_about_ten_times(tmp_path):
    """Without eval_steps a curve of step 0 and the end alone is a straight line: ~10 measurements by default."""
    train_capacity(tiny_config(tmp_path, max_steps=20))
    out = tmp_path / "run"
    results = json.loads((out / "results.json").read_text())
    assert [h["step"] for h in results["history"]] == list(range(0, 21, 2))
    recorded = json.loads((out / "training_config.json").read_text())
    assert recorded["eval_steps"] is None and recorded["applied"]["eval_steps"] == 2  # asked and ran
    train_capacity(tiny_config(tmp_path, output_dir=str(tmp_path / "given"), max_steps=20, eval_steps=15))
    results = json.loads((tmp_path / "given" / "results.json").read_text())
    assert [h["step"] for h in results["history"]] == [0, 15, 20]  # an explicit eval_steps stays as given


def test_one_function_builds_the_trainer_arguments_of_every_run():
    """Knowledge and memorization runs get their TrainingArguments from trainer_args.capacity_training_arguments."""
    from pathlib import Path

    import hf_capacity
    from hf_capacity.memorization import MemorizationRunConfig  # noqa: F401 - the module imports cleanly
    from hf_capacity.training import training_arguments

    package = Path(hf_capacity.__file__).parent
    builders = sorted(p.name for p in package.rglob("*.py") if "TrainingArguments(" in p.read_text())
    assert builders == ["trainer_args.py"]
    args = training_arguments(CapacityTrainingConfig(output_dir="unused", n_people=8, min_lr_ratio=0.2, max_steps=50))
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.2}
    assert args.warmup_steps == 5  # the warm-up is at most a tenth of the steps

"""A run whose loss or gradients turn non-finite stops within a few steps with one clear line."""

import json
import math

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_capacity.callbacks import DivergenceCallback, TrainingDivergedError
from hf_capacity.training import CapacityTrainingConfig, build_model, train_capacity


def tiny_config(tmp_path, **overrides) -> CapacityTrainingConfig:
    settings = dict(
        output_dir=str(tmp_path / "run"), dataset="bioS", n_people=50, model="gpt2-1-1", head_dim=16,
        exposures=20, context_length=128, batch_size=8, vocab_size=400, progress=False, logging_steps=50,
    )
    return CapacityTrainingConfig(**{**settings, **overrides})


def test_a_run_at_a_huge_learning_rate_stops_within_a_few_steps_and_keeps_its_log(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step \d+ \(grad norm nan\); "
                                                    r"lower the learning rate \(now 1000\)") as caught:
        train_capacity(tiny_config(tmp_path, learning_rate=1e3))
    assert caught.value.step <= 20 and "\n" not in str(caught.value)
    out = tmp_path / "run"
    assert json.loads((out / "diverged.json").read_text())["step"] == caught.value.step
    assert json.loads((out / "training_config.json").read_text())["learning_rate"] == 1e3
    assert not (out / "model.safetensors").exists()  # no NaN model is saved as if it were a result


class PoisonWeightsAt(TrainerCallback):
    """Makes one weight infinite after step ``step``: the next step's gradients are NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = math.inf


def test_the_callback_in_a_users_trainer_names_the_last_checkpoint_before_the_divergence(tmp_path, bios_data):
    model = build_model(tiny_config(tmp_path, learning_rate=1e-3), bios_data.tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path / "own"), per_device_train_batch_size=4, max_steps=20, save_steps=2,
        save_strategy="steps", report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=50,
    )
    trainer = Trainer(model=model, args=args, train_dataset=bios_data.stream(2, 64).to_dataset(progress=False))
    trainer.add_callback(PoisonWeightsAt(step=5))
    trainer.add_callback(DivergenceCallback())
    with pytest.raises(TrainingDivergedError, match="at step 6") as caught:
        trainer.train()
    assert caught.value.last_checkpoint == str(tmp_path / "own" / "checkpoint-4")
    assert str(caught.value).endswith(f"last finite checkpoint: {tmp_path / 'own' / 'checkpoint-4'}")
    assert sorted(p.name for p in (tmp_path / "own").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_checking_every_few_steps_still_reports_the_first_bad_step(tmp_path, bios_data):
    model = build_model(tiny_config(tmp_path, learning_rate=1e-3), bios_data.tokenizer)
    args = TrainingArguments(output_dir=str(tmp_path / "own"), per_device_train_batch_size=4, max_steps=20,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=bios_data.stream(2, 64).to_dataset(progress=False))
    trainer.add_callback(PoisonWeightsAt(step=3))
    trainer.add_callback(DivergenceCallback(check_every=5))
    with pytest.raises(TrainingDivergedError, match="at step 4 "):
        trainer.train()
    assert trainer.state.global_step == 4  # found at the check of step 5, before its optimizer step


def test_a_healthy_run_is_not_stopped(tmp_path):
    report, trainer = train_capacity(tiny_config(tmp_path, learning_rate=1e-3, max_steps=6))
    assert trainer.state.global_step == 6 and math.isfinite(report.p1) and math.isfinite(report.bits_per_param)


def test_on_a_gpu_the_default_reads_the_device_flag_once_a_logging_interval(tmp_path):
    # Reading the accumulated non-finite flag from an accelerator is a host sync: by default it happens every
    # logging step (at most 50 apart) there, and every step only on the CPU, where it costs nothing.
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    model = torch.nn.Linear(2, 1)
    args = SimpleNamespace(device=torch.device("cuda"), fp16=False, output_dir=str(tmp_path), learning_rate=1e-3)
    state = TrainerState(max_steps=100, logging_steps=10)
    callback = DivergenceCallback()
    for step in range(9):  # steps 1..9: the gradients of step 4 are NaN, and nothing is read yet
        state.global_step = step
        model.weight.grad = torch.full_like(model.weight, math.nan if step == 3 else 1.0)
        callback.on_pre_optimizer_step(args, state, TrainerControl(), model=model)
    state.global_step = 9
    with pytest.raises(TrainingDivergedError, match="at step 4 "):  # read at step 10, naming the first bad step
        callback.on_pre_optimizer_step(args, state, TrainerControl(), model=model)

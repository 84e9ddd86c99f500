"""Trainer callbacks: knowledge bits during training, exposure counting, quantized capacity, results + card + Hub.

Callbacks only react to Trainer events; the work lives in ``evaluation``, ``quantization`` and ``report``.
Metrics logged from a callback reach the ``report_to`` backends only through ``trainer.log``, so each callback
is *attached* to its trainer (``callback.attach(trainer)``, or all at once with ``add_capacity_callbacks``).
Without a trainer reference the metrics still land in ``trainer.state.log_history``.

    trainer = Trainer(model=model, args=args, train_dataset=data.stream(100).to_dataset())
    add_capacity_callbacks(trainer, data, max_exposures=100)   # the one added line
    trainer.train()
    trainer.evaluate()   # no eval_dataset needed: eval_knowledge_bits, eval_bits_per_param, ...

Attaching ``KnowledgeCapacityCallback`` lets ``trainer.evaluate()`` run without an eval dataset (see
``allow_knowledge_only_evaluate``); for the Trainer's periodic evaluation (``eval_strategy="steps"``, e.g. with
``metric_for_best_model="eval_bits_per_param"``), whose check at construction demands an eval dataset, pass
``eval_dataset=KnowledgeOnlyEvalSet()``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from transformers import TrainerCallback

from .adapters import adapter_summary, base_population_summary
from .checkpoints import last_checkpoint
from .data.knowledge_data import KnowledgeData
from .evaluation import KnowledgeReport, PriorKnowledge, evaluate_knowledge
from .report import push_capacity_files, write_run_files
from .steps import tokens_per_step

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """Training stopped because the loss or the gradient norm became non-finite (raised out of
    ``trainer.train()`` by ``DivergenceCallback``). ``str(err)`` is one line meant for the user; ``step`` is the
    first step seen diverging and ``last_checkpoint`` the newest checkpoint saved before it (or None)."""

    def __init__(self, message: str, step: int | None = None, last_checkpoint: str | None = None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint


class _TrainerBoundCallback(TrainerCallback):
    """A callback that can log through its trainer so values reach every ``report_to`` backend."""

    trainer = None

    def attach(self, trainer):
        """Add this callback to ``trainer`` and keep a reference to it for logging. Returns ``self``."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def _log(self, state, control, metrics: dict[str, float]) -> None:
        if self.trainer is None:
            state.log_history.append({**metrics, "step": state.global_step})
            return
        # trainer.log → on_log resets control.should_log: keep the Trainer's own decision for this step
        saved = (control.should_log, control.should_evaluate, control.should_save)
        self.trainer.log(dict(metrics))
        control.should_log, control.should_evaluate, control.should_save = saved


class _PeriodicMeasurementCallback(_TrainerBoundCallback):
    """Measures every ``eval_steps`` steps and at the last step (max_steps reached, or a stop asked by a callback
    before this one, e.g. ExposureCallback), logging through the trainer. Subclasses define ``_metrics(model,
    step)``: measure, record in ``history``, set ``_measured_step``, return the scalars to log."""

    def __init__(self, eval_steps: int | None):
        if eval_steps is not None and eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 (or None: only at the end), got {eval_steps}")
        self.eval_steps = eval_steps
        self.history: list[dict] = []
        self._measured_step = -1

    def _metrics(self, model, step: int) -> dict[str, float]:
        raise NotImplementedError

    def _restore_history(self, state, key: str) -> bool:
        """Resumed from a checkpoint (``state.global_step`` > 0, nothing measured yet): refill ``history`` with the
        measurements logged up to its step, read from the restored ``state.log_history`` (entries holding ``key``).
        Returns whether the run resumed."""
        if state.global_step == 0 or self.history:
            return False
        self.history = [{"step": entry["step"], **{k: v for k, v in entry.items() if k not in ("epoch", "step")}}
                        for entry in state.log_history if key in entry and entry.get("step", 0) <= state.global_step]
        self._measured_step = self.history[-1]["step"] if self.history else -1
        return True

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        due = self.eval_steps is not None and step % self.eval_steps == 0
        last = step >= state.max_steps or control.should_training_stop
        if (due or last) and step != self._measured_step:
            self._log(state, control, self._metrics(model, step))


class KnowledgeOnlyEvalSet(Dataset):
    """An empty stand-in eval dataset: ``trainer.evaluate()`` then measures knowledge only.

    ``Trainer`` refuses ``eval_strategy="steps"``/``"epoch"`` without an eval dataset (checked when it is built).
    Pass ``eval_dataset=KnowledgeOnlyEvalSet()`` to evaluate on the capacity metrics alone: once
    ``KnowledgeCapacityCallback`` is attached (``add_capacity_callbacks``), such an evaluation skips the
    Trainer's loss loop and returns ``eval_knowledge_bits``, ``eval_bits_per_param``, ... (so that
    ``metric_for_best_model="eval_bits_per_param"`` and ``load_best_model_at_end`` work).
    """

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index):
        raise IndexError("KnowledgeOnlyEvalSet holds no examples: the capacity callbacks measure knowledge instead")


def allow_knowledge_only_evaluate(trainer) -> None:
    """Let ``trainer.evaluate()`` run without an eval dataset, measuring only what the callbacks measure.

    Wraps the instance's ``evaluate`` (once; the class is untouched): when no eval dataset is given and the
    trainer has none (or has a ``KnowledgeOnlyEvalSet``), the Trainer's loss loop is skipped and the callbacks'
    ``on_evaluate`` fill the metrics (``KnowledgeCapacityCallback`` adds ``eval_knowledge_bits``, ...), which it
    returns and which drive ``metric_for_best_model`` as usual. With a real eval dataset nothing changes.
    Called by ``KnowledgeCapacityCallback.attach``.
    """
    original = trainer.evaluate
    if getattr(original, "_knowledge_only", False):
        return

    @functools.wraps(original)
    def evaluate(eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        chosen = trainer.eval_dataset if eval_dataset is None else eval_dataset
        if chosen is not None and not isinstance(chosen, KnowledgeOnlyEvalSet):
            return original(eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        metrics: dict[str, float] = {}
        trainer.control = trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics)
        return metrics

    evaluate._knowledge_only = True
    trainer.evaluate = evaluate


class KnowledgeCapacityCallback(_PeriodicMeasurementCallback):
    """Measures knowledge bits and bits/param at step 0, every ``eval_steps`` steps, on every evaluate(), and at
    the end.

    Logged: ``knowledge_bits``, ``bits_per_param``, ``fraction_learned``, ``p1_name_loss``, ``p2_value_loss``
    and ``accuracy_<attribute>``; in ``evaluate()`` results with the ``eval_`` prefix (usable as
    ``metric_for_best_model="eval_bits_per_param"``), also logged to the ``report_to`` backends when attached.
    ``history`` keeps every measurement (from step 0 unless ``measure_at_start=False`` or resumed); ``last_report``
    the latest ``KnowledgeReport``. With ``prior`` (``evaluation.PriorKnowledge``: an adapter run's base model on the
    new people) every measurement counts the bits gained over it, so the curve starts at 0. Attaching it
    (``attach``) also lets ``trainer.evaluate()`` run without an eval dataset (``allow_knowledge_only_evaluate``).
    """

    def __init__(
        self,
        data: KnowledgeData,
        eval_steps: int | None = None,
        *,
        max_people: int | None = None,
        batch_size: int = 64,
        renderings: int = 1,
        on_evaluate: bool = True,
        progress: bool = False,
        measure_at_start: bool = True,
        prior: PriorKnowledge | None = None,
    ):
        super().__init__(eval_steps)
        self.data = data
        self.prior = prior
        self.eval_kwargs = dict(max_people=max_people, batch_size=batch_size, renderings=renderings, progress=progress)
        self.measure_on_evaluate = on_evaluate
        self.measure_at_start = measure_at_start
        self.last_report: KnowledgeReport | None = None

    def attach(self, trainer):
        """Add this callback to ``trainer`` (logging through it) and let ``trainer.evaluate()`` run without an
        eval dataset. Returns ``self``."""
        allow_knowledge_only_evaluate(trainer)
        return super().attach(trainer)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # resumed from a checkpoint: the measurements made before it are in the restored log history
        if self._restore_history(state, "knowledge_bits"):
            return
        if state.global_step == 0 and self.measure_at_start and self._measured_step != 0:
            self._log(state, control, self.measure(model, 0).log_metrics())  # the curve's first point

    def measure(self, model, step: int) -> KnowledgeReport:
        report = evaluate_knowledge(model, self.data, **self.eval_kwargs)
        if self.prior is not None:
            report = self.prior.apply(report)
        self.last_report, self._measured_step = report, step
        self.history.append({"step": step, **report.log_metrics()})
        return report

    def _metrics(self, model, step: int) -> dict[str, float]:
        return self.measure(model, step).log_metrics()

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if not self.measure_on_evaluate or metrics is None:
            return
        report = (
            self.last_report if self._measured_step == state.global_step else self.measure(model, state.global_step)
        )
        measured = report.log_metrics(prefix="eval_")
        metrics.update(measured)  # evaluate()'s return value and metric_for_best_model
        if self.trainer is not None:  # the Trainer logged its own eval metrics before on_evaluate: log ours
            self._log(state, control, measured)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._measured_step != state.global_step:  # stopped after on_step_end (e.g. by early stopping)
            self._log(state, control, self.measure(model, state.global_step).log_metrics())


class ForgettingCallback(_TrainerBoundCallback):
    """Knowledge of another population (an adapter run's base population) at the start and at the end of
    training: what fine-tuning on new people costs the old ones.

    Logged as ``base_knowledge_bits``, ``base_fraction_learned`` and ``base_p1_name_loss``/``base_p2_value_loss``
    at step 0 and at the end (so both reach every backend); ``summary()`` gives bits before, after and forgotten.
    """

    PREFIX = "base_"
    KEYS = ("knowledge_bits", "fraction_learned", "p1_name_loss", "p2_value_loss")

    def __init__(self, data: KnowledgeData, *, max_people: int | None = None, batch_size: int = 64):
        self.data = data
        self.eval_kwargs = dict(max_people=max_people, batch_size=batch_size, progress=False)
        self.before: KnowledgeReport | None = None
        self.after: KnowledgeReport | None = None
        self._before_bits: float | None = None

    def _measure(self, state, control, model) -> KnowledgeReport:
        report = evaluate_knowledge(model, self.data, **self.eval_kwargs)
        metrics = report.log_metrics(prefix=self.PREFIX)
        self._log(state, control, {f"{self.PREFIX}{k}": metrics[f"{self.PREFIX}{k}"] for k in self.KEYS})
        return report

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.before = self._measure(state, control, model)
            self._before_bits = self.before.bits.total
        else:  # resumed: the step-0 measurement is in the restored log history
            key = f"{self.PREFIX}knowledge_bits"
            first = [e[key] for e in state.log_history if key in e and e.get("step", 0) == 0]
            self._before_bits = first[0] if first else None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = self._measure(state, control, model)

    def summary(self) -> dict | None:
        """``{"n_people", "num_params", "bits_max", "bits_before", "bits_after", "bits_forgotten",
        "fraction_kept"}`` (``adapters.base_population_summary``: bits; ``num_params``: the base model's P counted
        on its own population's tokens), or None before the end of training."""
        if self.after is None:
            return None
        return base_population_summary(self.data.population.n_people, self._before_bits, self.after)


class DivergenceCallback(TrainerCallback):
    """Stops a run whose gradient norm or logged loss turns non-finite, with one clear line.

    Every ``check_every`` optimizer steps, and at the last one, it reads whether any gradient of the steps since
    was NaN or inf (the norms are accumulated on the device in between; a read is one host sync, before the
    optimizer step). By default (``check_every=None``) that is every step on the CPU, where a read costs nothing,
    and on a GPU every logging step, at most ``GPU_CHECK_EVERY`` = 50 steps apart, so the run waits for the device
    no more often than the Trainer's own loss log does; the step named is the first bad one either way. On every
    log it also checks whether the loss or grad norm is non-finite (the Trainer's ``logging_nan_inf_filter`` hides
    NaN losses from the log otherwise). It then raises ``TrainingDivergedError`` out of ``trainer.train()``, e.g.
    ``training diverged at step 8 (grad norm nan); lower the learning rate (now 1000.0)``, naming the last
    checkpoint saved before that step if any. With fp16 mixed precision inf gradients are the loss scaler's
    business (it skips those steps), so only the logged loss is checked there.

        trainer.add_callback(DivergenceCallback())   # in your own Trainer script
    """

    GPU_CHECK_EVERY = 50

    def __init__(self, check_every: int | None = None):
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be >= 1 (or None: every step on the CPU, every logging step on a "
                             f"GPU), got {check_every}")
        self.check_every = check_every
        self._nonfinite = None  # device tensor: a gradient of the steps since the last check was non-finite
        self._first_bad_step = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None or args.fp16:
            return
        import torch

        norms = [torch.linalg.vector_norm(p.grad.detach()) for p in model.parameters() if p.grad is not None]
        if not norms:
            return
        bad = ~torch.isfinite(torch.stack(norms).sum())
        if self._nonfinite is None:
            self._nonfinite = bad
            self._first_bad_step = torch.where(bad, state.global_step + 1, 0)
        else:
            self._first_bad_step = torch.where(bad & ~self._nonfinite, state.global_step + 1, self._first_bad_step)
            self._nonfinite = self._nonfinite | bad
        step = state.global_step + 1  # the step this optimizer step completes
        if (step % self._interval(args, state) == 0 or step >= state.max_steps) and bool(self._nonfinite):
            self._diverged(args, int(self._first_bad_step), "grad norm nan")

    def _interval(self, args, state) -> int:
        """Optimizer steps between reads of the device flag (see the class docstring)."""
        if self.check_every is not None:
            return self.check_every
        if args.device.type == "cpu":
            return 1
        return max(1, min(int(state.logging_steps or self.GPU_CHECK_EVERY), self.GPU_CHECK_EVERY))

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._diverged(args, state.global_step, f"{key.replace('_', ' ')} {value}")

    @staticmethod
    def _diverged(args, step: int, reason: str) -> None:
        checkpoint = last_checkpoint(args.output_dir, before_step=step)
        message = f"training diverged at step {step} ({reason}); lower the learning rate (now {args.learning_rate:g})"
        if checkpoint:
            message += f"; last finite checkpoint: {checkpoint}"
        raise TrainingDivergedError(message, step=step, last_checkpoint=checkpoint)


class MemorizationCallback(_PeriodicMeasurementCallback):
    """Measures memorized bits of random sequences (``hf_capacity.memorization``) every ``eval_steps`` steps and
    at the end, and with the ``eval_`` prefix on every evaluate(): ``memorized_bits``, ``memorized_bits_per_param``,
    ``memorized_fraction`` (and ``heldout_memorized_bits`` when ``held_out`` is given: ≈ 0 for a model that
    memorized rather than learned a rule). ``history`` keeps every measurement (a run resumed from a checkpoint
    starts with those logged up to it)."""

    def __init__(self, sequences, eval_steps: int | None = None, *, held_out=None, num_params: int | None = None):
        super().__init__(eval_steps)
        self.sequences, self.held_out, self.num_params = sequences, held_out, num_params
        self.last_report = None

    def measure(self, model, step: int) -> dict[str, float]:
        from .memorization import memorized_bits

        self.last_report = memorized_bits(model, self.sequences, num_params=self.num_params)
        metrics = self.last_report.log_metrics()
        if self.held_out is not None:
            held_out = memorized_bits(model, self.held_out, num_params=self.num_params)
            metrics["heldout_memorized_bits"] = held_out.bits_total
        self._measured_step = step
        self.history.append({"step": step, **metrics})
        return metrics

    _metrics = measure

    def on_train_begin(self, args, state, control, **kwargs):
        self._restore_history(state, "memorized_bits")  # resumed: the curve so far is in the restored log history

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if metrics is not None:
            current = self.history[-1] if self._measured_step == state.global_step else {
                "step": state.global_step, **self.measure(model, state.global_step)}
            metrics.update({f"eval_{k}": v for k, v in current.items() if k != "step"})


class ExposureCallback(_TrainerBoundCallback):
    """Counts exposures (times each person has been seen, on average) and optionally stops at a target.

    exposures = tokens trained on × useful fraction × knowledge fraction / (N × mean tokens per biography);
    tokens trained on = step × ``steps.tokens_per_step`` (the Trainer's batch, GPUs of one process included, ×
    gradient accumulation × processes × context length); the useful fraction leaves out junk windows, the
    knowledge fraction a user's own corpus mixed in (the share of windows that are knowledge: taken as given here;
    ``add_capacity_callbacks`` measures it from the training set or refuses to guess). Logged as ``exposures``.
    """

    def __init__(
        self,
        data: KnowledgeData,
        context_length: int,
        target_exposures: float | None = None,
        stream_exposures: int | None = None,
        knowledge_fraction: float = 1.0,
    ):
        if target_exposures is not None and target_exposures <= 0:
            raise ValueError(f"target_exposures must be > 0, got {target_exposures}")
        if not 0 < knowledge_fraction <= 1:
            raise ValueError(f"knowledge_fraction must lie in (0, 1], got {knowledge_fraction}")
        self.context_length = context_length
        self.target_exposures = target_exposures
        self.stream_exposures = stream_exposures
        self.exact_exposures: int | None = None  # set at the end when training covered whole passes
        useful = 1.0 - (data.junk.fraction if data.junk else 0.0)
        self.tokens_per_exposure = (data.population.n_people * data.renderer.mean_tokens_per_biography()
                                    / (useful * knowledge_fraction))
        self.exposures = 0.0

    def exposures_at(self, args, step: int) -> float:
        """Average exposures after ``step`` optimizer steps with ``args``' batch (``steps.tokens_per_step``)."""
        return step * tokens_per_step(args, self.context_length) / self.tokens_per_exposure

    def steps_for(self, args, exposures: float) -> int:
        """Training steps needed for ``exposures`` exposures with ``args``' batch size."""
        return math.ceil(exposures * self.tokens_per_exposure / tokens_per_step(args, self.context_length))

    def on_step_end(self, args, state, control, **kwargs):
        self.exposures = self.exposures_at(args, state.global_step)
        if self.target_exposures is not None and self.exposures >= self.target_exposures:
            control.should_training_stop = True
            control.should_log = True
        if control.should_log:
            self._log(state, control, {"exposures": round(self.exposures, 3)})

    def on_train_end(self, args, state, control, **kwargs):
        # a map-style stream of E exposures trained for exactly k whole passes showed every person k·E times
        passes = state.epoch or 0.0
        whole = round(passes)
        if self.stream_exposures is not None and whole >= 1 and abs(passes - whole) < 1e-6:
            self.exact_exposures = whole * self.stream_exposures

    def describe(self) -> str:
        """The exposures for a card: the exact count of every person, or the average with what it means."""
        if self.exact_exposures is not None:
            return f"{self.exact_exposures} (every person exactly)"
        return f"≈ {self.exposures:.1f} (average: tokens trained on / tokens in one exposure of every person)"


class QuantizedCapacityCallback(_TrainerBoundCallback):
    """At the end of training, measures bits after quantization: int8 and 4-bit (nf4, fp4) with bitsandbytes, and
    GPTQ int4/int8 (``gptq-int4``, ``gptq-int8``, the paper's method); see ``hf_capacity.quantization``.

    Logs ``bits_per_param_<scheme>`` and ``quantized_ratio_<scheme>`` (bits after / bits before) at the last
    step, while the ``report_to`` backends are still open (or at ``on_train_end`` when training stopped after
    its last ``on_step_end``); ``results`` holds the ``QuantizedCapacity`` objects. Attach it after
    ``knowledge_callback`` so that the full-precision report of the last step is measured first.
    """

    def __init__(
        self,
        data: KnowledgeData,
        schemes: tuple[str, ...] = ("int8", "nf4", "fp4"),
        knowledge_callback: KnowledgeCapacityCallback | None = None,
        **eval_kwargs,
    ):
        from .quantization import check_schemes

        check_schemes(schemes)
        self.data, self.schemes, self.knowledge_callback = data, tuple(schemes), knowledge_callback
        self.eval_kwargs = {"progress": False, "distributed": False, **eval_kwargs}  # runs on rank 0 only
        self.results: dict = {}
        self._measured_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step >= state.max_steps or control.should_training_stop:
            self._measure(state, control, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._measured_step != state.global_step:
            self._measure(state, control, model)

    def _measure(self, state, control, model) -> None:
        from .quantization import quantized_capacity

        self._measured_step = state.global_step
        if not state.is_world_process_zero:
            return
        full = self.knowledge_callback.last_report if self.knowledge_callback else None
        if full is not None and self.knowledge_callback._measured_step != state.global_step:
            full = None  # an older report: quantized_capacity measures the full-precision model itself
        self.results = quantized_capacity(model, self.data, self.schemes, full_precision=full, **self.eval_kwargs)
        metrics = {}
        for scheme, q in self.results.items():
            metrics[f"bits_per_param_{scheme}"] = q.bits_per_param
            metrics[f"quantized_ratio_{scheme}"] = q.ratio_to_full_precision
        self._log(state, control, metrics)
        logger.info("quantized capacity: %s", metrics)

    def summary(self) -> dict[str, dict]:
        return {
            s: {"bits_per_param": q.bits_per_param, "ratio_to_full_precision": q.ratio_to_full_precision,
                "bits": q.report.bits.total}
            for s, q in self.results.items()
        }


class CapacityReportCallback(_TrainerBoundCallback):
    """At the end of training writes ``results.json``, ``knowledge_curve.png`` and a Hub model card
    (``README.md`` with ``model-index`` results) into the output dir; with ``push_to_hub`` it pushes the model
    (``trainer.push_to_hub``) and then these files over the Trainer's own card."""

    def __init__(
        self,
        knowledge_callback: KnowledgeCapacityCallback,
        *,
        exposure_callback: ExposureCallback | None = None,
        quantized_callback: QuantizedCapacityCallback | None = None,
        forgetting_callback: ForgettingCallback | None = None,
        base_model: str | None = None,
        model_name: str | None = None,
    ):
        self.knowledge_callback = knowledge_callback
        self.exposure_callback = exposure_callback
        self.quantized_callback = quantized_callback
        self.forgetting_callback = forgetting_callback
        self.base_model = base_model  # a fully fine-tuned model's base (a PeftModel names its own)
        self.model_name = model_name
        self.written: list[Path] = []

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.publish(args, state, model)

    def publish(self, args, state, model) -> list[Path]:
        """Write the files into ``args.output_dir``; with ``push_to_hub``, push the model, then the files."""
        self.written = self.write(args.output_dir, model, args=args, state=state)
        if args.push_to_hub and self.trainer is not None:
            self.trainer.push_to_hub(commit_message="hf-capacity: model")
            # the Trainer's card replaced ours
            self.written = self.write(args.output_dir, model, args=args, state=state)
            push_capacity_files(args.output_dir, self.trainer.hub_model_id, token=args.hub_token)
        return self.written

    def write(self, output_dir, model, *, args=None, state=None) -> list[Path]:
        """Gather what the other callbacks measured and write the run's files (``report.write_run_files``)."""
        report = self.knowledge_callback.last_report
        if report is None:
            raise RuntimeError("no knowledge report was measured: is KnowledgeCapacityCallback on the trainer?")
        exposures = self.exposure_callback.exposures if self.exposure_callback else None
        exact = self.exposure_callback.exact_exposures if self.exposure_callback else None
        per_step = self.exposure_callback.exposures_at(args, 1) if self.exposure_callback and args else None
        if exact is not None and state is not None and state.global_step:  # whole passes: the curve ends at the count
            per_step = exact / state.global_step
        adapter = adapter_summary(model) if model is not None else None
        if adapter is None and self.base_model is not None:
            adapter = {"method": "full", "base_model": self.base_model}
        return write_run_files(
            output_dir, report, history=self.knowledge_callback.history, exposures=exposures, exact_exposures=exact,
            exposures_per_step=per_step,
            exposures_described=self.exposure_callback.describe() if self.exposure_callback else None,
            quantized=self.quantized_callback.summary() if self.quantized_callback else None,
            model_type=getattr(getattr(model, "config", None), "model_type", None), adapter=adapter,
            base_population=self.forgetting_callback.summary() if self.forgetting_callback else None,
            model_name=self.model_name, args=args, state=state,
        )


SAMPLED_WINDOWS = 64
"""Training windows ``add_capacity_callbacks`` reads to learn the context length and to check that the training set
is knowledge (spread over a map-style set; the first ones of a stream)."""


def _sample_windows(dataset, count: int = SAMPLED_WINDOWS) -> list:
    """Up to ``count`` examples of a training set: evenly spread over a map-style one, the first ones of a stream."""
    import torch

    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        return list(itertools.islice(dataset, count))
    n = len(dataset)
    return [dataset[int(i)] for i in np.unique(np.linspace(0, n - 1, min(count, n)).round())]


def _read_context_length(windows: list) -> int:
    """The one length (tokens) of the sampled training windows, or a ValueError saying to pass it."""
    lengths = sorted({len(w["input_ids"]) for w in windows if "input_ids" in w})
    if len(lengths) != 1 or len(windows) == 0 or not all("input_ids" in w for w in windows):
        seen = f"windows of {lengths[:5]} tokens" if lengths else "no input_ids"
        raise ValueError(f"cannot read the context length off the training set ({seen} among its first "
                         f"{len(windows)} examples): pack it into windows of one length, or pass context_length= to "
                         "add_capacity_callbacks")
    return lengths[0]


def _other_text_windows(windows: list, data: KnowledgeData) -> int:
    """How many ``windows`` hold tokens that no rendering of ``data`` produces (text other than the knowledge stream).

    With the project tokenizer the rendering tokens are exact, so one such token decides; a user's tokenizer's are
    read off sampled renderings and may miss a rare merge, so a window needs more than 1% of them (at least 2)."""
    from .data.knowledge_data import is_project_tokenizer

    known = np.asarray([*data.training_token_ids(), data.pad_token_id])
    exact = is_project_tokenizer(data.tokenizer)
    other = 0
    for window in windows:
        ids = np.asarray(window["input_ids"]).reshape(-1)
        mask = window.get("attention_mask")
        if mask is not None:
            ids = ids[np.asarray(mask).reshape(-1) != 0]
        unknown = int((~np.isin(ids, known)).sum())
        other += unknown > (0 if exact else max(1, len(ids) // 100))
    return other


def _knowledge_fraction(dataset, windows: list, data: KnowledgeData, given: float | None) -> float:
    """The share of the training windows that are knowledge windows: ``given``; else measured from the
    ``knowledge`` column of a ``mix_knowledge`` dataset; else 1 for the knowledge stream alone. A training set
    holding other text without that column is refused rather than counted as knowledge."""
    from .data.stream import KNOWLEDGE_COLUMN

    if given is not None:
        if not 0 < given <= 1:
            raise ValueError(f"knowledge_fraction must lie in (0, 1], got {given}")
        return float(given)
    if windows and KNOWLEDGE_COLUMN in windows[0]:
        if not hasattr(dataset, "__len__") or KNOWLEDGE_COLUMN not in (getattr(dataset, "column_names", None) or []):
            raise ValueError(f"the training set streams a {KNOWLEDGE_COLUMN!r} column whose share cannot be counted "
                             "ahead: pass knowledge_fraction= (the share of knowledge windows) to "
                             "add_capacity_callbacks")
        flags = dataset[KNOWLEDGE_COLUMN]
        return max(sum(flags) / len(flags), 1e-12)
    other = _other_text_windows(windows, data)
    if other:
        raise ValueError(
            f"the training set holds other text besides the knowledge stream ({other} of {len(windows)} sampled "
            "windows): mix your corpus in with hf_capacity.data.mix_knowledge (exposures counted exactly), or pass "
            "knowledge_fraction= (the share of knowledge windows) to add_capacity_callbacks"
        )
    return 1.0


_RENAMED_ARGUMENTS = {"exposures": "max_exposures", "report": "save_report", "stream_exposures": "dataset_exposures"}
"""``add_capacity_callbacks``' old keywords → their new names (the old ones still work, with a FutureWarning)."""


def _renamed_arguments(renamed: dict, **given) -> tuple:
    """``given`` (the new keywords' values, in order) with the values passed under old names put in; a FutureWarning
    for each old name, a TypeError for an unknown keyword or for a value passed under both names."""
    defaults = {"max_exposures": None, "save_report": True, "dataset_exposures": None}
    for old, value in renamed.items():
        if old not in _RENAMED_ARGUMENTS:
            raise TypeError(f"add_capacity_callbacks() got an unexpected keyword argument {old!r}")
        new = _RENAMED_ARGUMENTS[old]
        if given[new] != defaults[new]:
            raise TypeError(f"add_capacity_callbacks() got both {old!r} and its new name {new!r}: pass {new!r} only")
        warnings.warn(f"add_capacity_callbacks({old}=...) is renamed {new}=...; {old} will be removed in a future "
                      "version", FutureWarning, stacklevel=3)
        given[new] = value
    return tuple(given.values())


def add_capacity_callbacks(
    trainer,
    data: KnowledgeData,
    *,
    eval_steps: int | None = None,
    max_exposures: float | None = None,
    context_length: int | None = None,
    quantized: tuple[str, ...] = (),
    save_report: bool = True,
    max_people: int | None = None,
    divergence: bool = True,
    dataset_exposures: int | None = None,
    knowledge_fraction: float | None = None,
    prior: PriorKnowledge | None = None,
    **renamed,
) -> dict[str, TrainerCallback]:
    """Attach the capacity callbacks to ``trainer`` in one call; returns them by name.

    Every metric they measure reaches the ``report_to`` backends and ``trainer.state.log_history``: knowledge
    (at step 0, every ``eval_steps`` and at the end), ``exposures``, the quantized ``bits_per_param_<scheme>``
    and, on ``trainer.evaluate()``, the ``eval_*`` ones, which ``evaluate()`` also returns. ``evaluate()`` needs
    no eval dataset (``allow_knowledge_only_evaluate``).

    ``max_exposures``: stop at this many exposures (ExposureCallback); ``quantized``: schemes to measure at the
    end, e.g. ("int8", "nf4"); ``save_report``: write results.json, plot and model card into the output dir;
    ``divergence``: stop with ``TrainingDivergedError`` when the loss or gradients turn non-finite;
    ``dataset_exposures``: the E the training set was built with (``data.stream(E, ...)``), so that a run over
    whole passes reports every person's exact exposure count instead of the token-based average; ``prior``: what
    the model knew of these people before training (an adapter run's base), which the knowledge bits are net of.
    (The old names ``exposures``, ``report`` and ``stream_exposures`` still work, with a FutureWarning.)

    Exposures are counted from the training set, never assumed: ``context_length`` defaults to the length of its
    windows (a map-style set or a stream alike); the share of knowledge in it is the ``knowledge`` column of a
    ``mix_knowledge`` dataset, 1 for the knowledge stream alone, or ``knowledge_fraction`` (the share of windows
    that are knowledge, for a corpus mixed in by other means, e.g. ``datasets.interleave_datasets``). A training
    set that holds other text (tokens no rendering produces, in ``SAMPLED_WINDOWS`` windows read ahead) without
    either is refused with a ValueError, before anything is attached.
    """
    if renamed:
        max_exposures, save_report, dataset_exposures = _renamed_arguments(
            renamed, max_exposures=max_exposures, save_report=save_report, dataset_exposures=dataset_exposures
        )
    windows = _sample_windows(trainer.train_dataset) if context_length is None or knowledge_fraction is None else []
    context = context_length if context_length is not None else _read_context_length(windows)
    fraction = _knowledge_fraction(trainer.train_dataset, windows, data, knowledge_fraction)
    callbacks: dict[str, TrainerCallback] = {}
    if divergence:
        callbacks["divergence"] = DivergenceCallback()
        trainer.add_callback(callbacks["divergence"])
    # before the knowledge callback, so that a stop at the target exposures is measured at that very step
    callbacks["exposures"] = ExposureCallback(
        data, context, max_exposures, dataset_exposures, knowledge_fraction=fraction
    ).attach(trainer)
    knowledge = KnowledgeCapacityCallback(data, eval_steps, max_people=max_people, prior=prior).attach(trainer)
    callbacks["knowledge"] = knowledge
    if quantized:
        callbacks["quantized"] = QuantizedCapacityCallback(
            data, tuple(quantized), knowledge, max_people=max_people
        ).attach(trainer)
    if save_report:
        callbacks["report"] = CapacityReportCallback(
            knowledge, exposure_callback=callbacks["exposures"], quantized_callback=callbacks.get("quantized")
        ).attach(trainer)
    return callbacks

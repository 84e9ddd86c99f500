"""One place that turns a run's recipe into ``transformers.TrainingArguments``: knowledge runs
(``training.training_arguments``) and memorization runs (``memorization.train_memorization``) share it.

The recipe both use: AdamW with a cosine schedule decaying to ``min_lr_ratio`` of the peak after a linear warm-up,
the CPU when no GPU is there, tqdm bars only when asked for.
"""

from __future__ import annotations

from typing import Any


def capacity_training_arguments(
    *,
    output_dir: str,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    adam_beta2: float,
    min_lr_ratio: float,
    warmup_steps: int,
    max_steps: int,
    logging_steps: int,
    seed: int,
    report_to: Any,
    progress: bool,
    bf16: bool = False,
    adam_epsilon: float | None = None,
    gradient_accumulation_steps: int = 1,
    save_steps: int = 0,
    save_total_limit: int | None = None,
    **extra: Any,
):
    """``TrainingArguments`` for a run of ``max_steps`` optimizer steps (-1: set later) of ``batch_size`` sequences
    a device; ``warmup_steps`` as given (the caller caps it); ``save_steps`` 0 saves no checkpoints;
    ``adam_epsilon`` None keeps transformers' default. ``extra`` goes to ``TrainingArguments`` as is (e.g.
    ``push_to_hub``, ``torch_compile``)."""
    import torch
    from transformers import TrainingArguments

    if adam_epsilon is not None:
        extra["adam_epsilon"] = adam_epsilon
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        adam_beta2=adam_beta2,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": min_lr_ratio},
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=save_total_limit,
        report_to=report_to,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        disable_tqdm=not progress,
        **extra,
    )

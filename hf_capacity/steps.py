"""What one optimizer step trains on, in tokens: the rule behind a run's step count (``training``), its exposure
counter (``callbacks.ExposureCallback``) and the sweep table's token column. A module of its own so that each of
them imports it without importing the others."""

from __future__ import annotations


def tokens_per_step(args, context_length: int) -> int:
    """Tokens one optimizer step trains on: the Trainer's batch (``args.train_batch_size``: per-device batch × the
    GPUs one process drives, as DataParallel does without torchrun) × gradient accumulation × processes
    (``args.world_size``) × ``context_length`` tokens a window. The one count behind steps, exposures and sweep
    tables."""
    return args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1) * context_length

"""Narrow filters for third-party log lines that read like errors but are known harmless (installed on import).

Each filter drops one exact message from one logger and nothing else, so a real problem still shows.
"""

from __future__ import annotations

import contextlib
import logging

# bitsandbytes >= 0.50 on CPUs with AVX512-BF16 tries to fetch an optional 4-bit GEMM kernel from the Hub
# through the `kernels` package on import; without it, it logs this warning and uses its own CPU path, which
# is what hf-capacity measures with (4-bit forward, QLoRA training, saving and loading work: see
# tests/test_capacity_gpt2.py::test_quantized_loading_runs_a_forward_pass and
# tests/test_adapters.py::test_qlora_learns_on_a_4bit_base_after_an_evaluation; this filter:
# tests/test_quiet_terminal.py).
# Trainer resuming a model whose lm_head is tied to its input embedding (saved once, as the embedding) reports the
# head as missing: its check looks at `_keys_to_ignore_on_save`, not at the tied keys; the head still shares the
# embedding's tensor, which the checkpoint restores (tests/test_resume.py: resumed runs end bitwise or within float
# noise where unbroken ones do).
_KNOWN_HARMLESS = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "transformers.trainer": ("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].",),
}


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def install() -> None:
    """Attach the filters (idempotent). Call before bitsandbytes is imported, as ``import hf_capacity`` does."""
    for name, prefixes in _KNOWN_HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))


@contextlib.contextmanager
def transformers_progress_bars(enabled: bool):
    """Within the block, transformers' own progress bars (loading and saving weights) are off unless ``enabled``;
    afterwards they are as they were."""
    from transformers.utils import logging as hf_logging

    silence = not enabled and hf_logging.is_progress_bar_enabled()
    if silence:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if silence:
            hf_logging.enable_progress_bar()

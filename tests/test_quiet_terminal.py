"""Nothing on the import or training path reads like an error when it is harmless, and real problems still show."""

import logging
import subprocess
import sys


def test_importing_the_models_and_callbacks_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import hf_capacity.models, hf_capacity.callbacks"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_only_the_known_harmless_bitsandbytes_line_is_dropped(caplog):
    import hf_capacity  # noqa: F401  (installs the filters)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "No module named 'kernels'")
        logger.warning("Failed to dequantize: a real problem")
    assert [r.getMessage() for r in caplog.records] == ["Failed to dequantize: a real problem"]


def test_a_resumed_tied_head_is_not_reported_missing_but_other_missing_keys_are():
    import hf_capacity  # noqa: F401  (installs the filters)

    class Keep(logging.Handler):  # transformers' loggers do not propagate to the root, where caplog listens
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger, keep = logging.getLogger("transformers.trainer"), Keep()
    logger.addHandler(keep)
    try:
        logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
        logger.warning("There were missing keys in the checkpoint model loaded: ['transformer.wte.weight'].")
    finally:
        logger.removeHandler(keep)
    assert keep.messages == ["There were missing keys in the checkpoint model loaded: ['transformer.wte.weight']."]

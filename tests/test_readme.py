"""The README's "Measure your own model" script runs as written: a stock Llama, its own tokenizer, a mixed corpus."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_measure_your_own_model_script_runs_as_written(tmp_path):
    section = README.read_text().split("## Measure your own model", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                              "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "exposures per person: 300 (every person exactly)" in result.stdout
    learned = int(re.search(r"bits learned\s+([\d,]+)", result.stdout).group(1).replace(",", ""))
    assert learned > 0, result.stdout[-2000:]
